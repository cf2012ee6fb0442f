"""The process pool that copies messages, and the copy loop of one worker.

Data flow::

    parent (sync.py)                         worker i (this module, one process each)
    ----------------                         ----------------------------------------
    plan -> WorkUnit --- tasks queue ----->  take unit, report Taken
                                             src: EXAMINE folder, UID FETCH bodies  (BODY.PEEK)
                                             dst: MULTIAPPEND bodies with flags + dates
    progress bars <---- results queue -----  UnitDone (copied, bytes, refused messages)
    requeue the unit of a dead worker <----  WorkerExit(error) when its connections broke

Only WorkUnits (UIDs) and small reports cross processes: message bodies go from the
source socket to the destination socket inside one worker and are never pickled or
written to disk.  A worker keeps its two connections for the whole run.
"""

from __future__ import annotations

import contextlib
import email.parser
import multiprocessing
import multiprocessing.context
import os
import queue
import signal
import traceback
from typing import Any

from fastsync.config import Account
from fastsync.errors import ConnectionLost, FastsyncError, FolderError, MessageError
from fastsync.limits import Limits
from fastsync.model import Failure, Taken, UnitDone, WorkerExit, WorkUnit
from fastsync.session import Fetched, Session

# forkserver: workers fork from a small server process that has imported this module (and
# imapclient) once, so a worker starts in milliseconds, yet inherits none of the parent's
# threads (the progress display) or sockets (the planner's connections) as plain fork would.
START_METHOD = "forkserver"

# How often an idle worker wakes to check for cancellation and for a dead parent.
POLL_S = 0.2

# System flags a client may set on APPEND (RFC 3501 section 2.3.2); \Recent is the server's.
SYSTEM_FLAGS = frozenset({"\\seen", "\\answered", "\\flagged", "\\deleted", "\\draft"})


def context() -> multiprocessing.context.BaseContext:
    ctx = multiprocessing.get_context(START_METHOD)
    if START_METHOD == "forkserver":
        ctx.set_forkserver_preload(["fastsync.pool"])  # type: ignore[attr-defined]
    return ctx


def keep_flags(flags: tuple[str, ...], keywords_allowed: bool) -> tuple[str, ...]:
    """Flags to set on the copy: never \\Recent; keywords only when the destination keeps them."""
    kept = []
    for flag in flags:
        lowered = flag.lower()
        if lowered == "\\recent":
            continue
        if lowered in SYSTEM_FLAGS or keywords_allowed:
            kept.append(flag)
    return tuple(kept)


def _message_id(body: bytes) -> str:
    header_end = body.find(b"\r\n\r\n")
    head = body[: header_end if header_end >= 0 else 4096]
    value = email.parser.BytesHeaderParser().parsebytes(head).get("Message-Id", "")
    return str(value).strip()


class Worker:
    """One worker's state: its connections, reused across units."""

    def __init__(self, index: int, src: Account, dst: Account, limits: Limits, results: Any) -> None:
        self.index = index
        self.src_account = src
        self.dst_account = dst
        self.limits = limits
        self.results = results
        self.src: Session | None = None
        self.dst: Session | None = None
        self.src_folder = ""
        self.created: set[str] = set()

    def connect(self) -> tuple[Session, Session]:
        if self.src is None:
            self.src = Session.open(
                self.src_account, slots=self.limits.src_slots, meter_down=self.limits.down, meter_up=None
            )
            self.src_folder = ""
        if self.dst is None:
            self.dst = Session.open(
                self.dst_account, slots=self.limits.dst_slots, meter_down=None, meter_up=self.limits.up
            )
        return self.src, self.dst

    def close(self) -> None:
        for session in (self.src, self.dst):
            if session is not None:
                session.close()
        self.src = self.dst = None

    def copy(self, unit: WorkUnit) -> UnitDone:
        src, dst = self.connect()
        folder = unit.pair.src
        if self.src_folder != folder:
            status = src.examine(folder)
            self.src_folder = folder
            if status.uidvalidity != unit.uidvalidity:
                return UnitDone(
                    self.index, unit.unit_id, folder, 0, 0,
                    error=f"{src.where}: folder {folder!r} changed UIDVALIDITY since planning; run again",
                )
        fetched = src.fetch_messages(unit.uids)
        vanished = len(unit.uids) - len(fetched)
        keywords = "\\*" in dst.permanent_flags or not dst.permanent_flags
        messages = [
            Fetched(m.uid, keep_flags(m.flags, keywords), m.internaldate, m.body) for m in fetched
        ]
        failures = self._append(dst, unit.pair.dst, folder, messages)
        copied = len(messages) - len(failures)
        size = sum(len(m.body) for m in messages) - sum(f.size_bytes for f in failures)
        return UnitDone(self.index, unit.unit_id, folder, copied, size, vanished, tuple(failures))

    def _append(self, dst: Session, dst_folder: str, src_folder: str, messages: list[Fetched]) -> list[Failure]:
        """Append all; when the batch is refused, find the refused messages one by one."""
        try:
            self._append_or_create(dst, dst_folder, messages)
            return []
        except MessageError as exc:
            if len(messages) == 1:
                m = messages[0]
                return [Failure(src_folder, m.uid, len(m.body), exc.message, _message_id(m.body))]
        failures = []
        for m in messages:
            try:
                self._append_or_create(dst, dst_folder, [m])
            except MessageError as exc:
                failures.append(Failure(src_folder, m.uid, len(m.body), exc.message, _message_id(m.body)))
        return failures

    def _append_or_create(self, dst: Session, dst_folder: str, messages: list[Fetched]) -> None:
        try:
            dst.append(dst_folder, messages)
        except MessageError as exc:
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
    tasks: Any,
    results: Any,
    stop: Any,
) -> None:
    """Process entry point: take units until the queue says stop, the run is cancelled or the parent dies."""
    # Ctrl-C reaches the whole process group; the parent decides, workers are told via `stop`.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()
    limits.adopt(index)
    worker = Worker(index, src, dst, limits, results)
    try:
        while not stop.is_set():
            try:
                unit = tasks.get(timeout=POLL_S)
            except queue.Empty:
                if os.getppid() != parent:
                    break
                continue
            if unit is None:
                break
            results.put(Taken(index, unit.unit_id))
            try:
                done = worker.copy(unit)
            except FolderError as exc:
                done = UnitDone(index, unit.unit_id, unit.pair.src, 0, 0, error=exc.message)
            except ConnectionLost:
                # The unit is not done; give it back and let the parent decide on a retry.
                worker.close()
                raise
            results.put(done)
    except FastsyncError as exc:
        results.put(WorkerExit(index, exc.message, int(exc.exit_code)))
    except Exception:
        results.put(WorkerExit(index, traceback.format_exc(limit=8), 1))
    finally:
        with contextlib.suppress(Exception):
            worker.close()
        results.close()
        results.join_thread()
