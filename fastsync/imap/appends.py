"""APPEND commands as fastsync writes them: bodies sent as they are, no copy, no rewrite.

Protocol edge, beside `transport.py`, whose imaplib connection (``Client._imap``) these
functions write to: one APPEND of messages in hand (`send_append`, RFC 3502 MULTIAPPEND
for several), or of bodies relayed from the source as they arrive (`send_append_relayed`),
with or without LITERAL+ (RFC 7888).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from fastsync.imap import literals, transport
from fastsync.imap.wire import text_of
from fastsync.records.model import Described, Fetched


def _append_line(message: Fetched | Described, size_bytes: int, literal_plus: bool) -> bytes:
    """One message's part of an APPEND command, up to its literal's announcement: flags,
    internal date and ``{n}``, or ``{n+}`` with LITERAL+ (RFC 7888: no continuation awaited)."""
    flags = " ".join(message.flags).encode("ascii", "replace")
    return (
        b" (" + flags + b') "' + message.internaldate + b'" {'
        + str(size_bytes).encode("ascii") + (b"+}\r\n" if literal_plus else b"}\r\n")
    )


def _refused_before_literal(imap: Any, tag: bytes) -> bool:
    """Wait for the continuation of a synchronizing literal (RFC 3501 section 7.5); True when
    the tagged reply came instead: the server refused before the bytes were sent."""
    # _get_response returns None on a continuation; a tagged reply means refusal.
    while imap._get_response() is not None:
        if imap.tagged_commands.get(tag):
            return True
    return False


# The pieces of a MULTIAPPEND (each message's line, its body, the final CRLF) go to the
# socket in writes of at least this many bytes, small ones joined: one write per piece
# made ~2 sends, TLS records and TCP segments (TCP_NODELAY) per message, each waking the
# server, for a median message of 12 KB.
APPEND_WRITE_BYTES = 256 * 1024


class _Writes:
    """A command's pieces, sent in writes of at least `APPEND_WRITE_BYTES` (a piece that
    large on its own is sent as it is, without a copy)."""

    def __init__(self, imap: Any) -> None:
        self._imap = imap
        self._parts: list[bytes] = []
        self._size_bytes = 0

    def add(self, data: bytes) -> None:
        if len(data) >= APPEND_WRITE_BYTES:
            self.flush()
            self._imap.send(data)
            return
        self._parts.append(data)
        self._size_bytes += len(data)
        if self._size_bytes >= APPEND_WRITE_BYTES:
            self.flush()

    def flush(self) -> None:
        if self._parts:
            self._imap.send(b"".join(self._parts) if len(self._parts) > 1 else self._parts[0])
            self._parts, self._size_bytes = [], 0


def send_append(
    client: transport.Client, folder: str, messages: Sequence[Fetched], literal_plus: bool,
    then: Callable[[], None] | None = None,
) -> tuple[str, str]:
    """Send one APPEND command carrying *messages* (RFC 3501 section 6.3.11, RFC 3502
    MULTIAPPEND when there are several); returns the tagged reply's status and text.
    *then* runs once the command is sent whole, before its reply is read: its commands go
    out in the APPEND's round trip (RFC 3501 section 5.5), and imaplib keeps the APPEND's
    reply for later when it comes while *then* reads its own.

    Bodies go to the socket as they are: no copy, no line-ending rewrite (imaplib's
    APPEND turns bare LF into CRLF, which changes the message; imapclient copies each
    body twice while building the command).  With LITERAL+ (RFC 7888) nothing waits for
    the server's "+"; without it each literal waits for its continuation, and a tagged
    reply instead of one means the server refused before the bytes were sent.
    """
    imap = client._imap
    transport.appending()
    tag = imap._new_tag()
    prefix = tag + b" APPEND " + bytes(client._normalise_folder(folder))
    refused = False
    writes = _Writes(imap)
    for message in messages:
        writes.add(prefix + _append_line(message, len(message.body), literal_plus))
        prefix = b""
        if not literal_plus:
            writes.flush()
            if _refused_before_literal(imap, tag):
                refused = True
                break
        writes.add(message.body)
    if not refused:
        writes.add(b"\r\n")
    writes.flush()
    if then is not None and not refused:
        then()
    typ, data = imap._command_complete("APPEND", tag)
    return typ, text_of(data)


def send_append_relayed(
    client: transport.Client, folder: str, bodies: Iterable[tuple[Described, literals.BodyLiteral]], literal_plus: bool
) -> tuple[str, str] | None:
    """One APPEND (RFC 3502 MULTIAPPEND when *bodies* holds several) whose literals are
    relayed from the source as they arrive; returns the tagged reply's status and text, or
    None when *bodies* held nothing (no command sent).

    Each literal's size is the one the source announced (RFC822.SIZE may be an estimate).
    Without LITERAL+ each continuation is awaited first (RFC 3501 section 7.5); a refusal
    then comes before the literal's bytes, with the source's literal unread
    (``body.finished`` False): the caller drops the source connection, as a FETCH cannot
    be cancelled.  The final CRLF, which completes the command, is sent only once the
    source has sent every byte and its OK: a command is not complete before its last CRLF
    (section 2.2.1), and a server stores nothing of an APPEND that never completed (a
    MULTIAPPEND is all or nothing), so when the source fails (`literals.SourceLost`) or anything
    else stops this midway, the caller drops the destination connection and nothing is
    left on it (tests/dovecot/test_streaming.py checks it on Dovecot).
    """
    imap = client._imap
    tag = b""
    for message, body in bodies:
        line = _append_line(message, body.size_bytes, literal_plus)
        if not tag:
            transport.appending()
            tag = imap._new_tag()
            line = tag + b" APPEND " + bytes(client._normalise_folder(folder)) + line
        imap.send(line)
        if not literal_plus and _refused_before_literal(imap, tag):
            typ, data = imap._command_complete("APPEND", tag)
            return typ, text_of(data)
        for chunk in body.chunks():
            imap.send(chunk)
        body.finish()
    if not tag:
        return None
    imap.send(b"\r\n")
    typ, data = imap._command_complete("APPEND", tag)
    return typ, text_of(data)
