"""Small records that cross process and layer boundaries: primitives only, no sockets or clients.

Records layer: imports only its sibling `errors`; every other module may use it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from fastsync.records.errors import ExitCode, FastsyncError, exit_code_of


@dataclass(frozen=True)
class Folder:
    """One mailbox as LIST reports it, name decoded from modified UTF-7 (RFC 3501 section 5.1.3)."""

    name: str
    delimiter: str
    attributes: tuple[str, ...] = ()

    @property
    def selectable(self) -> bool:
        lowered = {a.lower() for a in self.attributes}
        return not lowered & {"\\noselect", "\\nonexistent"}

    @property
    def special_use(self) -> str:
        """The RFC 6154 role (``\\Sent``, ``\\Trash``...) or an empty string."""
        for attribute in self.attributes:
            if attribute.lower() in SPECIAL_USE:
                return SPECIAL_USE[attribute.lower()]
        return ""


@dataclass(frozen=True)
class Namespace:
    """An account's personal namespace (RFC 2342): the prefix of its folder names (``INBOX.``
    on many hosting servers, usually empty) and its hierarchy delimiter.  ``announced`` is
    False when the server has no NAMESPACE and fastsync inferred it from the folder list."""

    prefix: str
    delimiter: str
    announced: bool = True


SPECIAL_USE = {
    name.lower(): name
    # RFC 6154's roles, and Gmail's \Important (a view, like \Flagged: see folders.VIEWS).
    for name in ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash", "\\Important")
}


@dataclass(frozen=True)
class FolderStatus:
    """What STATUS/EXAMINE tell about a folder; ``size_bytes`` is -1 when unknown,
    ``highestmodseq`` 0 when the server has no CONDSTORE (RFC 7162).  ``permanent_flags``
    is what SELECT reported as PERMANENTFLAGS (RFC 3501 section 7.1; ``\\*``: any keyword),
    None when not reported."""

    messages: int
    size_bytes: int
    uidvalidity: int
    uidnext: int
    highestmodseq: int = 0
    permanent_flags: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Mailboxes:
    """One account as listed: its folders, their STATUS and its personal namespace."""

    folders: list[Folder]
    statuses: dict[str, FolderStatus]
    namespace: Namespace


@dataclass(frozen=True)
class FolderPair:
    """A source folder and the destination folder its messages go to; ``src_role`` is the
    source folder's special use (RFC 6154), e.g. ``\\All`` for Gmail's All Mail."""

    src: str
    dst: str
    reason: str = ""
    src_role: str = ""


@dataclass(frozen=True, slots=True)
class MessageRef:
    """A message as the planner sees it: UID, RFC822.SIZE and its identity (see plan.identity);
    ``gm_msgid`` is Gmail's id of the message (X-GM-MSGID), 0 where the server has none.
    ``identity`` is "" when it was not read: the message goes into an empty destination
    folder, where there is nothing to match it with (see `planner.plan_folders`).

    Slots, no ``__dict__``: the parent holds one per message of the run (40 bytes less
    each, 4 MB of a 100,000-message folder's plan)."""

    uid: int
    size_bytes: int
    identity: str
    has_message_id: bool = True
    gm_msgid: int = 0


@dataclass(frozen=True)
class WorkUnit:
    """A set of source UIDs of one folder pair, bounded by count and bytes, copied by one worker.

    ``dst_uidnext`` is the destination folder's UIDNEXT when it was planned: every copy
    fastsync makes into it afterwards has a UID at least that high, which is where a
    worker looks after an APPEND whose outcome it could not learn.  ``attempt`` counts
    the workers that took the unit before (a worker that died mid-unit).  ``verify``: the
    first unit into its folder checks that the destination stored what was sent.
    ``streamed``: a unit of large messages, whose bodies are relayed, never held whole.

    ``blind``: planned without identities (its destination folder was empty), so another
    unit may carry a message identical to one of its own.  After an APPEND with an unknown
    outcome such a unit is held back (`UnitDone.held`) until no other unit of its
    destination folder is pending or in flight; it then comes back ``settled``, with
    ``others``, the destination UIDs those units' copies received (APPENDUID): every other
    copy since ``dst_uidnext`` that matches one of its messages is its own.
    """

    unit_id: int
    pair: FolderPair
    uidvalidity: int
    uids: tuple[int, ...]
    size_bytes: int
    dst_uidnext: int = 1
    attempt: int = 0
    verify: bool = False
    streamed: bool = False
    blind: bool = False
    settled: bool = False
    others: tuple[int, ...] = ()


@dataclass(frozen=True)
class Failure:
    """A message the run could not copy, with the server's reason."""

    folder: str
    uid: int
    size_bytes: int
    reason: str
    message_id: str = ""
    # The message's Subject and Date as read (`rules.refusals.header_text`), for the report.
    subject: str = ""
    date: str = ""


@dataclass(frozen=True)
class UnitDone:
    """A worker's final report on one unit."""

    worker: int
    unit_id: int
    folder: str
    copied: int
    size_bytes: int
    vanished: int = 0
    failures: tuple[Failure, ...] = field(default_factory=tuple)
    error: str = ""
    replan: bool = False
    skipped: int = 0
    # (source UID, destination UID) of the copies, from APPENDUID (RFC 4315), for the ledger.
    appended: tuple[tuple[int, int], ...] = ()
    dst_uidvalidity: int = 0
    # Bytes the worker's connections moved since its previous report: (on the wire down,
    # up), as IMAP carried them (down, up); they differ where COMPRESS=DEFLATE is on.
    wire: tuple[int, int, int, int] = (0, 0, 0, 0)
    # The destination stored a copy under another identity (it rewrites Message-Id).
    rewrites: bool = False
    # A `WorkUnit.blind` unit whose APPEND may have landed: not copied yet, to be given out
    # again once the other units of its destination folder are done.
    held: bool = False
    # Keywords the destination folder refused (now or on an earlier run): copies went without them.
    dropped_keywords: tuple[str, ...] = ()
    # For the log's timing of a run, each said once per worker (0.0: said before, or not
    # yet): when it had logged in on both sides, and when it sent its first APPEND
    # (seconds since the epoch: comparable across processes).
    logged_in_epoch_s: float = 0.0
    first_append_epoch_s: float = 0.0


@dataclass(frozen=True)
class WorkerExit:
    """A worker's last word: the failure that ruined its connections (not a message).

    ``error`` is the exception itself, which pickles with its fields (`errors.FastsyncError`):
    the parent routes on its type (`pool.Coordinator.worker_stopped`) and logs its ``side``.
    ``error`` is None for a defect of fastsync, an exception no one expected (it may not
    even pickle): ``traceback`` then carries it as text, as CPython's concurrent.futures
    ships a worker's traceback.
    """

    worker: int
    error: FastsyncError | None
    traceback: str = ""

    @property
    def message(self) -> str:
        return self.error.message if self.error is not None else self.traceback.strip()

    @property
    def side(self) -> str:
        return self.error.side if self.error is not None else ""

    @property
    def exit_code(self) -> ExitCode:
        return exit_code_of(self.error) if self.error is not None else ExitCode.INTERNAL


@dataclass(frozen=True)
class Retrying:
    """A worker lost a connection and retries after a pause (shown as a warning); ``error``
    is the failure, with its side."""

    worker: int
    error: FastsyncError
    wait_s: float
    attempt: int


@dataclass(frozen=True)
class SourceDone:
    """A worker's source has sent the last body of its streamed unit *unit_id*, which the
    destination still receives: the worker may be sent its next unit, to fetch it meanwhile."""

    worker: int
    unit_id: int


@dataclass(frozen=True)
class WorkerSettings:
    """Retry policy of the workers (and the planner)."""

    retries: int = 5
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0


@dataclass(frozen=True, slots=True)
class MessageState:
    """What `check` and ``--sync-flags`` compare of a message: its identity (see plan.identity),
    its flags as the server reports them and its internal date (None when unreadable);
    ``gm_msgid`` as in `MessageRef`.  Slots, as `MessageRef`: one per message of a folder."""

    uid: int
    size_bytes: int
    identity: str
    flags: tuple[str, ...]
    internaldate: dt.datetime | None
    has_message_id: bool = True
    gm_msgid: int = 0


@dataclass(frozen=True)
class Fetched:
    """A message body with the metadata that must travel with it (inside one worker only).
    ``internaldate`` is the source's INTERNALDATE as it sent it (an RFC 3501 date-time,
    ``b" 4-Mar-2022 05:06:07 -0700"``), which an APPEND carries unchanged."""

    uid: int
    flags: tuple[str, ...]
    internaldate: bytes
    body: bytes

    def with_flags(self, flags: tuple[str, ...]) -> Fetched:
        # Not dataclasses.replace, which inspects the fields: this is once per message copied.
        return Fetched(self.uid, flags, self.internaldate, self.body)


@dataclass(frozen=True)
class Described:
    """A message known by what must travel with it, without its body: a large message
    whose body goes from the source socket to the destination socket as it arrives
    (inside one worker only).  ``size_bytes`` is RFC822.SIZE and ``header`` the header
    fields of its identity, as planning read them (see plan.identity)."""

    uid: int
    flags: tuple[str, ...]
    internaldate: bytes
    size_bytes: int
    header: bytes

    def with_flags(self, flags: tuple[str, ...]) -> Described:
        return Described(self.uid, flags, self.internaldate, self.size_bytes, self.header)


@dataclass
class FolderScan:
    """What planning learnt of one folder: its status and every message's identity
    (``status`` None and ``error`` set when the folder could not be read).  ``outside``
    counts the messages a date window left out of ``refs``."""

    status: FolderStatus | None
    refs: list[MessageRef]
    error: str = ""
    outside: int = 0

    def keep_only(self, uids: set[int]) -> None:
        """Leave out of ``refs`` the messages whose UID is not in *uids*, counting them."""
        kept = [ref for ref in self.refs if ref.uid in uids]
        self.outside += len(self.refs) - len(kept)
        self.refs = kept


@dataclass(frozen=True)
class Selection:
    """Which messages of the source a run takes (``--max-age``, ``--min-age``, ``--max-size``,
    ``--min-size``) and the largest message the destination accepts.

    ``since`` / ``before`` are calendar dates for ``UID SEARCH SINCE`` / ``BEFORE``, which
    compare the date of a message's internal date, in its own time zone, without the time
    (RFC 3501 section 6.4.4).  A size of 0 is no bound; ``append_limit_bytes`` is the
    destination's APPENDLIMIT (RFC 7889), 0 when it announces none.
    """

    since: dt.date | None = None
    before: dt.date | None = None
    min_size_bytes: int = 0
    max_size_bytes: int = 0
    append_limit_bytes: int = 0

    @property
    def dated(self) -> bool:
        return self.since is not None or self.before is not None


@dataclass(frozen=True)
class Skipped:
    """A message a run leaves out on purpose: outside the size bounds or over the
    destination's APPENDLIMIT.  Not a failure: it does not change the exit code."""

    folder: str
    uid: int
    size_bytes: int
    reason: str
