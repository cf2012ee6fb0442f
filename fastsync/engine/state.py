"""A small cache that lets a re-run skip folder pairs nothing has touched.

Engine layer: imports `config`, `model` and `statedir`; the planner consults it, a sync pass records
into it (`writes.remember`).

Per folder pair it keeps what STATUS said of both folders (UIDVALIDITY, UIDNEXT, MESSAGES
and, with CONDSTORE, HIGHESTMODSEQ) after the last run that left the pair complete.  A
re-run asks STATUS again (one LIST-STATUS round trip per side) and plans only the pairs
where something differs: a message added or removed on either side moves UIDNEXT or
MESSAGES, and a flag change moves HIGHESTMODSEQ.  The cache only ever skips work; deleting
it, or `--full`, costs one full diff.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import orjson

from fastsync.engine import statedir
from fastsync.records.errors import UsageError
from fastsync.settings.config import Account, Config
from fastsync.records.model import FolderPair, FolderStatus

VERSION = 1


def default_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fastsync"


def _read(path: Path) -> bytes:
    fd = statedir.open_file(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as file:
        return file.read()


def account_key(account: Account) -> str:
    """Who *account* is, whatever the spelling of its names: what the destination's lock,
    the ledger and the state cache are named after.  Host names are case-insensitive (RFC
    4343), and so are IMAP user names on every common server (Dovecot, Exchange and
    Microsoft 365, Gmail, Cyrus, Zimbra): ``U015`` and ``u015`` log in to one mailbox, and two
    runs spelling it differently must meet the same lock and find the same ledger."""
    return f"{account.server.lower()}\n{account.user.lower()}"


def accounts_name(config: Config) -> str:
    """The hash that names the files of this config's two accounts (no user names on disk)."""
    accounts = f"{account_key(config.src)}\n{account_key(config.dst)}"
    return hashlib.sha256(accounts.encode()).hexdigest()[:24]


def _key(pair: FolderPair) -> str:
    return f"{pair.src}\n{pair.dst}"


def fingerprint(status: FolderStatus) -> list[int]:
    return [status.uidvalidity, status.uidnext, status.messages, status.highestmodseq]


class StateCache:
    """The cache file of one (source account, destination account) couple."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.pairs: dict[str, list[list[int]]] = {}
        if path is None:
            return
        try:
            data = orjson.loads(_read(path))
        except (OSError, orjson.JSONDecodeError, UsageError):
            # Missing, damaged, or not a regular file (a link, a FIFO: never followed, never
            # waited on): the run does without, and `save` puts a file in its place.
            return
        if isinstance(data, dict) and data.get("version") == VERSION and isinstance(data.get("pairs"), dict):
            self.pairs = data["pairs"]

    @classmethod
    def for_config(cls, config: Config, directory: Path | None) -> StateCache:
        """The cache of this config's two accounts (named by a hash: no user names on disk)."""
        return cls((directory or default_dir()) / (accounts_name(config) + ".json"))

    def unchanged(self, pair: FolderPair, src: FolderStatus | None, dst: FolderStatus | None) -> bool:
        if src is None or dst is None:
            return False
        return self.pairs.get(_key(pair)) == [fingerprint(src), fingerprint(dst)]

    def previous(self, pair: FolderPair) -> tuple[list[int], list[int]] | None:
        """The fingerprints (`fingerprint`) of both folders when the pair was last recorded."""
        found = self.pairs.get(_key(pair))
        return (found[0], found[1]) if found is not None and len(found) == 2 else None

    def record(self, pair: FolderPair, src: FolderStatus, dst: FolderStatus) -> None:
        self.pairs[_key(pair)] = [fingerprint(src), fingerprint(dst)]

    def forget(self, pair: FolderPair) -> None:
        self.pairs.pop(_key(pair), None)

    def save(self) -> None:
        """Write atomically (temporary file, then rename): a crash leaves the old cache."""
        if self.path is None:
            return
        statedir.prepare(self.path.parent)
        statedir.replace_file(self.path, orjson.dumps({"version": VERSION, "pairs": self.pairs}))
