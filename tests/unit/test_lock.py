"""Unit tests of the destination lock (lock.py): flock on a file in the state directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fastsync.settings.config import Account
from fastsync.records.errors import ExitCode, Locked
from fastsync.engine.lock import RunLock, lock_path
from tests.helpers import REPO_ROOT, wait_for


def account(server: str = "imap.example.org", user: str = "alice@example.org", port: int = 993) -> Account:
    return Account("dst", "New provider", server, port, user, "secret", "implicit", None, 60.0)


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (account(), account(), True),
        (account(server="IMAP.Example.org"), account(), True),  # host names ignore case
        (account(user="bob@example.org"), account(), False),
        (account(port=143), account(), False),
        (account(server="other.example.org"), account(), False),
    ],
)
def test_one_lock_file_per_destination_account(a: Account, b: Account, same: bool, tmp_path: Path) -> None:
    assert (lock_path(tmp_path, a) == lock_path(tmp_path, b)) is same


def test_the_file_name_holds_no_user_name(tmp_path: Path) -> None:
    path = lock_path(tmp_path, account())
    assert path.parent == tmp_path and path.suffix == ".lock"
    assert "alice" not in path.name and "example" not in path.name


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path: Path) -> None:
    first = RunLock.acquire(tmp_path / "state", account())
    assert first.path.read_text().split()[0] == str(os.getpid())
    assert first.path.stat().st_mode & 0o777 == 0o600
    # flock locks an open file, not a process: a second open in this process is refused too.
    with pytest.raises(Locked) as caught:
        RunLock.acquire(tmp_path / "state", account())
    assert caught.value.exit_code == ExitCode.LOCKED == 75
    message = caught.value.message
    assert message.startswith(f"another fastsync sync (PID {os.getpid()} since ")
    assert message.endswith("is copying to New provider (imap.example.org:993); wait for it or stop it")
    # The refused attempt did not erase the holder's PID.
    assert first.path.read_text().split()[0] == str(os.getpid())
    first.release()
    with RunLock.acquire(tmp_path / "state", account()):
        pass


_HOLD = """
import subprocess, sys, time
from pathlib import Path
from fastsync.settings.config import Account
from fastsync.engine.lock import RunLock
account = Account("dst", "New provider", "imap.example.org", 993, "alice@example.org", "s", "implicit", None, 60.0)
lock = RunLock.acquire(Path(sys.argv[1]), account)
if sys.argv[2] == "hand-over":
    # As a worker does: a second process shares the lock; this one ends.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], pass_fds=[lock.fd])
    print(child.pid, flush=True)
    sys.exit(0)
print("held", flush=True)
time.sleep(120)
"""


def _holder(directory: Path, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", _HOLD, str(directory), mode], stdout=subprocess.PIPE, text=True,
                            cwd=REPO_ROOT)


def test_the_kernel_releases_the_lock_of_a_killed_process(tmp_path: Path) -> None:
    holder = _holder(tmp_path, "hold")
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    with pytest.raises(Locked, match=f"PID {holder.pid} "):
        RunLock.acquire(tmp_path, account())
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with RunLock.acquire(tmp_path, account()):
        pass


def test_the_lock_stays_held_while_a_process_sharing_it_lives(tmp_path: Path) -> None:
    holder = _holder(tmp_path, "hand-over")
    assert holder.stdout is not None
    child = int(holder.stdout.readline())
    holder.wait()
    try:
        with pytest.raises(Locked) as caught:
            RunLock.acquire(tmp_path, account())
        assert caught.value.message.startswith(f"the workers of a fastsync sync (PID {holder.pid}, ended) are still")
    finally:
        os.kill(child, signal.SIGKILL)
    wait_for(lambda: _free(tmp_path), timeout_s=10, what="the lock to be released")


def _free(directory: Path) -> bool:
    try:
        RunLock.acquire(directory, account()).release()
    except Locked:
        return False
    return True


def test_an_unwritable_state_directory_is_a_usage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(Exception) as caught:
        RunLock.acquire(blocker / "state", account())
    assert getattr(caught.value, "exit_code", None) == ExitCode.USAGE
    assert "choose a writable --state-dir" in str(caught.value)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (account(user="Alice@Example.org"), account()),
        (account(user="ALICE@EXAMPLE.ORG", server="IMAP.EXAMPLE.ORG"), account()),
        (account(user="U015"), account(user="u015")),
    ],
)
def test_the_lock_is_the_accounts_not_the_spellings(a: Account, b: Account, tmp_path: Path) -> None:
    # IMAP user names are case-insensitive on every common server: one mailbox, one lock.
    assert lock_path(tmp_path, a) == lock_path(tmp_path, b)
    with RunLock.acquire(tmp_path, b), pytest.raises(Locked):
        RunLock.acquire(tmp_path, a)
