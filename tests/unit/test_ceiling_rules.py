"""The connection-ceiling rules: which replies refuse a login for the connections open
(`imap.replies`), and the batch's AIMD window per server (`rules.ceiling`)."""

from __future__ import annotations

import pytest

from fastsync.imap.replies import connection_ceiling, raise_if_throttled
from fastsync.records.errors import Throttled, TooManyConnections
from fastsync.rules.ceiling import Window
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
