"""The refused messages of one (source account, destination account) couple, kept between runs.

Engine layer: imports `statedir` (the state directory made safe), `state` (the file's
name) and the pure rules of `rules/refusals.py`.  A sync (and each pair of a batch, which
is one) opens `Refusals.for_config`; the pass leaves out the messages `rules.refusals.held`
says to hold (`hold`), and the run records what the destination refused this time
(`record`).  ``fastsync accept`` marks the known refusals accepted, and ``fastsync
report`` reads them.

One JSON file ``<hash of the two accounts>.refused.json`` in the state directory,
``0600``, written whole (temporary file, then rename), never through a link.  Each
record: the source folder, UID, Message-Id, subject, date, size, the server's words,
how many runs the destination refused it, whether an operator accepted it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from fastsync.engine import statedir
from fastsync.engine.state import accounts_name, default_dir
from fastsync.records.errors import StateError, UsageError
from fastsync.records.model import Failure
from fastsync.rules import refusals as rules
from fastsync.settings.config import Config

VERSION = 1


@dataclass
class Refusal:
    """One refused message as kept between runs."""

    folder: str
    uid: int
    message_id: str
    subject: str
    date: str
    size_bytes: int
    reason: str
    attempts: int = 1
    accepted: bool = False
    last_seen: float = field(default_factory=time.time)

    @property
    def key(self) -> str:
        return rules.key(self.folder, self.uid, self.message_id)

    def failure(self) -> Failure:
        return Failure(self.folder, self.uid, self.size_bytes, self.reason, self.message_id, self.subject, self.date)


class Refusals:
    """The refusals file of one config's two accounts; *path* None keeps them in memory."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.items: dict[str, Refusal] = {}
        # The refusals `held` left out of this run: neither counted again nor forgotten.
        self.held_now: set[str] = set()
        if path is None or not os.path.lexists(path):
            return
        try:
            fd = statedir.open_file(path, os.O_RDONLY)
            with os.fdopen(fd, "rb") as file:
                data = orjson.loads(file.read())
        except (OSError, orjson.JSONDecodeError, UsageError):
            # Unreadable or damaged: the run tries every message again, and `save` replaces it.
            return
        if isinstance(data, dict) and data.get("version") == VERSION:
            for item in data.get("refused", []):
                try:
                    refusal = Refusal(**item)
                except TypeError:
                    continue
                self.items[refusal.key] = refusal

    @classmethod
    def for_config(cls, config: Config, directory: Path | None) -> Refusals:
        return cls((directory or default_dir()) / (accounts_name(config) + ".refused.json"))

    def held(self, folder: str, uid: int, retries: int) -> Refusal | None:
        """The refusal of source message *uid* of *folder* that keeps it out of this run, if any."""
        for refusal in self.items.values():
            if refusal.folder == folder and refusal.uid == uid and rules.held(
                    refusal.attempts, refusal.accepted, retries):
                self.held_now.add(refusal.key)
                return refusal
        return None

    def record(self, failures: Iterable[Failure], tried: set[str], done: set[str]) -> None:
        """This run's refusals: each one counted once more (a new one starts at 1); the
        refusals of *tried* folders (planned by this run) that are no longer refused and
        were not held, in the folders of *done* (left complete), are forgotten: copied, or
        gone from the source."""
        seen = set()
        for f in failures:
            key = rules.key(f.folder, f.uid, f.message_id)
            seen.add(key)
            if key in self.held_now:
                continue
            old = self.items.get(key)
            self.items[key] = Refusal(f.folder, f.uid, f.message_id, f.subject, f.date, f.size_bytes, f.reason,
                                      attempts=(old.attempts + 1) if old else 1)
        for key, refusal in list(self.items.items()):
            if key not in seen and key not in self.held_now and not refusal.accepted and (
                    refusal.folder in tried and refusal.folder in done):
                del self.items[key]

    def accept(self, folder: str | None = None) -> list[Refusal]:
        """Mark the refusals known now (of *folder* alone when given) accepted; those newly accepted."""
        newly = [r for r in self.items.values() if not r.accepted and (folder is None or r.folder == folder)]
        for refusal in newly:
            refusal.accepted = True
        return newly

    def listed(self) -> list[Refusal]:
        return sorted(self.items.values(), key=lambda r: (r.folder, r.uid))

    def save(self) -> None:
        """Write atomically (temporary file ``0600``, then rename); an empty set removes the file."""
        if self.path is None:
            return
        statedir.prepare(self.path.parent)
        try:
            if not self.items:
                self.path.unlink(missing_ok=True)
                return
            statedir.replace_file(self.path, orjson.dumps({"version": VERSION,
                                                           "refused": [asdict(r) for r in self.listed()]}))
        except OSError as exc:
            raise StateError(f"{self.path}: cannot be written: {exc.strerror}; check the state directory "
                             "(--state-dir)") from None


def as_documents(items: Sequence[Refusal]) -> list[dict[str, Any]]:
    return [asdict(r) for r in items]
