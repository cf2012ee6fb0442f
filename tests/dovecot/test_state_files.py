"""fastsync's own files when the machine lets them down: a full or read-only state
directory, a damaged batch journal, a ledger of another layout.  Each is one line naming
the file and a documented exit code (or a warning where the run can go on without the
file), never an internal error.  Against real Dovecot servers."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from fastsync.engine.ledger import Ledger
from fastsync.settings.config import load_config
from tests.dovecot.accounts import AccountFactory, ConfigFor, snapshot
from tests.helpers import message, run_cli


@contextlib.contextmanager
def small_filesystem(path: Path, size: str = "256k") -> Iterator[Path]:
    """A tmpfs of *size* at *path* (root only: skipped otherwise)."""
    path.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs to mount a tmpfs (root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(directory: Path) -> None:
    """Leave 0 bytes free on *directory*'s file system."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while os.write(fd, b"\0" * 4096):
                pass
    finally:
        os.close(fd)


def _batch_files(tmp_path: Path, src: object, dst: object) -> tuple[Path, Path]:
    servers = tmp_path / "servers.yaml"
    servers.write_text(yaml.safe_dump({
        "src": {"server": f"127.0.0.1:{src.server.port}", "tls": "none"},  # type: ignore[attr-defined]
        "dst": {"server": f"127.0.0.1:{dst.server.port}", "tls": "none"},  # type: ignore[attr-defined]
    }))
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"src_user,src_pass,dst_user,dst_pass\n{src.user},{src.password},{dst.user},{dst.password}\n")  # type: ignore[attr-defined]
    pairs.chmod(0o600)
    return servers, pairs


def _journal(state: Path, pairs: Path) -> Path:
    return state / "batches" / (hashlib.sha256(os.path.abspath(pairs).encode()).hexdigest()[:24] + ".sqlite")


def test_a_full_state_directory(accounts: AccountFactory, config_for: ConfigFor, tmp_path: Path) -> None:
    src, dst = accounts(2)
    src.seed([message("INBOX", n) for n in range(1, 6)])
    with small_filesystem(tmp_path / "state") as state:
        fill(state)
        result = run_cli("sync", "-c", config_for(src, dst), "-y", "--state-dir", state)
    assert result.returncode == 74, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot write the lock file {state}/") and "No space left on device" in last, last
    # Nothing was copied: the run could not have recorded its copies.
    assert snapshot(dst) != snapshot(src)


def test_a_damaged_batch_journal(accounts: AccountFactory, tmp_path: Path) -> None:
    src, dst = accounts(2)
    src.seed([message("INBOX", n) for n in range(1, 6)])
    servers, pairs = _batch_files(tmp_path, src, dst)
    state = tmp_path / "state"
    journal = _journal(state, pairs)
    journal.parent.mkdir(parents=True)
    journal.write_bytes(b"SQLite format 3\0" + os.urandom(3000))
    result = run_cli("-c", servers, "batch", pairs, "--state-dir", state)
    assert result.returncode == 74, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: batch journal {journal}: cannot be read or written: the file is damaged (file is not a database); "
        "move it away and run again: the batch then starts a new journal, and pairs finished before copy only "
        "what is missing"
    )
    journal.rename(journal.with_suffix(".damaged"))
    again = run_cli("-c", servers, "batch", pairs, "--state-dir", state)
    assert again.returncode == 0, again.stderr
    assert snapshot(dst) == snapshot(src)


def test_a_read_only_state_directory_under_batch(accounts: AccountFactory, tmp_path: Path) -> None:
    src, dst = accounts(2)
    src.seed([message("INBOX", n) for n in range(1, 6)])
    servers, pairs = _batch_files(tmp_path, src, dst)
    with small_filesystem(tmp_path / "state") as state:
        # A batch ran before: its journal is there, then the file system turns read-only.
        assert run_cli("-c", servers, "batch", pairs, "--state-dir", state).returncode == 0
        subprocess.run(["mount", "-o", "remount,ro", str(state)], check=True)
        result = run_cli("-c", servers, "batch", pairs, "--state-dir", state, "--again")
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines()[-1] == (
            f"error: cannot open {_journal(state, pairs)}: Read-only file system; check the state directory"
        )


def test_a_ledger_of_another_layout(accounts: AccountFactory, config_for: ConfigFor, tmp_path: Path) -> None:
    src, dst = accounts(2)
    src.seed([message("INBOX", n) for n in range(1, 6)])
    config = config_for(src, dst)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    path = Ledger.for_config(load_config(str(config)), state).path
    assert path is not None
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE copies (a TEXT, b INTEGER)")
        db.commit()
    result = run_cli("sync", "-c", config, "-y", "--state-dir", state)
    assert result.returncode == 0, result.stderr
    assert f"warning: the ledger {path} cannot be read (its table copies has other columns: a, b)" in result.stderr
    assert snapshot(dst) == snapshot(src)
