"""What a server announced it can do, read once into a typed record the engine asks by name.

Protocol edge, but pure: no I/O.  A server lists its capabilities in a CAPABILITY
response (RFC 3501 section 7.2.1), or in a ``[CAPABILITY ...]`` response code of its
greeting or of the login's OK (section 7.1).  `Capabilities.parse` reads such a list;
`Session` parses the list valid after login, and again only when the server sends a new
one.  Nothing outside `fastsync/imap/` spells a capability's name: the engine asks
``session.capabilities.uidplus``, so an extension's quirks are handled here or in the
session, never in the sync logic.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Capabilities:
    """One server's announcement, by name.  *names* keeps every word as announced (upper
    case, in the server's order) for `show -v` and messages; the fields are those
    fastsync acts on."""

    names: tuple[str, ...] = ()
    # RFC 3502: several messages in one APPEND, stored all or nothing.
    multiappend: bool = False
    # RFC 4315: APPENDUID / COPYUID codes, UID EXPUNGE.
    uidplus: bool = False
    # RFC 7162: MODSEQ, HIGHESTMODSEQ in STATUS, CHANGEDSINCE.
    condstore: bool = False
    qresync: bool = False
    # RFC 7888: literals sent without waiting for the server (LITERAL-: up to 4096 bytes).
    literal_plus: bool = False
    literal_minus: bool = False
    # RFC 5465 NOTIFY and RFC 2177 IDLE: hearing of changes without polling.
    notify: bool = False
    idle: bool = False
    # Gmail's extensions (X-GM-MSGID, X-GM-LABELS).
    gmail_ext: bool = False
    # RFC 6154: \Sent, \All... on LIST, and the SPECIAL-USE return option.
    special_use: bool = False
    # RFC 5819: LIST ... RETURN (STATUS (...)).
    list_status: bool = False
    # RFC 8438: SIZE in STATUS.
    status_size: bool = False
    # RFC 2342.
    namespace: bool = False
    # RFC 3691: leave a folder without expunging.
    unselect: bool = False
    # RFC 7889: the largest message APPEND accepts; None when not announced or per folder
    # (a bare APPENDLIMIT, section 3).
    appendlimit: int | None = None
    # RFC 4978.
    compress_deflate: bool = False
    # RFC 6851.
    move: bool = False
    # RFC 4731.
    esearch: bool = False
    # RFC 9208 (and RFC 2087).
    quota: bool = False
    # RFC 6855.
    utf8_accept: bool = False
    # RFC 4959: the SASL initial response with AUTHENTICATE.
    sasl_ir: bool = False
    # RFC 5161.
    enable: bool = False
    # RFC 3501 section 6.2.1 and section 6.2.3 (LOGINDISABLED).
    starttls: bool = False
    login_disabled: bool = False
    # SASL mechanisms from the AUTH=<name> words (RFC 3501 section 6.2.2), upper case.
    auth_mechanisms: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, words: Iterable[str | bytes]) -> Capabilities:
        """The record of a capability list; case does not matter (RFC 3501 section 9:
        atoms are case-insensitive), unknown words are kept in *names* only."""
        texts = ((w.decode("ascii", "replace") if isinstance(w, bytes) else w).upper() for w in words)
        names = list(dict.fromkeys(t for t in texts if t))
        have = set(names)
        mechanisms = frozenset(n.removeprefix("AUTH=") for n in names if n.startswith("AUTH="))
        return cls(
            names=tuple(names),
            multiappend="MULTIAPPEND" in have,
            uidplus="UIDPLUS" in have,
            condstore="CONDSTORE" in have,
            qresync="QRESYNC" in have,
            literal_plus="LITERAL+" in have,
            literal_minus="LITERAL-" in have,
            notify="NOTIFY" in have,
            idle="IDLE" in have,
            gmail_ext="X-GM-EXT-1" in have,
            special_use="SPECIAL-USE" in have,
            list_status="LIST-STATUS" in have,
            status_size="STATUS=SIZE" in have,
            namespace="NAMESPACE" in have,
            unselect="UNSELECT" in have,
            appendlimit=_append_limit(names),
            compress_deflate="COMPRESS=DEFLATE" in have,
            move="MOVE" in have,
            esearch="ESEARCH" in have,
            quota="QUOTA" in have or any(n.startswith("QUOTA=") for n in names),
            utf8_accept="UTF8=ACCEPT" in have or "UTF8=ONLY" in have,
            sasl_ir="SASL-IR" in have,
            enable="ENABLE" in have,
            starttls="STARTTLS" in have,
            login_disabled="LOGINDISABLED" in have,
            auth_mechanisms=mechanisms,
        )


def _append_limit(names: Iterable[str]) -> int | None:
    """``APPENDLIMIT=<n>`` (RFC 7889 section 3) in bytes; None for a bare APPENDLIMIT (the
    limits are per folder, which fastsync does not read) or none at all."""
    for name in names:
        key, _sep, value = name.partition("=")
        if key == "APPENDLIMIT" and value.isdigit():
            return int(value)
    return None


def status_items(capabilities: Capabilities) -> list[str]:
    """What STATUS asks for: sizes (RFC 8438) and HIGHESTMODSEQ (RFC 7162) where announced."""
    items = ["MESSAGES", "UIDVALIDITY", "UIDNEXT"]
    if capabilities.status_size:
        items.append("SIZE")
    if capabilities.condstore:
        items.append("HIGHESTMODSEQ")
    return items
