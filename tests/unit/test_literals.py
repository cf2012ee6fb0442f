"""Literals read by their own announced length (`fastsync.imap.literals`): what is kept,
what is read and dropped, and that the stream stays in step, on bytes alone."""

from __future__ import annotations

import imaplib
import io
import pickle

import pytest

from fastsync.imap import literals, transport, wire
from fastsync.imap.literals import Bounds, Cut


class Abort(Exception):
    pass


class Stream:
    """A connection's bytes; records the largest read asked of it."""

    abort = Abort

    def __init__(self, data: bytes) -> None:
        self.file = io.BytesIO(data)
        self.largest_read = 0

    def read_bytes(self, size: int) -> bytes:
        self.largest_read = max(self.largest_read, size)
        return self.file.read(size)

    def rest(self) -> bytes:
        return self.file.read()


MB = 1024 * 1024
HEADER = literals.HEADER_LITERAL_MAX_BYTES


@pytest.mark.parametrize(
    ("line", "size", "bounds", "kept", "dropped", "cut"),
    [
        # Whole-message literals: held while the reply's sum fits body_bytes.
        (b"1 (UID 5 BODY[] {100}", 100, Bounds(), 100, 0, False),
        (b"1 (UID 5 BODY[] {100}", 100, Bounds(body_bytes=100), 100, 0, False),
        (b"1 (UID 5 BODY[] {101}", 101, Bounds(body_bytes=100), 0, 1, True),
        (b"1 (UID 5 BODY[] {60}", 60, Bounds(body_bytes=100, held_bytes=50), 0, 1, True),
        (b"1 (UID 5 body[]<0> {101}", 101, Bounds(body_bytes=100), 0, 1, True),
        (b"1 (UID 5 RFC822 {101}", 101, Bounds(body_bytes=100), 0, 1, True),
        (b" BODY[] {3145728}", 3 * MB, Bounds(body_bytes=MB), 0, 1, True),
        # Whole messages are never cut by the header rule, with no bound given.
        (b"1 (UID 5 BODY[] {3000000}", 3_000_000, Bounds(), 3_000_000, 0, False),
        # Any other literal: its first header_bytes at most.
        (b'1 (UID 5 BODY[HEADER.FIELDS (MESSAGE-ID)] {100}', 100, Bounds(body_bytes=10), 100, 0, False),
        (b"1 (UID 5 BODY[HEADER.FIELDS (TO)] {%d}" % (HEADER + 1), HEADER + 1, Bounds(), HEADER, 0, True),
        (b"1 (UID 5 BODY[HEADER.FIELDS (TO)] {3000000}", 3 * MB, Bounds(header_bytes=1000), 1000, 0, True),
        (b"1 (UID 5 BODY[1] {3000}", 3000, Bounds(header_bytes=1000), 1000, 0, True),
    ],
)
def test_a_literal_is_kept_by_its_announced_length(
    line: bytes, size: int, bounds: Bounds, kept: int, dropped: int, cut: bool
) -> None:
    literal = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    stream = Stream(literal + b" UID 5)\r\n")
    taken = bounds.take(stream, line, size)
    assert taken == literal[:kept]
    assert isinstance(taken, Cut) is cut
    if cut:
        assert taken.announced == size
    assert bounds.dropped == dropped
    # The stream is in step: the rest of the response follows.
    assert stream.rest() == b" UID 5)\r\n"
    # Dropped bytes are read a chunk at a time, never asked for whole.
    if cut:
        assert stream.largest_read <= max(kept, literals.READ_BYTES)


def test_a_cut_literal_crosses_processes() -> None:
    cut = pickle.loads(pickle.dumps(Cut(b"start", 10**9)))
    assert isinstance(cut, Cut) and cut == b"start" and cut.announced == 10**9


def test_whole_messages_count_against_the_reply_s_bound_together() -> None:
    bounds = Bounds(body_bytes=250)
    stream = Stream(b"a" * 100 + b"b" * 100 + b"c" * 100 + b"d" * 50)
    taken = [bounds.take(stream, b"%d (BODY[] {%d}" % (n, size), size) for n, size in enumerate((100, 100, 100, 50))]
    assert taken == [b"a" * 100, b"b" * 100, b"", b"d" * 50]
    assert bounds.dropped == 1 and bounds.held_bytes == 250


@pytest.mark.parametrize("size", [10, literals.READ_BYTES * 3 + 1])
def test_a_literal_the_connection_ends_in_is_an_abort(size: int) -> None:
    with pytest.raises(Abort):
        Bounds(body_bytes=1).take(Stream(b"x" * (size - 1)), b"1 (BODY[] {%d}" % size, size)
    with pytest.raises(Abort):
        Bounds().take(Stream(b"x" * (size - 1)), b"1 (BODY[] {%d}" % size, size)
    with pytest.raises(Abort):
        literals.skip(Stream(b"x" * (size - 1)), size)


def test_skip_reads_a_chunk_at_a_time() -> None:
    stream = Stream(b"x" * (10 * literals.READ_BYTES) + b"next")
    literals.skip(stream, 10 * literals.READ_BYTES)
    assert stream.largest_read == literals.READ_BYTES
    assert stream.rest() == b"next"


class Connection(transport.Metered):
    """The metered transport over bytes: lines and literals read as imaplib reads them
    (``readline``, then ``read(size)`` for a literal the line announced)."""

    def __init__(self, data: bytes) -> None:
        self.file = io.BufferedReader(io.BytesIO(data))  # type: ignore[arg-type]


def _literal_after(connection: Connection, *lines: int) -> list[bytes]:
    """Read as imaplib does: a line, then the literal it announces, *lines* times."""
    out = []
    for _ in lines:
        line = connection.readline()
        size = wire.literal_size(line.rstrip(b"\r\n"))
        out.append(connection.read(size) if size is not None else b"")
    return out


def test_imaplib_refuses_a_literal_over_the_bound_outside_fetch_before_reading_it() -> None:
    size = HEADER + 1
    connection = Connection(b'* LIST () "/" {%d}\r\n' % size + b"n" * size + b"\r\n")
    with pytest.raises(imaplib.IMAP4.abort) as caught:
        _literal_after(connection, 1)
    assert str(caught.value).startswith(
        f"the server announced a literal of {size} bytes (in a reply starting b'* LIST () \"/\" {{{size}}}')"
    )
    # Nothing of it was read.
    assert connection.file.read(3) == b"nnn"


def test_imaplib_reads_a_small_literal_outside_fetch_whole() -> None:
    connection = Connection(b'* LIST () "/" {5}\r\nINBOX\r\n')
    assert _literal_after(connection, 1) == [b"INBOX"]


def test_a_fetch_response_imaplib_reads_for_another_command_holds_no_body() -> None:
    body = b"b" * (3 * literals.READ_BYTES)
    header = b"h" * (HEADER + 10)
    data = (
        b"* 1 FETCH (UID 7 BODY[] {%d}\r\n" % len(body) + body
        + b" BODY[HEADER.FIELDS (TO)] {%d}\r\n" % len(header) + header + b")\r\n* 2 EXISTS\r\n"
    )
    connection = Connection(data)
    taken = _literal_after(connection, 1, 2)
    assert isinstance(taken[0], Cut) and taken[0] == b"" and taken[0].announced == len(body)
    # The second literal's line continues the FETCH response: a header's first MiB kept.
    assert isinstance(taken[1], Cut) and taken[1] == header[:HEADER]
    assert connection.readline() == b")\r\n"
    assert connection.readline() == b"* 2 EXISTS\r\n"


def test_within_a_fetch_reply_imaplib_reads_by_its_bounds() -> None:
    connection = Connection(b"* 1 FETCH (UID 7 BODY[] {6}\r\nabcdef)\r\n")
    connection.literal_bounds = Bounds(body_bytes=10)
    assert _literal_after(connection, 1) == [b"abcdef"]
    assert connection.literal_bounds.held_bytes == 6


@pytest.mark.parametrize(
    ("line", "whole"),
    [
        (b'1 (UID 5 FLAGS (\\Seen) INTERNALDATE "01-Jan-2023 00:00:00 +0000" BODY[] {3000}', True),
        (b"1 (BODY[] {5}", True),
        (b"BODY[] {5}", True),
        (b" body[]<0> {5}", True),
        (b"1 (UID 5 RFC822 {9}", True),
        (b"1 (BINARY[] ~{5}", True),
        (b"1 (BODY[HEADER.FIELDS (MESSAGE-ID TO)] {5}", False),
        (b"1 (BODY[HEADER] {5}", False),
        (b"1 (BODY[1] {5}", False),
        (b"1 (XBODY[] {5}", False),
        (b"1 (RFC822.TEXT {5}", False),
        (b"{5}", False),
    ],
)
def test_a_whole_message_is_told_by_the_item_before_its_literal(line: bytes, whole: bool) -> None:
    assert literals.whole_message(line) is whole
