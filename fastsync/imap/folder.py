"""The folder a session has selected: every folder-scoped operation goes through it.

Protocol edge (`fastsync/imap/`), beside `session.py`, which makes these handles: FETCH,
UID SEARCH, UID STORE and EXPUNGE act on the folder of the `SelectedFolder` they are
called on, or raise `NotSelected` when that folder is no longer the session's selection,
so no caller depends on which folder was selected last (the rules of entering and
leaving a folder are in `Session`'s "selection" section).  Commands go out through
`transport`; replies become records in `records`.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

from fastsync.imap import literals, records, transport, wire
from fastsync.imap.capabilities import Capabilities
from fastsync.imap.records import Identity
from fastsync.imap.transport import Client
from fastsync.imap.wire import sequence_set, uid_sets
from fastsync.records.errors import FolderError
from fastsync.settings.config import Account
from fastsync.records.model import Described, Fetched, FolderStatus, MessageRef, MessageState, Selection

# Planning fetches message identities this many at a time: one round trip per few thousand
# messages keeps a 100,000-message folder at a few dozen commands and bounded memory.
IDENTITY_BATCH = 5000

# Header fields that make up a message's identity (see plan.identity: the Message-Id, else
# `plan.FALLBACK_FIELDS`).  Fetched with BODY.PEEK so the source's \Seen flags never
# change (RFC 3501 section 6.4.5).
IDENTITY_FIELDS = b"MESSAGE-ID DATE FROM SUBJECT TO"
IDENTITY_ITEMS = [b"UID", b"RFC822.SIZE", b"BODY.PEEK[HEADER.FIELDS (" + IDENTITY_FIELDS + b")]"]

# A folder whose identities are not needed (see `session._Survey`).
SIZE_ITEMS = "(UID RFC822.SIZE)"

# `check` and ``--sync-flags`` also want each message's flags and internal date.
STATE_ITEMS = [b"UID", b"RFC822.SIZE", b"FLAGS", b"INTERNALDATE", IDENTITY_ITEMS[2]]

# UIDs per UID STORE command: the sequence set is compacted (1:400), but scattered UIDs
# make a long line and some servers cap command lines at 8 or 64 KB.
STORE_BATCH = 1000

# `check --bodies` fetches full messages in batches of at most this many bytes (a bigger
# message travels alone); each body is hashed and dropped, so memory holds one batch.
HASH_BATCH_BYTES = 8 * 1024 * 1024


def identity_items(capabilities: Capabilities, items: Sequence[bytes] = IDENTITY_ITEMS) -> list[bytes]:
    """What planning (or, *items* `STATE_ITEMS`, check) fetches of each message; with
    Gmail's X-GM-EXT-1, its message id too, which recognises the same message in every
    folder, Message-Id or not: sync and check tell All Mail's messages apart alike."""
    return [*items, *([b"X-GM-MSGID"] if capabilities.gmail_ext else [])]


class NotSelected(RuntimeError):
    """A `SelectedFolder` used after its folder was left (another folder selected, the
    folder left, the connection closed), or written to after EXAMINE: a mistake in the
    caller, never the server's doing, raised instead of acting on another folder."""


class Owner(Protocol):
    """What a `SelectedFolder` needs of its session (`session.Session`)."""

    @property
    def account(self) -> Account: ...

    @property
    def where(self) -> str: ...

    def folder_error(self, text: str) -> FolderError: ...

    @property
    def capabilities(self) -> Capabilities: ...

    @property
    def client(self) -> Client: ...

    def guarded(self) -> contextlib.AbstractContextManager[None]: ...

    def holds(self, folder: SelectedFolder) -> bool: ...

    def release(self, folder: SelectedFolder) -> None: ...


class SelectedFolder:
    """The folder a `Session.examine` or `Session.select` selected, and what can be done in it.

    Valid until its session selects another folder, leaves this one, or closes; used
    after that, it raises `NotSelected` instead of acting on whatever is selected
    then.  As a context manager, leaving the block ends it (`Session.release`: a
    read-write selection is then left without expunging).  *status* is what the
    selection reported (PERMANENTFLAGS only after SELECT).
    """

    def __init__(self, owner: Owner, name: str, writable: bool, status: FolderStatus) -> None:
        self.owner = owner
        self.name = name
        self.writable = writable
        self.status = status

    @property
    def account(self) -> Account:
        return self.owner.account

    @property
    def where(self) -> str:
        return self.owner.where

    def folder_error(self, text: str) -> FolderError:
        """A `FolderError` about this folder, on its session's side."""
        return self.owner.folder_error(f"folder {self.name!r}: {text}")

    @property
    def valid(self) -> bool:
        """Whether this is still the session's selection."""
        return self.owner.holds(self)

    def close(self) -> None:
        """Done with the folder (see `Session.release`)."""
        self.owner.release(self)

    def __enter__(self) -> SelectedFolder:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
            return
        # The block failed: leave if possible, but the block's exception is what counts.
        with contextlib.suppress(Exception):
            self.close()

    def check(self, writing: bool = False) -> Owner:
        """The session, once sure that this folder is still its selection (and, *writing*,
        selected read-write); else `NotSelected`."""
        if not self.valid:
            raise NotSelected(f"{self.where}: folder {self.name!r} is no longer selected")
        if writing and not self.writable:
            raise NotSelected(f"{self.where}: folder {self.name!r} was examined (read-only), not selected")
        return self.owner

    # -- reading -------------------------------------------------------------------------

    def message_refs(self, identity: Identity) -> list[MessageRef]:
        """UID, size and identity of every message the selection reported.

        Sequence-number FETCH in batches: RFC 3501 section 7.4.1 forbids EXPUNGE responses
        while a FETCH is answered, so consecutive batches see stable sequence numbers and
        no UID SEARCH (whose single reply line can exceed imaplib's limit) is needed.
        """
        refs: list[MessageRef] = []
        items = identity_items(self.owner.capabilities)
        for message_set in wire.batches(self.status.messages, IDENTITY_BATCH):
            refs.extend(records.refs(self._fetch(message_set, items, uid=False), self.account, identity))
        return refs

    def identities_since(self, first_uid: int, identity: Identity) -> dict[int, str]:
        """UID -> identity of the messages with UID >= *first_uid*."""
        # "n:*" also matches the highest UID when it is below n (RFC 3501 section 6.4.8),
        # hence the filter on the UID.
        data = self._fetch(f"{max(first_uid, 1)}:*", IDENTITY_ITEMS, uid=True)
        return {ref.uid: ref.identity for ref in records.refs(data, self.account, identity) if ref.uid >= first_uid}

    def new_since(self, first_uid: int, modseq: int, identity: Identity) -> tuple[list[MessageRef], bool]:
        """The messages from UID *first_uid* on, and whether an older one changed (flags, or
        expunged: QRESYNC's VANISHED too) since *modseq* (RFC 7162 section 3.1.4.1)."""
        changed = self._fetch("1:*", [b"UID"], uid=True, modifier=f"(CHANGEDSINCE {modseq})")
        older = any((r.uid() or first_uid) < first_uid for r in wire.records(changed))
        data = self._fetch(f"{max(first_uid, 1)}:*", identity_items(self.owner.capabilities), uid=True)
        return [ref for ref in records.refs(data, self.account, identity) if ref.uid >= first_uid], older

    def identities_of(self, uids: Sequence[int], identity: Identity) -> dict[int, str]:
        """UID -> identity of some messages (UIDs gone are left out)."""
        data = self._fetch(sequence_set(uids), IDENTITY_ITEMS, uid=True)
        return {ref.uid: ref.identity for ref in records.refs(data, self.account, identity)}

    def total_size(self) -> int:
        """Sum of RFC822.SIZE over the folder, for servers without STATUS=SIZE (RFC 8438)."""
        total = 0
        for message_set in wire.batches(self.status.messages, IDENTITY_BATCH):
            for record in wire.records(self._fetch(message_set, [b"RFC822.SIZE"], uid=False)):
                total += record.size() or 0
        return total

    def message_states(self, identity: Identity) -> list[MessageState]:
        """UID, size, identity, flags and internal date of every message: the batches of
        `message_refs`, with FLAGS and INTERNALDATE added; the header fields come with
        BODY.PEEK, so the source's \\Seen flags never change (RFC 3501 section 6.4.5)."""
        states: list[MessageState] = []
        items = identity_items(self.owner.capabilities, STATE_ITEMS)
        for message_set in wire.batches(self.status.messages, IDENTITY_BATCH):
            states.extend(records.states(self._fetch(message_set, items, uid=False), self.account, identity))
        return states

    def body_digests(
        self, messages: Sequence[tuple[int, int]], max_batch_bytes: int = HASH_BATCH_BYTES
    ) -> dict[int, str]:
        """sha256 of each whole message (BODY.PEEK[]): (UID, size) -> digest.

        Fetched in batches bounded by *max_batch_bytes*, each body hashed and dropped, so
        memory holds one batch whatever the folder's size.  A message announced bigger, and
        the messages of a batch whose literals turn out bigger than twice that (RFC822.SIZE
        may be wrong), are hashed as they arrive, a chunk at a time (`transport.body_digest`).
        """
        digests: dict[int, str] = {}
        batch: list[int] = []
        batch_bytes = 0

        def flush() -> None:
            if not batch:
                return
            try:
                digests.update(self._digests(batch, literals.Bounds(body_bytes=2 * max_batch_bytes)))
            except literals.OverBudget:
                for uid in batch:
                    self._digest_streamed(uid, digests)
            batch.clear()

        for uid, size in messages:
            if size > max_batch_bytes:
                self._digest_streamed(uid, digests)
                continue
            if batch and batch_bytes + size > max_batch_bytes:
                flush()
                batch_bytes = 0
            batch.append(uid)
            batch_bytes += size
        flush()
        return digests

    def _digests(self, uids: Sequence[int], bounds: literals.Bounds) -> dict[int, str]:
        digests = {}
        for record in wire.records(self._fetch(sequence_set(uids), [b"UID", b"BODY.PEEK[]"], uid=True, bounds=bounds)):
            fields = records.Fields.read(record, self.account, "literal")
            if fields is not None:
                if isinstance(fields.literal, literals.Cut):
                    raise literals.OverBudget(f"{self.where}: UID {fields.uid}: a body not read whole")
                digests[fields.uid] = hashlib.sha256(fields.literal or b"").hexdigest()
        return digests

    def _digest_streamed(self, uid: int, digests: dict[int, str]) -> None:
        owner = self.check()
        with owner.guarded():
            typ, text = transport.body_digest(owner.client, uid)
        if typ != "OK":
            raise self.folder_error(f"FETCH refused: {text}")
        if text:
            digests[uid] = text

    def fetch_messages(self, uids: Sequence[int], hold_bytes: int | None = None) -> list[Fetched]:
        """Bodies, flags and internal dates; UIDs gone are left out.  With *hold_bytes*, the
        bodies' literals may hold that many bytes in all, by their own announced lengths
        (RFC822.SIZE may be wrong): more is read and dropped, and `literals.OverBudget`
        raised, for the caller to stream them (`stream_messages`)."""
        fetched = list(self._dated(uids, b"BODY.PEEK[]", bounds=literals.Bounds(body_bytes=hold_bytes)))
        # A body cut (not in the shape of a whole message, so read as header fields are; or
        # dropped from a FETCH response that came outside this reply) is never copied as if
        # it were the message.
        if any(isinstance(f.literal, literals.Cut) for f, _date in fetched):
            raise literals.OverBudget(f"{self.where}: folder {self.name!r}: a body not read whole")
        return [Fetched(f.uid, f.flags or (), date, f.literal or b"") for f, date in fetched]

    def describe_messages(self, uids: Sequence[int]) -> list[Described]:
        """Flags, internal dates, sizes and identity header fields, without the bodies (see
        `stream_messages`); UIDs gone are left out."""
        return [
            Described(f.uid, f.flags or (), date, f.size_bytes or 0, f.literal or b"")
            for f, date in self._dated(uids, *IDENTITY_ITEMS[1:], needed="size_bytes")
        ]

    def uids_within(self, selection: Selection) -> set[int]:
        """UIDs of the messages whose internal date is within *selection*'s dates: ``UID
        SEARCH 1:5000 SINCE ...`` per batch, pipelined, so that no reply line outgrows
        imaplib's limit; no message is fetched (RFC 3501 section 6.4.4)."""
        owner = self.check()
        keys = wire.search_dates(selection.since, selection.before)
        with owner.guarded():
            commands = [("UID", "SEARCH", batch, *keys) for batch in wire.batches(self.status.messages, IDENTITY_BATCH)]
            results = transport.pipelined(owner.client, "SEARCH", commands)
            found = transport.take_untagged(owner.client, "SEARCH")
        refused = [text for typ, text in results if typ != "OK"]
        if refused:
            raise self.folder_error(f"SEARCH refused: {refused[0]}")
        return wire.search_uids(found)

    def _dated(
        self, uids: Sequence[int], *items: bytes, needed: str = "literal", bounds: literals.Bounds | None = None
    ) -> Iterator[tuple[records.Fields, bytes]]:
        """The FETCH items of *uids* with FLAGS and INTERNALDATE (which every copy needs, as
        sent) and *items* (one of them a literal, read within *bounds*), message by message
        (`records.dated`)."""
        data = self._fetch(sequence_set(uids), [b"UID", b"FLAGS", b"INTERNALDATE", *items], uid=True, bounds=bounds)
        return records.dated(data, uids, self.account, items == (b"BODY.PEEK[]",), needed)

    def _fetch(
        self, message_set: str, items: Sequence[bytes], uid: bool, modifier: str = "",
        bounds: literals.Bounds | None = None,
    ) -> list[object]:
        """FETCH with a compact message set (``1:5000``), which IMAPClient.fetch cannot send.

        Returns imaplib's untagged FETCH items, for `wire.records`, literals read within
        *bounds* (`transport.read_fetch`).  Unsolicited FETCH responses for other messages
        may be included; callers take what they asked for.
        """
        owner = self.check()
        words = ["UID", "FETCH", message_set] if uid else ["FETCH", message_set]
        with owner.guarded():
            typ, text, data = transport.fetch(owner.client, words, items, modifier, bounds)
            if typ != "OK":
                raise self.folder_error(f"FETCH refused: {text}")
        if bounds is not None and bounds.dropped:
            raise literals.OverBudget(f"{self.where}: folder {self.name!r}: bodies over {bounds.body_bytes} bytes")
        return [item for item in data if item is not None]

    # -- writing (a folder selected read-write: the destination only) ---------------------

    def store_flags(self, changes: Mapping[tuple[str, ...], Sequence[int]], item: str = "FLAGS.SILENT") -> None:
        """Set the flags of messages: flag set -> UIDs.

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

    def delete_messages(self, uids: Sequence[int], uidvalidity: int) -> str:
        """Flag *uids* \\Deleted and expunge them: only them with UID EXPUNGE (RFC 4315
        UIDPLUS) where announced, else with EXPUNGE every \\Deleted message of the folder
        (RFC 3501 section 6.4.3; the caller has warned about that, `expunges_all`).  When
        the folder's UIDVALIDITY is no longer *uidvalidity* nothing is touched: the UIDs
        read then name other messages now (RFC 3501 section 2.3.1.1).  Returns the
        command that expunged, for the log."""
        if self.status.uidvalidity != uidvalidity:
            raise self.folder_error("nothing deleted: UIDVALIDITY changed; run again")
        self.store_flags({("\\Deleted",): uids}, "+FLAGS.SILENT")
        if self.expunges_all:
            commands: list[tuple[str, ...]] = [("EXPUNGE",)]
        else:
            commands = [("UID", "EXPUNGE", s) for s in uid_sets(uids, STORE_BATCH)]
        self._change("EXPUNGE", commands, "EXPUNGE")
        return "EXPUNGE" if self.expunges_all else "UID EXPUNGE"

    @property
    def expunges_all(self) -> bool:
        """Whether deleting messages here removes every \\Deleted message of the folder
        (no UID EXPUNGE: the server lacks UIDPLUS, RFC 4315)."""
        return not self.owner.capabilities.uidplus

    def _change(self, command: str, argument_lists: Sequence[Sequence[str]], echo: str) -> None:
        """Pipeline commands that change the folder; the first refusal is a FolderError.
        The server's untagged *echo* of the change (FETCH, EXPUNGE) is dropped."""
        owner = self.check(writing=True)
        with owner.guarded():
            results = transport.pipelined(owner.client, command, argument_lists)
            transport.take_untagged(owner.client, echo)
        errors = [text for typ, text in results if typ != "OK"]
        if errors:
            raise self.folder_error(f"{command} refused: {errors[0]}")
