"""Pure planning logic: message identity, the multiset diff, sharding into work units.

Nothing here speaks IMAP; everything is testable with plain values.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence

from fastsync.model import FolderPair, MessageRef, WorkUnit

# A work unit's default budget.  A worker holds one unit's bodies in memory (plus the copy
# imapclient makes when it builds the APPEND), so bytes bound memory; the count bounds the
# length of the UID list on the command line and how much work a crash can interrupt.
UNIT_MAX_MESSAGES = 400
UNIT_MAX_BYTES = 1024 * 1024

_FOLD = re.compile(rb"\r?\n[ \t]+")
_ANGLE = re.compile(r"<[^<>]*>")


def parse_header_fields(header: bytes) -> dict[str, bytes]:
    """Name (lower case) -> unfolded value for a block of header lines; first occurrence wins."""
    fields: dict[str, bytes] = {}
    for line in _FOLD.sub(b" ", header).splitlines():
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        key = name.strip().lower().decode("ascii", "replace")
        fields.setdefault(key, value.strip())
    return fields


def normalise_message_id(raw: bytes) -> str:
    """The ``<...>`` token of a Message-Id, whitespace removed; '' when there is none usable."""
    text = raw.decode("utf-8", "surrogateescape")
    match = _ANGLE.search(text)
    token = match.group(0) if match else text
    return "".join(token.split())


def identity(header: bytes, size_bytes: int) -> tuple[str, bool]:
    """A message's identity and whether it came from a Message-Id.

    Messages without a Message-Id get a fallback identity from a hash of Date, From and
    Subject and the size, so they are copied (imapsync skips them) and a re-run, which sees
    the byte-identical copy on the destination, does not copy them again.
    """
    fields = parse_header_fields(header)
    message_id = normalise_message_id(fields.get("message-id", b""))
    if message_id and message_id != "<>":
        return message_id, True
    digest = hashlib.sha1(usedforsecurity=False)
    for name in ("date", "from", "subject"):
        digest.update(fields.get(name, b""))
        digest.update(b"\0")
    digest.update(str(size_bytes).encode())
    return "~" + digest.hexdigest()[:24], False


def missing(src: Sequence[MessageRef], dst_identities: Iterable[str]) -> list[MessageRef]:
    """Source messages absent from the destination, as a multiset difference.

    An identity present twice at the source and once at the destination yields one copy,
    so messages that share a Message-Id (resent mail, copies in one folder) all arrive.
    The source order (ascending UID) is kept.
    """
    have = Counter(dst_identities)
    out = []
    for ref in src:
        if have[ref.identity] > 0:
            have[ref.identity] -= 1
        else:
            out.append(ref)
    return out


def shard(
    pair: FolderPair,
    uidvalidity: int,
    refs: Sequence[MessageRef],
    first_unit_id: int,
    max_messages: int = UNIT_MAX_MESSAGES,
    max_bytes: int = UNIT_MAX_BYTES,
    dst_uidnext: int = 1,
) -> Iterator[WorkUnit]:
    """Cut messages into units bounded by count and bytes; a message over budget travels alone.

    All messages that share an identity go into the same unit (the one of the first), so
    that after an APPEND with an unknown outcome a worker can tell its own copies apart:
    no other unit puts that identity into the destination folder.
    """
    unit_id = first_unit_id
    uids: list[int] = []
    size = 0
    same: dict[str, list[MessageRef]] = {}
    for ref in refs:
        same.setdefault(ref.identity, []).append(ref)
    for ref in refs:
        group = same.pop(ref.identity, None)
        if group is None:
            continue
        group_size = sum(r.size_bytes for r in group)
        if uids and (len(uids) + len(group) > max_messages or size + group_size > max_bytes):
            yield WorkUnit(unit_id, pair, uidvalidity, tuple(uids), size, dst_uidnext)
            unit_id += 1
            uids, size = [], 0
        uids.extend(r.uid for r in group)
        size += group_size
    if uids:
        yield WorkUnit(unit_id, pair, uidvalidity, tuple(uids), size, dst_uidnext)
