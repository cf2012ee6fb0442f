"""Pure planning logic: message identity, the one multiset matcher, the one flag rule,
the one size rule, sharding into work units.

Pure-logic layer: imports only records.  Nothing here speaks IMAP; everything is
testable with plain values.  Whoever decides whether a message is present (the planner,
a worker after a lost APPEND, check, --sync-flags) calls `match_by_identity`; whoever
compares or sets flags calls `settable_flags` / `comparable_flags`.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import operator
import re
from collections import Counter
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


class Matching(Generic[S, D]):
    """Two sides' messages paired by identity: the k-th source copy of an identity pairs
    with the k-th destination copy, in the order given (ascending UID); copies beyond the
    other side's count are `missing` (source) or `extra` (destination).

    `missing` is counted at once (the planner wants only that, for 100,000-message
    folders); `matched` and `extra` are paired on first use.
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
        self._dst = list(dst)
        self._dst_key = dst_key
        self._src_key = src_key
        have = Counter(map(dst_key, self._dst))
        self.missing: list[S] = []
        self._present: list[S] = []
        for item in src:
            key = src_key(item)
            if have[key] > 0:
                have[key] -= 1
                self._present.append(item)
            else:
                self.missing.append(item)

    @functools.cached_property
    def _pairing(self) -> tuple[list[tuple[S, D]], list[D]]:
        waiting: dict[str, list[D]] = {}
        for copy in self._dst:
            waiting.setdefault(self._dst_key(copy), []).append(copy)
        taken: Counter[str] = Counter()
        matched = []
        for item in self._present:
            key = self._src_key(item)
            matched.append((item, waiting[key][taken[key]]))
            taken[key] += 1
        # The copies after the matched ones, in the destination's own order.
        seen: Counter[str] = Counter()
        extra = []
        for copy in self._dst:
            key = self._dst_key(copy)
            seen[key] += 1
            if seen[key] > taken[key]:
                extra.append(copy)
        return matched, extra

    @property
    def matched(self) -> list[tuple[S, D]]:
        """Pairs known beforehand (the ledger's), then pairs by identity."""
        return self._paired + self._pairing[0]

    @property
    def extra(self) -> list[D]:
        return self._pairing[1]


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


def across_folders(ref: MessageRef) -> str:
    """What recognises a message in another folder of the same account: Gmail's message id
    (X-GM-MSGID, exact even without a Message-Id) where the server gives one, else its
    identity."""
    return f"gm:{ref.gm_msgid}" if ref.gm_msgid else ref.identity


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
    (`stream_unit_bytes` fits the last to the pool)."""

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
    same: dict[str | int, list[MessageRef]] = {}
    for ref in refs:
        same.setdefault(ref.identity or ref.uid, []).append(ref)
    for ref in refs:
        group = same.pop(ref.identity or ref.uid, None)
        if group is None:
            continue
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
