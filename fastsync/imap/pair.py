"""A source and a destination session together, as a worker (or the planner) holds them.

Protocol edge (`fastsync/imap/`), above `session.py`; it speaks no IMAP itself, only opens,
reopens and closes `Session`s, each with its connection slot and meter.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from functools import partial

from fastsync.settings.config import Account
from fastsync.imap import transport
from fastsync.imap.session import Session, Step
from fastsync.rules.limits import Limits


class SessionPair:
    """A source and a destination session, opened together and reopened after a break.

    Each side takes a connection slot of its own (`limits`) and meters the direction that
    carries messages: bytes read from the source, bytes written to the destination.
    """

    def __init__(self, src: Account, dst: Account, limits: Limits) -> None:
        self.src_account = src
        self.dst_account = dst
        self.limits = limits
        self.src: Session | None = None
        self.dst: Session | None = None
        # Counted from here: a forked worker starts with its parent's counts.
        self._reported = transport.wire_bytes()
        # Told each account's connection steps (the planner's status line); workers: None.
        self.steps: Callable[[Account], Step] | None = None

    def open(self) -> tuple[Session, Session]:
        # A session dropped mid-literal (`stream_messages`) is opened again.
        self.src = self.src if self.src is not None and not self.src.closed else None
        self.dst = self.dst if self.dst is not None and not self.dst.closed else None
        if self.src is None or self.dst is None:
            limits = self.limits
            steps = self.steps or (lambda _account: None)
            src, dst = open_concurrently(
                None if self.src else partial(Session.open, self.src_account, slots=limits.src_slots,
                                               meter_down=limits.down, step=steps(self.src_account)),
                None if self.dst else partial(Session.open, self.dst_account, slots=limits.dst_slots,
                                               meter_up=limits.up, step=steps(self.dst_account)),
            )
            self.src, self.dst = self.src or src, self.dst or dst
        assert self.src is not None and self.dst is not None
        return self.src, self.dst

    def wire(self) -> tuple[int, int, int, int]:
        """What this process's connections moved since the last call, or since the pair was
        made: `transport.wire_bytes`, counted on the wire and as IMAP carried it."""
        now = transport.wire_bytes()
        moved, self._reported = transport.wire_since(self._reported, now), now
        return moved

    def close(self) -> None:
        for session in (self.src, self.dst):
            if session is not None:
                session.close()
        self.src = self.dst = None


def open_concurrently(*openers: Callable[[], Session] | None) -> list[Session | None]:
    """Open several sessions at once (None: keep that slot empty).

    A login costs several round trips; both sides of a copy log in at the same time.  When
    one fails, those that opened are closed again and the first failure is raised.
    """
    with concurrent.futures.ThreadPoolExecutor(len(openers), thread_name_prefix="fastsync-connect") as threads:
        futures = [threads.submit(opener) if opener is not None else None for opener in openers]
    sessions: list[Session | None] = []
    failures: list[BaseException] = []
    for future in futures:
        try:
            sessions.append(future.result() if future is not None else None)
        except BaseException as exc:
            failures.append(exc)
            sessions.append(None)
    if failures:
        for session in sessions:
            if session is not None:
                session.close()
        raise failures[0]
    return sessions
