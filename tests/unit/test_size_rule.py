"""Unit tests of the one size rule (`plan.size_reason`) and of how sizes count in units and
totals: a size the server got wrong (below zero) never leaves a message behind."""

from __future__ import annotations

import pytest

from fastsync.records.model import FolderPair, MessageRef, Selection
from fastsync.rules.plan import known_bytes, shard, size_reason, skip_by_size

NONE = Selection()
BOUNDS = Selection(min_size_bytes=1000, max_size_bytes=5000)
LIMIT = Selection(append_limit_bytes=4000)


@pytest.mark.parametrize(
    ("size", "selection", "reason"),
    [
        (0, NONE, ""),
        (10**9, NONE, ""),
        (-143, NONE, ""),  # no filter given: nothing is skipped by size, whatever the server says
        (-1, NONE, ""),
        (999, BOUNDS, "smaller than --min-size (1000 bytes)"),
        (1000, BOUNDS, ""),
        (5001, BOUNDS, "larger than --max-size (5000 bytes)"),
        (-143, BOUNDS, ""),  # not a size: copied rather than left behind on the server's word
        (4001, LIMIT, "over the destination's APPENDLIMIT of 4000 bytes"),
        (-5000, LIMIT, ""),
    ],
)
def test_size_reason(size: int, selection: Selection, reason: str) -> None:
    assert size_reason(size, selection) == reason


def test_messages_of_negative_size_are_kept_and_count_as_nothing() -> None:
    refs = [MessageRef(1, -143, "<a>"), MessageRef(2, 500, "<b>"), MessageRef(3, -1, "<c>")]
    kept, skipped = skip_by_size("INBOX", refs, BOUNDS)
    assert [r.uid for r in kept] == [1, 3] and [s.uid for s in skipped] == [2]
    assert [known_bytes(r.size_bytes) for r in refs] == [0, 500, 0]
    (unit,) = shard(FolderPair("INBOX", "INBOX"), 7, refs, 0)
    assert unit.uids == (1, 2, 3) and unit.size_bytes == 500 and not unit.streamed
