"""How many connections a batch holds on one server that refuses logins past a ceiling:
additive increase, multiplicative decrease (AIMD), within --max-connections-per-server.

Pure logic, no I/O: `batch/scheduler.py` keeps one `Window` per server (host:port) and
asks it whether a pair's connections fit.  A pair that met a refused login there
(`records.errors.TooManyConnections`: "too many connections", a hang-up at login) halves
the window, once per wave: pairs started before the last decrease were admitted under a
larger window, and their refusals say nothing new.  A pair that ends without a refusal
at its server since it started raises the window by one connection, up to the cap, and
shows that the most connections held while it ran were taken: the ceiling reported is
the largest such count below every count met with a refusal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# A window without a cap (no --max-connections-per-server) before any refusal.
UNBOUNDED = 1 << 30


@dataclass
class Window:
    """The connections a batch may hold on one server.  ``cap``: --max-connections-per-server
    (0: none); ``floor``: one pair's connections there, below which no pair could start."""

    cap: int
    floor: int
    allowed: int = 0
    # Decreases so far: a pair remembers the value at its start (`epoch`).
    epoch: int = 0
    refusals: int = 0
    # The connections held there while a pair ran from start to end with no refusal (its
    # peak), and while a pair met a refusal: a connection count the server refused.
    clean: set[int] = field(default_factory=set)
    refused_at: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.allowed = self.cap or UNBOUNDED

    def fits(self, held: int, more: int) -> bool:
        """Whether *more* connections may open beside the *held* ones."""
        return held + more <= self.allowed

    def refused(self, held: int, started_epoch: int) -> bool:
        """A pair that started at *started_epoch* met a refused login with *held* connections
        admitted there; True when the window shrank (the first refusal of a wave)."""
        self.refusals += 1
        self.refused_at.add(held)
        if started_epoch < self.epoch:
            return False
        self.allowed = max(self.floor, min(self.allowed, held) // 2)
        self.epoch += 1
        return True

    def finished(self, peak: int, started_refusals: int) -> None:
        """A pair ended without a refusal of its own; *peak*: the most connections held there
        while it ran, *started_refusals*: `refusals` when it started."""
        if self.refusals != started_refusals:
            return  # another pair was refused meanwhile: this peak is not known to be taken
        self.clean.add(peak)
        if self.refusals:
            self.allowed = min(self.cap or UNBOUNDED, self.allowed + 1)

    @property
    def ceiling(self) -> int | None:
        """The connections this server was seen to take, once it has refused some; else None.

        Counts are the pairs' connection budgets, which a pair does not always hold all at
        once: a count held cleanly but refused another time is no ceiling, the largest
        clean count below every refused one is."""
        if not self.refusals:
            return None
        below = [held for held in self.clean if held < min(self.refused_at)]
        return max(below, default=None)
