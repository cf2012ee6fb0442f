"""Process control against real Dovecot: one sync per destination, SIGTERM, and the
settings an imapsync-go user brings (`-c` before the command, IMAPSYNC_*).

The connection caps, --max-connections 1 included, are measured in test_caps.py."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import time
from pathlib import Path

import psutil
import pytest

from bench.harness.corpus import Message
from fastsync.settings.config import load_config
from fastsync.records.errors import ExitCode
from fastsync.engine.state import StateCache
from tests.dovecot.accounts import AccountFactory, ConfigFor, message_count, snapshot
from tests.helpers import message, run_cli, spawn_sync, summary_line, wait_for, workers_of


def _big(n: int, size_bytes: int = 100_000) -> Message:
    body = f"Message-ID: <big{n}@x>\r\nSubject: {n}\r\n\r\n".encode() + b"y" * size_bytes + b"\r\n"
    return Message("INBOX", body, ("\\Seen",), dt.datetime(2022, 2, 2, tzinfo=dt.UTC))


def _alive(processes: list[psutil.Process]) -> list[int]:
    alive = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p.pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def _copied(output: str) -> int:
    return int(re.search(r"(\d+) copied", summary_line(output)).group(1))  # type: ignore[union-attr]


def test_config_before_the_command_and_imapsync_variables(accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst = accounts(2)
    src.seed([message("INBOX", n) for n in range(1, 4)])
    config = config_for(src, dst)
    # As imapsync-go documents it: -c before the command.
    shown = run_cli("-c", config, "show")
    assert shown.returncode == 0, shown.stderr
    assert src.user in shown.stdout
    # Given on both sides, the one after the command wins.
    synced = run_cli("-c", config.with_name("missing.json"), "sync", "-c", config, "-y")
    assert synced.returncode == 0, synced.stderr
    assert snapshot(dst) == snapshot(src)
    # imapsync-go's variables are read; FASTSYNC_CONFIG wins over IMAPSYNC_CONFIG.
    checked = run_cli("check", env={"IMAPSYNC_CONFIG": str(config)})
    assert checked.returncode == 0, checked.stderr
    both = run_cli("check", env={"IMAPSYNC_CONFIG": str(config), "FASTSYNC_CONFIG": "/nonexistent.json"})
    assert both.returncode == 2 and "/nonexistent.json" in both.stderr
    bad = run_cli("sync", "-c", config, "-y", env={"IMAPSYNC_WORKERS": "lots"})
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: environment variable IMAPSYNC_WORKERS='lots': expected a whole number"


def test_two_syncs_to_one_destination_one_copies_the_other_stops(
    accounts: AccountFactory, config_for: ConfigFor
) -> None:
    src, dst = accounts(2)
    src.seed([message("INBOX", n, body="x" * 4000 + "\r\n") for n in range(1, 41)])
    config = config_for(src, dst)
    # Both at once; the cap keeps the copy going for seconds, so they overlap.
    runs = [spawn_sync(config, "--bps-down", "40000") for _ in range(2)]
    results = [(p, *p.communicate(timeout=120)) for p in runs]
    codes = sorted(p.returncode for p, _out, _err in results)
    assert codes == [0, ExitCode.LOCKED], results
    winner = next(p for p, _o, _e in results if p.returncode == 0)
    _loser, out, err = next(r for r in results if r[0].returncode == ExitCode.LOCKED)
    assert out == ""
    assert err.strip().splitlines()[-1] == (
        f"error: another fastsync sync (PID {winner.pid} since {_started(err)}) is copying to destination "
        f"({dst.address}); wait for it or stop it"
    ), err
    assert err.count("error:") == 1, err
    # Each message once.
    assert snapshot(dst) == snapshot(src)


def _started(err: str) -> str:
    found = re.search(r"since (\S+)\)", err)
    assert found, err
    return found.group(1)


def test_the_lock_is_per_destination_and_dry_run_check_show_take_none(
    accounts: AccountFactory, config_for: ConfigFor
) -> None:
    src, dst, other = accounts(3)
    src.seed([message("INBOX", n, body="x" * 4000 + "\r\n") for n in range(1, 41)])
    config = config_for(src, dst)
    first = spawn_sync(config, "--bps-down", "8000")
    try:
        wait_for(lambda: workers_of(first.pid), timeout_s=60, what="the first sync to start copying")
        # Read-only commands and a dry run go on while the sync holds the lock.
        assert run_cli("sync", "-c", config, "-n").returncode == 0
        assert run_cli("show", "-c", config).returncode == 0
        assert run_cli("check", "-c", config).returncode in (0, 1)
        # Another destination is another lock.
        to_other = run_cli("sync", "-c", config_for(src, other, name="other"), "-y")
        assert to_other.returncode == 0, to_other.stderr
        # The same destination is refused at once, before logging in.
        started = time.monotonic()
        second = run_cli("sync", "-c", config, "-y", "--json")
        assert second.returncode == ExitCode.LOCKED == 75
        assert time.monotonic() - started < 5
        assert f"(PID {first.pid} " in second.stderr
    finally:
        _out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert snapshot(dst) == snapshot(src) == snapshot(other)


def test_a_killed_run_leaves_no_lock(accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst = accounts(2)
    src.seed([message("INBOX", n, body="x" * 4000 + "\r\n") for n in range(1, 41)])
    config = config_for(src, dst)
    first = spawn_sync(config, "--bps-down", "20000")
    wait_for(lambda: workers_of(first.pid), timeout_s=60, what="the first sync to start copying")
    os.killpg(first.pid, signal.SIGKILL)
    first.communicate(timeout=30)
    rerun = run_cli("sync", "-c", config, "-y")
    assert rerun.returncode == 0, rerun.stderr
    assert snapshot(dst) == snapshot(src)


@pytest.mark.parametrize("how", ["kill-parent", "kill-group", "one-connection"])
def test_sigterm_stops_like_ctrl_c(how: str, accounts: AccountFactory, config_for: ConfigFor, tmp_path: Path) -> None:
    src, dst = accounts(2)
    # About ten 1 MB units, copied at 1 MB/s: SIGTERM comes between the first and the last.
    src.seed([_big(n) for n in range(1, 101)])
    # A folder already in step: the state cache records it even though the run was stopped.
    done = [message("Done", n) for n in range(1, 4)]
    src.seed(done)
    dst.seed(done)
    config = config_for(src, dst)
    log, state = tmp_path / "run.log", tmp_path / "state"
    extra = ["--procs", "2", "--bps-down", "1000000", "--log-file", str(log), "--state-dir", str(state)]
    if how == "one-connection":
        extra += ["--max-connections", "1"]
    process = spawn_sync(config, *extra)
    wait_for(lambda: message_count(dst) > 3, timeout_s=60, what="the first unit to land")
    tree = psutil.Process(process.pid).children(recursive=True)
    assert workers_of(process.pid)
    started = time.monotonic()
    if how == "kill-group":  # systemd's default: every process of the service
        os.killpg(process.pid, signal.SIGTERM)
    else:  # kill PID, docker stop
        os.kill(process.pid, signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == ExitCode.TERMINATED == 143, err
    assert time.monotonic() - started < 10
    assert err.strip().splitlines()[-1] == "Stopped by SIGTERM.", err
    assert "leaked" not in err and "Traceback" not in err, err
    # The units in hand were finished and counted: the summary counts every message that landed.
    copied = _copied(out)
    assert 0 < copied < 100
    assert message_count(dst) - len(done) == copied
    assert re.search(r"run finished .*exit_code=143", log.read_text()), log.read_text()
    cache = StateCache.for_config(load_config(config), state)
    assert "Done\nDone" in cache.pairs and "INBOX\nINBOX" not in cache.pairs
    # No worker, no fork server left behind.
    wait_for(lambda: not _alive(tree), timeout_s=10, interval_s=0.1, what="the workers and the fork server to exit")

    rerun = run_cli("sync", "-c", config, "-y", "--state-dir", state)
    assert rerun.returncode == 0, rerun.stderr
    assert snapshot(dst) == snapshot(src)
