"""The readers of server replies, table by table: what a server may legally send is read, and
what cannot be read is a typed error quoting it (never TypeError, ValueError or IndexError,
which would be exit 70)."""

from __future__ import annotations

import pytest

from bench.harness.replyproxy import LineEditor, bare_lf, modseq_nil
from fastsync.imap import records, replies, wire
from fastsync.records.errors import FolderError, MalformedResponse
from fastsync.records.model import FolderStatus
from fastsync.settings.config import Account

SRC = Account("src", "source", "imap.example.org", 993, "u", "secret", "implicit", None, 10.0)


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        (rb'(\HasNoChildren) "/" INBOX', ((b"\\HasNoChildren",), b"/", b"INBOX")),
        (rb'(\HasNoChildren) "/" abc[def', ((b"\\HasNoChildren",), b"/", b"abc[def")),
        (rb'(\HasNoChildren) "/" x]y', ((b"\\HasNoChildren",), b"/", b"x]y")),
        (rb'(\HasChildren \Noselect) "/" [Gmail]', ((b"\\HasChildren", b"\\Noselect"), b"/", b"[Gmail]")),
        (rb'() "/" "with space"', ((), b"/", b"with space")),
        (rb'() "/" "quote\" and \\ backslash"', ((), b"/", b'quote" and \\ backslash')),
        (rb'() NIL Flat', ((), b"", b"Flat")),
        (rb'() "\\" Back', ((), b"\\", b"Back")),
        (rb'() "/" 2024', ((), b"/", b"2024")),
        (rb'() "/" NIL', ((), b"/", b"NIL")),
        (rb'(\Noselect) "/" ""', ((b"\\Noselect",), b"/", b"")),
        (rb'() "/" Sent ("CHILDINFO" ("SUBSCRIBED"))', ((), b"/", b"Sent")),
        ((rb'() "/" {7}', b"abc def"), ((), b"/", b"abc def")),
    ],
    ids=["atom", "atom with [", "atom with ]", "Gmail parent", "quoted", "escapes", "NIL delimiter",
         "backslash delimiter", "digits", "named NIL", "empty", "extended data", "literal"],
)
def test_list_entries(item: object, expected: tuple[tuple[bytes, ...], bytes, bytes]) -> None:
    assert list(wire.list_entries([item, b""])) == [expected]


@pytest.mark.parametrize(
    "item",
    [b'"/" INBOX', rb'(\HasNoChildren) INBOX', rb'() "/" ', rb'() "/" "unterminated', rb'() "/" a(b', ("x",)],
    ids=["no flags", "no delimiter", "no name", "open quote", "parenthesis in atom", "not bytes"],
)
def test_unreadable_list_entry_is_malformed_response_quoting_it(item: object) -> None:
    with pytest.raises(MalformedResponse, match=r"^source \(imap.example.org:993\): unreadable LIST reply: ") as raised:
        records.folders_of([item], SRC)
    assert raised.value.side == "src"


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ([b'"INBOX" (MESSAGES 2 UIDNEXT 3 HIGHESTMODSEQ 7)'], [(b"INBOX", {"MESSAGES": b"2", "UIDNEXT": b"3",
                                                                             "HIGHESTMODSEQ": b"7"})]),
        ([b"abc[def (MESSAGES 0 HIGHESTMODSEQ NIL)"], [(b"abc[def", {"MESSAGES": b"0", "HIGHESTMODSEQ": b"NIL"})]),
        ([b'"Empty" ()'], [(b"Empty", {})]),
        ([(b"{7}", b"abc def"), b" (MESSAGES 1)"], [(b"abc def", {"MESSAGES": b"1"})]),
    ],
    ids=["quoted", "atom and NIL", "no values", "literal name"],
)
def test_status_entries(items: list[object], expected: list[object]) -> None:
    assert list(wire.status_entries(items)) == expected


@pytest.mark.parametrize(
    "item", [b'"INBOX" (MESSAGES)', b'"INBOX" MESSAGES 1', b'"INBOX" (MESSAGES 1', b"(MESSAGES 1)"],
    ids=["odd count", "no parentheses", "unclosed", "no name"],
)
def test_unreadable_status_entry_comes_as_an_error_in_its_place(item: bytes) -> None:
    [entry] = list(wire.status_entries([item]))
    assert isinstance(entry, ValueError)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"MESSAGES": b"3", "UIDNEXT": b"9", "UIDVALIDITY": b"5", "HIGHESTMODSEQ": b"12"}, FolderStatus(3, -1, 5, 9, 12)),
        ({"MESSAGES": b"0", "HIGHESTMODSEQ": b"NIL"}, FolderStatus(0, -1, 0, 0, 0)),
        ({"MESSAGES": 0, "HIGHESTMODSEQ": None, "SIZE": 10}, FolderStatus(0, 10, 0, 0, 0)),
        ({}, FolderStatus(0, -1, 0, 0, 0)),
    ],
    ids=["numbers", "HIGHESTMODSEQ NIL", "imapclient's values", "nothing"],
)
def test_status_of(values: dict[str, object], expected: FolderStatus) -> None:
    assert records.status_of(values) == expected


@pytest.mark.parametrize("value", [b"many", b"-1", b"1.5", (b"1",), True])
def test_status_value_that_is_no_number_is_a_folder_error(value: object) -> None:
    with pytest.raises(FolderError, match=r"^source \(imap.example.org:993\): folder 'Box': unreadable STATUS reply: MESSAGES ") as raised:
        records.status_of({"MESSAGES": value}, SRC, "Box")
    assert raised.value.side == "src"


@pytest.mark.parametrize(
    ("untagged", "expected"),
    [
        ({"EXISTS": [b"2"], "UIDVALIDITY": [b"7"], "UIDNEXT": [b"3"], "HIGHESTMODSEQ": [b"9"],
          "OK": [b"[PERMANENTFLAGS (\\Seen \\*)] Limited"]}, FolderStatus(2, -1, 7, 3, 9, ("\\Seen", "\\*"))),
        ({"EXISTS": [b"0"], "HIGHESTMODSEQ": [b"NIL"]}, FolderStatus(0, -1, 0, 0, 0, None)),
        ({"EXISTS": [b"1", b"4"], "OK": [b"[PERMANENTFLAGS ()] none"]}, FolderStatus(4, -1, 0, 0, 0, ())),
        ({}, FolderStatus(0, -1, 0, 0, 0, None)),
    ],
    ids=["Dovecot's", "HIGHESTMODSEQ NIL", "EXISTS twice: the last", "nothing"],
)
def test_selected_status(untagged: dict[str, list[object]], expected: FolderStatus) -> None:
    assert records.selected_status(untagged) == expected


def test_selected_status_that_is_no_number_is_a_folder_error() -> None:
    with pytest.raises(FolderError, match=r"folder 'Box': unreadable reply to SELECT: UIDNEXT 'soon'"):
        records.selected_status({"EXISTS": [b"1"], "UIDNEXT": [b"soon"]}, SRC, "Box")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b'(("" "/")) NIL NIL', [(b"", b"/")]),
        (b'(("INBOX." ".")) NIL NIL', [(b"INBOX.", b".")]),
        (b'(("" "/" "X-PARAM" ("FLAG1" "FLAG2"))) NIL NIL', [(b"", b"/")]),
        (b'(("" NIL)) NIL NIL', [(b"", b"")]),
        (b'NIL NIL (("#shared/" "/"))', []),
        (b'(("a" "/")("b" ".")) NIL NIL', [(b"a", b"/"), (b"b", b".")]),
        (b'(("" "/")', None),
        (b'("" "/") NIL NIL', None),
        (b"", None),
    ],
    ids=["Dovecot's", "prefix", "extension data", "NIL delimiter", "no personal", "two", "unclosed",
         "not a list of namespaces", "empty"],
)
def test_personal_namespaces(line: bytes, expected: object) -> None:
    assert wire.personal_namespaces(line) == expected


@pytest.mark.parametrize(
    ("text", "count", "expected"),
    [
        ("[APPENDUID 5 7] done", 1, (5, [7])),
        ("[APPENDUID 5 7:9] done", 3, (5, [7, 8, 9])),
        ("[APPENDUID 5 9:7] done", 3, (5, [7, 8, 9])),
        ("[APPENDUID 5 7,,9] done", 2, None),
        ("[APPENDUID 5 7:] done", 1, None),
        ("[APPENDUID 5 :] done", 1, None),
        ("[APPENDUID 5 1:4000000000] done", 2, None),
        ("OK done", 1, None),
    ],
    ids=["one", "range", "range backwards", "empty part", "open range", "colon alone", "huge range", "none"],
)
def test_append_uids(text: str, count: int, expected: object) -> None:
    assert replies.append_uids(text, count) == expected


@pytest.mark.parametrize(
    ("status", "text", "fall_back"),
    [
        ("BAD", "AUTHENTICATE command error: BAD [b'Unknown mechanism']", True),
        ("NO", "[ALERT] Unsupported authentication mechanism.", True),
        ("NO", "[CANNOT] not now", True),
        ("NO", "[AUTHENTICATIONFAILED] Authentication failed.", False),
        ("NO", "[AUTHORIZATIONFAILED] no", False),
        ("NO", "[EXPIRED] password expired", False),
        ("NO", "[PRIVACYREQUIRED] use TLS", False),
        ("NO", "[CONTACTADMIN] locked", False),
        ("NO", "Login failed.", False),
    ],
)
def test_sasl_unusable(status: str, text: str, fall_back: bool) -> None:
    assert replies.sasl_unusable(status, text) is fall_back


@pytest.mark.parametrize(
    ("number", "expected"),
    [(7, 7), (b"7", 7), ("7", 7), (0, 0), (-1, None), (b"NIL", None), (None, None), (True, None), (b"\xd9\xa3", None)],
)
def test_number(number: object, expected: int | None) -> None:
    assert wire.number(number) == expected


@pytest.mark.parametrize("chunk", [1, 3, 1000])
def test_line_editor_leaves_literals_alone(chunk: int) -> None:
    stream = b"* 1 FETCH (BODY[] {12}\r\nline\r\nline\r\n)\r\n* STATUS x (MESSAGES 0 HIGHESTMODSEQ 4)\r\na OK\r\n"
    editor = LineEditor(lambda line: modseq_nil(bare_lf(line)))
    out = b"".join(editor.feed(stream[i : i + chunk]) for i in range(0, len(stream), chunk)) + editor.flush()
    assert out == b"* 1 FETCH (BODY[] {12}\nline\r\nline\r\n)\n* STATUS x (MESSAGES 0 HIGHESTMODSEQ NIL)\na OK\n"
