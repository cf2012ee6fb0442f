"""The order of a copy while planning: which folders are surveyed first (`surveyorder`) and
in which order the pool gives units out as they come (`unitqueue.Pending`)."""

from __future__ import annotations

from fastsync.engine.unitqueue import Pending
from fastsync.records.model import FolderPair, FolderStatus, WorkUnit
from fastsync.rules.surveyorder import survey_groups


def _status(messages: int, size_bytes: int = -1) -> FolderStatus:
    return FolderStatus(messages, size_bytes, 1, messages + 1)


def test_the_cheapest_folders_that_give_every_worker_a_unit_come_first_then_all_the_rest() -> None:
    pairs = [FolderPair(n, n) for n in ("INBOX", "Small", "Big", "Done", "Mid")]
    src = {"INBOX": _status(500, 5_000_000), "Small": _status(10, 10_000), "Big": _status(40, 40_000_000),
           "Done": _status(5, 5_000), "Mid": _status(100, 1_000_000)}
    dst = {"Done": _status(5, 5_000)}
    # One unit wanted: Small alone (one unit); Done, with nothing missing, waits for the rest.
    assert survey_groups(pairs, src, dst, units=1) == [
        [FolderPair("Small", "Small")], [FolderPair(n, n) for n in ("INBOX", "Big", "Done", "Mid")]]
    # Four units: Small (1 unit), then Big (40 messages of 1 MB: 40 units) are enough.
    first, rest = survey_groups(pairs, src, dst, units=4)
    assert [p.src for p in first] == ["Small", "Big"]
    assert [p.src for p in rest] == ["INBOX", "Done", "Mid"]


def test_pairs_into_one_destination_folder_stay_together_and_all_mail_makes_one_group() -> None:
    pairs = [FolderPair("A", "X"), FolderPair("B", "Y"), FolderPair("C", "X")]
    src = {"A": _status(1), "B": _status(50), "C": _status(100)}
    groups = survey_groups(pairs, src, {}, units=1)
    assert groups == [[FolderPair("B", "Y")], [FolderPair("A", "X"), FolderPair("C", "X")]]
    gmail = [FolderPair("[Gmail]/All Mail", "All", src_role="\\All"), *pairs]
    assert survey_groups(gmail, src, {}) == [gmail]


def test_nothing_to_copy_makes_one_group() -> None:
    pairs = [FolderPair(f"F{k}", f"F{k}") for k in range(3)]
    same = {p.src: _status(10) for p in pairs}
    assert survey_groups(pairs, same, same, units=8) == [pairs]


def _unit(unit_id: int, size_bytes: int, streamed: bool = False) -> WorkUnit:
    return WorkUnit(unit_id, FolderPair("A", "A"), 1, (unit_id,), size_bytes, streamed=streamed)


def test_units_that_come_later_keep_the_largest_streamed_first() -> None:
    pending = Pending([_unit(1, 100), _unit(2, 9_000_000, True), _unit(3, 200)])
    assert [u.unit_id for u in pending] == [2, 1, 3]
    pending.add([_unit(4, 300), _unit(5, 20_000_000, True), _unit(6, 6_000_000, True)])
    assert [u.unit_id for u in pending] == [5, 2, 6, 1, 3, 4]
