"""IMAP operations on one logged-in connection, returning `fastsync.records.model` records.

Protocol edge, with `transport.py` the only modules that import imapclient or imaplib.
A `Session` turns imapclient's values into records and its exceptions into
`fastsync.records.errors` classes that name the side's label and server (`replies.py` says what a
refusal means), so nothing above this package ever sees an imapclient object.
`stream_messages` copies large messages from a source session to a destination one.
"""

from __future__ import annotations

import contextlib
import hashlib
import imaplib
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any, Protocol

from imapclient import exceptions as imap_exc

from fastsync.imap import wire
from fastsync.settings.config import Account
from fastsync.records.errors import ConnectionLost, FolderError, MalformedResponse
from fastsync.imap import records, replies, transport
from fastsync.imap.records import Identity
from fastsync.imap.transport import Client, Meter, text_of
from fastsync.records.model import (
    Described, Fetched, Folder, FolderScan, FolderStatus, MessageRef, MessageState, Namespace, Selection,
)
from fastsync.imap.wire import sequence_set, uid_sets


# Planning fetches message identities this many at a time: one round trip per few thousand
# messages keeps a 100,000-message folder at a few dozen commands and bounded memory.
IDENTITY_BATCH = 5000

# Header fields that make up a message's identity (see plan.identity).  Fetched with
# BODY.PEEK so the source's \Seen flags never change (RFC 3501 section 6.4.5).
IDENTITY_FIELDS = b"MESSAGE-ID DATE FROM SUBJECT"
_IDENTITY_ITEMS = [b"UID", b"RFC822.SIZE", b"BODY.PEEK[HEADER.FIELDS (" + IDENTITY_FIELDS + b")]"]

# A folder whose identities are not needed (see `_Survey`).
_SIZE_ITEMS = "(UID RFC822.SIZE)"

# `check` and ``--sync-flags`` also want each message's flags and internal date.
_STATE_ITEMS = [b"UID", b"RFC822.SIZE", b"FLAGS", b"INTERNALDATE", _IDENTITY_ITEMS[2]]

# UIDs per UID STORE command: the sequence set is compacted (1:400), but scattered UIDs
# make a long line and some servers cap command lines at 8 or 64 KB.
STORE_BATCH = 1000

# `check --bodies` fetches full messages in batches of at most this many bytes (a bigger
# message travels alone); each body is hashed and dropped, so memory holds one batch.
HASH_BATCH_BYTES = 8 * 1024 * 1024

# Folders whose EXAMINE and FETCH commands are in flight at once while planning: enough
# to hide the round trip, few enough that the commands never fill a socket buffer while
# the server waits for us to read its answers.
SURVEY_WINDOW = 16

class Slots(Protocol):
    """A per-side connection cap (limits.ConnectionSlots)."""

    def acquire(self) -> None: ...

    def release(self) -> None: ...


class Session:
    """One logged-in connection to one side."""

    def __init__(self, account: Account, client: Client, slots: Slots | None) -> None:
        self.account = account
        self._client = client
        self._slots = slots
        self.capabilities = frozenset(text_of(c).upper() for c in client.capabilities())
        self._selected: str | None = None
        self._writable = False

    # -- connection --------------------------------------------------------------------

    @classmethod
    def open(
        cls, account: Account, *, slots: Slots | None = None, meter_down: Meter | None = None,
        meter_up: Meter | None = None,
    ) -> Session:
        """Take a connection slot, connect, secure and log in (`transport.connect`)."""
        if slots is not None:
            slots.acquire()
        try:
            return cls(account, transport.connect(account, meter_down, meter_up), slots)
        except BaseException:
            if slots is not None:
                slots.release()
            raise

    def close(self, quietly: bool = False) -> None:
        """Log out politely; a connection that is already broken is simply dropped.  With
        *quietly*, not even LOGOUT: in the middle of a literal, anything sent would be read
        as message bytes (RFC 3501 section 4.3)."""
        client, self._client = self._client, None  # type: ignore[assignment]
        if client is None:
            return
        try:
            if not quietly:
                with contextlib.suppress(Exception):
                    client.logout()
            transport.close_quietly(client)
        finally:
            if self._slots is not None:
                self._slots.release()

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
        return f"{self.account.label} ({self.account.server})"

    def _guard(self) -> contextlib.AbstractContextManager[None]:
        return guard(self.account, self.where)

    def _change(self, command: str, argument_lists: Sequence[Sequence[str]], echo: str) -> None:
        """Pipeline commands that change the selected folder; the first refusal is a FolderError.
        The server's untagged *echo* of the change (FETCH, EXPUNGE) is dropped."""
        with self._guard():
            results = transport.pipelined(self._client, command, argument_lists)
            self._client._imap.untagged_responses.pop(echo, None)
        errors = [text for typ, text in results if typ != "OK"]
        if errors:
            raise FolderError(f"{self.where}: folder {self._selected or ''!r}: {command} refused: {errors[0]}")

    # -- folders -----------------------------------------------------------------------

    def list_folders(self) -> list[Folder]:
        with self._guard():
            rows = self._client.list_folders()
        return [transport.folder_of(row) for row in rows]

    def namespace(self) -> Namespace | None:
        """The first personal namespace NAMESPACE (RFC 2342) reports; None without it (the
        caller infers one from the folder list: `folders.infer_namespace`)."""
        if "NAMESPACE" not in self.capabilities:
            return None
        try:
            with self._guard():
                reply = self._client.namespace()
        except imap_exc.IMAPClientError:
            return None
        personal = reply.personal or ()
        if not personal:
            return None
        prefix, delimiter = personal[0]
        return Namespace(text_of(prefix), text_of(delimiter or ""))

    def root_delimiter(self) -> str:
        """The hierarchy delimiter from ``LIST "" ""`` (RFC 3501 section 6.3.8), '' if none."""
        with self._guard():
            rows = self._client.list_folders("", "")
        return next((text_of(delimiter) for _flags, delimiter, _name in rows if delimiter), "")

    def status(self, folder: str) -> FolderStatus:
        try:
            with self._guard():
                reply = self._client.folder_status(folder, transport.status_items(self.capabilities))
        except imap_exc.IMAPClientError as exc:
            raise FolderError(f"{self.where}: folder {folder!r}: STATUS refused: {text_of(exc)}") from None
        return transport.status_of(reply)

    def statuses(self) -> dict[str, FolderStatus]:
        return self.folders_and_statuses()[1]

    def folders_and_statuses(self) -> tuple[list[Folder], dict[str, FolderStatus]]:
        """Every folder and its STATUS, in one round trip where LIST-STATUS (RFC 5819) is offered.

        Nothing may be selected: Dovecot answers STATUS on the selected folder from a
        stale view.
        """
        if "LIST-STATUS" not in self.capabilities:
            self.unselect()
            folders = self.list_folders()
            return folders, {f.name: self.status(f.name) for f in folders if f.selectable}
        imap = self._client._imap
        with self._guard():
            # Leaving the selected folder and listing go out together: one round trip.
            leave = self._send_unselect()
            # With RETURN options, special-use attributes come only when asked for (RFC 6154 section 5.1).
            special = "SPECIAL-USE " if "SPECIAL-USE" in self.capabilities else ""
            returns = f"({special}STATUS (" + " ".join(transport.status_items(self.capabilities)) + "))"
            tag = imap._command("LIST", '""', '"*"', "RETURN", returns)
            if leave is not None:
                imap._command_complete(*leave)
                imap.state = "AUTH"
            typ, data = imap._command_complete("LIST", tag)
            if typ != "OK":
                raise FolderError(f"{self.where}: LIST-STATUS refused: {text_of(data)}")
            _typ, rows = imap._untagged_response(typ, data, "LIST")
            _typ, status_replies = imap._untagged_response(typ, data, "STATUS")
            folders = [transport.folder_of(row) for row in self._client._proc_folder_list(rows)]
        return folders, transport.statuses_of(status_replies)

    def unselect(self) -> None:
        """Leave the selected folder without expunging (RFC 3691 UNSELECT; CLOSE after EXAMINE)."""
        with self._guard():
            leave = self._send_unselect()
            if leave is not None:
                self._client._imap._command_complete(*leave)
                self._client._imap.state = "AUTH"

    def _send_unselect(self) -> tuple[str, bytes] | None:
        if self._selected is None:
            return None
        if "UNSELECT" not in self.capabilities and self._writable:
            # RFC 3501 section 6.4.2: CLOSE after SELECT expunges every \Deleted message;
            # after EXAMINE it removes nothing.  Reopen read-only first.
            self._select(self._selected, readonly=True)
        self._selected = None
        command = "UNSELECT" if "UNSELECT" in self.capabilities else "CLOSE"
        return command, self._client._imap._command(command)

    def examine(self, folder: str) -> FolderStatus:
        """Select a folder read-only (RFC 3501 section 6.3.2): nothing on it can change."""
        return self._select(folder, readonly=True)

    def select(self, folder: str) -> FolderStatus:
        """Select a destination folder read-write (RFC 3501 section 6.3.1): to STORE flags and
        to learn PERMANENTFLAGS (EXAMINE reports none).  Never the source; never left by CLOSE."""
        return self._select(folder, readonly=False)

    def _select(self, folder: str, readonly: bool) -> FolderStatus:
        try:
            with self._guard():
                reply = self._client.select_folder(folder, readonly=readonly)
        except imap_exc.IMAPClientError as exc:
            self._selected = None
            raise FolderError(f"{self.where}: cannot open folder {folder!r}: {text_of(exc)}") from None
        self._selected = folder
        self._writable = not readonly
        return transport.selected_status(reply)

    def create_folder(self, folder: str) -> bool:
        """Create a folder; True when it was created, False when it already existed."""
        try:
            with self._guard():
                self._client.create_folder(folder)
        except imap_exc.IMAPClientError as exc:
            text = text_of(exc)
            if replies.already_exists(text):
                return False
            raise FolderError(f"{self.where}: cannot create folder {folder!r}: {text}") from None
        return True

    def create_folders(self, names: Sequence[str]) -> dict[str, str]:
        """Create folders, pipelined, in the given order (parents first).

        Returns the folders the server refused, each with its reply text; a folder that
        already exists is not refused.
        """
        with self._guard():
            commands = [("CREATE", transport.quoted_folder(self._client, n)) for n in names]
            results = transport.pipelined(self._client, "CREATE", commands)
        return {
            name: text
            for name, (typ, text) in zip(names, results, strict=True)
            if typ != "OK" and not replies.already_exists(text)
        }

    # -- reading messages --------------------------------------------------------------

    def survey(
        self, folders: Sequence[tuple[str, int]], identity: Identity, window: int = SURVEY_WINDOW,
        selection: Selection | None = None, blind: Collection[str] = (),
    ) -> dict[str, FolderScan]:
        """Status and message identities of many folders, pipelined: see `_Survey`.  Of the
        folders in *blind*, only UIDs and sizes are read (identities "")."""
        return _Survey(self, identity, window, selection, blind).run(folders)

    def message_refs(self, count: int, identity: Identity) -> list[MessageRef]:
        """UID, size and identity of every message of the examined folder.

        Sequence-number FETCH in batches: RFC 3501 section 7.4.1 forbids EXPUNGE responses
        while a FETCH is answered, so consecutive batches see stable sequence numbers and
        no UID SEARCH (whose single reply line can exceed imaplib's limit) is needed.
        """
        refs: list[MessageRef] = []
        for message_set in wire.batches(count, IDENTITY_BATCH):
            data = self._fetch(message_set, _identity_items(self.capabilities), uid=False)
            refs.extend(records.refs(data, self.where, identity))
        return refs

    def identities_since(self, first_uid: int, identity: Identity) -> dict[int, str]:
        """UID -> identity of the examined folder's messages with UID >= *first_uid*."""
        # "n:*" also matches the highest UID when it is below n (RFC 3501 section 6.4.8),
        # hence the filter on the UID.
        data = self._fetch(f"{max(first_uid, 1)}:*", _IDENTITY_ITEMS, uid=True)
        return {ref.uid: ref.identity for ref in records.refs(data, self.where, identity) if ref.uid >= first_uid}

    def new_since(self, first_uid: int, modseq: int, identity: Identity) -> tuple[list[MessageRef], bool]:
        """The examined folder's messages from UID *first_uid* on, and whether an older one
        changed (flags, or expunged: QRESYNC's VANISHED too) since *modseq* (RFC 7162 3.1.4.1)."""
        changed = self._fetch("1:*", [b"UID"], uid=True, modifier=f"(CHANGEDSINCE {modseq})")
        older = any((r.uid() or first_uid) < first_uid for r in wire.records(changed))
        data = self._fetch(f"{max(first_uid, 1)}:*", _identity_items(self.capabilities), uid=True)
        return [ref for ref in records.refs(data, self.where, identity) if ref.uid >= first_uid], older

    def identities_of(self, uids: Sequence[int], identity: Identity) -> dict[int, str]:
        """UID -> identity of some messages of the examined folder (UIDs gone are left out)."""
        data = self._fetch(sequence_set(uids), _IDENTITY_ITEMS, uid=True)
        return {ref.uid: ref.identity for ref in records.refs(data, self.where, identity)}

    def total_size(self, count: int) -> int:
        """Sum of RFC822.SIZE over the examined folder, for servers without STATUS=SIZE (RFC 8438)."""
        total = 0
        for message_set in wire.batches(count, IDENTITY_BATCH):
            for record in wire.records(self._fetch(message_set, [b"RFC822.SIZE"], uid=False)):
                total += record.size() or 0
        return total

    def message_states(self, count: int, identity: Identity) -> list[MessageState]:
        """UID, size, identity, flags and internal date of every message of the selected folder:
        the batches of `message_refs`, with FLAGS and INTERNALDATE added; the header fields
        come with BODY.PEEK, so the source's \\Seen flags never change (RFC 3501 section 6.4.5)."""
        states: list[MessageState] = []
        for message_set in wire.batches(count, IDENTITY_BATCH):
            states.extend(records.states(self._fetch(message_set, _STATE_ITEMS, uid=False), self.where, identity))
        return states

    def body_digests(
        self, messages: Sequence[tuple[int, int]], max_batch_bytes: int = HASH_BATCH_BYTES
    ) -> dict[int, str]:
        """sha256 of each whole message (BODY.PEEK[]) of the selected folder: (UID, size) -> digest.

        Fetched in batches bounded by *max_batch_bytes* (a bigger message alone); each body
        is hashed and dropped, so memory holds one batch whatever the folder's size.
        """
        digests: dict[int, str] = {}
        batch: list[int] = []
        batch_bytes = 0

        def flush() -> None:
            if not batch:
                return
            for record in wire.records(self._fetch(sequence_set(batch), [b"UID", b"BODY.PEEK[]"], uid=True)):
                fields = transport.Fields.read(record, self.where, "literal")
                if fields is not None:
                    digests[fields.uid] = hashlib.sha256(fields.literal or b"").hexdigest()
            batch.clear()

        for uid, size in messages:
            if batch and batch_bytes + size > max_batch_bytes:
                flush()
                batch_bytes = 0
            batch.append(uid)
            batch_bytes += size
        flush()
        return digests

    def fetch_messages(self, uids: Sequence[int]) -> list[Fetched]:
        """Bodies, flags and internal dates of the examined folder; UIDs gone are left out."""
        return [Fetched(f.uid, f.flags or (), date, f.literal or b"") for f, date in _dated(self, uids, b"BODY.PEEK[]")]

    def _fetch(self, message_set: str, items: Sequence[bytes], uid: bool, modifier: str = "") -> list[object]:
        """FETCH with a compact message set (``1:5000``), which IMAPClient.fetch cannot send.

        Returns imaplib's untagged FETCH items, for `wire.records`.  Unsolicited FETCH
        responses for other messages may be included; callers take what they asked for.
        """
        command = ["UID", "FETCH"] if uid else ["FETCH"]
        imap = self._client._imap
        with self._guard():
            tag = imap._command(*command, message_set, "(" + " ".join(i.decode() for i in items) + ")",
                                *([modifier] if modifier else []))
            typ, text, data = transport.read_fetch(self._client, tag)
            if typ != "OK":
                raise FolderError(f"{self.where}: folder {self._selected!r}: FETCH refused: {text}")
        return [item for item in data if item is not None]

    # -- writing (destination only) ----------------------------------------------------

    def store_flags(self, changes: Mapping[tuple[str, ...], Sequence[int]], item: str = "FLAGS.SILENT") -> None:
        """Set the flags of messages of the folder selected with `select`: flag set -> UIDs.

        One ``UID STORE <uids> FLAGS.SILENT (<flags>)`` per flag set (and per `STORE_BATCH`
        UIDs), all pipelined: FLAGS replaces a message's whole set and .SILENT spares the
        untagged FETCH echo of each message (RFC 3501 section 6.4.6); *item*
        ``+FLAGS.SILENT`` adds the flags instead.  \\Recent must not be in *changes*: only
        the server sets it (section 2.3.2).
        """
        commands = [
            ("UID", "STORE", message_set, item, "(" + " ".join(flags) + ")")
            for flags, uids in changes.items()
            for message_set in uid_sets(uids, STORE_BATCH)
        ]
        self._change("STORE", commands, "FETCH")

    def delete_messages(self, uids: Sequence[int], uid_expunge: bool) -> None:
        """Flag *uids* of the folder selected with `select` \\Deleted and expunge them: only
        them with UID EXPUNGE (RFC 4315 UIDPLUS; the caller checks it is announced), else
        with EXPUNGE every \\Deleted message of the folder (RFC 3501 section 6.4.3)."""
        self.store_flags({("\\Deleted",): uids}, "+FLAGS.SILENT")
        commands = [("UID", "EXPUNGE", s) for s in uid_sets(uids, STORE_BATCH)] if uid_expunge else [("EXPUNGE",)]
        self._change("EXPUNGE", commands, "EXPUNGE")

    def append(self, folder: str, messages: Sequence[Fetched]) -> tuple[int, list[int]] | None:
        """Append messages with flags and dates: one MULTIAPPEND (RFC 3502, all or nothing) when
        offered, else an APPEND each; a refusal raises what `replies.append_refused` makes of it.
        Returns the UIDVALIDITY and the new UIDs where reported (APPENDUID, RFC 4315), else None.
        """
        batches = [messages] if "MULTIAPPEND" in self.capabilities else [[m] for m in messages]
        literal_plus = "LITERAL+" in self.capabilities
        validities, uids = set(), []
        try:
            with self._guard():
                for batch in batches:
                    typ, text = transport.send_append(self._client, folder, batch, literal_plus)
                    if typ != "OK":
                        raise replies.append_refused(self.where, folder, text, typ)
                    # APPENDUID counts only where UIDPLUS is announced (RFC 4315).
                    reported = replies.append_uids(text, len(batch)) if "UIDPLUS" in self.capabilities else None
                    validities.add(reported[0] if reported else 0)
                    uids.extend(reported[1] if reported else [])
        except imap_exc.IMAPClientError as exc:
            raise replies.append_refused(self.where, folder, text_of(exc)) from None
        validity = validities.pop() if len(validities) == 1 else 0
        return (validity, uids) if validity and len(uids) == len(messages) else None


@contextlib.contextmanager
def guard(account: Account, where: str) -> Iterator[None]:
    """Turn imapclient/socket failures into ours; a broken connection is ConnectionLost."""
    try:
        yield
    except (OSError, EOFError, imaplib.IMAP4.abort) as exc:
        # imapclient.IMAPClientAbortError is an IMAP4.abort: the connection is unusable
        # (a BYE, a reset, a timeout: a stalled server is a lost one).
        replies.raise_if_throttled(str(exc), where)
        reason = replies.describe_os_error(exc, account)
        raise ConnectionLost(f"{where}: {reason}") from None
    except imap_exc.ProtocolError as exc:
        # The parser lost its place in the stream: the connection cannot be trusted.
        raise MalformedResponse(f"{where}: malformed response: {text_of(exc)[:200]}") from None
    except imap_exc.IMAPClientError as exc:
        replies.raise_if_throttled(text_of(exc), where)
        raise


def describe_messages(session: Session, uids: Sequence[int]) -> list[Described]:
    """Flags, internal dates, sizes and identity header fields of the examined folder's
    messages, without their bodies (see `stream_messages`); UIDs gone are left out."""
    return [
        Described(f.uid, f.flags or (), date, f.size_bytes or 0, f.literal or b"")
        for f, date in _dated(session, uids, *_IDENTITY_ITEMS[1:], needed="size_bytes")
    ]


def _dated(
    session: Session, uids: Sequence[int], *items: bytes, needed: str = "literal"
) -> Iterator[tuple[transport.Fields, bytes]]:
    """The FETCH items of *uids* with FLAGS and INTERNALDATE (which every copy needs, as
    sent) and *items* (one of them a literal), message by message (`records.dated`)."""
    data = session._fetch(sequence_set(uids), [b"UID", b"FLAGS", b"INTERNALDATE", *items], uid=True)
    return records.dated(data, uids, session.where, items == (b"BODY.PEEK[]",), needed)


def stream_messages(
    src: Session, dst: Session, folder: str, messages: Sequence[Described]
) -> tuple[list[Described], tuple[int, list[int]] | None]:
    """Copy messages of the examined source folder into *folder* with one APPEND (a
    MULTIAPPEND when several: the caller checks it is offered, one commit on the
    destination), each body relayed as it arrives (`transport.send_append_relayed`), so
    that memory holds a chunk, not a message; bytes cross both metered sockets, so the caps
    hold.  Returns the messages sent (not those the source no longer has) and what
    `Session.append` returns for them; raises what a refusal means.  A failure before the
    APPEND's last byte drops the destination connection (which stores nothing of an
    unfinished APPEND), and the source's mid-FETCH; a source that broke is
    `ConnectionLost` naming the source.
    """
    sent: list[Described] = []
    # The source is in step between two messages' FETCH commands, not during one.
    in_fetch = False

    def bodies() -> Iterator[tuple[Described, transport.BodyLiteral]]:
        nonlocal in_fetch
        for message in messages:
            in_fetch = True
            try:
                body = transport.open_body(src._client, message.uid)
            except (OSError, EOFError, imaplib.IMAP4.abort) as exc:
                raise transport.SourceLost(exc) from None
            except imaplib.IMAP4.error as exc:
                in_fetch = False
                raise FolderError(f"{src.where}: folder {src._selected!r}: FETCH refused: {text_of(exc)}") from None
            if body is not None:
                sent.append(message)
                yield message, body
                if not body.finished:
                    return
            in_fetch = False

    in_step = False
    try:
        with dst._guard():
            try:
                reply = transport.send_append_relayed(dst._client, folder, bodies(), "LITERAL+" in dst.capabilities)
            except imaplib.IMAP4.abort:
                raise
            except imap_exc.IMAPClientError as exc:
                # A BAD reply: the connection is still in step.
                reply = "BAD", text_of(exc)
            in_step = True
    except transport.SourceLost as exc:
        replies.raise_if_throttled(str(exc.cause), src.where)
        raise ConnectionLost(f"{src.where}: {replies.describe_os_error(exc.cause, src.account)}") from None
    finally:
        if not in_step:
            dst.close(quietly=True)
        if in_fetch:
            src.close(quietly=True)
    if reply is None:
        return [], None
    typ, text = reply
    if typ != "OK":
        raise replies.append_refused(dst.where, folder, text, typ)
    reported = replies.append_uids(text, len(sent)) if "UIDPLUS" in dst.capabilities else None
    return sent, (reported if reported and reported[0] and len(reported[1]) == len(sent) else None)


def uids_within(session: Session, count: int, selection: Selection) -> set[int]:
    """UIDs of the examined folder's messages 1..*count* whose internal date is within
    *selection*'s dates: ``UID SEARCH 1:5000 SINCE ...`` per batch, pipelined, so that no
    reply line outgrows imaplib's limit; no message is fetched (RFC 3501 section 6.4.4)."""
    keys = wire.search_dates(selection.since, selection.before)
    with session._guard():
        commands = [("UID", "SEARCH", batch, *keys) for batch in wire.batches(count, IDENTITY_BATCH)]
        results = transport.pipelined(session._client, "SEARCH", commands)
        found = session._client._imap.untagged_responses.pop("SEARCH", [])
    refused = [text for typ, text in results if typ != "OK"]
    if refused:
        raise FolderError(f"{session.where}: folder {session._selected!r}: SEARCH refused: {refused[0]}")
    return wire.search_uids(found)


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
        self.items = "(" + " ".join(i.decode() for i in _identity_items(session.capabilities)) + ")"
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
            items = _SIZE_ITEMS if name in self.blind else self.items
            self.pending.append((name, "FETCH", imap._command("FETCH", f"{start}:{end}", items)))
            if self.dates:
                self.pending.append((name, "SEARCH", imap._command("UID", "SEARCH", f"{start}:{end}", *self.dates)))

    def run(self, folders: Sequence[tuple[str, int]]) -> dict[str, FolderScan]:
        session, imap = self.session, self.imap
        queue = list(folders)
        if not queue:
            # Nothing is examined, so whatever folder is selected stays selected (and known).
            return self.scans
        with session._guard():
            session._selected = None
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
            reply = self.session._client._process_select_response(imap.untagged_responses)
            imap.untagged_responses.clear()
            if typ != "OK":
                self.failed.add(name)
                return
            self.scans[name] = FolderScan(transport.selected_status(reply), [])
            self.session._selected = name
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
        self.scans[name].refs.extend(records.sizes(items, self.session.where) if name in self.blind
                                     else records.refs(items, self.session.where, self.identity))
        self.within.setdefault(name, set()).update(wire.search_uids(found))

    def read_plainly(self, name: str) -> FolderScan:
        """Read a folder again without pipelining: it may exist after all, or have changed size."""
        try:
            status = self.session.examine(name)
        except FolderError as exc:
            return FolderScan(None, [], exc.message)
        scan = FolderScan(status, self.session.message_refs(status.messages, self.identity) if status.messages else [])
        if self.selection and scan.refs:
            scan.keep_only(uids_within(self.session, status.messages, self.selection))
        return scan


def _identity_items(capabilities: frozenset[str]) -> list[bytes]:
    """What planning fetches of each message; with Gmail's X-GM-EXT-1, its message id too,
    which recognises the same message in every folder, Message-Id or not."""
    return _IDENTITY_ITEMS + ([b"X-GM-MSGID"] if "X-GM-EXT-1" in capabilities else [])
