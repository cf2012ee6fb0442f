"""The state directory on a shared machine: refused when others can write it, and its
files opened without following links or waiting on a FIFO, created 0600 in a 0700 directory."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fastsync.batch.journal import Journal
from fastsync.engine import statedir
from fastsync.engine.ledger import Ledger
from fastsync.engine.lock import RunLock, lock_path
from fastsync.engine.state import StateCache
from fastsync.records.errors import ExitCode, UsageError
from fastsync.records.model import FolderPair
from fastsync.settings.config import parse_config


def _config():  # type: ignore[no-untyped-def]
    side = {"server": "imap.example:993", "user": "u", "pass": "p"}
    return parse_config({"src": side, "dst": {**side, "user": "v"}}, "c.yaml", environ={})


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize(
    ("mode", "writers"),
    [(0o777, "its group and others"), (0o1777, "its group and others"), (0o757, "others"), (0o770, "its group")],
)
def test_a_state_directory_others_can_write_is_refused(tmp_path: Path, mode: int, writers: str) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    with pytest.raises(UsageError) as caught:
        RunLock.acquire(shared, _config().dst)
    assert caught.value.exit_code == ExitCode.USAGE
    assert caught.value.message == (
        f"the state directory {shared} is writable by {writers}, who could replace fastsync's files there; "
        f"run chmod go-w {shared} or choose another with --state-dir"
    )
    assert list(shared.iterdir()) == []


def test_tmp_is_refused_as_a_state_directory() -> None:
    with pytest.raises(UsageError, match="the state directory /tmp is writable by its group and others"):
        statedir.prepare(Path("/tmp"))


def test_a_new_state_directory_is_0700_and_its_files_0600_whatever_the_umask(
    tmp_path: Path, open_umask: None
) -> None:
    state = tmp_path / "a" / "state"
    config = _config()
    RunLock.acquire(state, config.dst).release()
    ledger = Ledger.for_config(config, state)
    ledger.record(("INBOX", 1), ("INBOX", 2), [(1, 1)])
    ledger.close()
    cache = StateCache.for_config(config, state)
    cache.save()
    Journal.open(state, "/batches/pairs.csv").close()
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "batches").stat().st_mode) == 0o700
    files = [p for p in state.rglob("*") if p.is_file()]
    assert len(files) >= 4
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {p.name: 0o600 for p in files}


def test_a_link_at_the_lock_path_is_not_followed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    dst = _config().dst
    lock_path(state, dst).symlink_to(victim)
    with pytest.raises(UsageError) as caught:
        RunLock.acquire(state, dst)
    assert caught.value.message == (
        f"{lock_path(state, dst)} is a symbolic link; fastsync follows none in its state directory: remove it"
    )
    assert victim.read_text() == "precious\n"


def test_a_link_at_the_ledger_path_never_touches_the_database_it_names(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t (x)")
    db.close()
    before = other.read_bytes()
    ledger = Ledger.for_config(_config(), state)
    assert ledger.path is not None
    ledger.path.symlink_to(other)
    ledger.record(("INBOX", 1), ("INBOX", 2), [(1, 1)])
    assert ledger.problem.startswith("the ledger is not used: ") and "is a symbolic link" in ledger.problem
    assert other.read_bytes() == before
    assert not Path(str(other) + "-wal").exists()


def test_a_fifo_at_the_state_cache_path_does_not_hang_and_is_replaced(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    path = StateCache.for_config(_config(), state).path
    assert path is not None
    os.mkfifo(path)
    # In a child process: opening a FIFO without a writer would hang this test for ever.
    script = (
        "import sys; from pathlib import Path\n"
        "from fastsync.engine.state import StateCache\n"
        "from fastsync.records.model import FolderPair, FolderStatus\n"
        "cache = StateCache(Path(sys.argv[1])); assert cache.pairs == {}\n"
        "cache.record(FolderPair('INBOX', 'INBOX'), FolderStatus(1, 0, 7, 2), FolderStatus(1, 0, 8, 2))\n"
        "cache.save()\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert path.is_file() and not path.is_symlink()
    assert StateCache(path).previous(FolderPair("INBOX", "INBOX")) is not None


def test_a_fifo_at_the_journal_path_is_a_usage_error(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "batches").mkdir(parents=True, mode=0o700)
    state.chmod(0o700)
    Journal.open(state, "/batches/pairs.csv").close()
    journal_file = next((state / "batches").glob("*.sqlite"))
    for extra in (state / "batches").glob("*.sqlite-*"):
        extra.unlink()
    journal_file.unlink()
    os.mkfifo(journal_file)
    with pytest.raises(UsageError, match="is not a regular file; remove it"):
        Journal.open(state, "/batches/pairs.csv")
