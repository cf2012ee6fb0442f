"""`fastsync sync`: plan in this process, copy in a process pool.

`run(config, options, reporter) -> Summary` is the one entry point.  Planning lists both
accounts, pairs folders, diffs message identities per folder pair and cuts what is missing
into work units; the pool (pool.py) copies them while this process aggregates progress.
"""

from __future__ import annotations

import queue
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fastsync import folders as folder_rules
from fastsync import plan, pool, providers
from fastsync.config import Config
from fastsync.errors import Cancelled, ExitCode, UsageError
from fastsync.limits import Limits, workers_allowed
from fastsync.model import Folder, FolderPair, MessageRef, Taken, UnitDone, WorkerExit, WorkUnit
from fastsync.progress import FolderRow, Reporter, Summary
from fastsync.session import Session

# A unit whose worker died is given to another worker this many times before the run
# reports it as not copied (a unit that kills every worker must not loop forever).
UNIT_ATTEMPTS = 3

# Seconds to wait for workers to log out after the queue is drained or the run cancelled.
JOIN_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Options:
    """What the command line (and env) decide about a sync, merged with the config file."""

    workers: int = 4
    src_folder: str | None = None
    dst_folder: str | None = None
    confirm: bool = False
    dry_run: bool = False
    down_bps: int = 0
    up_bps: int = 0
    max_connections: int = 0
    unit_max_messages: int = plan.UNIT_MAX_MESSAGES
    unit_max_bytes: int = plan.UNIT_MAX_BYTES


@dataclass
class FolderPlan:
    pair: FolderPair
    uidvalidity: int
    src_messages: int
    todo: list[MessageRef] = field(default_factory=list)
    without_id: int = 0
    note: str = ""

    @property
    def todo_bytes(self) -> int:
        return sum(r.size_bytes for r in self.todo)


def rules_from(config: Config, options: Options) -> list[folder_rules.Rule]:
    if options.src_folder or options.dst_folder:
        src = options.src_folder or options.dst_folder or ""
        dst = options.dst_folder or src
        return [folder_rules.Rule(src, dst, "command line")]
    return [folder_rules.Rule(m.src, m.dst, "map") for m in config.map]


def dst_delimiter(folders: Sequence[Folder]) -> str:
    for folder in folders:
        if folder_rules.is_inbox(folder.name) and folder.delimiter:
            return folder.delimiter
    for folder in folders:
        if folder.delimiter:
            return folder.delimiter
    return "/"


def pair_folders(
    src_folders: Sequence[Folder], dst_folders: Sequence[Folder], rules: Sequence[folder_rules.Rule], reporter: Reporter
) -> list[FolderPair]:
    names = {f.name for f in src_folders}
    for rule in rules:
        if not any(folder_rules.same_name(rule.src, n) or n.startswith(rule.src) for n in names):
            raise UsageError(
                f"source folder {rule.src!r} ({rule.reason}) does not exist; `fastsync show` lists the folders"
            )
    return folder_rules.plan_pairs(src_folders, dst_folders, dst_delimiter(dst_folders), rules)


def plan_folder(src: Session, dst: Session, pair: FolderPair, dst_exists: bool) -> FolderPlan:
    status = src.examine(pair.src)
    refs = src.message_refs(status.messages, plan.identity) if status.messages else []
    dst_ids: list[str] = []
    if dst_exists:
        dst_status = dst.examine(pair.dst)
        if dst_status.messages:
            dst_ids = [r.identity for r in dst.message_refs(dst_status.messages, plan.identity)]
    todo = plan.missing(refs, dst_ids)
    note = pair.reason if pair.reason.startswith("special-use") else ""
    if not dst_exists:
        note = (note + ", " if note else "") + "new folder"
    return FolderPlan(
        pair, status.uidvalidity, len(refs), todo, sum(1 for r in refs if not r.has_message_id), note
    )


def run(config: Config, options: Options, reporter: Reporter, stdin_is_tty: bool | None = None) -> Summary:
    started = time.monotonic()
    summary = Summary(dry_run=options.dry_run)
    ctx = pool.context()
    limits = Limits.create(ctx, options.down_bps, options.up_bps, options.max_connections)
    workers = workers_allowed(options.workers, options.max_connections)
    if workers < options.workers:
        reporter.warn(
            f"--procs {options.workers} lowered to {workers}: --max-connections {options.max_connections} "
            "per side, and the planner holds one"
        )
    src = Session.open(config.src, slots=limits.src_slots, meter_down=limits.down)
    try:
        dst = Session.open(config.dst, slots=limits.dst_slots, meter_up=limits.up)
    except BaseException:
        src.close()
        raise
    try:
        reporter.status(f"listing folders of {src.where} and {dst.where}")
        src_folders = src.list_folders()
        dst_folders = dst.list_folders()
        pairs = pair_folders(src_folders, dst_folders, rules_from(config, options), reporter)
        existing = {f.name for f in dst_folders if f.selectable}
        plans = []
        for index, pair in enumerate(pairs, 1):
            reporter.status(f"planning {index}/{len(pairs)}: {pair.src}")
            exists = pair.dst in existing or (folder_rules.is_inbox(pair.dst))
            plans.append(plan_folder(src, dst, pair, exists))
        reporter.clear_status()
        summary.folders = len(plans)
        summary.planned = sum(len(p.todo) for p in plans)
        summary.planned_bytes = sum(p.todo_bytes for p in plans)
        summary.present = sum(p.src_messages - len(p.todo) for p in plans)
        reporter.plan(
            [
                FolderRow(p.pair.src, p.pair.dst, p.src_messages, 0, len(p.todo), p.todo_bytes, p.without_id, p.note)
                for p in plans
            ]
        )
        for notice in providers.notices(config.src, config.dst):
            reporter.warn(notice)
        missing_folders = folder_rules.folders_to_create(pairs, existing, dst_delimiter(dst_folders))
        if options.dry_run or (summary.planned == 0 and not missing_folders):
            if options.dry_run:
                reporter.info("Dry run: nothing was written.")
            summary.elapsed_s = time.monotonic() - started
            return summary
        if not options.confirm:
            interactive = sys.stdin.isatty() if stdin_is_tty is None else stdin_is_tty
            if not interactive:
                raise UsageError(
                    "no terminal to ask for confirmation; pass -y/--yes (or set FASTSYNC_CONFIRM=1) to copy"
                )
            if not reporter.confirm(f"Copy {summary.planned} messages and create {len(missing_folders)} folders?"):
                summary.declined = True
                reporter.info("Nothing copied.")
                summary.elapsed_s = time.monotonic() - started
                return summary
        # Every mapped folder is created, empty ones too: the destination mirrors the tree.
        for name in missing_folders:
            reporter.detail(f"creating folder {name!r} on {dst.where}")
            dst.create_folder(name)
        if options.max_connections == 1:
            # One connection per side: the planner's slot is the only one, hand it over.
            src.close()
            dst.close()
        copy_started = time.monotonic()
        if summary.planned:
            _copy(config, options, plans, workers, limits, reporter, summary)
        summary.copy_s = time.monotonic() - copy_started
    finally:
        reporter.clear_status()
        src.close()
        dst.close()
    summary.elapsed_s = time.monotonic() - started
    return summary


def _units(plans: Sequence[FolderPlan], options: Options) -> list[WorkUnit]:
    units: list[WorkUnit] = []
    for p in plans:
        units.extend(
            plan.shard(p.pair, p.uidvalidity, p.todo, len(units), options.unit_max_messages, options.unit_max_bytes)
        )
    return units


def _copy(
    config: Config,
    options: Options,
    plans: Sequence[FolderPlan],
    workers: int,
    limits: Limits,
    reporter: Reporter,
    summary: Summary,
) -> None:
    units = _units(plans, options)
    folder_totals = {p.pair.src: (len(p.todo), p.todo_bytes) for p in plans}
    coordinator = _Coordinator(config, limits, units, min(workers, len(units)), reporter, summary)
    reporter.start_copy(summary.planned, summary.planned_bytes)
    try:
        coordinator.run(folder_totals)
    except KeyboardInterrupt:
        coordinator.stop.set()
        reporter.stop_copy()
        _shutdown(coordinator.processes.values(), timeout_s=5.0)
        raise Cancelled("Cancelled.") from None
    finally:
        reporter.stop_copy()
    _shutdown(coordinator.processes.values(), JOIN_TIMEOUT_S)
    if coordinator.units:
        left = sum(len(u.uids) for u in coordinator.units.values())
        summary.errors.append(f"{left} messages not copied because the workers stopped; run again")


class _Coordinator:
    """Feeds units to the workers, collects their reports, replaces workers that die."""

    def __init__(
        self, config: Config, limits: Limits, units: Sequence[WorkUnit], workers: int, reporter: Reporter, summary: Summary
    ) -> None:
        self.ctx = pool.context()
        self.config = config
        self.limits = limits
        self.workers = workers
        self.reporter = reporter
        self.summary = summary
        self.units = {u.unit_id: u for u in units}
        self.attempts = dict.fromkeys(self.units, 0)
        self.tasks = self.ctx.Queue()  # type: ignore[attr-defined]
        self.results = self.ctx.Queue()  # type: ignore[attr-defined]
        self.stop = self.ctx.Event()  # type: ignore[attr-defined]
        self.processes: dict[int, Any] = {}
        self.next_index = 0
        self.taken: dict[int, int] = {}
        self.reported_exit: set[int] = set()
        # Workers that stopped since the last unit finished: when every restart fails
        # (server down, account locked) the run ends instead of starting workers forever.
        self.exits_in_a_row = 0

    def start_worker(self) -> None:
        index = self.next_index
        self.next_index += 1
        process = self.ctx.Process(  # type: ignore[attr-defined]
            target=pool.worker_main,
            args=(index, self.config.src, self.config.dst, self.limits, self.tasks, self.results, self.stop),
            name=f"fastsync-worker-{index}",
            daemon=True,
        )
        process.start()
        self.processes[index] = process

    def run(self, folder_totals: dict[str, tuple[int, int]]) -> None:
        for unit in self.units.values():
            self.tasks.put(unit)
        for _ in range(self.workers):
            self.start_worker()
        while self.units:
            try:
                message = self.results.get(timeout=0.5)
            except queue.Empty:
                message = None
            if isinstance(message, Taken):
                self.taken[message.worker] = message.unit_id
                self.attempts[message.unit_id] += 1
            elif isinstance(message, UnitDone):
                self.finished(message, folder_totals)
            elif isinstance(message, WorkerExit):
                self.reported_exit.add(message.worker)
                self.reporter.warn(f"worker {message.worker} stopped: {message.message.strip()}")
                if message.exit_code in (ExitCode.AUTH, ExitCode.USAGE):
                    # A refused login will be refused again: stop instead of retrying.
                    self.summary.errors.append(message.message.strip())
                    break
            if not self.reap():
                break
        for _ in self.processes:
            self.tasks.put(None)

    def finished(self, done: UnitDone, folder_totals: dict[str, tuple[int, int]]) -> None:
        self.exits_in_a_row = 0
        self.taken.pop(done.worker, None)
        unit = self.units.pop(done.unit_id, None)
        if unit is None:
            return
        s = self.summary
        s.copied += done.copied
        s.copied_bytes += done.size_bytes
        s.vanished += done.vanished
        s.failed.extend(done.failures)
        if done.error:
            s.errors.append(done.error)
        self.reporter.advance(done.folder, done.copied, unit.size_bytes, folder_totals.get(done.folder, (0, 0)))

    def reap(self) -> bool:
        """Notice workers that are gone and give their unit to a fresh one; False to give up."""
        for index, process in list(self.processes.items()):
            if process.is_alive():
                continue
            process.join()
            del self.processes[index]
            self.limits.release_all(index)
            self.exits_in_a_row += 1
            if index not in self.reported_exit:
                self.reporter.warn(f"worker {index} exited unexpectedly (exit code {process.exitcode})")
            unit_id = self.taken.pop(index, None)
            if unit_id is not None and unit_id in self.units:
                if self.attempts[unit_id] >= UNIT_ATTEMPTS:
                    unit = self.units.pop(unit_id)
                    self.summary.errors.append(
                        f"{len(unit.uids)} messages of folder {unit.pair.src!r} not copied after "
                        f"{UNIT_ATTEMPTS} attempts; run again"
                    )
                else:
                    self.tasks.put(self.units[unit_id])
            if self.exits_in_a_row > 2 * self.workers + 2:
                self.summary.errors.append("workers keep failing; stopping (see the warnings above)")
                return False
            if self.units and len(self.processes) < self.workers:
                self.start_worker()
        return True


def _shutdown(processes, timeout_s: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            process.terminate()
            process.join(1.0)
        if process.is_alive():
            process.kill()
            process.join()
