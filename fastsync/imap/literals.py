"""Literals read by their own announced length: what one FETCH reply may hold, and a
message's body read a chunk at a time.

Protocol edge (`fastsync/imap/`), beneath `transport.py` (its metered connection is the
`Source` read here; it hands this module imaplib's connection, and this module imports
neither imaplib nor imapclient, naming their errors through the connection: ``abort``,
``error``).  A literal announces its length before its bytes (``{N}``, RFC 3501 section
4.3); that length, not RFC822.SIZE (which may be an estimate, or wrong), decides what is
kept in memory:

* a whole-message literal (``BODY[] {N}``) is held only while the reply's whole-message
  literals fit the reply's `Bounds.body_bytes`; one over it is read in chunks and dropped
  (`Bounds.dropped` counts them), so that the caller streams the message instead of
  holding it (`OverBudget`);
* any other literal (the identity header fields, BODY[HEADER.FIELDS (...)]) keeps its
  first `HEADER_LITERAL_MAX_BYTES` bytes at most, the rest read in chunks and dropped: the
  message is still identified, from those bytes, the same way on both sides (`Cut`);
* a literal in any other reply, which imaplib reads, is refused above that size before a
  byte of it is read (`absurd`: `transport.Metered.read`).

Whatever a server announces, reading one literal holds at most `READ_BYTES` beyond what it
keeps.  A message streamed from the source (`open_body`, `BodyLiteral`: relayed into an
APPEND, or hashed by `body_digest`) holds one chunk.  The bounds are tested on bytes alone
(tests/unit/test_literals.py) and against Dovecot (tests/dovecot/test_literal_bounds.py).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from fastsync.imap import wire

# A literal is read this many bytes at a time when it is dropped, or read whole.
READ_BYTES = 64 * 1024

# A header-fields literal keeps at most this many bytes: real identity header fields
# (Message-Id, Date, From, Subject, To) are a few hundred bytes, a To of thousands of
# recipients some hundred KB.  A server sending more (one sent 300 MB) gets its first
# MiB read for the message's identity, the rest dropped unread into memory.
HEADER_LITERAL_MAX_BYTES = 1024 * 1024


class Source(Protocol):
    """What a literal is read from: imaplib's connection (`transport.Metered`: its metered
    ``read_bytes``, and ``abort``, the exception that says the connection is out of step)."""

    @property
    def abort(self) -> type[Exception]: ...

    def read_bytes(self, size: int) -> bytes: ...


# The items whose literal is a whole message (RFC 3501 section 7.4.2: BODY[], also in
# its partial form BODY[]<origin>; RFC822; RFC 3516 BINARY[]).
_WHOLE_ITEMS = (b"BODY[]", b"BINARY[]", b"RFC822")


def whole_message(line: bytes) -> bool:
    """Whether the literal announced at the end of *line* is a whole message, by the item
    just before it (string operations: a regular expression cost 4 times as much per
    message of a batched unit)."""
    item = line[: line.rfind(b"{")].rstrip(b"~ ")
    name = item[max(item.rfind(b" "), item.rfind(b"(")) + 1 :].upper()
    if name.endswith(b">"):
        name = name[: name.rfind(b"<")]
    return name in _WHOLE_ITEMS


class Cut(bytes):
    """The start of a literal whose rest was read and dropped; `announced` is its length."""

    announced: int

    def __new__(cls, kept: bytes, announced: int) -> Cut:
        cut = super().__new__(cls, kept)
        cut.announced = announced
        return cut

    def __reduce__(self) -> tuple[type[Cut], tuple[bytes, int]]:
        return Cut, (bytes(self), self.announced)


class OverBudget(Exception):
    """A FETCH reply's whole-message literals were more than it may hold (`Bounds.body_bytes`):
    those over were read and dropped, the connection is in step.  The caller streams them."""


@dataclass
class Bounds:
    """What one FETCH reply may hold: whole-message literals up to *body_bytes* in all (None:
    no bound), any other literal up to *header_bytes* each."""

    body_bytes: int | None = None
    header_bytes: int = HEADER_LITERAL_MAX_BYTES
    held_bytes: int = 0
    dropped: int = 0

    def take(self, source: Source, line: bytes, size_bytes: int) -> bytes:
        """The literal of *size_bytes* that *line* (without its CRLF) announced, read from
        *source*: whole, or a `Cut` of it by the rules above."""
        if self.body_bytes is None and size_bytes <= self.header_bytes:
            # Whole by either rule: the survey's header fields, without a look at the line.
            return read_exactly(source, size_bytes)
        if whole_message(line):
            if self.body_bytes is None or self.held_bytes + size_bytes <= self.body_bytes:
                self.held_bytes += size_bytes
                return read_exactly(source, size_bytes)
            skip(source, size_bytes)
            self.dropped += 1
            return Cut(b"", size_bytes)
        if size_bytes <= self.header_bytes:
            return read_exactly(source, size_bytes)
        kept = read_exactly(source, self.header_bytes)
        skip(source, size_bytes - self.header_bytes)
        return Cut(kept, size_bytes)


def absurd(line: bytes, size_bytes: int) -> str:
    """What to say of a literal of *size_bytes* where no reply carries one that long (the
    line that announced it quoted by its start: printable, short)."""
    return (
        f"the server announced a literal of {size_bytes} bytes (in a reply starting {line[:40]!r}); "
        f"no such reply is over {HEADER_LITERAL_MAX_BYTES} bytes"
    )


def read_exactly(source: Source, size_bytes: int) -> bytes:
    """*size_bytes* bytes; a connection that ends before is its ``abort``, as in imaplib."""
    data = source.read_bytes(size_bytes)
    if len(data) < size_bytes:
        raise source.abort("socket error: EOF in the middle of a literal")
    return data


def skip(source: Source, size_bytes: int) -> None:
    """Read *size_bytes* and keep none of them, `READ_BYTES` at a time."""
    while size_bytes > 0:
        part = source.read_bytes(min(size_bytes, READ_BYTES))
        if not part:
            raise source.abort("socket error: EOF")
        size_bytes -= len(part)


# The start of an untagged FETCH response (RFC 3501 section 7.4.2): "* 12 FETCH (".
_FETCH_START = re.compile(rb"\* (\d+) FETCH (\(.*)", re.DOTALL)


def read_fetch(imap: Any, tag: bytes, bounds: Bounds) -> tuple[str, Any, list[Any]]:
    """The tagged status and text of FETCH command *tag* (sent with imaplib's ``_command``),
    and its untagged FETCH items in imaplib's form, for `wire.records`, each literal read
    within *bounds*: imaplib's reader takes ~7 µs per small message (regular expressions per
    line, the repr of every line for its command log even with debugging off), this one
    ~2.3 (bench/README.md).  Any other line (EXISTS, BYE, one not fully arrived yet) goes to
    imaplib as usual.  *imap* is imaplib's connection (`transport.read_fetch` hands it over).
    """
    imap.literal_bounds = bounds
    try:
        return _read_fetch(imap, tag, bounds)
    finally:
        imap.literal_bounds = None


def starts_fetch(line: bytes) -> bool:
    """Whether *line* is the first line of an untagged FETCH response."""
    return _FETCH_START.match(line) is not None


def _read_fetch(imap: Any, tag: bytes, bounds: Bounds) -> tuple[str, Any, list[Any]]:
    peek = imap.file.peek  # both transports read through an io.BufferedReader
    # FETCH responses imaplib kept before (unsolicited) go to the caller too, as before.
    items: list[Any] = imap.untagged_responses.pop("FETCH", [])
    prefix = tag + b" "
    while True:
        head = peek(32)
        if _FETCH_START.match(head):
            start = _FETCH_START.match(line_of(imap))
            assert start is not None  # the line begins with the bytes just looked at
            data = start.group(1) + b" " + start.group(2)
            while (size := wire.literal_size(data)) is not None:
                items.append((data, bounds.take(imap, data, size)))
                data = line_of(imap)
            items.append(data)
            continue
        if head.startswith(prefix):
            status, _sep, text = line_of(imap)[len(prefix):].partition(b" ")
            done: tuple[str, Any] | None = (status.decode("ascii", "replace").upper(), text)
        else:
            imap._get_response()
            imap._check_bye()
            items.extend(imap.untagged_responses.pop("FETCH", []))
            done = imap.tagged_commands.get(tag)
        if done is not None:
            imap.tagged_commands.pop(tag, None)
            return done[0], done[1], items


def line_of(imap: Any) -> bytes:
    """One response line without its CRLF (RFC 3501 section 2.2), as imaplib reads it."""
    line: bytes = imap.readline()
    if not line:
        raise imap.abort("socket error: EOF")
    if not line.endswith(b"\r\n"):
        raise imap.abort(f"socket error: unterminated line: {line[:100]!r}")
    return line[:-2]


# -- one message's body, a chunk at a time ---------------------------------------------


class SourceLost(Exception):
    """The source connection failed while its literal was being relayed; ``cause`` says how.

    Not an OSError, so that the destination's error handling cannot mistake it for its own
    connection's failure: the caller must drop the destination, never complete its literal.
    """

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class BodyLiteral:
    """A message body the source is sending as the literal of a FETCH response (RFC 3501
    section 7.4.2), read as it arrives, at most `READ_BYTES` at a time, through the metered
    socket: memory holds one chunk, whatever the message's size, and a relay passes each
    piece on at once (waiting for whole chunks of 64 KiB kept the destination's link 65 ms
    behind the source's on a 1 MB/s link, the last chunk included).  Every failure of the
    source is `SourceLost`."""

    def __init__(self, imap: Any, tag: bytes, uid: int, size_bytes: int) -> None:
        self._imap = imap
        self._tag = tag
        self.uid = uid
        self.size_bytes = size_bytes
        # True once the literal, the rest of the response and the tagged OK were read: the
        # connection is in step again.
        self.finished = False

    def chunks(self) -> Iterator[bytes]:
        remaining = self.size_bytes
        while remaining > 0:
            step = min(remaining, READ_BYTES)
            try:
                part = self._imap.read_some(step)
            except (OSError, EOFError, self._imap.abort) as exc:
                raise SourceLost(exc) from None
            if not part:
                raise SourceLost(EOFError("connection closed in the middle of a message"))
            remaining -= len(part)
            yield part

    def finish(self) -> None:
        """Read the rest of the FETCH response and its tagged reply, which must be OK."""
        try:
            rest = self._imap._get_line()
            uid = wire.uid_in(rest)
            if not rest.endswith(b")") or (uid is not None and uid != self.uid):
                raise self._imap.abort(f"unexpected end of a FETCH response: {rest[:100]!r}")
            status = _read_to_tagged(self._imap, self._tag)
        except (OSError, EOFError, self._imap.abort) as exc:
            raise SourceLost(exc) from None
        self.finished = True
        if status[0] != "OK":
            raise SourceLost(self._imap.abort(f"FETCH failed after the body: {status[1][:200]}"))


def _read_to_tagged(imap: Any, tag: bytes) -> tuple[str, str]:
    """Read lines up to the tagged reply of *tag*, skipping untagged ones and their literals."""
    while True:
        line = imap._get_line()
        if line.startswith(tag + b" "):
            imap.tagged_commands.pop(tag, None)
            status, _sep, text = line[len(tag) + 1 :].partition(b" ")
            return status.decode("ascii", "replace").upper(), text.decode("utf-8", "replace")
        skip(imap, wire.literal_size(line) or 0)


def open_body(imap: Any, uid: int) -> BodyLiteral | None:
    """Ask for one message's body (``UID FETCH uid (BODY.PEEK[])``, which leaves \\Seen
    alone, RFC 3501 section 6.4.5) and read up to the start of its literal, whose size the
    server announces before the bytes.  None when the message is gone (expunged); a refused
    FETCH raises imaplib's error with the server's text.

    One command in flight at a time: Dovecot runs pipelined FETCH commands side by side, so
    one's reply may come before the previous one's tagged OK, and a body is known to be
    *uid*'s even when the server names the UID after the literal (RFC 3501 section 7.4.2
    fixes no order of items).  *imap* is imaplib's connection.
    """
    tag = imap._new_tag()
    imap.send(tag + b" UID FETCH " + str(uid).encode("ascii") + b" (BODY.PEEK[])\r\n")
    while True:
        line = imap._get_line()
        if line.startswith(tag + b" "):
            imap.tagged_commands.pop(tag, None)
            status, _sep, text = line[len(tag) + 1 :].partition(b" ")
            if status.upper() != b"OK":
                raise imap.error(text.decode("utf-8", "replace"))
            return None
        body = wire.body_literal(line)
        if body is not None and body[1] in (None, uid):
            return BodyLiteral(imap, tag, uid, body[0])
        # Anything else (an unsolicited FETCH of flags, EXISTS) is not ours: skipped.
        skip(imap, wire.literal_size(line) or 0)


def body_digest(imap: Any, uid: int) -> tuple[str, str]:
    """The sha256 of one message's body (`open_body`), hashed a chunk at a time as it
    arrives, whatever its size: ("OK", hex digest), ("OK", "") when the message is gone, or
    the refusal's status and text.  A connection that broke midway is imaplib's abort."""
    try:
        body = open_body(imap, uid)
    except imap.abort:
        raise
    except imap.error as exc:
        return "NO", str(exc)
    if body is None:
        return "OK", ""
    digest = hashlib.sha256()
    try:
        for chunk in body.chunks():
            digest.update(chunk)
        body.finish()
    except SourceLost as exc:
        raise imap.abort(str(exc.cause)) from None
    return "OK", digest.hexdigest()
