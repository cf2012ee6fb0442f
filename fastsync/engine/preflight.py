"""`fastsync preflight`: whether each account pair can be copied, found without copying.

Engine layer, beside `run.py`'s modes: `check_pair(config, options, reporter, line)`
returns one `PairReadiness`.  It logs in on both sides, lists and plans as a dry run does
(`planner.list_both`, `pair_both`, `plan_folders`: the same diff, so the same count), and
reads what limits the copy: the destination's storage quota (GETQUOTAROOT, RFC 9208), the
largest message it takes (APPENDLIMIT, RFC 7889, else the provider's documented limit),
the destination names it would refuse (`folders.creation_problem`), with ``--probe`` the
connections each server takes, and an estimate of the copy's duration (`rules.estimate`,
under the byte budgets of `budgets_of`).

It writes nothing to either side: no CREATE, no APPEND, no STORE; folders are read with
EXAMINE and BODY.PEEK as a dry run reads them, and no state file is written (no cache,
no ledger, no lock).  The probe's extra connections log in and out, nothing else.
"""

from __future__ import annotations

import dataclasses
import time

from fastsync.engine import processes
from fastsync.engine.budgets import chosen, window_uses
from fastsync.engine.state import default_dir
from fastsync.engine.planner import PlanRequest, Planner, gmail_sides, list_both, pair_both, plan_folders, selection_of
from fastsync.imap.session import Session, storage_quota
from fastsync.records.errors import ConnectError, FastsyncError, TooManyConnections, describe
from fastsync.records.results import PairReadiness, Reporter
from fastsync.rules import folders as folder_rules
from fastsync.rules.estimate import Budget, duration_s
from fastsync.rules.limits import Limits
from fastsync.settings import providers
from fastsync.settings.config import Account, Config
from fastsync.settings.options import Options

# --probe without --max-connections: as many connections as the most generous provider
# limit fastsync knows of (Stalwart's 16 by default; Gmail's 15).
PROBE_MAX = 16


def budgets_of(config: Config, options: Options, gmail: tuple[bool, bool] = (False, False)) -> list[Budget]:
    """The byte budgets per window that hold the pair's copy back: each side's daily limit
    (`--src-daily-limit`, `--dst-daily-limit`, or Gmail's preset where *gmail* says a side's
    server announced Gmail's extensions or its host is Gmail's), as sync would choose them,
    with what their windows already hold from earlier runs (the state directory's)."""
    found = []
    now = time.time()
    for account, budget in chosen(config, options, gmail):
        uses = window_uses(options.state_dir or default_dir(), account, budget.window_s, now)
        found.append(Budget(budget.limit_bytes, budget.window_s, tuple((now - t, b) for t, b in uses)))
    return found


def check_pair(config: Config, options: Options, reporter: Reporter, line: int = 0) -> PairReadiness:
    """What stands between this pair and a complete copy (`PairReadiness`)."""
    row = PairReadiness(line, config.src.user, config.dst.user)
    limits = Limits.create(processes.context(), 0, 0, 0)
    # One attempt per login: a pre-flight says what is wrong, it does not wait it out.
    planner = Planner(config, limits, dataclasses.replace(options.settings, retries=1), reporter)
    try:
        if _log_in(planner, config, row):
            _plan(planner, config, options, reporter, row)
            if options.probe:
                row.probe_max = options.max_connections or PROBE_MAX
                row.ceilings = {a.side: probe(a, row.probe_max) for a in (config.src, config.dst)}
    except FastsyncError as exc:
        row.problems.append(describe(exc))
    finally:
        reporter.clear_status()
        planner.close()
    return row


def _log_in(planner: Planner, config: Config, row: PairReadiness) -> bool:
    """Log in on each side on its own, so that both sides' logins are known."""
    for account in (config.src, config.dst):
        try:
            session = Session.open(account)
        except FastsyncError as exc:
            setattr(row, f"{account.side}_login", describe(exc))
            row.problems.append(describe(exc))
            continue
        setattr(row, f"{account.side}_login", "ok")
        setattr(planner, account.side, session)
    return not row.problems


def _plan(planner: Planner, config: Config, options: Options, reporter: Reporter, row: PairReadiness) -> None:
    reporter.status(f"{config.src.user}: listing folders")
    src_side, dst_side = list_both(planner)
    pairs, _left_out = pair_both(config, options, src_side, dst_side)
    capabilities = planner.call("reading capabilities", lambda _src, dst: dst.capabilities)
    row.size_limit_bytes = capabilities.appendlimit or providers.message_limit(config.dst)
    existing = {f.name for f in dst_side.folders if f.selectable}
    delimiter = dst_side.namespace.delimiter
    for pair in pairs:
        problem = "" if pair.dst in existing else folder_rules.creation_problem(pair.dst, delimiter)
        if problem:
            row.folders_refused.append(pair.src)
            row.problems.append(f"folder {pair.src!r}: the destination would not create {pair.dst!r}: {problem}")
    selection = selection_of(options, row.size_limit_bytes)
    request = PlanRequest(pairs, existing, (src_side.statuses, dst_side.statuses), selection,
                          blind_ok=capabilities.uidplus)
    plans = plan_folders(planner, request, reporter)
    refused = set(row.folders_refused)
    taken = [p for p in plans if p.pair.src not in refused]
    row.messages = sum(len(p.todo) for p in taken)
    row.size_bytes = sum(p.todo_bytes for p in taken)
    for plan in plans:
        if plan.error:
            row.problems.append(f"folder {plan.pair.src!r}: {plan.error}")
    large = [s for p in taken for s in p.skipped if row.size_limit_bytes and s.size_bytes > row.size_limit_bytes]
    row.too_large, row.too_large_bytes = len(large), max((s.size_bytes for s in large), default=0)
    if large:
        row.problems.append(f"{len(large)} messages are larger than the destination takes "
                            f"({row.size_limit_bytes} bytes; the largest has {row.too_large_bytes})")
    quota = planner.call("reading the quota", lambda _src, dst: storage_quota(dst))
    if quota is not None:
        row.quota_used_bytes, row.quota_limit_bytes = quota
        free = max(0, quota[1] - quota[0])
        if row.size_bytes > free:
            row.problems.append(f"the destination's quota has {free} bytes free for {row.size_bytes} bytes to copy")
    gmail = gmail_sides(planner)
    row.estimate_s = duration_s(row.size_bytes, row.messages, options.down_bps, options.up_bps,
                                budgets_of(config, options, gmail))


def probe(account: Account, most: int) -> int | None:
    """Connections *account*'s server takes at once, the planner's included: logins until
    one is refused for the connections open (`TooManyConnections`) or *most* are open, then
    all closed again.  None when none was refused."""
    opened: list[Session] = []
    try:
        # The planner holds one already.
        while len(opened) + 1 < most:
            try:
                opened.append(Session.open(account))
            except TooManyConnections:
                return len(opened) + 1
            except ConnectError:
                if not opened:
                    raise
                return len(opened) + 1  # a hang-up or a refusal past some count: the ceiling
        return None
    finally:
        for session in opened:
            session.close()
