"""`fastsync check`: does the destination hold what the source holds?  Read-only on both sides.

For every folder pair sync would use (same `map`, ``-s/-d`` and special-use pairing) it
reports the message counts, the messages missing on the destination and those extra on
it, matched by identity as the planner matches them (plan.identity, multiset: the k-th
source copy of an identity pairs with the k-th destination copy), and, for each matched
pair, flags (without \\Recent) and internal dates that differ.  With ``--bodies`` it also
compares the sha256 of each whole message, fetched in batches bounded by bytes and
dropped once hashed.

Only LIST, STATUS, EXAMINE and FETCH with BODY.PEEK are sent (RFC 3501 sections 6.3.2
and 6.4.5): nothing changes on either side, \\Seen included.  This is what a migration
team runs before switching MX records: exit 0 when everything matches, 1 otherwise.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from fastsync import folders as folder_rules
from fastsync import plan, pool
from fastsync.config import Config
from fastsync.errors import FolderError
from fastsync.limits import Limits
from fastsync.model import FolderPair
from fastsync.progress import Reporter, event
from fastsync.session import MessageState, Session
from fastsync.sync import (
    Options,
    _both,
    _Planner,
    comparable_flags,
    match_by_identity,
    pair_folders,
    rules_from,
)
from fastsync.wire import format_internaldate

# The kinds of difference, in the order they are reported.
KINDS = ("missing", "extra", "flags", "date", "body")


@dataclass(frozen=True)
class Difference:
    """One message that differs.  ``src`` / ``dst`` hold the differing values as text
    (flags, internal date, sha256); a missing message has no ``dst_uid``, an extra one no
    ``src_uid``."""

    kind: str
    identity: str
    src_uid: int | None
    dst_uid: int | None
    src: str = ""
    dst: str = ""


@dataclass
class FolderCheck:
    """What check found for one folder pair."""

    pair: FolderPair
    src_messages: int = 0
    dst_messages: int = 0
    differences: list[Difference] = field(default_factory=list)
    error: str = ""

    def count(self, kind: str) -> int:
        return sum(1 for d in self.differences if d.kind == kind)

    @property
    def matches(self) -> bool:
        return not self.differences and not self.error


@dataclass
class CheckSummary:
    """Every figure of check's report (human and --json)."""

    folders: list[FolderCheck] = field(default_factory=list)
    bodies: bool = False
    elapsed_s: float = 0.0

    def total(self, kind: str) -> int:
        return sum(f.count(kind) for f in self.folders)

    @property
    def errors(self) -> list[str]:
        return [f.error for f in self.folders if f.error]

    @property
    def matches(self) -> bool:
        return all(f.matches for f in self.folders)


def compare(
    src: Sequence[MessageState],
    dst: Sequence[MessageState],
    src_digests: dict[int, str] | None = None,
    dst_digests: dict[int, str] | None = None,
) -> list[Difference]:
    """The differences between two folders' messages (pure: testable with plain values).

    Internal dates are compared as instants: the same moment written with another UTC
    offset is equal (RFC 3501 section 2.3.3 leaves the offset to the server).
    """
    matched, missing, extra = match_by_identity(src, dst)
    out = [Difference("missing", m.identity, m.uid, None) for m in missing]
    out += [Difference("extra", m.identity, None, m.uid) for m in extra]
    for s, d in matched:
        if comparable_flags(s.flags) != comparable_flags(d.flags):
            out.append(Difference("flags", s.identity, s.uid, d.uid, _flags_text(s.flags), _flags_text(d.flags)))
        if s.internaldate != d.internaldate:
            out.append(Difference("date", s.identity, s.uid, d.uid, _date_text(s), _date_text(d)))
        if src_digests is not None and dst_digests is not None:
            s_digest, d_digest = src_digests.get(s.uid, ""), dst_digests.get(d.uid, "")
            if s_digest != d_digest:
                out.append(Difference("body", s.identity, s.uid, d.uid, s_digest, d_digest))
    return out


def _flags_text(flags: Sequence[str]) -> str:
    return " ".join(sorted(f for f in flags if f.lower() != "\\recent"))


def _date_text(state: MessageState) -> str:
    return format_internaldate(state.internaldate).decode() if state.internaldate else ""


def run(config: Config, options: Options, reporter: Reporter, bodies: bool = False) -> CheckSummary:
    """Compare every mapped folder pair; never writes to either side."""
    started = time.monotonic()
    summary = CheckSummary(bodies=bodies)
    limits = Limits.create(pool.context(), options.down_bps, 0, 0)
    planner = _Planner(config, limits, options.settings, reporter)
    try:
        reporter.status("listing folders")
        (src_folders, _src_statuses), (dst_folders, _dst_statuses) = planner.call(
            "listing folders", lambda src, dst: _both(src.folders_and_statuses, dst.folders_and_statuses)
        )
        pairs = pair_folders(src_folders, dst_folders, rules_from(config, options))
        existing = {f.name for f in dst_folders if f.selectable}
        for index, pair in enumerate(pairs, 1):
            reporter.status(f"checking {index}/{len(pairs)} {pair.src}")
            found = planner.call(
                "checking", functools.partial(_check_pair, pair=pair, dst_exists=pair.dst in existing, bodies=bodies)
            )
            summary.folders.append(found)
            event(
                "folder checked", side="src", folder=pair.src, dst_folder=pair.dst,
                src_messages=found.src_messages, dst_messages=found.dst_messages, error=found.error,
                **{kind: found.count(kind) for kind in KINDS},
            )
            for d in found.differences:
                side, folder, uid = ("dst", pair.dst, d.dst_uid) if d.src_uid is None else ("src", pair.src, d.src_uid)
                event(
                    "message differs", side=side, folder=folder, uid=uid, kind=d.kind, identity=d.identity,
                    dst_folder=pair.dst, dst_uid=d.dst_uid, src_value=d.src, dst_value=d.dst,
                )
    finally:
        reporter.clear_status()
        planner.close()
    summary.elapsed_s = time.monotonic() - started
    return summary


def _check_pair(src: Session, dst: Session, pair: FolderPair, dst_exists: bool, bodies: bool) -> FolderCheck:
    found = FolderCheck(pair)

    def read(session: Session, folder: str, exists: bool) -> list[MessageState]:
        if not exists:
            return []
        status = session.examine(folder)
        return session.message_states(status.messages, plan.identity) if status.messages else []

    try:
        # INBOX exists on every account whatever LIST said (RFC 3501 section 5.1).
        src_states, dst_states = _both(
            functools.partial(read, src, pair.src, True),
            functools.partial(read, dst, pair.dst, dst_exists or folder_rules.is_inbox(pair.dst)),
        )
    except FolderError as exc:
        found.error = exc.message
        return found
    found.src_messages, found.dst_messages = len(src_states), len(dst_states)
    src_digests = dst_digests = None
    if bodies:
        matched, _missing, _extra = match_by_identity(src_states, dst_states)
        # Each side's folder is still the examined one: hash only the matched messages.
        src_digests, dst_digests = _both(
            functools.partial(src.body_digests, [(s.uid, s.size_bytes) for s, _d in matched]),
            functools.partial(dst.body_digests, [(d.uid, d.size_bytes) for _s, d in matched]),
        )
    found.differences = compare(src_states, dst_states, src_digests, dst_digests)
    return found
