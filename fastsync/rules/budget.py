"""Budgets per account and rolling window: how many bytes of messages an account may still
read (source) or take (destination), and when it may take more.

Pure logic, no I/O: imports nothing of fastsync.  A provider counts what crosses the wire
per account over a rolling window (Gmail: about 2,500 MB a day downloaded and 500 MB a
day uploaded over IMAP, past which it refuses with ``[OVERQUOTA] Account exceeded command
or bandwidth limits`` and may lock the account out of IMAP for a day).  fastsync keeps
under such a budget itself: a copy is started only when the bytes used in the window, plus
those of the copies in hand, plus its own fit (`fits`); otherwise it waits until enough of
the oldest use has left the window (`resume_at`).  The uses are (wall-clock time, bytes)
pairs, recorded once a copy is done (so never earlier than the server saw its bytes) and
kept between runs by `engine/budgets.py`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["GMAIL_DOWNLOAD_BYTES", "GMAIL_UPLOAD_BYTES", "Budget", "Use", "choose", "fits", "live", "resume_at",
           "used_bytes"]

# Google's documented IMAP bandwidth limits per account and day ("Gmail bandwidth limits",
# Google Workspace Admin Help): 2,500 MB downloaded, 500 MB uploaded.
GMAIL_DOWNLOAD_BYTES = 2_500_000_000
GMAIL_UPLOAD_BYTES = 500_000_000

# (wall-clock time in seconds since the epoch, bytes)
Use = tuple[float, int]


@dataclass(frozen=True)
class Budget:
    """Bytes an account may move per rolling window.  *origin* says where the figure came
    from for the plan and for messages: the option's name or the provider's preset."""

    side: str
    limit_bytes: int
    window_s: float
    origin: str


def choose(side: str, configured: int | None, gmail: bool, window_s: float) -> Budget | None:
    """The budget of *side*: *configured* (None: not set; 0: none, whatever the provider),
    else Gmail's preset when the account is Gmail, else none."""
    option = f"--{side}-daily-limit"
    if configured is not None:
        return Budget(side, configured, window_s, option) if configured else None
    if not gmail:
        return None
    preset = GMAIL_DOWNLOAD_BYTES if side == "src" else GMAIL_UPLOAD_BYTES
    return Budget(side, preset, window_s, f"Gmail's limit ({option} none to lift it)")


def live(uses: Iterable[Use], now: float, window_s: float) -> list[Use]:
    """The uses still inside the window that ends at *now*, oldest first."""
    return sorted(u for u in uses if u[0] > now - window_s)


def used_bytes(uses: Iterable[Use], now: float, window_s: float) -> int:
    return sum(size for _t, size in live(uses, now, window_s))


def fits(budget: Budget, uses: Iterable[Use], now: float, need_bytes: int) -> bool:
    """Whether *need_bytes* more may be moved now."""
    return used_bytes(uses, now, budget.window_s) + need_bytes <= budget.limit_bytes


def resume_at(budget: Budget, uses: Sequence[Use], now: float, need_bytes: int) -> float:
    """The first time, *now* or later, when *need_bytes* fit: once enough of the oldest uses
    have left the window.  Infinite when they never fit (more than the whole budget)."""
    if need_bytes > budget.limit_bytes:
        return math.inf
    window = live(uses, now, budget.window_s)
    used = sum(size for _t, size in window)
    if used + need_bytes <= budget.limit_bytes:
        return now
    for when, size in window:
        used -= size
        if used + need_bytes <= budget.limit_bytes:
            return when + budget.window_s
    return now  # not reached: with every use gone, need_bytes <= limit fits
