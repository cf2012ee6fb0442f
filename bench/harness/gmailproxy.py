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
from typing import Any

from bench.harness.replyproxy import LineEditor
from bench.harness.tcpproxy import CountingProxy

__all__ = ["GmailIdProxy", "gm_msgid_of", "to_client", "to_server"]

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


class GmailIdProxy(CountingProxy):
    """``with GmailIdProxy(port) as proxy:``: the Gmail-like Dovecot at *port*, with
    X-GM-EXT-1 and X-GM-MSGID (see the module's docstring)."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1", **options: Any) -> None:
        super().__init__(
            target_port, target_host, rewrite_up=lambda: LineEditor(to_server),
            rewrite_down=lambda: LineEditor(to_client), **options,
        )
