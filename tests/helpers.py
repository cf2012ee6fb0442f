"""Helpers shared by the tests: run the CLI, build and count messages, snapshot an account, wait.

Test modules import from here (and from conftest), never from each other.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path

import psutil
from conftest import Account

from bench.corpus import Message

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
