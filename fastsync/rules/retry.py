"""The one retry rule for lost connections, used by the planner and by every worker.

Pure-logic layer: imports only records.  A call that fails with a retryable
`ConnectError` (a lost connection, a server that throttles) is tried again after a pause:
the server's suggested backoff when it gave one, else exponential backoff with jitter.
What differs between callers is passed in: how to drop the broken connections, how to
say that a retry is coming, and how to wait (a worker's wait ends early on cancellation).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TypeVar

from fastsync.records.errors import ConnectError, Throttled
from fastsync.records.model import WorkerSettings

T = TypeVar("T")


def backoff_s(attempt: int, settings: WorkerSettings, rng: random.Random) -> float:
    """Pause before retry number *attempt* (1-based): exponential, capped, with jitter.

    The jitter (half to all of the exponential step) keeps workers that lost their
    connections at the same moment (a server restart) from reconnecting in lockstep.
    """
    step = min(settings.backoff_max_s, settings.backoff_base_s * 2 ** (attempt - 1))
    return rng.uniform(step / 2, step)


def with_retries(
    work: Callable[[list[ConnectError]], T],
    settings: WorkerSettings,
    *,
    reset: Callable[[], None],
    notify: Callable[[ConnectError, float, int], None],
    wait: Callable[[float], bool],
    rng: random.Random,
    wait_out_throttling: bool = True,
) -> T:
    """Run ``work(failures)`` until it returns; *failures* lists the breaks so far.

    After a retryable failure: ``reset()`` (close the connections), then, unless
    ``settings.retries`` are used up, ``notify(error, wait_s, attempt)`` and ``wait(wait_s)``,
    which returns True to give up (the error is raised).  With *wait_out_throttling* False,
    `Throttled` is raised at once: a worker leaves the pool instead of waiting in it.
    """
    failures: list[ConnectError] = []
    while True:
        try:
            return work(failures)
        except ConnectError as exc:
            if not exc.retryable or (isinstance(exc, Throttled) and not wait_out_throttling):
                raise
            reset()
            failures.append(exc)
            attempt = len(failures)
            if attempt > settings.retries:
                raise
            wait_s = (exc.wait_s if isinstance(exc, Throttled) else 0.0) or backoff_s(attempt, settings, rng)
            notify(exc, wait_s, attempt)
            if wait(wait_s):
                raise
