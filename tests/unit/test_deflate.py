"""The COMPRESS=DEFLATE stream (`imap/deflate.py`) without a server, over a socket pair:
what it sends and reads, and what it charges the meters (the deflated bytes on the wire,
not the message bytes).  The ``compress`` key and flags.  Against Dovecot:
tests/dovecot/test_compress.py."""

from __future__ import annotations

import os
import socket
import zlib
from collections.abc import Iterator
from typing import Any

import pytest

from fastsync.imap.deflate import Deflated, Reading
from fastsync.records.errors import ConfigError
from fastsync.settings import options
from fastsync.settings.config import parse_config


class Recorder:
    """A meter that records what it is charged."""

    rate_bytes_per_s = 1000.0

    def __init__(self) -> None:
        self.charged: list[int] = []

    def charge(self, size_bytes: int) -> None:
        self.charged.append(size_bytes)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    yield ours, theirs
    ours.close()
    theirs.close()


def _stream(ours: socket.socket, down: Recorder | None = None, up: Recorder | None = None) -> Deflated:
    return Deflated(ours.makefile("rb"), ours, down, up)


def _received(theirs: socket.socket, size: int) -> bytes:
    theirs.settimeout(5)
    out = b""
    while len(out) < size:
        out += theirs.recv(size - len(out))
    return out


# Payloads: text that deflates well, random bytes that do not, and both.
PAYLOADS = [b"A1 NOOP\r\n", b"line of a message\r\n" * 5000, os.urandom(200_000), b"x" * 10 + os.urandom(1000)]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_the_up_meter_is_charged_what_crosses_the_wire(pair: tuple[socket.socket, socket.socket], payload: bytes) -> None:
    ours, theirs = pair
    up = Recorder()
    stream = _stream(ours, up=up)
    stream.sendall(payload)
    wire = sum(up.charged)
    sent = _received(theirs, wire)
    theirs.setblocking(False)
    with pytest.raises(BlockingIOError):
        theirs.recv(1)  # nothing beyond what was charged
    inflate = zlib.decompressobj(-15)
    # Z_SYNC_FLUSH: everything sent can be inflated at once, without the end of the stream.
    assert inflate.decompress(sent) == payload
    assert stream.counts.wire_up == wire and stream.counts.plain_up == len(payload)


@pytest.mark.parametrize("payload", PAYLOADS)
def test_the_down_meter_is_charged_what_crossed_the_wire(pair: tuple[socket.socket, socket.socket], payload: bytes) -> None:
    ours, theirs = pair
    down = Recorder()
    stream = _stream(ours, down=down)
    deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    wire = deflate.compress(payload + b"\r\n* OK done\r\n") + deflate.flush(zlib.Z_SYNC_FLUSH)
    theirs.sendall(wire)
    reading = Reading(stream)
    assert reading.read(len(payload)) == payload
    assert reading.readline() == b"\r\n"
    assert reading.peek(4) == b"* OK"
    assert reading.readline(-1) == b"* OK done\r\n"
    assert sum(down.charged) == len(wire) == stream.counts.wire_down
    assert stream.counts.plain_down == len(payload) + len(b"\r\n* OK done\r\n")


@pytest.mark.parametrize(
    ("text", "limit", "lines"),
    [
        (b"a\r\nb\r\n", -1, [b"a\r\n", b"b\r\n", b""]),
        (b"abcdef\r\n", 4, [b"abcd", b"ef\r\n", b""]),
        (b"tail without end", -1, [b"tail without end", b""]),
        (b"\n\n", -1, [b"\n", b"\n", b""]),
    ],
)
def test_readline_as_a_buffered_file_reads(
    pair: tuple[socket.socket, socket.socket], text: bytes, limit: int, lines: list[bytes]
) -> None:
    ours, theirs = pair
    stream = _stream(ours)
    deflate = zlib.compressobj(1, zlib.DEFLATED, -15)
    theirs.sendall(deflate.compress(text) + deflate.flush(zlib.Z_SYNC_FLUSH))
    theirs.shutdown(socket.SHUT_WR)
    assert [stream.readline(limit) for _ in lines] == lines


def test_a_non_blocking_read_with_nothing_arrived_is_a_socket_error(pair: tuple[socket.socket, socket.socket]) -> None:
    """imapclient's IDLE check reads with the socket non-blocking until a socket error."""
    ours, theirs = pair
    stream = _stream(ours)
    deflate = zlib.compressobj(1, zlib.DEFLATED, -15)
    theirs.sendall(deflate.compress(b"* 3 EXISTS\r\n* 4 EX") + deflate.flush(zlib.Z_SYNC_FLUSH))
    ours.setblocking(False)
    assert stream.readline() == b"* 3 EXISTS\r\n"
    with pytest.raises(BlockingIOError):
        stream.readline()
    theirs.sendall(deflate.compress(b"ISTS\r\n") + deflate.flush(zlib.Z_SYNC_FLUSH))
    ours.setblocking(True)
    assert stream.readline() == b"* 4 EXISTS\r\n"


def test_a_small_bomb_inflates_a_bounded_step_at_a_time(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = pair
    stream = _stream(ours)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    theirs.sendall(deflate.compress(b"\0" * 50_000_000) + deflate.flush(zlib.Z_SYNC_FLUSH))
    assert stream.read(10) == b"\0" * 10
    assert len(stream._buffer) <= 1024 * 1024


# --------------------------------------------------------------------------- the setting


def _config(**src: Any) -> dict[str, Any]:
    return {
        "src": {"server": "imap.a.example:993", "user": "a", "pass": "secret", **src},
        "dst": {"server": "imap.b.example:993", "user": "b", "pass": "secret2"},
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, "auto"), ("auto", "auto"), ("no", "no"), (" NO ", "no"), (False, "no")],
)
def test_compress_key(value: object, expected: str) -> None:
    data = _config() if value is None else _config(compress=value)
    config = parse_config(data, "c.yaml", environ={})
    assert config.src.compress == expected and config.dst.compress == "auto"


@pytest.mark.parametrize("value", ["yes", "deflate", 1, True, ["no"]])
def test_compress_key_refuses_other_values(value: object) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_config(compress=value), "c.yaml", environ={})
    assert "src.compress: expected one of auto, no" in str(info.value)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"src_compress": "no"}, {"src": {"compress": "no"}}),
        ({"dst_compress": "no"}, {"dst": {"compress": "no"}}),
        ({"src_compress": "auto", "dst_compress": "no"}, {"src": {"compress": "auto"}, "dst": {"compress": "no"}}),
    ],
)
def test_compress_flags_set_the_sides_keys(values: dict[str, str], expected: dict[str, dict[str, str]]) -> None:
    assert options.account_keys(values) == expected


def test_read_all_reads_to_the_end(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = pair
    stream = _stream(ours)
    deflate = zlib.compressobj(1, zlib.DEFLATED, -15)
    theirs.sendall(deflate.compress(b"* BYE\r\nlast") + deflate.flush(zlib.Z_SYNC_FLUSH))
    theirs.shutdown(socket.SHUT_WR)
    assert stream.readline() == b"* BYE\r\n"
    assert stream.read(-1) == b"last"
    assert stream.read(-1) == b""
