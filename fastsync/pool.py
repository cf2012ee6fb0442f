"""The process pool that copies messages, and the copy loop of one worker.

Data flow::

    parent (sync.py)                         worker i (this module, one process each)
    ----------------                         ----------------------------------------
    plan -> WorkUnit ---- own pipe ------->  one unit at a time
                                             src: EXAMINE folder, UID FETCH bodies  (BODY.PEEK)
                                             dst: MULTIAPPEND bodies with flags + dates
    progress bars <------ own pipe --------  UnitDone (copied, bytes, refused messages), Retrying
    requeue the unit of a dead worker <----  WorkerExit(error) when its connections broke

Each worker has a pipe of its own to the parent, not a queue shared by all: a worker
killed while writing to a shared queue would die holding the queue's lock and freeze
every other worker.

Only WorkUnits (UIDs) and small reports cross processes: message bodies go from the
source socket to the destination socket inside one worker and are never pickled or
written to disk.  A worker keeps its two connections for the whole run.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import os
import random
import signal
import threading
import traceback
from collections import Counter
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from fastsync import plan
from fastsync.config import Account
from fastsync.errors import (
    AuthError,
    ConnectError,
    ConnectionLost,
    DestinationFull,
    FastsyncError,
    FolderError,
    MalformedResponse,
    MessageError,
    Throttled,
    TLSError,
)
from fastsync.limits import Limits
from fastsync.model import Failure, Retrying, UnitDone, WorkerExit, WorkerSettings, WorkUnit
from fastsync.session import Fetched, Session, SessionPair, backoff_s

# forkserver: workers fork from a small server process that has imported this module (and
# imapclient) once, so a worker starts in milliseconds, yet inherits none of the parent's
# threads (the progress display) or sockets (the planner's connections) as plain fork would.
START_METHOD = "forkserver"

# How often an idle worker wakes to check for cancellation and for a dead parent.
POLL_S = 0.2


def context() -> multiprocessing.context.BaseContext:
    ctx = multiprocessing.get_context(START_METHOD)
    if START_METHOD == "forkserver":
        ctx.set_forkserver_preload(["fastsync.pool"])
    return ctx


def warm_up() -> None:
    """Start the fork server now, in the background, so its interpreter start and imports
    (about 0.15 s) overlap planning instead of delaying the first worker."""
    if START_METHOD == "forkserver":
        threading.Thread(target=multiprocessing.forkserver.ensure_running, daemon=True).start()


def keep_flags(flags: tuple[str, ...]) -> tuple[str, ...]:
    """Flags to set on the copy: all but \\Recent, which only a server may set (RFC 3501 section 2.3.2).

    Keywords travel too; a server that cannot store them ignores them on APPEND.
    """
    return tuple(f for f in flags if f.lower() != "\\recent")


def header_of(body: bytes) -> bytes:
    end = body.find(b"\r\n\r\n")
    return body[: end + 2] if end >= 0 else body[:8192]


def _message_id(body: bytes) -> str:
    return plan.parse_header_fields(header_of(body)).get("message-id", b"").decode("utf-8", "replace")


class Worker:
    """One worker's state: its connections, reused across units, and its retry policy."""

    def __init__(
        self,
        index: int,
        src: Account,
        dst: Account,
        limits: Limits,
        settings: WorkerSettings,
        report: Callable[[object], None],
        stop: Any,
    ) -> None:
        self.index = index
        self.settings = settings
        self.report = report
        self.stop = stop
        self.sessions = SessionPair(src, dst, limits)
        self.src_folder = ""
        self.created: set[str] = set()
        self.rng = random.Random()
        self.full: DestinationFull | None = None

    def connect(self) -> tuple[Session, Session]:
        if self.sessions.src is None:
            self.src_folder = ""
        return self.sessions.open()

    def close(self) -> None:
        self.sessions.close()

    def process(self, unit: WorkUnit) -> UnitDone:
        """Copy a unit, reconnecting with backoff when a connection breaks.

        After a break the outcome of an APPEND in flight is unknown, so every later attempt
        first looks on the destination for the unit's messages (``check``).  A unit that
        twice meets data the parser cannot read is copied message by message, so that one
        malformed message fails alone.
        """
        check = unit.attempt > 0
        malformed = 0
        attempt = 0
        while True:
            try:
                return self.copy(unit, check, one_by_one=malformed >= 2)
            except (ConnectError, ConnectionLost) as exc:
                if not exc.retryable or isinstance(exc, Throttled):
                    raise
                self.close()
                attempt += 1
                malformed += isinstance(exc, MalformedResponse)
                if attempt > self.settings.retries:
                    raise
                wait_s = backoff_s(attempt, self.settings, self.rng)
                self.report(Retrying(self.index, exc.message, wait_s, attempt))
                if self.stop.wait(wait_s):
                    raise
                check = True

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
        if one_by_one:
            fetched = self._fetch_one_by_one(unit, failures)
        else:
            fetched = src.fetch_messages(unit.uids)
        # Messages expunged at the source since planning are simply gone: not an error.
        vanished = len(unit.uids) - len(fetched) - len(failures)
        messages = [Fetched(m.uid, keep_flags(m.flags), m.internaldate, m.body) for m in fetched]
        skipped = 0
        if check:
            messages, skipped = self._already_there(dst, unit, messages)
        refused, left = self._append(dst, unit.pair.dst, folder, messages)
        failures += refused
        not_copied = {f.uid for f in failures} | {m.uid for m in messages[len(messages) - left :]}
        copied = [m for m in messages if m.uid not in not_copied]
        error = f"{left} messages of folder {folder!r} not copied: the destination is over quota" if left else ""
        return UnitDone(
            self.index, unit.unit_id, folder, len(copied) + skipped, sum(len(m.body) for m in copied),
            vanished, tuple(failures), error=error, skipped=skipped,
        )

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
        present = Counter(dst.identities_since(unit.dst_uidnext, plan.identity))
        keep = []
        for m in messages:
            key = plan.identity(header_of(m.body), len(m.body))[0]
            if present[key] > 0:
                present[key] -= 1
            else:
                keep.append(m)
        return keep, len(messages) - len(keep)

    def _append(
        self, dst: Session, dst_folder: str, src_folder: str, messages: list[Fetched]
    ) -> tuple[list[Failure], int]:
        """Append all; when the batch is refused, find the refused messages one by one.

        Returns the refused messages and how many at the end were not tried because the
        destination is full (then `self.full` says why and the worker stops after this unit).
        """
        if not messages:
            return [], 0
        try:
            self._append_or_create(dst, dst_folder, messages)
            return [], 0
        except MessageError as exc:
            if len(messages) == 1:
                m = messages[0]
                return [Failure(src_folder, m.uid, len(m.body), exc.message, _message_id(m.body))], 0
        except DestinationFull as exc:
            self.full = exc
            return [], len(messages)
        failures = []
        for index, m in enumerate(messages):
            try:
                self._append_or_create(dst, dst_folder, [m])
            except MessageError as exc:
                failures.append(Failure(src_folder, m.uid, len(m.body), exc.message, _message_id(m.body)))
            except DestinationFull as exc:
                self.full = exc
                return failures, len(messages) - index
        return failures, 0

    def _append_or_create(self, dst: Session, dst_folder: str, messages: list[Fetched]) -> None:
        try:
            dst.append(dst_folder, messages)
        except MessageError as exc:
            if exc.code == "OVERQUOTA" and len(messages) == 1:
                # Even one more message does not fit: every further APPEND would be refused
                # too, so the run stops instead of failing each message.  (A refused batch
                # is retried message by message first: part of it may fit.)
                raise DestinationFull(
                    f"{exc.message.rstrip('. ')}; free space on the destination and run again"
                ) from None
            # RFC 3501 section 6.3.11: [TRYCREATE] means the folder is missing; create it, retry once.
            if exc.code != "TRYCREATE" or dst_folder in self.created:
                raise
            dst.create_folder(dst_folder)
            self.created.add(dst_folder)
            dst.append(dst_folder, messages)


def worker_main(
    index: int,
    src: Account,
    dst: Account,
    limits: Limits,
    settings: WorkerSettings,
    channel: Connection,
    stop: Any,
) -> None:
    """Process entry point: copy the units the parent sends until it sends None, the run is
    cancelled or the parent is gone."""
    # Ctrl-C reaches the whole process group; the parent decides, workers are told via `stop`.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()
    limits.adopt(index)
    worker = Worker(index, src, dst, limits, settings, channel.send, stop)
    try:
        while not stop.is_set():
            if not channel.poll(POLL_S):
                if os.getppid() != parent:
                    break
                continue
            unit = channel.recv()
            if unit is None:
                break
            try:
                done = worker.process(unit)
            except FolderError as exc:
                done = UnitDone(index, unit.unit_id, unit.pair.src, 0, 0, error=exc.message)
            channel.send(done)
            if worker.full is not None:
                raise worker.full
    except (EOFError, BrokenPipeError):
        pass  # the parent is gone
    except Throttled as exc:
        worker.close()
        # Wait as the server asked before giving the unit back, then leave: the parent
        # runs on with one connection per side fewer.
        stop.wait(exc.wait_s or backoff_s(1, settings, worker.rng))
        _last_word(channel, WorkerExit(index, exc.message, int(exc.exit_code), "throttled"))
    except DestinationFull as exc:
        _last_word(channel, WorkerExit(index, exc.message, int(exc.exit_code), "full"))
    except (AuthError, TLSError) as exc:
        _last_word(channel, WorkerExit(index, exc.message, int(exc.exit_code), "fatal"))
    except FastsyncError as exc:
        _last_word(channel, WorkerExit(index, exc.message, int(exc.exit_code), "lost"))
    except Exception:
        _last_word(channel, WorkerExit(index, traceback.format_exc(limit=8), 1, "lost"))
    finally:
        with contextlib.suppress(Exception):
            worker.close()
        channel.close()


def _last_word(channel: Connection, exit: WorkerExit) -> None:
    with contextlib.suppress(OSError):
        channel.send(exit)
