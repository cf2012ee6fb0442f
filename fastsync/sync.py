"""`fastsync sync`: plan in this process, copy in a process pool.

`run(config, options, reporter) -> Summary` is the one entry point.  Planning lists both
accounts, pairs folders, diffs message identities per folder pair and cuts what is missing
into work units; the pool (pool.py) copies them while this process aggregates progress.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import functools
import logging
import multiprocessing.connection
import random
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

from fastsync import folders as folder_rules
from fastsync import plan, pool, providers
from fastsync.config import Config
from fastsync.errors import Cancelled, ConnectError, ConnectionLost, FolderError, Throttled, UsageError
from fastsync.limits import Limits, workers_allowed
from fastsync.model import (
    Folder,
    FolderPair,
    FolderStatus,
    MessageRef,
    Retrying,
    UnitDone,
    WorkerExit,
    WorkerSettings,
    WorkUnit,
)
from fastsync.progress import FolderRow, Reporter, Summary, event
from fastsync.session import FolderScan, MessageState, Session, SessionPair, backoff_s
from fastsync.state import StateCache

T = TypeVar("T")

# A unit whose worker died is given to another worker this many times before the run
# reports it as not copied (a unit that kills every worker must not loop forever).
UNIT_ATTEMPTS = 3

# The plan's note on a pair the state cache let the run skip.
UNCHANGED = "unchanged since the last run"

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
    retries: int = WorkerSettings.retries
    full: bool = False
    state_dir: Path | None = None
    sync_flags: bool = False

    @property
    def settings(self) -> WorkerSettings:
        return WorkerSettings(retries=self.retries)


@dataclass
class FolderPlan:
    pair: FolderPair
    uidvalidity: int
    src_messages: int
    todo: list[MessageRef] = field(default_factory=list)
    without_id: int = 0
    note: str = ""
    dst_uidnext: int = 1
    error: str = ""

    @property
    def todo_bytes(self) -> int:
        return sum(r.size_bytes for r in self.todo)


def comparable_flags(flags: Iterable[str]) -> frozenset[str]:
    """Flags as the two sides' copies are compared: without \\Recent, which only a server
    sets (RFC 3501 section 2.3.2), and case-insensitively, as RFC 3501 treats system flags
    and servers (Dovecot, Gmail) treat keywords."""
    return frozenset(f.lower() for f in flags if f.lower() != "\\recent")


def match_by_identity(
    src: Sequence[MessageState], dst: Sequence[MessageState]
) -> tuple[list[tuple[MessageState, MessageState]], list[MessageState], list[MessageState]]:
    """(matched pairs, missing on the destination, extra on the destination).

    The multiset view of plan.missing: the k-th source copy of an identity (in UID
    order) pairs with the k-th destination copy; copies beyond the other side's count
    are missing or extra.
    """
    by_identity: dict[str, list[MessageState]] = {}
    for state in sorted(dst, key=lambda m: m.uid):
        by_identity.setdefault(state.identity, []).append(state)
    matched, missing = [], []
    for state in sorted(src, key=lambda m: m.uid):
        copies = by_identity.get(state.identity)
        if copies:
            matched.append((state, copies.pop(0)))
        else:
            missing.append(state)
    extra = sorted((m for copies in by_identity.values() for m in copies), key=lambda m: m.uid)
    return matched, missing, extra


def flag_changes(matched: Sequence[tuple[MessageState, MessageState]]) -> dict[tuple[str, ...], list[int]]:
    """Destination UIDs whose flags differ from their source copy, grouped by the source's
    flag set so that one STORE sets each set (\\Recent left out)."""
    changes: dict[tuple[str, ...], list[int]] = {}
    for src, dst in matched:
        if comparable_flags(src.flags) != comparable_flags(dst.flags):
            wanted = tuple(sorted(f for f in src.flags if f.lower() != "\\recent"))
            changes.setdefault(wanted, []).append(dst.uid)
    return changes


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
    src_folders: Sequence[Folder], dst_folders: Sequence[Folder], rules: Sequence[folder_rules.Rule]
) -> list[FolderPair]:
    for rule in rules:
        # The same test as the mapping itself: "Old" covers "Old/a", not "Older".
        if not any(folder_rules.matches(rule.src, f.name, f.delimiter) is not None for f in src_folders):
            raise UsageError(
                f"source folder {rule.src!r} ({rule.reason}) does not exist; `fastsync show` lists the folders"
            )
    return folder_rules.plan_pairs(src_folders, dst_folders, dst_delimiter(dst_folders), rules)


class _Planner(SessionPair):
    """The parent's two connections (one slot per side), reopened with backoff when they break."""

    def __init__(self, config: Config, limits: Limits, settings: WorkerSettings, reporter: Reporter) -> None:
        super().__init__(config.src, config.dst, limits)
        self.settings = settings
        self.reporter = reporter
        self.rng = random.Random()

    def call(self, what: str, work: Callable[[Session, Session], T]) -> T:
        """Run *work* with both sessions; a broken connection is reopened and *work* run again."""
        attempt = 0
        while True:
            try:
                return work(*self.open())
            except (ConnectError, ConnectionLost) as exc:
                if not exc.retryable:
                    raise
                self.close()
                attempt += 1
                if attempt > self.settings.retries:
                    raise
                wait_s = (exc.wait_s if isinstance(exc, Throttled) else 0) or backoff_s(
                    attempt, self.settings, self.rng
                )
                self.reporter.warn(f"{exc.message}; {what}: retrying in {wait_s:.1f} s ({attempt}/{self.settings.retries})")
                time.sleep(wait_s)


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
    if not options.dry_run:
        pool.warm_up()
    cache = StateCache.for_config(config, options.state_dir)
    if options.sync_flags and cache.path is not None:
        # A plain sync records a pair as complete whatever its flags, so --sync-flags keeps
        # its own cache: it skips only pairs that a --sync-flags run left in step.
        cache = StateCache(cache.path.with_suffix(".flags.json"))
    planner = _Planner(config, limits, options.settings, reporter)
    try:
        planner.open()
        reporter.status("listing folders")
        # The statuses are read before planning: whatever changes later shows up as a
        # difference next time (see _remember).
        (src_folders, src_before), (dst_folders, dst_before) = planner.call(
            "listing folders", lambda src, dst: _both(src.folders_and_statuses, dst.folders_and_statuses)
        )
        before = (src_before, dst_before)
        pairs = pair_folders(src_folders, dst_folders, rules_from(config, options))
        existing = {f.name for f in dst_folders if f.selectable}
        plans = _plan(
            planner, pairs, existing, reporter, cache if not options.full else None, before, options.sync_flags
        )
        summary.folders = len(plans)
        for p in plans:
            if p.error:
                summary.errors.append(p.error)
                summary.incomplete.add(p.pair.src)
        summary.planned = sum(len(p.todo) for p in plans)
        summary.planned_bytes = sum(p.todo_bytes for p in plans)
        summary.present = sum(p.src_messages - len(p.todo) for p in plans)
        for p in plans:
            event(
                "folder planned", side="src", folder=p.pair.src, dst_folder=p.pair.dst, messages=p.src_messages,
                to_copy=len(p.todo), to_copy_bytes=p.todo_bytes, note=p.note, error=p.error,
            )
        changes: dict[str, dict[tuple[str, ...], list[int]]] = {}
        if options.sync_flags:
            summary.sync_flags = True
            changes = _flags_to_update(planner, plans, existing, reporter)
            summary.flags_planned = sum(len(uids) for c in changes.values() for uids in c.values())
        reporter.plan(
            [
                FolderRow(p.pair.src, p.pair.dst, p.src_messages, 0, len(p.todo), p.todo_bytes, p.without_id, p.note)
                for p in plans
            ]
        )
        for notice in providers.notices(config.src, config.dst):
            reporter.warn(notice)
        missing_folders = folder_rules.folders_to_create(pairs, existing, dst_delimiter(dst_folders))
        if options.dry_run:
            reporter.info("Dry run: nothing was written.")
        elif summary.planned or missing_folders or summary.flags_planned:
            if not _confirmed(options, reporter, summary, missing_folders, stdin_is_tty):
                summary.declined = True
                reporter.info("Nothing copied.")
            else:
                if summary.planned or missing_folders:
                    _execute(
                        config, options, planner, pairs, plans, existing, missing_folders, workers, limits, reporter,
                        summary,
                    )
                if changes:
                    _update_flags(planner, changes, reporter, summary)
        if not options.dry_run and not summary.declined:
            _remember(cache, planner, plans, before, summary)
    finally:
        reporter.clear_status()
        planner.close()
    summary.elapsed_s = time.monotonic() - started
    return summary


def _confirmed(
    options: Options, reporter: Reporter, summary: Summary, missing_folders: Sequence[str], stdin_is_tty: bool | None
) -> bool:
    if options.confirm:
        return True
    interactive = sys.stdin.isatty() if stdin_is_tty is None else stdin_is_tty
    if not interactive:
        raise UsageError("no terminal to ask for confirmation; pass -y/--yes (or set FASTSYNC_CONFIRM=1) to copy")
    flags = f" and update the flags of {summary.flags_planned} messages" if summary.flags_planned else ""
    return reporter.confirm(f"Copy {summary.planned} messages{flags} and create {len(missing_folders)} folders?")


def _execute(
    config: Config,
    options: Options,
    planner: _Planner,
    pairs: Sequence[FolderPair],
    plans: Sequence[FolderPlan],
    existing: set[str],
    missing_folders: Sequence[str],
    workers: int,
    limits: Limits,
    reporter: Reporter,
    summary: Summary,
) -> None:
    # Every mapped folder is created, empty ones too: the destination mirrors the tree.
    if missing_folders:
        reporter.detail(f"creating folders {', '.join(map(repr, missing_folders))}")
        for name in missing_folders:
            event("folder created", side="dst", folder=name)
        for error in planner.call("creating folders", lambda _src, dst: dst.create_folders(missing_folders)):
            summary.errors.append(error)
    copy_started = time.monotonic()
    reporter.start_copy(summary.planned, summary.planned_bytes)
    try:
        replan = _copy(config, options, plans, workers, limits, reporter, summary)
        if replan:
            # A folder whose UIDVALIDITY changed is planned again, once: its old UIDs
            # name nothing now (RFC 3501 section 2.3.1.1).
            reporter.warn(f"planning again {len(replan)} folders whose UIDVALIDITY changed")
            again = _plan(planner, [p for p in pairs if p.src in replan], existing | set(missing_folders), reporter)
            summary.planned += sum(len(p.todo) for p in again)
            summary.incomplete.update(replan)
            _copy(config, options, again, workers, limits, reporter, summary)
    finally:
        reporter.stop_copy()
    summary.copy_s = time.monotonic() - copy_started


def _remember(
    cache: StateCache,
    planner: _Planner,
    plans: Sequence[FolderPlan],
    before: tuple[dict[str, FolderStatus], dict[str, FolderStatus]],
    summary: Summary,
) -> None:
    """Record the pairs this run left complete, so that the next run can skip them.

    The source's status is the one read before planning.  The destination's is read now,
    and kept only when it differs from before by exactly the copies this run made: a
    change by anyone else during the run must not be mistaken for ours.
    """
    src_before, dst_before = before
    changed = summary.copied or summary.flags_updated
    after = planner.call("reading folder status", lambda _src, dst: dst.statuses()) if changed else dst_before
    for p in plans:
        src, dst0, dst1 = src_before.get(p.pair.src), dst_before.get(p.pair.dst), after.get(p.pair.dst)
        copied = summary.copied_by_folder.get(p.pair.src, 0)
        complete = p.pair.src not in summary.incomplete and copied == len(p.todo)
        if src is None or dst1 is None or not complete:
            cache.forget(p.pair)
            continue
        if dst0 is None:
            dst0 = FolderStatus(0, -1, dst1.uidvalidity, 1)
        consistent = (
            dst1.uidvalidity == dst0.uidvalidity
            and dst1.uidnext - dst0.uidnext == copied
            and dst1.messages - dst0.messages == copied
        )
        if consistent:
            cache.record(p.pair, src, dst1)
        else:
            cache.forget(p.pair)
    try:
        cache.save()
    except OSError as exc:
        summary.errors.append(f"cannot write the state cache {cache.path}: {exc.strerror}; the next run will diff everything")


def _plan(
    planner: _Planner,
    pairs: Sequence[FolderPair],
    existing: set[str],
    reporter: Reporter,
    cache: StateCache | None = None,
    before: tuple[dict[str, FolderStatus], dict[str, FolderStatus]] = ({}, {}),
    need_modseq: bool = False,
) -> list[FolderPlan]:
    """Diff each pair's message identities; pairs the cache knows unchanged are not read.

    With *need_modseq* (--sync-flags) a pair is skipped only when both sides report a
    HIGHESTMODSEQ (RFC 7162 CONDSTORE): without it, a flag change moves neither UIDNEXT
    nor MESSAGES, so an unchanged STATUS proves nothing about flags.
    """
    src_before, dst_before = before

    def modseq_known(pair: FolderPair) -> bool:
        src, dst = src_before.get(pair.src), dst_before.get(pair.dst)
        return src is not None and dst is not None and src.highestmodseq > 0 and dst.highestmodseq > 0

    skipped = {
        p.src
        for p in pairs
        if cache is not None
        and cache.unchanged(p, src_before.get(p.src), dst_before.get(p.dst))
        and (not need_modseq or modseq_known(p))
    }
    to_read = [p for p in pairs if p.src not in skipped]

    def counts(names: Iterable[str], statuses: dict[str, FolderStatus]) -> list[tuple[str, int]]:
        # Unknown counts read as one open-ended batch.
        return [(name, statuses[name].messages if name in statuses else 1) for name in dict.fromkeys(names)]

    src_names = counts((p.src for p in to_read), src_before)
    dst_names = counts((p.dst for p in to_read if p.dst in existing or folder_rules.is_inbox(p.dst)), dst_before)
    if to_read:
        reporter.status(f"planning {len(to_read)} folders")
    src_scans, dst_scans = planner.call(
        "planning", functools.partial(_survey_both, src_names=src_names, dst_names=dst_names)
    )
    reporter.clear_status()
    plans = []
    for pair in pairs:
        if pair.src in skipped:
            status = src_before[pair.src]
            plans.append(FolderPlan(pair, status.uidvalidity, status.messages, note=UNCHANGED))
            continue
        src = src_scans.get(pair.src)
        if src is None or src.status is None:
            error = src.error if src is not None else f"folder {pair.src!r} could not be read"
            plans.append(FolderPlan(pair, 0, 0, note="not synced", error=error))
            continue
        dst = dst_scans.get(pair.dst)
        dst_refs = dst.refs if dst is not None and dst.status is not None else []
        dst_uidnext = dst.status.uidnext if dst is not None and dst.status is not None else 1
        todo = plan.missing(src.refs, [r.identity for r in dst_refs])
        notes = [pair.reason] if pair.reason.startswith("special-use") else []
        if dst is None:
            notes.append("new folder")
        plans.append(
            FolderPlan(
                pair, src.status.uidvalidity, len(src.refs), todo, sum(1 for r in src.refs if not r.has_message_id),
                ", ".join(notes), dst_uidnext,
            )
        )
    return plans


def _flags_to_update(
    planner: _Planner, plans: Sequence[FolderPlan], existing: set[str], reporter: Reporter
) -> dict[str, dict[tuple[str, ...], list[int]]]:
    """Destination folder -> {source flag set: destination UIDs} for --sync-flags.

    Both folders of each pair are read with EXAMINE (nothing changes yet); messages are
    matched by identity as the planner does, so only copies present on both sides count.
    Pairs the state cache skipped have no change on either side (HIGHESTMODSEQ equal).
    """
    changes: dict[str, dict[tuple[str, ...], list[int]]] = {}
    readable = [
        p for p in plans
        if not p.error and p.note != UNCHANGED and (p.pair.dst in existing or folder_rules.is_inbox(p.pair.dst))
    ]
    for index, p in enumerate(readable, 1):
        reporter.status(f"comparing flags {index}/{len(readable)} {p.pair.src}")
        src_states, dst_states = planner.call(
            "comparing flags", functools.partial(_states_both, src_folder=p.pair.src, dst_folder=p.pair.dst)
        )
        matched, _missing, _extra = match_by_identity(src_states, dst_states)
        folder_changes = flag_changes(matched)
        if folder_changes:
            changes[p.pair.dst] = folder_changes
            src_uid = {d.uid: s.uid for s, d in matched}
            for flags, uids in folder_changes.items():
                for uid in uids:
                    event("flags differ", side="dst", folder=p.pair.dst, uid=uid, src_folder=p.pair.src,
                          src_uid=src_uid[uid], flags=list(flags))
    reporter.clear_status()
    if changes:
        count = sum(len(uids) for c in changes.values() for uids in c.values())
        reporter.info(f"{count} messages present on both sides have flags to update on the destination.")
    return changes


def _states_both(
    src: Session, dst: Session, src_folder: str, dst_folder: str
) -> tuple[list[MessageState], list[MessageState]]:
    """Flags, dates and identities of a folder pair, both sides at once, read-only (EXAMINE)."""

    def read(session: Session, folder: str) -> list[MessageState]:
        status = session.examine(folder)
        return session.message_states(status.messages, plan.identity) if status.messages else []

    return _both(functools.partial(read, src, src_folder), functools.partial(read, dst, dst_folder))


def _update_flags(
    planner: _Planner, changes: dict[str, dict[tuple[str, ...], list[int]]], reporter: Reporter, summary: Summary
) -> None:
    """STORE the source's flags on the destination copies (never on the source).

    A folder is selected read-write only for its STOREs, then examined again: SELECT and
    EXAMINE leave the previous folder without expunging, where CLOSE after SELECT would
    expunge the destination's \\Deleted messages (RFC 3501 section 6.4.2).
    """

    def store(_src: Session, dst: Session, folder: str, folder_changes: dict[tuple[str, ...], list[int]]) -> None:
        dst.select(folder)
        try:
            dst.store_flags(folder_changes)
        finally:
            dst.examine(folder)

    for folder, folder_changes in changes.items():
        count = sum(len(uids) for uids in folder_changes.values())
        try:
            # STORE FLAGS sets the whole set: repeating it after a lost connection is harmless.
            planner.call("updating flags", functools.partial(store, folder=folder, folder_changes=folder_changes))
        except FolderError as exc:
            summary.errors.append(exc.message)
            event("flags not updated", side="dst", folder=folder, level=logging.ERROR, reason=exc.message)
            continue
        summary.flags_updated += count
        for flags, uids in folder_changes.items():
            event("flags updated", side="dst", folder=folder, uids=uids, flags=list(flags))
        reporter.detail(f"flags updated on {count} messages of {folder!r}")


def _survey_both(
    src: Session, dst: Session, src_names: Sequence[tuple[str, int]], dst_names: Sequence[tuple[str, int]]
) -> tuple[dict[str, FolderScan], dict[str, FolderScan]]:
    """Read both sides at once: each has its own connection, and the wait is the network's."""
    return _both(
        functools.partial(src.survey, src_names, plan.identity), functools.partial(dst.survey, dst_names, plan.identity)
    )


U = TypeVar("U")


def _both(src_work: Callable[[], T], dst_work: Callable[[], U]) -> tuple[T, U]:
    """Run one call per side at the same time: each side has its own connection, and on a
    distant server the time is spent waiting for the network, not holding the GIL."""
    threads = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="fastsync-planner")
    try:
        src_result = threads.submit(src_work)
        dst_result = threads.submit(dst_work)
        results = src_result.result(), dst_result.result()
    except BaseException:
        # Ctrl-C, or one side failed: do not wait for the other side's reading to finish;
        # the caller closes both connections, which ends it.
        threads.shutdown(wait=False, cancel_futures=True)
        raise
    threads.shutdown()
    return results


def _units(plans: Sequence[FolderPlan], options: Options) -> list[WorkUnit]:
    units: list[WorkUnit] = []
    for p in plans:
        units.extend(
            plan.shard(
                p.pair, p.uidvalidity, p.todo, len(units), options.unit_max_messages, options.unit_max_bytes,
                p.dst_uidnext,
            )
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
) -> set[str]:
    """Copy the plans' units with a pool; returns the source folders to plan again."""
    units = _units(plans, options)
    if not units:
        return set()
    folder_totals = {p.pair.src: (len(p.todo), p.todo_bytes) for p in plans}
    coordinator = _Coordinator(config, limits, options.settings, units, min(workers, len(units)), reporter, summary)
    try:
        coordinator.run(folder_totals)
    except KeyboardInterrupt:
        coordinator.stop.set()
        reporter.stop_copy()
        _shutdown(coordinator.processes.values(), timeout_s=5.0)
        raise Cancelled("Cancelled.") from None
    coordinator.drain(folder_totals, JOIN_TIMEOUT_S)
    _shutdown(coordinator.processes.values(), 0.0)
    if coordinator.units:
        summary.incomplete.update(u.pair.src for u in coordinator.units.values())
        left = sum(len(u.uids) for u in coordinator.units.values())
        summary.errors.append(f"{left} messages not copied because the run stopped early; run again")
    return coordinator.replan


class _Coordinator:
    """Feeds units to the workers, collects their reports, replaces workers that die."""

    def __init__(
        self,
        config: Config,
        limits: Limits,
        settings: WorkerSettings,
        units: Sequence[WorkUnit],
        workers: int,
        reporter: Reporter,
        summary: Summary,
    ) -> None:
        self.ctx = pool.context()
        self.config = config
        self.limits = limits
        self.settings = settings
        self.workers = workers
        self.reporter = reporter
        self.summary = summary
        self.units = {u.unit_id: u for u in units}
        self.attempts = dict.fromkeys(self.units, 0)
        # Units not yet given to a worker; each worker holds at most one (`taken`).
        self.pending = collections.deque(units)
        self.stop = self.ctx.Event()
        self.processes: dict[int, Any] = {}
        self.channels: dict[int, Connection] = {}
        self.next_index = 0
        self.taken: dict[int, int] = {}
        self.exits: dict[int, WorkerExit] = {}
        self.replan: set[str] = set()
        # Workers that stopped since the last unit finished: when every restart fails
        # (server down, account locked) the run ends instead of starting workers forever.
        self.exits_in_a_row = 0

    def start_worker(self) -> None:
        index = self.next_index
        self.next_index += 1
        channel, child_channel = self.ctx.Pipe()
        process = self.ctx.Process(  # type: ignore[attr-defined]
            target=pool.worker_main,
            args=(index, self.config.src, self.config.dst, self.limits, self.settings, child_channel, self.stop),
            name=f"fastsync-worker-{index}",
            daemon=True,
        )
        process.start()
        child_channel.close()
        self.processes[index] = process
        self.channels[index] = channel
        self.dispatch(index)

    def dispatch(self, index: int) -> None:
        """Give an idle worker the next unit, if any (it waits otherwise: a unit may come back)."""
        if index in self.taken or not self.pending or index not in self.channels:
            return
        unit = self.pending.popleft()
        try:
            self.channels[index].send(unit)
        except OSError:
            self.pending.appendleft(unit)  # the worker is gone; reap() will notice
            return
        self.taken[index] = unit.unit_id

    def run(self, folder_totals: dict[str, tuple[int, int]]) -> None:
        for _ in range(self.workers):
            self.start_worker()
        while self.units:
            for message in self.receive(timeout_s=0.5):
                if isinstance(message, UnitDone):
                    self.finished(message, folder_totals)
                    self.dispatch(message.worker)
                elif isinstance(message, Retrying):
                    self.log_worker("retry", message.worker, message.message, logging.WARNING,
                                    wait_s=round(message.wait_s, 3), attempt=message.attempt)
                    self.reporter.warn(
                        f"{message.message}; retrying in {message.wait_s:.1f} s "
                        f"({message.attempt}/{self.settings.retries})"
                    )
                elif isinstance(message, WorkerExit):
                    self.exits[message.worker] = message
                    if not self.worker_stopped(message):
                        return self.dismiss()
            if not self.reap():
                return self.dismiss()
        self.dismiss()

    def receive(self, timeout_s: float) -> list[object]:
        """Every report waiting on any worker's pipe (waits up to *timeout_s* for the first)."""
        ready = multiprocessing.connection.wait(list(self.channels.values()), timeout_s)
        messages = []
        for index, channel in list(self.channels.items()):
            if channel not in ready:
                continue
            try:
                while channel.poll():
                    messages.append(channel.recv())
            except (EOFError, OSError):
                # The worker is gone; reap() gives its unit to another.
                channel.close()
                del self.channels[index]
        return messages

    def dismiss(self) -> None:
        """Tell every worker to stop after the unit in hand."""
        for channel in self.channels.values():
            with contextlib.suppress(OSError):
                channel.send(None)

    def drain(self, folder_totals: dict[str, tuple[int, int]], timeout_s: float) -> None:
        """Let workers finish the unit in hand (they stop at the next one) and count it.

        After the run stopped early (destination full, login refused) a worker may still
        be appending; what it copies must show in the summary.
        """
        deadline = time.monotonic() + timeout_s
        while self.channels and time.monotonic() < deadline:
            for message in self.receive(timeout_s=0.1):
                if isinstance(message, UnitDone):
                    self.finished(message, folder_totals)

    def log_worker(self, name: str, worker: int, text: str, level: int, **fields: Any) -> None:
        """Log a worker's report with the side its text names and the unit it held."""
        unit = self.units.get(self.taken.get(worker, -1))
        side = next(
            (a.side for a in (self.config.src, self.config.dst) if text.startswith(f"{a.label} (")), ""
        )
        event(
            name, side=side, folder=unit.pair.src if unit else "", level=level, worker=worker, message=text,
            uids=list(unit.uids) if unit else [], **fields,
        )

    def worker_stopped(self, exit: WorkerExit) -> bool:
        """React to a worker's last report; False when the run must stop."""
        text = exit.message.strip()
        self.log_worker("worker exit", exit.worker, text, logging.WARNING, kind=exit.kind, exit_code=exit.exit_code)
        if exit.kind == "fatal":
            # A refused login or an untrusted certificate will be refused again.
            self.summary.errors.append(text)
            return False
        if exit.kind == "full":
            self.summary.errors.append(text)
            self.stop.set()
            return False
        if exit.kind == "throttled":
            self.workers = max(1, self.workers - 1)
            self.reporter.warn(f"{text}; continuing with {self.workers} workers")
        else:
            self.reporter.warn(f"worker {exit.worker} stopped: {text}")
        return True

    def finished(self, done: UnitDone, folder_totals: dict[str, tuple[int, int]]) -> None:
        self.exits_in_a_row = 0
        self.taken.pop(done.worker, None)
        unit = self.units.pop(done.unit_id, None)
        if unit is None:
            return
        s = self.summary
        if done.replan:
            self.replan.add(unit.pair.src)
        elif done.error:
            s.errors.append(done.error)
        if done.error or done.failures:
            s.incomplete.add(unit.pair.src)
        s.copied_by_folder[unit.pair.src] = s.copied_by_folder.get(unit.pair.src, 0) + done.copied + done.vanished
        s.copied += done.copied
        s.copied_bytes += done.size_bytes
        s.vanished += done.vanished
        s.failed.extend(done.failures)
        refused = {f.uid for f in done.failures}
        event(
            "unit copied", side="src", folder=unit.pair.src, uids=[u for u in unit.uids if u not in refused],
            dst_folder=unit.pair.dst, worker=done.worker, copied=done.copied, size_bytes=done.size_bytes,
            vanished=done.vanished, skipped=done.skipped, error=done.error,
        )
        for failure in done.failures:
            event(
                "message refused", side="src", folder=failure.folder, uid=failure.uid, level=logging.ERROR,
                dst_folder=unit.pair.dst, message_id=failure.message_id, size_bytes=failure.size_bytes,
                reason=failure.reason,
            )
        self.reporter.advance(done.folder, done.copied, unit.size_bytes, folder_totals.get(done.folder, (0, 0)))

    def reap(self) -> bool:
        """Notice workers that are gone and give their unit to a fresh one; False to give up."""
        for index, process in list(self.processes.items()):
            if process.is_alive():
                continue
            process.join()
            del self.processes[index]
            self.limits.release_all(index)
            exit = self.exits.pop(index, None)
            if exit is None:
                self.reporter.warn(f"worker {index} exited unexpectedly (exit code {process.exitcode})")
                self.log_worker("worker exit", index, "exited unexpectedly", logging.WARNING, exit_code=process.exitcode)
            throttled = exit is not None and exit.kind == "throttled"
            if not throttled:
                self.exits_in_a_row += 1
            channel = self.channels.pop(index, None)
            if channel is not None:
                channel.close()
            unit_id = self.taken.pop(index, None)
            if unit_id is not None and unit_id in self.units:
                self.requeue(self.units[unit_id], counted=not throttled)
            if self.exits_in_a_row > 2 * self.workers + 2:
                self.summary.errors.append("workers keep failing; stopping (see the warnings above)")
                return False
            if self.units and len(self.processes) < self.workers:
                self.start_worker()
        return True

    def requeue(self, unit: WorkUnit, counted: bool) -> None:
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
        again = dataclasses.replace(unit, attempt=unit.attempt + 1)
        self.units[unit.unit_id] = again
        self.pending.appendleft(again)
        for index in list(self.channels):
            self.dispatch(index)


def _shutdown(processes: Iterable[Any], timeout_s: float) -> None:
    processes = list(processes)
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
