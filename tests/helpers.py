"""Helpers shared by the integration tests: run the CLI, snapshot an account."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from conftest import Account

REPO_ROOT = Path(__file__).resolve().parent.parent
STATE_HOME = Path(tempfile.mkdtemp(prefix="fastsync-test-cache-"))


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a fastsync run in a test: no FASTSYNC_ settings leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTSYNC_")}
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
