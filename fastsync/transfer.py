"""A worker's copy of one work unit: fetch from the source, append to the destination.

Engine layer, run inside a worker process (`pool.py` owns the processes).  Bodies go
from the source socket to the destination socket here and nowhere else: they are never
pickled, queued or written to disk.  Reply meanings come typed from the protocol edge
(`FolderMissing`, `DestinationFull`, `MessageError`); this module only decides what to do
about them: create the folder and try again, find the refused message of a batch, stop.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from fastsync import plan
from fastsync.config import Account
from fastsync.errors import ConnectError, DestinationFull, FolderError, FolderMissing, MalformedResponse, MessageError
from fastsync.imap.session import Session, SessionPair
from fastsync.ledger import Ledger
from fastsync.limits import Limits
from fastsync.model import Failure, Fetched, Retrying, UnitDone, WorkerSettings, WorkUnit
from fastsync.retry import with_retries

# A unit that meets data the parser cannot read this many times is copied message by
# message, so that one malformed message fails alone.
MALFORMED_BEFORE_ONE_BY_ONE = 2


def header_of(body: bytes) -> bytes:
    end = body.find(b"\r\n\r\n")
    return body[: end + 2] if end >= 0 else body[:8192]


def _message_id(body: bytes) -> str:
    return plan.parse_header_fields(header_of(body)).get("message-id", b"").decode("utf-8", "replace")


def _failure(folder: str, message: Fetched, reason: str) -> Failure:
    return Failure(folder, message.uid, len(message.body), reason, _message_id(message.body))


class Copier:
    """One worker's connections, reused across units, and how it copies a unit."""

    def __init__(
        self,
        index: int,
        src: Account,
        dst: Account,
        limits: Limits,
        settings: WorkerSettings,
        report: Callable[[object], None],
        stop: Any,
        ledger: Ledger | None = None,
    ) -> None:
        self.index = index
        self.settings = settings
        self.report = report
        self.stop = stop
        self.ledger = ledger or Ledger(None)
        self.sessions = SessionPair(src, dst, limits)
        self.src_folder = ""
        self.created: set[str] = set()
        self.rng = random.Random()
        self.full: DestinationFull | None = None
        # The unit in hand's copies: (source UID, destination UID), and the UIDVALIDITY.
        self.appended: list[tuple[int, int]] = []
        self.dst_uidvalidity = 0

    def connect(self) -> tuple[Session, Session]:
        if self.sessions.src is None:
            self.src_folder = ""
        return self.sessions.open()

    def close(self) -> None:
        self.sessions.close()
        self.ledger.close()

    def process(self, unit: WorkUnit) -> UnitDone:
        """Copy a unit, reconnecting with backoff when a connection breaks (`retry.with_retries`).

        After a break the outcome of an APPEND in flight is unknown, so every later attempt
        first looks on the destination for the unit's messages.  Throttling is not waited
        out here: the worker leaves, and the pool runs on with one connection per side fewer.
        """

        def attempt(failures: list[ConnectError]) -> UnitDone:
            malformed = sum(isinstance(f, MalformedResponse) for f in failures)
            return self.copy(unit, check=unit.attempt > 0 or bool(failures),
                             one_by_one=malformed >= MALFORMED_BEFORE_ONE_BY_ONE)

        def notify(exc: ConnectError, wait_s: float, number: int) -> None:
            self.report(Retrying(self.index, exc.message, wait_s, number))

        return with_retries(
            attempt, self.settings, reset=self.close, notify=notify, wait=self.stop.wait, rng=self.rng,
            wait_out_throttling=False,
        )

    def copy(self, unit: WorkUnit, check: bool, one_by_one: bool = False) -> UnitDone:
        src, dst = self.connect()
        folder = unit.pair.src
        if self.src_folder != folder:
            self.src_folder = ""
            status = src.examine(folder)
            self.src_folder = folder
            if status.uidvalidity != unit.uidvalidity:
                # RFC 3501 section 2.3.1.1: the UIDs of the plan no longer name these messages.
                return UnitDone(
                    self.index, unit.unit_id, folder, 0, 0,
                    error=f"{src.where}: folder {folder!r} changed UIDVALIDITY since planning", replan=True,
                )
        failures: list[Failure] = []
        fetched = self._fetch_one_by_one(unit, failures) if one_by_one else src.fetch_messages(unit.uids)
        # Messages expunged at the source since planning are simply gone: not an error.
        vanished = len(unit.uids) - len(fetched) - len(failures)
        messages = [Fetched(m.uid, plan.settable_flags(m.flags), m.internaldate, m.body) for m in fetched]
        skipped = 0
        if check:
            messages, skipped = self._already_there(dst, unit, messages)
        self.appended, self.dst_uidvalidity = [], 0
        try:
            refused, left = self._append(dst, unit.pair.dst, folder, messages)
        finally:
            # One transaction per unit, whatever happened: a copy the ledger does not know
            # would be copied again by the next run on a destination that rewrites Message-Id.
            self.ledger.record((folder, unit.uidvalidity), (unit.pair.dst, self.dst_uidvalidity), self.appended)
        failures += refused
        not_copied = {f.uid for f in failures} | {m.uid for m in messages[len(messages) - left :]}
        copied = [m for m in messages if m.uid not in not_copied]
        rewrites = self._rewrites(dst, unit, copied) if copied and unit.verify else False
        error = f"{left} messages of folder {folder!r} not copied: the destination is over quota" if left else ""
        return UnitDone(
            self.index, unit.unit_id, folder, len(copied) + skipped, sum(len(m.body) for m in copied),
            vanished, tuple(failures), error=error, skipped=skipped, appended=tuple(self.appended),
            dst_uidvalidity=self.dst_uidvalidity, rewrites=rewrites,
        )

    def _rewrites(self, dst: Session, unit: WorkUnit, copied: list[Fetched]) -> bool:
        """Whether the destination stored the copies under other identities (it rewrites
        Message-Id): checked on the first unit of each folder (`WorkUnit.verify`), on one
        copy where APPENDUID named it, else on all of the unit's (no match among the
        folder's new messages)."""
        try:
            dst.examine(unit.pair.dst)
        except FolderError:
            return False
        sent = {m.uid: _identity_of_body(m) for m in copied}
        by_dst = {d: s for s, d in self.appended if s in sent}
        if by_dst:
            dst_uid, src_uid = next(iter(by_dst.items()))
            stored = dst.identities_of([dst_uid], plan.identity)
            return dst_uid in stored and stored[dst_uid] != sent[src_uid]
        present = set(dst.identities_since(unit.dst_uidnext, plan.identity))
        return not present & set(sent.values())

    def _fetch_one_by_one(self, unit: WorkUnit, failures: list[Failure]) -> list[Fetched]:
        fetched = []
        for uid in unit.uids:
            src, _dst = self.connect()
            if self.src_folder != unit.pair.src:
                src.examine(unit.pair.src)
                self.src_folder = unit.pair.src
            try:
                fetched.extend(src.fetch_messages([uid]))
            except MalformedResponse as exc:
                failures.append(Failure(unit.pair.src, uid, 0, exc.message))
                self.close()
        return fetched

    def _already_there(self, dst: Session, unit: WorkUnit, messages: list[Fetched]) -> tuple[list[Fetched], int]:
        """Drop messages an earlier, interrupted attempt already appended.

        Copies made since planning have UIDs >= the folder's UIDNEXT at planning time, and
        no other unit carries these identities (plan.shard keeps them together), so every
        match there is one of ours.
        """
        try:
            dst.examine(unit.pair.dst)
        except FolderError:
            return messages, 0
        present = dst.identities_since(unit.dst_uidnext, plan.identity)
        keep = plan.match_by_identity(messages, present, _identity_of_body, str).missing
        return keep, len(messages) - len(keep)

    def _append(
        self, dst: Session, dst_folder: str, src_folder: str, messages: list[Fetched]
    ) -> tuple[list[Failure], int]:
        """Append all; when the batch is refused, find the refused messages one by one.

        Returns the refused messages and how many at the end were not tried because the
        destination is full (then `self.full` says why and the worker stops after this unit).
        A batch refused for quota is tried message by message too: part of it may fit.
        """
        if not messages:
            return [], 0
        try:
            self._append_or_create(dst, dst_folder, messages)
            return [], 0
        except MessageError as exc:
            if len(messages) == 1:
                return [_failure(src_folder, messages[0], exc.message)], 0
        except DestinationFull as exc:
            if len(messages) == 1:
                self.full = exc
                return [], 1
        failures = []
        for index, m in enumerate(messages):
            try:
                self._append_or_create(dst, dst_folder, [m])
            except MessageError as exc:
                failures.append(_failure(src_folder, m, exc.message))
            except DestinationFull as exc:
                # Even one more message does not fit: every further APPEND would be refused
                # too, so the run stops instead of failing each message.
                self.full = exc
                return failures, len(messages) - index
        return failures, 0

    def _append_or_create(self, dst: Session, dst_folder: str, messages: list[Fetched]) -> None:
        try:
            reported = dst.append(dst_folder, messages)
        except FolderMissing:
            # RFC 3501 section 6.3.11: [TRYCREATE] means the folder is missing; create it, retry once.
            if dst_folder in self.created:
                raise
            dst.create_folder(dst_folder)
            self.created.add(dst_folder)
            reported = dst.append(dst_folder, messages)
        if reported is not None:
            self.dst_uidvalidity, uids = reported
            self.appended.extend(zip((m.uid for m in messages), uids, strict=True))


def _identity_of_body(message: Fetched) -> str:
    return plan.identity(header_of(message.body), len(message.body))[0]
