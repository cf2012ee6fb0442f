"""Pure planning logic: message identity, the one multiset matcher, the one flag rule,
the one size rule, sharding into work units.

Pure-logic layer: imports only records.  Nothing here speaks IMAP; everything is
testable with plain values.  Whoever decides whether a message is present (the planner,
a worker after a lost APPEND, check, --sync-flags) calls `match_by_identity`; whoever
compares or sets flags calls `settable_flags` / `comparable_flags`.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import itertools
import operator
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from fastsync.records.model import FolderPair, MessageRef, MessageState, Selection, Skipped, WorkUnit

S = TypeVar("S")
D = TypeVar("D")

# A work unit's default budget.  A worker holds one unit's bodies in memory (they go to the
# socket without a copy), so bytes bound memory; the count bounds the length of the UID
# list on the command line and how much work a crash can interrupt.
UNIT_MAX_MESSAGES = 400
UNIT_MAX_BYTES = 1024 * 1024

# Messages above this size go into units of their own kind, copied streamed: each body is
# relayed from the source socket to the destination's as it arrives (a worker holds a
# chunk of it, never the message), all of a unit's in one MULTIAPPEND, so bytes do not
# bound memory there and a unit may hold up to `STREAM_UNIT_MAX_BYTES`.  One APPEND (one
# commit on the destination) for many large messages instead of one each: measured in
# bench/README.md ("Large messages, many to an APPEND").
STREAM_MESSAGE_BYTES = UNIT_MAX_BYTES
STREAM_UNIT_MAX_BYTES = 16 * 1024 * 1024


# A unit of small messages goes through a worker in two steps, fetched whole then
# appended (the next unit fetched meanwhile), so on a capped link it spends about twice
# its own time in a worker: the first unit's fetch leaves the destination link idle and the
# last unit's append the source link, and a worker still on a 1 MiB unit at the end keeps
# the run going while the others have nothing left.  So the budget shrinks until every
# worker gets this many units, down to `BATCH_UNIT_MIN_BYTES` (each unit costs a few round
# trips); a copy large enough keeps `UNIT_MAX_BYTES` (bench/README.md, issue 31).
UNITS_PER_WORKER = 8
BATCH_UNIT_MIN_BYTES = 256 * 1024


def batch_unit_bytes(small_bytes: int, workers: int) -> int:
    """The budget of a unit of small messages when *small_bytes* of them are to be copied by
    *workers*: `UNIT_MAX_BYTES`, or less so that each worker gets `UNITS_PER_WORKER` units,
    never under `BATCH_UNIT_MIN_BYTES`."""
    share = small_bytes // (max(1, workers) * UNITS_PER_WORKER)
    return max(BATCH_UNIT_MIN_BYTES, min(UNIT_MAX_BYTES, share))


def partial_units_last(units: Sequence[WorkUnit], budget_bytes: int) -> list[WorkUnit]:
    """*units* in the order to copy them: units of small messages under half *budget_bytes*
    (mostly a folder's last unit, partly filled) after all the others, the largest of them
    first, so that the copy ends on its smallest units and no worker is still fetching
    and appending a full one while the others have nothing left (the longest-first rule of
    list scheduling).  The others keep their order (the pool puts streamed units first)."""
    def partial(unit: WorkUnit) -> bool:
        return not unit.streamed and unit.size_bytes < budget_bytes // 2

    return [u for u in units if not partial(u)] + sorted((u for u in units if partial(u)), key=lambda u: -u.size_bytes)


def stream_unit_bytes(large_bytes: int, workers: int) -> int:
    """The budget of a streamed unit when *large_bytes* of large messages are to be copied
    by *workers*: `STREAM_UNIT_MAX_BYTES`, or less, so that every worker gets a share.  A
    connection capped at 1 MB/s (a WAN link) takes 16 s for 16 MiB: a few big units would
    leave the other workers idle while one or two carry the large messages."""
    return max(STREAM_MESSAGE_BYTES, min(STREAM_UNIT_MAX_BYTES, large_bytes // max(1, workers)))


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


# The header fields of the identity of a message without a Message-Id: what its sender
# wrote.  Not its size, nor anything else a server may change: mbox-based servers store an
# appended message with `Status:`/`X-UID:`/`X-IMAPbase:` lines added and body lines that
# start with "From " quoted as ">From ", so the copy they return is longer than the message
# sent, and an identity with the size in it would never match the copy (every re-run would
# copy it again, `check` would call it missing and extra).  Where two messages share these
# fields, the sizes still pair them (`Matching`); across folders of one account, where
# nothing altered them, `across_folders` adds the size.
FALLBACK_FIELDS = ("date", "from", "subject", "to")


def identity(header: bytes) -> tuple[str, bool]:
    """A message's identity and whether it came from a Message-Id.

    Messages without a Message-Id get a fallback identity from a hash of `FALLBACK_FIELDS`,
    so they are copied (imapsync skips them) and a re-run recognises the copy, also on a
    destination that altered it as mbox-based servers do.
    """
    fields = parse_header_fields(header)
    message_id = normalise_message_id(fields.get("message-id", b""))
    if message_id and message_id != "<>":
        return message_id, True
    digest = hashlib.sha1(usedforsecurity=False)
    for name in FALLBACK_FIELDS:
        digest.update(fields.get(name, b""))
        digest.update(b"\0")
    return "~" + digest.hexdigest()[:24], False


class Matching(Generic[S, D]):
    """Two sides' messages paired by identity (`pair_group` within each identity: a copy
    of the same size first, then in the order given, ascending UID); copies beyond the
    other side's count are `missing` (source) or `extra` (destination).

    `missing` is counted at once, by identity counts alone where that decides (the planner
    wants only that, for 100,000-message folders); `matched` and `extra` are paired on
    first use.
    """

    def __init__(
        self,
        src: Iterable[S],
        dst: Iterable[D],
        src_key: Callable[[S], str],
        dst_key: Callable[[D], str],
        paired: Sequence[tuple[S, D]] = (),
    ):
        self._paired = list(paired)
        self._src, self._dst = list(src), list(dst)
        self._src_keys = [src_key(item) for item in self._src]
        self._dst_keys = [dst_key(copy) for copy in self._dst]
        have = collections.Counter(self._dst_keys)
        wanted = collections.Counter(self._src_keys)
        # Where an identity has more source messages than destination copies, and some,
        # the sizes say which are there (`pair_group`); elsewhere the counts say it all.
        contested = {key for key, count in wanted.items() if count > have[key] > 0}
        partner = self._partner(contested) if contested else {}
        self.missing: list[S] = [
            item for index, (item, key) in enumerate(zip(self._src, self._src_keys, strict=True))
            if not have[key] or (key in contested and index not in partner)
        ]

    def _partner(self, keys: Collection[str] | None = None) -> dict[int, int]:
        """Source index -> destination index of the pairs by identity (of *keys* only)."""
        waiting: dict[str, list[int]] = {}
        for index, key in enumerate(self._dst_keys):
            if keys is None or key in keys:
                waiting.setdefault(key, []).append(index)
        wanted: dict[str, list[int]] = {}
        for index, key in enumerate(self._src_keys):
            if key in waiting:
                wanted.setdefault(key, []).append(index)
        partner: dict[int, int] = {}
        for key, items in wanted.items():
            partner.update(pair_group(items, waiting[key], self._src, self._dst))
        return partner

    @functools.cached_property
    def _pairing(self) -> tuple[list[tuple[S, D]], list[D]]:
        partner = self._partner()
        pairs = [(item, self._dst[partner[index]]) for index, item in enumerate(self._src) if index in partner]
        used = set(partner.values())
        # The copies left unpaired, in the destination's own order.
        return pairs, [copy for index, copy in enumerate(self._dst) if index not in used]

    @property
    def matched(self) -> list[tuple[S, D]]:
        """Pairs known beforehand (the ledger's), then pairs by identity."""
        return self._paired + self._pairing[0]

    @property
    def extra(self) -> list[D]:
        return self._pairing[1]


def pair_group(
    items: Sequence[int], copies: Sequence[int], sources: Sequence[object], targets: Sequence[object]
) -> dict[int, int]:
    """Source messages that share an identity paired with destination copies of it, as
    indices (into *sources* and *targets*): where there is a choice, a copy of the same
    size first (the same message, where two share a Message-Id or a fallback identity: a
    sent and a received copy), then in order (the k-th with the k-th of those left: a
    destination that altered the copies, as mbox-based servers do).  Items beyond the
    copies stay unpaired (missing), and copies beyond the items (extra)."""
    if len(items) == 1 and len(copies) == 1:
        return {items[0]: copies[0]}
    by_size: dict[int | None, collections.deque[int]] = {}
    for copy in copies:
        by_size.setdefault(_size_of(targets[copy]), collections.deque()).append(copy)
    pairs: dict[int, int] = {}
    for item in items:
        size = _size_of(sources[item])
        same = by_size.get(size) if size is not None else None
        if same:
            pairs[item] = same.popleft()
    taken = set(pairs.values())
    rest = iter([c for c in copies if c not in taken])
    for item in items:
        if item not in pairs and len(pairs) < len(copies):
            pairs[item] = next(rest)
    return pairs


def _size_of(item: object) -> int | None:
    """A message's size where its record has one (an identity string has none)."""
    size = getattr(item, "size_bytes", None)
    return size if isinstance(size, int) else None


def match_by_identity(
    src: Iterable[S], dst: Iterable[D], src_key: Callable[[S], str], dst_key: Callable[[D], str]
) -> Matching[S, D]:
    """The one multiset matching of identities (see `Matching`).

    An identity present twice at the source and once at the destination yields one copy to
    make, so messages that share a Message-Id (resent mail, copies in one folder) all arrive.
    """
    return Matching(src, dst, src_key, dst_key)


def missing(src: Sequence[MessageRef], dst_identities: Iterable[str]) -> list[MessageRef]:
    """Source messages absent from the destination (see `match_by_identity`), in source order."""
    return match_by_identity(src, dst_identities, _IDENTITY, _itself).missing


def extra(src: Iterable[MessageRef], dst: Sequence[MessageRef]) -> list[MessageRef]:
    """Destination messages no source message accounts for (see `match_by_identity`), in
    destination order: what ``--delete-dest`` removes.  Of two destination copies of an
    identity the source has once, the later one is extra."""
    return match_by_identity(src, dst, _IDENTITY, _IDENTITY).extra


def match_states(
    src: Sequence[MessageState], dst: Sequence[MessageState], known: Mapping[int, int] | None = None
) -> Matching[MessageState, MessageState]:
    """`match_by_identity` for two folders read with FETCH (check, --sync-flags), after the
    pairs the ledger *known* (source UID -> destination UID) names."""
    paired, src_rest, dst_rest = split_known(src, dst, known or {})
    return Matching(src_rest, dst_rest, _IDENTITY, _IDENTITY, paired)


U_S = TypeVar("U_S", MessageRef, MessageState)
U_D = TypeVar("U_D", MessageRef, MessageState)


def split_known(
    src: Sequence[U_S], dst: Sequence[U_D], known: Mapping[int, int]
) -> tuple[list[tuple[U_S, U_D]], list[U_S], list[U_D]]:
    """(pairs the ledger knows, the other source messages, the other destination messages).

    *known* maps source UIDs to the destination UIDs their copies got; a pair counts only
    when both messages are there, so an entry whose copy was deleted names nothing.
    """
    if not known:
        return [], list(src), list(dst)
    dst_by_uid = {d.uid: d for d in dst}
    paired = [(s, dst_by_uid[known[s.uid]]) for s in src if known.get(s.uid) in dst_by_uid]
    src_taken = {s.uid for s, _d in paired}
    dst_taken = {d.uid for _s, d in paired}
    return paired, [s for s in src if s.uid not in src_taken], [d for d in dst if d.uid not in dst_taken]


_IDENTITY: Callable[[MessageRef | MessageState], str] = operator.attrgetter("identity")


def _itself(identity: str) -> str:
    return identity


def across_folders(message: MessageRef | MessageState) -> str:
    """What recognises a message in another folder of the same account: Gmail's message id
    (X-GM-MSGID, exact even without a Message-Id) where the server gives one, else its
    identity and its size.  Both folders are on one server, which stores one message
    alike wherever it shows it, while two messages that share a Message-Id (the copy
    sent and the copy received) differ in size: the received one carries Received lines.
    Matching on the identity alone would take one for the other and never copy it."""
    if message.gm_msgid:
        return f"gm:{message.gm_msgid}"
    return f"{message.identity}/{message.size_bytes}"


def settable_flags(flags: Iterable[str]) -> tuple[str, ...]:
    """The flags a copy carries and a comparison sees: all but \\Recent, which only a server
    may set (RFC 3501 section 2.3.2).  Keywords travel too; order and case are kept."""
    return tuple(f for f in flags if f.lower() != "\\recent")


def keywords(flags: Iterable[str]) -> tuple[str, ...]:
    """The keywords among *flags*: those that are not system flags (RFC 3501 section 2.3.2)."""
    return tuple(f for f in flags if not f.startswith("\\"))


def keepable_flags(
    flags: Iterable[str], permanent: Sequence[str] | None, refused: Collection[str] = ()
) -> tuple[str, ...]:
    """The `settable_flags` a folder keeps, given its PERMANENTFLAGS (RFC 3501 section 7.1)
    and the keywords it *refused* on APPEND (lower case, from the ledger): all when it has
    ``\\*`` (any keyword) or did not say, else those it lists; never a refused one.  A
    server drops the others silently on APPEND and STORE, or refuses the message (a keyword
    too long, a character it does not take), so comparing them would report the same
    messages on every run, and sending them would cost the message."""
    settable = settable_flags(flags)
    if refused:
        settable = tuple(f for f in settable if f.lower() not in refused)
    if permanent is None or "\\*" in permanent:
        return settable
    allowed = {p.lower() for p in permanent}
    return tuple(f for f in settable if f.lower() in allowed)


def unkept_flags(
    messages: Iterable[MessageState], permanent: Sequence[str] | None, refused: Collection[str] = ()
) -> list[str]:
    """The flags of *messages* that a folder with PERMANENTFLAGS *permanent* that *refused*
    some keywords cannot keep (`keepable_flags`)."""
    wanted = {f for m in messages for f in settable_flags(m.flags)}
    return sorted(wanted - set(keepable_flags(wanted, permanent, refused)))


# A message refused with several keywords is sent again without each in turn, up to this
# many keywords, to find the one the destination will not take; then without any.
SINGLE_KEYWORD_RETRIES = 8


def keyword_retries(flags: Sequence[str]) -> list[tuple[str, ...]]:
    """The flag sets to send a refused message with, in order, when its keywords may be
    why: without each keyword (when it has several, at most `SINGLE_KEYWORD_RETRIES`), then
    without any.  System flags always stay; an empty list when it has no keyword."""
    words = keywords(flags)
    if not words:
        return []
    tries = [tuple(f for f in flags if f != word) for word in words] if 1 < len(words) <= SINGLE_KEYWORD_RETRIES else []
    return [*tries, tuple(f for f in flags if f not in words)]


def comparable_flags(flags: Iterable[str]) -> frozenset[str]:
    """Flags as the two sides' copies are compared: `settable_flags`, case-insensitively,
    as RFC 3501 treats system flags and servers (Dovecot, Gmail) treat keywords."""
    return frozenset(f.lower() for f in settable_flags(flags))


def flags_text(flags: Iterable[str]) -> str:
    """A flag set as one line of text, for reports: settable flags, sorted."""
    return " ".join(sorted(settable_flags(flags)))


def flags_differ(
    src: MessageState, dst: MessageState, permanent: Sequence[str] | None = None, refused: Collection[str] = ()
) -> bool:
    """Whether two copies' flags differ, among those the destination folder can keep."""
    return comparable_flags(keepable_flags(src.flags, permanent, refused)) != comparable_flags(
        keepable_flags(dst.flags, permanent, refused)
    )


def flag_changes(
    matched: Iterable[tuple[MessageState, MessageState]], permanent: Sequence[str] | None = None,
    refused: Collection[str] = (),
) -> dict[tuple[str, ...], list[int]]:
    """Destination UIDs whose flags differ from their source copy (among those the folder
    can keep), grouped by the source's flag set so that one STORE sets each set."""
    changes: dict[tuple[str, ...], list[int]] = {}
    for src, dst in matched:
        if flags_differ(src, dst, permanent, refused):
            changes.setdefault(tuple(sorted(keepable_flags(src.flags, permanent, refused))), []).append(dst.uid)
    return changes


def known_bytes(size_bytes: int) -> int:
    """*size_bytes* as budgets and totals count it: a size below zero is not known (a
    server's RFC822.SIZE that cannot be one, see `size_reason`) and counts as nothing."""
    return max(size_bytes, 0)


def size_reason(size_bytes: int, selection: Selection) -> str:
    """Why a message of *size_bytes* is not copied, '' when it is: the one size rule.

    The user's bounds (``--max-size``, ``--min-size``) first, then the destination's
    APPENDLIMIT (RFC 7889): a message over it would only be refused, one APPEND after
    another, so it is skipped and said once per folder instead.  A size below zero is
    none: RFC822.SIZE is an unsigned number (RFC 3501 section 9, RFC 9051 section 9), and a
    server that sends -143 has it wrong, or fastsync does not know it (-1); what a
    server gets wrong never decides that a message is left behind, so it is copied.
    """
    if size_bytes < 0:
        return ""
    if selection.max_size_bytes and size_bytes > selection.max_size_bytes:
        return f"larger than --max-size ({selection.max_size_bytes} bytes)"
    if size_bytes < selection.min_size_bytes:
        return f"smaller than --min-size ({selection.min_size_bytes} bytes)"
    if selection.append_limit_bytes and size_bytes > selection.append_limit_bytes:
        return appendlimit_reason(selection.append_limit_bytes)
    return ""


def appendlimit_reason(limit_bytes: int) -> str:
    return f"over the destination's APPENDLIMIT of {limit_bytes} bytes"


def skip_by_size(
    folder: str, refs: Sequence[MessageRef], selection: Selection
) -> tuple[list[MessageRef], list[Skipped]]:
    """*refs* split by `size_reason`: those to copy, and those skipped with their reason."""
    kept: list[MessageRef] = []
    skipped: list[Skipped] = []
    for ref in refs:
        reason = size_reason(ref.size_bytes, selection)
        if reason:
            skipped.append(Skipped(folder, ref.uid, ref.size_bytes, reason))
        else:
            kept.append(ref)
    return kept, skipped


@dataclass(frozen=True)
class UnitBounds:
    """How large a work unit may grow: messages, bytes, and bytes of a streamed unit
    (`batch_unit_bytes` and `stream_unit_bytes` fit the two to the pool)."""

    max_messages: int = UNIT_MAX_MESSAGES
    max_bytes: int = UNIT_MAX_BYTES
    stream_max_bytes: int = STREAM_UNIT_MAX_BYTES


def shard(
    pair: FolderPair,
    uidvalidity: int,
    refs: Sequence[MessageRef],
    first_unit_id: int,
    bounds: UnitBounds = UnitBounds(),
    dst_uidnext: int = 1,
) -> Iterator[WorkUnit]:
    """Cut messages into units bounded by count and bytes; a message over budget travels alone.

    Messages above `STREAM_MESSAGE_BYTES` go into streamed units (`WorkUnit.streamed`),
    bounded by ``stream_max_bytes`` instead of ``max_bytes``.  All messages that share an
    identity go into the same unit (the one of the first), so that after an APPEND with an
    unknown outcome a worker can tell its own copies apart: no other unit puts that
    identity into the destination folder.  A message whose identity was not read ("")
    is a group of its own (`WorkUnit.blind` says how such units tell their copies apart).
    """
    unit_ids = itertools.count(first_unit_id)
    max_messages = bounds.max_messages
    budgets = {False: bounds.max_bytes, True: max(bounds.max_bytes, bounds.stream_max_bytes)}
    pending: dict[bool, tuple[list[int], int]] = {False: ([], 0), True: ([], 0)}
    # Only identities that several messages share get a list (a list per message took
    # 13 MB at the peak of a 100,000-message folder's plan); a message whose identity was
    # not read is a group of its own, and is not counted.
    counts = collections.Counter(ref.identity for ref in refs if ref.identity)
    same: dict[str, list[MessageRef]] = {}
    for ref in refs:
        if counts[ref.identity] > 1:
            same.setdefault(ref.identity, []).append(ref)
    for ref in refs:
        if counts[ref.identity] <= 1:
            group = [ref]
        else:
            group = same.pop(ref.identity, [])
            if not group:
                continue  # in the unit of the first message of its group
        if len(group) == 1:  # the usual case: no other message has this identity
            group_size = largest = known_bytes(ref.size_bytes)
        else:
            group_size = sum(known_bytes(r.size_bytes) for r in group)
            largest = max(known_bytes(r.size_bytes) for r in group)
        streamed = largest > STREAM_MESSAGE_BYTES
        uids, size = pending[streamed]
        if uids and (len(uids) + len(group) > max_messages or size + group_size > budgets[streamed]):
            yield WorkUnit(next(unit_ids), pair, uidvalidity, tuple(uids), size, dst_uidnext, streamed=streamed)
            uids, size = [], 0
        uids.extend(r.uid for r in group)
        pending[streamed] = (uids, size + group_size)
    for streamed, (uids, size) in pending.items():
        if uids:
            yield WorkUnit(next(unit_ids), pair, uidvalidity, tuple(uids), size, dst_uidnext, streamed=streamed)
