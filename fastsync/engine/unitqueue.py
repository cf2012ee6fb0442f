"""The pool's queue of units not yet given to a worker, and what feeds it while the run plans.

Engine layer, no I/O.  `Pending` keeps the order in which `pool.Coordinator` gives units
out: streamed units (a large message, `transfer.STREAM_ABOVE_BYTES`) first, the largest
first, because a large message holds its worker longest and must not start last while
the other workers have nothing left to do.  Units arrive all at once (a plan made
before the copy) or folder by folder (`Feed`: the planner's thread hands each folder's
units over as soon as that folder is planned, `syncpass.py`); either way those known
keep that order.  Units given back (their worker died) go first, and units held for a
folder's other units (`WorkUnit.blind`) last, as the coordinator says.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Sequence
from multiprocessing.connection import Connection
from typing import Protocol

from fastsync.engine.transfer import STREAM_ABOVE_BYTES
from fastsync.records.model import WorkUnit


def longest_first(unit: WorkUnit) -> tuple[bool, int]:
    """The sort key of the pool's order: streamed units first, the largest first; the
    others keep the order they came in (Python's sort is stable)."""
    streamed = unit.streamed or unit.size_bytes > STREAM_ABOVE_BYTES
    return not streamed, -unit.size_bytes if streamed else 0


class Pending(collections.deque[WorkUnit]):
    """Units not yet given to a worker, in the order they are given out (`longest_first`)."""

    def __init__(self, units: Iterable[WorkUnit] = ()) -> None:
        super().__init__(sorted(units, key=longest_first))

    def add(self, units: Sequence[WorkUnit]) -> None:
        """Take units planned later: a streamed one goes ahead of every pending unit that
        sorts after it (smaller, or not streamed), the others after every pending unit."""
        for unit in sorted(units, key=longest_first):
            key = longest_first(unit)
            if key[0]:
                self.append(unit)
                continue
            index = next((i for i, u in enumerate(self) if longest_first(u) > key), len(self))
            self.insert(index, unit)


class Feed(Protocol):
    """Units that come while the pool copies (`CopyJob.feed`): the planner's thread plans
    folder after folder, the coordinator takes each folder's units as they come.

    Every method but `waitable` is called by the coordinator's thread (the parent's main
    thread, which keeps signal handling): `take` turns what the planner handed over into
    units there, so that the run's counts are only ever changed by that thread.
    """

    @property
    def waitable(self) -> Connection:
        """Ready to read when `take` has something, or when planning ended."""
        ...

    def take(self) -> list[WorkUnit]:
        """The units planned since the last call (none: nothing new)."""
        ...

    def done(self) -> bool:
        """Planning ended and every unit it made was taken: no unit will come."""
        ...

    def finish(self) -> list[WorkUnit]:
        """Wait until planning ends (the copy stopped early: the plan is still made whole,
        as when it was made before the copy); the units not taken yet."""
        ...

    def halt(self) -> None:
        """Stop planning (Ctrl-C, SIGTERM): the folders not planned yet stay unplanned."""
        ...
