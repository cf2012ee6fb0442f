"""A proxy that gives a Gmail-like Dovecot Gmail's message ids (X-GM-EXT-1), for fastsync's tests.

Gmail announces X-GM-EXT-1 and answers ``FETCH X-GM-MSGID`` with a number that is the same in
every folder that shows the message (All Mail and each label), Message-Id or not.  Dovecot
has the like under another name: X-GUID, the message's GUID, which the virtual folders of a
Gmail-like Dovecot (bench/dovecot.py ``gmail_like``) report as the GUID of the message they
show.  `GmailIdProxy` sits in front of such a Dovecot and

* adds ``X-GM-EXT-1`` to every capability list the server sends (greeting, CAPABILITY,
  the OK of LOGIN/AUTHENTICATE);
* asks ``X-GUID`` where the client's command says ``X-GM-MSGID``;
* answers ``X-GM-MSGID <number>`` (the GUID's first 15 hex digits read as a number) where
  Dovecot answers ``X-GUID <hex>``.

Both directions are read line by line; the bytes of a literal (``{N}``, ``{N+}``: message
bodies and headers) pass untouched and uncounted as lines, so only protocol text changes.
Plain IMAP only (no TLS, no COMPRESS).

Example::

    with GmailIdProxy(dovecot_gmail.port) as proxy:
        ...  # point the client at 127.0.0.1:proxy.port
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from bench.harness.tcpproxy import CountingProxy

__all__ = ["GmailIdProxy", "LineRewriter", "gm_msgid_of"]

_LITERAL = re.compile(rb"~?\{(\d+)[+-]?\}\r?\n\Z")
_CAPABILITY = re.compile(rb"(?i)(CAPABILITY IMAP4rev1)( |\]|\r?\n)")
_X_GUID = re.compile(rb"X-GUID ([0-9a-fA-F]+)")


def gm_msgid_of(guid: bytes) -> int:
    """The X-GM-MSGID the proxy gives a message of Dovecot GUID *guid* (hex)."""
    return int(guid[:15], 16)


def to_server(line: bytes) -> bytes:
    return line.replace(b"X-GM-MSGID", b"X-GUID")


def to_client(line: bytes) -> bytes:
    line = _CAPABILITY.sub(rb"\1 X-GM-EXT-1\2", line)
    return _X_GUID.sub(lambda m: b"X-GM-MSGID %d" % gm_msgid_of(m.group(1)), line)


class LineRewriter:
    """One direction of one connection: each protocol line passed through *edit* once
    whole, the bytes of literals passed on as they are."""

    def __init__(self, edit: Callable[[bytes], bytes]) -> None:
        self.edit = edit
        self._line = bytearray()
        self._literal_left = 0

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        pos = 0
        while pos < len(data):
            if self._literal_left:
                take = data[pos : pos + self._literal_left]
                pos += len(take)
                self._literal_left -= len(take)
                out += take
                continue
            end = data.find(b"\n", pos)
            if end < 0:
                self._line += data[pos:]
                break
            self._line += data[pos : end + 1]
            pos = end + 1
            line = bytes(self._line)
            self._line.clear()
            marker = _LITERAL.search(line)
            if marker is not None:
                self._literal_left = int(marker.group(1))
            out += self.edit(line)
        return bytes(out)

    def flush(self) -> bytes:
        held = bytes(self._line)
        self._line.clear()
        return held


class GmailIdProxy(CountingProxy):
    """``with GmailIdProxy(port) as proxy:``: the Gmail-like Dovecot at *port*, with
    X-GM-EXT-1 and X-GM-MSGID (see the module's docstring)."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1", **options: Any) -> None:
        super().__init__(
            target_port, target_host, rewrite_up=lambda: LineRewriter(to_server),
            rewrite_down=lambda: LineRewriter(to_client), **options,
        )
