"""Proxies that play destinations which alter the messages APPENDed to them, for fastsync's tests.

Some Exchange and hosted setups store an appended message with a Message-Id of their own.
A client that recognises messages by Message-Id then finds none of its copies on a re-run
and copies everything again.  `RewritingProxy` sits between fastsync and a real Dovecot
and rewrites the Message-Id value inside every message an APPEND carries (client to
server), so Dovecot stores the message with another id, as such a server would.

The new value has the length of the old one: every letter and digit of the id (between
its angle brackets) is replaced, the punctuation (``<``, ``@``, ``.``, ``>``) and any
folding stay, so the literal's size, and the message's size on the server, are unchanged.
Each message gets a new id of its own (a sequence number, then random characters), and
`NewIds.pairs` keeps every (old, new) value for the tests.

`AppendRewriter` is the part that reads the client's byte stream, chunk by chunk,
whatever the chunk boundaries: it follows command lines and literals (RFC 3501 section
4.3: ``{N}``, where the client waits for the server's ``+``; RFC 7888 LITERAL+ ``{N+}``;
RFC 3516 ``~{N}``), knows which literals of an APPEND are messages (several with RFC 3502
MULTIAPPEND; not the mailbox name when that is a literal), and holds back only the header
section of each message until it is complete (or the literal ends).  Everything else goes
on at once.  It reads plain IMAP only: no TLS, no COMPRESS; and it assumes the server
accepts every synchronising literal (after a refused one the client sends no literal).

`MboxProxy` plays another kind of server that alters what it stores: an mbox-based one,
which adds ``Status:``/``X-UID:`` lines to an appended message's header and quotes body
lines that start with "From " as ">From ", so the copy it returns is longer than the
message sent (`alter_like_mbox`).  It changes the literal's size, which only a
non-synchronising literal (LITERAL+) allows a proxy to do.

Example::

    with RewritingProxy(dovecot.port) as proxy:
        ...  # point the client at 127.0.0.1:proxy.port
        assert proxy.rewritten  # (old, new) Message-Id values, one per appended message
"""

from __future__ import annotations

import itertools
import random
import re
import string
import threading
from collections.abc import Callable
from typing import Any

from bench.harness.tcpproxy import CountingProxy

__all__ = ["AppendRewriter", "MboxProxy", "MboxRewriter", "NewIds", "RewritingProxy", "alter_like_mbox", "rewrite_message_id"]

# A literal marker at the end of a line: {N} (synchronising), {N+} (RFC 7888), ~{N} (RFC 3516).
_LITERAL = re.compile(rb"(~?)\{(\d+)(\+?)\}\r?\n\Z")


def append_state(line: bytes, marker: re.Match[bytes] | None, first_segment: bool, in_append: bool) -> tuple[bool, bool]:
    """Whether the command *line* belongs to is an APPEND, and whether the literal it
    announces is the mailbox name ("tag APPEND {N}"), not a message.  Only the command's
    first segment says which command it is; later segments keep *in_append*."""
    if not first_segment:
        return in_append, False
    words = line.split(None, 2)
    in_append = len(words) >= 2 and words[1].upper() == b"APPEND"
    return in_append, in_append and marker is not None and len(line[: marker.start()].split()) == 2
_MESSAGE_ID = re.compile(rb"message-id[ \t]*:", re.IGNORECASE)
_ALPHABET = string.ascii_lowercase + string.digits
_LINES = re.compile(rb"[^\n]*\n|[^\n]+")  # lines with their LF, then a last one without

# A header section longer than this is passed on as it is (its Message-Id is rewritten only
# if it comes in the first MAX_HEADER_BYTES): real headers are a few KB.
MAX_HEADER_BYTES = 1024 * 1024


class NewIds:
    """New Message-Id values of the same length, each one different; thread-safe (one
    instance serves every connection of a proxy)."""

    def __init__(self, seed: int = 0) -> None:
        self._random = random.Random(seed)
        self._count = itertools.count(1)
        self._lock = threading.Lock()
        self.pairs: list[tuple[bytes, bytes]] = []

    def __call__(self, value: bytes) -> bytes:
        """*value* (the field's value: what follows ``Message-Id:``, folding included) with
        each letter and digit of the id replaced; the id is what is inside ``<...>``, or the
        whole value when it has no angle brackets."""
        start, end = value.find(b"<"), value.rfind(b">")
        if not 0 <= start < end:
            start, end = -1, len(value)
        positions = [i for i in range(start + 1, end) if chr(value[i]).isalnum() and value[i] < 128]
        with self._lock:
            number = _base36(next(self._count))
            while True:
                fill = "".join(self._random.choice(_ALPHABET) for _ in positions)
                token = (number + "x" + fill)[: len(positions)]
                out = bytearray(value)
                for position, char in zip(positions, token, strict=True):
                    out[position] = ord(char)
                if bytes(out) != value or not positions:
                    break
            self.pairs.append((value.strip(), bytes(out).strip()))
        return bytes(out)


def _base36(number: int) -> str:
    digits = ""
    while True:
        number, digit = divmod(number, 36)
        digits = _ALPHABET[(digit + 26) % 36] + digits  # 0-9 then a-z
        if not number:
            return digits


def _header_end(head: bytes | bytearray) -> int:
    """Where the header section ends (the index after its blank line), or -1 if not yet."""
    if head.startswith(b"\r\n"):
        return 2
    if head.startswith(b"\n"):
        return 1
    ends = [i + len(sep) for sep in (b"\r\n\r\n", b"\n\n") if (i := head.find(sep)) >= 0]
    return min(ends) if ends else -1


def rewrite_message_id(message: bytes, new_value: Callable[[bytes], bytes]) -> bytes:
    """*message* with the value of each Message-Id field of its header section replaced by
    ``new_value(value)`` (same length; RFC 5322 folding kept).  Only whole lines are read:
    a message cut short keeps its last, incomplete line as it is."""
    end = _header_end(message)
    head_end = end if end >= 0 else len(message)
    lines = _LINES.findall(message[:head_end])
    if lines and not lines[-1].endswith(b"\n"):
        lines.pop()  # incomplete: leave it alone
    out = bytearray()
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        match = _MESSAGE_ID.match(line)
        if match is None:
            out += line
            continue
        # The field: this line and its continuation lines (starting with a space or a tab).
        first = index - 1
        while index < len(lines) and lines[index][:1] in (b" ", b"\t"):
            index += 1
        field = b"".join(lines[first:index])
        value = field[match.end() :]
        new = new_value(value)
        if len(new) != len(value):
            raise ValueError(f"a new Message-Id must keep the length: {value!r} -> {new!r}")
        out += field[: match.end()] + new
    consumed = sum(len(line) for line in lines)
    return bytes(out) + message[consumed:]


class AppendRewriter:
    """One connection's client bytes in, the same bytes out with each APPENDed message's
    Message-Id rewritten by *new_value* (see `NewIds`).  Feed chunks as they arrive."""

    def __init__(self, new_value: Callable[[bytes], bytes]) -> None:
        self.new_value = new_value
        self._line = bytearray()  # the command line read so far (already sent on)
        self._first_segment = True  # the line starts a command (not text after a literal)
        self._in_append = False
        self._literal_left = 0
        self._literal_is_message = False
        self._head = bytearray()  # a message's start, held back until its header is whole
        self._head_done = False
        self.messages = 0  # messages seen in APPEND literals

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        pos = 0
        while pos < len(data):
            if self._literal_left:
                take = data[pos : pos + self._literal_left]
                pos += len(take)
                self._literal_left -= len(take)
                if not self._literal_is_message or self._head_done:
                    out += take
                    continue
                self._head += take
                if self._literal_left == 0 or _header_end(self._head) >= 0 or len(self._head) >= MAX_HEADER_BYTES:
                    out += rewrite_message_id(bytes(self._head), self.new_value)
                    self._head.clear()
                    self._head_done = True
                continue
            end = data.find(b"\n", pos)
            if end < 0:
                self._line += data[pos:]
                out += data[pos:]
                break
            self._line += data[pos : end + 1]
            out += data[pos : end + 1]
            pos = end + 1
            self._end_of_line()
        return bytes(out)

    def flush(self) -> bytes:
        """A message cut short by the client's close: sent on as it is."""
        held = bytes(self._head)
        self._head.clear()
        return held

    def _end_of_line(self) -> None:
        line = bytes(self._line)
        self._line.clear()
        marker = _LITERAL.search(line)
        self._in_append, mailbox_literal = append_state(line, marker, self._first_segment, self._in_append)
        if marker is None:
            self._first_segment = True
            self._in_append = False
            return
        self._first_segment = False
        self._literal_left = int(marker.group(2))
        self._literal_is_message = self._in_append and not mailbox_literal
        self._head_done = False
        if self._literal_is_message:
            self.messages += 1
            if self._literal_left == 0:
                self._head_done = True


class RewritingProxy(CountingProxy):
    """A `CountingProxy` whose client-to-server bytes pass through an `AppendRewriter`:
    ``with RewritingProxy(dovecot.port) as proxy:``; ``proxy.rewritten`` lists (old, new)."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1", *, seed: int = 0, **options: Any) -> None:
        self.ids = NewIds(seed)
        super().__init__(target_port, target_host, rewrite_up=lambda: AppendRewriter(self.ids), **options)

    @property
    def rewritten(self) -> list[tuple[bytes, bytes]]:
        """(old, new) Message-Id values, one per message appended through the proxy."""
        return self.ids.pairs


# --------------------------------------------------------------------------- mbox-like alteration

# A body line that an mbox file would take for the start of the next message.
_FROM_LINE = re.compile(rb"(?m)^From ")


def alter_like_mbox(message: bytes, number: int) -> bytes:
    """*message* as an mbox-based server stores and returns it (UW-IMAP and its kin): the
    header gains ``Status: O`` and ``X-UID: <number>`` lines, and every body line that
    starts with "From " is quoted as ">From " (mboxo).  The message grows."""
    end = _header_end(message)
    if end < 0:
        end = len(message)
    eol = b"\r\n" if b"\r\n" in message[: max(end, 2)] else b"\n"
    head, body = message[:end], message[end:]
    blank = len(eol) if head.endswith(eol + eol) or head == eol else 0
    head = head[: len(head) - blank] + b"Status: O" + eol + b"X-UID: %d" % number + eol + head[len(head) - blank :]
    return head + _FROM_LINE.sub(b">From ", body)


class MboxRewriter:
    """One connection's client bytes in, the same bytes out with each APPENDed message
    altered by `alter_like_mbox` and its literal's size announced anew.

    Only non-synchronising literals (``{N+}``, RFC 7888 LITERAL+) can change size: the
    line that announces one is held back until the literal is whole, then sent with the
    new size.  A synchronising literal has been announced before the client sends it (the
    server's ``+`` already answered that size), so it passes unaltered; `passed` counts
    those.  Command lines are held until their end (the client always finishes one)."""

    def __init__(self, numbers: Callable[[], int]) -> None:
        self.numbers = numbers
        self._line = bytearray()
        self._first_segment = True
        self._in_append = False
        self._literal_left = 0
        # A message literal being collected, and the line that announced it.
        self._held_line = b""
        self._message = bytearray()
        self._collecting = False
        self.altered = 0
        self.passed = 0

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        pos = 0
        while pos < len(data):
            if self._literal_left:
                take = data[pos : pos + self._literal_left]
                pos += len(take)
                self._literal_left -= len(take)
                if not self._collecting:
                    out += take
                    continue
                self._message += take
                if self._literal_left == 0:
                    out += self._altered()
                continue
            end = data.find(b"\n", pos)
            if end < 0:
                self._line += data[pos:]
                break
            self._line += data[pos : end + 1]
            pos = end + 1
            out += self._end_of_line()
        return bytes(out)

    def flush(self) -> bytes:
        """Whatever is held back when the client closes: sent on as it is."""
        held = self._held_line + bytes(self._message) + bytes(self._line)
        self._held_line, self._message, self._line = b"", bytearray(), bytearray()
        return held

    def _altered(self) -> bytes:
        message = alter_like_mbox(bytes(self._message), self.numbers())
        marker = _LITERAL.search(self._held_line)
        assert marker is not None
        line = self._held_line[: marker.start()] + b"%s{%d+}\r\n" % (marker.group(1), len(message))
        self._held_line, self._message, self._collecting = b"", bytearray(), False
        self.altered += 1
        return line + message

    def _end_of_line(self) -> bytes:
        line = bytes(self._line)
        self._line.clear()
        marker = _LITERAL.search(line)
        self._in_append, mailbox_literal = append_state(line, marker, self._first_segment, self._in_append)
        if marker is None:
            self._first_segment, self._in_append = True, False
            return line
        self._first_segment = False
        self._literal_left = int(marker.group(2))
        if not self._in_append or mailbox_literal:
            return line
        if not marker.group(3) or self._literal_left == 0:
            self.passed += 1
            return line
        self._held_line, self._collecting = line, True
        return b""


class MboxProxy(CountingProxy):
    """A `CountingProxy` in front of a server, playing an mbox-based one: each APPENDed
    message is stored altered (`alter_like_mbox`).  ``proxy.altered`` counts the messages
    altered, ``proxy.passed`` those that came in a synchronising literal (unaltered)."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1", **options: Any) -> None:
        self._numbers = itertools.count(1)
        self._number_lock = threading.Lock()
        self.rewriters: list[MboxRewriter] = []
        super().__init__(target_port, target_host, rewrite_up=self._rewriter, **options)

    def _next(self) -> int:
        with self._number_lock:
            return next(self._numbers)

    def _rewriter(self) -> MboxRewriter:
        rewriter = MboxRewriter(self._next)
        self.rewriters.append(rewriter)
        return rewriter

    @property
    def altered(self) -> int:
        return sum(r.altered for r in self.rewriters)

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.rewriters)
