"""How long a copy will take: the pre-flight's estimate, from bytes, messages and limits.

Pure logic, no I/O.  Without measurements of a pair's own servers the rates are nominal
(`NOMINAL_BYTES_PER_S`, `NOMINAL_MESSAGES_PER_S`: what a sync of small and mid-sized
messages reaches on a LAN), lowered by --bps-down / --bps-up; a byte budget per window
(`Budget`, a provider's daily limit) adds a wait of one window for each budget's worth of
bytes beyond the first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

NOMINAL_BYTES_PER_S = 5_000_000
NOMINAL_MESSAGES_PER_S = 200.0


@dataclass(frozen=True)
class Budget:
    """At most ``limit_bytes`` per ``window_s`` seconds on one side (0: no budget)."""

    limit_bytes: int
    window_s: float


def duration_s(size_bytes: int, messages: int, bps_down: int = 0, bps_up: int = 0,
               budgets: Sequence[Budget] = ()) -> float:
    """Seconds to copy *messages* of *size_bytes* in all under the rate caps and *budgets*."""
    rate = min(r for r in (NOMINAL_BYTES_PER_S, bps_down, bps_up) if r > 0)
    seconds = max(size_bytes / rate, messages / NOMINAL_MESSAGES_PER_S)
    for budget in budgets:
        if budget.limit_bytes <= 0 or size_bytes <= budget.limit_bytes:
            continue
        waits = math.ceil(size_bytes / budget.limit_bytes) - 1
        last = size_bytes - waits * budget.limit_bytes
        seconds = max(seconds, waits * budget.window_s + last / rate)
    return seconds
