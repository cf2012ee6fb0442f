"""The engine's one entry: `run(request, reporter) -> result`.

Engine layer.  ``fastsync sync`` (with or without ``--dry-run`` or ``--watch``), ``check``
and ``show``, and every pair of a batch (`batch/child.py`) call `run` with one
`RunRequest`: the config, the options, what to do (`Mode`) and whether a terminal can
confirm (the question goes through the reporter).  The commands hand over the request
and return the result record, which `cli.py` renders.

What each mode does:

    SHOW     list both accounts and the folder mapping (`listing.py`)             -> Listing
    CHECK    compare every folder pair, write nothing (`check.py`)                -> CheckSummary
    DRY_RUN  list, plan and show the plan; write nothing, take no lock            -> Summary
    SYNC     plan, confirm, copy in the pool, then flags and deletions            -> Summary
             (`syncpass.py`)
    WATCH    SYNC, then one pass per change the source reports (`watch.py`)       -> Summary

A run that writes holds the destination's lock (lock.py) from before planning to the
end, so a second run for the same destination stops at once.  Check and sync survey
both sides the same way (`planner.list_both` and `pair_both` on a `Planner`'s two
connections) and match messages with the help of the same ledger.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from dataclasses import dataclass

from fastsync.engine import processes
from fastsync.imap import transport
from fastsync.engine.check import check_pairs
from fastsync.engine.ledger import Ledger
from fastsync.engine.listing import list_accounts
from fastsync.engine.lock import RunLock
from fastsync.engine.planner import Planner
from fastsync.engine.refusals import Refusals
from fastsync.engine.state import StateCache, default_dir
from fastsync.engine.syncpass import RunContext, SyncPass
from fastsync.engine.watch import watch
from fastsync.records.results import CheckSummary, Listing, Reporter, Summary
from fastsync.rules.limits import Limits, planner_yields, workers_allowed
from fastsync.settings.config import Config
from fastsync.settings.options import Options


class Mode(enum.Enum):
    """What a run does (the table in this module's docstring)."""

    SHOW = "show"
    CHECK = "check"
    DRY_RUN = "dry-run"
    SYNC = "sync"
    WATCH = "watch"


@dataclass(frozen=True)
class RunRequest:
    """One run: the config, the options, what to do, and whether stdin is a terminal that
    can confirm a sync (None: ask `sys.stdin`)."""

    config: Config
    options: Options
    mode: Mode
    stdin_is_tty: bool | None = None

    @classmethod
    def sync(cls, config: Config, options: Options, stdin_is_tty: bool | None = None) -> RunRequest:
        """The sync that *options* ask for: a dry run with ``--dry-run``, a watch with ``--watch``."""
        mode = Mode.DRY_RUN if options.dry_run else Mode.WATCH if options.watch else Mode.SYNC
        return cls(config, options, mode, stdin_is_tty)

    @property
    def writes(self) -> bool:
        return self.mode in (Mode.SYNC, Mode.WATCH)


Result = Listing | CheckSummary | Summary


def run(request: RunRequest, reporter: Reporter) -> Result:
    """Do what *request* asks; its result record, for the command to render."""
    if request.mode is Mode.SHOW:
        return list_accounts(request.config, request.options, reporter)
    started = time.monotonic()
    wire_before = transport.wire_bytes()
    result: CheckSummary | Summary
    if request.mode is Mode.CHECK:
        result = _check(request.config, request.options, reporter)
    else:
        result = _sync(request, reporter)
    # Not the time the confirmation prompt waited for an answer (`Summary.prompt_s`).
    result.elapsed_s = time.monotonic() - started - (result.prompt_s if isinstance(result, Summary) else 0.0)
    if isinstance(result, Summary):
        # The workers reported their connections' bytes; these are this process's own.
        result.add_wire(transport.wire_since(wire_before, transport.wire_bytes()))
    return result


def _check(config: Config, options: Options, reporter: Reporter) -> CheckSummary:
    # Only the planner's connections, one per side: no connection cap to share.
    limits = Limits.create(processes.context(), options.down_bps, 0, 0)
    planner = Planner(config, limits, options.settings, reporter)
    ledger = Ledger.for_config(config, options.state_dir or default_dir())
    try:
        return check_pairs(planner, config, options, ledger, reporter)
    finally:
        reporter.clear_status()
        planner.close()
        ledger.close()


def _sync(request: RunRequest, reporter: Reporter) -> Summary:
    config = request.config
    # The mode decides; the options the passes read say the same.
    options = dataclasses.replace(request.options, dry_run=request.mode is Mode.DRY_RUN,
                                  watch=request.mode is Mode.WATCH)
    # First, so that a second run for this destination stops before it logs in anywhere.
    lock = RunLock.acquire(options.state_dir or default_dir(), config.dst) if request.writes else None
    try:
        return _sync_locked(request, options, reporter, lock)
    finally:
        if lock is not None:
            lock.release()


def _sync_locked(request: RunRequest, options: Options, reporter: Reporter, lock: RunLock | None) -> Summary:
    config = request.config
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
    if request.writes:
        # The command line has started it already; a batch pair (`batch.child`) starts it here.
        processes.warm_up()
    cache = state_cache(config, options)
    ledger = Ledger.for_config(config, options.state_dir or default_dir())
    planner = Planner(config, limits, options.settings, reporter)
    refused = Refusals.for_config(config, options.state_dir)
    try:
        planner.open()
        context = RunContext(config, planner, limits, ledger, cache, lock, refused=refused)
        first = SyncPass(context, options, workers, reporter, summary)
        try:
            first.go(request.stdin_is_tty)
        finally:
            first.close_standby()
        if request.mode is Mode.WATCH and not (summary.cancelled or summary.declined):
            watch(first)
        if ledger.problem:
            reporter.warn(ledger.problem)
        if request.writes:
            keep_refusals(refused, summary)
    finally:
        reporter.clear_status()
        planner.close()
        ledger.close()
    return summary


def keep_refusals(refused: Refusals, summary: Summary) -> None:
    """Record what the destination refused this run; the accepted refusals go into the summary."""
    if not summary.declined:
        tried = {row.src for row in summary.rows if row.dst}
        refused.record(summary.failed, tried, tried - summary.incomplete)
        refused.save()
    summary.accepted = [r.failure() for r in refused.listed() if r.accepted]


def state_cache(config: Config, options: Options) -> StateCache:
    """The state cache of a sync of this kind.  A plain sync records a pair as complete
    whatever its flags and whatever extra messages the destination holds, so --sync-flags
    and --delete-dest keep caches of their own: each skips only pairs that a run of its
    kind left in step."""
    cache = StateCache.for_config(config, options.state_dir)
    suffix = (".flags" if options.sync_flags else "") + (".delete" if options.delete_dest else "")
    if suffix and cache.path is not None:
        cache = StateCache(cache.path.with_suffix(suffix + ".json"))
    return cache
