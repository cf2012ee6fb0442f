"""A loopback TCP proxy that makes a local server look far away: one-way delay and a bandwidth cap.

Every chunk read from one side is stamped with its arrival time and written to the other
side ``delay_s`` later, so the delay applies to bytes, not to round trips: a client that
pipelines keeps its throughput and only pays the latency, as on a real long link.
Ordering is preserved per direction.  With ``rate_bytes_per_s`` each direction of each
connection is also serialised at that rate (a per-connection cap, like a TCP flow on a
link of that speed; all connections together are not capped).

What is not modelled: the TCP handshake (``connect()`` returns after a loopback round
trip, the server's greeting then arrives ``delay_s`` later), loss and jitter.

The proxy runs an asyncio loop in a daemon thread::

    with WanProxy("127.0.0.1", server_port, delay_s=0.025) as proxy:
        client = IMAPClient("127.0.0.1", proxy.port)

With a `WireLog` (``WanProxy(..., log=WireLog())``) the proxy records, per connection, when
it was accepted and every chunk: its direction, its size, when the sender handed it to the
proxy and when the proxy released it to the receiver (both on `time.monotonic`), and on a
plain (not TLS) connection the command names a client chunk starts (``UID FETCH``,
``APPEND``: the name only, never an argument, so no password is logged).  `bench/timeline.py`
turns it into a per-connection timeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

__all__ = ["Chunk", "WanProxy", "WireLog"]

# Bytes read per chunk: a chunk is the unit of delay, so it is small enough that a chunk
# never waits long for the rest of it and large enough to keep Python's per-chunk cost low.
CHUNK_BYTES = 64 * 1024

# Chunks in flight per direction before reading stops: a bound on memory (16 MB) that is
# above the bandwidth-delay product of any link this benchmark models.
QUEUE_CHUNKS = 256


# The start of a client command line (RFC 3501 section 2.2.1: tag SP name): tags are
# letters and digits here (imaplib's and fastsync's).  Only the name is kept.
_COMMAND = re.compile(rb"(?:^|\r\n)[A-Za-z0-9.]+ ((?:UID )?[A-Z]+)(?= |\r\n)")


@dataclass(frozen=True)
class Chunk:
    """One chunk through the proxy: connection number, "up" (client to server) or "down",
    bytes, when the sender handed it over and when it was released to the receiver
    (`time.monotonic` seconds), and the command names it carries (client chunks)."""

    conn: int
    direction: str
    size_bytes: int
    read_s: float
    sent_s: float
    commands: tuple[str, ...] = ()


@dataclass
class WireLog:
    """What a `WanProxy` carried, per connection (see the module's docstring).  Appended to
    by the proxy's thread; read once the traffic of interest is over."""

    accepted_s: dict[int, float] = field(default_factory=dict)
    chunks: list[Chunk] = field(default_factory=list)

    def between(self, start_s: float, end_s: float) -> WireLog:
        """The connections accepted from *start_s* to *end_s*, and their chunks."""
        conns = {c: t for c, t in self.accepted_s.items() if start_s <= t <= end_s}
        return WireLog(conns, [c for c in self.chunks if c.conn in conns])


def commands_in(data: bytes) -> tuple[str, ...]:
    """The command names of the client command lines that start in *data* (a literal's
    bytes may look like one: this is a diagnostic, not a parser)."""
    return tuple(m.group(1).decode("ascii") for m in _COMMAND.finditer(data))


class WanProxy:
    """Forward 127.0.0.1:``port`` to ``target_host:target_port`` with delay and an optional cap."""

    def __init__(
        self, target_host: str, target_port: int, delay_s: float = 0.025, rate_bytes_per_s: int = 0,
        log: WireLog | None = None,
    ) -> None:
        if delay_s < 0 or rate_bytes_per_s < 0:
            raise ValueError("delay_s and rate_bytes_per_s must not be negative")
        self.target_host = target_host
        self.target_port = target_port
        self.delay_s = delay_s
        self.rate_bytes_per_s = rate_bytes_per_s
        self.host = "127.0.0.1"
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.log = log
        self._connections = 0

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Listen on a free port (``self.port``) and serve until :meth:`stop`."""
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._server = loop.run_until_complete(asyncio.start_server(self._accept, self.host, 0))
                self.port = int(self._server.sockets[0].getsockname()[1])
            except BaseException as exc:  # noqa: BLE001 - reported to start()'s caller
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=serve, name=f"wanproxy-{self.target_port}", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]

    def stop(self) -> None:
        """Close the listener and every proxied connection, then end the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), loop)
        thread.join(10)
        loop.close()
        self._loop = self._thread = self._server = None

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._connections += 1
        conn = self._connections
        if self.log is not None:
            self.log.accepted_s[conn] = time.monotonic()
        try:
            try:
                server_reader, server_writer = await asyncio.open_connection(self.target_host, self.target_port)
            except OSError:
                client_writer.close()
                return
            try:
                await asyncio.gather(
                    self._pipe(client_reader, server_writer, conn, "up"),
                    self._pipe(server_reader, client_writer, conn, "down"),
                )
            finally:
                # Only now: a half-closed direction (write_eof) must not end the other one.
                server_writer.close()
                client_writer.close()
        except asyncio.CancelledError:
            # stop() cancels open connections; asyncio's stream callback would otherwise
            # log the cancellation of this top-level task as an error.
            pass
        finally:
            self._tasks.discard(task)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: int = 0, direction: str = "up",
    ) -> None:
        """One direction: a reader stamps chunks, a writer releases them when they are due."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUE_CHUNKS)
        loop = asyncio.get_running_loop()
        log = self.log

        async def read() -> None:
            with contextlib.suppress(OSError):
                while chunk := await reader.read(CHUNK_BYTES):
                    await queue.put((loop.time() + self.delay_s, chunk))
            await queue.put((loop.time() + self.delay_s, b""))  # end of stream, delayed too

        async def write() -> None:
            # When the link would have finished sending the previous chunk (bandwidth cap).
            link_free = 0.0
            with contextlib.suppress(OSError):
                while True:
                    due, chunk = await queue.get()
                    arrived_s = due - self.delay_s
                    if self.rate_bytes_per_s:
                        link_free = max(link_free, due - self.delay_s) + len(chunk) / self.rate_bytes_per_s
                        due = max(due, link_free + self.delay_s)
                    wait = due - loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    if not chunk:
                        with contextlib.suppress(OSError):
                            writer.write_eof()
                        return
                    writer.write(chunk)
                    await writer.drain()
                    if log is not None:
                        # loop.time() is time.monotonic() in asyncio's default loop.
                        log.chunks.append(Chunk(conn, direction, len(chunk), arrived_s, time.monotonic(),
                                                commands_in(chunk) if direction == "up" else ()))

        reading = asyncio.create_task(read())
        try:
            await write()
        finally:
            # A writer that failed (peer gone) must not leave the reader blocked on a full queue.
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)


def measure_rtt(host: str, port: int, rounds: int = 5) -> float:
    """Median seconds for a connect plus first byte from ``host:port`` (an IMAP greeting)."""
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.recv(1)
        samples.append(time.perf_counter() - started)
    return sorted(samples)[len(samples) // 2]
