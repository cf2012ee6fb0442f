"""Does the destination hold what the source holds?  The comparison behind `fastsync check`.

Engine layer, reached through the entry (`run.py`, `Mode.CHECK`); changes nothing on either side.

For every folder pair sync would use (the same survey: `planner.list_both`, `pair_both`)
it reports the message counts, the messages missing on the destination and those extra on
it, matched by identity as the planner matches them (`plan.match_states`, a multiset: the
k-th source copy of an identity pairs with the k-th destination copy), and, for each matched
pair, flags (without \\Recent) and internal dates that differ.  With ``--bodies`` it also
compares the sha256 of each whole message, fetched in batches bounded by bytes and
dropped once hashed.

Only LIST, STATUS, EXAMINE (SELECT on the destination, whose PERMANENTFLAGS say which
flags it can keep; nothing is stored) and FETCH with BODY.PEEK are sent (RFC 3501 sections
6.3.2 and 6.4.5): nothing changes on either side, \\Seen included.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from fastsync.engine.ledger import Ledger
from fastsync.engine.planner import Planner, both, list_both, pair_both, readable_on_dst, selection_of, states_both
from fastsync.imap.session import Session
from fastsync.imap.wire import format_internaldate
from fastsync.records.errors import FolderError
from fastsync.records.events import event
from fastsync.records.model import FolderPair, MessageState, Selection
from fastsync.records.results import DIFFERENCE_KINDS, CheckSummary, Difference, FolderCheck, Reporter
from fastsync.rules import folders as folder_rules
from fastsync.rules import plan
from fastsync.settings.config import Config
from fastsync.settings.options import Options


def compare(
    matching: plan.Matching[MessageState, MessageState],
    src_digests: dict[int, str] | None = None,
    dst_digests: dict[int, str] | None = None,
    permanent: Sequence[str] | None = None,
    refused: Collection[str] = (),
) -> list[Difference]:
    """The differences between two folders' messages (pure: testable with plain values).

    Flags are compared among those the destination folder can keep (*permanent*, its
    PERMANENTFLAGS, less the keywords it *refused* on APPEND: `plan.keepable_flags`).  Internal dates are compared as instants: the same moment written with
    another UTC offset is equal (RFC 3501 section 2.3.3 leaves the offset to the server).
    """
    out = [Difference("missing", m.identity, m.uid, None) for m in matching.missing]
    out += [Difference("extra", m.identity, None, m.uid) for m in matching.extra]
    for s, d in matching.matched:
        if plan.flags_differ(s, d, permanent, refused):
            src_flags, dst_flags = plan.flags_text(s.flags), plan.flags_text(d.flags)
            out.append(Difference("flags", s.identity, s.uid, d.uid, src_flags, dst_flags))
        if s.internaldate != d.internaldate:
            out.append(Difference("date", s.identity, s.uid, d.uid, _date_text(s), _date_text(d)))
        if src_digests is not None and dst_digests is not None:
            s_digest, d_digest = src_digests.get(s.uid, ""), dst_digests.get(d.uid, "")
            if s_digest != d_digest:
                out.append(Difference("body", s.identity, s.uid, d.uid, s_digest, d_digest))
    return out


def _date_text(state: MessageState) -> str:
    return format_internaldate(state.internaldate).decode() if state.internaldate else ""


def check_pairs(
    planner: Planner, config: Config, options: Options, ledger: Ledger, reporter: Reporter
) -> CheckSummary:
    """Compare every mapped folder pair on *planner*'s connections; never writes to either side."""
    summary = CheckSummary(bodies=options.bodies)
    reporter.status("listing folders")
    src_side, dst_side = list_both(planner)
    pairs, _left_out = pair_both(config, options, src_side, dst_side)
    existing = {f.name for f in dst_side.folders if f.selectable}
    # --max-age/--min-age/--max-size/--min-size narrow both sides alike: a window is
    # compared with the same window (the destination's APPENDLIMIT plays no part).
    checker = PairChecker(existing, options.bodies, ledger, selection_of(options))
    for index, pair in enumerate(pairs, 1):
        reporter.status(f"checking {index}/{len(pairs)} {pair.src}")
        found = planner.call("checking", functools.partial(checker.check, pair=pair))
        summary.folders.append(found)
        _log(found)
    return summary


def _log(found: FolderCheck) -> None:
    pair = found.pair
    event(
        "folder checked", side="src", folder=pair.src, dst_folder=pair.dst,
        src_messages=found.src_messages, dst_messages=found.dst_messages, error=found.error,
        **{kind: found.count(kind) for kind in DIFFERENCE_KINDS},
    )
    for d in found.differences:
        side, folder, uid = ("dst", pair.dst, d.dst_uid) if d.src_uid is None else ("src", pair.src, d.src_uid)
        event(
            "message differs", side=side, folder=folder, uid=uid, kind=d.kind, identity=d.identity,
            dst_folder=pair.dst, dst_uid=d.dst_uid, src_value=d.src, dst_value=d.dst,
        )


@dataclass
class PairChecker:
    """Compares folder pairs one at a time, on the planner's two sessions.  *seen*
    collects the messages of the source folders checked so far (`plan.across_folders`); a source \\All folder,
    checked last, is compared on the messages in none of them, the only ones sync copies
    from it."""

    existing: Collection[str]
    bodies: bool
    ledger: Ledger
    selection: Selection
    seen: set[str] = field(default_factory=set)

    def check(self, src: Session, dst: Session, pair: FolderPair) -> FolderCheck:
        """Compare one pair."""
        found = FolderCheck(pair)
        try:
            states = states_both(src, dst, pair, readable_on_dst(pair, self.existing), self.selection)
        except FolderError as exc:
            found.error = exc.message
            return found
        # The planner's rule (`diff_pair`): a message of \All is elsewhere when the same
        # message, not merely one with its Message-Id, is in another folder.
        if pair.src_role == folder_rules.ALL:
            states.src = [m for m in states.src if plan.across_folders(m) not in self.seen]
        else:
            self.seen.update(plan.across_folders(m) for m in states.src)
        src_states, dst_states, permanent = states.src, states.dst, states.permanent
        matching = states.matching(pair, self.ledger)
        found.src_messages, found.dst_messages = len(src_states), len(dst_states)
        refused = self.ledger.refused_keywords(pair.dst)
        found.unkept_flags = tuple(plan.unkept_flags(src_states, permanent, refused))
        src_digests = dst_digests = None
        if self.bodies and states.src_folder is not None and states.dst_folder is not None:
            matched = matching.matched
            # Hash only the matched messages, in the folders just read.
            src_digests, dst_digests = both(
                functools.partial(states.src_folder.body_digests, [(s.uid, s.size_bytes) for s, _d in matched]),
                functools.partial(states.dst_folder.body_digests, [(d.uid, d.size_bytes) for _s, d in matched]),
            )
        found.differences = compare(matching, src_digests, dst_digests, permanent, refused)
        return found
