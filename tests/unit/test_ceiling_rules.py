"""The rules behind ceilings and the pre-flight: which replies refuse a login for the
connections open (`imap.replies`), the batch's AIMD window per server (`rules.ceiling`),
the duration estimate (`rules.estimate`) and the names a destination will not create."""

from __future__ import annotations

import pytest

from fastsync.imap.replies import connection_ceiling, raise_if_throttled
from fastsync.records.errors import Throttled, TooManyConnections
from fastsync.rules.ceiling import Window
from fastsync.rules.estimate import Budget, duration_s
from fastsync.rules.folders import creation_problem
from fastsync.settings.config import Account


@pytest.mark.parametrize(("text", "ceiling"), [
    ("[UNAVAILABLE] Maximum number of connections from user+IP exceeded (mail_max_userip_connections=4)", True),
    ("* BYE [UNAVAILABLE] Too many simultaneous connections", True),
    ("[ALERT] Too many simultaneous connections. (Failure)", True),
    ("Too many connections from your IP", True),
    ("Connection limit reached", True),
    ("[UNAVAILABLE] Temporary failure", False),
    ("Request is throttled. Suggested Backoff Time: 12000 milliseconds", False),
    ("[AUTHENTICATIONFAILED] Authentication failed.", False),
])
def test_a_refusal_for_the_connections_open_is_recognised(text: str, ceiling: bool) -> None:
    assert connection_ceiling(text) is ceiling


def test_a_ceiling_refusal_is_a_throttling_error_with_its_side() -> None:
    account = Account("dst", "New provider", "imap.example", 993, "u", "p", "implicit", None, 60.0)
    with pytest.raises(TooManyConnections) as caught:
        raise_if_throttled("[UNAVAILABLE] Maximum number of connections from user+IP exceeded", account)
    assert isinstance(caught.value, Throttled) and caught.value.side == "dst"


@pytest.mark.parametrize(("cap", "floor", "events", "allowed", "ceiling"), [
    # No refusal: the cap holds, no ceiling.
    (8, 2, [("ok", 8, 0)], 8, None),
    # Refused at 8: halved; a pair that then runs at 4 without refusal shows 4 taken; each clean end adds one.
    (8, 2, [("refused", 8, 0), ("ok", 4, 1), ("ok", 4, 1)], 6, 4),
    # Two refusals of one wave halve once.
    (8, 2, [("refused", 8, 0), ("refused", 8, 0)], 4, None),
    # Never below one pair's connections.
    (8, 4, [("refused", 6, 0)], 4, None),
    # A count held cleanly once but refused another time is no ceiling.
    (8, 2, [("refused", 8, 0), ("ok", 4, 1), ("ok", 6, 1), ("refused", 6, 1)], 3, 4),
    # No cap: the first refusal sets the window.
    (0, 2, [("refused", 10, 0), ("ok", 4, 1)], 6, 4),
])
def test_the_window_decreases_by_half_and_grows_by_one(
    cap: int, floor: int, events: list[tuple[str, int, int]], allowed: int, ceiling: int | None,
) -> None:
    window = Window(cap, floor)
    for kind, held, epoch in events:
        if kind == "refused":
            window.refused(held, epoch)
        else:
            window.finished(held, window.refusals)
    assert (window.allowed, window.ceiling) == (allowed, ceiling)


@pytest.mark.parametrize(("size_bytes", "messages", "bps_down", "bps_up", "budgets", "seconds"), [
    # Nominal rates: 5 MB/s, 200 messages/s, whichever takes longer.
    (50_000_000, 100, 0, 0, (), 10.0),
    (1_000_000, 1_000, 0, 0, (), 5.0),
    # The lower cap decides.
    (10_000_000, 10, 2_000_000, 1_000_000, (), 10.0),
    # A budget of 4 MB per 100 s for 10 MB: two windows' wait, then the last 2 MB.
    (10_000_000, 10, 0, 0, (Budget(4_000_000, 100.0),), 200.4),
    # A budget the copy fits in changes nothing.
    (3_000_000, 10, 0, 0, (Budget(4_000_000, 100.0),), 0.6),
    (0, 0, 0, 0, (), 0.0),
])
def test_the_estimate_follows_rates_and_budgets(
    size_bytes: int, messages: int, bps_down: int, bps_up: int, budgets: tuple[Budget, ...], seconds: float,
) -> None:
    assert duration_s(size_bytes, messages, bps_down, bps_up, budgets) == pytest.approx(seconds)


@pytest.mark.parametrize(("name", "delimiter", "problem"), [
    ("Archive/2020", "/", ""),
    ("~old", "/", "its name has a component starting with '~' ('~old')"),
    ("Archive/~x", "/", "its name has a component starting with '~' ('~x')"),
    ("a..b", ".", "its name has a component ''"),
    ("a/./b", "/", "its name has a component '.'"),
    ("dots.in.name", "/", ""),
])
def test_names_a_destination_will_not_create(name: str, delimiter: str, problem: str) -> None:
    assert creation_problem(name, delimiter) == problem


@pytest.mark.parametrize(("used", "seconds"), [
    # 3 MB used a second ago of 4 MB per 100 s: 1 MB now, 3 MB when those 3 MB leave the
    # window (99 s), 1 MB when the first 1 MB leaves it (100 s), the last 1 MB at 199 s.
    (((1.0, 3_000_000),), 199.2),
    # Used 90 s ago: it leaves the window 10 s from now.
    (((90.0, 3_000_000),), 110.2),
    # Used longer ago than the window: counts for nothing.
    (((150.0, 3_000_000),), 100.4),
])
def test_the_estimate_counts_what_the_window_already_holds(used: tuple[tuple[float, int], ...], seconds: float) -> None:
    # 6 MB at 5 MB/s under 4 MB per 100 s.
    assert duration_s(6_000_000, 10, 0, 0, (Budget(4_000_000, 100.0, used),)) == pytest.approx(seconds)


def test_a_copy_of_many_windows_is_estimated_window_by_window() -> None:
    # 2,000 windows' worth, a quarter of a window used: 2,000 waits, then the last quarter.
    budget = Budget(1_000_000, 10.0, ((1.0, 250_000),))
    assert duration_s(2_000_000_000, 1, 0, 0, (budget,)) == pytest.approx(2000 * 10.0 + 250_000 / 5_000_000)
