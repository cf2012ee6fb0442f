"""A proxy that plays a destination refusing some messages: their APPEND gets a NO with
words of the test's choosing, as a server with a virus scanner or a content policy does.

`RefusingProxy(port, refuse={marker: words})` sits between a client and a real Dovecot.
The client's APPEND commands (RFC 3501 section 6.3.11, several messages with RFC 3502
MULTIAPPEND) are held back whole, literals included; one whose bytes contain a *marker*
does not reach the server: a ``NOOP`` with the same tag goes in its place, and the
server's tagged ``OK`` to it comes back to the client as ``tag NO words``, so the
server stores nothing of it (a MULTIAPPEND is refused whole, as RFC 3502 requires).
Every other command passes unchanged.  Holding a command back is only possible when the
client waits for no continuation: LITERAL+ (RFC 7888, ``{N+}``), which Dovecot announces.
Plain IMAP only: no TLS, no COMPRESS.

``hold=marker`` keeps an APPEND carrying *marker* from the server until `release` is
called: a run that stays in the middle of its copy for as long as a test needs, whatever
the machine's speed.

Example::

    with RefusingProxy(dovecot.port, refuse={b"Subject: spam": b"[POLICY] Message refused"}) as proxy:
        ...  # point the client at 127.0.0.1:proxy.port
        assert proxy.refused  # one entry per APPEND refused
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import Any

from bench.harness.replyproxy import LineEditor
from bench.harness.tcpproxy import CountingProxy

__all__ = ["AppendHolder", "RefusingProxy"]

_LITERAL = re.compile(rb"~?\{(\d+)[+-]?\}\r?\n\Z")


class _Link:
    """What one connection's two directions share: the tags whose APPEND was refused."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.refused: dict[bytes, bytes] = {}


class AppendHolder:
    """Client-to-server bytes: APPEND commands held until whole, then sent or replaced."""

    def __init__(self, refuse: Mapping[bytes, bytes], link: _Link, log: list[bytes],
                 hold: tuple[bytes, threading.Event] | None = None) -> None:
        self.refuse, self.link, self.log, self.hold = refuse, link, log, hold
        self._line = bytearray()
        self._held = bytearray()
        self._holding = False
        self._literal_left = 0
        self._first_segment = True

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        pos = 0
        while pos < len(data):
            if self._literal_left:
                take = data[pos : pos + self._literal_left]
                pos += len(take)
                self._literal_left -= len(take)
                (self._held if self._holding else out).extend(take)
                continue
            end = data.find(b"\n", pos)
            if end < 0:
                self._line += data[pos:]
                pos = len(data)
                break
            self._line += data[pos : end + 1]
            pos = end + 1
            out += self._end_of_line()
        return bytes(out)

    def flush(self) -> bytes:
        held = bytes(self._held + self._line)
        self._held.clear()
        self._line.clear()
        return held

    def _end_of_line(self) -> bytes:
        line = bytes(self._line)
        self._line.clear()
        if self._first_segment:
            words = line.split(None, 2)
            self._holding = len(words) >= 2 and words[1].upper() == b"APPEND"
        marker = _LITERAL.search(line)
        self._first_segment = marker is None
        if marker is not None:
            self._literal_left = int(marker.group(1))
        if not self._holding:
            return line
        self._held += line
        if marker is not None:
            return b""
        # The command is whole.
        command = bytes(self._held)
        self._held.clear()
        self._holding = False
        if self.hold is not None and self.hold[0] in command:
            self.hold[1].wait()
        words = next((w for m, w in self.refuse.items() if m in command), None)
        if words is None:
            return command
        tag = command.split(None, 1)[0]
        with self.link.lock:
            self.link.refused[tag] = words
        self.log.append(words)
        return tag + b" NOOP\r\n"


class RefusingProxy(CountingProxy):
    """``with RefusingProxy(port, refuse={marker: words}) as proxy:``; ``proxy.refused``
    lists the words of every APPEND refused."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1", *,
                 refuse: Mapping[bytes, bytes], hold: bytes = b"", **options: Any) -> None:
        self.refuse = dict(refuse)
        self.released = threading.Event()
        self._hold = (hold, self.released) if hold else None
        self.refused: list[bytes] = []
        self._pending: _Link | None = None
        super().__init__(target_port, target_host, rewrite_up=self._up, rewrite_down=self._down, **options)

    # The proxy makes a connection's two rewriters one after the other, upstream first.
    def _up(self) -> AppendHolder:
        self._pending = _Link()
        return AppendHolder(self.refuse, self._pending, self.refused, self._hold)

    def release(self) -> None:
        """Let the held APPENDs (``hold``) through, now and from now on."""
        self.released.set()

    def __exit__(self, *exc: object) -> None:
        self.release()
        super().__exit__(*exc)

    def _down(self) -> LineEditor:
        link, self._pending = self._pending or _Link(), None

        def edit(line: bytes) -> bytes:
            tag = line.split(None, 1)[0] if line.strip() else b""
            with link.lock:
                words = link.refused.pop(tag, None) if tag not in (b"*", b"+") else None
            if words is None:
                return line
            return tag + b" NO " + words + b"\r\n"

        return LineEditor(edit)
