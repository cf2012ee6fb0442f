"""A batch's many pairs: which run at once, under per-server connection caps, and the journal.

Batch layer, below the `fastsync batch` command (`commands/batch.py`), which reads the
files and renders the result: `run_batch(batch, options, reporter) -> BatchSummary`.
Each pair of the pairs file is synced as ``fastsync sync -y`` would sync it, in a
process of its own (`parent.PairProcess`, running `child.py`, which calls the engine's
entry), with its own ``--procs`` workers, state cache, ledger and lock.  How many pairs
run at once and with how many workers is `allocate`'s rule.

Connection caps.  A pair opens at most ``b`` connections per side (its planner's
included), enforced inside the pair by ``--max-connections b``.  The `Scheduler` is the
one place that starts pairs, and it starts one only when, for each server (host:port),
the connection budgets of the pairs running there plus the new one stay within
``--max-connections-per-server``: a source and a destination on the same host:port count
twice against it.  A pair's process ends only after its connections are closed, so the
server never sees more than the cap.  Two pairs for one destination account never run
at once (their syncs would wait for each other's lock).

The journal (`journal.py`) marks each pair as running before it starts and records its
outcome when it ends; a pair that finished exactly is skipped next time unless
``--again``.  Ctrl-C or SIGTERM stops every pair as SIGTERM stops a sync (each finishes
the unit in hand); they are redone by the next run.
"""

from __future__ import annotations

import calendar
import dataclasses
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from fastsync.batch import cluster
from fastsync.batch import parent as pairrun
from fastsync.batch.inputs import Batch, PairLine
from fastsync.batch.journal import Entry, Journal
from fastsync.batch.parent import Callbacks, PairProcess
from fastsync.engine.budgets import book_name
from fastsync.engine.state import account_key, default_dir
from fastsync.records.errors import Cancelled, ExitCode, StateError, UsageError, describe, exit_code_of
from fastsync.records.events import event
from fastsync.records.results import BatchSummary, PairResult, Reporter
from fastsync.rules.ceiling import Window
from fastsync.settings.options import DEFAULT_WORKERS, Options

# Pairs at once on one machine when nothing else decides.
DEFAULT_PARALLEL = 4

# Times a pair is started again after a server refused its logins for the connections
# open (the batch then holds fewer there, `rules.ceiling`), before it counts as failed.
CEILING_RESTARTS = 6

# Options that decide what a finished sync means: a pair done with other values is not done.
_DECISIVE = ("src_folder", "dst_folder", "include", "exclude", "max_age_days", "min_age_days", "max_size_bytes",
             "min_size_bytes", "sync_flags", "delete_dest", "max_delete")


def budget(options: Options, same_server: bool) -> int:
    """Connections per side each pair may open: its workers and its planner, within
    --max-connections, and small enough that one pair fits under the per-server cap."""
    per_side = options.workers + 1
    if options.max_connections:
        per_side = min(per_side, options.max_connections)
    cap = options.max_connections_per_server
    if cap:
        per_side = min(per_side, cap // 2 if same_server else cap)
        if per_side < 1:
            raise UsageError(
                f"--max-connections-per-server {cap} leaves no connection for a pair whose source and destination "
                "are the same server (each side needs one); use 2 or more"
            )
    return per_side


@dataclass(frozen=True)
class Allocation:
    """How a batch shares the connection cap: ``parallel`` pairs at once, each opening at
    most ``per_side`` connections per side with ``workers`` workers (``--procs``)."""

    parallel: int
    per_side: int
    workers: int
    fitted: bool = False

    def __str__(self) -> str:
        pairs = "1 pair" if self.parallel == 1 else f"{self.parallel} pairs"
        return f"{pairs} at once, each with --procs {self.workers} ({self.per_side} connections per side)"


def allocate(options: Options, same_server: bool, pairs: int) -> Allocation:
    """Pairs at once and each pair's workers, for *pairs* pairs to sync.

    Where the user did not choose ``--procs`` and a per-server cap is set, pairs come
    first: as many as the cap holds at one connection per side (at most ``--parallel``,
    else `DEFAULT_PARALLEL`, and *pairs*), then each gets the workers that fit in its
    share of the cap, its planner's connection included (``fitted``).  Several small
    pairs copy faster than one large one (each pair's planning and start-up then overlap
    the others' copies).  Otherwise ``--procs`` and ``--parallel`` hold, within the caps.
    """
    per_side = budget(options, same_server)
    cap = options.max_connections_per_server
    sides = 2 if same_server else 1
    if cap and "workers" not in options.explicit:
        wanted = options.parallel if "parallel" in options.explicit else DEFAULT_PARALLEL
        parallel = max(1, min(wanted, pairs, cap // sides))
        share = cap // (parallel * sides)
        workers = max(1, min(DEFAULT_WORKERS, share - 1))
        per_side = min(share, workers + 1, options.max_connections or share)
        return Allocation(parallel, per_side, min(workers, max(1, per_side - 1)), fitted=True)
    fits = cap // (per_side * sides) if cap else DEFAULT_PARALLEL
    parallel = options.parallel or max(1, min(DEFAULT_PARALLEL, fits))
    return Allocation(parallel, per_side, min(options.workers, max(1, per_side - 1)))


class Scheduler:
    """Starts pairs within the caps, follows them, counts the whole batch."""

    def __init__(self, options: Options, allocation: Allocation, same_server: bool, reporter: Reporter,
                 summary: BatchSummary, journal: Journal | None) -> None:
        self.options, self.reporter, self.summary, self.journal = options, reporter, summary, journal
        self.same_server = same_server
        self.per_side, self.parallel = allocation.per_side, allocation.parallel
        self.cap = options.max_connections_per_server
        # A dry batch is a dry run of every pair: it plans, shows and writes nothing.
        # --until-done: a pair whose budget is spent ends with the time it may go on, and
        # waits for it here, its place among the pairs running given to another meanwhile.
        self.until_done = options.until_done and not options.dry_run
        self.pair_options = dataclasses.replace(
            options, confirm=True, dry_run=options.dry_run, json=False, quiet=True, max_connections=self.per_side,
            workers=allocation.workers, hand_back_waits=True,
        )
        self.pending: list[tuple[PairLine, PairResult, str]] = []
        # Pairs waiting for their budget's window: not started again before (epoch seconds),
        # and the figures of their runs so far.
        self.not_before: dict[int, float] = {}
        self.earlier: dict[int, PairResult] = {}
        self.usage: dict[str, int] = {}
        # Per server, the connections the batch may hold there (AIMD, `rules.ceiling`), and
        # per running pair and server: (window epoch and refusals at its start, peak held).
        self.windows: dict[str, Window] = {}
        self.runs: dict[tuple[int, str], list[int]] = {}
        self.requeued: list[tuple[PairLine, PairResult, str]] = []
        self.carried: dict[int, tuple[int, int]] = {}
        self.busy_dst: set[str] = set()
        self.running: dict[int, PairProcess | cluster.ClusterPair] = {}
        # --cluster: the Dask client, and the event that stops the batch's running tasks.
        self.client: Any = None
        self.stop_name = cluster.stop_event_name()
        # Locally, a pair's process started ahead (`pairrun.spawn`): the next pair to start
        # finds its interpreter up and the sync imported.
        self.spare: subprocess.Popen[bytes] | None = None
        self.lock = threading.Condition()
        self.copied = self.copied_bytes = self.planned_bytes = self.planned_pairs = 0
        self.started_at = time.monotonic()
        # The journal could not record a pair's outcome (full or read-only disk): the
        # batch stops, as it could not tell the next run what was done.
        self.journal_failure: StateError | None = None

    def fits(self, pair: PairLine) -> bool:
        src, dst = pair.config.src, pair.config.dst
        if len(self.running) >= self.parallel or account_key(dst) in self.busy_dst:
            return False
        return all(
            self.window(server).fits(self.usage.get(server, 0), self.per_side * (2 if self.same_server else 1))
            for server in {src.server, dst.server}
        )

    def window(self, server: str) -> Window:
        if server not in self.windows:
            self.windows[server] = Window(self.cap, self.per_side * (2 if self.same_server else 1))
        return self.windows[server]

    def take(self, pair: PairLine, delta: int) -> None:
        for server in (pair.config.src.server, pair.config.dst.server):
            self.usage[server] = self.usage.get(server, 0) + delta * self.per_side
            window = self.window(server)
            if delta > 0:
                self.runs[(pair.line, server)] = [window.epoch, window.refusals, 0]
            for (_line, where), run in self.runs.items():
                if where == server:
                    run[2] = max(run[2], self.usage[server])
        # The account, not its spelling: `U015` and `u015` are one mailbox (and one lock).
        dst = account_key(pair.config.dst)
        (self.busy_dst.add if delta > 0 else self.busy_dst.discard)(dst)

    def start(self, pair: PairLine, result: PairResult, key: str) -> None:
        self.take(pair, +1)
        result.outcome = "running"
        if self.journal is not None:
            self.journal.started(key, pair.line, result.src_user, result.dst_user)
        name = pair.name

        def planned(_messages: int, size_bytes: int) -> None:
            with self.lock:
                self.planned_bytes += size_bytes
                self.planned_pairs += 1

        def advanced(messages: int, size_bytes: int) -> None:
            with self.lock:
                self.copied += messages
                self.copied_bytes += size_bytes
                self.summary.progress_bytes += size_bytes

        options = self.pair_options
        if self.journal is not None:
            # The budgets' uses of the pair's accounts, wherever their earlier runs went.
            kept = self.journal.budget_uses(book_name(a) for a in (pair.config.src, pair.config.dst))
            options = dataclasses.replace(options, carried_uses=tuple((n, tuple(u)) for n, u in kept.items()))
        process: PairProcess | cluster.ClusterPair
        if self.client is not None:
            budgets: dict[str, int] = {}
            for server in (pair.config.src.server, pair.config.dst.server):
                budgets[server] = budgets.get(server, 0) + self.per_side
            process = cluster.ClusterPair(self.client, result, pair.config, options, budgets, self.cap,
                                          self.stop_name)
        else:
            process = PairProcess(result, pair.config, options, Callbacks(
                warn=lambda text: self.reporter.warn(f"line {pair.line} ({name}): {text}"),
                planned=planned, advanced=advanced,
            ), self.spare)
            self.spare = None
        self.running[pair.line] = process

        def follow() -> None:
            process.wait()
            if self.park(pair, result, key):
                return
            with self.lock:
                again = self.after_ceiling(pair, result, key)
            try:
                if self.journal is not None:
                    self.journal.keep_budget_uses(result.budget_uses, options.limit_window)
                if self.journal is not None and not again:
                    self.journal.finished(key, Entry(
                        result.outcome, result.copied, result.present, result.failed, result.copied_bytes,
                        result.elapsed_s, result.exit_code, time.time(), orjson.dumps({
                            "refused": result.refused, "accepted": result.accepted, "errors": result.errors,
                            "skipped": result.skipped, "skip_rules": result.skip_rules,
                        }).decode(),
                    ))
            except StateError as exc:
                self.journal_failure = exc
            with self.lock:
                del self.running[pair.line]
                self.take(pair, -1)
                self.lock.notify_all()

        threading.Thread(target=follow, daemon=True, name=f"fastsync-pair-{pair.line}").start()

    def park(self, pair: PairLine, result: PairResult, key: str) -> bool:
        """--until-done: a pair that stopped for a spent budget waits for its window, its
        place given to the next pair; True when it was put back to wait."""
        earlier = self.earlier.pop(pair.line, None)
        if earlier is not None:
            result.copied, result.copied_bytes = result.copied + earlier.copied, result.copied_bytes + earlier.copied_bytes
            result.parked = earlier.parked + result.parked
        if not (self.until_done and result.resume_at and result.outcome == "partial" and not self.summary.cancelled):
            return False
        until = calendar.timegm(time.strptime(result.resume_at, "%Y-%m-%dT%H:%M:%SZ")) + 1.0
        self.reporter.warn(f"line {pair.line} ({pair.name}): an account's limit is spent; parked until "
                           f"{result.resume_at}, the other pairs go on")
        result.parked.append({"side": "", "account": pair.name, "until": result.resume_at,
                              "reason": "an account's limit is spent"})
        self.earlier[pair.line] = dataclasses.replace(result, errors=[])
        result.errors, result.resume_at = [], None
        with self.lock:
            del self.running[pair.line]
            self.take(pair, -1)
            self.not_before[pair.line] = until
            self.pending.append((pair, result, key))
            self.lock.notify_all()
        return True

    def after_ceiling(self, pair: PairLine, result: PairResult, key: str) -> bool:
        """Tell the windows of the pair's servers how it ended (a refused login there or
        not); True when it is to start again, with fewer connections held at that server:
        it failed only for a login refused for the connections open."""
        earlier = self.carried.pop(pair.line, (0, 0))
        result.copied, result.copied_bytes = result.copied + earlier[0], result.copied_bytes + earlier[1]
        sides = {"src": pair.config.src.server, "dst": pair.config.dst.server}
        # A refused login and throttling both ask for fewer connections there.
        refused = {sides[side] for side in (*result.ceilings, *result.throttled) if side in sides}
        for server in set(sides.values()):
            epoch, refusals, peak = self.runs.pop((pair.line, server), [0, 0, 0])
            window = self.window(server)
            if server not in refused:
                window.finished(peak, refusals)
            elif window.refused(peak, epoch):
                self.reporter.warn(f"{server} refused logins with up to {peak} connections of this batch open; "
                                   f"holding at most {window.allowed} there, more again as pairs finish")
                event("connection ceiling", side="", server=server, held=peak, allowed=window.allowed)
        stopped = result.exit_code in (ExitCode.INTERRUPTED, ExitCode.TERMINATED, ExitCode.HANGUP)
        if not refused or result.exit_code == 0 or stopped or self.summary.cancelled \
                or result.restarts >= CEILING_RESTARTS:
            return False
        result.restarts += 1
        self.carried[pair.line] = (result.copied, result.copied_bytes)
        result.outcome, result.errors, result.ceilings, result.throttled, result.exit_code = "not run", [], {}, [], None
        self.requeued.append((pair, result, key))
        return True

    def run(self, todo: Sequence[tuple[PairLine, PairResult, str]]) -> None:
        pending = self.pending = list(todo)
        try:
            with self.lock:
                while pending or self.running or self.requeued:
                    if self.journal_failure is not None:
                        raise self.journal_failure
                    now = time.time()
                    pending[:0], self.requeued = self.requeued, []
                    for item in [i for i in pending if self.fits(i[0])]:
                        if self.fits(item[0]) and self.not_before.get(item[0].line, 0.0) <= now:
                            pending.remove(item)
                            self.start(*item)
                    if pending and self.spare is None and self.client is None:
                        self.spare = pairrun.spawn()
                    self.lock.wait(0.5)
                    self.show(len(pending))
                if self.journal_failure is not None:
                    raise self.journal_failure
        except (KeyboardInterrupt, Cancelled) as exc:
            self.summary.cancelled, self.summary.cancel_code = describe(exc), int(exit_code_of(exc))
            self.stop_all()
        except StateError:
            self.stop_all()
            raise
        finally:
            if self.spare is not None:
                pairrun.discard(self.spare)

    def stop_all(self) -> None:
        """Stop every running pair once, and wait for them: they finish the unit in hand."""
        for process in list(self.running.values()):
            process.stop()
        with self.lock:
            while self.running:
                self.lock.wait(0.5)

    def show(self, pending: int) -> None:
        s = self.summary
        done = sum(1 for p in s.pairs if p.outcome in ("exact", "partial", "failed", "skipped"))
        failed = sum(1 for p in s.pairs if p.outcome in ("partial", "failed"))
        elapsed = time.monotonic() - self.started_at
        rate = self.copied_bytes / elapsed if elapsed > 0 else 0.0
        # Bytes left: the planned pairs' rest, and for pairs not planned yet the mean of those planned.
        mean = self.planned_bytes / self.planned_pairs if self.planned_pairs else 0.0
        left = max(0.0, self.planned_bytes - self.copied_bytes) + mean * (pending + len(self.running)
                                                                           - min(len(self.running), self.planned_pairs))
        eta = f", ETA {eta_text(left / rate)}" if rate > 0 and self.planned_pairs else ""
        self.reporter.batch_progress(
            f"pairs {done}/{len(s.pairs)} done, {len(self.running)} running, {failed} failed; "
            f"{self.copied} messages, {self.copied_bytes / 1e6:.1f} MB, {rate / 1e6:.1f} MB/s{eta}"
        )


def eta_text(seconds: float) -> str:
    """``42 s``, ``17 min``, ``5 h 20 min``, ``3 d 4 h``: a campaign under daily limits counts in days."""
    minutes, hours, days = int(seconds // 60), int(seconds // 3600), int(seconds // 86400)
    if days:
        return f"{days} d {hours - 24 * days} h"
    if hours:
        return f"{hours} h {minutes - 60 * hours} min"
    return f"{minutes} min" if minutes else f"{seconds:.0f} s"


def run_batch(batch: Batch, options: Options, reporter: Reporter,
              spare: subprocess.Popen[bytes] | None = None, summary: BatchSummary | None = None) -> BatchSummary:
    """The batch; *spare*, a pair process from `pairrun.spawn` (else one started here), is
    the first pair's: the caller starts it early, so that its start-up overlaps the reading
    of the files and of the journal."""
    started = time.monotonic()
    summary = summary if summary is not None else BatchSummary()
    summary.max_connections_per_server, summary.dry_run = options.max_connections_per_server, options.dry_run
    client = cluster.connect(options.cluster, options.plain_cluster) if options.cluster else None
    # A dry run plans every pair, finished before or not, and records nothing: a pair it
    # planned must not pass for one a sync finished.
    journal = None if options.dry_run else Journal.open(options.state_dir or default_dir(), batch.pairs_path)
    if spare is None and client is None:
        spare = pairrun.spawn()
    try:
        context = batch.servers_text + repr([getattr(options, name) for name in _DECISIVE])
        todo = []
        for pair in batch.pairs:
            result = PairResult(pair.line, pair.config.src.user, pair.config.dst.user)
            summary.pairs.append(result)
            key = pair.key(context)
            entry = journal.get(key) if journal is not None else None
            if entry is not None and entry.exit_code == 0 and not options.again:
                result.outcome, result.copied, result.present = "skipped", 0, entry.present + entry.copied
                result.accepted = list(orjson.loads(entry.detail or "{}").get("accepted", []))
                continue
            todo.append((pair, result, key))
        skipped = len(batch.pairs) - len(todo)
        if skipped:
            reporter.info(f"{skipped} pairs finished exactly before and are skipped (--again syncs them again)")
        same_server = batch.template.src.server == batch.template.dst.server
        allocation = allocate(options, same_server, len(todo))
        scheduler = Scheduler(options, allocation, same_server, reporter, summary, journal)
        scheduler.client = client
        scheduler.spare, spare = (spare, None) if todo else (None, spare)
        summary.parallel, summary.procs = allocation.parallel, allocation.workers
        if not allocation.fitted and allocation.per_side < options.workers + 1:
            reporter.warn(
                f"each pair uses at most {allocation.per_side} connections per side "
                f"(--procs {allocation.workers}) to fit the connection caps"
            )
        if todo:
            cap = options.max_connections_per_server
            reporter.info(f"{allocation}" + (f" within --max-connections-per-server {cap}" if cap else ""))
        scheduler.run(todo)
        summary.ceilings = {s: w.ceiling for s, w in scheduler.windows.items() if w.ceiling is not None}
        for server, connections in summary.ceilings.items():
            event("connection ceiling found", server=server, connections=connections)
    finally:
        if spare is not None:
            pairrun.discard(spare)
        if journal is not None:
            journal.close()
        if client is not None:
            client.close()
    summary.elapsed_s = time.monotonic() - started
    return summary
