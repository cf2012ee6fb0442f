"""`fastsync sync`: plan in this process, copy in a process pool.

Command layer: `run(config, options, reporter) -> Summary` is the one entry point.  The
survey (survey.py) lists both accounts, pairs folders and diffs message identities per
folder pair; what is missing is cut into work units (plan.shard) that the pool (pool.py)
copies while this process counts.  ``--sync-flags`` then sets the destination's flags,
``--delete-dest`` deletes the destination's messages the source does not have (planned
with the copy, applied after it), and the state cache records the pairs the run left
complete.

A run that writes holds the destination's lock (lock.py) from before planning to the
end, so a second run for the same destination stops at once; ``--dry-run`` writes
nothing and takes no lock.  Ctrl-C or SIGTERM during the copy or the flag updates ends
the run with its summary and the state of what it finished (`Summary.cancelled`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import sys
import time
from collections.abc import Sequence

from fastsync.engine import changes as watch
from fastsync.rules import folders as folder_rules
from fastsync.rules import plan
from fastsync.engine import pool
from fastsync.engine import processes
from fastsync.settings import providers
from fastsync.settings.config import Config
from fastsync.records.errors import Cancelled, FolderError, UsageError
from fastsync.records.events import event
from fastsync.imap.idle import heard_by
from fastsync.imap.session import Session
from fastsync.engine.ledger import Ledger
from fastsync.rules.limits import Limits, planner_yields, workers_allowed
from fastsync.engine.lock import RunLock
from fastsync.records.model import Folder, FolderPair, FolderStatus, UnitDone, WorkUnit
from fastsync.settings.options import Options
from fastsync.records.results import FolderRow, RefusedFolder, Reporter, Summary
from fastsync.engine.state import StateCache, default_dir
from fastsync.engine.planner import (
    FolderPlan,
    Planner,
    Statuses,
    append_limit,
    flags_to_update,
    list_both,
    pair_both,
    plan_folders,
    selection_of,
)

FlagChanges = dict[str, dict[tuple[str, ...], list[int]]]


def run(config: Config, options: Options, reporter: Reporter, stdin_is_tty: bool | None = None) -> Summary:
    started = time.monotonic()
    # First, so that a second run for this destination stops before it logs in anywhere.
    lock = None if options.dry_run else RunLock.acquire(options.state_dir or default_dir(), config.dst)
    try:
        summary = _sync(config, options, reporter, stdin_is_tty, lock)
    finally:
        if lock is not None:
            lock.release()
    summary.elapsed_s = time.monotonic() - started
    return summary


def _sync(
    config: Config, options: Options, reporter: Reporter, stdin_is_tty: bool | None, lock: RunLock | None
) -> Summary:
    summary = Summary(dry_run=options.dry_run)
    limits = Limits.create(processes.context(), options.down_bps, options.up_bps, options.max_connections)
    workers = workers_allowed(options.workers, options.max_connections)
    if workers < options.workers:
        how = ("the planner logs out while the worker copies" if planner_yields(workers, options.max_connections)
               else "and the planner holds one")
        reporter.warn(
            f"--procs {options.workers} lowered to {workers}: --max-connections {options.max_connections} "
            f"per side, {how}"
        )
    if not options.dry_run:
        # The command line has started it already; a batch pair (`pairjob`) starts it here.
        processes.warm_up()
    cache = StateCache.for_config(config, options.state_dir)
    suffix = (".flags" if options.sync_flags else "") + (".delete" if options.delete_dest else "")
    if suffix and cache.path is not None:
        # A plain sync records a pair as complete whatever its flags and whatever extra
        # messages the destination holds, so --sync-flags and --delete-dest keep caches of
        # their own: each skips only pairs that a run of its kind left in step.
        cache = StateCache(cache.path.with_suffix(suffix + ".json"))
    ledger = Ledger.for_config(config, options.state_dir or default_dir())
    planner = Planner(config, limits, options.settings, reporter)
    try:
        planner.open()
        first = _Run(config, options, reporter, summary, planner, limits, workers, ledger, lock)
        try:
            first.go(cache, stdin_is_tty)
        finally:
            first.close_standby()
        if options.watch and not (summary.cancelled or summary.declined):
            _watch(first, cache)
        if ledger.problem:
            reporter.warn(ledger.problem)
    finally:
        reporter.clear_status()
        planner.close()
        ledger.close()
    return summary


class _Run:
    """One sync's steps, sharing the planner, the caps and the summary."""

    def __init__(
        self, config: Config, options: Options, reporter: Reporter, summary: Summary, planner: Planner,
        limits: Limits, workers: int, ledger: Ledger, lock: RunLock | None = None,
    ) -> None:
        self.config, self.options, self.reporter, self.summary = config, options, reporter, summary
        self.planner, self.limits, self.workers, self.lock = planner, limits, workers, lock
        self.ledger = ledger
        self.rewrites_said = False
        self.selection = selection_of(options)
        self.replanned: set[str] = set()
        # `sync --watch` passes: a pair whose source only gained messages is planned from those.
        self.incremental = False
        # What `go` listed: the source's folders and the folder pairs (the watch starts from them).
        self.src_folders: list[Folder] = []
        self.pairs: list[FolderPair] = []
        self.standby: pool.Standby | None = None

    def go(self, cache: StateCache, stdin_is_tty: bool | None) -> None:
        options, reporter, summary = self.options, self.reporter, self.summary
        reporter.status("listing folders")
        # The statuses are read before planning: whatever changes later shows up as a
        # difference next time (see _remember).
        src_side, dst_side = list_both(self.planner)
        for account, side in ((self.config.src, src_side), (self.config.dst, dst_side)):
            how = "" if side.namespace.announced else " (inferred: no NAMESPACE)"
            reporter.detail(
                f"{account.label} ({account.server}): namespace prefix {side.namespace.prefix!r}, "
                f"delimiter {side.namespace.delimiter!r}{how}"
            )
        before = (src_side.statuses, dst_side.statuses)
        pairs, left_out = pair_both(self.config, options, src_side, dst_side)
        self.src_folders, self.pairs = list(src_side.folders), list(pairs)
        self.start_standby(pairs, before)
        existing = {f.name for f in dst_side.folders if f.selectable}
        self.selection = selection_of(options, append_limit(self.planner))
        if options.delete_dest and (self.selection.dated or options.max_size_bytes or options.min_size_bytes):
            # The source then shows only part of each folder: every destination message
            # outside the window would look deleted at the source.
            raise UsageError(
                "--delete-dest cannot be combined with --max-age, --min-age, --max-size or --min-size: "
                "messages outside them would look deleted; run --delete-dest without them"
            )
        summary.size_bounds = bool(options.max_size_bytes or options.min_size_bytes)
        # A copy's UID from APPENDUID is what lets an empty folder be planned without identities.
        uidplus = self.planner.call("reading capabilities", lambda _src, dst: dst.capabilities.uidplus)
        plans = plan_folders(
            self.planner, pairs, existing, reporter, cache if not options.full else None, before, options.sync_flags,
            self.ledger, self.selection, options.delete_dest, self.incremental, blind_ok=uidplus,
        )
        self.count_plan(plans, left_out)
        deletions = self.within_ceiling(plans) if options.delete_dest else []
        expunge_all = bool(deletions) and not uidplus
        changes: FlagChanges = {}
        if options.sync_flags:
            summary.sync_flags = True
            changes = flags_to_update(self.planner, plans, existing, reporter, self.ledger, self.selection)
            summary.flags_planned = sum(len(uids) for c in changes.values() for uids in c.values())
        reporter.plan(summary.rows)
        for notice in providers.notices(self.config.src, self.config.dst):
            reporter.warn(notice)
        missing_folders = folder_rules.folders_to_create(pairs, existing, dst_side.namespace.delimiter)
        if expunge_all:
            _no_uidplus(self.config, options, reporter, summary.delete_planned)
        if options.dry_run:
            reporter.info("Dry run: nothing was written.")
        elif summary.planned or missing_folders or summary.flags_planned or summary.delete_planned:
            if not _confirmed(options, reporter, summary, missing_folders, stdin_is_tty):
                summary.declined = True
                reporter.info("Nothing copied.")
            else:
                try:
                    if summary.planned or missing_folders:
                        self.execute(pairs, plans, existing, missing_folders)
                    if changes:
                        _update_flags(self.planner, changes, reporter, summary, plans)
                    # After the copy: a run that fails or is stopped on the way deletes nothing.
                    self.delete(plans, deletions)
                except (Cancelled, KeyboardInterrupt) as exc:
                    stopped = exc if isinstance(exc, Cancelled) else Cancelled("Cancelled.")
                    summary.cancelled, summary.cancel_code = stopped.message, int(stopped.exit_code)
                    # Which folders' flags were stored is not known: none counts as in step.
                    summary.incomplete.update(p.pair.src for p in plans if p.pair.dst in changes)
                    # The planner's connection may have been stopped mid-command.
                    self.planner.close()
        if not options.dry_run and not summary.declined:
            # After a cancel, without asking the destination again: the user asked to stop,
            # and the pairs this run copied into are diffed again next time.
            _remember(cache, self.planner, plans, before, summary, read_after=not summary.cancelled)

    def start_standby(self, pairs: Sequence[FolderPair], before: tuple[Statuses, Statuses]) -> None:
        """Start workers while planning runs when the folder counts say there is mail to
        copy (`pool.Standby`): as many as the units that mail makes, at most the pool's.
        Not when the user is asked first, nor when the planner must make room for them."""
        options = self.options
        if not options.confirm or options.dry_run or self.incremental or self.standby is not None or (
                planner_yields(self.workers, options.max_connections)):
            return
        src, dst = before
        units = 0
        for pair in pairs:
            s, d = src.get(pair.src), dst.get(pair.dst)
            if s is None or s.messages <= (d.messages if d else 0):
                continue
            missing_bytes = s.size_bytes - (d.size_bytes if d else 0) if s.size_bytes >= 0 else 0
            units += max(-(-(s.messages - (d.messages if d else 0)) // plan.UNIT_MAX_MESSAGES),
                         -(-missing_bytes // plan.UNIT_MAX_BYTES))
        if units:
            self.standby = pool.Standby(self.config, self.limits, options.settings, min(self.workers, units),
                                        self.lock, self.ledger.path)

    def close_standby(self) -> None:
        """Stop the standby workers no copy took."""
        if self.standby is not None:
            self.standby.close(self.limits)
            self.standby = None

    def count_plan(self, plans: Sequence[FolderPlan], left_out: Sequence[FolderPair] = ()) -> None:
        summary = self.summary
        summary.folders = len(plans)
        for p in plans:
            if p.error:
                summary.errors.append(p.error)
                summary.incomplete.add(p.pair.src)
            event(
                "folder planned", side="src", folder=p.pair.src, dst_folder=p.pair.dst, messages=p.src_messages,
                to_copy=len(p.todo), to_copy_bytes=p.todo_bytes, note=p.note, error=p.error,
                skipped=len(p.skipped), outside_dates=p.outside,
            )
            self.count_skipped(p)
        summary.planned = sum(len(p.todo) for p in plans)
        summary.planned_bytes = sum(p.todo_bytes for p in plans)
        summary.present = sum(p.src_messages - len(p.todo) - len(p.skipped) for p in plans)
        summary.delete_dest = self.options.delete_dest
        to_delete = (lambda p: len(p.to_delete)) if self.options.delete_dest else (lambda _p: None)
        summary.rows = [
            FolderRow(
                p.pair.src, p.pair.dst, p.src_messages, 0, len(p.todo), p.todo_bytes,
                None if p.blind else p.without_id, p.note,
                len(p.skipped), p.outside, to_delete(p),
            )
            for p in plans
        ] + [FolderRow(skip.src, "", 0, 0, note=skip.reason) for skip in left_out]
        for skip in left_out:
            event("folder skipped", side="src", folder=skip.src, dst_folder=skip.dst, reason=skip.reason)

    def count_skipped(self, p: FolderPlan) -> None:
        """Messages the size rule leaves out: in the summary, the log, and for those over the
        destination's APPENDLIMIT one warning per folder rather than a refusal per message."""
        self.summary.skipped.extend(p.skipped)
        for skipped in p.skipped:
            event("message skipped", side="src", folder=skipped.folder, uid=skipped.uid,
                  size_bytes=skipped.size_bytes, reason=skipped.reason)
        limit = self.selection.append_limit_bytes
        over = sum(1 for skipped in p.skipped if skipped.reason == plan.appendlimit_reason(limit))
        if over:
            messages = "message" if over == 1 else "messages"
            self.reporter.warn(
                f"folder {p.pair.src!r}: {over} {messages} over the destination's APPENDLIMIT of {limit} bytes skipped"
            )

    def within_ceiling(self, plans: Sequence[FolderPlan]) -> list[FolderPlan]:
        """The plans whose deletions --max-delete allows.  A folder over the ceiling keeps
        everything, is reported with how many messages would have gone, and the run ends
        with exit code 1: many extra messages usually mean a wrong mapping, not a mirror."""
        summary, ceiling = self.summary, self.options.max_delete
        allowed = []
        for index, p in enumerate(plans):
            if not p.to_delete:
                continue
            event("deletions planned", side="dst", folder=p.pair.dst, uids=[r.uid for r in p.to_delete],
                  messages=p.dst_messages)
            if ceiling.allows(len(p.to_delete), p.dst_messages):
                allowed.append(p)
                continue
            summary.incomplete.update(q.pair.src for q in plans if q.pair.dst == p.pair.dst)
            row = summary.rows[index]
            row.note = ", ".join(filter(None, [row.note, "over --max-delete: nothing deleted"]))
            text = (
                f"folder {p.pair.dst!r}: nothing deleted: {len(p.to_delete)} of its {p.dst_messages} messages "
                f"are not on the source, more than --max-delete allows ({ceiling}); check the folder mapping, "
                f"then run with --max-delete {len(p.to_delete)} to delete them"
            )
            summary.errors.append(text)
            event("deletions refused", side="dst", folder=p.pair.dst, level=logging.WARNING, reason=text)
        summary.delete_planned = sum(len(p.to_delete) for p in allowed)
        return allowed

    def execute(
        self,
        pairs: Sequence[FolderPair],
        plans: Sequence[FolderPlan],
        existing: set[str],
        missing_folders: Sequence[str],
    ) -> None:
        reporter, summary = self.reporter, self.summary
        # Every mapped folder is created, empty ones too: the destination mirrors the tree.
        refused: dict[str, str] = {}
        if missing_folders:
            reporter.detail(f"creating folders {', '.join(map(repr, missing_folders))}")
            refused = self.planner.call("creating folders", lambda _src, dst: dst.create_folders(missing_folders))
            for name in missing_folders:
                if name in refused:
                    event("folder refused", side="dst", folder=name, level=logging.ERROR, reason=refused[name])
                else:
                    event("folder created", side="dst", folder=name)
        plans = self.leave_out(plans, refused) if refused else plans
        copy_started = time.monotonic()
        reporter.start_copy(sum(len(p.todo) for p in plans), sum(p.todo_bytes for p in plans))
        try:
            replan = self.replanned = self.copy(plans)
            if replan:
                # A folder whose UIDVALIDITY changed is planned again, once: its old UIDs
                # name nothing now (RFC 3501 section 2.3.1.1).
                reporter.warn(f"planning again {len(replan)} folders whose UIDVALIDITY changed")
                created = existing | (set(missing_folders) - set(refused))
                again = plan_folders(
                    self.planner, [p for p in pairs if p.src in replan], created, reporter, ledger=self.ledger,
                    selection=self.selection,
                )
                summary.planned += sum(len(p.todo) for p in again)
                summary.incomplete.update(replan)
                self.copy(again)
        finally:
            reporter.stop_copy()
            # Also when Ctrl-C or SIGTERM ended the copy: the summary's rates use it.
            summary.copy_s = time.monotonic() - copy_started

    def leave_out(self, plans: Sequence[FolderPlan], refused: dict[str, str]) -> list[FolderPlan]:
        """The plans still to copy once the destination refused to create *refused*: each
        refused folder is reported once, with the messages it leaves out, not per message."""
        for name, reason in refused.items():
            left = [p for p in plans if p.pair.dst == name]
            self.summary.incomplete.update(p.pair.src for p in left)
            messages = sum(len(p.todo) for p in left)
            self.summary.folders_refused.append(RefusedFolder(name, reason, messages))
        return [p for p in plans if p.pair.dst not in refused]

    def copy(self, plans: Sequence[FolderPlan]) -> set[str]:
        units: list[WorkUnit] = []
        large = sum(r.size_bytes for p in plans for r in p.todo if r.size_bytes > plan.STREAM_MESSAGE_BYTES)
        stream_max = plan.stream_unit_bytes(large, self.workers)
        for p in plans:
            # The first unit into each folder checks what the destination stored (rewriting).
            shards = list(plan.shard(p.pair, p.uidvalidity, p.todo, len(units), dst_uidnext=p.dst_uidnext,
                                     stream_max_bytes=stream_max))
            units.extend(dataclasses.replace(u, verify=i == 0, blind=p.blind) for i, u in enumerate(shards))
        folder_totals = {p.pair.src: (len(p.todo), p.todo_bytes) for p in plans}
        if units and planner_yields(self.workers, self.options.max_connections):
            # --max-connections 1: the planner's connections hold the only slot of each
            # side, which the worker needs.  The planner logs out while the pool copies and
            # logs in again when next needed (Planner.call reopens), after the worker has
            # logged out: never more than one connection per side.
            self.planner.close()
        standby, self.standby = (self.standby, None) if units else (None, self.standby)
        return pool.copy_units(
            self.config, units, folder_totals, self.workers, self.limits, self.options.settings, self.reporter,
            self.summary, self.unit_done, self.options.max_transfer, self.lock, self.ledger.path, standby,
        )

    def unit_done(self, unit: WorkUnit, done: UnitDone) -> None:
        """Say once that the destination rewrites the copies (the workers record them in the
        ledger themselves, once per unit)."""
        if done.rewrites and not self.rewrites_said:
            self.rewrites_said = True
            if done.appended:
                self.reporter.warn("the destination rewrites Message-Id; re-runs rely on the ledger")
            else:
                self.reporter.warn(
                    "the destination rewrites Message-Id and does not report the UIDs of copies (no UIDPLUS, "
                    "RFC 4315): a re-run may duplicate messages"
                )
            event("destination rewrites", side="dst", folder=unit.pair.dst, level=logging.WARNING,
                  ledger=bool(done.appended))

    def delete(self, plans: Sequence[FolderPlan], deletions: Sequence[FolderPlan]) -> None:
        """Delete the destination's extra messages planned before the copy (--delete-dest).

        Only the UIDs read while planning: a message copied since has a higher UID.  A
        destination folder whose source changed UIDVALIDITY during the run keeps everything:
        its extras were counted against messages that may be gone.
        """
        summary = self.summary
        for p in deletions:
            sources = [q.pair.src for q in plans if q.pair.dst == p.pair.dst]
            uids = [r.uid for r in p.to_delete]
            try:
                if self.replanned.intersection(sources):
                    raise FolderError(
                        f"folder {p.pair.dst!r}: nothing deleted: its source folder changed during the run; run again"
                    )
                command = self.planner.call("deleting", functools.partial(
                    _delete, folder=p.pair.dst, uids=uids, uidvalidity=p.dst_uidvalidity
                ))
            except FolderError as exc:
                summary.errors.append(exc.message)
                summary.incomplete.update(sources)
                event("messages not deleted", side="dst", folder=p.pair.dst, uids=uids, level=logging.ERROR,
                      reason=exc.message)
                continue
            summary.deleted += len(uids)
            summary.deleted_by_folder[p.pair.dst] = len(uids)
            event("messages deleted", side="dst", folder=p.pair.dst, uids=uids, command=command)
            self.reporter.detail(f"deleted {len(uids)} messages from {p.pair.dst!r}")


def _watch(first: _Run, cache: StateCache) -> None:
    """`sync --watch`: after the first sync, one pass (a sync of what changed) whenever the
    change feed hears of a change, until Ctrl-C or SIGTERM, which end it with the summary
    of everything done (changes.py says how changes are heard)."""
    config, reporter, summary = first.config, first.reporter, first.summary
    options = dataclasses.replace(first.options, confirm=True)
    folders, notify = _listened(first)
    workers = first.workers
    if options.max_connections:
        # The listeners hold source connections too: planner + listeners + workers fit the cap.
        spare = options.max_connections - 1
        workers = max(1, min(workers, spare - len(folders)))
        room = max(0, spare - workers)
        if room < len(folders):
            polled, folders = folders[room:], folders[:room]
            reporter.warn(
                f"--max-connections {options.max_connections} leaves no connection to watch "
                f"{', '.join(f or 'the account' for f in polled)}: polled every {options.poll_s} s instead"
            )
            notify = notify and bool(folders)
    feed = watch.ChangeFeed(config.src, first.limits, options.settings, reporter, folders, options.poll_s, notify)
    totals = watch.Totals()
    reporter.info(f"First sync: {summary.copied} copied, {summary.present} already present, "
                  f"{len(summary.failed)} failed.")
    how = heard_by(notify, folders)
    reporter.info(f"Watching {config.src.label} ({config.src.server}) for changes: {how}"
                  + ("" if notify else f", every folder polled every {options.poll_s} s") + "; Ctrl-C stops.")
    event("watch started", side="src", how="notify" if notify else "idle", folders=folders, poll_s=options.poll_s)
    feed.start()
    interrupts = watch.Interrupts()
    try:
        with interrupts:
            _follow(first, options, feed, totals, workers, cache, interrupts)
    except (Cancelled, KeyboardInterrupt) as exc:
        stopped = exc if isinstance(exc, Cancelled) else Cancelled("Cancelled.")
        summary.cancelled, summary.cancel_code = stopped.message, int(stopped.exit_code)
    finally:
        feed.close()
        reporter.clear_status()
        reporter.info(f"Watched for {time.monotonic() - totals.started_s:.0f} s: {totals.copied} messages copied, "
                      f"{totals.flags_updated} flags updated, {totals.deleted} deleted after the first sync.")


def _follow(
    first: _Run, options: Options, feed: watch.ChangeFeed, totals: watch.Totals, workers: int, cache: StateCache,
    interrupts: watch.Interrupts,
) -> None:
    """The watch's passes, one per change heard, until a signal or a cancelled pass."""
    config, reporter, summary = first.config, first.reporter, first.summary
    quiet = watch.PassReporter(reporter)
    while True:
        # A Ctrl-C or SIGTERM that a finalizer dropped is raised here (`watch.Interrupts`).
        interrupts.check()
        reporter.status(totals.line(time.monotonic()))
        changes = feed.wait(watch.STEP_S)
        if not changes:
            continue
        for change in changes:
            event("watch change", side="src", folder=change.folder, how=change.how)
        noticed = min(c.at_s for c in changes)
        done = Summary()
        step = _Run(config, options, quiet, done, first.planner, first.limits, workers, first.ledger, first.lock)
        step.rewrites_said, step.incremental = first.rewrites_said, True
        step.go(cache, True)
        first.rewrites_said = step.rewrites_said
        watch.add_pass(summary, done)
        now = time.monotonic()
        totals.count(done.copied, done.flags_updated, done.deleted, noticed, now)
        event("watch pass", copied=done.copied, flags_updated=done.flags_updated, deleted=done.deleted,
              failed=len(done.failed), lag_s=round(now - noticed, 3))
        if done.cancelled:
            summary.cancelled, summary.cancel_code = done.cancelled, done.cancel_code
            return


def _listened(first: _Run) -> tuple[list[str], bool]:
    """What the listeners watch, from the folders the first sync listed: [""] (the whole
    account) where the source offers NOTIFY (RFC 5465), else INBOX and the \\Sent folder
    among those synced (IDLE on each); and whether it is NOTIFY."""
    if first.planner.call("reading capabilities", lambda src, _dst: src.capabilities.notify):
        return [""], True
    roles = {f.name: f.special_use for f in first.src_folders}
    synced = [p.src for p in first.pairs]
    folders = [name for name in synced if name.upper() == "INBOX"]
    return folders + [name for name in synced if roles.get(name) == "\\Sent"][:1], False


def _confirmed(
    options: Options, reporter: Reporter, summary: Summary, missing_folders: Sequence[str], stdin_is_tty: bool | None
) -> bool:
    if options.confirm:
        return True
    interactive = sys.stdin.isatty() if stdin_is_tty is None else stdin_is_tty
    if not interactive:
        raise UsageError("no terminal to ask for confirmation; pass -y/--yes (or set FASTSYNC_CONFIRM=1) to copy")
    flags = f", update the flags of {summary.flags_planned} messages" if summary.flags_planned else ""
    deletes = f", delete {summary.delete_planned} messages from the destination" if summary.delete_planned else ""
    return reporter.confirm(
        f"Copy {summary.planned} messages{flags}{deletes} and create {len(missing_folders)} folders?"
    )


def _no_uidplus(config: Config, options: Options, reporter: Reporter, count: int) -> None:
    """A destination without UIDPLUS (RFC 4315) can only EXPUNGE every \\Deleted message of a
    folder, the user's own included: said before asking; with -y refused unless --force-expunge."""
    text = (
        f"{config.dst.label} ({config.dst.server}) does not offer UIDPLUS (RFC 4315): deleting {count} messages "
        "takes EXPUNGE, which also removes every other message already flagged \\Deleted in those folders"
    )
    if options.confirm and not options.force_expunge and not options.dry_run:
        raise UsageError(f"{text}; pass --force-expunge to accept that, or leave out --delete-dest")
    reporter.warn(text + ("" if options.force_expunge else "; a run with -y needs --force-expunge"))


def _remember(
    cache: StateCache,
    planner: Planner,
    plans: Sequence[FolderPlan],
    before: tuple[Statuses, Statuses],
    summary: Summary,
    read_after: bool = True,
) -> None:
    """Record the pairs this run left complete, so that the next run can skip them.

    The source's status is the one read before planning.  The destination's is read now,
    and kept only when it differs from before by exactly the copies this run made: a
    change by anyone else during the run must not be mistaken for ours.  Without
    *read_after*, the status from before stands in: only pairs nothing was copied into
    can then be recorded.
    """
    src_before, dst_before = before
    changed = read_after and (summary.copied or summary.flags_updated or summary.deleted)
    after = planner.call("reading folder status", lambda _src, dst: dst.statuses()) if changed else dst_before
    for p in plans:
        src, dst0, dst1 = src_before.get(p.pair.src), dst_before.get(p.pair.dst), after.get(p.pair.dst)
        copied = summary.copied_by_folder.get(p.pair.src, 0)
        deleted = summary.deleted_by_folder.get(p.pair.dst, 0)
        # A pair with messages left out by dates or sizes is not complete for a run without them.
        complete = p.pair.src not in summary.incomplete and copied == len(p.todo) and not (p.skipped or p.outside)
        if src is None or dst1 is None or not complete:
            cache.forget(p.pair)
            continue
        if dst0 is None:
            dst0 = FolderStatus(0, -1, dst1.uidvalidity, 1)
        consistent = (
            dst1.uidvalidity == dst0.uidvalidity
            and dst1.uidnext - dst0.uidnext == copied
            and dst1.messages - dst0.messages == copied - deleted
        )
        if consistent:
            cache.record(p.pair, src, dst1)
        else:
            cache.forget(p.pair)
    try:
        cache.save()
    except OSError as exc:
        summary.errors.append(
            f"cannot write the state cache {cache.path}: {exc.strerror}; the next run will diff everything"
        )


def _update_flags(
    planner: Planner, changes: FlagChanges, reporter: Reporter, summary: Summary, plans: Sequence[FolderPlan]
) -> None:
    """STORE the source's flags on the destination copies (never on the source).

    A folder whose STORE is refused leaves its pairs incomplete, so that the state cache
    does not record them as in step and the next --sync-flags run compares them again.

    A folder is selected read-write only for its STOREs, and left without expunging the
    destination's \\Deleted messages (`Session.select`).
    """

    def store(_src: Session, dst: Session, folder: str, folder_changes: dict[tuple[str, ...], list[int]]) -> None:
        with dst.select(folder) as box:
            box.store_flags(folder_changes)

    for folder, folder_changes in changes.items():
        count = sum(len(uids) for uids in folder_changes.values())
        try:
            # STORE FLAGS sets the whole set: repeating it after a lost connection is harmless.
            planner.call("updating flags", functools.partial(store, folder=folder, folder_changes=folder_changes))
        except FolderError as exc:
            summary.errors.append(exc.message)
            summary.incomplete.update(p.pair.src for p in plans if p.pair.dst == folder)
            event("flags not updated", side="dst", folder=folder, level=logging.ERROR, reason=exc.message)
            continue
        summary.flags_updated += count
        for flags, uids in folder_changes.items():
            event("flags updated", side="dst", folder=folder, uids=uids, flags=list(flags))
        reporter.detail(f"flags updated on {count} messages of {folder!r}")


def _delete(_src: Session, dst: Session, folder: str, uids: list[int], uidvalidity: int) -> str:
    """Delete *uids* from a destination folder, selected read-write only for that and left
    without expunging anything else (`Session.select`); the expunge used, for the log.  A
    repeat after a lost connection is harmless: the UIDs gone are simply not found again."""
    with dst.select(folder) as box:
        return box.delete_messages(uids, uidvalidity)
