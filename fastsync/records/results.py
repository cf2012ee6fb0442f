"""What each command returns, and the interface of the reporter that shows it.

Records layer: imports only `fastsync.records.model`.  Commands fill these records; the output
layer (`progress.py`) renders them as tables, summary lines and ``--json`` documents, so a
figure on the terminal and the same figure in a document come from one field.

`Reporter` is the protocol the engine and the commands talk to while they run (status
lines, warnings, the plan, progress, the confirmation prompt); `progress.Reporter`
implements it, and nothing below the entry point imports the output layer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import Any, Protocol

from fastsync.records.errors import ExitCode
from fastsync.records.model import Failure, Folder, FolderPair, FolderStatus, Namespace, Skipped

# The kinds of difference check reports, in the order it reports them.
DIFFERENCE_KINDS = ("missing", "extra", "flags", "date", "body")


class Reporter(Protocol):
    """What a running command may tell the user; only the output layer writes."""

    verbose: bool
    quiet: bool

    def info(self, text: str) -> None: ...

    def detail(self, text: str) -> None: ...

    def warn(self, text: str) -> None: ...

    def status(self, text: str) -> None: ...

    def clear_status(self) -> None: ...

    def plan(self, rows: list[FolderRow]) -> None: ...

    def confirm(self, question: str) -> bool: ...

    def start_copy(self, messages: int, size_bytes: int) -> None: ...

    def more_to_copy(self, messages: int, size_bytes: int) -> None: ...

    def advance(self, folder: str, messages: int, size_bytes: int, folder_total: tuple[int, int] = (0, 0)) -> None: ...

    def stop_copy(self) -> None: ...

    def batch_progress(self, line: str, force: bool = False) -> None: ...


# -- sync --------------------------------------------------------------------------------


@dataclass
class FolderRow:
    """One line of sync's plan."""

    src: str
    dst: str
    messages: int
    size_bytes: int
    to_copy: int = 0
    to_copy_bytes: int = 0
    # None: not read (a folder planned without identities, see planner.plan_folders).
    without_id: int | None = 0
    note: str = ""
    skipped: int = 0
    outside_dates: int = 0
    # --delete-dest: destination messages to delete (None: deletions not asked for).
    to_delete: int | None = None


@dataclass(frozen=True)
class RefusedFolder:
    """A destination folder the server would not create, and the messages left out for it."""

    folder: str
    reason: str
    messages: int


def utc_time(epoch_s: float) -> str:
    """A time as messages, logs and --json give it: ``2026-12-07T15:41:22Z`` (UTC)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))


@dataclass(frozen=True)
class BudgetState:
    """One account's budget as the plan shows it: bytes per window, used in the window
    when planned, and where the figure came from (an option, a provider's preset)."""

    side: str
    account: str
    limit_bytes: int
    window_s: float
    used_bytes: int
    origin: str


@dataclass(frozen=True)
class Parked:
    """An account that waited (--until-done): until when (seconds since the epoch) and why."""

    side: str
    account: str
    until: float
    reason: str


@dataclass
class Summary:
    """What a sync did; every figure of the human summary (and of --json)."""

    folders: int = 0
    planned: int = 0
    planned_bytes: int = 0
    copied: int = 0
    copied_bytes: int = 0
    present: int = 0
    vanished: int = 0
    failed: list[Failure] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # The run's seconds, the wait for an answer at the confirmation prompt (prompt_s) left
    # out: the machine's time, not the user's; the rates are over the copy (copy_s).
    elapsed_s: float = 0.0
    copy_s: float = 0.0
    prompt_s: float = 0.0
    dry_run: bool = False
    declined: bool = False
    sync_flags: bool = False
    flags_planned: int = 0
    flags_updated: int = 0
    copied_by_folder: dict[str, int] = field(default_factory=dict)
    incomplete: set[str] = field(default_factory=set)
    rows: list[FolderRow] = field(default_factory=list)
    folders_refused: list[RefusedFolder] = field(default_factory=list)
    # Left out on purpose (--max-size, --min-size, APPENDLIMIT): not failures.
    skipped: list[Skipped] = field(default_factory=list)
    size_bounds: bool = False
    # --delete-dest: destination messages planned for deletion (within the ceiling), deleted,
    # and per destination folder those deleted; --max-transfer: whether the limit stopped the copy.
    delete_dest: bool = False
    delete_planned: int = 0
    deleted: int = 0
    deleted_by_folder: dict[str, int] = field(default_factory=dict)
    transfer_limited: bool = False
    # The budgets per account and window; the waits --until-done made; without it, when a
    # spent budget allows the run to go on (seconds since the epoch, 0: not stopped by one).
    budgets: list[BudgetState] = field(default_factory=list)
    parked: list[Parked] = field(default_factory=list)
    resume_at: float = 0.0
    # Each budget's uses in its window at the end (by its file's name), for a batch's journal.
    budget_uses: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    # Set when Ctrl-C or SIGTERM stopped the copy: what to say ("Cancelled.") and the exit code.
    cancelled: str = ""
    cancel_code: int = 0
    # Refusals an operator accepted (``fastsync accept``): left out, not failures.
    accepted: list[Failure] = field(default_factory=list)
    # (seconds since the copy began, bytes copied so far), for the report's chart.
    samples: list[tuple[float, int]] = field(default_factory=list)
    # Connection ceilings found: per side ("src", "dst") whose server refused a login for the
    # connections open (`TooManyConnections`), the planner's and the workers' that went on.
    ceilings: dict[str, int] = field(default_factory=dict)
    # The sides whose server throttled a worker ("Request is throttled", [THROTTLED]).
    throttled: list[str] = field(default_factory=list)
    # What the run's connections moved: on the wire (deflated where COMPRESS=DEFLATE is on)
    # down and up, then as IMAP carried it, down and up; `copied_bytes` counts messages.
    wire: list[int] = field(default_factory=lambda: [0, 0, 0, 0])

    def add_wire(self, counts: Sequence[int]) -> None:
        self.wire = [mine + more for mine, more in zip(self.wire, counts, strict=True)]

    @property
    def messages_per_s(self) -> float:
        return self.copied / self.copy_s if self.copy_s > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.copied_bytes / 1e6 / self.copy_s if self.copy_s > 0 else 0.0

    @property
    def complete(self) -> bool:
        return not self.failed and not self.errors and not self.folders_refused and not self.cancelled

    @property
    def exit_code(self) -> int:
        """0 when the run is complete, 1 when something is not copied (run again), or the
        code of what stopped it (Ctrl-C, SIGTERM)."""
        if self.cancelled:
            return self.cancel_code
        return int(ExitCode.OK if self.complete else ExitCode.PARTIAL)


# -- check -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    """One message that differs.  ``src`` / ``dst`` hold the differing values as text
    (flags, internal date, sha256); a missing message has no ``dst_uid``, an extra one no
    ``src_uid``."""

    kind: str
    identity: str
    src_uid: int | None
    dst_uid: int | None
    src: str = ""
    dst: str = ""


@dataclass
class FolderCheck:
    """What check found for one folder pair."""

    pair: FolderPair
    src_messages: int = 0
    dst_messages: int = 0
    differences: list[Difference] = field(default_factory=list)
    error: str = ""
    # Flags of source messages the destination folder cannot keep (PERMANENTFLAGS): not compared.
    unkept_flags: tuple[str, ...] = ()

    def count(self, kind: str) -> int:
        return sum(1 for d in self.differences if d.kind == kind)

    @property
    def matches(self) -> bool:
        return not self.differences and not self.error


@dataclass
class CheckSummary:
    """Every figure of check's report (human and --json)."""

    folders: list[FolderCheck] = field(default_factory=list)
    bodies: bool = False
    elapsed_s: float = 0.0

    def total(self, kind: str) -> int:
        return sum(f.count(kind) for f in self.folders)

    @property
    def kinds(self) -> list[str]:
        """The kinds of difference this check looked for: bodies only with --bodies."""
        return [k for k in DIFFERENCE_KINDS if k != "body" or self.bodies]

    @property
    def errors(self) -> list[str]:
        return [f.error for f in self.folders if f.error]

    @property
    def matches(self) -> bool:
        return all(f.matches for f in self.folders)


# -- show --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FolderInfo:
    """One folder as show lists it; ``status`` None for a \\Noselect folder or on error."""

    folder: Folder
    status: FolderStatus | None
    error: str = ""


@dataclass(frozen=True)
class AccountInfo:
    """One side as show lists it: who, what the server offers, and its folders."""

    side: str
    label: str
    server: str
    user: str
    capabilities: tuple[str, ...]
    folders: tuple[FolderInfo, ...]
    namespace: Namespace = Namespace("", "/")

    @property
    def messages(self) -> int:
        return sum(i.status.messages for i in self.folders if i.status)

    @property
    def size_bytes(self) -> int:
        return sum(i.status.size_bytes for i in self.folders if i.status)


@dataclass(frozen=True)
class Listing:
    """show's result: both accounts and the folder pairs sync would use."""

    src: AccountInfo
    dst: AccountInfo
    pairs: tuple[FolderPair, ...]
    # Pairs not synced, each with its reason (a view such as \\Flagged, the destination's \\All).
    left_out: tuple[FolderPair, ...] = ()
    # Pairs --include / --exclude leave out, each with the reason as its own.
    excluded: tuple[FolderPair, ...] = ()


# -- batch -------------------------------------------------------------------------------


@dataclass
class PairResult:
    """One account pair of a batch: its figures, as its sync's summary gave them."""

    line: int
    src_user: str
    dst_user: str
    # exact | partial | failed | skipped (finished exactly before) | interrupted | not run;
    # planned: a dry run's pair whose plan is complete (``batch -n``).
    outcome: str = "not run"
    copied: int = 0
    present: int = 0
    failed: int = 0
    copied_bytes: int = 0
    # The plan: messages and bytes to copy, destination messages --delete-dest would delete.
    planned: int = 0
    planned_bytes: int = 0
    delete_planned: int = 0
    elapsed_s: float = 0.0
    exit_code: int | None = None
    errors: list[str] = field(default_factory=list)
    # --until-done: the waits of the pair's accounts (as sync's --json gives them: side,
    # account, until, reason); without it, when a spent budget lets the pair go on.
    parked: list[dict[str, Any]] = field(default_factory=list)
    resume_at: str | None = None
    budget_uses: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    # The messages the destination refused (as `Failure` fields) and the refusals accepted.
    refused: list[dict[str, object]] = field(default_factory=list)
    accepted: list[dict[str, object]] = field(default_factory=list)
    # Messages left out on purpose (--max-size, APPENDLIMIT...) and the rules that did.
    skipped: int = 0
    skip_rules: list[str] = field(default_factory=list)
    # Per side whose server refused a login for the connections open, the connections the
    # pair held there then (`Summary.ceilings`; 0: its first login was refused), and how
    # often the batch started the pair again after such a refusal.
    ceilings: dict[str, int] = field(default_factory=dict)
    restarts: int = 0
    # The sides whose server throttled the pair (`Summary.throttled`, or its planner's last error).
    throttled: list[str] = field(default_factory=list)


@dataclass
class BatchSummary:
    """What a batch did: every pair, and the figures of the whole."""

    pairs: list[PairResult] = field(default_factory=list)
    elapsed_s: float = 0.0
    parallel: int = 0
    # Each pair's workers (--procs), as given or as fitted to the cap.
    procs: int = 0
    max_connections_per_server: int = 0
    cancelled: str = ""
    cancel_code: int = 0
    # ``batch -n``: every pair planned, nothing written.
    dry_run: bool = False
    # Bytes copied so far by all pairs, finished or running, and its samples for the report's chart.
    progress_bytes: int = 0
    samples: list[tuple[float, int]] = field(default_factory=list)
    # Per server (host:port) that refused logins for the connections open: the most
    # connections the batch held there without a refusal (`rules.ceiling.Window`).
    ceilings: dict[str, int] = field(default_factory=dict)

    def count(self, outcome: str) -> int:
        return sum(1 for p in self.pairs if p.outcome == outcome)

    @property
    def copied(self) -> int:
        return sum(p.copied for p in self.pairs)

    @property
    def copied_bytes(self) -> int:
        return sum(p.copied_bytes for p in self.pairs)

    @property
    def planned(self) -> int:
        return sum(p.planned for p in self.pairs)

    @property
    def exit_code(self) -> int:
        """0 when every pair is exact (or was before), 1 when some is not, or the stop's code."""
        if self.cancelled:
            return self.cancel_code
        return 0 if all(p.outcome in ("exact", "skipped", "planned") for p in self.pairs) else 1


# -- preflight ---------------------------------------------------------------------------


@dataclass
class PairReadiness:
    """What `fastsync preflight` found for one account pair, writing nothing anywhere.

    ``line``: its line in the pairs file (0 for a config's one pair).  Logins: "ok" or the
    one line that says why not.  To copy: the planner's diff (messages, bytes), of which
    ``too_large`` messages (``too_large_bytes`` the largest) exceed ``size_limit_bytes``
    (APPENDLIMIT, else the provider's documented limit; 0: none known).  The destination's
    quota (GETQUOTAROOT, RFC 9208): bytes used and the limit, None when it has none.
    ``folders_refused``: source folders whose destination name the server will not take.
    ``ceilings``: with --probe, per side the connections its server took (planner's
    included; None: no refusal up to ``probe_max``).  ``problems``: each reason the pair
    cannot complete; none means it can."""

    line: int
    src_user: str
    dst_user: str
    src_login: str = ""
    dst_login: str = ""
    messages: int = 0
    size_bytes: int = 0
    size_limit_bytes: int = 0
    too_large: int = 0
    too_large_bytes: int = 0
    quota_used_bytes: int | None = None
    quota_limit_bytes: int | None = None
    folders_refused: list[str] = field(default_factory=list)
    ceilings: dict[str, int | None] = field(default_factory=dict)
    probe_max: int = 0
    estimate_s: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def can_complete(self) -> bool:
        return not self.problems


@dataclass
class PreflightSummary:
    """Every pair's readiness; exit 0 only when each can complete."""

    pairs: list[PairReadiness] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def exit_code(self) -> int:
        return int(ExitCode.OK if all(p.can_complete for p in self.pairs) else ExitCode.PARTIAL)
