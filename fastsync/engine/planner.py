"""The survey of both accounts that every command shares, and the diff that makes a plan.

Engine layer.  `Planner` is the parent's two connections (one slot per side), reopened
with the retry rule of `retry.py` when they break.  On it: listing both accounts
(`list_both`), reading message identities of many folder pairs at once and diffing them
(`plan_folders`), and reading flags and dates of one pair (`read_states`) for check and
``--sync-flags``.  Matching goes through `plan.match_by_identity`, so sync, check and
--sync-flags agree on which messages are present.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import functools
import random
import threading
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from fastsync.rules import folders as folder_rules
from fastsync.rules import plan
from fastsync.settings.config import Config
from fastsync.records.errors import ConnectError
from fastsync.records.events import event
from fastsync.imap.pair import SessionPair
from fastsync.imap.folder import SelectedFolder
from fastsync.imap.session import Session
from fastsync.engine.connecting import ConnectSteps
from fastsync.engine.ledger import Ledger
from fastsync.rules.limits import Limits
from fastsync.records.model import (
    Folder,
    FolderPair,
    FolderScan,
    FolderStatus,
    Mailboxes,
    MessageRef,
    MessageState,
    Namespace,
    Selection,
    Skipped,
    WorkerSettings,
)
from fastsync.settings.options import Options
from fastsync.records.results import Reporter
from fastsync.rules.retry import with_retries
from fastsync.engine.state import StateCache, fingerprint

T = TypeVar("T")
U = TypeVar("U")

# The plan's note on a pair the state cache let the run skip.
UNCHANGED = "unchanged since the last run"
NEW_ONLY = "new messages only"

# No date window, no size bound: what a run takes without --max-age, --max-size...
EVERY_MESSAGE = Selection()

Statuses = dict[str, FolderStatus]

# A destination folder's PERMANENTFLAGS; None when the server did not say.
Permanent = tuple[str, ...] | None


@dataclass
class FolderPlan:
    """One folder pair's part of the plan: what the source holds and what is missing."""

    pair: FolderPair
    uidvalidity: int
    src_messages: int
    todo: list[MessageRef] = field(default_factory=list)
    without_id: int = 0
    note: str = ""
    dst_uidnext: int = 1
    error: str = ""
    skipped: list[Skipped] = field(default_factory=list)
    outside: int = 0
    # --delete-dest: the destination folder's messages no source message accounts for,
    # set on the first plan of each destination folder (see `plan_deletions`), with what
    # the destination folder held when they were counted.
    to_delete: list[MessageRef] = field(default_factory=list)
    dst_messages: int = 0
    dst_uidvalidity: int = 0
    # Planned from UIDs and sizes alone: the destination folder was empty (`plan_folders`),
    # and `without_id` is not known.
    blind: bool = False

    @functools.cached_property
    def todo_bytes(self) -> int:
        # Read by every count of the run (plan rows, totals, progress): summed once, as
        # `todo` does not change once planned.
        return sum(plan.known_bytes(r.size_bytes) for r in self.todo)


class Planner(SessionPair):
    """The parent's two connections (one slot per side), reopened with backoff when they break."""

    def __init__(self, config: Config, limits: Limits, settings: WorkerSettings, reporter: Reporter) -> None:
        super().__init__(config.src, config.dst, limits)
        self.settings = settings
        self.reporter = reporter
        # The status line names the account still awaited while both connect.
        self.steps = ConnectSteps(reporter).of
        self.rng = random.Random()
        # Set when the run stops while this planner works in a thread of its own (`planfeed.py`).
        self.halted = threading.Event()

    def call(self, what: str, work: Callable[[Session, Session], T]) -> T:
        """Run *work* with both sessions; a broken connection is reopened and *work* run again."""

        def notify(exc: ConnectError, wait_s: float, attempt: int) -> None:
            if not self.halted.is_set():
                self.reporter.warn(
                    f"{exc.message}; {what}: retrying in {wait_s:.1f} s ({attempt}/{self.settings.retries})")

        def wait(wait_s: float) -> bool:
            # Planning in a thread while the pool copies (`planfeed.py`): a halted run gives up.
            return self.halted.wait(wait_s)

        return with_retries(
            lambda _failures: work(*self.open()), self.settings,
            reset=self.close, notify=notify, wait=wait, rng=self.rng,
        )


def both(src_work: Callable[[], T], dst_work: Callable[[], U]) -> tuple[T, U]:
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


def list_both(planner: Planner) -> tuple[Mailboxes, Mailboxes]:
    """Both accounts' folders, their STATUS and namespaces, read at the same time."""
    return planner.call("listing folders", lambda src, dst: both(functools.partial(mailboxes, src),
                                                                   functools.partial(mailboxes, dst)))


def mailboxes(session: Session) -> Mailboxes:
    """One account's folders with their STATUS, and its personal namespace: as NAMESPACE
    reports it, else inferred from the folders (and ``LIST "" ""`` when they tell nothing)."""
    folders, statuses = session.folders_and_statuses()
    return Mailboxes(folders, statuses, namespace_of(session, folders))


def namespace_of(session: Session, folders: Sequence[Folder]) -> Namespace:
    """The account's personal namespace: NAMESPACE's answer, else inferred from *folders*
    (and from ``LIST "" ""`` when no folder has a delimiter)."""
    namespace = session.namespace()
    if namespace is None:
        known = any(f.delimiter for f in folders)
        namespace = folder_rules.infer_namespace(folders, "" if known else session.root_delimiter())
    return namespace


def pair_both(
    config: Config, options: Options, src: Mailboxes, dst: Mailboxes
) -> tuple[list[FolderPair], list[FolderPair]]:
    """The folder pairs of a run (map or -s/-d, else every folder, across both namespaces)
    and those left out with their reason (`folders.sort_out`, --include / --exclude)."""
    rules = folder_rules.rules_from(config, options)
    pairs, left_out = folder_rules.sort_out(
        src.folders, dst.folders, rules, src.namespace, dst.namespace, options.include
    )
    taken, excluded = folder_rules.filter_pairs(pairs, options.include, options.exclude)
    return taken, left_out + excluded


def selection_of(options: Options, append_limit_bytes: int = 0, today: dt.date | None = None) -> Selection:
    """The messages a run takes: ``--max-age N`` is SINCE the day N days before *today*
    (the local date), ``--min-age N`` BEFORE it, so that the two split a folder exactly;
    the size bounds as given."""
    today = today or dt.date.today()

    def back(days: int | None) -> dt.date | None:
        return None if days is None else today - dt.timedelta(days=days)

    return Selection(
        back(options.max_age_days), back(options.min_age_days), options.min_size_bytes, options.max_size_bytes,
        append_limit_bytes,
    )


def gmail_sides(planner: Planner) -> tuple[bool, bool]:
    """Whether the source and the destination announce Gmail's extensions (X-GM-EXT-1):
    what the daily budgets' presets go by."""
    return planner.call("reading capabilities",
                        lambda src, dst: (src.capabilities.gmail_ext, dst.capabilities.gmail_ext))


def append_limit(planner: Planner) -> int:
    """The destination's APPENDLIMIT (RFC 7889) in bytes, 0 when it announces none."""
    return planner.call("reading capabilities", lambda _src, dst: dst.capabilities.appendlimit or 0)


def readable_on_dst(pair: FolderPair, existing: Collection[str]) -> bool:
    """Whether the pair's destination folder can be examined: it was listed, or it is INBOX,
    which exists on every account whatever LIST said (RFC 3501 section 5.1)."""
    return pair.dst in existing or folder_rules.is_inbox(pair.dst)


@dataclass(frozen=True)
class PlanRequest:
    """What `plan_folders` plans: the folder pairs, the destination folders that exist, both
    sides' STATUS as listed before planning, the messages taken (`Selection`), and how.

    *need_modseq* (--sync-flags): a pair is skipped only when both sides report a
    HIGHESTMODSEQ (RFC 7162 CONDSTORE): without it, a flag change moves neither UIDNEXT
    nor MESSAGES, so an unchanged STATUS proves nothing about flags.  *deletions*
    (--delete-dest): the destination's extra messages are planned too (`plan_deletions`).
    *incremental* (`sync --watch`): a pair whose destination is as the cache left it and
    whose source only gained messages since (`_new_only`) is planned from those alone.
    *blind_ok* (the destination reports the UIDs of copies: RFC 4315 UIDPLUS): a pair
    whose destination folder is empty or absent, and the only pair into it, is read on the
    source for UIDs and sizes alone: every message is missing there, and the server reads
    no header for it (`WorkUnit.blind` says what that changes for a copy).
    """

    pairs: Sequence[FolderPair]
    existing: Collection[str]
    before: tuple[Statuses, Statuses] = ({}, {})
    selection: Selection = EVERY_MESSAGE
    need_modseq: bool = False
    deletions: bool = False
    incremental: bool = False
    blind_ok: bool = False


def plan_folders(
    planner: Planner,
    request: PlanRequest,
    reporter: Reporter,
    cache: StateCache | None = None,
    ledger: Ledger | None = None,
    show_status: bool = True,
) -> list[FolderPlan]:
    """Diff each pair's message identities; pairs the cache knows unchanged are not read
    (`PlanRequest` says what else changes the reading).  Without *show_status*, no status line
    (planning while the copy's progress is shown)."""
    pairs, before, selection = request.pairs, request.before, request.selection
    need_modseq = request.need_modseq
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
    if request.deletions:
        # A destination folder fed by several source folders is compared with all of
        # them at once: their pairs are read together or skipped together.
        read_dst = {p.dst for p in pairs if p.src not in skipped}
        skipped -= {p.src for p in pairs if p.dst in read_dst}
    quick = _quick_plans(planner, pairs, skipped, cache, before, selection) if request.incremental else {}
    to_read = [p for p in pairs if p.src not in skipped and p.src not in quick]
    # A source \All folder (Gmail's All Mail) is diffed against the identities of every
    # other synced source folder: their sources are read even when the cache skips them.
    everything = any(p.src_role == folder_rules.ALL for p in to_read)
    src_read = pairs if everything else to_read
    if to_read and show_status:
        reporter.status(f"planning {len(to_read)} folders")
    # Identities are needed everywhere then (`elsewhere`, below).
    blind_ok = request.blind_ok and not everything
    src_scans, dst_scans, blind = _read(planner, request, to_read, src_read, blind_ok)
    if show_status:
        reporter.clear_status()
    elsewhere = {
        plan.across_folders(ref)
        for p in pairs if everything and p.src_role != folder_rules.ALL and p.src in src_scans
        for ref in src_scans[p.src].refs
    }
    plans = []
    for pair in pairs:
        if pair.src in skipped:
            status = src_before[pair.src]
            plans.append(FolderPlan(pair, status.uidvalidity, status.messages, note=UNCHANGED))
        elif pair.src in quick:
            plans.append(quick[pair.src])
        else:
            only = elsewhere if pair.src_role == folder_rules.ALL else None
            plans.append(diff_pair(pair, src_scans.get(pair.src), dst_scans.get(pair.dst), ledger, only, selection))
            plans[-1].blind = pair.src in blind and not plans[-1].error
    if request.deletions:
        plan_deletions(plans, src_scans, dst_scans, ledger)
    return plans


def _read(
    planner: Planner, request: PlanRequest, to_read: Sequence[FolderPair], src_read: Sequence[FolderPair],
    blind_ok: bool,
) -> tuple[dict[str, FolderScan], dict[str, FolderScan], set[str]]:
    """Both sides' scans of the pairs to plan, and the source folders read without
    identities (`PlanRequest.blind_ok`)."""
    pairs, existing, selection = request.pairs, request.existing, request.selection
    src_before, dst_before = request.before

    def counts(names: Iterable[str], statuses: Statuses) -> list[tuple[str, int]]:
        # Unknown counts read as one open-ended batch.
        return [(name, statuses[name].messages if name in statuses else 1) for name in dict.fromkeys(names)]

    src_names = counts((p.src for p in src_read), src_before)
    dst_names = counts((p.dst for p in to_read if readable_on_dst(p, existing)), dst_before)
    fed = Counter(p.dst for p in pairs)
    blind = {p.src for p in to_read if blind_ok and fed[p.dst] == 1 and _empty_on_dst(p, existing, dst_before)}
    src_scans, dst_scans = planner.call(
        "planning", functools.partial(_survey_both, src_names=src_names, dst_names=dst_names, selection=selection,
                                      blind=blind)
    )
    # A destination folder that gained messages since its STATUS: the source's identities after all.
    late = {p.src for p in to_read if p.src in blind and p.dst in dst_scans and dst_scans[p.dst].refs}
    if late:
        src_scans.update(planner.call("planning", lambda src, _dst: src.survey(
            [n for n in src_names if n[0] in late], plan.identity, selection=selection)))
    return src_scans, dst_scans, blind - late


def _empty_on_dst(pair: FolderPair, existing: Collection[str], dst_before: Statuses) -> bool:
    """Whether the pair's destination folder held no message when listed (or is still to create)."""
    if not readable_on_dst(pair, existing):
        return True
    status = dst_before.get(pair.dst)
    return status is not None and status.messages == 0


def _quick_plans(
    planner: Planner, pairs: Sequence[FolderPair], skipped: set[str], cache: StateCache | None,
    before: tuple[Statuses, Statuses], selection: Selection,
) -> dict[str, FolderPlan]:
    """Source folder -> plan, for the pairs `_new_only` can plan from their new messages:
    not with dates (the source is read through UID SEARCH), a Gmail \\All folder (diffed
    against every other folder) or a destination folder fed by several sources."""
    if cache is None or selection.dated or any(p.src_role == folder_rules.ALL for p in pairs):
        return {}
    fed = Counter(p.dst for p in pairs)
    quick = {}
    for p in pairs:
        if p.src not in skipped and fed[p.dst] == 1:
            found = _new_only(planner, p, cache, before[0], before[1], selection)
            if found is not None:
                quick[p.src] = found
    return quick


def _new_only(
    planner: Planner, pair: FolderPair, cache: StateCache, src_before: Statuses, dst_before: Statuses,
    selection: Selection,
) -> FolderPlan | None:
    """The plan of a pair whose source only gained messages since the cache recorded it in
    step, read from those messages alone; None when that is not proven, and the pair is
    diffed in full.  Proven by CONDSTORE (RFC 7162): the destination's STATUS is the one
    recorded, the source's UIDVALIDITY too, no older source message changed since the
    recorded HIGHESTMODSEQ (CHANGEDSINCE), and MESSAGES grew by exactly the new messages
    (CHANGEDSINCE does not report expunges).  And the destination held as many messages as
    the source then: one it holds besides the source's (left by hand, or by a source
    folder since emptied and refilled) would be matched by a full diff, not copied again."""
    previous = cache.previous(pair)
    src, dst = src_before.get(pair.src), dst_before.get(pair.dst)
    if previous is None or src is None or dst is None:
        return None
    (uidvalidity, uidnext, messages, modseq), dst_then = previous
    if (dst_then != fingerprint(dst) or dst.messages != messages or src.uidvalidity != uidvalidity
            or modseq <= 0 or src.uidnext <= uidnext):
        return None

    def read(session: Session, _dst: Session) -> tuple[FolderStatus, tuple[list[MessageRef], bool]]:
        with session.examine(pair.src) as box:
            return box.status, box.new_since(uidnext, modseq, plan.identity)

    status, (refs, older) = planner.call("planning", read)
    # Messages that arrived after this pass's STATUS are left to the next pass: the cache
    # records the source as that STATUS saw it.
    refs = [r for r in refs if r.uid < src.uidnext]
    if older or status.uidvalidity != uidvalidity or messages + len(refs) != src.messages:
        return None
    todo, skipped = plan.skip_by_size(pair.src, refs, selection)
    without_id = sum(1 for r in refs if not r.has_message_id)
    return FolderPlan(pair, uidvalidity, src.messages, todo, without_id, NEW_ONLY, dst.uidnext, skipped=skipped)


def plan_deletions(
    plans: Sequence[FolderPlan],
    src_scans: dict[str, FolderScan],
    dst_scans: dict[str, FolderScan],
    ledger: Ledger | None = None,
) -> None:
    """Set `FolderPlan.to_delete` for --delete-dest: per destination folder, its messages
    that none of the source folders mapped to it accounts for (`plan.extra`), on the first
    plan of that folder.  Nothing is planned where a source folder could not be read: its
    messages would look extra.  Copies made later have UIDs above those read here, so a
    message this run copies is never among them.  A copy the ledger knows is never extra,
    whatever its identity on the destination (one that rewrites Message-Id).
    """
    groups: dict[str, list[FolderPlan]] = {}
    for p in plans:
        groups.setdefault(p.pair.dst, []).append(p)
    for name, group in groups.items():
        dst = dst_scans.get(name)
        sources = [src_scans.get(p.pair.src) for p in group]
        if dst is None or dst.status is None or any(s is None or s.status is None for s in sources):
            continue
        first = group[0]
        dst_refs = dst.refs
        for p, s in zip(group, sources, strict=True):
            if ledger is not None and s is not None and s.status is not None:
                known = ledger.copies((p.pair.src, s.status.uidvalidity), (name, dst.status.uidvalidity))
                dst_refs = plan.split_known(s.refs, dst_refs, known)[2]
        first.to_delete = plan.extra((r for s in sources if s is not None for r in s.refs), dst_refs)
        first.dst_messages = len(dst.refs)
        first.dst_uidvalidity = dst.status.uidvalidity


def diff_pair(
    pair: FolderPair,
    src: FolderScan | None,
    dst: FolderScan | None,
    ledger: Ledger | None = None,
    elsewhere: set[str] | None = None,
    selection: Selection = EVERY_MESSAGE,
) -> FolderPlan:
    """One pair's plan from the two folders' scans (*dst* None: a folder still to create).

    Copies the ledger knows, still on the destination, are present whatever their identity
    there (a destination that rewrites Message-Id); the rest is matched by identity.  With
    *elsewhere* (for a source \\All folder: the identities of every other synced source
    folder), only the messages in no other folder are candidates: archived mail arrives
    once, labelled mail is not copied a second time.
    """
    if src is None or src.status is None:
        error = src.error if src is not None else f"folder {pair.src!r} could not be read"
        return FolderPlan(pair, 0, 0, note="not synced", error=error)
    if dst is not None and dst.status is None:
        # The destination folder exists but cannot be read: what it holds is not known, and
        # copying into it as if it were empty would copy every message again on each run.
        return FolderPlan(pair, src.status.uidvalidity, len(src.refs), note="not synced",
                          error=dst.error or f"destination folder {pair.dst!r} could not be read")
    dst_refs = dst.refs if dst is not None and dst.status is not None else []
    dst_uidnext = dst.status.uidnext if dst is not None and dst.status is not None else 1
    if dst_uidnext == 0:
        # EXAMINE said no UIDNEXT (RFC 3501 section 6.3.1 requires it, some servers give it
        # only to STATUS).  Every message the survey saw has a lower UID, so one past the
        # highest still marks where this run's copies begin; 0 would count every message
        # already there as one of ours when a unit is retried.
        dst_uidnext = max((r.uid for r in dst_refs), default=0) + 1
    known: dict[int, int] = {}
    if ledger is not None and dst is not None and dst.status is not None:
        known = ledger.copies((pair.src, src.status.uidvalidity), (pair.dst, dst.status.uidvalidity))
    _paired, src_rest, dst_rest = plan.split_known(src.refs, dst_refs, known)
    notes = [pair.reason] if pair.reason.startswith("special-use") else []
    if elsewhere is not None:
        candidates = [r for r in src_rest if plan.across_folders(r) not in elsewhere]
        notes.append(f"{len(src_rest) - len(candidates)} in other folders")
        src_rest = candidates
    todo, skipped = plan.skip_by_size(pair.src, plan.missing(src_rest, [r.identity for r in dst_rest]), selection)
    if dst is None:
        notes.append("new folder")
    if src.outside:
        notes.append(f"{src.outside} outside the dates")
    if skipped:
        notes.append(f"{len(skipped)} skipped by size")
    without_id = sum(1 for r in src.refs if not r.has_message_id)
    return FolderPlan(
        pair, src.status.uidvalidity, len(src.refs), todo, without_id, ", ".join(notes), dst_uidnext,
        skipped=skipped, outside=src.outside,
    )


def _survey_both(
    src: Session, dst: Session, src_names: Sequence[tuple[str, int]], dst_names: Sequence[tuple[str, int]],
    selection: Selection = EVERY_MESSAGE, blind: Collection[str] = (),
) -> tuple[dict[str, FolderScan], dict[str, FolderScan]]:
    """Read both sides at once: each has its own connection, and the wait is the network's.
    Only the source is narrowed to *selection*'s dates: a copy on the destination is
    present whatever its date.  Of the source folders in *blind*, UIDs and sizes only."""
    return both(
        functools.partial(src.survey, src_names, plan.identity, selection=selection, blind=blind),
        functools.partial(dst.survey, dst_names, plan.identity),
    )


def read_states(
    session: Session, folder: str, exists: bool = True, selection: Selection = EVERY_MESSAGE
) -> tuple[list[MessageState], SelectedFolder | None]:
    """Flags, dates and identities of a folder's messages, read-only (EXAMINE, BODY.PEEK),
    only those within *selection*'s dates (UID SEARCH) and sizes; with the folder, still
    selected (None when it does not exist)."""
    if not exists:
        return [], None
    return _within(session.examine(folder), selection)


def _within(box: SelectedFolder, selection: Selection) -> tuple[list[MessageState], SelectedFolder]:
    """The message states of *box* within *selection*, and *box*."""
    states = box.message_states(plan.identity) if box.status.messages else []
    if selection.dated and states:
        within = box.uids_within(selection)
        states = [s for s in states if s.uid in within]
    return [s for s in states if not plan.size_reason(s.size_bytes, selection)], box


def read_kept_states(
    session: Session, folder: str, exists: bool = True, selection: Selection = EVERY_MESSAGE
) -> tuple[list[MessageState], SelectedFolder | None]:
    """`read_states` of a destination folder, whose status says which flags it can keep.

    PERMANENTFLAGS comes only with SELECT (EXAMINE reports it empty: nothing can be stored
    in a read-only session, RFC 3501 section 6.3.2), so the folder is selected read-write;
    nothing is stored, and leaving it expunges nothing (`Session.select`).
    """
    if not exists:
        return [], None
    return _within(session.select(folder), selection)


@dataclass
class PairStates:
    """Both folders of a pair as check and --sync-flags compare them, each still selected
    on its side (None: the folder does not exist) for a closer look (`check --bodies`)."""

    src: list[MessageState]
    dst: list[MessageState]
    src_folder: SelectedFolder | None
    dst_folder: SelectedFolder | None

    @property
    def src_status(self) -> FolderStatus | None:
        return self.src_folder.status if self.src_folder is not None else None

    @property
    def dst_status(self) -> FolderStatus | None:
        return self.dst_folder.status if self.dst_folder is not None else None

    @property
    def permanent(self) -> Permanent:
        """The destination folder's PERMANENTFLAGS (None: not said, or no folder)."""
        return self.dst_status.permanent_flags if self.dst_status is not None else None

    def matching(self, pair: FolderPair, ledger: Ledger | None) -> plan.Matching[MessageState, MessageState]:
        """The two sides paired: first the copies the ledger knows, then by identity."""
        known: dict[int, int] = {}
        if ledger is not None and self.src_status is not None and self.dst_status is not None:
            known = ledger.copies((pair.src, self.src_status.uidvalidity), (pair.dst, self.dst_status.uidvalidity))
        return plan.match_states(self.src, self.dst, known)


def states_both(
    src: Session, dst: Session, pair: FolderPair, dst_exists: bool = True, selection: Selection = EVERY_MESSAGE
) -> PairStates:
    """Both folders of a pair, at once, each narrowed to *selection* (check compares a
    window with the same window): the source read-only, the destination with the flags it
    can keep (`read_kept_states`)."""
    (src_states, src_folder), (dst_states, dst_folder) = both(
        functools.partial(read_states, src, pair.src, selection=selection),
        functools.partial(read_kept_states, dst, pair.dst, dst_exists, selection),
    )
    return PairStates(src_states, dst_states, src_folder, dst_folder)


def flags_to_update(
    planner: Planner,
    plans: Sequence[FolderPlan],
    existing: Collection[str],
    reporter: Reporter,
    ledger: Ledger | None = None,
    selection: Selection = EVERY_MESSAGE,
) -> dict[str, dict[tuple[str, ...], list[int]]]:
    """Destination folder -> {source flag set: destination UIDs} for --sync-flags.

    Both folders of each pair are read with EXAMINE (nothing changes yet); messages are
    matched by identity as the planner does, so only copies present on both sides count.
    Pairs the state cache skipped have no change on either side (HIGHESTMODSEQ equal).
    """
    changes: dict[str, dict[tuple[str, ...], list[int]]] = {}
    # A pair planned from its new messages alone has no other change (`_new_only`).
    readable = [p for p in plans if not p.error and p.note not in (UNCHANGED, NEW_ONLY)
                and readable_on_dst(p.pair, existing)]
    for index, p in enumerate(readable, 1):
        reporter.status(f"comparing flags {index}/{len(readable)} {p.pair.src}")
        states = planner.call("comparing flags", functools.partial(states_both, pair=p.pair, selection=selection))
        permanent = states.permanent
        refused = ledger.refused_keywords(p.pair.dst) if ledger is not None else frozenset()
        unkept = plan.unkept_flags(states.src, permanent, refused)
        if unkept:
            reporter.warn(
                f"destination folder {p.pair.dst!r} cannot keep {', '.join(unkept)} (its PERMANENTFLAGS "
                "lack them, or it refused them); those flags are neither compared nor set"
            )
        matched = states.matching(p.pair, ledger).matched
        folder_changes = plan.flag_changes(matched, permanent, refused)
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
