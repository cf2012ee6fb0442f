"""What reaches the terminal of text fastsync did not choose, and a terminal that went away.

Output layer: imports nothing of fastsync; `progress.py`, the only writer to the terminal,
writes through `write` and shows every string through `printable`.
"""

from __future__ import annotations

import os
import unicodedata
from typing import TextIO

# The width assumed when neither COLUMNS nor the terminal tells one.
DEFAULT_COLUMNS = 80

# Characters no server-supplied text may bring to the terminal as they are: C0 and C1
# controls (ESC starts the sequences that set the clipboard (OSC 52), the window title or
# colours; a line feed would forge a line of our own), line and paragraph separators, and
# the bidirectional overrides that make a name read otherwise than it is.
_BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_UNSAFE = {
    code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    for code in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029, *map(ord, _BIDI))
} | {ord("\t"): "\\t", ord("\n"): "\\n", ord("\r"): "\\r"}


def printable(text: object) -> str:
    """*text* as it may reach the terminal: every control character written as an escape
    (``\\x1b``, ``\\n``, ``\\t``...), as Python writes it in a string literal.

    Everything this module writes passes here: folder names, server replies and messages
    quoting them are the server's words, not ours.
    """
    return str(text).translate(_UNSAFE)


def write(stream: TextIO, text: str) -> None:
    """Every write to the terminal: a reader that went away (``| head -1``, a closed
    terminal) ends what is shown, never the run (see `dropped`)."""
    try:
        stream.write(text)
        stream.flush()
    except (OSError, ValueError):
        dropped(stream)


def dropped(stream: TextIO) -> None:
    """*stream*'s reader went away: point its file descriptor at /dev/null, so that later
    writes (rich's refresh thread too) and the flush at exit succeed without a word."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError, AttributeError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def columns(stream: TextIO) -> int:
    """The width of the terminal *stream* writes to, asked at each call (a window can be
    resized): COLUMNS when set, as shells and `shutil.get_terminal_size` take it, else
    the terminal's own, else `DEFAULT_COLUMNS`."""
    try:
        given = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        given = 0
    if given > 0:
        return given
    try:
        return os.get_terminal_size(stream.fileno()).columns or DEFAULT_COLUMNS
    except (OSError, ValueError, AttributeError):
        return DEFAULT_COLUMNS


def fitted(text: str, width: int) -> str:
    """*text* cut and padded to exactly *width* terminal cells (a wide character, as in
    日本語, takes two), so that a line rewritten in place neither wraps nor leaves the
    end of a longer line before it."""
    out, used = [], 0
    for ch in text:
        cells = 2 if unicodedata.east_asian_width(ch) in "WF" else 0 if unicodedata.combining(ch) else 1
        if used + cells > width:
            break
        out.append(ch)
        used += cells
    return "".join(out) + " " * (width - used)
