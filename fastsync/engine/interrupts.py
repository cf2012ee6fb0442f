"""Ctrl-C, SIGTERM and SIGHUP held back while the run's process counts what was done.

Engine layer.  Their handlers raise (KeyboardInterrupt, `Terminated`, `HungUp`) wherever
the main thread is.  Between reading a worker's report from its pipe and adding it to the
summary, that would drop the report: the unit landed on the destination, but the summary
would not count it; the same between a destination's answer to an expunge and the count
of the deletion.  While a `Holding` is entered, its `held` blocks run with those signals
remembered instead, and the first one received is acted on as the block ends.  The waits
for reports stay outside the blocks, so a signal still ends a wait at once.

The handlers are wrapped once per `Holding` (a system call each), not per block: a block
costs a flag, so the pool can hold the signals around every batch of reports it reads.
`Wrapped` is the wrapping itself, which the watch's `changes.Interrupts` shares.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Self

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

Handler = Callable[[int, FrameType | None], object]


class Wrapped:
    """While entered, the handlers of `signals` that Python runs (not the defaults the
    system applies, nor ignored signals) are replaced by `_handle`, which a subclass
    defines; on leaving, those still ours get their own back.  Outside the main thread
    signals are not Python's to handle there: nothing is wrapped."""

    signals: tuple[signal.Signals, ...] = SIGNALS

    def __init__(self) -> None:
        self.previous: dict[signal.Signals, Handler] = {}

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                handler = signal.getsignal(signum)
                if callable(handler):
                    self.previous[signum] = handler
                    signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        raise NotImplementedError

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            # A handler may have replaced ours since (the SIGTERM handler ignores the next ones).
            if signal.getsignal(signum) == self._handle:
                signal.signal(signum, handler)


class Holding(Wrapped):
    """Inside `held`, a signal is only remembered; elsewhere it runs its handler at once."""

    def __init__(self) -> None:
        super().__init__()
        self.holding = False
        self.received: list[signal.Signals] = []

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        number = signal.Signals(signum)
        if self.holding:
            self.received.append(number)
            return
        self.previous[number](signum, frame)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Run the block with the signals remembered; then act on the first received."""
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
            if self.received:
                first, self.received = self.received[0], []
                self.previous[first](first, None)
