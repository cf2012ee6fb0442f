"""The state directory made safe on a shared machine: what lasts between runs (the lock,
the state cache, the ledger, the batch journal) is kept only where no one else can write.

Engine layer, standard library only; `lock.py`, `state.py`, `ledger.py` and the batch
journal call it before they touch a file.  A directory that another user can write
(``/tmp``, a group-writable share) lets that user put a symbolic link where fastsync is
about to write, so that the lock file overwrites a file of theirs choosing, or the ledger
converts some other SQLite database; a FIFO there makes every run hang on opening it.  So,
as ssh does with ``~/.ssh``: a state directory owned by another user, or writable by its
group or others, is refused with a line that says what to do; a new one is created
``0700`` whatever the umask; files are opened without following links (``O_NOFOLLOW``),
without blocking, and only when they are regular files, and created ``0600``.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import stat
import tempfile
from pathlib import Path

from fastsync.records.errors import UsageError

__all__ = ["UnsafeStateFile", "open_file", "prepare"]


class UnsafeStateFile(UsageError):
    """A file of the state directory is a link, a FIFO, a device or a directory, or cannot
    be opened; ``message`` names it and what to do."""


def prepare(directory: Path) -> Path:
    """*directory*, created ``0700`` if missing (parents too), once sure that no one but its
    owner (this user, or root) can write into it; else `UsageError` naming it."""
    created = not os.path.lexists(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        if created:
            # mkdir's mode goes through the umask: 0700 whatever it is.
            os.chmod(directory, 0o700)
        info = os.stat(directory)
    except OSError as exc:
        raise UsageError(
            f"cannot create the state directory {directory}: {exc.strerror}; choose a writable --state-dir"
        ) from None
    if not stat.S_ISDIR(info.st_mode):
        raise UsageError(f"the state directory {directory} is not a directory; choose another with --state-dir")
    if info.st_uid not in (os.getuid(), 0):
        raise UsageError(
            f"the state directory {directory} belongs to another user; use a directory of your own "
            f"(--state-dir, e.g. ~/.cache/fastsync)"
        )
    writers = _other_writers(info.st_mode)
    if writers:
        raise UsageError(
            f"the state directory {directory} is writable by {writers}, who could replace fastsync's files "
            f"there; run chmod go-w {shlex.quote(str(directory))} or choose another with --state-dir"
        )
    return directory


def _other_writers(mode: int) -> str:
    group, others = bool(mode & stat.S_IWGRP), bool(mode & stat.S_IWOTH)
    if group and others:
        return "its group and others"
    return "others" if others else "its group" if group else ""


def open_file(path: Path, flags: int) -> int:
    """A descriptor of the regular file *path* (created ``0600`` with ``os.O_CREAT`` in
    *flags*), opened without following a symbolic link and without blocking on a FIFO;
    `UnsafeStateFile` naming it when it is anything else."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if os.path.islink(path):
            raise UnsafeStateFile(
                f"{path} is a symbolic link; fastsync follows none in its state directory: remove it"
            ) from None
        raise UnsafeStateFile(f"cannot open {path}: {exc.strerror}; check the state directory") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeStateFile(f"{path} is not a regular file; remove it")
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        if info.st_uid == os.getuid() and info.st_mode & 0o077:
            # Left readable by an earlier version (0644): the owner's alone from now on.
            os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd


def replace_file(path: Path, data: bytes) -> None:
    """Write *path* whole or not at all: a temporary file beside it (0600), renamed over it,
    so that a crash leaves the old file.  OSError as the system gives it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
