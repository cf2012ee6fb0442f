"""The batch journal: each account pair's last outcome, so a second run skips what is done.

Engine layer: imports `statedir` (the state directory made safe) and `errors`.  One SQLite file (WAL) in the state
directory per batch file (by its absolute path).  A pair is known by a hash of its two
accounts and of what else decides its sync (the servers file, the options), never of a
password or of anything else secret (the line's text holds passwords): the journal gives
nothing to test guessed passwords against.

A pair is marked ``running`` before it starts and gets its outcome when it ends, so a
batch that was killed leaves its running pairs as not finished: they are redone.
Only a pair that ended exact (exit code 0) is skipped by the next run.  A journal that
cannot be read or written (damaged, a full or read-only disk) is a `StateError` naming it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fastsync.engine import statedir
from fastsync.records.errors import StateError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB);
CREATE TABLE IF NOT EXISTS pairs (
    key TEXT PRIMARY KEY, line INTEGER, src_user TEXT, dst_user TEXT, outcome TEXT,
    copied INTEGER, present INTEGER, failed INTEGER, copied_bytes INTEGER, seconds REAL,
    exit_code INTEGER, finished_at REAL
);
CREATE TABLE IF NOT EXISTS budgets (name TEXT PRIMARY KEY, uses BLOB);
"""
# Added later: a JSON object with the pair's refused and accepted messages and its errors,
# which `fastsync report` renders; an older journal gets the column on opening.
_DETAIL = "ALTER TABLE pairs ADD COLUMN detail TEXT"


@dataclass(frozen=True)
class Entry:
    """What the journal holds of one pair."""

    outcome: str
    copied: int
    present: int
    failed: int
    copied_bytes: int
    seconds: float
    exit_code: int | None
    finished_at: float | None
    detail: str = "{}"


class Journal:
    """``Journal.open(state_dir, batch_path)``; one process writes it (the batch's)."""

    def __init__(self, path: Path, db: sqlite3.Connection) -> None:
        self.path = path
        self._db = db
        with failures(path):
            self._forget_salted_keys(db)

    @staticmethod
    def _forget_salted_keys(db: sqlite3.Connection) -> None:
        if db.execute("SELECT 1 FROM meta WHERE name = 'salt'").fetchone() is not None:
            # Written by an earlier fastsync, whose keys were hashes of the pairs' lines,
            # passwords included, keyed with this salt: both go, and those pairs run again.
            with db:
                db.execute("DELETE FROM pairs")
                db.execute("DELETE FROM meta WHERE name = 'salt'")
            db.execute("VACUUM")

    @classmethod
    def open(cls, state_dir: Path, batch_path: str) -> Journal:
        statedir.prepare(state_dir)
        directory = statedir.prepare(state_dir / "batches")
        name = hashlib.sha256(os.path.abspath(batch_path).encode()).hexdigest()[:24]
        path = directory / f"{name}.sqlite"
        # Never through a link into another database, never a FIFO (see `statedir`).
        os.close(statedir.open_file(path, os.O_RDWR | os.O_CREAT))
        with failures(path):
            db = sqlite3.connect(path, timeout=30, check_same_thread=False)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
                columns = {row[1] for row in db.execute("PRAGMA table_info(pairs)")}
                if "detail" not in columns:
                    db.execute(_DETAIL)
            except BaseException:
                db.close()
                raise
        return cls(path, db)

    def get(self, key: str) -> Entry | None:
        with failures(self.path):
            row = self._db.execute(
                "SELECT outcome, copied, present, failed, copied_bytes, seconds, exit_code, finished_at, "
                "coalesce(detail, '{}') FROM pairs WHERE key = ?", (key,),
            ).fetchone()
        return Entry(*row) if row else None

    def entries(self) -> list[tuple[int, str, str, Entry]]:
        """Every pair the journal knows: line, source user, destination user, entry; by line."""
        with failures(self.path):
            rows = self._db.execute(
                "SELECT line, src_user, dst_user, outcome, copied, present, failed, copied_bytes, seconds, "
                "exit_code, finished_at, coalesce(detail, '{}') FROM pairs ORDER BY line",
            ).fetchall()
        return [(row[0], row[1], row[2], Entry(*row[3:])) for row in rows]

    def started(self, key: str, line: int, src_user: str, dst_user: str) -> None:
        with failures(self.path), self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO pairs VALUES (?, ?, ?, ?, 'running', 0, 0, 0, 0, 0, NULL, NULL, '{}')",
                (key, line, src_user, dst_user),
            )

    def finished(self, key: str, entry: Entry) -> None:
        with failures(self.path), self._db:
            self._db.execute(
                "UPDATE pairs SET outcome = ?, copied = ?, present = ?, failed = ?, copied_bytes = ?, seconds = ?, "
                "exit_code = ?, finished_at = ?, detail = ? WHERE key = ?",
                (entry.outcome, entry.copied, entry.present, entry.failed, entry.copied_bytes, entry.seconds,
                 entry.exit_code, entry.finished_at or time.time(), entry.detail, key),
            )

    def budget_uses(self, names: Iterable[str]) -> dict[str, list[tuple[float, int]]]:
        """The budgets' uses kept for these names (`engine/budgets.book_name`)."""
        found: dict[str, list[tuple[float, int]]] = {}
        with failures(self.path):
            for name in names:
                row = self._db.execute("SELECT uses FROM budgets WHERE name = ?", (name,)).fetchone()
                if row is not None:
                    found[name] = [(float(t), int(b)) for t, b in json.loads(row[0])]
        return found

    def keep_budget_uses(self, uses: Mapping[str, Sequence[Sequence[float]]], window_s: float) -> None:
        """Add a pair's budgets' uses to those kept, dropping those older than *window_s*:
        a pair that runs again, here or on another machine, counts them."""
        now = time.time()
        for name, new in uses.items():
            held = self.budget_uses([name]).get(name, [])
            merged = sorted({(float(t), int(b)) for t, b in [*held, *new] if float(t) > now - window_s})
            with failures(self.path), self._db:
                self._db.execute("INSERT OR REPLACE INTO budgets VALUES (?, ?)", (name, json.dumps(merged)))

    def close(self) -> None:
        self._db.close()


@contextlib.contextmanager
def failures(path: Path) -> Iterator[None]:
    """A journal that cannot be read or written is a `StateError` naming it, with what to do."""
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        raise StateError(f"batch journal {path}: cannot be read or written: {_why(exc)}") from None


def _why(exc: sqlite3.Error | OSError) -> str:
    """What went wrong and what to do, from the error's code (errno, SQLite's result code)."""
    code = getattr(exc, "errno", None)
    sqlite_code = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF
    if code in (errno.EROFS, errno.EACCES, errno.EPERM) or sqlite_code in (sqlite3.SQLITE_READONLY,
                                                                           sqlite3.SQLITE_PERM):
        return "the state directory is read-only; make it writable or choose another with --state-dir"
    if code == errno.ENOSPC or sqlite_code == sqlite3.SQLITE_FULL:
        return "the disk is full; free space or choose another state directory with --state-dir"
    if sqlite_code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return (f"the file is damaged ({exc}); move it away and run again: the batch then starts a new "
                "journal, and pairs finished before copy only what is missing")
    return getattr(exc, "strerror", None) or str(exc)
