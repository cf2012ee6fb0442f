"""Helpers shared by the unit tests and the Dovecot tests, none of which needs a server: run the
CLI, write a config file, build messages, wait for a condition, find a run's workers.

Test modules import from here, from `tests.wire` (what a client sent) and, against a server,
from `tests.dovecot.accounts`; never from each other or from a conftest.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import psutil

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


# Runs ``python -m fastsync ARGS`` and writes the peak resident size, in KiB, of every process
# of the run (its worker processes and the fork server included) to the file named first:
# as a child subreaper (Linux prctl PR_SET_CHILD_SUBREAPER), it inherits and waits for every
# process the run leaves behind, and the kernel's RUSAGE_CHILDREN maximum covers all that
# were waited for, at any depth.
_PEAK_RUNNER = """
import ctypes, os, resource, subprocess, sys
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)
code = subprocess.call([sys.executable, "-m", "fastsync", *sys.argv[2:]])
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
with open(sys.argv[1], "w") as out:
    out.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)
"""


def run_cli_peak(*args: str | Path, timeout: float = 300) -> tuple[subprocess.CompletedProcess[str], int]:
    """`run_cli`, and the largest resident size (KiB) any process of the run reached (Linux)."""
    with tempfile.TemporaryDirectory() as scratch:
        peak_file = Path(scratch) / "peak"
        done = subprocess.run(
            [sys.executable, "-c", _PEAK_RUNNER, str(peak_file), *map(str, args)],
            capture_output=True, text=True, env=cli_env(), stdin=subprocess.DEVNULL, timeout=timeout, cwd=REPO_ROOT,
        )
        return done, int(peak_file.read_text())


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


def summary_line(output: str) -> str:
    lines = [line for line in output.splitlines() if " copied, " in line]
    assert lines, output
    return lines[-1]


def write_config(
    tmp_path: Path,
    src_server: str,
    src_user: str,
    src_pass: str,
    dst_server: str,
    dst_user: str,
    dst_pass: str,
    fmt: str = "json",
    extra: dict[str, Any] | None = None,
    *,
    src_tls: str = "none",
    dst_tls: str = "none",
    ca_file: Path | str | None = None,
    name: str = "fastsync",
) -> Path:
    """Write a fastsync configuration file and return its path.

    Produces ``{"src": {"label": "source", "server": "host:port", "user", "pass", "tls"},
    "dst": {"label": "destination", ...}}``.  ``tls`` is "none" by default because the
    tests use the plain port; ``ca_file`` is added to both sides when given.  ``extra``
    is merged in last: nested dicts under "src"/"dst" update those sides, other keys are
    added at the top level (a value of None removes the key).
    """
    if fmt not in ("json", "yaml"):
        raise ValueError("fmt must be 'json' or 'yaml'")
    config: dict[str, Any] = {
        "src": {"label": "source", "server": src_server, "user": src_user, "pass": src_pass, "tls": src_tls},
        "dst": {"label": "destination", "server": dst_server, "user": dst_user, "pass": dst_pass, "tls": dst_tls},
    }
    if ca_file is not None:
        config["src"]["ca_file"] = config["dst"]["ca_file"] = str(ca_file)
    for key, value in (extra or {}).items():
        if key in ("src", "dst") and isinstance(value, dict):
            for side_key, side_value in value.items():
                if side_value is None:
                    config[key].pop(side_key, None)
                else:
                    config[key][side_key] = side_value
        elif value is None:
            config.pop(key, None)
        else:
            config[key] = value
    path = tmp_path / f"{name}.{fmt}"
    if fmt == "json":
        path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    else:
        import yaml

        path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def capped_rate_allowance(cap: int, connections: int, window_s: float) -> float:
    """The most bytes/s a capped transfer may show over any *window_s* at a proxy: the cap,
    plus one burst (the bucket's 64 KiB and one chunk in flight) and what the kernel buffers
    per connection before the bucket acts (fastsync's socket buffer, which the kernel
    doubles, and the proxy's two 64 KiB legs)."""
    from fastsync.rules.limits import capped_buffer_bytes

    buffers = connections * (2 * capped_buffer_bytes(cap) + 2 * 64 * 1024)
    return cap + (2 * 64 * 1024 + buffers) / window_s


# --------------------------------------------------------------------------- Message-Id rewriting

# A Message-Id field of a header, folding included; group 1 is its value.
MESSAGE_ID_LINE = re.compile(rb"(?im)^message-id[ \t]*:[ \t]*(.*(?:\r?\n[ \t].*)*)")


def mail(n: int, message_id: bytes | None = b"auto", body: bytes = b"", eol: bytes = b"\r\n") -> bytes:
    """A small message; its Message-ID is <idN@example.org> unless *message_id* says otherwise."""
    headers = [b"From: a@example.org", b"Subject: message %d" % n]
    if message_id == b"auto":
        headers.append(b"Message-ID: <id%d@example.org>" % n)
    elif message_id is not None:
        headers.append(b"Message-ID: " + message_id)
    headers.append(b"Date: Mon, 1 Jan 2018 10:00:00 +0000")
    return eol.join(headers) + eol + eol + (body or b"Body %d" % n + eol)


def outside_ids(message: bytes) -> bytes:
    """*message* with every letter and digit of its header's Message-Id values blanked: what
    `bench.harness.rewriteproxy` must leave as it is."""
    head_end = message.find(b"\r\n\r\n")
    head_end = len(message) if head_end < 0 else head_end
    head = MESSAGE_ID_LINE.sub(
        lambda m: m.group(0)[: m.start(1) - m.start(0)] + re.sub(rb"[A-Za-z0-9]", b"_", m.group(1)), message[:head_end]
    )
    return head + message[head_end:]
