"""A proxy that edits the lines a server sends (or a client sends), for fastsync's tests: it
lets a real Dovecot play servers whose replies are legal, or common, but not Dovecot's.

`LineEditor` reads one direction of a connection's byte stream, chunk by chunk, whatever the
chunk boundaries: it follows lines and literals (RFC 3501 section 4.3: ``{N}``; RFC 7888
``{N+}``; RFC 3516 ``~{N}``), hands each whole line (with its line ending) to an *edit*
function and sends on what that returns (b"" drops the line), and passes every literal's
bytes through untouched, so message bodies are never edited.  Plain IMAP only: no TLS, no
COMPRESS.

Edits used by the tests (each a function of one line):

* `bare_lf`: every line ends in LF alone instead of CRLF (servers that write lines with a
  bare LF, e.g. after AUTHENTICATE);
* `modseq_nil`: ``HIGHESTMODSEQ NIL`` in the STATUS reply of an empty folder;
* `status_dropped(name)`: no STATUS reply for that folder in a LIST-STATUS (RFC 5819
  section 4 allows a server to drop one it cannot produce);
* `renamed(old, new)` (client to server): a folder name in the client's commands replaced,
  so that the server answers NO to STATUS, EXAMINE and SELECT of a folder it listed.

`LiteralSwap` (a `LineEditor` given to ``CountingProxy(rewrite_down=...)``) sends a literal of
its own instead of the one a chosen line announces: a body larger than its RFC822.SIZE, a
header of any size.

Example::

    with EditingProxy(dovecot.port, down=bare_lf) as proxy:
        ...  # point the client at 127.0.0.1:proxy.port
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from bench.harness.tcpproxy import CountingProxy

__all__ = ["EditingProxy", "LineEditor", "LiteralSwap", "bare_lf", "modseq_nil", "renamed", "status_dropped"]

Edit = Callable[[bytes], bytes]

# A literal marker at the end of a line: {N} (synchronising), {N+} (RFC 7888), ~{N} (RFC 3516).
_LITERAL = re.compile(rb"~?\{(\d+)[+-]?\}\r?\n\Z")


class LineEditor:
    """One direction of one connection: whole lines through *edit*, literals untouched."""

    def __init__(self, edit: Edit) -> None:
        self.edit = edit
        self._line = bytearray()
        self._literal_left = 0
        # Set by an edit that sends a literal of its own instead (`LiteralSwap`): the
        # server's literal after the line is dropped.
        self.drop_literal = False

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        pos = 0
        while pos < len(data):
            if self._literal_left:
                take = data[pos : pos + self._literal_left]
                pos += len(take)
                self._literal_left -= len(take)
                if not self.drop_literal:
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
            self._literal_left = int(marker.group(1)) if marker else 0
            self.drop_literal = False
            out += self.edit(line)
        return bytes(out)

    def flush(self) -> bytes:
        held = bytes(self._line)
        self._line.clear()
        return held


class LiteralSwap(LineEditor):
    """A `LineEditor` that sends *replacement* instead of the literal announced at the end of
    every line *pick* chooses (its ``{N}`` announcing the replacement's length instead), to
    play a server that sends more than it announced elsewhere (RFC822.SIZE) or a literal
    of any size.  Other lines and literals pass untouched.  *replacement* is called for each
    literal swapped, so that nothing large is made before a connection needs it."""

    def __init__(self, pick: Callable[[bytes], bool], replacement: Callable[[], bytes]) -> None:
        super().__init__(self._swap)
        self.pick = pick
        self._make = replacement
        self.swapped = 0

    def _swap(self, line: bytes) -> bytes:
        marker = _LITERAL.search(line)
        if marker is None or not self.pick(line):
            return line
        replacement = self._make()
        self.drop_literal = True
        self.swapped += 1
        return line[: marker.start()] + b"{%d}\r\n" % len(replacement) + replacement


class EditingProxy(CountingProxy):
    """A `CountingProxy` whose server-to-client lines pass through *down* and client-to-server
    lines through *up* (each a function of one line; either may be None)."""

    def __init__(
        self, target_port: int, target_host: str = "127.0.0.1", *, down: Edit | None = None, up: Edit | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            target_port, target_host,
            rewrite_down=(lambda: LineEditor(down)) if down is not None else None,
            rewrite_up=(lambda: LineEditor(up)) if up is not None else None,
            **options,
        )


def bare_lf(line: bytes) -> bytes:
    """The line ending in LF alone."""
    return line[:-2] + b"\n" if line.endswith(b"\r\n") else line


_STATUS_MODSEQ = re.compile(rb"^(\* STATUS .*\(.*\bMESSAGES 0\b.*\bHIGHESTMODSEQ )\d+")
_STATUS_MODSEQ_FIRST = re.compile(rb"^(\* STATUS .*\(.*\bHIGHESTMODSEQ )\d+(.*\bMESSAGES 0\b)")


def modseq_nil(line: bytes) -> bytes:
    """An empty folder's STATUS reply with ``HIGHESTMODSEQ NIL`` for its number."""
    edited = _STATUS_MODSEQ.sub(rb"\1NIL", line)
    return _STATUS_MODSEQ_FIRST.sub(rb"\1NIL\2", edited)


def status_dropped(name: bytes) -> Edit:
    """No untagged STATUS reply for folder *name* (quoted or not)."""
    starts = (b'* STATUS "' + name + b'" ', b"* STATUS " + name + b" ")

    def edit(line: bytes) -> bytes:
        return b"" if line.startswith(starts) else line

    return edit


def renamed(old: bytes, new: bytes) -> Edit:
    """Every quoted *old* in a command line replaced by quoted *new*."""
    quoted_old, quoted_new = b'"' + old + b'"', b'"' + new + b'"'

    def edit(line: bytes) -> bytes:
        return line.replace(quoted_old, quoted_new)

    return edit
