"""Unit tests of the fast FETCH reader against the item lists imaplib produces."""

from __future__ import annotations

import datetime as dt

import pytest

from fastsync.imap.wire import (
    body_literal, literal_size, parse_internaldate, records, uid_in, usual_bodies, usual_refs, usual_sizes,
    usual_states,
)


def test_body_fetch_records() -> None:
    data = [
        (b'12 (UID 40 FLAGS (\\Seen $Work) INTERNALDATE "01-Feb-2020 10:11:12 +0100" BODY[] {5}', b"Hello"),
        b")",
        (b'13 (UID 41 FLAGS () INTERNALDATE " 3-Mar-2019 00:00:00 -0430" BODY[] {2}', b"Hi"),
        b")",
    ]
    first, second = records(data)
    assert (first.number, first.uid(), first.flags(), first.literal()) == (12, 40, ("\\Seen", "$Work"), b"Hello")
    # As sent, for an APPEND to carry unchanged; parse_internaldate reads it.
    assert first.internaldate() == b"01-Feb-2020 10:11:12 +0100"
    assert parse_internaldate(first.internaldate() or b"") == dt.datetime(
        2020, 2, 1, 10, 11, 12, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert second.flags() == ()
    assert second.internaldate() == b"03-Mar-2019 00:00:00 -0430"
    assert parse_internaldate(second.internaldate() or b"") == dt.datetime(
        2019, 3, 3, tzinfo=dt.timezone(-dt.timedelta(hours=4, minutes=30))
    )


@pytest.mark.parametrize(
    "raw", [b"01-Foo-2020 00:00:00 +0000", b"01-Jan-2020 00:00 +0000", b"41-Jan-2020 00:00:00 +0000",
            b"01-Jan-2020 24:00:00 +0000", b"01-Jan-2020 00:60:00 +0000", b"01-Jan-20 00:00:00 +0000"],
)
def test_a_malformed_internaldate_is_not_read(raw: bytes) -> None:
    [record] = records([(b'3 (UID 4 FLAGS () INTERNALDATE "' + raw + b'" BODY[] {1}', b"a"), b")"])
    assert record.internaldate() is None


def test_items_after_the_literal_are_read() -> None:
    data = [(b"7 (UID 9 BODY[] {3}", b"abc"), b' FLAGS (\\Answered) INTERNALDATE "09-Sep-2009 09:09:09 +0000")']
    [record] = records(data)
    assert (record.uid(), record.flags(), record.literal()) == (9, ("\\Answered",), b"abc")


def test_identity_fetch_and_unsolicited_updates() -> None:
    header = b"Message-ID: <a@b>\r\n\r\n"
    data = [
        (b"1 (UID 5 RFC822.SIZE 1234 BODY[HEADER.FIELDS (MESSAGE-ID DATE FROM SUBJECT)] {21}", header),
        b")",
        b"2 (FLAGS (\\Seen))",
    ]
    first, unsolicited = records(data)
    assert (first.uid(), first.size(), first.literal()) == (5, 1234, header)
    assert unsolicited.uid() is None and unsolicited.literal() is None


@pytest.mark.parametrize(
    "data",
    [
        [b'3 (UID 4 FLAGS () INTERNALDATE "01-Jan-2020 00:00:00 +0000" BODY[] "")'],
        [b'3 (UID 4 FLAGS () INTERNALDATE "01-Jan-2020 00:00:00 +0000" BODY[] NIL)'],
        [(b"3 (UID 4 BODY[1] {1}", b"a"), (b" BODY[2] {1}", b"b"), b")"],
    ],
    ids=["quoted body", "NIL body", "two literals"],
)
def test_unusual_shapes_are_left_to_the_general_parser(data: list[object]) -> None:
    [record] = records(data)
    assert record.literal() is None
    assert record.items == data


@pytest.mark.parametrize(
    "raw",
    [b"", b"31-Feb-2020 00:00:00 +0000", b"01-Foo-2020 00:00:00 +0000", b"01-Jan-2020 00:00 +0000"],
)
def test_malformed_internaldate_is_none(raw: bytes) -> None:
    assert parse_internaldate(raw) is None


def test_gmail_message_id_is_read_where_the_server_sends_it() -> None:
    data = [
        (b'1 (UID 7 RFC822.SIZE 120 X-GM-MSGID 1278455344230334865 BODY[HEADER.FIELDS (MESSAGE-ID)] {4}', b"a\r\n\r"),
        b")",
        (b"2 (UID 8 RFC822.SIZE 80 BODY[HEADER.FIELDS (MESSAGE-ID)] {4}", b"b\r\n\r"),
        b")",
    ]
    got = [(r.uid(), r.gm_msgid()) for r in records(data)]
    assert got == [(7, 1278455344230334865), (8, None)]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"* 3 FETCH (UID 7 BODY[] {12}", (12, 7)),
        (b"* 3 FETCH (BODY[] {110000000}", (110000000, None)),  # UID after the body
        (b"* 3 FETCH (UID 7 FLAGS (\\Seen) BODY[] {0}", (0, 7)),
        (b"* 3 FETCH (UID 7 BODY[HEADER] {12}", None),  # not the whole body
        (b"* 3 FETCH (UID 7 BODY[] NIL)", None),
        (b"* 3 FETCH (FLAGS (\\Seen))", None),
        (b"* 4 EXISTS", None),
        (b"A12 OK done {5}", None),
    ],
)
def test_body_literal(line: bytes, expected: tuple[int, int | None] | None) -> None:
    assert body_literal(line) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [(b"* 1 FETCH (BODY[TEXT] {5}", 5), (b"* 1 FETCH (UID 3)", None), (b"{12}x", None), (b"", None)],
)
def test_literal_size(line: bytes, expected: int | None) -> None:
    assert literal_size(line) == expected


@pytest.mark.parametrize(
    ("rest", "expected"), [(b")", None), (b" UID 41)", 41), (b"UID 41)", 41), (b" FLAGS (\\Seen) UID 9)", 9)]
)
def test_uid_after_the_literal(rest: bytes, expected: int | None) -> None:
    assert uid_in(rest) == expected


# -- the usual shapes, read with one match per message --------------------------------------

_HEADER = b"BODY[HEADER.FIELDS (MESSAGE-ID DATE FROM SUBJECT)]"


def _ref(number: int, uid: int, size: int, header: bytes) -> list[object]:
    return [(b"%d (UID %d RFC822.SIZE %d " % (number, uid, size) + _HEADER + b" {%d}" % len(header), header), b")"]


def _body(number: int, uid: int, flags: bytes, date: bytes, body: bytes) -> list[object]:
    line = b'%d (UID %d FLAGS (%s) INTERNALDATE "%s" BODY[] {%d}' % (number, uid, flags, date, len(body))
    return [(line, body), b")"]


def _generic_refs(data: list[object]) -> list[tuple[int | None, int | None, bytes | None]]:
    return [(r.uid(), r.size(), r.literal()) for r in records(data)]


def _generic_bodies(data: list[object]) -> list[tuple[int | None, tuple[str, ...] | None, bytes | None, bytes | None]]:
    return [(r.uid(), r.flags(), r.internaldate(), r.literal()) for r in records(data)]


def test_usual_survey_responses_read_as_the_general_reader_does() -> None:
    data = _ref(1, 7, 4142, b"Message-ID: <a@b>\r\n\r\n") + _ref(2, 9, 12, b"\r\n")
    usual, rest = usual_refs(data)
    assert usual == [(7, 4142, b"Message-ID: <a@b>\r\n\r\n"), (9, 12, b"\r\n")]
    assert usual == _generic_refs(data)
    assert list(rest) == []


@pytest.mark.parametrize(
    "odd",
    [
        b"5 (FLAGS (\\Seen))",  # an unsolicited update
        b"2 (RFC822.SIZE 12 UID 8)",  # another order of items
        b"2 (UID 8 RFC822.SIZE 12 X-GM-MSGID 44)",  # an item more
    ],
)
def test_size_responses_read_as_the_general_reader_does_up_to_another_shape(odd: bytes) -> None:
    data: list[object] = [b"1 (UID 7 RFC822.SIZE 4142)", b"2 (UID 9 RFC822.SIZE 12)", odd, b"4 (UID 11 RFC822.SIZE 5)"]
    usual, rest = usual_sizes(data)
    assert usual == [(7, 4142), (9, 12)]
    assert usual == [(r.uid(), r.size()) for r in records(data[:2])]
    assert list(rest) == data[2:]
    assert usual_sizes(data[:2]) == (usual, [])


def test_usual_copy_responses_read_as_the_general_reader_does() -> None:
    data = (_body(1, 40, b"\\Seen $Work", b"01-Feb-2020 10:11:12 +0100", b"Hello")
            + _body(2, 41, b"", b" 3-Mar-2019 00:00:00 -0430", b"Hi"))
    usual, rest = usual_bodies(data)
    assert usual == [(40, ("\\Seen", "$Work"), b"01-Feb-2020 10:11:12 +0100", b"Hello"),
                     (41, (), b"03-Mar-2019 00:00:00 -0430", b"Hi")]
    assert usual == _generic_bodies(data)
    assert list(rest) == []


@pytest.mark.parametrize(
    "odd",
    [
        [b"5 (FLAGS (\\Seen))"],  # an unsolicited update between two responses
        [(b"2 (RFC822.SIZE 12 UID 8 " + _HEADER + b" {2}", b"\r\n"), b")"],  # another order of items
        [(b"2 (UID 8 RFC822.SIZE 12 " + _HEADER + b" {2}", b"\r\n"), b" X-GM-MSGID 44)"],  # an item after the literal
        [b'2 (UID 8 RFC822.SIZE 12 ' + _HEADER + b' "\r\n")'],  # the header as a quoted string
    ],
)
def test_the_rest_starts_at_the_first_message_of_another_shape(odd: list[object]) -> None:
    data = _ref(1, 7, 3, b"a\r\n") + odd + _ref(3, 9, 4, b"b\r\n")
    usual, rest = usual_refs(data)
    assert usual == [(7, 3, b"a\r\n")]
    # Everything after it, the later usual message included, goes to the general reader.
    assert list(rest) == odd + _ref(3, 9, 4, b"b\r\n")


def test_a_malformed_date_is_left_to_the_general_reading() -> None:
    data = (_body(1, 40, b"", b"01-Feb-2020 10:11:12 +0100", b"a") + _body(2, 41, b"", b"41-Feb-2020 10:11:12 +0100", b"b")
            + _body(3, 42, b"", b"01-Feb-2020 10:11:12 +0100", b"c"))
    usual, rest = usual_bodies(data)
    assert [u[0] for u in usual] == [40]
    assert list(rest) == data[2:]
    [malformed, _third] = records(rest)
    assert malformed.internaldate() is None


def test_a_truncated_list_is_left_to_the_general_reading() -> None:
    # A response line whose closing ")" is not in the list: nothing is read in the usual way.
    data = _ref(1, 7, 3, b"a\r\n")[:1]
    assert usual_refs(data) == ([], data)


def test_an_unsolicited_update_between_copy_responses_hands_over_to_the_general_reader() -> None:
    data = (_body(1, 40, b"", b"01-Feb-2020 10:11:12 +0100", b"a") + [b"7 (FLAGS (\\Seen))"]
            + _body(2, 41, b"$Work", b"01-Feb-2020 10:11:12 +0100", b"b"))
    usual, rest = usual_bodies(data)
    assert [u[0] for u in usual] == [40]
    # The update has no UID: the general reader gives it none, and reads message 41 as before.
    assert [r.uid() for r in records(rest)] == [None, 41]


def test_usual_check_responses_read_as_the_general_reader_does() -> None:
    header = b"Message-ID: <a@b>\r\n\r\n"
    line = b'1 (UID 7 RFC822.SIZE 90 FLAGS (\\Seen) INTERNALDATE " 3-Mar-2019 00:00:00 -0430" ' + _HEADER
    data: list[object] = [(line + b" {%d}" % len(header), header), b")"]
    usual, rest = usual_states(data)
    assert usual == [(7, 90, ("\\Seen",), b"03-Mar-2019 00:00:00 -0430", header)]
    [record] = records(data)
    assert usual[0] == (record.uid(), record.size(), record.flags(), record.internaldate(), record.literal())
    assert list(rest) == []
    # A malformed date: that message and the rest go to the general reader.
    bad = [(line.replace(b" 3-Mar", b"43-Mar") + b" {%d}" % len(header), header), b")"]
    assert usual_states(data + bad + data) == (usual, bad + data)


@pytest.mark.parametrize(("raw", "expected"), [
    (b"0", 0), (b"135", 135), (str(2**63 - 1).encode(), 2**63 - 1), (str(2**63).encode(), -1),
    (str(2**64 + 5).encode(), -1), (b"9" * 400, -1), (-5, -1),
])
def test_sizes_beyond_number64_are_not_known(raw: bytes | int, expected: int) -> None:
    from fastsync.imap.wire import size_number

    assert size_number(raw) == expected
