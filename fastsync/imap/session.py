"""IMAP operations on one logged-in connection, returning `fastsync.records.model` records.

Protocol edge, with `transport.py` the only modules that import imapclient or imaplib.
A `Session` turns imapclient's values into records and its exceptions into
`fastsync.records.errors` classes that name the side's label and server (`replies.py` says what a
refusal means), so nothing above this package ever sees an imapclient object.

The contract with the engine (isync's driver interface is the model): session-scoped
operations (LIST, STATUS, NAMESPACE, CREATE, APPEND) are `Session` methods; folder-scoped
ones go through the `SelectedFolder` that `Session.examine` or `Session.select` returns,
which acts on its own folder or raises, never on whatever was selected last; what the
server offers is asked by name (`Session.capabilities`, `capabilities.py`).
`stream_messages` copies large messages from a source folder to a destination session.
"""

from __future__ import annotations

import contextlib
import imaplib
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any, Protocol, TypeVar

from imapclient import exceptions as imap_exc

from fastsync.imap import wire
from fastsync.rules import folders as folder_rules
from fastsync.settings.config import Account
from fastsync.records.errors import ConnectionLost, FolderError, MalformedResponse
from fastsync.imap import appends, exchanges, literals, records, replies, transport
from fastsync.imap.capabilities import Capabilities, status_items
from fastsync.imap.folder import IDENTITY_BATCH, SIZE_ITEMS, SelectedFolder, identity_items
from fastsync.imap.records import Identity
from fastsync.imap.transport import Client, Meter
from fastsync.imap.wire import text_of
from fastsync.records.model import (
    Described, Fetched, Folder, FolderScan, FolderStatus, Namespace, Selection,
)


T = TypeVar("T")

# Folders whose EXAMINE and FETCH commands are in flight at once while planning: enough
# to hide the round trip, few enough that the commands never fill a socket buffer while
# the server waits for us to read its answers.
SURVEY_WINDOW = 16



# What `Session.open` tells of its progress: the step now waited for, "" once logged in.
Step = Callable[[str], None] | None

class Slots(Protocol):
    """A per-side connection cap (limits.ConnectionSlots)."""

    def acquire(self) -> None: ...

    def release(self) -> None: ...


class Session:
    """One logged-in connection to one side.

    Session-scoped operations are its methods: LIST, STATUS, NAMESPACE, CREATE, APPEND.
    Folder-scoped ones (FETCH, SEARCH, STORE, EXPUNGE) belong to the `SelectedFolder`
    that `examine` or `select` returns; the session keeps track of what the server has
    selected, and every rule about entering and leaving a folder lives here (see
    "selection").
    """

    def __init__(self, account: Account, client: Client, slots: Slots | None) -> None:
        self.account = account
        self._client = client
        self._slots = slots
        # Read once after login; again only when the server sends a new list (`guarded`).
        self._capabilities = Capabilities.parse(client.capabilities())
        # The folder the server has selected, whether read-write, and the one handle that
        # may act on it (None: the folder stays selected, but nobody holds it).
        self._selected: str | None = None
        self._writable = False
        self._handle: SelectedFolder | None = None
        # The NAMESPACE reply when it came with the folder list (`folders_and_statuses`).
        self._namespaces: tuple[list[tuple[str, str]] | None] | None = None

    # -- connection --------------------------------------------------------------------

    @classmethod
    def open(
        cls, account: Account, *, slots: Slots | None = None, meter_down: Meter | None = None,
        meter_up: Meter | None = None, step: Step = None,
    ) -> Session:
        """Take a connection slot, connect, secure and log in (`transport.connect`), telling
        *step* what is waited for: the connection and the greeting, STARTTLS, the login,
        and "" once logged in (the parent's status line)."""
        if slots is not None:
            slots.acquire()
        try:
            tell = step or (lambda _text: None)
            tell("connecting, then waiting for the server's greeting")
            session = cls(account, transport.connect(account, meter_down, meter_up, tell), slots)
            tell("")
            return session
        except BaseException:
            if slots is not None:
                slots.release()
            raise

    def close(self, quietly: bool = False) -> None:
        """Log out politely; a connection that is already broken is simply dropped.  With
        *quietly*, not even LOGOUT: in the middle of a literal, anything sent would be read
        as message bytes (RFC 3501 section 4.3)."""
        client, self._client = self._client, None  # type: ignore[assignment]
        self._handle = None
        if client is None:
            return
        try:
            if not quietly:
                with contextlib.suppress(Exception):
                    exchanges.send_logout(client)
            transport.close_quietly(client)
        finally:
            if self._slots is not None:
                self._slots.release()

    @property
    def capabilities(self) -> Capabilities:
        """What the server announced after login (or announced since)."""
        return self._capabilities

    @property
    def client(self) -> Client:
        """The imapclient connection, for the protocol edge's own use (`idle.Listener`)."""
        return self._client

    @property
    def closed(self) -> bool:
        return self._client is None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def where(self) -> str:
        return self.account.where

    @property
    def side(self) -> str:
        return self.account.side

    def folder_error(self, text: str) -> FolderError:
        """A `FolderError` on this side: *text* after the account's name."""
        return FolderError(f"{self.where}: {text}", side=self.side)

    @contextlib.contextmanager
    def guarded(self) -> Iterator[None]:
        """Around every exchange: imapclient's and the socket's failures become fastsync's
        (`guard`), and a capability list the server sends is taken in."""
        with guard(self.account):
            yield
        # A new list in an untagged CAPABILITY response or a [CAPABILITY] response code
        # (RFC 3501 sections 7.2.1 and 7.1), which imaplib files among the untagged
        # responses: the server says its capabilities changed.
        announced = self._client._imap.untagged_responses.pop("CAPABILITY", None) if self._client else None
        if announced and isinstance(announced[-1], bytes):
            self._capabilities = Capabilities.parse(announced[-1].split())

    # -- folders -----------------------------------------------------------------------

    def list_folders(self) -> list[Folder]:
        return self._list('"*"')

    def _list(self, pattern: str) -> list[Folder]:
        with self.guarded():
            typ, text, rows = exchanges.list_replies(self._client, '""', pattern)
        if typ != "OK":
            raise self.folder_error(f"LIST refused: {text}")
        return records.folders_of(rows, self.account)

    def namespace(self) -> Namespace | None:
        """The first personal namespace NAMESPACE (RFC 2342) reports; None without it (the
        caller infers one from the folder list: `folders.infer_namespace`)."""
        if not self.capabilities.namespace:
            return None
        if self._namespaces is not None:
            personal = self._namespaces[0]
        else:
            with self.guarded():
                personal = exchanges.namespace_reply(self._client)
        if not personal:
            return None
        prefix, delimiter = personal[0]
        return Namespace(prefix, delimiter)

    def root_delimiter(self) -> str:
        """The hierarchy delimiter from ``LIST "" ""`` (RFC 3501 section 6.3.8), '' if none."""
        return next((f.delimiter for f in self._list('""') if f.delimiter), "")

    def status(self, folder: str) -> FolderStatus:
        """STATUS of one folder.  Of the selected folder, after leaving it: RFC 3501 section
        6.3.10 says STATUS should not be used on it, and Dovecot then answers from the
        view the selection holds, which misses changes made since."""
        if self._selected is not None and folder_rules.same_name(folder, self._selected):
            self.unselect()
        with self.guarded():
            typ, text, replies = exchanges.status_reply(self._client, folder, status_items(self.capabilities))
        if typ != "OK":
            raise self.folder_error(f"folder {folder!r}: STATUS refused: {typ} {text}")
        found, unreadable = exchanges.status_replies(replies)
        # The reply names the folder as the server spells it ("inbox" for "INBOX"...).
        values = found.get(folder) or (next(iter(found.values())) if len(found) == 1 else None)
        if values is None:
            sent = records.quote(" ".join(unreadable) or "no STATUS reply")
            raise self.folder_error(f"folder {folder!r}: unreadable STATUS reply: {sent}")
        return records.status_of(values, self.account, folder)

    def statuses(self) -> dict[str, FolderStatus]:
        return self.folders_and_statuses()[1]

    def folders_and_statuses(self) -> tuple[list[Folder], dict[str, FolderStatus]]:
        """Every folder and its STATUS, in one round trip where LIST-STATUS (RFC 5819) is offered.

        Nothing may be selected: Dovecot answers STATUS on the selected folder from a
        stale view.
        """
        if not self.capabilities.list_status:
            self.unselect()
            folders = self.list_folders()
            return folders, self._statuses(f.name for f in folders if f.selectable)
        imap = self._client._imap
        with self.guarded():
            # Leaving the selected folder and listing go out together: one round trip.
            leave = self._send_leave()
            # With RETURN options, special-use attributes come only when asked for (RFC 6154 section 5.1).
            special = "SPECIAL-USE " if self.capabilities.special_use else ""
            returns = f"({special}STATUS (" + " ".join(status_items(self.capabilities)) + "))"
            tag = imap._command("LIST", '""', '"*"', "RETURN", returns)
            # NAMESPACE too, in the same round trip: planning asks for it next (`namespace`).
            asked = imap._command("NAMESPACE") if self.capabilities.namespace else None
            if leave is not None:
                imap._command_complete(*leave)
                imap.state = "AUTH"
            typ, data = imap._command_complete("LIST", tag)
            if asked is not None:
                self._namespaces = (exchanges.namespace_completed(self._client, asked),)
            if typ != "OK":
                raise self.folder_error(f"LIST-STATUS refused: {text_of(data)}")
            rows = imap.untagged_responses.pop("LIST", [])
            found, _unreadable = exchanges.status_replies(imap.untagged_responses.pop("STATUS", []))
        folders = records.folders_of(rows, self.account)
        statuses = {}
        for name, values in found.items():
            # A folder whose STATUS is unreadable (or missing: RFC 5819 section 4 lets a
            # server drop one it cannot produce) is left without one; the survey reads it
            # with EXAMINE, which says what is wrong with it, if anything.
            with contextlib.suppress(FolderError):
                statuses[name] = records.status_of(values, self.account, name)
        return folders, statuses

    def _statuses(self, names: Iterator[str]) -> dict[str, FolderStatus]:
        """STATUS of each folder; one refused or unreadable is left out, as LIST-STATUS leaves
        it out (above): a folder never used, or one that cannot be read, stops nothing but
        itself."""
        statuses = {}
        for name in names:
            with contextlib.suppress(FolderError):
                statuses[name] = self.status(name)
        return statuses

    def create_folder(self, folder: str) -> bool:
        """Create a folder; True when it was created, False when it already existed."""
        try:
            with self.guarded():
                self._client.create_folder(folder)
        except imap_exc.IMAPClientError as exc:
            text = text_of(exc)
            if replies.already_exists(text):
                return False
            raise self.folder_error(f"cannot create folder {folder!r}: {text}") from None
        return True

    def create_folders(self, names: Sequence[str]) -> dict[str, str]:
        """Create folders, pipelined, in the given order (parents first).

        Returns the folders the server refused, each with its reply text; a folder that
        already exists is not refused.
        """
        with self.guarded():
            commands = [("CREATE", transport.quoted_folder(self._client, n)) for n in names]
            results = transport.pipelined(self._client, "CREATE", commands)
        return {
            name: text
            for name, (typ, text) in zip(names, results, strict=True)
            if typ != "OK" and not replies.already_exists(text)
        }

    # -- selection ---------------------------------------------------------------------
    #
    # Every rule of RFC 3501 about entering and leaving a folder, in one place:
    # - EXAMINE selects read-only: nothing in the folder can change (section 6.3.2).
    # - SELECT or EXAMINE of a folder leaves the one selected before without expunging;
    #   a failed one leaves no folder selected (section 6.3.1).
    # - CLOSE expunges every \Deleted message, silently, when the folder was selected
    #   read-write (section 6.4.2); UNSELECT (RFC 3691) never does.  So a read-write
    #   selection is left by UNSELECT where announced, else by EXAMINE of the same folder.
    # - STATUS of the selected folder is asked only after leaving it (`status`).
    # Each selection makes one `SelectedFolder`; any later one, or leaving, ends it.

    def examine(self, folder: str) -> SelectedFolder:
        """Select a folder read-only (RFC 3501 section 6.3.2): nothing on it can change."""
        return self._open(folder, writable=False)

    def examine_reading(self, folder: str, read: Callable[[SelectedFolder], T]) -> tuple[SelectedFolder, T]:
        """`examine` *folder* and *read* it in one round trip instead of two: *read*'s
        commands (a FETCH) go out before the EXAMINE's reply is read (RFC 3501 section 5.5:
        the server answers in order, and runs them once the EXAMINE is done).  A folder that
        cannot be examined raises `FolderError` as `examine` does, whatever *read* met.
        *read* sees the folder before its status is known: the caller checks the returned
        handle's UIDVALIDITY before trusting what was read (read-only, so nothing changed)."""
        self._handle = None
        self._selected = None
        imap = self._client._imap
        with self.guarded():
            imap.untagged_responses.clear()
            tag = imap._command("EXAMINE", transport.quoted_folder(self._client, folder))
        # imaplib checks the state before sending; the FETCH is valid once the EXAMINE is done.
        imap.state, imap.is_readonly = "SELECTED", True
        handle = self._handle = SelectedFolder(self, folder, False, FolderStatus(0, -1, 0, 0))
        failure: BaseException | None = None
        try:
            result = read(handle)
        except (FolderError, imaplib.IMAP4.error) as exc:
            failure = exc
        with self.guarded():
            typ, text = transport.complete(self._client, "EXAMINE", tag)
            untagged = dict(imap.untagged_responses)
            imap.untagged_responses.clear()
        if typ != "OK":
            self._handle = None
            imap.state = "AUTH"
            raise self.folder_error(f"cannot open folder {folder!r}: {typ} {text}")
        if failure is not None:
            raise failure
        self._selected, self._writable = folder, False
        handle.status = records.selected_status(untagged, self.account, folder)
        return handle, result

    def select(self, folder: str) -> SelectedFolder:
        """Select a destination folder read-write (RFC 3501 section 6.3.1): to STORE flags,
        to expunge, and to learn PERMANENTFLAGS (EXAMINE reports none).  Never the source.
        Leaving the returned handle (``with``, or `SelectedFolder.close`) expunges nothing."""
        return self._open(folder, writable=True)

    def unselect(self) -> None:
        """Leave the selected folder without expunging (RFC 3691 UNSELECT; CLOSE after EXAMINE)."""
        with self.guarded():
            leave = self._send_leave()
            if leave is not None:
                self._client._imap._command_complete(*leave)
                self._client._imap.state = "AUTH"

    def _open(self, folder: str, writable: bool) -> SelectedFolder:
        self._handle = None
        status = self._select(folder, readonly=not writable)
        self._handle = SelectedFolder(self, folder, writable, status)
        return self._handle

    def _select(self, folder: str, readonly: bool) -> FolderStatus:
        # Whatever the outcome, the folder selected before is left (RFC 3501 section 6.3.1).
        self._selected = None
        with self.guarded():
            typ, text, reply = exchanges.select_reply(self._client, folder, readonly)
        if typ != "OK":
            raise self.folder_error(f"cannot open folder {folder!r}: {typ} {text}")
        self._selected = folder
        self._writable = not readonly
        return records.selected_status(reply, self.account, folder)

    def _send_leave(self) -> tuple[str, bytes] | None:
        """Send the command that leaves the selected folder; its (name, tag) to complete."""
        self._handle = None
        if self._selected is None:
            return None
        if not self.capabilities.unselect and self._writable:
            # CLOSE after SELECT would expunge; after EXAMINE it removes nothing.
            self._select(self._selected, readonly=True)
        self._selected = None
        command = "UNSELECT" if self.capabilities.unselect else "CLOSE"
        return command, self._client._imap._command(command)

    def holds(self, handle: SelectedFolder) -> bool:
        """Whether *handle* is still this session's selection."""
        return self._handle is handle and not self.closed

    def release(self, handle: SelectedFolder) -> None:
        """*handle* is done with.  A read-only selection stays (the next selection leaves it
        at no cost); a read-write one is left at once, so that nothing later can expunge
        through it: UNSELECT where announced, else EXAMINE of the same folder."""
        if self._handle is not handle:
            return
        self._handle = None
        if not handle.writable or self.closed:
            return
        if self.capabilities.unselect:
            self.unselect()
        else:
            self._select(handle.name, readonly=True)

    def _forget_selection(self) -> None:
        """For a command that selects folders on its own (`_Survey`): no handle survives it."""
        self._handle = None
        self._selected = None
        self._writable = False

    # -- reading and writing many folders ------------------------------------------------

    def survey(
        self, folders: Sequence[tuple[str, int]], identity: Identity, window: int = SURVEY_WINDOW,
        selection: Selection | None = None, blind: Collection[str] = (),
    ) -> dict[str, FolderScan]:
        """Status and message identities of many folders, pipelined: see `_Survey`.  Of the
        folders in *blind*, only UIDs and sizes are read (identities "").  Any
        `SelectedFolder` of this session ends."""
        return _Survey(self, identity, window, selection, blind).run(folders)

    def append(
        self, folder: str, messages: Sequence[Fetched], then: Callable[[], None] | None = None,
    ) -> tuple[int, list[int]] | None:
        """Append messages with flags and dates in one APPEND command: one message, or
        several in one MULTIAPPEND (RFC 3502: all stored or none), which the caller checks
        is offered (`Capabilities.multiappend`).  One command, so a refusal stores nothing:
        without MULTIAPPEND the caller sends each message alone and knows which were stored.
        A refusal raises what `replies.append_refused` makes of it.  Returns the UIDVALIDITY
        and the new UIDs where reported (APPENDUID, RFC 4315), else None.  *then* (commands
        of this session) runs once the APPEND is sent, before its reply is read.
        """
        if len(messages) > 1 and not self.capabilities.multiappend:
            raise ValueError(f"{self.where}: several messages in one APPEND need MULTIAPPEND")
        try:
            with self.guarded():
                typ, text = appends.send_append(self._client, folder, messages, self.capabilities.literal_plus, then)
        except imap_exc.IMAPClientError as exc:
            raise replies.append_refused(self.account, folder, text_of(exc)) from None
        if typ != "OK":
            raise replies.append_refused(self.account, folder, text, typ)
        # APPENDUID counts only where UIDPLUS is announced (RFC 4315).
        reported = replies.append_uids(text, len(messages)) if self.capabilities.uidplus else None
        return reported if reported is not None and reported[0] else None


def storage_quota(session: Session, folder: str = "INBOX") -> tuple[int, int] | None:
    """(bytes used, bytes allowed) of the tightest STORAGE quota over *folder* on *session*
    (RFC 9208 GETQUOTAROOT, in units of 1024 octets); None without QUOTA or a storage limit."""
    if not session.capabilities.quota:
        return None
    try:
        with session.guarded():
            _roots, quotas = session.client.get_quota_root(folder)
    except imap_exc.IMAPClientError:
        return None  # refused (no quota root there): no limit known
    storage = [(q.usage * 1024, q.limit * 1024) for q in quotas if str(q.resource).upper() == "STORAGE"]
    return min(storage, key=lambda q: q[1] - q[0], default=None)


@contextlib.contextmanager
def guard(account: Account) -> Iterator[None]:
    """Turn imapclient/socket failures on *account*'s connection into ours; a broken
    connection is ConnectionLost."""
    try:
        yield
    except (OSError, EOFError, imaplib.IMAP4.abort) as exc:
        # imapclient.IMAPClientAbortError is an IMAP4.abort: the connection is unusable
        # (a BYE, a reset, a timeout: a stalled server is a lost one).
        replies.raise_if_throttled(str(exc), account)
        reason = replies.describe_os_error(exc, account)
        raise ConnectionLost(f"{account.where}: {reason}", side=account.side) from None
    except imap_exc.ProtocolError as exc:
        # The parser lost its place in the stream: the connection cannot be trusted.
        raise MalformedResponse(
            f"{account.where}: malformed response: {text_of(exc)[:200]}", side=account.side
        ) from None
    except imap_exc.IMAPClientError as exc:
        replies.raise_if_throttled(text_of(exc), account)
        raise


def stream_messages(
    src_folder: SelectedFolder, dst: Session, folder: str, messages: Sequence[Described],
    source_done: Callable[[], None] | None = None,
) -> tuple[list[Described], tuple[int, list[int]] | None]:
    """Copy messages of *src_folder* into the destination's *folder* with one APPEND (a
    MULTIAPPEND when several: the caller checks it is offered, one commit on the
    destination), each body relayed as it arrives (`appends.send_append_relayed`), so
    that memory holds a chunk, not a message; bytes cross both metered sockets, so the caps
    hold.  Returns the messages sent (not those the source no longer has) and what
    `Session.append` returns for them; raises what a refusal means.  A failure before the
    APPEND's last byte drops the destination connection (which stores nothing of an
    unfinished APPEND), and the source's mid-FETCH; a source that broke is
    `ConnectionLost` naming the source.  *source_done* is called once the source has sent
    the last body and its OK, while the destination's reply is still to come: the source
    connection is free from then on.
    """
    src = src_folder.check()
    assert isinstance(src, Session)
    sent: list[Described] = []
    # The source is in step between two messages' FETCH commands, not during one.
    in_fetch = False

    def bodies() -> Iterator[tuple[Described, literals.BodyLiteral]]:
        nonlocal in_fetch
        for message in messages:
            in_fetch = True
            try:
                body = transport.open_body(src._client, message.uid)
            except (OSError, EOFError, imaplib.IMAP4.abort) as exc:
                raise literals.SourceLost(exc) from None
            except imaplib.IMAP4.error as exc:
                in_fetch = False
                replies.raise_if_throttled(text_of(exc), src.account)
                raise src.folder_error(f"folder {src_folder.name!r}: FETCH refused: {text_of(exc)}") from None
            if body is not None:
                sent.append(message)
                yield message, body
                if not body.finished:
                    return
            in_fetch = False
        if source_done is not None:
            source_done()

    in_step = False
    try:
        with dst.guarded():
            try:
                reply = appends.send_append_relayed(dst._client, folder, bodies(), dst.capabilities.literal_plus)
            except imaplib.IMAP4.abort:
                raise
            except imap_exc.IMAPClientError as exc:
                # A BAD reply: the connection is still in step.
                reply = "BAD", text_of(exc)
            in_step = True
    except literals.SourceLost as exc:
        replies.raise_if_throttled(str(exc.cause), src.account)
        raise ConnectionLost(
            f"{src.where}: {replies.describe_os_error(exc.cause, src.account)}", side=src.side
        ) from None
    finally:
        if not in_step:
            dst.close(quietly=True)
        if in_fetch:
            src.close(quietly=True)
    if reply is None:
        return [], None
    typ, text = reply
    if typ != "OK":
        raise replies.append_refused(dst.account, folder, text, typ)
    reported = replies.append_uids(text, len(sent)) if dst.capabilities.uidplus else None
    return sent, (reported if reported and reported[0] and len(reported[1]) == len(sent) else None)


class _Survey:
    """Status and message identities of many folders, pipelined (RFC 3501 section 5.5).

    *folders* pairs each name with its message count from STATUS.  For each folder an
    EXAMINE and the FETCH batches that cover the count (the last one open-ended, ``n:*``)
    are sent without waiting, up to *window* folders ahead, so a whole account costs about
    one round trip instead of two per folder.  The server answers in order; a folder whose
    EXAMINE or FETCH fails (it vanished, or shrank so that a batch fell beyond its end) is
    read again the plain way, or reported.
    With dates in *selection*, a ``UID SEARCH`` of the same messages follows each FETCH
    batch (no round trip more) and only the messages it finds stay in the scan.  The
    folders in *blind* are read for UIDs and sizes only: no header for the server to
    read and fastsync to parse (a folder read again the plain way gets its identities).
    """

    def __init__(
        self, session: Session, identity: Identity, window: int, selection: Selection | None,
        blind: Collection[str] = (),
    ) -> None:
        self.session = session
        self.identity = identity
        self.items = "(" + " ".join(i.decode() for i in identity_items(session.capabilities)) + ")"
        self.blind = blind
        self.window = window
        self.selection = selection if selection is not None and selection.dated else None
        self.dates = wire.search_dates(self.selection.since, self.selection.before) if self.selection else []
        self.within: dict[str, set[int]] = {}
        self.imap = session._client._imap
        self.pending: list[tuple[str, str, bytes]] = []  # (folder, command, tag)
        self.scans: dict[str, FolderScan] = {}
        self.failed: set[str] = set()

    def send(self, name: str, count: int) -> None:
        imap = self.imap
        quoted = transport.quoted_folder(self.session._client, name)
        self.pending.append((name, "EXAMINE", imap._command("EXAMINE", quoted)))
        starts = list(range(1, count + 1, IDENTITY_BATCH))
        for index, start in enumerate(starts):
            end = "*" if index == len(starts) - 1 else str(start + IDENTITY_BATCH - 1)
            items = SIZE_ITEMS if name in self.blind else self.items
            self.pending.append((name, "FETCH", imap._command("FETCH", f"{start}:{end}", items)))
            if self.dates:
                self.pending.append((name, "SEARCH", imap._command("UID", "SEARCH", f"{start}:{end}", *self.dates)))

    def run(self, folders: Sequence[tuple[str, int]]) -> dict[str, FolderScan]:
        session, imap = self.session, self.imap
        queue = list(folders)
        if not queue:
            # Nothing is examined, so whatever folder is selected stays selected (and known).
            return self.scans
        with session.guarded():
            session._forget_selection()
            # imaplib checks the state before sending a command; the pipelined FETCHes are
            # valid once their EXAMINE is processed, which the server does first.
            imap.state = "SELECTED"
            imap.is_readonly = True
            in_flight = 0
            while queue or self.pending:
                while queue and in_flight < self.window:
                    self.send(*queue.pop(0))
                    in_flight += 1
                name, command, tag = self.pending.pop(0)
                in_flight -= command == "EXAMINE"
                self.receive(name, command, tag)
            imap.state = "SELECTED" if session._selected else "AUTH"
        # A count that moved between STATUS and EXAMINE leaves batches short or missing.
        self.failed.update(
            n for n, scan in self.scans.items() if scan.status and scan.status.messages != len(scan.refs)
        )
        for name, _count in folders:
            if name in self.failed:
                self.scans[name] = self.read_plainly(name)
            elif self.selection:
                self.scans[name].keep_only(self.within.get(name, set()))
        return self.scans

    def receive(self, name: str, command: str, tag: bytes) -> None:
        imap = self.imap
        fetched: list[Any] = []
        try:
            if command == "FETCH":
                # FETCH replies through fastsync's reader, as a copy reads them (`read_fetch`).
                typ, _text, fetched = transport.read_fetch(self.session._client, tag)
            else:
                typ, _data = imap._command_complete(command, tag)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error:
            # imaplib raises on BAD (e.g. FETCH after a failed EXAMINE).
            typ = "BAD"
        if command == "EXAMINE":
            reply = dict(imap.untagged_responses)
            imap.untagged_responses.clear()
            if typ != "OK":
                self.failed.add(name)
                return
            # Selected read-only, with no `SelectedFolder`: what leaves it needs to know.
            self.session._selected = name
            try:
                self.scans[name] = FolderScan(records.selected_status(reply, self.session.account, name), [])
            except FolderError:
                # Read again the plain way (`read_plainly`), which reports what is wrong.
                self.failed.add(name)
            return
        # A server may run a folder's FETCH and SEARCH commands side by side (Dovecot does,
        # RFC 3501 section 5.5), so one's replies can come before the other's completion:
        # both kinds are taken at each completion, and belong to this folder.
        items = fetched + imap.untagged_responses.pop("FETCH", [])
        found = imap.untagged_responses.pop("SEARCH", [])
        imap.untagged_responses.clear()
        if typ != "OK" or name in self.failed:
            self.failed.add(name)
            return
        items = [i for i in items if i is not None]
        self.scans[name].refs.extend(records.sizes(items, self.session.account) if name in self.blind
                                     else records.refs(items, self.session.account, self.identity))
        self.within.setdefault(name, set()).update(wire.search_uids(found))

    def read_plainly(self, name: str) -> FolderScan:
        """Read a folder again without pipelining: it may exist after all, or have changed size."""
        try:
            box = self.session.examine(name)
        except FolderError as exc:
            return FolderScan(None, [], exc.message)
        scan = FolderScan(box.status, box.message_refs(self.identity) if box.status.messages else [])
        if self.selection and scan.refs:
            scan.keep_only(box.uids_within(self.selection))
        return scan
