"""One `sync` at a time per destination account: a lock file in the state directory.

Engine layer: imports `errors`, `config` and `state` (what names an account); the
engine's entry (`run.py`) takes the lock before a sync plans and holds it until the run
ends, and hands it to every copy worker (`pool.py`).

Two runs copying to one account at once (a cron job overlapping a long run, a second
terminal) would both find the same messages missing and both append them.  The lock is
an exclusive `flock` (flock(2)) on ``<state dir>/<hash of server and user>.lock``; the
file holds the PID and start time of the run that holds it, for the message the second
run prints.  The kernel drops a flock when the last descriptor of its open file closes,
so a run that dies, even by SIGKILL, never leaves a stale lock, and the file is never
deleted (deleting a lock file lets two processes lock two different files).  Workers
inherit the descriptor, so the lock stays held while any process of the run may still
append.  The name is a hash: no user name on disk.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import os
import time
from multiprocessing import reduction
from pathlib import Path
from typing import Any

from fastsync.engine import statedir
from fastsync.settings.config import Account
from fastsync.records.errors import Locked, StateError, UsageError

# The holder writes its PID just after it takes the lock; a reader that comes in between
# finds the file empty and looks again.
READ_ATTEMPTS = 5
READ_PAUSE_S = 0.05


def lock_path(directory: Path, dst: Account) -> Path:
    """The lock file of the destination account *dst*: of the account, not of the spelling
    of its host and user names (`state.account_key`).  Imported here: only the parent
    takes the lock; a worker, which holds its descriptor, need not load the state cache."""
    from fastsync.engine.state import account_key

    return directory / (hashlib.sha256(account_key(dst).encode()).hexdigest()[:24] + ".lock")


class RunLock:
    """The destination account's lock, held from `acquire` until `release` (or exit)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd

    @classmethod
    def acquire(cls, directory: Path, dst: Account) -> RunLock:
        """Take the lock of *dst* in *directory*, or raise `Locked` naming the run that holds it."""
        path = lock_path(statedir.prepare(directory), dst)
        # Not O_TRUNC: the holder's PID must survive a failed attempt.  The descriptor is
        # not inherited by commands fastsync runs (pass_cmd); workers get it explicitly.
        # Never through a link or into a FIFO (see `statedir`).
        fd = statedir.open_file(path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise Locked(_locked_message(holder, dst), side=dst.side) from None
        except OSError as exc:
            os.close(fd)
            raise UsageError(f"cannot lock {path}: {exc.strerror}; choose another --state-dir") from None
        started = dt.datetime.now().astimezone().isoformat(timespec="seconds")
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n{started}\n".encode(), 0)
        except OSError as exc:
            # A full disk: the ledger and the state cache could not be written either, and
            # a run that cannot record its copies may copy them again next time.
            os.close(fd)
            raise StateError(
                f"cannot write the lock file {path}: {exc.strerror}; free space there or choose another --state-dir"
            ) from None
        return cls(path, fd)

    def release(self) -> None:
        """Give the lock back (workers that still hold the descriptor keep it taken)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled for a worker process: the descriptor itself travels (SCM_RIGHTS through
        # multiprocessing), so the worker shares the lock rather than taking a new one.
        return (_inherited, (self.path, reduction.DupFd(self.fd)))


def _inherited(path: Path, dup: Any) -> RunLock:
    return RunLock(path, dup.detach())


def _read_holder(fd: int) -> tuple[int, str]:
    """(PID, start time) written by the run that holds the lock; (0, "") if unreadable."""
    for _ in range(READ_ATTEMPTS):
        lines = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
        if lines and lines[0].isdigit():
            return int(lines[0]), lines[1] if len(lines) > 1 else ""
        time.sleep(READ_PAUSE_S)
    return 0, ""


def _locked_message(holder: tuple[int, str], dst: Account) -> str:
    pid, started = holder
    since = f" since {started}" if started else ""
    where = dst.where
    if pid and not _alive(pid):
        # Its workers inherited the lock and are finishing the unit in hand.
        return (f"the workers of a fastsync sync (PID {pid}, ended) are still copying to {where}; "
                "wait a few seconds and run again")
    who = f"PID {pid}" if pid else "PID unknown"
    return f"another fastsync sync ({who}{since}) is copying to {where}; wait for it or stop it"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
