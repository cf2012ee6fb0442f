"""A loopback TCP proxy for tests: counts what crosses it, the way a server would see it.

Sits between fastsync and a real Dovecot.  It records every chunk relayed in each direction
with a timestamp (for bandwidth measured on the wire) and the number of connections open
at once (for connection caps), without changing a byte.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field


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

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
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

    def __enter__(self) -> CountingProxy:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _addr = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            with self._lock:
                self.open_connections += 1
                self.peak_connections = max(self.peak_connections, self.open_connections)
            done = threading.Event()
            for src, dst, log in ((client, server, self.traffic.to_server), (server, client, self.traffic.to_client)):
                threading.Thread(target=self._relay, args=(src, dst, log, done), daemon=True).start()

    def _relay(self, src: socket.socket, dst: socket.socket, log: list[tuple[float, int]], done: threading.Event) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self._lock:
                    log.append((time.monotonic(), len(data)))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            # The first direction to end closes both sockets; the connection is over.
            if not done.is_set():
                done.set()
                for sock in (src, dst):
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    sock.close()
                with self._lock:
                    self.open_connections -= 1
