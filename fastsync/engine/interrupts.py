"""Ctrl-C, SIGTERM and SIGHUP held back while the run's process counts what a worker did.

Engine layer.  Their handlers raise (KeyboardInterrupt, `Terminated`, `HungUp`) wherever
the main thread is.  Between reading a worker's report from its pipe and adding it to the
summary, that would drop the report: the unit landed on the destination, but the summary
and the ledger's caller would not count it.  `held` runs a block with those signals
remembered instead, and acts on the first one received as the block ends.  The waits for
reports stay outside, so a signal still ends a wait at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

Handler = Callable[[int, FrameType | None], object]


@contextlib.contextmanager
def held() -> Iterator[None]:
    """While inside: the handlers of `SIGNALS` that Python runs (not the defaults the
    system applies, nor ignored signals) only remember the signal; on leaving, the first
    remembered signal's own handler runs, and raises what it raises.  Outside the main
    thread signals are not Python's to handle there: nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def remember(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)

    previous: dict[signal.Signals, Handler] = {}
    for signum in SIGNALS:
        handler = signal.getsignal(signum)
        if callable(handler):
            previous[signum] = handler
            signal.signal(signum, remember)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if received:
            first = signal.Signals(received[0])
            previous[first](first, None)
