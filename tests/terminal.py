"""Running a command on a pseudo-terminal of a given size, as a user at a terminal runs it:
what it showed (escape sequences and all, or as plain text) and how it ended.

Test modules import from here as from `tests.helpers`.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import REPO_ROOT, cli_env

# CSI and OSC sequences, and the lone escapes rich writes (cursor show/hide, erase line).
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-_]")


@dataclass
class Screen:
    """A finished run on a terminal: its exit code and the bytes it wrote, decoded."""

    returncode: int
    raw: str
    seconds: float
    answered_at: float | None = None
    # When each awaited text was first seen, in seconds since the start.
    seen: dict[str, float] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """What was written, escape sequences taken out and every line break as "\\n"."""
        return _ESCAPES.sub("", self.raw).replace("\r\n", "\n")

    @property
    def lines(self) -> list[str]:
        """The lines as they stay on screen: of a line rewritten in place ("...\\r...") the
        last version."""
        return [line.rsplit("\r", 1)[-1] for line in self.text.split("\n")]


def run_on_terminal(
    argv: Sequence[str | Path], *, columns: int = 80, rows: int = 40, answer: tuple[str, str, float] | None = None,
    wait_for: Sequence[str] = (), env: dict[str, str] | None = None, timeout_s: float = 300.0,
    module: str = "fastsync",
) -> Screen:
    """Run ``python -m MODULE ARGV`` (fastsync, or bench for its demo) with stdin, stdout and stderr on one pseudo-terminal
    of *columns* x *rows*.  *answer* = (prompt, reply, delay_s): once *prompt* has been
    shown, wait *delay_s* and type *reply*.  *wait_for*: texts whose first appearance is
    timed (`Screen.seen`)."""
    master, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", module, *map(str, argv)],
        stdin=terminal, stdout=terminal, stderr=terminal, cwd=REPO_ROOT, start_new_session=True,
        # COLUMNS would win over the terminal's own size: the terminal decides here.
        env={k: v for k, v in cli_env(env).items() if k not in ("COLUMNS", "LINES")},
    )
    os.close(terminal)
    chunks: list[bytes] = []
    screen = Screen(returncode=0, raw="", seconds=0.0)
    answered = answer is None
    deadline = started + timeout_s
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.05)[0]:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every writer of the terminal has closed it
                    break
                if not data:
                    break
                chunks.append(data)
            shown = _ESCAPES.sub("", b"".join(chunks).decode(errors="replace"))
            for text in wait_for:
                if text in shown and text not in screen.seen:
                    screen.seen[text] = time.monotonic() - started
            if not answered and answer is not None and answer[0] in shown:
                time.sleep(answer[2])
                os.write(master, answer[1].encode() + b"\n")
                screen.answered_at = time.monotonic() - started
                answered = True
            if process.poll() is not None and not select.select([master], [], [], 0.2)[0]:
                break
        else:
            process.kill()
        process.wait(timeout=60)
    finally:
        os.close(master)
    screen.returncode = process.returncode
    screen.raw = b"".join(chunks).decode(errors="replace")
    screen.seconds = time.monotonic() - started
    return screen
