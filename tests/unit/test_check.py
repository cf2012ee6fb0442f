"""The pure parts of `fastsync check` and `sync --sync-flags`: pairing messages, the differences, the flag changes.

tests/dovecot/test_check.py runs both commands against real Dovecot servers.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from fastsync.engine.check import compare
from fastsync.records.model import MessageState
from fastsync.rules.plan import flag_changes, match_states

UTC = dt.UTC
DAY = dt.datetime(2020, 1, 1, tzinfo=UTC)


def state(uid: int, identity: str, flags: tuple[str, ...] = (), date: dt.datetime = DAY) -> MessageState:
    return MessageState(uid, 100, identity, flags, date)


# ----------------------------------------------------------------------------- pure


@pytest.mark.parametrize(
    ("src", "dst", "expected"),
    [
        ([state(1, "a")], [state(7, "a")], []),
        ([state(1, "a"), state(2, "a")], [state(7, "a")], [("missing", 2, None)]),
        ([state(1, "a")], [state(7, "a"), state(9, "a")], [("extra", None, 9)]),
        ([state(1, "a", ("\\Seen",))], [state(7, "a", ("\\seen", "\\Recent"))], []),
        ([state(1, "a", ("\\Seen",))], [state(7, "a")], [("flags", 1, 7)]),
        # The same instant with another UTC offset is the same internal date.
        ([state(1, "a")], [state(7, "a", date=DAY.astimezone(dt.timezone(dt.timedelta(hours=2))))], []),
        ([state(1, "a")], [state(7, "a", date=DAY + dt.timedelta(seconds=1))], [("date", 1, 7)]),
    ],
)
def test_compare(src: list[MessageState], dst: list[MessageState], expected: list[tuple[str, Any, Any]]) -> None:
    assert [(d.kind, d.src_uid, d.dst_uid) for d in compare(match_states(src, dst))] == expected


def test_kth_copy_pairs_with_kth_copy_and_flag_sets_are_batched() -> None:
    src = [state(1, "a", ("\\Seen",)), state(2, "a", ("\\Flagged",)), state(3, "b", ("\\Seen",))]
    dst = [state(10, "a"), state(11, "a", ("\\Flagged",)), state(12, "b")]
    matching = match_states(src, dst)
    matched, missing, extra = matching.matched, matching.missing, matching.extra
    assert [(s.uid, d.uid) for s, d in matched] == [(1, 10), (2, 11), (3, 12)]
    assert missing == extra == []
    assert flag_changes(matched) == {("\\Seen",): [10, 12]}
