"""Planning in a thread of the parent while the pool copies: the `unitqueue.Feed` of a sync pass.

Engine layer.  The planner's thread surveys the folder pairs group after group
(`rules.surveyorder`), creates each group's missing destination folders, and hands over
what it planned (`Planned`); the pool's coordinator, in the main thread, polls the
feed's pipe along with the workers' and turns each handed-over group into units there
(`take`, with the sync pass's own function), so that the run's counts change in one
thread only.  The planner's IMAP reads release the GIL, so planning and the copy
overlap.  Ctrl-C and SIGTERM still reach the main thread only: it halts the feed, which
the planner's thread checks between groups and, if it is stuck in a read, the pass
drops the planner's connections (`on_stuck`).
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

from fastsync.engine.planner import FolderPlan
from fastsync.records.model import WorkUnit

# Seconds a halted feed waits for the planner's thread to finish the group in hand
# before its connections are dropped, and again after.
HALT_WAIT_S = 2.0


@dataclass
class Planned:
    """One group's plans, in the order of the run's pairs, and the destination folders
    whose CREATE the server refused (name -> its reason)."""

    plans: list[FolderPlan]
    refused: dict[str, str] = field(default_factory=dict)


# The planner's work: hand each group over (the first argument) until done, or halted (the event).
Produce = Callable[[Callable[[Planned], None], threading.Event], None]


class PlanFeed:
    """Plans groups of folders in a thread (`produce`) and gives the pool their units
    (`to_units`, called in the coordinator's thread); see the module's text."""

    def __init__(self, produce: Produce, to_units: Callable[[Planned], list[WorkUnit]],
                 on_stuck: Callable[[], None]) -> None:
        self._produce, self._to_units, self._on_stuck = produce, to_units, on_stuck
        self._reader, self._writer = multiprocessing.Pipe(duplex=False)
        self._planned: collections.deque[Planned] = collections.deque()
        self._ended = threading.Event()
        self.halted = threading.Event()
        # What ended the planner's thread, raised by the pass once the copy is over.
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="fastsync-planner")

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            self._produce(self._put, self.halted)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, raised there
            self.error = exc
        finally:
            self._ended.set()
            self._wake()

    def _put(self, planned: Planned) -> None:
        self._planned.append(planned)
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._writer.send_bytes(b"")

    @property
    def waitable(self) -> Connection:
        return self._reader

    def take(self) -> list[WorkUnit]:
        with contextlib.suppress(OSError, EOFError):
            while self._reader.poll():
                self._reader.recv_bytes()
        units: list[WorkUnit] = []
        while self._planned:
            units.extend(self._to_units(self._planned.popleft()))
        return units

    def done(self) -> bool:
        return self._ended.is_set() and not self._planned

    def finish(self) -> list[WorkUnit]:
        if self.halted.is_set():
            self._thread.join(HALT_WAIT_S)
            if self._thread.is_alive():
                self._on_stuck()
            self._thread.join(HALT_WAIT_S)
        else:
            self._thread.join()
        return self.take()

    def halt(self) -> None:
        self.halted.set()

    def close(self) -> None:
        """Close the pipe (after `finish`)."""
        self._reader.close()
        self._writer.close()
