"""FETCH responses read into fastsync's records, message by message.

Protocol edge (`fastsync.imap`), without a connection: the items are those imaplib hands
over (plain lines and ``(line, literal)`` pairs), read in `wire`'s usual shapes first and
then through `transport.Fields` (imapclient's parser for what `wire` does not read).
`Session` fetches; these functions make `fastsync.records.model` records of what came back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from fastsync.imap import wire
from fastsync.settings.config import Account
from fastsync.records.errors import MalformedResponse
from fastsync.imap.transport import Fields, text_of
from fastsync.records.model import Folder, FolderStatus, MessageRef, MessageState

# A message's identity from its header fields and size, and whether it had a Message-Id (plan.identity).
Identity = Callable[[bytes, int], tuple[str, bool]]


def refs(data: Sequence[object], account: Account, identity: Identity) -> Iterator[MessageRef]:
    """The messages of a survey FETCH (UID, RFC822.SIZE, identity header fields)."""
    usual, rest = wire.usual_refs(data)
    for uid, size, header in usual:
        key, has_id = identity(header, size)
        yield MessageRef(uid, size, key, has_id, 0)
    for record in wire.records(rest):
        fields = Fields.read(record, account, "size_bytes", "literal")
        if fields is not None:
            size = fields.size_bytes or 0
            key, has_id = identity(fields.literal or b"", size)
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
        key, has_id = identity(header, size)
        yield MessageState(uid, size, key, flags, wire.parse_internaldate(date), has_id)
    for record in wire.records(rest):
        fields = Fields.read(record, account, "size_bytes", "literal", "flags")
        if fields is not None:
            size = fields.size_bytes or 0
            key, has_id = identity(fields.literal or b"", size)
            yield MessageState(fields.uid, size, key, fields.flags or (), fields.moment, has_id)


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


def selected_status(reply: Mapping[bytes, Any]) -> FolderStatus:
    """What SELECT or EXAMINE reported (RFC 3501 section 6.3.1; HIGHESTMODSEQ, RFC 7162)."""
    permanent = reply.get(b"PERMANENTFLAGS")
    return FolderStatus(
        messages=int(reply.get(b"EXISTS", 0)),
        size_bytes=-1,
        uidvalidity=int(reply.get(b"UIDVALIDITY", 0)),
        uidnext=int(reply.get(b"UIDNEXT", 0)),
        highestmodseq=int(reply.get(b"HIGHESTMODSEQ", 0)),
        permanent_flags=tuple(text_of(f) for f in permanent) if permanent is not None else None,
    )


def status_of(reply: dict[Any, Any]) -> FolderStatus:
    values = {text_of(k).upper(): int(v) for k, v in reply.items()}
    return FolderStatus(
        messages=values.get("MESSAGES", 0),
        size_bytes=values.get("SIZE", -1),
        uidvalidity=values.get("UIDVALIDITY", 0),
        uidnext=values.get("UIDNEXT", 0),
        highestmodseq=values.get("HIGHESTMODSEQ", 0),
    )


def folder_of(row: tuple[Any, Any, Any]) -> Folder:
    flags, delimiter, name = row
    return Folder(name=text_of(name), delimiter=text_of(delimiter or ""), attributes=tuple(text_of(f) for f in flags))
