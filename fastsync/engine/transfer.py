"""A worker's copy of one work unit: fetch from the source, append to the destination.

Engine layer, run inside a worker process (`pool.py` owns the processes).  Bodies go
from the source socket to the destination socket here and nowhere else: they are never
pickled, queued or written to disk.  Reply meanings come typed from the protocol edge
(`FolderMissing`, `DestinationFull`, `MessageError`); this module only decides what to do
about them: create the folder and try again, find the refused message of a batch, stop.

Two ways through a worker, by the unit's kind: a unit of small messages is fetched whole
and appended with one MULTIAPPEND (a round trip each way for hundreds of them); a unit
of large ones (`WorkUnit.streamed`, see `plan.shard`), one above `STREAM_ABOVE_BYTES`, or
one whose bodies turn out larger than `HOLD_BYTES` (by their literals' own lengths: the
server's RFC822.SIZE may be wrong), has its bodies streamed: each goes from the source
socket to the destination's as it arrives (`session.stream_messages`), all of the unit's
in one MULTIAPPEND, so a worker holds a chunk of a message, never the message (issue 17:
110 MB messages).
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from fastsync.rules import plan, refusals
from fastsync.records.errors import (
    ConnectError, DestinationFull, FolderError, FolderMissing, MalformedResponse, MessageError,
)
from fastsync.imap import replies
from fastsync.imap.pair import SessionPair
from fastsync.imap.folder import SelectedFolder
from fastsync.imap.literals import OverBudget
from fastsync.imap.session import Session, stream_messages
from fastsync.engine.ledger import Ledger
from fastsync.records.model import (
    Described, Failure, Fetched, Retrying, SourceDone, UnitDone, WorkerSettings, WorkUnit,
)
from fastsync.rules.retry import with_retries

# A unit that meets data the parser cannot read this many times is copied message by
# message, so that one malformed message fails alone.
MALFORMED_BEFORE_ONE_BY_ONE = 2

# Units above this many bytes are streamed even when planned as batched (the copies of one
# small message, kept together by `plan.shard`).  A batched unit costs a worker about
# twice its size in memory (the FETCH literal, then the APPEND's buffers).
STREAM_ABOVE_BYTES = 4 * 1024 * 1024

# What the bodies of a batched unit may hold in a worker, by their literals' own lengths:
# a unit is batched by RFC822.SIZE, which a server may get wrong (one announced 135 bytes
# and sent 300 MB); bodies beyond this are streamed instead (`SelectedFolder.fetch_messages`).
HOLD_BYTES = 2 * STREAM_ABOVE_BYTES

# A message with its body in hand, or one whose body is still on the source.
M = TypeVar("M", Fetched, Described)
R = TypeVar("R")


# What a unit's source read gave: its messages, or the budget its bodies went over.
Read = list[Any] | OverBudget


def _held(folder: SelectedFolder, uids: Sequence[int]) -> list[Fetched]:
    """The messages of a batched unit, their bodies in hand within `HOLD_BYTES`."""
    return folder.fetch_messages(uids, HOLD_BYTES)


def _held_or_over(folder: SelectedFolder, uids: Sequence[int]) -> list[Fetched] | OverBudget:
    """`_held`, read in an EXAMINE's round trip: bodies over the budget come back as the
    `OverBudget` (raised once the EXAMINE is complete), so that the unit is streamed."""
    try:
        return _held(folder, uids)
    except OverBudget as over:
        return over


def _unless_over(ahead: Read) -> list[Any]:
    """What `_held_or_over` read, its `OverBudget` raised now."""
    if isinstance(ahead, OverBudget):
        raise ahead
    return ahead


def header_of(body: bytes) -> bytes:
    end = body.find(b"\r\n\r\n")
    return body[: end + 2] if end >= 0 else body[:8192]


def _header(message: Fetched | Described) -> bytes:
    return header_of(message.body) if isinstance(message, Fetched) else message.header


def _size(message: Fetched | Described) -> int:
    return len(message.body) if isinstance(message, Fetched) else message.size_bytes


def _identity_of(message: Fetched | Described) -> str:
    return plan.identity(_header(message))[0]


def _failure(folder: str, message: Fetched | Described, reason: str) -> Failure:
    fields = plan.parse_header_fields(_header(message))
    message_id = fields.get("message-id", b"").decode("utf-8", "replace")
    return Failure(folder, message.uid, _size(message), reason, message_id,
                   refusals.header_text(fields.get("subject", b"")), refusals.header_text(fields.get("date", b"")))


def rewrites(dst: Session, unit: WorkUnit, copied: Sequence[Fetched | Described],
             appended: Sequence[tuple[int, int]], read_soon: dict[int, str] | None = None) -> bool:
    """Whether the destination stored the copies under other identities (it rewrites
    Message-Id): checked on the first unit of each folder (`WorkUnit.verify`), on one
    copy where APPENDUID named it (*appended*: source and destination UIDs), else on all
    of the unit's (no match among the folder's new messages).  *read_soon*: identities
    read in the APPEND's round trip (`Copier._read_copies_soon`); where no copy is among
    them (another came first, or a server ran the commands out of order), the folder is
    read again."""
    sent = {m.uid: _identity_of(m) for m in copied}
    by_dst = {d: s for s, d in appended if s in sent}
    dst_uid, src_uid = next(iter(by_dst.items()), (0, 0))
    if read_soon is not None and by_dst and dst_uid in read_soon:
        return read_soon[dst_uid] != sent[src_uid]
    if read_soon is not None and not by_dst and set(read_soon.values()) & set(sent.values()):
        return False
    # EXAMINE and the FETCH in one round trip (`Session.examine_reading`).
    try:
        box, stored = dst.examine_reading(unit.pair.dst, lambda box: (
            box.identities_of([dst_uid], plan.identity) if by_dst
            else box.identities_since(unit.dst_uidnext, plan.identity)))
    except FolderError:
        return False
    box.close()
    if by_dst:
        return dst_uid in stored and stored[dst_uid] != sent[src_uid]
    return not set(stored.values()) & set(sent.values())


def already_there(dst: Session, unit: WorkUnit, messages: list[M]) -> tuple[list[M], int]:
    """Drop messages an earlier, interrupted attempt already appended.

    Copies made since planning have UIDs >= the folder's UIDNEXT at planning time, and
    no other unit carries these identities (plan.shard keeps them together), so every
    match there is one of ours.  A unit planned without identities comes here settled:
    the other units are done, and their copies (``unit.others``) are left out.
    """
    try:
        box, since = dst.examine_reading(
            unit.pair.dst, lambda box: box.identities_since(unit.dst_uidnext, plan.identity))
    except FolderError:
        return messages, 0
    box.close()
    others = set(unit.others)
    present = [i for uid, i in since.items() if uid not in others]
    keep = plan.match_by_identity(messages, present, _identity_of, str).missing
    return keep, len(messages) - len(keep)


class Ahead:
    """The fetch of a worker's next unit, in a thread of its own on the source connection,
    while the unit in hand is appended on the destination's (`Copier.prefetch`).  The
    thread waits for the parent to send that unit until the worker is done with the unit
    in hand (`settle`); while it runs, it alone reads the worker's pipe."""

    def __init__(self) -> None:
        self.settling = threading.Event()
        self.running: tuple[threading.Thread, list[Any]] | None = None

    def start(self, fetch: Callable[[threading.Event], tuple[int, Any] | None]) -> None:
        """Run *fetch* (given the event `settle` sets), which returns (unit id, what it read)."""
        box: list[Any] = []
        self.settling.clear()

        def run() -> None:
            try:
                found = fetch(self.settling)
            except Exception as exc:
                found = (0, exc)
            if found is not None:
                box.append(found)

        thread = threading.Thread(target=run, name="fastsync-prefetch", daemon=True)
        thread.start()
        self.running = (thread, box)

    def settle(self) -> None:
        """Stop waiting for a unit to fetch; wait for a fetch under way to end."""
        if self.running is not None:
            self.settling.set()
            self.running[0].join()

    def take(self, unit_id: int | None) -> tuple[UnitDone | None, Read | None] | None:
        """What the fetch read for unit *unit_id* (`Copier._open_source`'s answer); None
        when it read nothing for that unit or failed: the unit then reads for itself, with
        its retries."""
        self.settle()
        running, self.running = self.running, None
        if running is None or not running[1]:
            return None
        fetched_id, found = running[1][0]
        if fetched_id != unit_id or isinstance(found, BaseException):
            return None
        answer: tuple[UnitDone | None, Read | None] = found
        return answer


class Copier:
    """One worker's connections, reused across units, and how it copies a unit."""

    def __init__(
        self,
        index: int,
        sessions: SessionPair,
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
        # Not open yet: `connect` opens both sides (again after a break).
        self.sessions = sessions
        # The source folder in hand, examined for an earlier unit of the same folder.
        self.src_folder: SelectedFolder | None = None
        self.created: set[str] = set()
        self.rng = random.Random()
        self.full: DestinationFull | None = None
        # The unit in hand's copies: (source UID, destination UID), and the UIDVALIDITY.
        self.appended: list[tuple[int, int]] = []
        self.dst_uidvalidity = 0
        # What was read for `rewrites` in the unit in hand's APPEND round trip (`_read_copies_soon`).
        self.read_soon: dict[int, str] | None = None
        # Keywords each destination folder refused on APPEND (lower case), read from the
        # ledger on the folder's first unit; those the unit in hand's copies went without.
        self.refused: dict[str, frozenset[str]] = {}
        self.dropped: set[str] = set()
        # The next unit the parent sent, if any yet (the worker's loop sets it), and the
        # fetch of it while the unit in hand is appended (`prefetch`).
        self.upcoming: Callable[[threading.Event], WorkUnit | None] = lambda _settling: None
        self.ahead = Ahead()

    def connect(self) -> tuple[Session, Session]:
        return self.sessions.open()

    def close(self) -> None:
        self.ahead.take(None)
        self.sessions.close()
        self.ledger.close()

    def process(self, unit: WorkUnit) -> UnitDone:
        """Copy a unit, reconnecting with backoff when a connection breaks (`retry.with_retries`).

        After a break the outcome of an APPEND in flight is unknown, so every later attempt
        first looks on the destination for the unit's messages.  Throttling is not waited
        out here: the worker leaves, and the pool runs on with one connection per side fewer.
        """

        def attempt(failures: list[ConnectError]) -> UnitDone:
            if failures and unit.blind and not unit.settled:
                # Another unit may carry a message identical to one of this unit's: which
                # copies are this unit's is told once the others are done (`WorkUnit.blind`).
                return UnitDone(self.index, unit.unit_id, unit.pair.src, 0, 0, held=True)
            malformed = sum(isinstance(f, MalformedResponse) for f in failures)
            return self.copy(unit, check=unit.attempt > 0 or bool(failures),
                             one_by_one=malformed >= MALFORMED_BEFORE_ONE_BY_ONE)

        def notify(exc: ConnectError, wait_s: float, number: int) -> None:
            self.report(Retrying(self.index, exc, wait_s, number))

        return with_retries(
            attempt, self.settings, reset=self.close, notify=notify, wait=self.stop.wait, rng=self.rng,
            wait_out_throttling=False,
        )

    def copy(self, unit: WorkUnit, check: bool, one_by_one: bool = False) -> UnitDone:
        self.read_soon = None
        prefetched = self.ahead.take(unit.unit_id)
        src, dst = self.connect()
        streamed = unit.streamed or unit.size_bytes > STREAM_ABOVE_BYTES
        read = SelectedFolder.describe_messages if streamed else _held_or_over
        if prefetched is not None and not one_by_one:
            changed, ahead = prefetched
        else:
            # A folder not in hand is examined and read in one round trip (`Session.examine_reading`).
            changed, ahead = self._open_source(src, unit, None if one_by_one else lambda box: read(box, unit.uids))
        if changed is not None:
            return changed
        if streamed:
            return self._copy_streamed(unit, check, one_by_one, _unless_over(ahead) if ahead is not None else None)
        failures: list[Failure] = []
        try:
            fetched = (self._one_by_one(unit, failures, _held) if one_by_one
                       else _unless_over(ahead) if ahead is not None else _held(self._source(unit), unit.uids))
        except OverBudget:  # larger than their RFC822.SIZE said: streamed, never held whole
            return self._copy_streamed(unit, check, one_by_one)
        if failures:
            # A message that failed alone dropped both connections (`_one_by_one`).
            _src, dst = self.connect()
        self.prefetch()
        # Messages expunged at the source since planning are simply gone: not an error.
        vanished = len(unit.uids) - len(fetched) - len(failures)
        self.appended, self.dst_uidvalidity, self.dropped = [], 0, set()
        messages = [self._keepable(unit.pair.dst, m) for m in fetched]
        skipped = 0
        if check:
            messages, skipped = already_there(dst, unit, messages)
        try:
            refused, left = self._append(dst, unit.pair.dst, unit.pair.src, messages,
                                         self._read_copies_soon(dst, unit) if unit.verify else None)
        finally:
            self._record(unit)
        failures += refused
        not_copied = {f.uid for f in failures} | {m.uid for m in messages[len(messages) - left :]}
        copied = [m for m in messages if m.uid not in not_copied]
        return self._done(dst, unit, copied, failures, left, vanished=vanished, skipped=skipped)

    def _open_source(
        self, src: Session, unit: WorkUnit, read: Callable[[SelectedFolder], Read] | None = None,
    ) -> tuple[UnitDone | None, Read | None]:
        """Examine the unit's source folder unless it is in hand under the UIDVALIDITY the
        unit was planned with (a unit planned again after a change is checked afresh); a
        report when its UIDVALIDITY changed since planning (RFC 3501 section 2.3.1.1: the
        plan's UIDs no longer name these messages).  With *read*, the folder is read in the
        EXAMINE's round trip; what it read comes back (None when the folder was in hand),
        and is dropped when the UIDVALIDITY changed."""
        folder = unit.pair.src
        if self._in_hand(folder) and self._source(unit).status.uidvalidity == unit.uidvalidity:
            return None, None
        self.src_folder = None
        if read is None:
            self.src_folder, ahead = src.examine(folder), None
        else:
            self.src_folder, ahead = src.examine_reading(folder, read)
        if self.src_folder.status.uidvalidity == unit.uidvalidity:
            return None, ahead
        return UnitDone(
            self.index, unit.unit_id, folder, 0, 0,
            error=f"{src.where}: folder {folder!r} changed UIDVALIDITY since planning", replan=True,
        ), None

    def prefetch(self) -> None:
        """Fetch the next unit the parent sends (`upcoming`) on the source while the unit in
        hand is appended to the destination, so that both links carry mail at once.  Only a
        unit of small messages, at most `STREAM_ABOVE_BYTES`: a worker then holds at most
        one such unit more than before (a large one is streamed, source to destination, as
        it comes)."""
        src = self.sessions.src
        if src is None or src.closed or self.stop.is_set():
            return

        def fetch(settling: threading.Event) -> tuple[int, Any] | None:
            unit = self.upcoming(settling)
            if unit is None or unit.streamed or unit.size_bytes > STREAM_ABOVE_BYTES or self.stop.is_set():
                return None
            try:
                changed, ahead = self._open_source(src, unit, lambda folder: _held_or_over(folder, unit.uids))
                if changed is None and ahead is None:
                    ahead = _held_or_over(self._source(unit), unit.uids)  # the folder was in hand
                return unit.unit_id, (changed, ahead)
            except ConnectError:
                src.close(quietly=True)  # out of step, perhaps: opened afresh for the unit
                raise

        self.ahead.start(fetch)

    def _in_hand(self, folder: str) -> bool:
        """Whether *folder* is the source folder in hand, still selected (a connection
        reopened since has nothing selected)."""
        return self.src_folder is not None and self.src_folder.valid and self.src_folder.name == folder

    def _source(self, unit: WorkUnit) -> SelectedFolder:
        """The unit's source folder, which `_open_source` has examined."""
        assert self.src_folder is not None and self.src_folder.name == unit.pair.src
        return self.src_folder

    def _record(self, unit: WorkUnit) -> None:
        # One transaction per unit, whatever happened: a copy the ledger does not know
        # would be copied again by the next run on a destination that rewrites Message-Id.
        self.ledger.record((unit.pair.src, unit.uidvalidity), (unit.pair.dst, self.dst_uidvalidity), self.appended)

    def _done(
        self, dst: Session, unit: WorkUnit, copied: Sequence[Fetched | Described], failures: list[Failure],
        left: int, *, vanished: int, skipped: int,
    ) -> UnitDone:
        rewritten = rewrites(dst, unit, copied, self.appended, self.read_soon) if copied and unit.verify else False
        error = f"{left} messages of folder {unit.pair.src!r} not copied: the destination is over quota" if left else ""
        return UnitDone(
            self.index, unit.unit_id, unit.pair.src, len(copied) + skipped, sum(_size(m) for m in copied),
            vanished, tuple(failures), error=error, skipped=skipped, appended=tuple(self.appended),
            dst_uidvalidity=self.dst_uidvalidity, rewrites=rewritten, dropped_keywords=tuple(sorted(self.dropped)),
        )

    def _copy_streamed(
        self, unit: WorkUnit, check: bool, one_by_one: bool, ahead: list[Described] | None = None,
    ) -> UnitDone:
        """Copy a unit of large messages, their bodies streamed (`session.stream_messages`):
        all in one MULTIAPPEND where the destination offers it, else, or when it refuses
        the batch, one APPEND each.

        The same rules as the batched path: a retry after a break first drops what an
        earlier attempt appended (`_already_there`, by the identities planning used), a
        refusal fails one message, a full destination stops the unit, and every APPENDUID
        goes to the ledger.
        """
        _src, dst = self.connect()
        failures: list[Failure] = []
        described = (self._one_by_one(unit, failures, SelectedFolder.describe_messages) if one_by_one
                     else ahead if ahead is not None else self._source(unit).describe_messages(unit.uids))
        if failures:
            # A message that failed alone dropped both connections (`_one_by_one`).
            _src, dst = self.connect()
        self.appended, self.dst_uidvalidity, self.dropped = [], 0, set()
        messages = [self._keepable(unit.pair.dst, m) for m in described]
        vanished = len(unit.uids) - len(messages) - len(failures)
        skipped = 0
        if check:
            messages, skipped = already_there(dst, unit, messages)
        copied: list[Described] = []
        left = 0
        try:
            if len(messages) > 1 and dst.capabilities.multiappend:
                with contextlib.suppress(MessageError, DestinationFull):
                    # Refused as a whole: one APPEND each below finds what (part may fit).
                    outcome = self._relay(unit, messages, last=True)
                    if isinstance(outcome, UnitDone):
                        return outcome
                    copied, vanished, messages = outcome, vanished + len(messages) - len(outcome), []
            for index, message in enumerate(messages):
                try:
                    last = index == len(messages) - 1
                    outcome = self._dropping_keywords(unit.pair.dst, message, lambda m: self._relay(unit, [m], last))
                    if isinstance(outcome, UnitDone):
                        return outcome
                    copied.extend(outcome)
                    vanished += 1 - len(outcome)
                except MessageError as exc:
                    failures.append(_failure(unit.pair.src, message, exc.message))
                except DestinationFull as exc:
                    self.full, left = exc, len(messages) - index
                    break
        finally:
            self._record(unit)
        # Only the source connection may have been dropped (a refusal before the literal).
        return self._done(self.sessions.dst or dst, unit, copied, failures, left, vanished=vanished, skipped=skipped)

    def _relay(self, unit: WorkUnit, messages: list[Described], last: bool = False) -> list[Described] | UnitDone:
        """Stream *messages* with one APPEND; the messages sent (not those gone from the
        source), or the report of a source folder whose UIDVALIDITY changed when it had to
        be reopened (the unit is planned again).  With the unit's *last* message, the next
        unit is fetched (`prefetch`) as soon as the source has sent that message, while the
        destination still receives it and answers: a unit of large messages then leaves
        no gap on the source's link after it."""
        for attempt in range(2):
            # The source again (after a refusal, or to create the folder): a fetch ahead started
            # by an earlier attempt ends first.
            self.ahead.settle()
            # A refusal before a literal leaves the source connection dropped: reopened here.
            src, dst = self.connect()
            changed, _ahead = self._open_source(src, unit)
            if changed is not None:
                return changed
            try:
                sent, reported = stream_messages(self._source(unit), dst, unit.pair.dst, messages,
                                                 (lambda: self._source_free(unit)) if last else None)
            except FolderMissing:
                # RFC 3501 section 6.3.11: [TRYCREATE] means the folder is missing; create it, retry once.
                if attempt or unit.pair.dst in self.created:
                    raise
                dst.create_folder(unit.pair.dst)
                self.created.add(unit.pair.dst)
                continue
            if reported is not None:
                self.dst_uidvalidity = reported[0]
                self.appended.extend(zip((m.uid for m in sent), reported[1], strict=True))
            return sent
        return []

    def _source_free(self, unit: WorkUnit) -> None:
        """The source has sent the streamed *unit*'s last body: the parent may send the next
        unit (it sends none ahead to a worker busy streaming), fetched from now on."""
        self.report(SourceDone(self.index, unit.unit_id))
        self.prefetch()

    def _one_by_one(
        self, unit: WorkUnit, failures: list[Failure], fetch: Callable[[SelectedFolder, Sequence[int]], list[M]]
    ) -> list[M]:
        """*fetch* each UID alone, so that a message the parser cannot read fails alone."""
        fetched: list[M] = []
        for uid in unit.uids:
            src, _dst = self.connect()
            if not self._in_hand(unit.pair.src):
                self.src_folder = src.examine(unit.pair.src)
            try:
                fetched.extend(fetch(self._source(unit), [uid]))
            except MalformedResponse as exc:
                failures.append(Failure(unit.pair.src, uid, 0, exc.message))
                self.close()
        return fetched

    def _append(
        self, dst: Session, dst_folder: str, src_folder: str, messages: list[Fetched],
        then: Callable[[], None] | None = None,
    ) -> tuple[list[Failure], int]:
        """Append all: in one MULTIAPPEND where offered, else, or when the batch is refused,
        one APPEND each, so that every message stored is known by its own OK (and
        APPENDUID) and never sent again, and only the refused ones fail.

        Returns the refused messages and how many at the end were not tried because the
        destination is full (then `self.full` says why and the worker stops after this unit).
        A batch refused for quota is tried message by message too: part of it may fit.
        *then* goes with the first APPEND (`Session.append`).
        """
        if not messages:
            return [], 0
        if len(messages) > 1 and dst.capabilities.multiappend:
            # RFC 3502: a refused MULTIAPPEND stored none of its messages.
            with contextlib.suppress(MessageError, DestinationFull):
                self._append_or_create(dst, dst_folder, messages, then)
                return [], 0
        failures = []
        for index, m in enumerate(messages):
            try:
                first = then if index == 0 else None
                self._dropping_keywords(
                    dst_folder, m, lambda one: self._append_or_create(dst, dst_folder, [one], first))
            except MessageError as exc:
                failures.append(_failure(src_folder, m, exc.message))
            except DestinationFull as exc:
                # Even one more message does not fit: every further APPEND would be refused
                # too, so the run stops instead of failing each message.
                self.full = exc
                return failures, len(messages) - index
        return failures, 0

    def _read_copies_soon(self, dst: Session, unit: WorkUnit) -> Callable[[], None]:
        """For the first unit of a folder (`WorkUnit.verify`): the reading for `rewrites`,
        to send in the APPEND's round trip (`Session.append`) instead of one more after it:
        the identity of the message at the folder's UIDNEXT of planning, which the unit's
        first copy gets unless another copy came first (then the folder is read after).
        Read once per unit: an APPEND tried again (a refused batch) does not repeat it."""

        def read() -> None:
            if self.read_soon is not None:
                return
            with contextlib.suppress(FolderError):
                box, self.read_soon = dst.examine_reading(
                    unit.pair.dst, lambda box: box.identities_of([unit.dst_uidnext], plan.identity))
                box.close()

        return read

    def _append_or_create(
        self, dst: Session, dst_folder: str, messages: list[Fetched], then: Callable[[], None] | None = None,
    ) -> None:
        try:
            reported = dst.append(dst_folder, messages, then)
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

    def _keepable(self, dst_folder: str, message: M) -> M:
        """The message with the flags a copy into *dst_folder* may carry: `plan.keepable_flags`
        without the keywords the folder refused before (the ledger's), which are noted for
        the report."""
        if dst_folder not in self.refused:
            self.refused[dst_folder] = self.ledger.refused_keywords(dst_folder)
        flags = plan.keepable_flags(message.flags, None, self.refused[dst_folder])
        self.dropped.update(f for f in message.flags if f.lower() in self.refused[dst_folder])
        return message if flags == message.flags else message.with_flags(flags)

    def _dropping_keywords(self, dst_folder: str, message: M, send: Callable[[M], R]) -> R:
        """*send* the message; when the destination refuses it for what may be its keywords
        (`replies.flags_may_be_why`), send it again without each keyword in turn, then
        without any (`plan.keyword_retries`): a refused APPEND stores nothing, so the first
        that succeeds is the one copy.  The keywords it went without are remembered for the
        folder (here and in the ledger, for the next units, check and --sync-flags) and
        named in the report.  When every try is refused, the first refusal is raised."""
        try:
            return send(message)
        except MessageError as exc:
            if not replies.flags_may_be_why(exc) or not plan.keywords(message.flags):
                raise
            refusal = exc
        for flags in plan.keyword_retries(message.flags):
            try:
                outcome = send(message.with_flags(flags))
            except MessageError as exc:
                if not replies.flags_may_be_why(exc):
                    raise
                continue
            dropped = [f for f in message.flags if f not in flags]
            self.dropped.update(dropped)
            self.refused[dst_folder] = self.refused.get(dst_folder, frozenset()) | {f.lower() for f in dropped}
            self.ledger.record_refused(dst_folder, dropped)
            return outcome
        raise refusal
