"""The ledger: which destination message each copy became, so that a re-run knows its copies
even on a destination that rewrites them.

Engine layer: imports `config`, `statedir` and `state` (what names an account).  Some
servers (Exchange and hosted setups) replace the Message-Id of an appended message, so the
identity fastsync compares is not the one it sent, and every re-run would copy everything
again.  Where the destination announces UIDPLUS, each APPEND answers with the new
message's UID (APPENDUID, RFC 4315 section 3); the worker that sent it records source
(folder, UIDVALIDITY, UID) -> destination (folder, UIDVALIDITY, UID) itself, one
transaction per work unit, also when the unit ends in an error, so that a copy made while
the parent is gone is known.  Planning, check, --sync-flags and --delete-dest count a
ledgered message as present when its destination UID still exists under the same
UIDVALIDITY, and never otherwise: the ledger is checked against the server, not trusted.

SQLite in WAL mode, read by the parent and written by every worker: Ctrl-C, a crash or
``kill -9`` of a worker loses at most the unit in hand and never corrupts what was
written.  A few dozen bytes a message.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import stat
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from fastsync.engine import statedir
from fastsync.engine.statedir import UnsafeStateFile
from fastsync.settings.config import Config

SUFFIX = ".ledger.sqlite"

# How long a connection waits for another's lock before the statement fails.
BUSY_TIMEOUT_S = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS copies (
    src_folder TEXT NOT NULL,
    src_uidvalidity INTEGER NOT NULL,
    src_uid INTEGER NOT NULL,
    dst_folder TEXT NOT NULL,
    dst_uidvalidity INTEGER NOT NULL,
    dst_uid INTEGER NOT NULL,
    PRIMARY KEY (src_folder, src_uidvalidity, src_uid, dst_folder)
) WITHOUT ROWID
"""

# Keywords a destination folder refused on APPEND (too long, characters it does not take,
# not in its PERMANENTFLAGS), in lower case: copies go without them, and check and
# --sync-flags count them among the flags the folder cannot keep (`plan.keepable_flags`).
_REFUSED_SCHEMA = """
CREATE TABLE IF NOT EXISTS refused_keywords (
    dst_folder TEXT NOT NULL,
    keyword TEXT NOT NULL,
    PRIMARY KEY (dst_folder, keyword)
) WITHOUT ROWID
"""


# The ledger's tables and their columns, as `_SCHEMA` and `_REFUSED_SCHEMA` make them.
LAYOUT = {
    "copies": ("src_folder", "src_uidvalidity", "src_uid", "dst_folder", "dst_uidvalidity", "dst_uid"),
    "refused_keywords": ("dst_folder", "keyword"),
}


class NotALedger(Exception):
    """A SQLite database that is not a ledger (other tables, or another layout): it is left
    as it is, neither converted to WAL nor given a table."""


class Ledger:
    """The ledger of one (source account, destination account) couple; None path: keep nothing."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        # Why the ledger is not used, when a file is there that SQLite cannot read.
        self.problem = ""

    @classmethod
    def for_config(cls, config: Config, directory: Path) -> Ledger:
        """The ledger of this config's two accounts, whatever the case of their names
        (`state.accounts_name`; a hash: no user names on disk)."""
        # Here, not at the top: only the parent names the ledger; a worker opens it by
        # its path, and the state cache's module (with orjson) stays out of every worker.
        from fastsync.engine.state import accounts_name

        path = directory / (accounts_name(config) + SUFFIX)
        _adopt(directory / (_spelled_name(config) + SUFFIX), path)
        return cls(path)

    def _connection(self) -> sqlite3.Connection | None:
        if self.path is None:
            return None
        if self._db is None:
            try:
                # Created 0600 by fastsync, never through a link (see `statedir`): SQLite
                # opens by name, and would follow one into another database.
                os.close(statedir.open_file(statedir.prepare(self.path.parent) / self.path.name,
                                            os.O_RDWR | os.O_CREAT))
            except UnsafeStateFile as exc:
                self.problem = f"the ledger is not used: {exc.message}; re-runs match copies by Message-Id"
                self.path = None
                return None
            # The parent and every worker write it: wait for each other's short transactions.
            db = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
            try:
                _prepare(db)
            except (sqlite3.DatabaseError, NotALedger) as exc:
                db.close()
                if isinstance(exc, sqlite3.DatabaseError) and _busy(exc):
                    raise
                # Not a database (overwritten, truncated by a full disk), or another one:
                # the run goes on without it, matching by identity as without UIDPLUS; the
                # file is kept as it is.
                self.problem = f"the ledger {self.path} cannot be read ({exc}); re-runs match copies by Message-Id"
                self.path = None
                return None
            self._db = db
        return self._db

    def record(
        self, src: tuple[str, int], dst: tuple[str, int], uids: Iterable[tuple[int, int]]
    ) -> None:
        """Record the copies of one unit: *src* and *dst* are (folder, UIDVALIDITY), *uids*
        (source UID, destination UID) pairs.  One transaction."""
        db = self._connection()
        rows = [(src[0], src[1], s, dst[0], dst[1], d) for s, d in uids]
        if db is None or not rows:
            return
        with _transaction(db):
            db.executemany("INSERT OR REPLACE INTO copies VALUES (?, ?, ?, ?, ?, ?)", rows)

    def copies(self, src: tuple[str, int], dst: tuple[str, int]) -> dict[int, int]:
        """Source UID -> destination UID of the copies made from folder *src* into *dst*,
        both as (folder, UIDVALIDITY): entries of another UIDVALIDITY name nothing now."""
        if self.path is None or (self._db is None and not self.path.exists()):
            return {}
        db = self._connection()
        if db is None:
            return {}
        rows = db.execute(
            "SELECT src_uid, dst_uid FROM copies WHERE src_folder = ? AND src_uidvalidity = ? "
            "AND dst_folder = ? AND dst_uidvalidity = ?",
            (src[0], src[1], dst[0], dst[1]),
        )
        return dict(rows.fetchall())

    def record_refused(self, dst_folder: str, keywords: Iterable[str]) -> None:
        """Remember that destination folder *dst_folder* refused *keywords* on APPEND."""
        db = self._connection()
        rows = [(dst_folder, k.lower()) for k in keywords]
        if db is None or not rows:
            return
        with _transaction(db):
            db.executemany("INSERT OR IGNORE INTO refused_keywords VALUES (?, ?)", rows)

    def refused_keywords(self, dst_folder: str) -> frozenset[str]:
        """The keywords (lower case) destination folder *dst_folder* refused on APPEND."""
        if self.path is None or (self._db is None and not self.path.exists()):
            return frozenset()
        db = self._connection()
        if db is None:
            return frozenset()
        rows = db.execute("SELECT keyword FROM refused_keywords WHERE dst_folder = ?", (dst_folder,))
        return frozenset(k for (k,) in rows.fetchall())

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def _prepare(db: sqlite3.Connection) -> None:
    """WAL mode (a writer never blocks a reader, and a transaction is on disk or absent) and
    the table.  The first workers of a run open a ledger that does not exist yet at the same
    moment, and SQLite answers "database is locked" at once, without waiting, to one that
    asks for WAL while another is switching the new file: that answer is waited out here,
    like any lock, instead of costing the worker its ledger (its copies would be copied
    again by the next run on a destination that rewrites Message-Id)."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            _check_layout(db)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(_SCHEMA)
            db.execute(_REFUSED_SCHEMA)
            return
        except sqlite3.OperationalError as exc:
            if not _busy(exc) or time.monotonic() > deadline:
                raise
        time.sleep(0.01)


def _check_layout(db: sqlite3.Connection) -> None:
    """Raise NotALedger unless the database holds none but the ledger's tables (some may
    be missing: a new file, an earlier version's), each with its columns; else it is a
    file of another program, or of another version of fastsync."""
    tables = sorted(name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
    others = [name for name in tables if name not in LAYOUT]
    if others:
        raise NotALedger(f"a SQLite database of other tables: {', '.join(others)}")
    for table in tables:
        columns = tuple(row[1] for row in db.execute(f"PRAGMA table_info({table})"))
        if columns != LAYOUT[table]:
            raise NotALedger(f"its table {table} has other columns: {', '.join(columns)}")


def _busy(exc: sqlite3.DatabaseError) -> bool:
    """Whether SQLite said the database is locked by another connection (SQLITE_BUSY or
    SQLITE_LOCKED, extended codes included), not that the file is unreadable."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE: the write lock is taken (waiting for it like any lock) before the first
    # read; a deferred transaction that reads, then writes after another process's commit
    # gets "database is locked" at once in WAL mode, with no wait.
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _spelled_name(config: Config) -> str:
    """The name ledgers had before they were named after the accounts: after the names as
    the config spelled them."""
    accounts = f"{config.src.server}\n{config.src.user}\n{config.dst.server}\n{config.dst.user}"
    return hashlib.sha256(accounts.encode()).hexdigest()[:24]


def _adopt(legacy: Path, path: Path) -> None:
    """Give *path* the ledger an earlier version kept under *legacy* (a config spelling a
    name with capitals), unless *path* has one already: its copies stay known, which on a
    destination that rewrites Message-Id is what keeps a re-run from copying them again.
    Closing a connection folds the WAL into the file first; a ledger in use (its WAL still
    there) is left alone."""
    try:
        # Only a file of its own: never through a link (see `statedir`).
        if legacy == path or os.path.lexists(path) or not stat.S_ISREG(os.lstat(legacy).st_mode):
            return
        sqlite3.connect(legacy, timeout=BUSY_TIMEOUT_S).close()
        if Path(f"{legacy}-wal").exists():
            return
        legacy.rename(path)
    except (OSError, sqlite3.Error):
        pass
