"""Budgets per account and window: the pure rule (`rules/budget.py`), the values people type
for them, the replies that say an account is over its limits (`imap/replies.py`), and the
file that keeps what a budget used between runs (`engine/budgets.py`)."""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path

import pytest

from fastsync.engine.budgets import Gate, Meter, window_text
from fastsync.imap import replies
from fastsync.records.errors import DestinationFull, OverLimit, Throttled, UsageError
from fastsync.records.results import Summary
from fastsync.rules.budget import Budget, choose, fits, resume_at, used_bytes
from fastsync.settings.config import Account
from fastsync.settings.options import given, resolve
from fastsync.settings.values import parse_daily_limit, parse_window_s

B = Budget("dst", 1000, 10.0, "--dst-daily-limit")


@pytest.mark.parametrize(("uses", "now", "need", "expected"), [
    ([], 100.0, 400, 100.0),
    ([(95.0, 600)], 100.0, 400, 100.0),
    ([(95.0, 600)], 100.0, 401, 105.0),
    ([(91.0, 300), (95.0, 600)], 100.0, 400, 101.0),
    ([(91.0, 300), (95.0, 600)], 100.0, 800, 105.0),
    # Uses that left the window count for nothing.
    ([(80.0, 1000)], 100.0, 1000, 100.0),
    # A use exactly one window old has left it.
    ([(90.0, 1000)], 100.0, 1, 100.0),
    ([], 100.0, 1001, math.inf),
])
def test_resume_at_is_when_enough_of_the_oldest_uses_left_the_window(
    uses: list[tuple[float, int]], now: float, need: int, expected: float
) -> None:
    assert resume_at(B, uses, now, need) == expected
    assert fits(B, uses, now, need) == (expected == now)


def test_used_bytes_counts_the_window_only() -> None:
    assert used_bytes([(1.0, 5), (50.5, 7), (55.0, 11)], 60.0, 10.0) == 18


@pytest.mark.parametrize(("side", "configured", "gmail", "expected"), [
    ("src", None, False, None),
    ("dst", None, False, None),
    ("src", None, True, 2_500_000_000),
    ("dst", None, True, 500_000_000),
    ("dst", 0, True, None),
    ("dst", 2_000_000, False, 2_000_000),
    ("src", 3_000_000, True, 3_000_000),
])
def test_choose_takes_the_option_else_gmails_preset(side: str, configured: int | None, gmail: bool,
                                                    expected: int | None) -> None:
    budget = choose(side, configured, gmail, 86400.0)
    assert (budget.limit_bytes if budget else None) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("500MB", 500_000_000), ("2.5G", 2_500_000_000), ("none", 0), ("0", 0), ("NONE", 0), ("2Mi", 2 * 1024**2),
])
def test_daily_limits_read_as_sizes_or_none(text: str, expected: int) -> None:
    assert parse_daily_limit(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("24h", 86400.0), ("10s", 10.0), ("90m", 5400.0), ("1d", 86400.0), ("30", 30.0), ("1.5h", 5400.0),
])
def test_windows_read_as_durations(text: str, expected: float) -> None:
    assert parse_window_s(text) == expected


@pytest.mark.parametrize("text", ["0", "0s", "-1h", "1w", "soon", ""])
def test_bad_windows_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_window_s(text)


def test_flags_and_variables_reach_the_options() -> None:
    import argparse

    args = argparse.Namespace(src_daily_limit=None, dst_daily_limit="500M", limit_window=None, until_done=True)
    values = given(args, {"FASTSYNC_SRC_DAILY_LIMIT": "none", "IMAPSYNC_LIMIT_WINDOW": "10s"})
    options = resolve(values)
    assert (options.src_daily_limit, options.dst_daily_limit, options.limit_window, options.until_done) == (
        0, 500_000_000, 10.0, True)
    with pytest.raises(UsageError, match="--limit-window"):
        given(argparse.Namespace(limit_window="soon"), {})


ACCOUNT = Account("dst", "destination", "imap.example.org", 993, "u@example.org", "secret", "implicit", None, 60.0)


@pytest.mark.parametrize(("text", "kind"), [
    ("[OVERQUOTA] Account exceeded command or bandwidth limits. (Failure)", OverLimit),
    ("[UNAVAILABLE] Server Unavailable. 15", Throttled),
    ("Server Unavailable. 15", Throttled),
    ("[THROTTLED] Please slow down", Throttled),
    ("Request is throttled. Suggested Backoff Time: 2000 milliseconds", Throttled),
    ("[OVERQUOTA] Quota exceeded (mailbox for user is full)", DestinationFull),
])
def test_an_append_refusal_says_over_limit_throttled_or_full(text: str, kind: type) -> None:
    error = replies.append_refused(ACCOUNT, "INBOX", text, "NO")
    assert type(error) is kind
    assert error.side == "dst"
    if isinstance(error, Throttled):
        assert error.refused


def test_a_fetch_refusal_over_the_limits_is_typed() -> None:
    with pytest.raises(OverLimit):
        replies.raise_if_throttled("[OVERQUOTA] Account exceeded command or bandwidth limits", ACCOUNT)


def test_the_meter_keeps_its_uses_in_a_private_file(tmp_path: Path) -> None:
    meter = Meter.create(B, ACCOUNT, tmp_path / "state")
    meter.charge(300, now=100.0)
    meter.charge(200, now=105.0)
    again = Meter.create(B, ACCOUNT, tmp_path / "state")
    assert again.uses(now=106.0) == [(100.0, 300), (105.0, 200)]
    assert again.uses(now=112.0) == [(105.0, 200)]
    assert stat.S_IMODE(os.stat(meter.path).st_mode) == 0o600
    # The source's budget of the same account is another file (another direction).
    src = Meter.create(Budget("src", 1000, 10.0, "x"), Account(**{**ACCOUNT.__dict__, "side": "src"}),
                       tmp_path / "state")
    assert src.path != meter.path and src.uses(now=106.0) == []


def test_the_meter_follows_no_link(tmp_path: Path) -> None:
    meter = Meter.create(B, ACCOUNT, tmp_path / "state")
    os.symlink(tmp_path / "elsewhere", meter.path)
    with pytest.raises(UsageError, match="symbolic link"):
        meter.charge(1, now=1.0)


class Reporter:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warn(self, text: str) -> None:
        self.warnings.append(text)

    def info(self, text: str) -> None:
        pass


def test_the_gate_parks_with_until_done_and_ends_without(tmp_path: Path) -> None:
    meter = Meter.create(Budget("dst", 1000, 3600.0, "--dst-daily-limit"), ACCOUNT, tmp_path / "state")
    meter.charge(900)
    summary, reporter = Summary(), Reporter()
    gate = Gate([meter], True, 3600.0, reporter, summary)  # type: ignore[arg-type]
    assert gate.open(100, 0) and not gate.open(101, 0) and not gate.open(50, 60)
    assert gate.wait(200)
    [parked] = summary.parked
    assert parked.side == "dst" and 3500 < parked.until - os.path.getmtime(meter.path) <= 3600
    assert "parked until" in reporter.warnings[0] and "destination" in reporter.warnings[0]
    ending = Gate([meter], False, 3600.0, reporter, summary)  # type: ignore[arg-type]
    assert not ending.wait(200) and ending.ended and summary.resume_at == parked.until
    assert "run again after" in ending.spent_error(7) and "7 messages" in ending.spent_error(7)


@pytest.mark.parametrize(("window_s", "text"), [(86400.0, "24 h"), (3600.0, "1 h"), (172800.0, "2 d"), (5400.0, "90 min"),
                                               (10.0, "10 s")])
def test_window_text(window_s: float, text: str) -> None:
    assert window_text(window_s) == text


@pytest.mark.parametrize(("seconds", "text"), [(42.0, "42 s"), (1020.0, "17 min"), (19200.0, "5 h 20 min"),
                                               (273600.0, "3 d 4 h")])
def test_a_batchs_eta_counts_in_days_when_it_must(seconds: float, text: str) -> None:
    from fastsync.batch.scheduler import eta_text

    assert eta_text(seconds) == text
