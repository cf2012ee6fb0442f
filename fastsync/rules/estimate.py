"""How long a copy will take: the pre-flight's estimate, from bytes, messages and limits.

Pure logic, no I/O.  Without measurements of a pair's own servers the rates are nominal
(`NOMINAL_BYTES_PER_S`, `NOMINAL_MESSAGES_PER_S`: what a sync of small and mid-sized
messages reaches on a LAN), lowered by --bps-down / --bps-up; a byte budget per window
(`Budget`, a provider's daily limit) makes what does not fit wait for the window to roll
on, counting what the window already holds from earlier runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

NOMINAL_BYTES_PER_S = 5_000_000
NOMINAL_MESSAGES_PER_S = 200.0

# Beyond this many windows' worth of bytes the estimate is counted window by window
# instead of use by use.
MAX_WINDOWS = 1_000


@dataclass(frozen=True)
class Budget:
    """At most ``limit_bytes`` per ``window_s`` seconds on one side (0: no budget); *used*:
    what the window already holds, as (seconds ago, bytes), from the runs before."""

    limit_bytes: int
    window_s: float
    used: tuple[tuple[float, int], ...] = ()


def duration_s(size_bytes: int, messages: int, bps_down: int = 0, bps_up: int = 0,
               budgets: Sequence[Budget] = ()) -> float:
    """Seconds to copy *messages* of *size_bytes* in all under the rate caps and *budgets*."""
    rate = min(r for r in (NOMINAL_BYTES_PER_S, bps_down, bps_up) if r > 0)
    seconds = max(size_bytes / rate, messages / NOMINAL_MESSAGES_PER_S)
    for budget in budgets:
        if budget.limit_bytes > 0 and size_bytes + sum(b for _age, b in budget.used) > budget.limit_bytes:
            seconds = max(seconds, _under_budget_s(size_bytes, rate, budget))
    return seconds


def _under_budget_s(size_bytes: int, rate: float, budget: Budget) -> float:
    """Seconds to move *size_bytes* at *rate* when the rolling window takes
    ``budget.limit_bytes``: what fits goes at once, the rest waits for the oldest use to
    leave the window (what the window already holds included)."""
    uses = [(-age, size) for age, size in budget.used if age < budget.window_s]  # (start, bytes), now = 0
    if size_bytes > MAX_WINDOWS * budget.limit_bytes:
        # Far more windows than a migration plans for: each holds a budget's worth, what
        # the window already holds first.
        total = size_bytes + sum(size for _start, size in uses)
        waits = math.ceil(total / budget.limit_bytes) - 1
        return waits * budget.window_s + (total - waits * budget.limit_bytes) / rate
    now, left = 0.0, size_bytes
    while left > 0:
        uses = [u for u in uses if u[0] > now - budget.window_s]
        free = budget.limit_bytes - sum(size for _start, size in uses)
        if free <= 0:
            now = min(start for start, _size in uses) + budget.window_s
            continue
        chunk = min(free, left)
        uses.append((now, chunk))
        left -= chunk
        now += chunk / rate
    return now
