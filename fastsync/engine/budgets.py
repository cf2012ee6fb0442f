"""What each account's budget has used, kept between runs, and the meter the pool asks.

Engine layer: imports `statedir`, `state` (the account's key) and `rules/budget.py`.  The
uses of one account in one direction (read from it as a source, written to it as a
destination) live in a small JSON file of the state directory, named by a hash of the
account (no user names on disk), written ``0600`` without following links (`statedir`),
under an advisory lock: two runs that share an account (a source synced to two
destinations, a batch's pairs) count into one file.  A run started again inside the
window reads what the last one used and stays under the same budget.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from fastsync.engine import statedir
from fastsync.engine.state import account_key
from fastsync.records.errors import BudgetTooSmall, OverLimit, StateError, Throttled
from fastsync.records.events import event
from fastsync.records.model import MessageRef
from fastsync.records.results import BudgetState, Parked, Reporter, Summary, utc_time
from fastsync.rules import budget as budget_rules
from fastsync.rules.budget import Budget, Use
from fastsync.settings import providers
from fastsync.settings.config import Account, Config
from fastsync.settings.options import Options

__all__ = ["BudgetRequest", "Gate", "Meter", "book_name", "book_path", "gate_for", "unit_bytes", "window_text"]

# How long a side the server throttles without saying for how long waits (--until-done).
THROTTLED_WAIT_S = 30.0

# The direction a side's budget counts: what is read from a source, written to a destination.
DIRECTION = {"src": "download", "dst": "upload"}


def book_name(account: Account) -> str:
    """The name of *account*'s uses in the direction of its side (a hash: no user name on disk)."""
    return hashlib.sha256(f"{account_key(account)}\n{DIRECTION[account.side]}".encode()).hexdigest()[:24]


def book_path(state_dir: Path, account: Account, prepare: bool = True) -> Path:
    """The file of *account*'s uses in the direction of its side (its folder made, unless
    not *prepare*)."""
    folder = state_dir / "budgets"
    return (statedir.prepare(folder) if prepare else folder) / f"{book_name(account)}.json"


@dataclass
class Meter:
    """One account's budget and the file of its uses; *account* names it in messages."""

    budget: Budget
    account: Account
    path: Path

    @classmethod
    def create(cls, budget: Budget, account: Account, state_dir: Path) -> Meter:
        statedir.prepare(state_dir)
        return cls(budget, account, book_path(state_dir, account))

    def uses(self, now: float | None = None) -> list[Use]:
        """The uses inside the window ending *now* (default: the clock)."""
        with self._locked() as fd:
            return budget_rules.live(_read(fd), time.time() if now is None else now, self.budget.window_s)

    def charge(self, size_bytes: int, now: float | None = None) -> None:
        """Record *size_bytes* moved at *now*; the uses that left the window are dropped."""
        when = time.time() if now is None else now
        if size_bytes > 0:
            self.merge([(when, size_bytes)], when)

    def merge(self, uses: Sequence[Use], now: float | None = None) -> None:
        """Add *uses* the file does not hold yet (a batch's journal hands a pair those of
        its earlier runs, wherever they ran); the uses that left the window at *now* are dropped."""
        now = time.time() if now is None else now
        with self._locked() as fd:
            held = _read(fd)
            known = set(held)
            kept = budget_rules.live(held + [(float(t), int(b)) for t, b in uses if (t, b) not in known], now,
                                     self.budget.window_s)
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            os.write(fd, orjson.dumps({"version": 1, "uses": kept}))

    def spend(self, now: float | None = None) -> None:
        """The server says the account is over its limit: count the window as full from now."""
        when = time.time() if now is None else now
        used = budget_rules.used_bytes(self.uses(when), when, self.budget.window_s)
        self.charge(max(0, self.budget.limit_bytes - used), when)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        try:
            fd = statedir.open_file(self.path, os.O_RDWR | os.O_CREAT)
        except OSError as exc:
            raise StateError(f"budget file {self.path}: {exc.strerror}; check the state directory") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        except OSError as exc:
            raise StateError(f"budget file {self.path}: cannot be written: {exc.strerror}; "
                             "free space or choose another --state-dir") from None
        finally:
            os.close(fd)


def window_uses(state_dir: Path, account: Account, window_s: float, now: float) -> list[Use]:
    """What *account*'s window ending *now* already holds, read without writing anything
    (no state directory or file is created: `fastsync preflight` writes nothing)."""
    path = book_path(state_dir, account, prepare=False)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return []  # no run has counted anything for it here (or the file cannot be read)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        return budget_rules.live(_read(fd), now, window_s)
    except OSError:
        return []
    finally:
        os.close(fd)


def _read(fd: int) -> list[Use]:
    """The uses the file holds; a damaged file counts as none (it only ever makes a run wait)."""
    os.lseek(fd, 0, os.SEEK_SET)
    raw = b""
    while chunk := os.read(fd, 65536):
        raw += chunk
    try:
        data = orjson.loads(raw) if raw else {}
        return [(float(t), int(b)) for t, b in data.get("uses", [])]
    except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError):
        return []


class Gate:
    """The budgets of one copy, as the pool's coordinator asks them: may a unit of so many
    bytes start now (`open`); when none may and nothing is in hand, wait for the window
    (--until-done: the account is parked, said on screen, in the log and in the summary)
    or end the copy (`wait`); charge each copy done (`charge`); and what a server's word
    that the account is over its limits means (`server_said`)."""

    def __init__(self, meters: Sequence[Meter], until_done: bool, window_s: float, reporter: Reporter,
                 summary: Summary) -> None:
        self.meters, self.until_done, self.window_s = tuple(meters), until_done, window_s
        self.reporter, self.summary = reporter, summary
        # Sides the server said are over their limits, until when (no budget known for them).
        self.held: dict[str, tuple[float, str]] = {}
        # The side that blocks the next unit, until when and why; `ended`: the copy ended for it.
        self.spent: tuple[str, float, str] | None = None
        self.ended = False
        # A batch's pair with --until-done: a spent budget ends the pair with its resume
        # time, and the batch waits for it while other pairs run (a throttling still waits here).
        self.hand_back = False
        self.by_meter = False

    def blocked_until(self, need_bytes: int, in_hand_bytes: int, now: float) -> float:
        """0 when a unit of *need_bytes* may start now (with *in_hand_bytes* on their way),
        else the first time it may (`math.inf`: never, the unit is larger than the budget)."""
        until, self.spent, self.by_meter = 0.0, None, False
        for side, (held_until, reason) in self.held.items():
            if held_until > now:
                until, self.spent = held_until, (side, held_until, reason)
        for meter in self.meters:
            uses = meter.uses(now)
            if in_hand_bytes:
                uses.append((now, in_hand_bytes))
            at = budget_rules.resume_at(meter.budget, uses, now, need_bytes)
            if at > now and at > until:
                until, self.by_meter = at, True
                self.spent = (meter.budget.side, at, _spent_reason(meter, uses, now))
        return until

    def open(self, need_bytes: int, in_hand_bytes: int) -> bool:
        return not self.blocked_until(need_bytes, in_hand_bytes, time.time())

    def wait(self, need_bytes: int) -> bool:
        """Nothing in hand and the next unit needs *need_bytes*: True to go on (it may start,
        or --until-done parks the account until it may), False to end the copy."""
        if self.blocked_until(need_bytes, 0, time.time()) == 0 or self.spent is None:
            return True
        side, until, reason = self.spent
        if not self.until_done or until == math.inf or (self.hand_back and self.by_meter):
            self.summary.resume_at = until if until != math.inf else 0.0
            self.ended = True
            return False
        self.park(side, until, reason)
        return True

    def park(self, side: str, until: float, reason: str) -> None:
        """Say once that *side*'s account waits until *until*: on screen, in the log, in the summary."""
        parked = self.summary.parked
        if not parked or parked[-1].side != side or parked[-1].until != until:
            account = self._account(side)
            parked.append(Parked(side, account, until, reason))
            self.reporter.warn(f"{account}: {reason}; parked until {utc_time(until)}, then copying resumes")
            event("account parked", side=side, level=logging.WARNING, until=utc_time(until), reason=reason)

    def charge(self, size_bytes: int) -> None:
        for meter in self.meters:
            meter.charge(size_bytes)
        self.keep_uses()

    def keep_uses(self) -> None:
        """Each budget's uses in the summary (a batch keeps them in its journal)."""
        for meter in self.meters:
            self.summary.budget_uses[meter.path.stem] = meter.uses()

    def server_said(self, exc: Throttled) -> bool:
        """A worker left because the server said its account is over its limits: with
        --until-done the side waits out the window (its budget counted as spent), True;
        without, False (the copy ends)."""
        if not self.until_done or (self.hand_back and isinstance(exc, OverLimit)):
            return False
        now = time.time()
        if isinstance(exc, OverLimit):
            meters = [m for m in self.meters if m.budget.side == exc.side]
            for meter in meters:
                meter.spend(now)
            self.keep_uses()
            if not meters:
                self.held[exc.side] = (now + self.window_s, "the server says the account is over its limits")
        else:
            # The worker waited as asked before it left; the side waits as long again.
            self.held[exc.side] = (now + (exc.wait_s or THROTTLED_WAIT_S), "the server is throttling the account")
        if exc.side in self.held:
            self.park(exc.side, *self.held[exc.side])
        return True

    def over_limit(self, exc: OverLimit) -> float:
        """The server says *exc*'s side is over its limits and the copy ends: its budget
        counts as spent for the next run; when it may go on (a window from now)."""
        now = time.time()
        for meter in self.meters:
            if meter.budget.side == exc.side:
                meter.spend(now)
        self.keep_uses()
        return now + self.window_s

    def spent_error(self, left: int) -> str:
        """The line of a copy that a spent budget ended (without --until-done)."""
        side, until, reason = self.spent or ("", 0.0, "")
        when = f"after {utc_time(until)}" if until != math.inf else "with a larger daily limit"
        return (f"{self._account(side)}: {reason}: {left} messages not copied yet; run again {when} "
                "to go on, or with --until-done to wait for it")

    def _account(self, side: str) -> str:
        return next((m.account.where for m in self.meters if m.budget.side == side),
                    "the source" if side == "src" else "the destination")


def _spent_reason(meter: Meter, uses: Sequence[Use], now: float) -> str:
    budget = meter.budget
    used = budget_rules.used_bytes(uses, now, budget.window_s)
    return (f"daily limit spent ({used / 1e6:,.1f} MB of {budget.limit_bytes / 1e6:,.1f} MB per "
            f"{window_text(budget.window_s)}, {budget.origin})")


def window_text(window_s: float) -> str:
    """``24 h``, ``90 min``, ``10 s``, ``7 d``: days from two on."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if window_s >= size * (2 if unit == "d" else 1) and window_s % size == 0:
            return f"{window_s / size:g} {unit}"
    return f"{window_s:g} s"


@dataclass(frozen=True)
class BudgetRequest:
    """What decides a run's budgets: the accounts, the options, where their uses are kept,
    whether each side's server announced Gmail's extensions, and the messages to copy."""

    config: Config
    options: Options
    state_dir: Path
    gmail: tuple[bool, bool]
    todo: Sequence[MessageRef]


def gate_for(request: BudgetRequest, reporter: Reporter, summary: Summary) -> Gate:
    """The run's budgets, shown with the plan and recorded in the summary (a gate without
    any still waits out a server's word with --until-done).  A budget that cannot hold the largest message to copy is
    a `BudgetTooSmall`: that message would never fit."""
    options, meters = request.options, []
    largest = max((r.size_bytes for r in request.todo), default=0)
    for account, budget in chosen(request.config, options, request.gmail):
        if largest > budget.limit_bytes:
            raise BudgetTooSmall(
                f"{account.where}: the daily limit of {budget.limit_bytes:,} bytes per "
                f"{window_text(budget.window_s)} ({budget.origin}) cannot hold the largest message to copy, "
                f"{largest:,} bytes; raise --{account.side}-daily-limit (rate_limit.{account.side}_daily_limit) "
                "or leave that message out with --max-size"
            )
        meter = Meter.create(budget, account, request.state_dir)
        meter.merge(dict(options.carried_uses).get(book_name(account), ()))
        used = budget_rules.used_bytes(meter.uses(), time.time(), budget.window_s)
        meters.append(meter)
        summary.budgets.append(BudgetState(account.side, account.where, budget.limit_bytes, budget.window_s,
                                           used, budget.origin))
        reporter.info(
            f"{account.where}: daily limit {budget.limit_bytes / 1e6:,.1f} MB per {window_text(budget.window_s)} "
            f"({budget.origin}), {used / 1e6:,.1f} MB used in the window"
        )
    gate = Gate(meters, options.until_done, options.limit_window, reporter, summary)
    gate.hand_back = options.hand_back_waits
    gate.keep_uses()
    return gate


def chosen(config: Config, options: Options, gmail: tuple[bool, bool]) -> list[tuple[Account, Budget]]:
    """Each account's budget, where one applies: its side's daily limit, or Gmail's preset
    where *gmail* says its server announced Gmail's extensions or its host is Gmail's."""
    found = []
    for account, configured, is_gmail in ((config.src, options.src_daily_limit, gmail[0]),
                                          (config.dst, options.dst_daily_limit, gmail[1])):
        budget = budget_rules.choose(account.side, configured, is_gmail or providers.is_gmail(account),
                                     options.limit_window)
        if budget is not None:
            found.append((account, budget))
    return found


def unit_bytes(gate: Gate | None, default_bytes: int) -> int:
    """The most bytes a work unit may hold under the budgets: an eighth of the smallest, so
    that units pack a window closely (one unit more never waits for most of a window)."""
    if gate is None or not gate.meters:
        return default_bytes
    return max(1, min(default_bytes, min(m.budget.limit_bytes for m in gate.meters) // 8))
