"""Unit tests for the pure planning logic: identity, multiset diff, sharding."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastsync.records.model import FolderPair, MessageRef, MessageState, WorkUnit
from fastsync.rules.plan import (
    STREAM_MESSAGE_BYTES,
    STREAM_UNIT_MAX_BYTES,
    BATCH_UNIT_MIN_BYTES,
    UNIT_MAX_BYTES,
    UNITS_PER_WORKER,
    batch_unit_bytes,
    partial_units_last,
    UnitBounds,
    across_folders,
    stream_unit_bytes,
    comparable_flags,
    identity,
    keepable_flags,
    keyword_retries,
    match_by_identity,
    missing,
    normalise_message_id,
    parse_header_fields,
    settable_flags,
    shard,
)

PAIR = FolderPair("INBOX", "INBOX")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"<a@b>", "<a@b>"),
        (b"  <a@b>  ", "<a@b>"),
        (b"<a@\r\n b>", "<a@b>"),
        (b"junk <a@b> (comment)", "<a@b>"),
        (b"no-angles@example", "no-angles@example"),
        (b"", ""),
    ],
)
def test_normalise_message_id(raw: bytes, expected: str) -> None:
    assert normalise_message_id(raw) == expected


def test_header_fields_unfold_and_first_wins() -> None:
    header = b"Message-ID:\r\n <x@y>\r\nSubject: one\r\n two\r\nsubject: again\r\n\r\n"
    fields = parse_header_fields(header)
    assert fields["message-id"] == b"<x@y>"
    assert fields["subject"] == b"one two"


def test_identity_uses_message_id_whatever_the_case_of_the_field() -> None:
    assert identity(b"message-id: <A@B>\r\n\r\n") == ("<A@B>", True)


HEADER = b"Date: Mon, 1 Jan 2018 10:00:00 +0000\r\nFrom: a@b\r\nSubject: hi\r\nTo: c@d\r\n\r\n"


@pytest.mark.parametrize(
    ("header", "same"),
    [
        (HEADER, True),
        # An empty Message-Id is no identity either.
        (b"Message-Id: <>\r\n" + HEADER, True),
        # What mbox-based servers add to a stored message is not among the fields.
        (b"Status: RO\r\nX-UID: 7\r\nX-IMAPbase: 1 2\r\n" + HEADER, True),
        (HEADER.replace(b"\r\n", b"\n"), True),
        (HEADER.replace(b"Subject: hi", b"Subject:\r\n hi"), True),  # folded
        (HEADER.replace(b"hi", b"ho"), False),
        (HEADER.replace(b"c@d", b"e@f"), False),
        (HEADER.replace(b"a@b", b"x@b"), False),
        (HEADER.replace(b"10:00:00", b"10:00:01"), False),
    ],
    ids=["itself", "empty Message-Id", "mbox status lines", "LF", "folded", "subject", "to", "from", "date"],
)
def test_fallback_identity_depends_on_what_the_sender_wrote_not_on_the_size(header: bytes, same: bool) -> None:
    key, has_id = identity(HEADER)
    assert not has_id and key.startswith("~")
    assert (identity(header)[0] == key) == same


def test_identities_with_a_message_id_are_those_earlier_runs_saw() -> None:
    """The identity of a message with a Message-Id is the Message-Id, as before the fallback
    identity lost the size: caches and ledgers of earlier runs hold UIDs and STATUS figures,
    never identities, and a re-run recomputes every identity on both sides alike."""
    assert identity(b"Message-ID: <m1@example.org>\r\n" + HEADER) == ("<m1@example.org>", True)


def refs(*identities: str) -> list[MessageRef]:
    return [MessageRef(uid=i + 1, size_bytes=10, identity=x) for i, x in enumerate(identities)]


@pytest.mark.parametrize(
    ("src", "dst", "expected_uids"),
    [
        (("a", "b", "c"), (), [1, 2, 3]),
        (("a", "b", "c"), ("a", "b", "c"), []),
        (("a", "b", "c"), ("b",), [1, 3]),
        # Same Message-Id twice at the source, once at the destination: one copy.
        (("a", "a", "b"), ("a",), [2, 3]),
        (("a", "a"), ("a", "a", "a"), []),
        ((), ("a",), []),
    ],
)
def test_missing_is_a_multiset_difference(src: tuple[str, ...], dst: tuple[str, ...], expected_uids: list[int]) -> None:
    assert [r.uid for r in missing(refs(*src), dst)] == expected_uids


@given(st.lists(st.sampled_from("abcdef")), st.lists(st.sampled_from("abcdefg")))
def test_missing_copies_exactly_the_difference(src: list[str], dst: list[str]) -> None:
    todo = missing(refs(*src), dst)
    assert Counter(r.identity for r in todo) == Counter(src) - Counter(dst)
    # After copying, the destination holds at least as many of each identity as the source.
    after = Counter(dst) + Counter(r.identity for r in todo)
    assert all(after[x] >= n for x, n in Counter(src).items())


def test_shard_bounds_count_and_bytes_and_keeps_every_uid() -> None:
    sizes = [100, 200, 5000, 50, 50, 50, 50, 10]
    messages = [MessageRef(uid=i + 1, size_bytes=s, identity=str(i)) for i, s in enumerate(sizes)]
    units = list(shard(PAIR, 7, messages, first_unit_id=10, bounds=UnitBounds(max_messages=3, max_bytes=400)))
    assert [u.uids for u in units] == [(1, 2), (3,), (4, 5, 6), (7, 8)]
    assert [u.unit_id for u in units] == [10, 11, 12, 13]
    assert all(u.uidvalidity == 7 and u.pair == PAIR for u in units)
    # The 5000-byte message is over budget and travels alone.
    assert units[1].size_bytes == 5000
    assert sum(u.size_bytes for u in units) == sum(sizes)


@given(st.lists(st.integers(min_value=0, max_value=10_000)), st.integers(1, 50), st.integers(1, 20_000))
def test_shard_property(sizes: list[int], max_messages: int, max_bytes: int) -> None:
    messages = [MessageRef(uid=i + 1, size_bytes=s, identity=str(i)) for i, s in enumerate(sizes)]
    units = list(shard(PAIR, 1, messages, 0, UnitBounds(max_messages, max_bytes)))
    assert [uid for u in units for uid in u.uids] == [m.uid for m in messages]
    for unit in units:
        assert 1 <= len(unit.uids) <= max_messages
        assert unit.size_bytes <= max_bytes or len(unit.uids) == 1


def test_shard_puts_large_messages_into_streamed_units_of_many() -> None:
    big, small = 2_000_000, 10_000
    sizes = [small, big, small, big, big, small] + [big] * 10
    messages = [MessageRef(uid=i + 1, size_bytes=s, identity=str(i)) for i, s in enumerate(sizes)]
    units = list(shard(PAIR, 1, messages, first_unit_id=3))
    assert [(u.uids, u.streamed) for u in units] == [
        ((2, 4, 5, 7, 8, 9, 10, 11), True), ((1, 3, 6), False), ((12, 13, 14, 15, 16), True),
    ]
    assert [u.unit_id for u in units] == [3, 4, 5]
    assert units[0].size_bytes == 8 * big <= STREAM_UNIT_MAX_BYTES < 9 * big


def test_streamed_units_leave_no_worker_without_a_share() -> None:
    # 200 messages of 2 MB for 4 workers: the full budget; 10 for 8 workers: about 2.5 MB each.
    assert stream_unit_bytes(400_000_000, 4) == STREAM_UNIT_MAX_BYTES
    assert stream_unit_bytes(20_000_000, 8) == 2_500_000
    assert stream_unit_bytes(3_000_000, 8) == STREAM_MESSAGE_BYTES
    messages = [MessageRef(uid=i + 1, size_bytes=2_000_000, identity=str(i)) for i in range(10)]
    units = list(shard(PAIR, 1, messages, 0, UnitBounds(stream_max_bytes=stream_unit_bytes(20_000_000, 8))))
    assert [u.uids for u in units] == [(n,) for n in range(1, 11)]


def test_units_of_small_messages_give_every_worker_several() -> None:
    # Issue 31: 23 MB of small messages for 8 workers on a capped link: 1 MiB units left
    # a worker fetching or appending its last one for a second while the others had none.
    assert batch_unit_bytes(1_000_000_000, 8) == UNIT_MAX_BYTES  # a large copy: as before
    assert batch_unit_bytes(23_000_000, 8) == 23_000_000 // (8 * UNITS_PER_WORKER)
    assert batch_unit_bytes(2_000_000, 8) == BATCH_UNIT_MIN_BYTES  # never below: round trips
    assert batch_unit_bytes(0, 0) == BATCH_UNIT_MIN_BYTES
    messages = [MessageRef(uid=i + 1, size_bytes=20_000, identity=str(i)) for i in range(1150)]
    budget = batch_unit_bytes(sum(m.size_bytes for m in messages), 8)
    units = list(shard(PAIR, 1, messages, 0, UnitBounds(max_bytes=budget)))
    assert len(units) >= 8 * UNITS_PER_WORKER
    assert all(u.size_bytes <= budget for u in units)


def test_partly_filled_units_go_last_largest_first() -> None:
    def unit(unit_id: int, size: int, streamed: bool = False) -> WorkUnit:
        return WorkUnit(unit_id, PAIR, 1, (unit_id,), size, streamed=streamed)

    units = [unit(0, 300_000), unit(1, 40_000), unit(2, 5_000_000, streamed=True), unit(3, 290_000),
             unit(4, 120_000), unit(5, 10_000, streamed=True), unit(6, 160_000)]
    ordered = partial_units_last(units, 320_000)
    # Full ones (at least half the budget) and streamed ones keep their order; then the
    # partly filled ones, the largest first.
    assert [u.unit_id for u in ordered] == [0, 2, 3, 5, 6, 4, 1]
    assert partial_units_last([], 320_000) == []


@given(st.lists(st.tuples(st.sampled_from("abcdef"), st.sampled_from([10, 900_000, 1_500_000, 6_000_000])),
                max_size=40), st.integers(1, 8))
def test_shard_streamed_property(messages_spec: list[tuple[str, int]], max_messages: int) -> None:
    messages = [MessageRef(uid=i + 1, size_bytes=s, identity=f"{x}{s}") for i, (x, s) in enumerate(messages_spec)]
    units = list(shard(PAIR, 1, messages, 0, UnitBounds(max_messages)))
    assert sorted(uid for u in units for uid in u.uids) == [m.uid for m in messages]
    assert [u.unit_id for u in units] == list(range(len(units)))
    sizes = {m.uid: m.size_bytes for m in messages}
    for unit in units:
        assert all((sizes[uid] > STREAM_MESSAGE_BYTES) == unit.streamed for uid in unit.uids)
        budget = STREAM_UNIT_MAX_BYTES if unit.streamed else 1024 * 1024
        assert 1 <= len(unit.uids) <= max_messages or len({m.identity for m in messages if m.uid in unit.uids}) == 1
        assert unit.size_bytes <= budget or len({m.identity for m in messages if m.uid in unit.uids}) == 1


def test_shard_keeps_messages_of_one_identity_together() -> None:
    ids = ["a", "b", "c", "a", "d", "e", "a", "f"]
    messages = [MessageRef(uid=i + 1, size_bytes=10, identity=x) for i, x in enumerate(ids)]
    units = list(shard(PAIR, 1, messages, 0, UnitBounds(max_messages=3, max_bytes=10_000), dst_uidnext=42))
    assert [u.uids for u in units] == [(1, 4, 7), (2, 3, 5), (6, 8)]
    assert all(u.dst_uidnext == 42 for u in units)


def test_shard_groups_nothing_whose_identity_was_not_read() -> None:
    # A folder planned without identities (an empty destination): each message on its own.
    messages = [MessageRef(uid=i + 1, size_bytes=10, identity="") for i in range(7)]
    units = list(shard(PAIR, 1, messages, 0, UnitBounds(max_messages=3, max_bytes=10_000)))
    assert [u.uids for u in units] == [(1, 2, 3), (4, 5, 6), (7,)]


@given(st.lists(st.sampled_from("abcdefgh"), max_size=40), st.integers(1, 6))
def test_shard_never_splits_an_identity(ids: list[str], max_messages: int) -> None:
    messages = [MessageRef(uid=i + 1, size_bytes=10, identity=x) for i, x in enumerate(ids)]
    units = list(shard(PAIR, 1, messages, 0, UnitBounds(max_messages, 10_000)))
    owner: dict[str, int] = {}
    for unit in units:
        for uid in unit.uids:
            assert owner.setdefault(ids[uid - 1], unit.unit_id) == unit.unit_id
    assert sorted(uid for u in units for uid in u.uids) == list(range(1, len(ids) + 1))


@pytest.mark.parametrize(
    ("src", "dst", "matched", "missing", "extra"),
    [
        ("aab", "ab", [("a1", "a1"), ("b1", "b1")], ["a2"], []),
        ("ab", "aab", [("a1", "a1"), ("b1", "b1")], [], ["a2"]),
        ("", "ba", [], [], ["b1", "a1"]),
        ("cab", "", [], ["c1", "a1", "b1"], []),
        ("abab", "bbaa", [("a1", "a1"), ("b1", "b1"), ("a2", "a2"), ("b2", "b2")], [], []),
        # Extra copies keep the destination's order (ascending UID), whatever their identity.
        ("a", "abca", [("a1", "a1")], [], ["b1", "c1", "a2"]),
    ],
)
def test_match_by_identity_pairs_the_kth_copy_with_the_kth(
    src: str, dst: str, matched: list[tuple[str, str]], missing: list[str], extra: list[str]
) -> None:
    """Items are "<identity><copy number>", the identity being one letter."""

    def numbered(letters: str) -> list[str]:
        seen: Counter[str] = Counter()
        out = []
        for letter in letters:
            seen[letter] += 1
            out.append(f"{letter}{seen[letter]}")
        return out

    result = match_by_identity(numbered(src), numbered(dst), lambda s: s[0], lambda d: d[0])
    assert result.matched == matched
    assert result.missing == missing
    assert result.extra == extra


@pytest.mark.parametrize(
    ("flags", "settable", "comparable"),
    [
        (("\\Seen", "\\Recent", "$Label1"), ("\\Seen", "$Label1"), {"\\seen", "$label1"}),
        (("\\RECENT",), (), set()),
        ((), (), set()),
        (("\\Flagged", "\\Answered"), ("\\Flagged", "\\Answered"), {"\\flagged", "\\answered"}),
    ],
)
def test_the_one_flag_rule(flags: tuple[str, ...], settable: tuple[str, ...], comparable: set[str]) -> None:
    assert settable_flags(flags) == settable
    assert comparable_flags(flags) == comparable


@pytest.mark.parametrize(
    ("flags", "permanent", "kept"),
    [
        (("\\Seen", "$Label1"), None, ("\\Seen", "$Label1")),
        (("\\Seen", "$Label1"), ("\\Seen", "\\*"), ("\\Seen", "$Label1")),
        (("\\Seen", "$Label1", "\\Recent"), ("\\Seen", "\\Flagged"), ("\\Seen",)),
        (("\\seen", "$label1"), ("\\Seen", "$Label1"), ("\\seen", "$label1")),
        (("\\Seen",), (), ()),
    ],
)
def test_keepable_flags_follow_permanentflags(
    flags: tuple[str, ...], permanent: tuple[str, ...] | None, kept: tuple[str, ...]
) -> None:
    assert keepable_flags(flags, permanent) == kept


@pytest.mark.parametrize(
    ("flags", "permanent", "refused", "kept"),
    [
        (("\\Seen", "$Label1", "$TooLong"), None, {"$toolong"}, ("\\Seen", "$Label1")),
        # Refused keywords are compared case-insensitively, as keywords are.
        (("\\Seen", "$TOOLONG"), ("\\Seen", "\\*"), {"$toolong"}, ("\\Seen",)),
        (("\\Seen", "$Label1"), ("\\Seen",), {"$toolong"}, ("\\Seen",)),
        (("\\Seen", "$Label1"), None, set(), ("\\Seen", "$Label1")),
    ],
)
def test_keepable_flags_leave_out_refused_keywords(
    flags: tuple[str, ...], permanent: tuple[str, ...] | None, refused: set[str], kept: tuple[str, ...]
) -> None:
    assert keepable_flags(flags, permanent, refused) == kept


@pytest.mark.parametrize(
    ("flags", "tries"),
    [
        (("\\Seen", "\\Flagged"), []),
        ((), []),
        (("\\Seen", "$a"), [("\\Seen",)]),
        # Several keywords: without each in turn, then without any; system flags stay.
        (("\\Seen", "$a", "$b"), [("\\Seen", "$b"), ("\\Seen", "$a"), ("\\Seen",)]),
        # Too many to try one by one: straight to none.
        (tuple(f"$k{n}" for n in range(9)), [()]),
    ],
)
def test_keyword_retries(flags: tuple[str, ...], tries: list[tuple[str, ...]]) -> None:
    assert keyword_retries(flags) == tries


@pytest.mark.parametrize(
    ("ref", "key"),
    [
        (MessageRef(1, 10, "<a@x>", True, 1278455344230334865), "gm:1278455344230334865"),
        (MessageRef(1, 10, "~0123456789abcdef01234567", False, 99), "gm:99"),
        (MessageRef(1, 10, "<a@x>"), "<a@x>/10"),
        (MessageState(1, 10, "<a@x>", (), None, True, 7), "gm:7"),
        (MessageState(1, 12, "~0123456789abcdef01234567", (), None, False), "~0123456789abcdef01234567/12"),
    ],
)
def test_gmail_ids_recognise_a_message_across_folders(ref: MessageRef | MessageState, key: str) -> None:
    assert across_folders(ref) == key


def test_a_sent_and_a_received_copy_are_not_the_same_message_across_folders() -> None:
    """One Message-Id, two messages: the received copy carries Received lines."""
    sent, received = MessageRef(1, 900, "<a@x>"), MessageRef(2, 1400, "<a@x>")
    assert across_folders(sent) != across_folders(received)
    assert across_folders(sent) == across_folders(MessageRef(9, 900, "<a@x>"))


def sized(spec: str) -> list[MessageRef]:
    """"a100 a200 b50": identity letter and size, UIDs 1, 2, 3..."""
    return [MessageRef(i + 1, int(word[1:]), word[0]) for i, word in enumerate(spec.split())]


@pytest.mark.parametrize(
    ("src", "dst", "matched", "missing", "extra"),
    [
        # Two messages of one identity (a sent and a received copy), the destination has
        # the second: the first is the one missing.
        ("a100 a200", "a200", [(2, 1)], [1], []),
        ("a100 a200", "a200 a100", [(1, 2), (2, 1)], [], []),
        # A destination that altered every copy (sizes all differ): in order.
        ("a100 a200", "a130 a230", [(1, 1), (2, 2)], [], []),
        ("a100 b100", "b130 a130", [(1, 2), (2, 1)], [], []),
        # --delete-dest: of two destination copies, the one no source message accounts for.
        ("a200", "a100 a200", [(1, 2)], [], [1]),
        ("a200", "a130 a230", [(1, 1)], [], [2]),
    ],
)
def test_one_identity_pairs_the_same_size_first_then_in_order(
    src: str, dst: str, matched: list[tuple[int, int]], missing: list[int], extra: list[int]
) -> None:
    result = match_by_identity(sized(src), sized(dst), across_key, across_key)
    assert [(s.uid, d.uid) for s, d in result.matched] == matched
    assert [m.uid for m in result.missing] == missing
    assert [m.uid for m in result.extra] == extra


def across_key(ref: MessageRef) -> str:
    return ref.identity


@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(1, 4))), st.lists(st.tuples(st.sampled_from("abcd"), st.integers(1, 4))))
def test_pairing_by_size_keeps_the_multiset_counts(src: list[tuple[str, int]], dst: list[tuple[str, int]]) -> None:
    src_refs = [MessageRef(i + 1, size, key) for i, (key, size) in enumerate(src)]
    dst_refs = [MessageRef(i + 1, size, key) for i, (key, size) in enumerate(dst)]
    result = match_by_identity(src_refs, dst_refs, across_key, across_key)
    assert Counter(r.identity for r in result.missing) == Counter(k for k, _s in src) - Counter(k for k, _s in dst)
    assert Counter(r.identity for r in result.extra) == Counter(k for k, _s in dst) - Counter(k for k, _s in src)
    assert all(s.identity == d.identity for s, d in result.matched)
    assert len({s.uid for s, _d in result.matched}) == len({d.uid for _s, d in result.matched}) == len(result.matched)
    # Where a copy of the same size is there, it is the partner (when one is left for it).
    assert len(result.matched) + len(result.missing) == len(src)
