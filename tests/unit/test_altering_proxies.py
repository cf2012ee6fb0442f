"""The proxies that play servers which alter what passes (bench/harness/rewriteproxy.py's
`MboxProxy`, bench/harness/gmailproxy.py), on byte streams; tests/dovecot/test_altering_servers.py
and tests/dovecot/test_gmail_like.py put them in front of a real Dovecot."""

from __future__ import annotations

import pytest

from bench.harness.gmailproxy import gm_msgid_of, to_client, to_server
from bench.harness.replyproxy import LineEditor
from bench.harness.rewriteproxy import MboxRewriter, alter_like_mbox


# --------------------------------------------------------------------------- the proxy itself


@pytest.mark.parametrize(
    ("message", "altered"),
    [
        (b"Subject: a\r\n\r\nbody\r\n", b"Subject: a\r\nStatus: O\r\nX-UID: 7\r\n\r\nbody\r\n"),
        (b"Subject: a\r\n\r\nFrom here\r\nnot From\r\nFrom\r\n",
         b"Subject: a\r\nStatus: O\r\nX-UID: 7\r\n\r\n>From here\r\nnot From\r\nFrom\r\n"),
        (b"Subject: a\n\nFrom x\n", b"Subject: a\nStatus: O\nX-UID: 7\n\n>From x\n"),
    ],
    ids=["header lines", "From quoted", "LF"],
)
def test_alter_like_mbox(message: bytes, altered: bytes) -> None:
    assert alter_like_mbox(message, 7) == altered


MAIL = b"From: a@x\r\nSubject: s\r\n\r\nFrom me\r\n"


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_mbox_rewriter_alters_messages_in_non_synchronising_literals_only(chunk: int) -> None:
    stream = (
        b'a1 APPEND INBOX (\\Seen) "01-Jan-2018 10:00:00 +0000" {%d+}\r\n' % len(MAIL) + MAIL
        + b' () "01-Jan-2018 10:00:00 +0000" {%d+}\r\n' % len(MAIL) + MAIL + b"\r\n"
        + b"a2 APPEND INBOX {%d}\r\n" % len(MAIL) + MAIL + b"\r\n"
        + b"a3 SEARCH HEADER Subject {1+}\r\ns\r\na4 NOOP\r\n"
    )
    numbers = iter(range(1, 10))
    rewriter = MboxRewriter(lambda: next(numbers))
    out = b"".join(rewriter.feed(stream[i : i + chunk]) for i in range(0, len(stream), chunk)) + rewriter.flush()
    first, second = alter_like_mbox(MAIL, 1), alter_like_mbox(MAIL, 2)
    assert out == (
        b'a1 APPEND INBOX (\\Seen) "01-Jan-2018 10:00:00 +0000" {%d+}\r\n' % len(first) + first
        + b' () "01-Jan-2018 10:00:00 +0000" {%d+}\r\n' % len(second) + second + b"\r\n"
        + b"a2 APPEND INBOX {%d}\r\n" % len(MAIL) + MAIL + b"\r\n"
        + b"a3 SEARCH HEADER Subject {1+}\r\ns\r\na4 NOOP\r\n"
    )
    assert (rewriter.altered, rewriter.passed) == (2, 1)



GUID = b"41bea614d0b1166b1c25000083ecc375"


@pytest.mark.parametrize("chunk", [1, 5, 4096])
def test_gmail_ids_from_guids_outside_literals_only(chunk: int) -> None:
    header = b"Subject: X-GUID " + GUID + b"\r\n\r\n"
    stream = (
        b"* OK [CAPABILITY IMAP4rev1 SASL-IR] ready\r\n"
        b"* 1 FETCH (UID 4 X-GUID " + GUID + b" BODY[HEADER.FIELDS (SUBJECT)] {%d}\r\n" % len(header) + header
        + b")\r\na1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n"
    )
    rewriter = LineEditor(to_client)
    out = b"".join(rewriter.feed(stream[i : i + chunk]) for i in range(0, len(stream), chunk)) + rewriter.flush()
    assert out == (
        b"* OK [CAPABILITY IMAP4rev1 X-GM-EXT-1 SASL-IR] ready\r\n"
        b"* 1 FETCH (UID 4 X-GM-MSGID %d BODY[HEADER.FIELDS (SUBJECT)] {%d}\r\n" % (gm_msgid_of(GUID), len(header))
        + header + b")\r\na1 OK [CAPABILITY IMAP4rev1 X-GM-EXT-1 IDLE] Logged in\r\n"
    )
    assert to_server(b"a2 FETCH 1:* (UID X-GM-MSGID)\r\n") == b"a2 FETCH 1:* (UID X-GUID)\r\n"
