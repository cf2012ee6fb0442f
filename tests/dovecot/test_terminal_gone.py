"""Where the output goes away: a pipe closed early, standard error closed, the terminal
closed (SIGHUP).  The copy is what matters: it completes, or stops as SIGTERM stops it.
Against real Dovecot servers."""

from __future__ import annotations

import datetime as dt
import os
import pty
import re
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path

from bench.harness.corpus import Message
from tests.dovecot.accounts import AccountFactory, ConfigFor, message_count, snapshot
from tests.helpers import REPO_ROOT, cli_env, message, run_cli, wait_for

FASTSYNC = f"{sys.executable} -m fastsync"


def _big(n: int, size_bytes: int = 100_000) -> Message:
    body = f"Message-ID: <gone{n}@x>\r\nSubject: {n}\r\n\r\n".encode() + b"y" * size_bytes + b"\r\n"
    return Message("INBOX", body, (), dt.datetime(2022, 2, 2, tzinfo=dt.UTC))


def _shell(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=cli_env(), cwd=REPO_ROOT,
                          stdin=subprocess.DEVNULL, timeout=300)


def test_a_reader_that_goes_away_ends_the_output_not_the_copy(accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst = accounts(2)
    src.seed([message("INBOX", n) for n in range(1, 31)] + [message("Work", n) for n in range(1, 11)])
    config = config_for(src, dst)
    result = _shell(f"{FASTSYNC} sync -c {config} -y --procs 2 | head -1; echo \"status=${{PIPESTATUS[0]}}\" >&2")
    assert result.stderr.strip().splitlines()[-1] == "status=0", result.stderr
    assert "Traceback" not in result.stderr and "Broken pipe" not in result.stderr, result.stderr
    assert "error" not in result.stderr, result.stderr
    assert len(result.stdout.splitlines()) == 1
    assert snapshot(dst) == snapshot(src)


def test_with_standard_error_closed_a_sync_still_copies(accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst = accounts(2)
    src.seed([message("INBOX", n) for n in range(1, 31)] + [message("Work", n) for n in range(1, 11)])
    # tls: none draws warnings on standard error: they must go nowhere, not into a connection.
    config = config_for(src, dst)
    result = _shell(f"{FASTSYNC} sync -c {config} -y --procs 2 2>&-; echo \"status=$?\"")
    assert result.stdout.strip().splitlines()[-1] == "status=0", result.stdout
    assert "40 copied" in result.stdout
    assert snapshot(dst) == snapshot(src)


def test_a_closed_terminal_stops_the_run_like_sigterm(
    accounts: AccountFactory, config_for: ConfigFor, tmp_path: Path
) -> None:
    src, dst = accounts(2)
    src.seed([_big(n) for n in range(1, 61)])
    config = config_for(src, dst)
    log = tmp_path / "run.log"
    master, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "fastsync", "sync", "-c", str(config), "-y", "--procs", "2", "--bps-down", "600000",
         "--log-file", str(log)],
        stdin=terminal, stdout=terminal, stderr=terminal, env=cli_env(), cwd=REPO_ROOT, start_new_session=True,
    )
    os.close(terminal)
    closing = threading.Event()

    def drain() -> None:
        # The terminal's reader, until the terminal is closed.
        while not closing.is_set():
            if select.select([master], [], [], 0.1)[0]:
                try:
                    os.read(master, 65536)
                except OSError:
                    break
        os.close(master)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    wait_for(lambda: message_count(dst) > 2, timeout_s=60, what="the first units to land")
    closing.set()
    reader.join(timeout=10)
    # The terminal is gone: its session gets SIGHUP (as the kernel sends it when the
    # controlling terminal hangs up) and every later write fails.
    os.killpg(process.pid, signal.SIGHUP)
    assert process.wait(timeout=60) == 129
    text = log.read_text()
    assert re.search(r"run finished .*exit_code=129", text), text
    assert "Traceback" not in text
    rerun = run_cli("sync", "-c", config, "-y")
    assert rerun.returncode == 0, rerun.stderr
    assert snapshot(dst) == snapshot(src)
