"""What the status line says while the parent's connections open: which account is still
awaited, and what for (the connection and its greeting, STARTTLS, the login).

Engine layer: `planner.Planner` and `listing.list_accounts` hand `ConnectSteps.of` to the
protocol edge (`Session.open`'s *step*); workers open theirs without it (they never print).
Both sides of a pair connect at once, each in a thread of its own: the line names every
account not yet logged in, so that a destination that never greets is named as such
instead of the last thing the source did.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from fastsync.records.results import Reporter
from fastsync.settings.config import Account


class ConnectSteps:
    """The accounts being connected and the step each one waits for, as one status line."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.lock = threading.Lock()
        self.waiting: dict[str, str] = {}

    def of(self, account: Account) -> Callable[[str], None]:
        """The *step* callback for *account*: a step's text, or "" once it is logged in."""

        def step(text: str) -> None:
            with self.lock:
                if text:
                    self.waiting[account.where] = text
                else:
                    self.waiting.pop(account.where, None)
                line = "; ".join(f"{where}: {what}" for where, what in self.waiting.items())
                if line:
                    self.reporter.status(line)
                else:
                    self.reporter.clear_status()

        return step
