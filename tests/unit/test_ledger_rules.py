"""Unit tests of the ledger of copies and of what it takes from the server (pure, no Dovecot)."""

from __future__ import annotations

import contextlib
import sqlite3
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from fastsync.engine import processes
from fastsync.imap.replies import append_uids
from fastsync.engine.ledger import Ledger
from fastsync.records.model import MessageRef, MessageState
from fastsync.rules.plan import match_states, split_known


@pytest.mark.parametrize(
    ("text", "count", "expected"),
    [
        ("[APPENDUID 38505 3955] APPEND completed", 1, (38505, [3955])),
        ("[APPENDUID 38505 3955:3957,3960] Append completed.", 4, (38505, [3955, 3956, 3957, 3960])),
        ("[appenduid 7 12] ok", 1, (7, [12])),
        # RFC 3501 section 9: a range may be written high:low.
        ("[APPENDUID 7 14:12] ok", 3, (7, [12, 13, 14])),
        ("Append completed.", 1, None),
        # A set of another size than the messages sent names nothing reliably.
        ("[APPENDUID 7 5:6] ok", 3, None),
        ("[APPENDUID 7 1:10000000] ok", 1, None),
        ("[APPENDUID 7 1:2:3] ok", 2, None),
    ],
)
def test_append_uids(text: str, count: int, expected: tuple[int, list[int]] | None) -> None:
    assert append_uids(text, count) == expected


def test_an_absurd_appenduid_is_refused_before_it_is_expanded() -> None:
    tracemalloc.start()
    try:
        assert append_uids("[APPENDUID 7 1:10000000,20000000:29999999] ok", 1) is None
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


def test_the_ledger_keeps_copies_per_folder_and_uidvalidity(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "state" / "l.sqlite")
    assert ledger.copies(("INBOX", 1), ("INBOX", 9)) == {}
    assert not (tmp_path / "state").exists()  # reading creates nothing
    ledger.record(("INBOX", 1), ("INBOX", 9), [(10, 100), (11, 101)])
    ledger.record(("Work", 1), ("Work", 9), [(10, 500)])
    ledger.record(("INBOX", 1), ("INBOX", 9), [(11, 102)])  # copied again: the newer copy
    ledger.close()
    again = Ledger(tmp_path / "state" / "l.sqlite")
    assert again.copies(("INBOX", 1), ("INBOX", 9)) == {10: 100, 11: 102}
    assert again.copies(("Work", 1), ("Work", 9)) == {10: 500}
    # Another UIDVALIDITY on either side: those UIDs name other messages now.
    assert again.copies(("INBOX", 2), ("INBOX", 9)) == {}
    assert again.copies(("INBOX", 1), ("INBOX", 8)) == {}
    again.close()


def test_the_ledger_keeps_refused_keywords_per_destination_folder(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "state" / "l.sqlite")
    assert ledger.refused_keywords("INBOX") == frozenset()
    assert not (tmp_path / "state").exists()  # reading creates nothing
    ledger.record_refused("INBOX", ["$TooLong"])
    ledger.record_refused("INBOX", ["$toolong", "$Other"])  # again: once
    ledger.close()
    again = Ledger(tmp_path / "state" / "l.sqlite")
    assert again.refused_keywords("INBOX") == {"$toolong", "$other"}
    assert again.refused_keywords("Work") == frozenset()
    again.close()
    assert Ledger(None).refused_keywords("INBOX") == frozenset()


def test_a_ledger_survives_an_interrupted_write(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    ledger = Ledger(path)
    ledger.record(("INBOX", 1), ("INBOX", 9), [(1, 1)])
    # A unit whose write fails halfway leaves nothing of it: one transaction per unit.
    with pytest.raises(sqlite3.IntegrityError):
        ledger.record(("INBOX", 1), ("INBOX", 9), [(2, 2), (3, None)])  # type: ignore[list-item]
    assert ledger.copies(("INBOX", 1), ("INBOX", 9)) == {1: 1}
    ledger.close()


def test_an_unreadable_ledger_is_set_aside_with_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    path.write_text("{not a database")
    ledger = Ledger(path)
    ledger.record(("INBOX", 1), ("INBOX", 9), [(1, 1)])
    assert ledger.copies(("INBOX", 1), ("INBOX", 9)) == {}
    assert "cannot be read" in ledger.problem and str(path) in ledger.problem
    assert path.read_text() == "{not a database"


def _record_at_the_barrier(path: str, worker: int, start: Any, problems: Any) -> None:
    ledger = Ledger(Path(path))
    start.wait()
    ledger.record(("INBOX", 1), ("INBOX", 9), [(worker * 10 + n, worker * 10 + n) for n in range(5)])
    problems.put((worker, ledger.problem))
    ledger.close()


def test_workers_opening_a_new_ledger_at_once_all_record_their_copies(tmp_path: Path) -> None:
    # A run's first units end at about the same moment in every worker, and each opens the
    # ledger, which does not exist yet.  SQLite told one of them "database is locked" at once
    # (no waiting) while another switched the new file to WAL: that worker ran on without a
    # ledger, and the next run copied its messages again on a destination that rewrites
    # Message-Id.  Seen in 6 of 30 rounds of 8 processes before the fix.
    ctx = processes.context()
    workers = 8
    for round_ in range(15):
        path = tmp_path / f"{round_}.ledger.sqlite"
        start, problems = ctx.Barrier(workers), ctx.Queue()
        procs = [ctx.Process(target=_record_at_the_barrier, args=(str(path), w, start, problems))
                 for w in range(workers)]
        for proc in procs:
            proc.start()
        reports = dict(problems.get(timeout=60) for _ in procs)
        for proc in procs:
            proc.join(60)
        assert reports == dict.fromkeys(range(workers), ""), f"round {round_}"
        expected = {w * 10 + n: w * 10 + n for w in range(workers) for n in range(5)}
        assert Ledger(path).copies(("INBOX", 1), ("INBOX", 9)) == expected, f"round {round_}"


def _ref(uid: int, identity: str) -> MessageRef:
    return MessageRef(uid, 10, identity)


def test_split_known_pairs_only_copies_still_there() -> None:
    src = [_ref(1, "<a>"), _ref(2, "<b>"), _ref(3, "<c>")]
    dst = [_ref(10, "<rewritten-a>"), _ref(12, "<c>")]
    # UID 2's copy (11) was deleted on the destination: it names nothing.
    paired, src_rest, dst_rest = split_known(src, dst, {1: 10, 2: 11})
    assert [(s.uid, d.uid) for s, d in paired] == [(1, 10)]
    assert [s.uid for s in src_rest] == [2, 3]
    assert [d.uid for d in dst_rest] == [12]


def test_match_states_pairs_the_ledgers_copies_first() -> None:
    def state(uid: int, identity: str) -> MessageState:
        return MessageState(uid, 10, identity, (), None)

    matching = match_states([state(1, "<a>"), state(2, "<a>")], [state(7, "<x>"), state(8, "<a>")], {1: 7})
    assert [(s.uid, d.uid) for s, d in matching.matched] == [(1, 7), (2, 8)]
    assert matching.missing == [] and matching.extra == []


@pytest.mark.parametrize(("schema", "why"), [
    ("CREATE TABLE copies (a TEXT, b INTEGER)", "its table copies has other columns: a, b"),
    ("CREATE TABLE copies (src_folder TEXT, src_uidvalidity INTEGER, src_uid INTEGER, dst_folder TEXT, "
     "dst_uidvalidity INTEGER, dst_uid INTEGER, note TEXT)", "its table copies has other columns"),
    ("CREATE TABLE refused_keywords (keyword TEXT)", "its table refused_keywords has other columns: keyword"),
    ("CREATE TABLE contacts (name TEXT, email TEXT)", "a SQLite database of other tables: contacts"),
])
def test_a_database_of_another_layout_is_set_aside_untouched(tmp_path: Path, schema: str, why: str) -> None:
    path = tmp_path / "l.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(schema)
        db.commit()
    before = path.read_bytes()
    ledger = Ledger(path)
    ledger.record(("INBOX", 1), ("INBOX", 9), [(1, 1)])
    assert ledger.copies(("INBOX", 1), ("INBOX", 9)) == {}
    assert f"the ledger {path} cannot be read ({why}" in ledger.problem
    ledger.close()
    # Neither converted to WAL nor given a table.
    assert path.read_bytes() == before
    assert not (tmp_path / "l.sqlite-wal").exists()
