"""A proxy that plays a provider's limits per account in front of a real Dovecot, for
fastsync's tests: Gmail's byte budget per rolling window, and Microsoft 365's throttling.

`QuotaProxy` reads the client's commands (lines and literals, RFC 3501 section 4.3) and
knows each connection's account from its LOGIN or AUTHENTICATE PLAIN (RFC 4616).  Per
account it keeps the bytes of messages moved, with their times:

* uploaded: the literals of an APPEND (MULTIAPPEND too, RFC 3502).  The proxy holds a
  whole APPEND command before it goes on (answering ``+`` to the client's synchronising
  literals itself and passing them on as LITERAL+, RFC 7888), so that a command that would
  go past ``upload_bytes`` in the last ``window_s`` seconds is refused whole, as Gmail
  refuses it: ``NO [OVERQUOTA] Account exceeded command or bandwidth limits``;
* downloaded: the literals of the server's FETCH responses; a FETCH command while the
  account is at or past ``download_bytes`` is refused the same way.

``refusals`` counts those refusals (a client that keeps under the budget causes none).
``throttle`` plays Microsoft 365: every ``throttle``-th APPEND of an account is
refused with ``NO [UNAVAILABLE] Server Unavailable. 15`` and a suggested back-off
(``Request is throttled. Suggested Backoff Time: N milliseconds``), counted in
``throttled``; ``throttled_users`` limits that to some accounts.  ``hide`` removes capabilities from what the server announces (Gmail offers
no MULTIAPPEND).  Plain IMAP only: no TLS, no COMPRESS.

Example::

    with QuotaProxy(dovecot.port, window_s=10, upload_bytes=2_000_000) as proxy:
        ...  # point the destination at 127.0.0.1:proxy.port; assert proxy.refusals == 0
"""

from __future__ import annotations

import base64
import re
import socket
import threading
import time
from dataclasses import dataclass, field

__all__ = ["GMAIL_REFUSAL", "QuotaProxy"]

GMAIL_REFUSAL = b"NO [OVERQUOTA] Account exceeded command or bandwidth limits. (Failure)"
THROTTLE_REFUSAL = b"NO [UNAVAILABLE] Server Unavailable. 15 Request is throttled. Suggested Backoff Time: %d milliseconds"

_LITERAL = re.compile(rb"~?\{(\d+)(\+?)\}\r?\n\Z")
_COMMAND = re.compile(rb"^(\S+) (?:UID )?(APPEND|FETCH|LOGIN|AUTHENTICATE)\b ?(.*)", re.IGNORECASE | re.DOTALL)
_ATOM_OR_QUOTED = re.compile(rb'"((?:[^"\\]|\\.)*)"|(\S+)')


@dataclass
class Account:
    """What one account moved: (monotonic time, bytes) per direction, and its command count."""

    up: list[tuple[float, int]] = field(default_factory=list)
    down: list[tuple[float, int]] = field(default_factory=list)
    commands: int = 0


class QuotaProxy:
    """``with QuotaProxy(port, ...) as proxy:`` then point a client at ``proxy.port``."""

    def __init__(
        self, target_port: int, target_host: str = "127.0.0.1", *, window_s: float = 86400.0,
        upload_bytes: int = 0, download_bytes: int = 0, throttle: int = 0, backoff_ms: int = 1000,
        hide: tuple[bytes, ...] = (), throttled_users: frozenset[str] | None = None,
    ) -> None:
        self.target = (target_host, target_port)
        self.window_s, self.upload_bytes, self.download_bytes = window_s, upload_bytes, download_bytes
        self.throttle, self.backoff_ms, self.hide = throttle, backoff_ms, hide
        # The accounts that are throttled (None: every one).
        self.throttled_users = throttled_users
        self.accounts: dict[str, Account] = {}
        self.refusals = 0
        self.throttled = 0
        self._lock = threading.Lock()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = int(self._listener.getsockname()[1])
        self._closing = False

    def __enter__(self) -> QuotaProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing = True
        self._listener.close()

    def used(self, user: str, upstream: bool, now: float | None = None) -> int:
        """Bytes *user* moved up (APPEND) or down (FETCH) in the window ending *now*."""
        now = time.monotonic() if now is None else now
        with self._lock:
            account = self.accounts.setdefault(user, Account())
            return sum(b for t, b in (account.up if upstream else account.down) if t > now - self.window_s)

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _addr = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            link = _Link(self, client, server)
            threading.Thread(target=link.up, daemon=True).start()
            threading.Thread(target=link.down, daemon=True).start()


class _Link:
    """One client connection: its commands read and passed on (`up`), the server's replies
    relayed with their FETCH literals counted (`down`)."""

    def __init__(self, proxy: QuotaProxy, client: socket.socket, server: socket.socket) -> None:
        self.proxy, self.client, self.server = proxy, client, server
        self.user = ""
        self.send_lock = threading.Lock()
        self.sasl_tag = b""

    def to_client(self, data: bytes) -> None:
        with self.send_lock:
            self.client.sendall(data)

    def account(self) -> Account:
        return self.proxy.accounts.setdefault(self.user, Account())

    # -- client to server ----------------------------------------------------------------

    def up(self) -> None:
        reader = _Reader(self.client)
        try:
            while True:
                line = reader.line()
                if line is None:
                    break
                self.command(reader, line)
        except OSError:
            pass
        finally:
            self.close()

    def command(self, reader: _Reader, line: bytes) -> None:
        if self.sasl_tag:
            self.sasl_tag = b""
            self.learn_user_plain(line.strip())
            self.server.sendall(line)
            return
        match = _COMMAND.match(line)
        verb = match.group(2).upper() if match else b""
        if verb == b"APPEND":
            return self.append(reader, match.group(1), line)
        if verb == b"LOGIN":
            words = _ATOM_OR_QUOTED.findall(match.group(3))
            if words:
                self.user = (words[0][0] or words[0][1]).decode("utf-8", "replace")
        elif verb == b"AUTHENTICATE":
            words = match.group(3).split()
            if len(words) >= 2 and words[0].upper() == b"PLAIN":
                self.learn_user_plain(words[1])
            elif words and words[0].upper() == b"PLAIN":
                self.sasl_tag = match.group(1)
        elif verb == b"FETCH" and self.refused_fetch(match.group(1)):
            self.relay_literals(reader, line, send=False)
            return
        self.relay_literals(reader, line, send=True)

    def learn_user_plain(self, encoded: bytes) -> None:
        try:
            parts = base64.b64decode(encoded).split(b"\0")
        except ValueError:
            return
        if len(parts) == 3:
            self.user = parts[1].decode("utf-8", "replace")

    def relay_literals(self, reader: _Reader, line: bytes, send: bool) -> None:
        """Pass on (or drop) a command line and the literals it announces."""
        while True:
            if send:
                self.server.sendall(line)
            marker = _LITERAL.search(line)
            if marker is None:
                return
            body = reader.exactly(int(marker.group(1)))
            if send:
                self.server.sendall(body)
            line = reader.line() or b""

    def append(self, reader: _Reader, tag: bytes, line: bytes) -> None:
        """Hold a whole APPEND, then send it on as LITERAL+ or refuse it."""
        held, sizes = bytearray(), []
        while True:
            marker = _LITERAL.search(line)
            if marker is None:
                held += line
                break
            size = int(marker.group(1))
            held += line[: marker.start()] + b"{%d+}\r\n" % size
            if not marker.group(2):
                self.to_client(b"+ Ready for literal data\r\n")
            held += reader.exactly(size)
            sizes.append(size)
            line = reader.line() or b""
        refusal = self.refusal(upstream=True, need=sum(sizes))
        if refusal:
            self.to_client(tag + b" " + refusal + b"\r\n")
            return
        self.server.sendall(bytes(held))

    def refused_fetch(self, tag: bytes) -> bool:
        refusal = self.refusal(upstream=False, need=0)
        if refusal:
            self.to_client(tag + b" " + refusal + b"\r\n")
        return bool(refusal)

    def refusal(self, upstream: bool, need: int) -> bytes:
        """The refusal of an APPEND of *need* bytes (or of a FETCH), b"" to let it through
        (an APPEND's bytes are then counted)."""
        proxy, now = self.proxy, time.monotonic()
        limit = proxy.upload_bytes if upstream else proxy.download_bytes
        with proxy._lock:
            account = self.account()
            account.commands += upstream
            chosen = proxy.throttled_users is None or self.user in proxy.throttled_users
            if proxy.throttle and upstream and chosen and account.commands % proxy.throttle == 0:
                proxy.throttled += 1
                return THROTTLE_REFUSAL % proxy.backoff_ms
            uses = account.up if upstream else account.down
            used = sum(b for t, b in uses if t > now - proxy.window_s)
            if limit and (used + need > limit if upstream else used >= limit):
                proxy.refusals += 1
                return GMAIL_REFUSAL
            if upstream and need:
                uses.append((now, need))
        return b""

    # -- server to client ----------------------------------------------------------------

    def down(self) -> None:
        reader = _Reader(self.server)
        try:
            while True:
                line = reader.line()
                if line is None:
                    break
                for name in self.proxy.hide:
                    if b"CAPABILITY" in line.upper():
                        line = re.sub(rb" " + re.escape(name) + rb"(?=[ \]\r])", b"", line, flags=re.IGNORECASE)
                self.to_client(line)
                marker = _LITERAL.search(line)
                if marker is not None:
                    size = int(marker.group(1))
                    body = reader.exactly(size)
                    if line.startswith(b"* ") and b" FETCH " in line.upper():
                        with self.proxy._lock:
                            self.account().down.append((time.monotonic(), size))
                    self.to_client(body)
        except OSError:
            pass
        finally:
            self.close()

    def close(self) -> None:
        for sock in (self.client, self.server):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


class _Reader:
    """Lines (with their CRLF) and literals from a socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)

    def line(self) -> bytes | None:
        while b"\n" not in self.buffer:
            if not self._fill():
                return None
        end = self.buffer.index(b"\n") + 1
        line = bytes(self.buffer[:end])
        del self.buffer[:end]
        return line

    def exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._fill():
                raise OSError("connection closed inside a literal")
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data
