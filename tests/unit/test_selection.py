"""Unit tests of what a run selects: folders by --include/--exclude, messages by date window
and size, the destination's APPENDLIMIT, and the protocol text of the date search."""

from __future__ import annotations

import datetime as dt

import pytest

from fastsync.rules.folders import exclusion, filter_pairs
from fastsync.imap.capabilities import Capabilities
from fastsync.records.model import FolderPair, FolderScan, FolderStatus, MessageRef, Selection, Skipped
from fastsync.settings.options import Options
from fastsync.rules.plan import size_reason, skip_by_size
from fastsync.engine.planner import selection_of
from fastsync.imap.wire import batches, search_dates, search_uids


@pytest.mark.parametrize(
    ("name", "include", "exclude", "why"),
    [
        ("INBOX", (), (), ""),
        ("Trash", (), ("^Trash$",), "excluded by --exclude '^Trash$'"),
        ("Trash/old", (), ("^Trash$",), ""),
        ("Trash/old", (), ("^Trash",), "excluded by --exclude '^Trash'"),
        ("Archive/2019", (), ("Junk", "20(19|20)"), "excluded by --exclude '20(19|20)'"),
        ("Sent", ("^INBOX", "^Sent"), (), ""),
        ("Drafts", ("^INBOX", "^Sent"), (), "not matched by --include '^INBOX' '^Sent'"),
        # --exclude applies after --include.
        ("INBOX/spam", ("^INBOX",), ("spam",), "excluded by --exclude 'spam'"),
        # re.search, case-sensitive as Python's regular expressions are; (?i) when wanted.
        ("trash", (), ("^Trash$",), ""),
        ("trash", (), ("(?i)^trash$",), "excluded by --exclude '(?i)^trash$'"),
        # The decoded name with the source's delimiter, as show prints it.
        ("INBOX.Café & co", (), (r"^INBOX\.Café",), "excluded by --exclude '^INBOX\\\\.Café'"),
    ],
)
def test_exclusion(name: str, include: tuple[str, ...], exclude: tuple[str, ...], why: str) -> None:
    assert exclusion(name, include, exclude) == why


def test_filter_pairs_keeps_order_and_says_why() -> None:
    pairs = [FolderPair("INBOX", "INBOX"), FolderPair("Sent Items", "Sent", "special-use \\Sent"),
             FolderPair("Trash", "Trash")]
    taken, left_out = filter_pairs(pairs, (), ("Trash",))
    assert taken == pairs[:2]
    assert left_out == [FolderPair("Trash", "Trash", "excluded by --exclude 'Trash'")]


@pytest.mark.parametrize(
    ("size_bytes", "selection", "reason"),
    [
        (100, Selection(), ""),
        (100, Selection(max_size_bytes=100), ""),
        (101, Selection(max_size_bytes=100), "larger than --max-size (100 bytes)"),
        (99, Selection(min_size_bytes=100), "smaller than --min-size (100 bytes)"),
        (100, Selection(min_size_bytes=100), ""),
        (20_000, Selection(append_limit_bytes=20_000), ""),
        (20_001, Selection(append_limit_bytes=20_000), "over the destination's APPENDLIMIT of 20000 bytes"),
        # The user's bound is named first when both apply.
        (30_000, Selection(max_size_bytes=25_000, append_limit_bytes=20_000), "larger than --max-size (25000 bytes)"),
        (10**9, Selection(max_size_bytes=0), ""),
    ],
)
def test_size_reason(size_bytes: int, selection: Selection, reason: str) -> None:
    assert size_reason(size_bytes, selection) == reason


def test_skip_by_size_splits_in_order() -> None:
    refs = [MessageRef(uid, size, f"<{uid}@x>") for uid, size in ((1, 10), (2, 5000), (3, 20), (4, 9000))]
    kept, skipped = skip_by_size("INBOX", refs, Selection(max_size_bytes=1000))
    assert [r.uid for r in kept] == [1, 3]
    assert skipped == [
        Skipped("INBOX", 2, 5000, "larger than --max-size (1000 bytes)"),
        Skipped("INBOX", 4, 9000, "larger than --max-size (1000 bytes)"),
    ]


@pytest.mark.parametrize(
    ("capabilities", "limit"),
    [
        ((), None),
        (("IMAP4REV1", "APPENDLIMIT=20000", "LITERAL+"), 20_000),
        (("appendlimit=35882577",), 35_882_577),
        # Without a value the limits are per folder (RFC 7889 section 3), not read here.
        (("APPENDLIMIT",), None),
        (("APPENDLIMIT=",), None),
        (("APPENDLIMITS=5",), None),
    ],
)
def test_append_limit(capabilities: tuple[str, ...], limit: int | None) -> None:
    assert Capabilities.parse(capabilities).appendlimit == limit


TODAY = dt.date(2024, 3, 10)


@pytest.mark.parametrize(
    ("options", "selection"),
    [
        (Options(), Selection()),
        (Options(max_age_days=30), Selection(since=dt.date(2024, 2, 9))),
        (Options(max_age_days=0), Selection(since=TODAY)),
        (Options(min_age_days=365), Selection(before=dt.date(2023, 3, 11))),
        (Options(max_age_days=10, min_age_days=3), Selection(since=dt.date(2024, 2, 29), before=dt.date(2024, 3, 7))),
        (Options(max_size_bytes=25_000_000, min_size_bytes=1), Selection(min_size_bytes=1, max_size_bytes=25_000_000)),
    ],
)
def test_selection_of(options: Options, selection: Selection) -> None:
    assert selection_of(options, today=TODAY) == selection


def test_max_age_and_min_age_of_the_same_days_split_a_folder() -> None:
    newer = selection_of(Options(max_age_days=30), today=TODAY)
    older = selection_of(Options(min_age_days=30), today=TODAY)
    # SINCE d takes the day d and later, BEFORE d the days before it (RFC 3501 section 6.4.4).
    assert newer.since == older.before
    assert selection_of(Options(max_age_days=30), append_limit_bytes=5, today=TODAY).append_limit_bytes == 5


@pytest.mark.parametrize(
    ("since", "before", "keys"),
    [
        (None, None, []),
        (dt.date(2024, 2, 1), None, ["SINCE", "1-Feb-2024"]),
        (None, dt.date(2023, 12, 25), ["BEFORE", "25-Dec-2023"]),
        (dt.date(999, 9, 9), dt.date(2024, 10, 31), ["SINCE", "9-Sep-0999", "BEFORE", "31-Oct-2024"]),
    ],
)
def test_search_dates(since: dt.date | None, before: dt.date | None, keys: list[str]) -> None:
    assert search_dates(since, before) == keys


@pytest.mark.parametrize(
    ("data", "uids"),
    [
        ([b"1 2 3"], {1, 2, 3}),
        ([b""], set()),
        ([None, b"7", b"9 10"], {7, 9, 10}),
        ([b"4 5 (MODSEQ 12)"], {4, 5}),
    ],
)
def test_search_uids(data: list[object], uids: set[int]) -> None:
    assert search_uids(data) == uids


@pytest.mark.parametrize(
    ("count", "size", "sets"),
    [(0, 5000, []), (3, 5000, ["1:3"]), (10_001, 5000, ["1:5000", "5001:10000", "10001:10001"])],
)
def test_batches(count: int, size: int, sets: list[str]) -> None:
    assert list(batches(count, size)) == sets


def test_keep_only_counts_what_it_leaves_out() -> None:
    scan = FolderScan(FolderStatus(4, -1, 1, 5), [MessageRef(uid, 10, f"<{uid}@x>") for uid in (1, 2, 3, 4)])
    scan.keep_only({2, 4, 99})
    assert [r.uid for r in scan.refs] == [2, 4]
    assert scan.outside == 2
