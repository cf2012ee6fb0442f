"""One sync pass: list, plan, confirm, copy in the pool, then flags and deletions.

Engine layer.  The engine's entry (`run.py`) runs one `SyncPass` for ``fastsync sync``
and for a batch pair, and the watch (`watch.py`) one more for each change it hears.
A pass lists both accounts and pairs folders (`planner.list_both`, `pair_both`), diffs
message identities per folder pair (`planner.plan_folders`), cuts what is missing into
work units (`plan.shard`) that the pool (`pool.py`) copies while this process counts,
then ``--sync-flags`` sets the destination's flags and ``--delete-dest`` deletes what the
destination has beyond the source (`writes.py`), and the state cache records the pairs
the pass left complete.  Ctrl-C or SIGTERM during the copy or the flag updates ends the
pass with its summary and the state of what it finished (`Summary.cancelled`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from fastsync.engine import budgets, interrupts, planfeed, pool
from fastsync.engine.ledger import Ledger
from fastsync.engine.lock import RunLock
from fastsync.engine.planner import (
    FolderPlan,
    Planner,
    PlanRequest,
    Statuses,
    append_limit,
    flags_to_update,
    gmail_sides,
    list_both,
    pair_both,
    plan_folders,
    selection_of,
)
from fastsync.engine.refusals import Refusals
from fastsync.engine.state import StateCache, default_dir
from fastsync.engine.worker import PoolSetup
from fastsync.engine.writes import FlagChanges, delete_messages, remember, update_flags
from fastsync.records.errors import Cancelled, FolderError, UsageError, describe, exit_code_of
from fastsync.records.events import event
from fastsync.records.model import Folder, FolderPair, UnitDone, WorkUnit
from fastsync.records.results import FolderRow, RefusedFolder, Reporter, Summary
from fastsync.rules import folders as folder_rules
from fastsync.rules import plan, surveyorder
from fastsync.rules.limits import Limits, planner_yields
from fastsync.settings import providers, tokens
from fastsync.settings.config import Config
from fastsync.settings.options import Options


@dataclass
class RunContext:
    """What every pass of one sync shares: the planner's connections, the caps, the
    ledger, the state cache, the destination's lock (None for a dry run), whether the run
    said already that the destination rewrites Message-Id (said once per run), and the
    keywords it said each destination folder refused (each once per run)."""

    config: Config
    planner: Planner
    limits: Limits
    ledger: Ledger
    cache: StateCache
    lock: RunLock | None = None
    rewrites_said: bool = False
    keywords_said: dict[str, set[str]] = field(default_factory=dict)
    # The messages the destination refused before (None: a run that keeps no record).
    refused: Refusals | None = None

    def pool_setup(self, options: Options) -> PoolSetup:
        """What the pool's workers start with."""
        return PoolSetup(self.config.src, self.config.dst, self.limits, options.settings, self.lock,
                              self.ledger.path, tokens.token_handoff((self.config.src, self.config.dst)))


class SyncPass:
    """One sync's steps, sharing the run's planner, caps and ledger, counting into *summary*.
    *incremental*: a `sync --watch` pass, where a pair whose source only gained messages is
    planned from those."""

    def __init__(
        self, context: RunContext, options: Options, workers: int, reporter: Reporter, summary: Summary,
        incremental: bool = False,
    ) -> None:
        self.context = context
        self.config, self.options, self.reporter, self.summary = context.config, options, reporter, summary
        self.planner, self.limits, self.workers, self.lock = context.planner, context.limits, workers, context.lock
        self.ledger = context.ledger
        self.selection = selection_of(options)
        self.replanned: set[str] = set()
        self.incremental = incremental
        # What `go` listed: the source's folders and the folder pairs (the watch starts from them).
        self.src_folders: list[Folder] = []
        self.pairs: list[FolderPair] = []
        self.standby: pool.Standby | None = None
        self.gate: budgets.Gate | None = None

    def go(self, stdin_is_tty: bool | None) -> None:
        options, reporter, summary, cache = self.options, self.reporter, self.summary, self.context.cache
        reporter.status("listing folders")
        # The statuses are read before planning: whatever changes later shows up as a
        # difference next time (see `writes.remember`).
        src_side, dst_side = list_both(self.planner)
        for account, side in ((self.config.src, src_side), (self.config.dst, dst_side)):
            how = "" if side.namespace.announced else " (inferred: no NAMESPACE)"
            reporter.detail(
                f"{account.where}: namespace prefix {side.namespace.prefix!r}, "
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
        request = PlanRequest(
            pairs, existing, before, self.selection, need_modseq=options.sync_flags, deletions=options.delete_dest,
            incremental=self.incremental, blind_ok=uidplus,
        )
        if streams(self):
            return CopyWhilePlanning(self, request, left_out, dst_side.namespace.delimiter).go()
        plans = plan_folders(self.planner, request, reporter, cache if not options.full else None, self.ledger)
        held = self.hold_refused(plans)
        self.count_plan(plans, left_out)
        self.gate = self.budgets(plans)
        summary.present -= held
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
        # A folder whose source could not be read is not created: nothing is known to go in it.
        unread = {p.pair.src for p in plans if p.error}
        missing_folders = folder_rules.folders_to_create(
            [p for p in pairs if p.src not in unread], existing, dst_side.namespace.delimiter)
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
                        update_flags(self.planner, changes, reporter, summary, plans)
                    # After the copy: a run that fails or is stopped on the way deletes nothing.
                    self.delete(plans, deletions)
                except (Cancelled, KeyboardInterrupt) as exc:
                    summary.cancelled, summary.cancel_code = describe(exc), int(exit_code_of(exc))
                    # Which folders' flags were stored is not known: none counts as in step.
                    summary.incomplete.update(p.pair.src for p in plans if p.pair.dst in changes)
                    # The planner's connection may have been stopped mid-command.
                    self.planner.close()
        if not options.dry_run and not summary.declined:
            # After a cancel, without asking the destination again: the user asked to stop,
            # and the pairs this run copied into are diffed again next time.
            remember(cache, self.planner, plans, before, summary, read_after=not summary.cancelled)

    def budgets(self, plans: Sequence[FolderPlan]) -> budgets.Gate | None:
        """The budgets per account and window of this pass's copy (`budgets.gate_for`)."""
        gmail = gmail_sides(self.planner)
        request = budgets.BudgetRequest(self.config, self.options, self.options.state_dir or default_dir(), gmail,
                                        [r for p in plans for r in p.todo])
        return budgets.gate_for(request, self.reporter, self.summary)

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
                         -(-missing_bytes // plan.BATCH_UNIT_MIN_BYTES))  # `plan.batch_unit_bytes`
        if units:
            self.standby = pool.Standby(self.context.pool_setup(options), min(self.workers, units))

    def close_standby(self) -> None:
        """Stop the standby workers no copy took."""
        if self.standby is not None:
            self.standby.close(self.limits)
            self.standby = None

    def count_plan(self, plans: Sequence[FolderPlan], left_out: Sequence[FolderPair] = ()) -> None:
        for p in plans:
            self.count_folder(p)
        self.count_totals(plans, left_out)

    def count_folder(self, p: FolderPlan) -> None:
        """One folder's plan in the summary's errors and the log."""
        if p.error:
            self.summary.errors.append(p.error)
            self.summary.incomplete.add(p.pair.src)
        event(
            "folder planned", side="src", folder=p.pair.src, dst_folder=p.pair.dst, messages=p.src_messages,
            to_copy=len(p.todo), to_copy_bytes=p.todo_bytes, note=p.note, error=p.error,
            skipped=len(p.skipped), outside_dates=p.outside,
        )
        self.count_skipped(p)

    def count_totals(self, plans: Sequence[FolderPlan], left_out: Sequence[FolderPair] = ()) -> None:
        """The plan's totals and rows in the summary."""
        summary = self.summary
        summary.folders = len(plans)
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

    def hold_refused(self, plans: Sequence[FolderPlan]) -> int:
        """Leave out of *plans* the messages refused too often before, or accepted
        (`rules.refusals.held`); those not accepted are listed as failed without being sent,
        and keep their folder from being recorded complete.  How many were left out."""
        refused, held = self.context.refused, 0
        if refused is None or not refused.items:
            return 0
        for p in plans:
            kept = []
            for ref in p.todo:
                found = refused.held(p.pair.src, ref.uid, self.options.retry_refused)
                if found is None:
                    kept.append(ref)
                    continue
                held += 1
                if not found.accepted:
                    self.summary.incomplete.add(p.pair.src)
                    self.summary.failed.append(dataclasses.replace(found.failure(), reason=(
                        f"{found.reason} (refused by {found.attempts} runs, not sent again: fastsync accept "
                        f"accepts it, --retry-refused tries it more)")))
            if len(kept) != len(p.todo):
                p.todo = kept
                p.__dict__.pop("todo_bytes", None)
        return held

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
        refused = self.create_folders(missing_folders) if missing_folders else {}
        plans = self.leave_out(plans, refused) if refused else plans
        copy_started = time.monotonic()
        reporter.start_copy(sum(len(p.todo) for p in plans), sum(p.todo_bytes for p in plans))
        try:
            self.replanned = self.copy(plans)
            self.plan_again(pairs, existing | (set(missing_folders) - set(refused)))
        finally:
            reporter.stop_copy()
            # Also when Ctrl-C or SIGTERM ended the copy: the summary's rates use it.
            summary.copy_s = time.monotonic() - copy_started

    def create_folders(self, names: Sequence[str]) -> dict[str, str]:
        """Create destination folders; those the server refused, with its reason."""
        self.reporter.detail(f"creating folders {', '.join(map(repr, names))}")
        refused = self.planner.call("creating folders", lambda _src, dst: dst.create_folders(names))
        for name in names:
            if name in refused:
                event("folder refused", side="dst", folder=name, level=logging.ERROR, reason=refused[name])
            else:
                event("folder created", side="dst", folder=name)
        return refused

    def plan_again(self, pairs: Sequence[FolderPair], created: set[str]) -> None:
        """Plan again, once, and copy, the folders whose UIDVALIDITY changed during the copy
        (`replanned`): their old UIDs name nothing now (RFC 3501 section 2.3.1.1)."""
        replan = self.replanned
        if not replan:
            return
        self.reporter.warn(f"planning again {len(replan)} folders whose UIDVALIDITY changed")
        request = PlanRequest([p for p in pairs if p.src in replan], created, selection=self.selection)
        again = plan_folders(self.planner, request, self.reporter, ledger=self.ledger)
        self.summary.planned += sum(len(p.todo) for p in again)
        self.summary.incomplete.update(replan)
        self.changed_again(self.copy(again))

    def changed_again(self, folders: set[str]) -> None:
        """Source folders whose UIDVALIDITY changed again after they were planned again:
        not planned a third time (a folder that changes at every look would loop), but
        reported, so that the run ends incomplete and a re-run copies what was left."""
        self.replanned |= folders
        for name in sorted(folders):
            text = (f"{self.config.src.label} ({self.config.src.server}): folder {name!r} changed UIDVALIDITY "
                    "again while it was copied; its messages not copied yet were left; run again")
            self.summary.errors.append(text)
            self.summary.incomplete.add(name)
            event("folder changed again", side="src", folder=name, level=logging.ERROR, reason=text)

    def leave_out(self, plans: Sequence[FolderPlan], refused: dict[str, str]) -> list[FolderPlan]:
        """The plans still to copy once the destination refused to create *refused*: each
        refused folder is reported once, with the messages it leaves out, not per message."""
        for name, reason in refused.items():
            left = [p for p in plans if p.pair.dst == name]
            self.summary.incomplete.update(p.pair.src for p in left)
            messages = sum(len(p.todo) for p in left)
            self.summary.folders_refused.append(RefusedFolder(name, reason, messages))
        return [p for p in plans if p.pair.dst not in refused]

    def units_of(self, plans: Sequence[FolderPlan], first_id: int = 0) -> list[WorkUnit]:
        """*plans*' work units, numbered from *first_id*."""
        units: list[WorkUnit] = []
        large = sum(r.size_bytes for p in plans for r in p.todo if r.size_bytes > plan.STREAM_MESSAGE_BYTES)
        small = sum(p.todo_bytes for p in plans) - large
        batch_bytes = plan.batch_unit_bytes(small, self.workers)
        bounds = plan.UnitBounds(max_bytes=budgets.unit_bytes(self.gate, batch_bytes),
                                 stream_max_bytes=budgets.unit_bytes(self.gate, plan.stream_unit_bytes(large, self.workers)))
        for p in plans:
            # The first unit into each folder checks what the destination stored (rewriting).
            shards = list(plan.shard(p.pair, p.uidvalidity, p.todo, first_id + len(units), bounds,
                                     dst_uidnext=p.dst_uidnext))
            units.extend(dataclasses.replace(u, verify=i == 0, blind=p.blind) for i, u in enumerate(shards))
        return plan.partial_units_last(units, bounds.max_bytes)

    def copy(self, plans: Sequence[FolderPlan]) -> set[str]:
        units = self.units_of(plans)
        folder_totals = {p.pair.src: (len(p.todo), p.todo_bytes) for p in plans}
        if units and planner_yields(self.workers, self.options.max_connections):
            # --max-connections 1: the planner's connections hold the only slot of each
            # side, which the worker needs.  The planner logs out while the pool copies and
            # logs in again when next needed (Planner.call reopens), after the worker has
            # logged out: never more than one connection per side.
            self.planner.close()
        standby, self.standby = (self.standby, None) if units else (None, self.standby)
        job = pool.CopyJob(units, folder_totals, self.workers, self.options.max_transfer, self.gate)
        return pool.copy_units(
            self.context.pool_setup(self.options), job, self.reporter, self.summary, self.unit_done, standby,
        )

    def unit_done(self, unit: WorkUnit, done: UnitDone) -> None:
        """Say once that the destination rewrites the copies (the workers record them in the
        ledger themselves, once per unit), and once per folder which keywords it refused."""
        said = self.context.keywords_said.setdefault(unit.pair.dst, set())
        new = [k for k in done.dropped_keywords if k.lower() not in said]
        if new:
            said.update(k.lower() for k in new)
            self.reporter.warn(
                f"destination folder {unit.pair.dst!r} refused the keywords {', '.join(new)}; messages that carry "
                "them are copied without them"
            )
            event("keywords refused", side="dst", folder=unit.pair.dst, level=logging.WARNING, keywords=new)
        if done.rewrites and not self.context.rewrites_said:
            self.context.rewrites_said = True
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
            # Ctrl-C or SIGTERM waits for the folder's deletion to be counted (`interrupts`).
            with interrupts.Holding() as signals, signals.held():
                try:
                    if self.replanned.intersection(sources):
                        raise FolderError(
                            f"folder {p.pair.dst!r}: nothing deleted: its source folder changed during the run; "
                            "run again", side="dst",
                        )
                    command = self.planner.call("deleting", functools.partial(
                        delete_messages, folder=p.pair.dst, uids=uids, uidvalidity=p.dst_uidvalidity
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
    asked = time.monotonic()
    try:
        return reporter.confirm(
            f"Copy {summary.planned} messages{flags}{deletes} and create {len(missing_folders)} folders?"
        )
    finally:
        # The user's time, not the run's: left out of the summary's elapsed seconds.
        summary.prompt_s += time.monotonic() - asked


def _no_uidplus(config: Config, options: Options, reporter: Reporter, count: int) -> None:
    """A destination without UIDPLUS (RFC 4315) can only EXPUNGE every \\Deleted message of a
    folder, the user's own included: said before asking; with -y refused unless --force-expunge."""
    text = (
        f"{config.dst.where} does not offer UIDPLUS (RFC 4315): deleting {count} messages "
        "takes EXPUNGE, which also removes every other message already flagged \\Deleted in those folders"
    )
    if options.confirm and not options.force_expunge and not options.dry_run:
        raise UsageError(f"{text}; pass --force-expunge to accept that, or leave out --delete-dest")
    reporter.warn(text + ("" if options.force_expunge else "; a run with -y needs --force-expunge"))


def streams(sync: SyncPass) -> bool:
    """Whether the pool copies while folders are still planned (`CopyWhilePlanning`):
    only when asked (--copy-while-planning: where planning is quick, the survey's thread
    competing with the workers made whole runs slower), and not where the whole plan is
    needed first: a question to the user, a dry run,
    deletions (--max-delete's ceiling is checked before anything), --sync-flags (the
    flags are compared before the copy), --max-transfer and daily limits (both weigh
    the whole copy), a watch's passes, and --max-connections 1 (the planner leaves its
    slot to the worker)."""
    options = sync.options
    if (not options.copy_while_planning or not options.confirm or options.dry_run or options.delete_dest
            or options.sync_flags or sync.incremental or options.max_transfer
            or planner_yields(sync.workers, options.max_connections)):
        return False
    gmail = gmail_sides(sync.planner)
    return not budgets.chosen(sync.config, options, gmail)


class CopyWhilePlanning:
    """A pass whose pool copies while the planner still surveys (`streams`): the
    planner plans group after group in a thread (`planfeed.PlanFeed`, in the order of
    `surveyorder.survey_groups`), creating each group's missing destination folders, and
    each group's units go to the pool as soon as it is planned.  The counts, the rows,
    the refused messages and folders are those the whole plan would give; the plan's
    table is shown once planning is over, after the copy."""

    def __init__(self, sync: SyncPass, request: PlanRequest, left_out: Sequence[FolderPair], delimiter: str) -> None:
        self.sync, self.request, self.left_out, self.delimiter = sync, request, left_out, delimiter
        self.plans: list[FolderPlan] = []
        self.held = 0
        self.next_id = 0
        self.folder_totals: dict[str, tuple[int, int]] = {}
        # Destination folders that exist or were created (the planner's thread adds to it).
        self.created = set(request.existing)

    def go(self) -> None:
        sync, options, reporter, summary = self.sync, self.sync.options, self.sync.reporter, self.sync.summary
        for notice in providers.notices(sync.config.src, sync.config.dst):
            reporter.warn(notice)
        sync.gate = sync.budgets([])  # no daily limit here: a server's word with --until-done only
        feed = planfeed.PlanFeed(self.plan_groups, self.units_of, self.drop_planner)
        copy_started = time.monotonic()
        reporter.start_copy(0, 0)
        try:
            try:
                try:
                    feed.start()
                    standby, sync.standby = sync.standby, None
                    job = pool.CopyJob([], self.folder_totals, sync.workers, gate=sync.gate, feed=feed)
                    sync.replanned = pool.copy_units(sync.context.pool_setup(options), job, reporter, summary,
                                                     sync.unit_done, standby)
                finally:
                    self.planned(feed)
                if feed.error is not None:
                    raise feed.error
                sync.plan_again(self.request.pairs, self.created)
            finally:
                reporter.stop_copy()
                summary.copy_s = time.monotonic() - copy_started
        except (Cancelled, KeyboardInterrupt) as exc:
            summary.cancelled, summary.cancel_code = describe(exc), int(exit_code_of(exc))
            sync.planner.close()
        if not summary.cancelled:
            reporter.plan(summary.rows)
        # After a cancel, without asking the destination again (as `SyncPass.go`).
        remember(sync.context.cache, sync.planner, self.plans, self.request.before, summary,
                 read_after=not summary.cancelled)

    def planned(self, feed: planfeed.PlanFeed) -> None:
        """Once the copy is over (or stopped): what the planner handed over without the
        pool taking it is counted (and, as units, not copied), and the plan's totals and
        rows are those of the folders planned."""
        feed.halt()  # without effect once planning ended
        self.units_of(planfeed.Planned([]), feed.finish())
        feed.close()
        self.sync.planner.halted.clear()
        self.sync.count_totals(self.plans, self.left_out)
        self.sync.summary.present -= self.held
        # Stopped before the survey reached them: listed, and incomplete (not recorded in step).
        planned = {p.pair.src for p in self.plans}
        unplanned = [pair for pair in self.request.pairs if pair.src not in planned]
        if unplanned:
            summary = self.sync.summary
            summary.rows += [FolderRow(pair.src, pair.dst, 0, 0, note="not planned: the run stopped first")
                             for pair in unplanned]
            summary.incomplete.update(pair.src for pair in unplanned)
            summary.errors.append(f"{len(unplanned)} folders not planned because the run stopped early; run again")

    def plan_groups(self, put: Callable[[planfeed.Planned], None], halted: threading.Event) -> None:
        """The planner's thread: plan each group, create its missing folders, hand it over."""
        sync, request = self.sync, self.request
        # A SQLite connection belongs to the thread that opened it: the thread's own.
        ledger = Ledger(sync.ledger.path)
        sync.planner.halted = halted
        cache = sync.context.cache if not sync.options.full else None
        try:
            for group in surveyorder.survey_groups(request.pairs, *request.before, units=sync.workers):
                if halted.is_set():
                    return
                plans = plan_folders(sync.planner, dataclasses.replace(request, pairs=group), sync.reporter, cache,
                                     ledger, show_status=False)
                unread = {p.pair.src for p in plans if p.error}
                missing = folder_rules.folders_to_create([p for p in group if p.src not in unread], self.created,
                                                         self.delimiter)
                refused = sync.create_folders(missing) if missing else {}
                self.created.update(set(missing) - set(refused))
                put(planfeed.Planned(plans, refused))
        finally:
            ledger.close()
            if ledger.problem and not sync.ledger.problem:
                # Said once by the run (`Ledger.problem`), as if the pass's own had met it.
                sync.ledger.problem, sync.ledger.path = ledger.problem, None

    def units_of(self, planned: planfeed.Planned, more: Sequence[WorkUnit] = ()) -> list[WorkUnit]:
        """The coordinator's thread: count a group's plans as `SyncPass.go` counts the whole
        plan's, and cut the units of those whose destination folder exists (with none
        planned, *more*: units the pool did not take, once the copy is over, counted as not
        copied)."""
        sync, summary = self.sync, self.sync.summary
        if more:
            summary.incomplete.update(u.pair.src for u in more)
            summary.errors.append(f"{sum(len(u.uids) for u in more)} messages not copied because the run stopped "
                                  "early; run again")
        plans = planned.plans
        if plans:
            self.held += sync.hold_refused(plans)
            for p in plans:
                sync.count_folder(p)
            order = {pair: index for index, pair in enumerate(self.request.pairs)}
            self.plans = sorted([*self.plans, *plans], key=lambda p: order[p.pair])
        kept = sync.leave_out(plans, planned.refused) if planned.refused else plans
        units = sync.units_of(kept, self.next_id)
        self.next_id += len(units)
        self.folder_totals.update({p.pair.src: (len(p.todo), p.todo_bytes) for p in kept})
        sync.reporter.more_to_copy(sum(len(p.todo) for p in kept), sum(p.todo_bytes for p in kept))
        return units

    def drop_planner(self) -> None:
        """The planner's thread is stuck in a read after the run was stopped: its
        connections are dropped without a word (its read fails, and it gives up)."""
        for session in (self.sync.planner.src, self.sync.planner.dst):
            if session is not None:
                session.close(quietly=True)
