"""Which folders a run that copies while it plans surveys first, from what LIST-STATUS told.

Rules layer: pure logic on STATUS's MESSAGES, and SIZE where the server offers it
(RFC 5819, RFC 8438).  When the pool copies while the parent still plans
(`syncpass.CopyWhilePlanning`), the folder pairs are surveyed in two groups, each in one
pipelined pass, and a group's units go to the workers as soon as it is planned:

* the first group is the cheapest folders (fewest messages to read on both sides) that
  have mail to copy, as few as give every worker a unit (`UNIT_MAX_MESSAGES`,
  `UNIT_MAX_BYTES`, from the counts): the first units start soon.  A first group of two
  units per worker kept the small profile's full size (20,000 messages in two folders) in
  one group, but on `wan-tls` a 5.8 MB message of the second group then waited for a
  worker 2 s longer, and the run was 0.8 s slower than planning all first (bench/README);
* the second is every other pair: one more pipelined pass, whose units the pool sorts with
  the rest (streamed units first, the largest first, `unitqueue.Pending`), so that the
  largest messages, which alone on their connection may set the run's wall time, start
  as soon as they are known.

More groups were tried (growing, each at least twice the one before): on this 2-core
test machine the planner's thread competes for the CPU with the workers, and each group
waited for the one before; the large folders came last and the pool idled at the end.
Pairs into one destination folder stay in one group (the planner compares them
together), and a Gmail \\All source folder, diffed against every other folder, makes a
single group of all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fastsync.records.model import FolderPair, FolderStatus
from fastsync.rules import folders as folder_rules
from fastsync.rules import plan

# Messages a pair counts for when STATUS did not tell (a folder not listed with it).
UNKNOWN_MESSAGES = 1_000_000

@dataclass(frozen=True)
class _Group:
    pairs: tuple[FolderPair, ...]
    # Messages the survey reads on both sides.
    cost: int
    # Messages missing on the destination, and their bytes (-1: SIZE not known), as the counts suggest.
    missing: int
    missing_bytes: int

    @property
    def units(self) -> int:
        """The work units the missing messages make, as the counts suggest (`plan.shard`)."""
        by_bytes = -(-self.missing_bytes // plan.UNIT_MAX_BYTES) if self.missing_bytes > 0 else 0
        return max(-(-self.missing // plan.UNIT_MAX_MESSAGES), by_bytes)


def survey_groups(
    pairs: Sequence[FolderPair], src: Mapping[str, FolderStatus], dst: Mapping[str, FolderStatus], units: int = 1,
) -> list[list[FolderPair]]:
    """The pairs in the groups to survey one after the other (see the module's text), the
    first with at least *units* work units if it can.  Every pair appears once; within a
    group, pairs keep their order."""
    if not pairs:
        return []
    if any(p.src_role == folder_rules.ALL for p in pairs):
        return [list(pairs)]
    by_dst: dict[str, list[FolderPair]] = {}
    for pair in pairs:
        by_dst.setdefault(pair.dst, []).append(pair)
    groups = sorted((_group(members, src, dst) for members in by_dst.values()), key=lambda g: g.cost)
    first: list[_Group] = []
    for group in groups:
        if sum(g.units for g in first) >= units:
            break
        if group.missing:
            first.append(group)
    rest = [g for g in groups if g not in first]
    order = {pair: index for index, pair in enumerate(pairs)}
    chunks = [[p for g in chunk for p in g.pairs] for chunk in (first, rest) if chunk]
    return [sorted(chunk, key=order.__getitem__) for chunk in chunks]


def _group(pairs: Sequence[FolderPair], src: Mapping[str, FolderStatus], dst: Mapping[str, FolderStatus]) -> _Group:
    """One destination folder's pairs with what their surveys cost and what they may copy."""
    there = dst.get(pairs[0].dst)
    dst_messages = there.messages if there is not None else 0
    cost, src_messages, src_bytes = dst_messages, 0, 0
    for pair in pairs:
        status = src.get(pair.src)
        if status is None:
            cost += UNKNOWN_MESSAGES
            src_messages += UNKNOWN_MESSAGES
            src_bytes = -1
            continue
        cost += status.messages
        src_messages += status.messages
        src_bytes = src_bytes + status.size_bytes if src_bytes >= 0 and status.size_bytes >= 0 else -1
    dst_bytes = there.size_bytes if there is not None else 0
    missing = max(0, src_messages - dst_messages)
    missing_bytes = max(0, src_bytes - dst_bytes) if src_bytes >= 0 and dst_bytes >= 0 else -1
    return _Group(tuple(pairs), cost, missing, missing_bytes)
