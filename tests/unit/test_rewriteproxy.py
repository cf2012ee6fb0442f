"""The Message-Id rewriting proxy (bench/harness/rewriteproxy.py) that plays an Exchange-like
destination, on byte streams (tests/dovecot/test_rewriteproxy.py puts it in front of a real Dovecot).

The ledger tests (tests/dovecot/test_ledger.py) trust it to rewrite every appended message's Message-Id,
to keep sizes, and to leave everything else alone, whatever the chunking of the stream.
"""

from __future__ import annotations

import re

import pytest

from bench.harness.rewriteproxy import AppendRewriter, NewIds, rewrite_message_id
from tests.helpers import MESSAGE_ID_LINE, mail, outside_ids


# --------------------------------------------------------------------------- one message


@pytest.mark.parametrize(
    ("message", "rewritten"),
    [
        (mail(1), 1),
        (mail(2, b"<Lower-Case.ID+x@Example.ORG>"), 1),
        (mail(3).replace(b"Message-ID:", b"message-id:"), 1),
        (mail(4).replace(b"Message-ID:", b"Message-Id  :"), 1),
        (mail(5, b"\r\n <folded@example.org>"), 1),  # RFC 5322 folding
        (mail(6, b"no-brackets@example.org"), 1),
        (mail(7, eol=b"\n"), 1),  # bare LF
        (mail(8, None), 0),
        (mail(9, None, body=b"Message-ID: <in-the-body@example.org>\r\n"), 0),
        (mail(10, None).replace(b"Subject", b"X-Message-ID: <x@y>\r\nReferences: <r@y>\r\nSubject"), 0),
        (b"\r\nMessage-ID: <after-an-empty-header@example.org>\r\n", 0),
    ],
    ids=["plain", "odd characters", "lower case name", "space before colon", "folded", "no brackets", "LF only",
         "none", "only in the body", "other fields", "empty header section"],
)
def test_rewrite_message_id(message: bytes, rewritten: int) -> None:
    ids = NewIds(seed=1)
    out = rewrite_message_id(message, ids)
    assert len(out) == len(message)
    assert outside_ids(out) == outside_ids(message)
    assert len(ids.pairs) == rewritten
    for old, new in ids.pairs:
        assert old != new and len(old) == len(new)
        assert re.sub(rb"[A-Za-z0-9]", b"", old) == re.sub(rb"[A-Za-z0-9]", b"", new)  # punctuation kept
    assert (out != message) == bool(rewritten)


def test_new_ids_are_all_different() -> None:
    ids = NewIds()
    values = {ids(b" <m1@example.org>") for _ in range(5000)}
    assert len(values) == 5000
    # Even a short id changes, and keeps its shape.
    assert ids(b" <a@b>") != b" <a@b>"
    assert re.fullmatch(rb" <[a-z0-9]@[a-z0-9]>", ids(b" <a@b>"))


# --------------------------------------------------------------------------- the client's stream


def literal(data: bytes, plus: bool = True) -> bytes:
    return b"{%d%s}\r\n" % (len(data), b"+" if plus else b"") + data


BIG = mail(99, body=b"x" * 200_000 + b"\r\n")  # larger than one recv() of the proxy (64 KiB)
TRICKY_BODY = mail(98, body=b"b1 APPEND INBOX {5+}\r\nMessage-ID: <not-a-header@x>\r\n\r\n")

# (name, parts): a part is (bytes, is a message).  Messages are rewritten, the rest is not.
STREAMS: list[tuple[str, list[tuple[bytes, bool]]]] = [
    ("LITERAL+", [(b'a1 APPEND "INBOX" (\\Seen) "01-Jan-2018 10:00:00 +0000" {%d+}\r\n' % len(mail(1)), False),
                  (mail(1), True), (b"\r\na2 NOOP\r\n", False)]),
    ("synchronising", [(b"a1 APPEND INBOX {%d}\r\n" % len(mail(1)), False), (mail(1), True),
                       (b"\r\n", False)]),
    ("MULTIAPPEND", [(b'a1 APPEND "Work" (\\Seen) ' + literal(mail(1))[: -len(mail(1))], False), (mail(1), True),
                     (b" () " + literal(mail(2))[: -len(mail(2))], False), (mail(2), True),
                     (b' (\\Flagged) "02-Jan-2018 10:00:00 +0000" ' + literal(mail(3))[: -len(mail(3))], False),
                     (mail(3), True), (b"\r\n", False)]),
    ("mailbox as a literal", [(b"a1 APPEND " + literal(b"Message-ID: <z@z>", plus=False) + b" {%d+}\r\n" % len(mail(1)), False),
                              (mail(1), True), (b"\r\n", False)]),
    ("BINARY literal8", [(b"a1 APPEND INBOX ~{%d}\r\n" % len(mail(1)), False), (mail(1), True), (b"\r\n", False)]),
    ("larger than a chunk", [(b"a1 APPEND INBOX {%d+}\r\n" % len(BIG), False), (BIG, True), (b"\r\n", False)]),
    ("body like commands", [(b"a1 APPEND INBOX {%d+}\r\n" % len(TRICKY_BODY), False), (TRICKY_BODY, True),
                            (b"\r\n", False)]),
    ("without Message-Id", [(b"a1 APPEND INBOX {%d+}\r\n" % len(mail(4, None)), False), (mail(4, None), True),
                            (b"\r\n", False)]),
    ("other commands' literals", [
        (b"a0 LOGIN {4}\r\nuser {20}\r\nMessage-ID: <p@q>   \r\n", False),
        (b'a1 SEARCH HEADER Message-ID {5+}\r\n<m1@>\r\na2 UID FETCH 1 (BODY.PEEK[])\r\n', False),
        (b"a3 APPEND INBOX {%d+}\r\n" % len(mail(5)), False), (mail(5), True), (b"\r\n", False),
        (b"AGFsaWNlAHB3\r\na4 IDLE\r\nDONE\r\na5 LOGOUT\r\n", False),
    ]),
]


@pytest.mark.parametrize("chunk", [1, 2, 7, 4096, 65536, 10**9], ids=lambda c: f"chunk {c}")
@pytest.mark.parametrize(("name", "parts"), STREAMS, ids=[name for name, _parts in STREAMS])
def test_append_rewriter_rewrites_exactly_the_messages(name: str, parts: list[tuple[bytes, bool]], chunk: int) -> None:
    stream = b"".join(data for data, _is_message in parts)
    expected_ids = NewIds(seed=7)
    expected = b"".join(rewrite_message_id(data, expected_ids) if is_message else data for data, is_message in parts)

    ids = NewIds(seed=7)
    rewriter = AppendRewriter(ids)
    out = b"".join(rewriter.feed(stream[i : i + chunk]) for i in range(0, len(stream), chunk)) + rewriter.flush()

    assert out == expected
    assert len(out) == len(stream)
    assert rewriter.messages == sum(1 for _data, is_message in parts if is_message)
    assert ids.pairs == expected_ids.pairs
    assert len(ids.pairs) == sum(1 for data, is_message in parts if is_message and MESSAGE_ID_LINE.search(data))


def test_only_a_header_is_held_back() -> None:
    """Bytes go on as they come, except the start of a message until its header is whole."""
    rewriter = AppendRewriter(NewIds())
    command = b"a1 APPEND INBOX {%d+}\r\n" % len(BIG)
    assert rewriter.feed(command[:10]) == command[:10]  # a partial command line goes on at once
    assert rewriter.feed(command[10:]) == command[10:]
    assert rewriter.feed(BIG[:20]) == b""  # inside the header: held
    head_end = BIG.index(b"\r\n\r\n") + 4
    out = rewriter.feed(BIG[20 : head_end + 5])
    assert len(out) == head_end + 5 and out[head_end:] == BIG[head_end : head_end + 5]
    assert rewriter.feed(BIG[head_end + 5 :]) == BIG[head_end + 5 :]  # the body streams through
