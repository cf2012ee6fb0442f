"""The process pool that copies work units: the parent's side (the workers' loop: `worker.py`).

Engine layer.  Data flow::

    parent (Coordinator, this module)        worker i (worker.worker_main, one process each)
    ---------------------------------        ----------------------------------------
    PoolSetup ------ process start ------->  SessionPair, Copier, Ledger (worker_main)
    plan -> WorkUnit ---- own pipe ------->  one unit in hand, one ahead (transfer.Copier):
                                             src: EXAMINE folder + UID FETCH bodies (BODY.PEEK)
                                             dst: MULTIAPPEND bodies with flags + dates,
                                                  while src fetches the unit ahead
    progress, summary <-- own pipe --------  UnitDone (copied, bytes, refused messages), Retrying
    route on the exception's type <-------  WorkerExit(the exception) when its connections broke

A sync pass calls `copy_units(PoolSetup, CopyJob, ...)`: the setup is what every worker
starts with (both accounts, the caps, the retry rule, the lock, the ledger's file), the
job what this call copies.  Each worker has a pipe of its own to the parent, not a queue
shared by all: a worker killed while writing to a shared queue would die holding the
queue's lock and freeze every other worker.  Only the setup (once, as a worker starts),
WorkUnits (UIDs) and the small reports of `fastsync.records.model` cross processes, a
worker's last word carrying the exception that ended it (a defect's as traceback text);
message bodies stay inside one worker.  A worker keeps its two connections for the whole
run; one initializer (`worker_main`) sets it up.

Stopping (Ctrl-C, SIGTERM): the parent sets `stop`, workers finish the unit in hand and
report it, and those still copying after `CANCEL_GRACE_S` are killed (`shutdown`).  The
destination's run lock travels to every worker, so it is held while any of them lives.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.context
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from fastsync.records.errors import (
    AuthError, Cancelled, DestinationFull, OverLimit, Throttled, TLSError, TooManyConnections, describe,
)
from fastsync.records.events import event
from fastsync.rules.limits import Limits, StopFlag
from fastsync.records.model import Retrying, SourceDone, UnitDone, WorkerExit, WorkUnit
from fastsync.engine import interrupts
from fastsync.engine.processes import context
from fastsync.engine.transfer import STREAM_ABOVE_BYTES
from fastsync.engine.unitqueue import Feed, Pending
from fastsync.engine.worker import PoolSetup, worker_main
if TYPE_CHECKING:  # annotations only: the fork server, so every worker, need not import them
    from fastsync.engine.budgets import Gate
    from fastsync.records.results import Reporter, Summary

# A unit whose worker died is given to another worker this many times before the run
# reports it as not copied (a unit that kills every worker must not loop forever).
UNIT_ATTEMPTS = 3

# Units a worker holds beyond the one in hand once every worker has one: it fetches the
# next from the source while it appends the one in hand (`transfer.Copier.prefetch`).
UNITS_AHEAD = 1

# Seconds to wait for workers to log out after the queue is drained.
JOIN_TIMEOUT_S = 10.0

# Seconds a cancelled run (Ctrl-C, SIGTERM) waits for the units in hand before it kills
# the workers still copying: short enough for `docker stop` (SIGKILL after 10 s).  A
# worker killed mid-APPEND leaves nothing half-written (an APPEND or MULTIAPPEND lands
# whole or not at all, RFC 3502 section 3) and the next run copies what is missing.
CANCEL_GRACE_S = 5.0


@dataclass(frozen=True)
class CopyJob:
    """One `copy_units` call: the units, each source folder's planned (messages, bytes)
    for the progress display, the pool's size, --max-transfer (0: no limit) and the budgets."""

    units: Sequence[WorkUnit]
    folder_totals: Mapping[str, tuple[int, int]]
    workers: int
    max_transfer_bytes: int = 0
    gate: Gate | None = None
    # Units planned while the pool copies (None: *units* are all): *folder_totals* grows
    # as they come, and no unit comes once the feed is done.
    feed: Feed | None = None


def copy_units(setup: PoolSetup, job: CopyJob, reporter: Reporter, summary: Summary,
               on_unit: Callable[[WorkUnit, UnitDone], None] | None = None, standby: Standby | None = None) -> set[str]:
    """Copy *job*'s units with a pool of its workers, counting into *summary*; returns the
    source folders to plan again (their UIDVALIDITY changed).  *on_unit* hears of every
    finished unit (the ledger records its copies).  *standby*'s workers, started while
    planning, are taken first.  With `CopyJob.max_transfer_bytes` no unit is started once
    that many bytes are copied or on their way.

    The setup's lock (the destination's) goes to every worker, so that it stays held
    until the last process that may still append is gone.  Ctrl-C, or SIGTERM (which
    `cli.main` turns into `Terminated`), stops the run as the workers finish the unit in
    hand; what they copied is counted, then `Cancelled` is raised again for the caller.
    """
    if not job.units and job.feed is None:
        return set()
    workers = job.workers if job.feed is not None else min(job.workers, len(job.units))
    coordinator = Coordinator(setup, job.units, workers, reporter, summary, standby)
    coordinator.on_unit, coordinator.feed = on_unit, job.feed
    coordinator.max_transfer_bytes, coordinator.gate = job.max_transfer_bytes, job.gate
    with coordinator.signals:
        _copy(coordinator, job, reporter, summary)
    return coordinator.replan


def _copy(coordinator: Coordinator, job: CopyJob, reporter: Reporter, summary: Summary) -> None:
    """`copy_units`' copy, and what its summary says once it is over (or stopped)."""
    folder_totals = job.folder_totals
    try:
        try:
            coordinator.run(folder_totals)
        except (KeyboardInterrupt, Cancelled) as exc:
            stopped = exc if isinstance(exc, Cancelled) else Cancelled(describe(exc))
            if job.feed is not None:
                job.feed.halt()
            coordinator.stop.set()
            reporter.stop_copy()
            # A second Ctrl-C here cuts the grace short; the finally clause still stops every worker.
            coordinator.drain(folder_totals, CANCEL_GRACE_S)
            raise stopped from None
        coordinator.drain(folder_totals, JOIN_TIMEOUT_S)
    finally:
        coordinator.shutdown(folder_totals)
        if job.feed is not None:
            # Stopped early: what the planner made without a worker to copy it is counted below.
            coordinator.accept(job.feed.finish())
        for side in coordinator.refused_sides:  # the planner's and the most workers that copied at once
            summary.ceilings[side] = coordinator.peak + 1
            event("connection ceiling", side=side, level=logging.WARNING, connections=coordinator.peak + 1)
        if coordinator.units:
            summary.incomplete.update(u.pair.src for u in coordinator.units.values())
            left = sum(len(u.uids) for u in coordinator.units.values())
            if job.gate is not None and job.gate.ended:
                summary.transfer_limited = True
                summary.errors.append(job.gate.spent_error(left))
            elif coordinator.at_limit():
                summary.transfer_limited = True
                summary.errors.append(
                    f"stopped at the transfer limit ({summary.copied_bytes / 1e6:,.1f} MB copied, --max-transfer "
                    f"{job.max_transfer_bytes / 1e6:,.1f} MB): {left} messages not copied yet; run again tomorrow "
                    "(or once the provider's quota allows) to go on"
                )
            else:
                summary.errors.append(f"{left} messages not copied because the run stopped early; run again")


def spawn(
    ctx: multiprocessing.context.BaseContext, index: int, setup: PoolSetup, stop: StopFlag
) -> tuple[Any, Connection]:
    """Start worker *index*; its process and the parent's end of its pipe."""
    channel, child_channel = ctx.Pipe()
    process = ctx.Process(  # type: ignore[attr-defined]
        target=worker_main, args=(index, setup, child_channel, stop), name=f"fastsync-worker-{index}", daemon=True,
    )
    process.start()
    child_channel.close()
    return process, channel


class Standby:
    """Workers started while the run still plans, so that their start and logins overlap
    planning instead of following it; `copy_units` hands them their units, and `close`
    stops those it did not take (a plan with less to copy than the folder counts said).
    They start in a thread: the first waits for the fork server (`warm_up`)."""

    def __init__(self, setup: PoolSetup, count: int) -> None:
        self.ctx = context()
        self.stop = StopFlag(self.ctx)
        self.count, self.taken = count, 0
        self.workers: dict[int, tuple[Any, Connection]] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._start, args=(setup, count), daemon=True, name="fastsync-standby")
        self._thread.start()

    def _start(self, setup: PoolSetup, count: int) -> None:
        for index in range(count):
            worker = spawn(self.ctx, index, setup, self.stop)
            with self._lock:
                self.workers[index] = worker

    def take(self, wait: bool = True) -> dict[int, tuple[Any, Connection]]:
        """The workers started and not taken yet: all of them once every one is started,
        or (*wait* False) those started so far, while the others still start."""
        if wait:
            self._thread.join()
        with self._lock:
            workers, self.workers = self.workers, {}
            self.taken += len(workers)
        return workers

    def starting(self) -> int:
        """How many workers `take` has still to give: started, or starting."""
        with self._lock:
            return self.count - self.taken if self._thread.is_alive() else len(self.workers)

    def close(self, limits: Limits) -> None:
        """Stop the workers not taken: told to log out, killed after `JOIN_TIMEOUT_S`."""
        workers = self.take()
        for _process, channel in workers.values():
            with contextlib.suppress(OSError):
                channel.send(None)
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        for index, (process, channel) in workers.items():
            with contextlib.suppress(EOFError, OSError):
                # EOF once the worker is gone.
                if not multiprocessing.connection.wait([channel], max(0.0, deadline - time.monotonic())):
                    os.kill(process.pid, signal.SIGKILL)
            channel.close()
            process.join(1.0)
            limits.release_all(index)


def _fetches_ahead(unit: WorkUnit | None, source_done: bool) -> bool:
    """Whether the worker holding *unit* fetches its next unit while the destination takes
    this one: a unit of small messages, or a streamed one whose source part is done
    (*source_done*, `SourceDone`); one still streaming from the source would keep the next
    unit waiting while other workers may be idle."""
    if unit is None:
        return False
    return source_done or (not unit.streamed and unit.size_bytes <= STREAM_ABOVE_BYTES)


class Coordinator:
    """Feeds units to the workers, collects their reports, replaces workers that die."""

    def __init__(self, setup: PoolSetup, units: Sequence[WorkUnit], workers: int, reporter: Reporter,
                 summary: Summary, standby: Standby | None = None) -> None:
        self.ctx = standby.ctx if standby is not None else context()
        self.setup = setup
        self.limits = setup.limits
        self.settings = setup.settings
        self.workers = workers
        self.reporter = reporter
        self.summary = summary
        self.on_unit: Callable[[WorkUnit, UnitDone], None] | None = None
        self.units = {u.unit_id: u for u in units}
        self.attempts = dict.fromkeys(self.units, 0)
        # Units not yet given to a worker; each worker holds one, and `UNITS_AHEAD` more once
        # every worker holds one (`taken`, in the order sent).  The largest first (a large message
        # holds its worker longest), so that none starts last while the others have nothing to do.
        self.pending = Pending(units)
        self.signals = interrupts.Holding()  # Ctrl-C, SIGTERM wait while a report is counted
        self.feed: Feed | None = None  # units planned while copying (`CopyJob.feed`)
        self.stop = standby.stop if standby is not None else StopFlag(self.ctx)
        self.processes: dict[int, Any] = {}
        self.channels: dict[int, Connection] = {}
        self.standby = standby  # its workers taken as each starts (`adopt`), the first copying while the last starts
        self.adopt(wait=False, dispatch=False)
        self.next_index = standby.count if standby is not None else 0
        self.taken: dict[int, list[int]] = {}
        self.sources_done: set[tuple[int, int]] = set()  # (worker, streamed unit) whose source part is done
        # Workers that copied a unit (logged in), the most at once, sides refusing logins (`Summary.ceilings`).
        self.working, self.peak, self.refused_sides = set[int](), 0, set[str]()
        self.exits: dict[int, WorkerExit] = {}
        self.replan: set[str] = set()
        # Workers that stopped since the last unit finished: when every restart fails (server
        # down, account locked) the run ends instead of starting workers forever.  --max-transfer
        # (0: none): bytes after which no unit is started (`at_limit`); the budgets per account
        # and window (`budgets.Gate`), None when there are none.
        self.exits_in_a_row, self.max_transfer_bytes = 0, 0
        self.gate: Gate | None = None
        # Units planned without identities whose APPEND may have landed, by destination
        # folder, waiting for the folder's other units (`WorkUnit.blind`); and the UIDs the
        # copies into each destination folder received, which those units leave out.
        self.held: dict[str, list[WorkUnit]] = {}
        self.copies_into: dict[str, list[int]] = {}
        # Destination folders that received copies whose UIDs were not reported.
        self.unreported_into: set[str] = set()

    def at_limit(self) -> bool:
        """Whether --max-transfer stops new units: bytes copied plus those of the units in
        workers' hands reach it, so the run ends at most one unit past the limit."""
        return bool(self.max_transfer_bytes) and self.summary.copied_bytes + self.in_hand() >= self.max_transfer_bytes

    def in_hand(self) -> int:
        """Bytes of the units in workers' hands or sent ahead to them."""
        return sum(self.units[u].size_bytes for u in self.held_ids() if u in self.units)

    def start_worker(self) -> None:
        index = self.next_index
        self.next_index += 1
        self.processes[index], self.channels[index] = spawn(self.ctx, index, self.setup, self.stop)
        self.dispatch(index)

    def held_ids(self) -> list[int]:
        """The units in workers' hands or sent ahead to them."""
        return [unit_id for ids in self.taken.values() for unit_id in ids]

    def dispatch(self, index: int) -> None:
        """Give a worker the next unit, if any (it waits otherwise: a unit may come back),
        and one more to fetch ahead once every worker holds one; none past a budget."""
        held = self.taken.setdefault(index, [])
        while self.pending and index in self.channels and not self.at_limit() and (
            not held or (len(held) <= UNITS_AHEAD and self._ahead_for(index, held[0]))
        ) and (self.gate is None or self.gate.open(self.pending[0].size_bytes, self.in_hand())):
            unit = self.pending.popleft()
            try:
                self.channels[index].send(unit)
            except OSError:
                self.pending.appendleft(unit)  # the worker is gone; reap() will notice
                return
            held.append(unit.unit_id)

    def _ahead_for(self, index: int, unit_id: int) -> bool:
        """Whether a unit may wait with worker *index*, which holds *unit_id*: every worker
        holds one, and that worker fetches its next unit meanwhile (`_fetches_ahead`)."""
        return (_fetches_ahead(self.units.get(unit_id), (index, unit_id) in self.sources_done)
                and len(self.channels) >= self.workers and all(self.taken.get(i) for i in self.channels))

    def accept(self, units: Sequence[WorkUnit]) -> None:
        """Take units planned while copying (`Feed.take`), in the pool's order."""
        self.units.update((u.unit_id, u) for u in units)
        self.attempts.update((u.unit_id, 0) for u in units)
        self.pending.add(units)

    def adopt(self, wait: bool, dispatch: bool = True) -> None:
        """Take the standby workers started since (all, with *wait*), each given a unit,
        and every worker one ahead once all hold one (`dispatch`)."""
        taken = self.standby.take(wait) if self.standby is not None else {}
        for index, (process, channel) in taken.items():
            self.processes[index], self.channels[index] = process, channel
        for index in [*self.channels, *self.channels] if taken and dispatch else ():
            self.dispatch(index)

    def starting(self) -> int:
        return self.standby.starting() if self.standby is not None else 0

    def start_workers(self) -> None:
        """Start the workers the units known want (no more than the pool's), each given one
        unit; then one more each once every worker holds one."""
        for index in list(self.channels):
            self.dispatch(index)
        for _ in range(min(self.workers, len(self.units)) - len(self.processes) - self.starting()):
            self.start_worker()
        for index in list(self.channels):
            self.dispatch(index)  # every worker holds one: one ahead each

    def fed(self) -> bool:
        """Take what the feed planned since (see `CopyJob.feed`); False once no unit will come."""
        if self.feed is not None and self.feed.waitable.poll():
            self.accept(self.feed.take())
            self.start_workers()
        return self.feed is not None and not self.feed.done()

    def run(self, folder_totals: Mapping[str, tuple[int, int]]) -> None:
        if self.at_limit():
            return
        self.start_workers()
        while self.fed() or self.units:
            self.adopt(wait=False)
            if not self.held_ids() and self.at_limit():
                # The transfer limit is reached and every unit in hand is done.
                return self.dismiss()
            if self.gate is not None and not self.held_ids() and self.pending:
                # A budget may keep the next unit waiting (parked), or end the copy.
                if not self.gate.wait(self.pending[0].size_bytes):
                    return self.dismiss()
                for index in list(self.channels):
                    self.dispatch(index)
            # Short waits while standby workers start, to give each a unit as it comes.
            wait_s = 0.02 if self.starting() else 0.5
            ready = wait_for_reports(self.channels, wait_s, self.feed.waitable if self.feed is not None else None)
            # A report read is counted before Ctrl-C or SIGTERM may end the loop (`interrupts`).
            with self.signals.held():
                if not self.hear(receive(self.channels, ready), folder_totals):
                    return self.dismiss()
            if not self.reap():
                return self.dismiss()
        self.dismiss()

    def hear(self, messages: list[object], folder_totals: Mapping[str, tuple[int, int]], stopping: bool = False) -> bool:
        """Count and route the workers' reports, each given a next unit unless the run is
        *stopping*; False when one of them ends the run (those after it are still counted)."""
        going = not stopping
        for message in messages:
            if isinstance(message, UnitDone):
                self.sources_done.discard((message.worker, message.unit_id))
                self.finished(message, folder_totals)
                if going:
                    self.dispatch(message.worker)
            elif isinstance(message, SourceDone) and going:
                self.sources_done.add((message.worker, message.unit_id))
                self.dispatch(message.worker)
            elif isinstance(message, Retrying):
                self.log_worker("retry", message.worker, message.error.side, message.error.message,
                                logging.WARNING, wait_s=round(message.wait_s, 3), attempt=message.attempt)
                self.reporter.warn(
                    f"{message.error.message}; retrying in {message.wait_s:.1f} s "
                    f"({message.attempt}/{self.settings.retries})"
                )
            elif isinstance(message, WorkerExit):
                self.exits[message.worker] = message
                going = self.worker_stopped(message) and going
        return going or stopping

    def dismiss(self) -> None:
        """Tell every worker to stop after the unit in hand."""
        self.adopt(wait=True, dispatch=False)
        for channel in self.channels.values():
            with contextlib.suppress(OSError):
                channel.send(None)

    def drain(self, folder_totals: Mapping[str, tuple[int, int]], timeout_s: float) -> None:
        """Let workers finish the unit in hand (they stop at the next one) and count it.

        After the run stopped early (destination full, login refused) a worker may still
        be appending; what it copies must show in the summary.  A worker's last word can
        come after its last unit (a full destination is said once the unit is counted), so
        it is heard here too.
        """
        deadline = time.monotonic() + timeout_s
        while self.channels and time.monotonic() < deadline:
            ready = wait_for_reports(self.channels, timeout_s=0.1)
            with self.signals.held():
                self.hear(receive(self.channels, ready), folder_totals, stopping=True)

    def log_worker(self, name: str, worker: int, side: str, text: str, level: int, **fields: Any) -> None:
        """Log a worker's report with the side of its error and the unit it held."""
        unit = self.units.get(next(iter(self.taken.get(worker, [])), -1))
        event(
            name, side=side, folder=unit.pair.src if unit else "", level=level, worker=worker, message=text,
            uids=list(unit.uids) if unit else [], **fields,
        )

    def worker_stopped(self, exit: WorkerExit) -> bool:
        """React to a worker's last report, by the type of the error that ended it; False
        when the run must stop.  Any other error (a connection lost after every retry, a
        defect) ends only this worker: `reap` gives its unit to another."""
        text = exit.message.strip()
        self.log_worker("worker exit", exit.worker, exit.side, text, logging.WARNING,
                        error=type(exit.error).__name__ if exit.error is not None else "defect",
                        exit_code=int(exit.exit_code))
        match exit.error:
            case AuthError() | TLSError():
                # A refused login or an untrusted certificate will be refused again.
                self.summary.errors.append(text)
                return False
            case DestinationFull():
                self.summary.errors.append(text)
                self.stop.set()
                return False
            case TooManyConnections():
                self.workers -= 1  # the server takes the planner's connection and the workers logged in
                self.refused_sides.add(exit.error.side)
                if self.workers < 1:
                    self.summary.errors.append(f"{text}; no worker could log in beside the planner's connection: "
                                               "--max-connections 1 makes the planner log out while one copies")
                    return False
                self.reporter.warn(f"{text}; continuing with {self.workers} workers")
            case Throttled() if self.gate is not None and self.gate.server_said(exit.error):
                pass  # parked (--until-done): the gate holds the side until it may go on
            case OverLimit():
                if self.gate is not None:
                    self.summary.resume_at = self.gate.over_limit(exit.error)
                self.summary.errors.append(f"{text}; run again later, or with --until-done to wait")
                return False
            case Throttled():
                self.workers = max(1, self.workers - 1)
                self.summary.throttled = sorted({*self.summary.throttled, exit.side})
                self.reporter.warn(f"{text}; continuing with {self.workers} workers")
            case _:
                self.reporter.warn(f"worker {exit.worker} stopped: {text}")
        return True

    def finished(self, done: UnitDone, folder_totals: Mapping[str, tuple[int, int]]) -> None:
        self.exits_in_a_row, self.peak = 0, max(self.peak, len(self.working | {done.worker}))
        self.working.add(done.worker)
        with contextlib.suppress(ValueError):
            self.taken.get(done.worker, []).remove(done.unit_id)
        if done.held:
            if done.unit_id in self.units:
                self.hold(self.units[done.unit_id])
            return
        unit = self.units.pop(done.unit_id, None)
        if unit is None:
            return
        self.copies_into.setdefault(unit.pair.dst, []).extend(uid for _src, uid in done.appended)
        if len(done.appended) < done.copied - done.skipped:
            self.unreported_into.add(unit.pair.dst)
        if self.held:
            self.release(unit.pair.dst)
        if self.on_unit is not None:
            self.on_unit(unit, done)
        if done.replan:
            self.replan.add(unit.pair.src)
        _count(self.summary, unit, done)
        if self.gate is not None:
            self.gate.charge(done.size_bytes)
        _log_done(unit, done)
        self.reporter.advance(done.folder, done.copied, unit.size_bytes, folder_totals.get(done.folder, (0, 0)))

    def reap(self) -> bool:
        """Notice workers that are gone and give their unit to a fresh one; False to give up."""
        for index, process in list(self.processes.items()):
            if process.is_alive():
                continue
            process.join()
            del self.processes[index]
            self.working.discard(index)
            self.limits.release_all(index)
            exit = self.exits.pop(index, None)
            if exit is None:
                self.reporter.warn(f"worker {index} exited unexpectedly (exit code {process.exitcode})")
                self.log_worker(
                    "worker exit", index, "", "exited unexpectedly", logging.WARNING, exit_code=process.exitcode
                )
            # A throttled worker left to lighten the server's load: its unit is not to blame.
            throttled = exit is not None and isinstance(exit.error, Throttled)
            if not throttled:
                self.exits_in_a_row += 1
            channel = self.channels.pop(index, None)
            if channel is not None:
                channel.close()
            # The unit in hand is to blame, not those sent ahead: given back in their order; a
            # command the server refused stored nothing (no need to hold a blind unit).
            refused = exit is not None and isinstance(exit.error, Throttled) and exit.error.refused
            held = self.taken.pop(index, [])
            for position, unit_id in reversed(list(enumerate(held))):
                if unit_id in self.units:
                    self.requeue(self.units[unit_id], counted=not (throttled or position), stored_nothing=refused and not position)
            if self.exits_in_a_row > 2 * self.workers + 2:
                self.summary.errors.append("workers keep failing; stopping (see the warnings above)")
                return False
            if self.units and len(self.processes) + self.starting() < self.workers:
                self.start_worker()
        return True

    def shutdown(self, folder_totals: Mapping[str, tuple[int, int]]) -> None:
        """Stop every worker still running, at once, and give back its connection slots.

        Called once the workers were told to stop and given time to finish (`drain`).
        Whether a worker is alive is read from its pipe, not from `is_alive` (which asks
        the fork server, and a signal to the whole process group may have ended that):
        a pipe not at EOF means the worker still holds its end, so the process (or its
        zombie) still owns its PID, and SIGKILL cannot hit another process.  SIGKILL, not
        SIGTERM: a worker takes SIGTERM as "stop after the unit in hand".
        """
        self.adopt(wait=True, dispatch=False)
        for index, channel in list(self.channels.items()):
            process = self.processes.get(index)
            try:
                with self.signals.held():
                    while channel.poll():
                        message = channel.recv()
                        if isinstance(message, UnitDone):
                            self.finished(message, folder_totals)
                if process is not None and process.pid is not None:
                    os.kill(process.pid, signal.SIGKILL)
                # EOF once the worker is gone.
                multiprocessing.connection.wait([channel], 5.0)
            except (EOFError, OSError):
                pass  # gone already
            channel.close()
        self.channels.clear()
        for index, process in self.processes.items():
            process.join(1.0)
            self.limits.release_all(index)
        self.processes.clear()

    def requeue(self, unit: WorkUnit, counted: bool, stored_nothing: bool = False) -> None:
        """Give a unit whose worker is gone to another; its APPEND may have landed, so it is checked."""
        if counted:
            self.attempts[unit.unit_id] += 1
            if self.attempts[unit.unit_id] >= UNIT_ATTEMPTS:
                del self.units[unit.unit_id]
                self.summary.incomplete.add(unit.pair.src)
                self.summary.errors.append(
                    f"{len(unit.uids)} messages of folder {unit.pair.src!r} not copied after "
                    f"{UNIT_ATTEMPTS} attempts; run again"
                )
                return
        if unit.blind and not unit.settled and not stored_nothing:
            self.hold(unit)
            return
        again = dataclasses.replace(unit, attempt=unit.attempt + 1)
        self.units[unit.unit_id] = again
        self.pending.appendleft(again)
        for index in list(self.channels):
            self.dispatch(index)

    def hold(self, unit: WorkUnit) -> None:
        """Keep a unit planned without identities, whose APPEND may have landed, until the
        other units of its destination folder are done (`WorkUnit.blind`)."""
        self.held.setdefault(unit.pair.dst, []).append(unit)
        self.release(unit.pair.dst)

    def release(self, dst: str) -> None:
        """Give out the units held for destination folder *dst* once no other unit of it is
        pending or in a worker's hands: all in one unit, settled, which leaves out the copies
        of the units done.  One unit, because the held units' lost APPENDs may each have put
        a copy of the same message there: only together can they tell which copies are theirs.
        """
        held = self.held.get(dst)
        in_hand = (self.units[i] for i in self.held_ids() if i in self.units)
        if not held or any(u.pair.dst == dst for u in (*self.pending, *in_hand)):
            return
        del self.held[dst]
        if dst in self.unreported_into:
            # A server that announces UIDPLUS but left some APPENDUIDs out: the held units
            # cannot tell their copies from those.  A re-run, planned with identities
            # (the folder is no longer empty), copies what is missing.
            for unit in held:
                del self.units[unit.unit_id]
                self.summary.incomplete.add(unit.pair.src)
            self.summary.errors.append(
                f"{sum(len(u.uids) for u in held)} messages of folder {held[0].pair.src!r} not copied: a "
                f"connection broke during their APPEND and the destination did not report the UIDs of "
                f"every copy (APPENDUID); run again"
            )
            return
        for unit in held[1:]:
            del self.units[unit.unit_id]
        first = held[0]
        settled = dataclasses.replace(
            first, uids=tuple(uid for u in held for uid in u.uids), size_bytes=sum(u.size_bytes for u in held),
            attempt=max(u.attempt for u in held) + 1, verify=any(u.verify for u in held),
            streamed=any(u.streamed for u in held), settled=True, others=tuple(self.copies_into.get(dst, ())),
        )
        self.units[first.unit_id] = settled
        self.pending.append(settled)
        for index in list(self.channels):
            self.dispatch(index)


def wait_for_reports(channels: dict[int, Connection], timeout_s: float, also: Connection | None = None) -> list[Any]:
    """The pipes in *channels* with a report (or at their end), after waiting up to
    *timeout_s* for the first, or until *also* is ready (the feed has units)."""
    return multiprocessing.connection.wait([*channels.values(), *([also] if also else [])], timeout_s)


def receive(channels: dict[int, Connection], ready: list[Any]) -> list[object]:
    """Every report waiting on the pipes of *channels* that are *ready*.  A pipe at its
    end leaves *channels*: its worker is gone, and `Coordinator.reap` gives its unit to
    another."""
    messages = []
    for index, channel in list(channels.items()):
        if channel not in ready:
            continue
        try:
            while channel.poll():
                messages.append(channel.recv())
        except (EOFError, OSError):
            channel.close()
            del channels[index]
    return messages


def _count(s: Summary, unit: WorkUnit, done: UnitDone) -> None:
    """Add a finished unit's figures, errors and refused messages to the summary."""
    if done.error and not done.replan:
        s.errors.append(done.error)
    if done.error or done.failures:
        s.incomplete.add(unit.pair.src)
    s.copied_by_folder[unit.pair.src] = s.copied_by_folder.get(unit.pair.src, 0) + done.copied + done.vanished
    s.copied += done.copied
    s.copied_bytes += done.size_bytes
    s.add_wire(done.wire)
    s.vanished += done.vanished
    s.failed.extend(done.failures)


def _log_done(unit: WorkUnit, done: UnitDone) -> None:
    """Log a finished unit, the messages the destination refused, and the worker's timing."""
    refused = {f.uid for f in done.failures}
    event(
        "unit copied", side="src", folder=unit.pair.src, uids=[u for u in unit.uids if u not in refused],
        dst_folder=unit.pair.dst, worker=done.worker, copied=done.copied, size_bytes=done.size_bytes,
        vanished=done.vanished, skipped=done.skipped, error=done.error,
    )
    if done.logged_in_epoch_s or done.first_append_epoch_s:
        # When the worker was logged in and sent its first APPEND (0: said before).
        event("worker timing", worker=done.worker, logged_in_at=round(done.logged_in_epoch_s, 3),
              first_append_at=round(done.first_append_epoch_s, 3))
    for failure in done.failures:
        event(
            "message refused", side="src", folder=failure.folder, uid=failure.uid, level=logging.ERROR,
            dst_folder=unit.pair.dst, message_id=failure.message_id, size_bytes=failure.size_bytes,
            reason=failure.reason,
        )
