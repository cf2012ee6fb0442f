"""Single commands whose replies fastsync reads itself: LIST, STATUS, SELECT/EXAMINE and
NAMESPACE, also sent ahead of their replies; a LOGOUT that does not wait for its reply
(`send_logout`).

Protocol edge (`fastsync.imap`), on `transport.command`: each function sends one command and
hands back the tagged status (BAD included), its text and the untagged replies as imaplib
keeps them; `wire` and `records` read those.  imapclient's own methods for these commands
parse with its general parser, which refuses legal replies that Dovecot does not send (a
NAMESPACE with extension data) or that Dovecot sends and it cannot read (a folder name
``abc[def`` as an atom), or raises TypeError on them (``HIGHESTMODSEQ NIL``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastsync.imap import wire
from fastsync.imap.transport import Client, command, complete, decode_name, quoted_folder


def status_replies(replies: Sequence[Any]) -> tuple[dict[str, dict[str, bytes]], list[str]]:
    """Folder name -> STATUS values as sent (`wire.status_entries`), for `records.status_of`;
    and the replies that could not be read, each named."""
    statuses, unreadable = {}, []
    for entry in wire.status_entries(list(replies)):
        if isinstance(entry, ValueError):
            unreadable.append(str(entry))
        else:
            statuses[decode_name(entry[0])] = entry[1]
    return statuses, unreadable


def list_replies(client: Client, reference: str, pattern: str) -> tuple[str, str, list[Any]]:
    """``LIST reference pattern`` (both given quoted): status, text and the untagged LIST
    replies, for `records.folders_of`."""
    typ, text, kept = command(client, "LIST", reference, pattern, keep=["LIST"])
    return typ, text, kept.get("LIST", [])


def status_reply(client: Client, folder: str, items: Sequence[str]) -> tuple[str, str, list[Any]]:
    """``STATUS folder (items)``: status, text and the untagged STATUS replies."""
    typ, text, kept = command(client, "STATUS", quoted_folder(client, folder), "(" + " ".join(items) + ")",
                              keep=["STATUS"])
    return typ, text, kept.get("STATUS", [])


def select_reply(client: Client, folder: str, readonly: bool) -> tuple[str, str, dict[str, list[Any]]]:
    """SELECT, or EXAMINE with *readonly* (RFC 3501 sections 6.3.1-2): status, text and every
    untagged response it brought (EXISTS, the response codes UIDVALIDITY...), for
    `records.selected_status`.  A failed one leaves no folder selected."""
    imap = client._imap
    imap.untagged_responses.clear()
    typ, text, _kept = command(client, "EXAMINE" if readonly else "SELECT", quoted_folder(client, folder))
    untagged = dict(imap.untagged_responses)
    imap.untagged_responses.clear()
    imap.state = "SELECTED" if typ == "OK" else "AUTH"
    imap.is_readonly = readonly
    return typ, text, untagged


def namespace_reply(client: Client) -> list[tuple[str, str]] | None:
    """The personal namespaces of a NAMESPACE reply (RFC 2342 section 5) as (prefix,
    delimiter); None when refused or unreadable (`wire.personal_namespaces`)."""
    typ, _text, kept = command(client, "NAMESPACE", keep=["NAMESPACE"])
    return _personal(typ, kept.get("NAMESPACE", []))


def namespace_completed(client: Client, tag: bytes) -> list[tuple[str, str]] | None:
    """`namespace_reply` of a NAMESPACE sent ahead (imaplib's ``_command``, tag *tag*)."""
    typ, _text = complete(client, "NAMESPACE", tag)
    return _personal(typ, client._imap.untagged_responses.pop("NAMESPACE", []))


def _personal(typ: str, replies: list[Any]) -> list[tuple[str, str]] | None:
    if typ != "OK" or not replies or not isinstance(replies[-1], bytes):
        return None
    found = wire.personal_namespaces(replies[-1])
    return None if found is None else [(decode_name(prefix), delimiter.decode("utf-8", "replace"))
                                       for prefix, delimiter in found]


def send_logout(client: Client) -> None:
    """Send LOGOUT (RFC 3501 section 6.1.3) without waiting for its reply: the server ends
    the session as it reads it, and nothing in the reply changes what fastsync does, so
    closing a connection costs no round trip (`close_quietly` follows)."""
    imap = client._imap
    imap.state = "LOGOUT"
    imap._command("LOGOUT")
