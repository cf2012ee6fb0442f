"""FETCH responses read into fastsync's records, message by message.

Protocol edge (`fastsync.imap`), without a connection: the items are those imaplib hands
over (plain lines and ``(line, literal)`` pairs), read in `wire`'s usual shapes first and
then through `Fields` (imapclient's parser for what `wire` does not read).
`Session` fetches; these functions make `fastsync.records.model` records of what came back.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastsync.imap import wire
from fastsync.settings.config import Account
from fastsync.records.errors import FolderError, MalformedResponse
from fastsync.imap.transport import decode_name, parse_fetch
from fastsync.imap.wire import text_of
from fastsync.records.model import Folder, FolderStatus, MessageRef, MessageState

# A message's identity from its header fields, and whether it had a Message-Id (plan.identity).
Identity = Callable[[bytes], tuple[str, bool]]


@dataclass(frozen=True)
class Fields:
    """The items of one message's FETCH response that fastsync asks for (None: not sent)."""

    uid: int
    size_bytes: int | None
    flags: tuple[str, ...] | None
    # As sent (see `wire.Record.internaldate`); `moment` parses it.
    internaldate: bytes | None
    literal: bytes | None
    gm_msgid: int | None = None

    @property
    def moment(self) -> dt.datetime | None:
        return wire.parse_internaldate(self.internaldate) if self.internaldate is not None else None

    @classmethod
    def read(cls, record: wire.Record, account: Account, *needed: str) -> Fields | None:
        """A message's items: `wire`'s fast reading, or imapclient's parser when the response
        is not of the usual shape (e.g. a header section sent as a quoted string).  None when
        the response has no UID."""
        uid = record.uid()
        if uid is not None:
            fields = cls(uid, record.size(), record.flags(), record.internaldate(), record.literal(), record.gm_msgid())
            if all(getattr(fields, name) is not None for name in needed):
                return fields
        parsed = parse_fetch(record.items, account)
        if parsed is None or b"UID" not in parsed:
            return None

        def count(item: bytes, default: int | None) -> int | None:
            if item not in parsed:
                return default
            value = wire.number(parsed[item])
            if value is None:
                text = f"{account.where}: unreadable FETCH response: {item.decode()} {quote(parsed[item], 100)}"
                raise MalformedResponse(text, side=account.side)
            return value

        date = parsed.get(b"INTERNALDATE")
        flags = parsed.get(b"FLAGS") or ()
        # RFC822.SIZE is unsigned (RFC 3501 section 9): a server that sends -N gets sizes
        # wrong; the size is then not known (-1), which decides nothing (`plan.size_reason`).
        size = parsed.get(b"RFC822.SIZE")
        negative = (isinstance(size, int) and size < 0) or (
            isinstance(size, bytes) and size.startswith(b"-") and size[1:].isdigit())
        return cls(
            count(b"UID", 0) or 0,
            -1 if negative else wire.size_number(count(b"RFC822.SIZE", 0) or 0),
            tuple(text_of(f) for f in (flags if isinstance(flags, tuple) else (flags,))),
            wire.format_internaldate(date) if isinstance(date, dt.datetime) else None,
            next((v if isinstance(v, bytes) else b"" for k, v in parsed.items() if k.startswith(b"BODY[")), None),
            count(b"X-GM-MSGID", None),
        )


def refs(data: Sequence[object], account: Account, identity: Identity) -> Iterator[MessageRef]:
    """The messages of a survey FETCH (UID, RFC822.SIZE, identity header fields)."""
    usual, rest = wire.usual_refs(data)
    for uid, size, header in usual:
        key, has_id = identity(header)
        yield MessageRef(uid, size, key, has_id, 0)
    for record in wire.records(rest):
        fields = Fields.read(record, account, "size_bytes", "literal")
        if fields is not None:
            size = fields.size_bytes or 0
            key, has_id = identity(fields.literal or b"")
            yield MessageRef(fields.uid, size, key, has_id, fields.gm_msgid or 0)


def sizes(data: Sequence[object], account: Account) -> Iterator[MessageRef]:
    """The messages of a ``(UID RFC822.SIZE)`` FETCH, their identities not read ("")."""
    usual, rest = wire.usual_sizes(data)
    for uid, size in usual:
        yield MessageRef(uid, size, "")
    for record in wire.records(rest):
        fields = Fields.read(record, account, "size_bytes")
        if fields is not None:
            yield MessageRef(fields.uid, fields.size_bytes or 0, "")


def states(data: Sequence[object], account: Account, identity: Identity) -> Iterator[MessageState]:
    """The messages of a `check` FETCH: UID, size, identity, flags and internal date."""
    usual, rest = wire.usual_states(data)
    for uid, size, flags, date, header in usual:
        key, has_id = identity(header)
        yield MessageState(uid, size, key, flags, wire.parse_internaldate(date), has_id)
    for record in wire.records(rest):
        fields = Fields.read(record, account, "size_bytes", "literal", "flags")
        if fields is not None:
            size = fields.size_bytes or 0
            key, has_id = identity(fields.literal or b"")
            yield MessageState(fields.uid, size, key, fields.flags or (), fields.moment, has_id, fields.gm_msgid or 0)


def dated(
    data: Sequence[object], uids: Sequence[int], account: Account, whole_body: bool, needed: str
) -> Iterator[tuple[Fields, bytes]]:
    """The messages of *uids* in a copy's FETCH, with FLAGS, INTERNALDATE (as sent) and a
    literal: the whole body (*whole_body*: `wire.usual_bodies` reads that shape) or the
    identity header fields; *needed* names one more item a message must come with."""
    wanted = set(uids)
    usual, rest = wire.usual_bodies(data) if whole_body else ([], data)
    for uid, flags, date, body in usual:
        if uid in wanted:
            yield Fields(uid, None, flags, date, body), date
    for record in wire.records(rest):
        fields = Fields.read(record, account, "flags", "internaldate", "literal", needed)
        if fields is None or fields.literal is None or fields.uid not in wanted:
            continue
        if fields.internaldate is None:
            raise MalformedResponse(
                f"{account.where}: UID {fields.uid}: FETCH response without an INTERNALDATE", side=account.side
            )
        yield fields, fields.internaldate


# -- server values -> records --------------------------------------------------------------


def selected_status(untagged: Mapping[str, Sequence[object]], account: Account | None = None, folder: str = "") -> FolderStatus:
    """What SELECT or EXAMINE reported (RFC 3501 section 6.3.1; HIGHESTMODSEQ, RFC 7162), from
    imaplib's untagged responses (``EXISTS``, the response codes ``UIDVALIDITY``...).  A
    number left out, or NIL where a server has none, reads as 0 (not known); one that is
    not a number is a `FolderError` quoting it: that folder cannot be read."""

    def count(name: str) -> int:
        values = untagged.get(name) or [None]
        value = values[-1]
        if value is None or (isinstance(value, bytes) and value.upper() == b"NIL"):
            return 0
        found = wire.number(value)
        if found is None:
            raise _folder_error(account, f"folder {folder!r}: unreadable reply to SELECT: {name} {quote(value)}")
        return found

    return FolderStatus(
        messages=count("EXISTS"),
        size_bytes=-1,
        uidvalidity=count("UIDVALIDITY"),
        uidnext=count("UIDNEXT"),
        highestmodseq=count("HIGHESTMODSEQ"),
        permanent_flags=wire.permanent_flags(untagged.get("OK", ())),
    )


def status_of(reply: Mapping[Any, Any], account: Account | None = None, folder: str = "") -> FolderStatus:
    """A STATUS reply's values (RFC 3501 section 7.2.4).  NIL, which some servers send for the
    HIGHESTMODSEQ of an empty folder (RFC 7162 asks for a number), reads as not known (0,
    like a folder without mod-sequences); a value that is not a number is a `FolderError`
    quoting it."""
    values = {}
    for key, value in reply.items():
        name = text_of(key).upper()
        if value is None or (isinstance(value, bytes) and value.upper() == b"NIL"):
            continue
        found = wire.number(value)
        if found is None:
            raise _folder_error(account, f"folder {folder!r}: unreadable STATUS reply: {name} {quote(value)}")
        values[name] = found
    return FolderStatus(
        messages=values.get("MESSAGES", 0),
        size_bytes=values.get("SIZE", -1),
        uidvalidity=values.get("UIDVALIDITY", 0),
        uidnext=values.get("UIDNEXT", 0),
        highestmodseq=values.get("HIGHESTMODSEQ", 0),
    )


def folders_of(items: Sequence[object], account: Account) -> list[Folder]:
    """The folders of a LIST command's replies (`wire.list_entries`), names decoded from
    modified UTF-7 (RFC 3501 section 5.1.3).  A reply that is not a LIST reply is a
    `MalformedResponse` quoting it: a folder left out unseen would not be synced."""
    try:
        return [
            Folder(name=decode_name(name), delimiter=text_of(delimiter), attributes=tuple(text_of(f) for f in flags))
            for flags, delimiter, name in wire.list_entries(items)
        ]
    except ValueError as exc:
        text = f"{account.where}: unreadable LIST reply: {quote(str(exc))}"
        raise MalformedResponse(text, side=account.side) from None


def _folder_error(account: Account | None, text: str) -> FolderError:
    """A `FolderError` on *account*'s side, *text* after its name."""
    if account is None:
        return FolderError(text)
    return FolderError(f"{account.where}: {text}", side=account.side)


def quote(value: object, limit: int = 200) -> str:
    """A piece of a server's reply as an error message quotes it: its repr, at most *limit*
    characters (a server's words can be long; the caller redacts secrets first)."""
    text = repr(value.decode("utf-8", "replace") if isinstance(value, bytes) else value)
    return text if len(text) <= limit else text[:limit] + "..."
