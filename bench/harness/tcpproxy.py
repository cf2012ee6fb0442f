"""A loopback TCP proxy for tests and benchmarks: counts what crosses it, injects faults on demand.

Sits between fastsync and a real Dovecot.  It records every chunk relayed in each direction
with a timestamp (for bandwidth measured on the wire) and the number of connections open
at once (for connection caps).  Given a `Fault` for a connection (by its number, from 0),
it breaks that connection the way networks and servers do: closes it after so many bytes,
resets it, stalls it, refuses it, or swallows the server's answer to an APPEND (so the
message lands but the client never learns it).

Two opt-in extras, both off by default (the proxy then relays bytes untouched and keeps
none of them):

* ``record=True`` keeps every byte relayed, per connection: ``proxy.recordings[n]`` is
  connection *n*'s `Recording`, with ``client_bytes`` (client to server) and
  ``server_bytes`` (server to client) as bytearrays, for tests that read the commands a
  client sent.  Memory grows with the traffic: for small transfers only.
* ``replace_down=(old, new)`` rewrites every *old* the server sends into *new* before the
  client sees it, to imitate another server's formatting (e.g. a space-padded date).  It
  also matches across chunks; *old* and *new* of equal length keep literal counts true,
  and *old* must not occur inside message bodies.
* ``rewrite_up=factory`` passes each connection's client bytes through ``factory()``, an
  `UpstreamRewriter`, before the server sees them (bench/harness/rewriteproxy.py uses it to play a
  server that replaces Message-Id on APPEND).  With ``record=True`` the rewritten bytes
  are kept: what the server received.
* ``rewrite_down=factory`` does the same to the server's bytes before the client sees them
  (bench/harness/replyproxy.py uses it to play servers whose replies differ from Dovecot's,
  bench/harness/gmailproxy.py to answer Gmail's FETCH items; `LineRewriter` passes each
  line through a function, to play a server whose replies carry other values: a FETCH
  item it gets wrong, a UIDVALIDITY that changes).
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Fault:
    """What to do to one connection; bytes are counted per direction from its start."""

    refuse: bool = False
    greeting: bytes = b""
    close_after_down: int = 0
    close_after_up: int = 0
    reset: bool = False
    stall_after_down: int = 0
    stall_s: float = 0.0
    lose_append_reply: bool = False
    # Server bytes from this marker on wait stall_s before they go on (those before it go
    # first): whether a client sends its next command without waiting for that reply
    # (pipelining) shows in `Recording.order`.
    hold_down: bytes = b""
    # Relay the greeting, then hang up when the client logs in (mox past 30 connections).
    hang_up_at_login: bool = False


class UpstreamRewriter(Protocol):
    """Rewrites one connection's client-to-server bytes as they pass, chunk by chunk."""

    def feed(self, data: bytes) -> bytes:
        """The bytes to send on now for *data*; bytes held back come out of a later call."""
        ...

    def flush(self) -> bytes:
        """What is still held back, when the client has closed its side."""
        ...


class LineRewriter:
    """An `UpstreamRewriter` for either direction: each complete line (up to its LF) is
    passed through *change*; a line cut by a chunk's end is held until its LF arrives."""

    def __init__(self, change: Callable[[bytes], bytes]) -> None:
        self.change = change
        self._partial = b""

    def feed(self, data: bytes) -> bytes:
        data = self._partial + data
        end = data.rfind(b"\n") + 1
        self._partial = data[end:]
        return b"".join(self.change(line) for line in data[:end].splitlines(keepends=True))

    def flush(self) -> bytes:
        held, self._partial = self._partial, b""
        return held


@dataclass
class Recording:
    """The bytes one connection carried, when the proxy records (``record=True``)."""

    client_bytes: bytearray = field(default_factory=bytearray)
    server_bytes: bytearray = field(default_factory=bytearray)
    # Both directions' chunks as the proxy passed them on: (number, upstream, bytes), the
    # numbers counting every connection's chunks, so that they order connections too.
    order: list[tuple[int, bool, bytes]] = field(default_factory=list)


@dataclass
class Traffic:
    """Chunks relayed, as (monotonic time, bytes), per direction."""

    to_server: list[tuple[float, int]] = field(default_factory=list)
    to_client: list[tuple[float, int]] = field(default_factory=list)

    @staticmethod
    def rate(chunks: list[tuple[float, int]], window_s: float) -> float:
        """Highest average rate over any window of *window_s* seconds (sliding over chunks)."""
        best = 0.0
        start = 0
        total = 0
        for end in range(len(chunks)):
            total += chunks[end][1]
            while chunks[end][0] - chunks[start][0] > window_s:
                total -= chunks[start][1]
                start += 1
            if chunks[end][0] - chunks[0][0] >= window_s:
                best = max(best, total / window_s)
        return best

    @staticmethod
    def span(chunks: list[tuple[float, int]]) -> tuple[float, int]:
        """(seconds from first to last chunk, total bytes)."""
        if not chunks:
            return 0.0, 0
        return chunks[-1][0] - chunks[0][0], sum(size for _t, size in chunks)


class CountingProxy:
    """``with CountingProxy(port) as proxy:`` then point a client at ``proxy.port``."""

    def __init__(
        self,
        target_port: int,
        target_host: str = "127.0.0.1",
        faults: Callable[[int], Fault | None] | None = None,
        *,
        record: bool = False,
        replace_down: tuple[bytes, bytes] | None = None,
        rewrite_up: Callable[[], UpstreamRewriter] | None = None,
        rewrite_down: Callable[[], UpstreamRewriter] | None = None,
        max_open: int = 0,
        hang_up_at_login: bool = False,
    ) -> None:
        self.target = (target_host, target_port)
        # A server that accepts at most this many connections at once (0: any number): past
        # it, a new connection is greeted with BYE and closed, as Gmail does past 15, or with
        # *hang_up_at_login*, greeted and closed when the client logs in, as mox does past 30.
        self.max_open = max_open
        self.hang_up_at_login = hang_up_at_login
        self.turned_away = 0
        self.faults = faults or (lambda _n: None)
        self.record = record
        self.recordings: list[Recording] = []
        if replace_down is not None and not replace_down[0]:
            raise ValueError("replace_down needs a non-empty string to replace")
        self.replace_down = replace_down
        self.rewrite_up = rewrite_up
        self.rewrite_down = rewrite_down
        self.accepted = 0
        self.chunks = 0
        self.faults_done = 0
        self.traffic = Traffic()
        self.open_connections = 0
        self.peak_connections = 0
        self._lock = threading.Lock()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = int(self._listener.getsockname()[1])
        self._closing = False
        self._threads: list[threading.Thread] = []
        self._links: list[_Link] = []

    def __enter__(self) -> CountingProxy:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing = True
        self._listener.close()

    def drop_all(self) -> int:
        """Close every open connection at once, as a server restart or a lost network
        would; returns how many were open."""
        links = [link for link in self._links if not link.done.is_set()]
        for link in links:
            self._close(link)
        return len(links)

    def reset_peak(self) -> None:
        """Start counting ``peak_connections`` (and ``traffic``) afresh: the next client's share only."""
        with self._lock:
            self.peak_connections = self.open_connections
            self.traffic = Traffic()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _addr = self._listener.accept()
            except OSError:
                return
            fault = self.faults(self.accepted) or Fault()
            self.accepted += 1
            if self.max_open and self.open_connections >= self.max_open:
                self.turned_away += 1
                fault = (Fault(hang_up_at_login=True) if self.hang_up_at_login
                         else Fault(greeting=b"* BYE [UNAVAILABLE] Too many simultaneous connections\r\n"))
            recording = Recording() if self.record else None
            if recording is not None:
                self.recordings.append(recording)
            if fault.refuse or fault.greeting:
                # A refused connection, or a server that greets and hangs up at once
                # (Gmail's "* BYE [UNAVAILABLE] Too many simultaneous connections").
                self.faults_done += 1
                if fault.greeting:
                    if recording is not None:
                        recording.server_bytes += fault.greeting
                    client.sendall(fault.greeting)
                client.close()
                continue
            server = socket.create_connection(self.target)
            # Small buffers on the proxy's own legs: bytes are then counted when the client
            # can take them, as a server without a proxy in the way would send them, not
            # megabytes early into the proxy's buffers.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
            server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            with self._lock:
                self.open_connections += 1
                self.peak_connections = max(self.peak_connections, self.open_connections)
            link = _Link(client, server, fault, recording, rewriter=self.rewrite_up() if self.rewrite_up else None,
                         rewriter_down=self.rewrite_down() if self.rewrite_down else None)
            self._links.append(link)
            for upstream in (True, False):
                threading.Thread(target=self._relay, args=(link, upstream), daemon=True).start()

    def _relay(self, link: _Link, upstream: bool) -> None:
        src, dst = (link.client, link.server) if upstream else (link.server, link.client)
        log = self.traffic.to_server if upstream else self.traffic.to_client
        fault = link.fault
        limit = fault.close_after_up if upstream else fault.close_after_down
        kept = None
        if link.recording is not None:
            kept = link.recording.client_bytes if upstream else link.recording.server_bytes
        replace = None if upstream else self.replace_down
        rewriter = link.rewriter if upstream else link.rewriter_down
        held = b""
        relayed = 0
        try:
            while not link.done.is_set():
                data = src.recv(65536)
                if not data:
                    if rewriter is not None:
                        held += rewriter.flush()
                    if held:
                        if kept is not None:
                            kept += held
                        dst.sendall(held)
                    break
                if rewriter is not None:
                    data = rewriter.feed(data)
                    if not data:
                        continue
                if replace is not None:
                    data, held = _replace(held + data, *replace)
                    if not data:
                        continue
                if upstream and fault.hang_up_at_login and (b" LOGIN " in data.upper() or
                                                           b" AUTHENTICATE " in data.upper()):
                    self._break(link)
                    return
                if upstream and fault.lose_append_reply and b" APPEND " in data:
                    link.append_sent = True
                if not upstream and link.append_sent and b" OK " in data:
                    # The APPEND succeeded on the server; the client never hears of it.
                    self._break(link)
                    return
                if limit and relayed + len(data) >= limit:
                    if kept is not None:
                        kept += data[: max(0, limit - relayed)]
                    dst.sendall(data[: max(0, limit - relayed)])
                    self._break(link)
                    return
                # A stall comes exactly where it is asked for: the bytes before it go on first.
                stall_at = -1
                if not upstream and fault.stall_after_down and relayed < fault.stall_after_down <= relayed + len(data):
                    stall_at = fault.stall_after_down - relayed
                if not upstream and fault.hold_down and fault.hold_down in data:
                    stall_at = data.index(fault.hold_down)
                if stall_at >= 0:
                    before, data = data[:stall_at], data[stall_at:]
                    self._pass(link, log, kept, upstream, before, dst)
                    relayed += len(before)
                    with self._lock:
                        self.faults_done += 1
                    time.sleep(fault.stall_s)
                relayed += len(data)
                self._pass(link, log, kept, upstream, data, dst)
        except OSError:
            pass
        finally:
            self._close(link)

    def _pass(self, link: _Link, log: list[tuple[float, int]], kept: bytearray | None, upstream: bool,
              data: bytes, dst: socket.socket) -> None:
        """Send *data* on, counted and recorded."""
        if not data:
            return
        with self._lock:
            log.append((time.monotonic(), len(data)))
            if link.recording is not None:
                self.chunks += 1
                link.recording.order.append((self.chunks, upstream, data))
        if kept is not None:
            kept += data
        dst.sendall(data)

    def _break(self, link: _Link) -> None:
        with self._lock:
            self.faults_done += 1
        if link.fault.reset:
            # SO_LINGER 0: close() sends RST instead of FIN.
            link.client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._close(link)

    def _close(self, link: _Link) -> None:
        # The first direction to end closes both sockets; the connection is over.
        with self._lock:
            if link.done.is_set():
                return
            link.done.set()
            self.open_connections -= 1
        for sock in (link.client, link.server):
            if not (link.fault.reset and sock is link.client):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            sock.close()


def _replace(data: bytes, old: bytes, new: bytes) -> tuple[bytes, bytes]:
    """(*data* with *old* replaced by *new*, the tail held back because it may begin an *old*
    that the next chunk completes)."""
    data = data.replace(old, new)
    for keep in range(min(len(old) - 1, len(data)), 0, -1):
        if old.startswith(data[-keep:]):
            return data[:-keep], data[-keep:]
    return data, b""


@dataclass
class _Link:
    client: socket.socket
    server: socket.socket
    fault: Fault
    recording: Recording | None = None
    append_sent: bool = False
    rewriter: UpstreamRewriter | None = None
    rewriter_down: UpstreamRewriter | None = None
    done: threading.Event = field(default_factory=threading.Event)
