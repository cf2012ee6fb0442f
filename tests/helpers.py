"""Helpers shared by the tests: run the CLI, build and count messages, snapshot an account, wait,
read the commands a client sent (from a recording `bench.harness.tcpproxy.CountingProxy`).

Test modules import from here (and from conftest), never from each other.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil
from conftest import Account
from imapclient import imap_utf7

from bench.harness.corpus import Message

REPO_ROOT = Path(__file__).resolve().parent.parent
STATE_HOME = Path(tempfile.mkdtemp(prefix="fastsync-test-cache-"))


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a fastsync run in a test: no FASTSYNC_ (or IMAPSYNC_) settings leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FASTSYNC_", "IMAPSYNC_"))}
    # The state cache goes to the test session's own folder, not the user's home.
    env["XDG_CACHE_HOME"] = str(STATE_HOME)
    env.update(extra or {})
    return env


def run_cli(*args: str | Path, env: Mapping[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``python -m fastsync`` as a user would, stdin not a terminal."""
    full_env = cli_env(env)
    return subprocess.run(
        [sys.executable, "-m", "fastsync", *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        cwd=REPO_ROOT,
    )


def spawn_sync(config: Path, *extra: str) -> subprocess.Popen[str]:
    """Start ``fastsync sync -c CONFIG -y ...`` in a process group of its own, to signal or kill."""
    return subprocess.Popen(
        [sys.executable, "-m", "fastsync", "sync", "-c", str(config), "-y", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
        cwd=REPO_ROOT,
        start_new_session=True,
        # A shell or CI runner may have set SIGINT to "ignore" for background jobs; the
        # user's terminal does not.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def message(folder: str, n: int, message_id: str | None = "auto", flags: tuple[str, ...] = (), body: str = "") -> Message:
    """A small message numbered *n*: Message-ID <mN@example.org> unless *message_id* says otherwise
    (None: no Message-ID header at all)."""
    headers = [f"From: Sender {n} <s{n}@example.org>", f"Subject: message {n}", f"Date: Mon, 1 Jan 2018 10:00:{n % 60:02d} +0000"]
    if message_id == "auto":
        headers.append(f"Message-ID: <m{n}@example.org>")
    elif message_id is not None:
        headers.append(f"Message-ID: {message_id}")
    text = "\r\n".join(headers) + "\r\n\r\n" + (body or f"Body of message {n}.\r\n")
    return Message(folder, text.encode("utf-8"), flags, dt.datetime(2015, 3, 1, 8, 0, n % 60, tzinfo=dt.UTC))


def wait_for(predicate: Callable[[], object], timeout_s: float = 60.0, interval_s: float = 0.05, what: str = "") -> None:
    """Poll *predicate* every *interval_s* until it is true; fail the test after *timeout_s*.

    The predicate is checked once more at the deadline, so a slow last poll is not lost.
    """
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what or 'the condition'}")
        time.sleep(interval_s)


def message_count(account: Account) -> int:
    """Messages in all selectable folders of *account* (STATUS MESSAGES)."""
    client = account.client()
    try:
        return sum(
            client.folder_status(name, ["MESSAGES"])[b"MESSAGES"]
            for flags, _d, name in client.list_folders()
            if b"\\Noselect" not in flags
        )
    finally:
        client.logout()


def workers_of(pid: int) -> list[psutil.Process]:
    """The copy workers of the fastsync run *pid*: forked by its forkserver, so its grandchildren."""
    try:
        tree = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    workers = []
    for process in tree:
        try:
            parent = process.parent()
        except psutil.NoSuchProcess:
            continue
        if parent is not None and parent.pid != pid:
            workers.append(process)
    return workers


Snapshot = dict[str, Counter[tuple[bytes, tuple[bytes, ...], str]]]


def snapshot(account: Account, delimiter_to: str = "/") -> Snapshot:
    """Every message of every selectable folder: (bytes, flags without \\Recent, internal date).

    Folder names are rewritten with *delimiter_to* so two servers with different
    hierarchy separators compare directly.
    """
    client = account.client()
    client._imap.debug = 0  # imaplib would format the repr of every body (slow)
    client.normalise_times = False
    out: Snapshot = {}
    try:
        for flags, delimiter, name in client.list_folders():
            if b"\\Noselect" in flags:
                continue
            client.select_folder(name, readonly=True)
            uids = client.search()
            messages: Counter[tuple[bytes, tuple[bytes, ...], str]] = Counter()
            for start in range(0, len(uids), 500):
                reply = client.fetch(uids[start : start + 500], ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"])
                for data in reply.values():
                    flags_kept = tuple(sorted(f for f in data[b"FLAGS"] if f != b"\\Recent"))
                    messages[(data[b"BODY[]"], flags_kept, data[b"INTERNALDATE"].isoformat())] += 1
            key = name.replace(delimiter.decode(), delimiter_to) if delimiter else name
            out[key] = messages
    finally:
        client.logout()
    return out


def summary_line(output: str) -> str:
    lines = [line for line in output.splitlines() if " copied, " in line]
    assert lines, output
    return lines[-1]


# --------------------------------------------------------------------------- reading the wire

_LITERAL = re.compile(rb"(~?)\{(\d+)([+-]?)\}$")
_QUOTED = re.compile(rb'"(?:[^"\\]|\\.)*"')


@dataclass
class Command:
    """One command a client sent: its text with each literal's payload left out (the
    ``{N}`` marker stays) and each literal's form: ``{N}``, ``{N+}``, ``~{N}``..."""

    tag: str
    name: str
    text: bytes
    literals: list[bytes]

    @property
    def arguments(self) -> bytes:
        """The text after the command name, quoted strings emptied, upper case."""
        skip = 3 if self.name.startswith("UID ") else 2  # tag, name (UID and its command)
        words = self.text.split(b" ", skip)
        return _QUOTED.sub(b'""', words[skip]).upper() if len(words) > skip else b""


def logical_lines(stream: bytes) -> Iterator[tuple[bytes, list[bytes]]]:
    """Split an IMAP byte stream into logical lines: text with literal payloads skipped.

    A line that ends with a literal marker (``{N}``, ``{N+}``, ``{N-}``, ``~{N}``) goes on
    after the N bytes of the literal, whatever they contain (RFC 3501 section 4.3,
    RFC 7888, RFC 3516): a message body can hold lines that look like commands.
    """
    pos = 0
    while pos < len(stream):
        parts: list[bytes] = []
        literals: list[bytes] = []
        while True:
            end = stream.find(b"\r\n", pos)
            if end < 0:
                parts.append(stream[pos:])
                pos = len(stream)
                break
            line = stream[pos:end]
            pos = end + 2
            match = _LITERAL.search(line)
            if match is None:
                parts.append(line)
                break
            parts.append(line)
            literals.append(match.group(0))
            pos += int(match.group(2))
        yield b"".join(parts), literals


def commands(stream: bytes) -> list[Command]:
    """The commands in a client's bytes.  Lines of fewer than two words are not commands:
    a SASL response to AUTHENTICATE's continuation (base64), IDLE's DONE."""
    out = []
    for text, literals in logical_lines(stream):
        words = text.split(b" ")
        if len(words) < 2 or not words[1]:
            continue
        name = words[1].decode("ascii", "replace").upper()
        if name == "UID" and len(words) > 2:
            name = "UID " + words[2].decode("ascii", "replace").upper()
        out.append(Command(words[0].decode("ascii", "replace"), name, text, literals))
    return out


def mailbox_argument(command: Command) -> str | None:
    """The mailbox a SELECT, EXAMINE, APPEND, CREATE or STATUS names (its first argument),
    decoded from modified UTF-7; None when it was sent as a literal."""
    rest = command.text.split(b" ", 2)[2] if command.text.count(b" ") >= 2 else b""
    if rest.startswith(b'"'):
        match = _QUOTED.match(rest)
        if match is None:
            return None
        raw = re.sub(rb"\\(.)", rb"\1", match.group(0)[1:-1])
    elif _LITERAL.match(rest.split(b" ", 1)[0]):
        return None
    else:
        raw = rest.split(b" ", 1)[0]
    return str(imap_utf7.decode(raw))


def capped_rate_allowance(cap: int, connections: int, window_s: float) -> float:
    """The most bytes/s a capped transfer may show over any *window_s* at a proxy: the cap,
    plus one burst (the bucket's 64 KiB and one chunk in flight) and what the kernel buffers
    per connection before the bucket acts (fastsync's socket buffer, which the kernel
    doubles, and the proxy's two 64 KiB legs)."""
    from fastsync.rules.limits import capped_buffer_bytes

    buffers = connections * (2 * capped_buffer_bytes(cap) + 2 * 64 * 1024)
    return cap + (2 * 64 * 1024 + buffers) / window_s
