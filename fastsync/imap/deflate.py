"""COMPRESS=DEFLATE (RFC 4978): a connection's bytes deflated in both directions.

Protocol edge, used by `transport.py` only.  After the server's OK to ``COMPRESS DEFLATE``
every byte either way is raw DEFLATE (RFC 1951, no zlib header: window bits -15).  A
`Deflated` stream then stands in for imaplib's socket, and its `Reading` for imaplib's file: what is sent
is compressed and flushed (Z_SYNC_FLUSH, RFC 4978 section 4: the server must see each
command whole at once), what is read is inflated.  Under TLS it sits above the TLS stream:
compression happens inside TLS.

The side's meters (`transport.Meter`) are charged here, for the compressed bytes, which are
what crosses the wire: a bandwidth cap holds on the wire, and `counts` records both the
compressed (wire) and the inflated sizes of each direction.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Protocol

# What one read from the wire asks for, and the largest piece inflated at once: bounded so
# that a small compressed read cannot inflate into an unbounded buffer (a "zip bomb").
WIRE_READ_BYTES = 64 * 1024
INFLATE_STEP_BYTES = 256 * 1024
# zlib's level: 6, its default, costs ~3x the CPU of 1 for a few per cent on mail; 1 keeps
# the client's CPU per byte low (the link, not the CPU, is what compression saves).
LEVEL = 1


class Meter(Protocol):
    def charge(self, size_bytes: int) -> None: ...


@dataclass
class Counts:
    """Bytes of one connection since COMPRESS: on the wire and as inflated, each way."""

    wire_down: int = 0
    wire_up: int = 0
    plain_down: int = 0
    plain_up: int = 0


class Deflated:
    """A socket-and-file for imaplib: ``sendall`` deflates, ``read``/``readline`` inflate.

    *source* is the connection's buffered reading file as it was when the OK to COMPRESS
    was read (it may already hold the first compressed bytes), *sink* the socket (or TLS
    stream) written to.  Everything else (``fileno``, ``settimeout``, ``shutdown``...) is
    the socket's: polling for IDLE waits on the wire as before.
    """

    def __init__(
        self, source: Any, sink: Any, meter_down: Meter | None, meter_up: Meter | None, tally: Counts | None = None
    ) -> None:
        self._source = source
        self._sink = sink
        self._meter_down = meter_down
        self._meter_up = meter_up
        self._compress = zlib.compressobj(LEVEL, zlib.DEFLATED, -15)
        self._decompress = zlib.decompressobj(-15)
        self._buffer = bytearray()
        self._ended = False
        self.counts = Counts()
        # The process's count of bytes on the wire (`transport.WIRE`), told of ours too.
        self._tally = tally if tally is not None else Counts()

    # -- writing -------------------------------------------------------------------------

    def sendall(self, data: Any) -> None:
        size = len(data)
        wire = self._compress.compress(data) + self._compress.flush(zlib.Z_SYNC_FLUSH)
        self.counts.plain_up += size
        self.counts.wire_up += len(wire)
        self._tally.wire_up += len(wire)
        if self._meter_up is not None:
            self._meter_up.charge(len(wire))
        self._sink.sendall(wire)

    # -- reading -------------------------------------------------------------------------

    def _fill(self) -> bool:
        """Inflate more into the buffer; False at the end of the stream.  With the socket
        non-blocking (imapclient's IDLE) and nothing arrived: BlockingIOError."""
        if self._decompress.unconsumed_tail:
            pending = self._decompress.unconsumed_tail
        else:
            if self._ended:
                return False
            wire = self._source.read1(WIRE_READ_BYTES)
            if not wire and self._sink.gettimeout() == 0:
                # A non-blocking socket (imapclient's IDLE check) reads b"" when nothing
                # arrived: no end, a socket error imapclient takes as "nothing more".
                raise BlockingIOError("no compressed bytes arrived")
            if not wire:
                self._ended = True
                return False
            self.counts.wire_down += len(wire)
            self._tally.wire_down += len(wire)
            if self._meter_down is not None:
                self._meter_down.charge(len(wire))
            pending = wire
        plain = self._decompress.decompress(pending, INFLATE_STEP_BYTES)
        self.counts.plain_down += len(plain)
        self._buffer += plain
        return True

    def read(self, size: int = -1) -> bytes:
        """*size* bytes (all up to the end with -1), or fewer at the end of the stream."""
        while (size < 0 or len(self._buffer) < size) and self._fill():
            pass
        if size < 0:
            size = len(self._buffer)
        taken = bytes(self._buffer[:size])
        del self._buffer[:size]
        return taken

    def read1(self, size: int = -1) -> bytes:
        if not self._buffer:
            while not self._buffer and self._fill():
                pass
        return self.read(min(size, len(self._buffer)) if size >= 0 else len(self._buffer))

    def peek(self, size: int = 1) -> bytes:
        """The next bytes, left unread: at least *size* of them unless a line ends sooner
        or the stream does (as io.BufferedReader.peek, the caller tolerates fewer)."""
        while len(self._buffer) < size and b"\n" not in self._buffer and self._fill():
            pass
        return bytes(self._buffer[: max(size, 1)])

    def readline(self, limit: int = -1) -> bytes:
        """One line with its LF, at most *limit* bytes (imaplib's way of bounding it)."""
        start = 0
        while True:
            end = self._buffer.find(b"\n", start)
            if end >= 0:
                size = end + 1
                break
            if 0 <= limit <= len(self._buffer):
                size = limit
                break
            start = len(self._buffer)
            if not self._fill():
                size = len(self._buffer)
                break
        if limit >= 0:
            size = min(size, limit)
        return self.read(size)

    def close_reading(self) -> None:
        self._buffer.clear()
        self._source.close()

    def close(self) -> None:
        self._sink.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sink, name)


class Reading:
    """imaplib's ``file`` over a `Deflated` stream: imaplib closes its file first, then
    shuts its socket down and closes it, so the two close apart."""

    def __init__(self, stream: Deflated) -> None:
        self.read = stream.read
        self.read1 = stream.read1
        self.peek = stream.peek
        self.readline = stream.readline
        self.close = stream.close_reading
