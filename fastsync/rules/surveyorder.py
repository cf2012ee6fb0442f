"""In which order, and in which groups, a run that copies while it plans surveys its folders.

Rules layer: pure logic on what LIST-STATUS told (RFC 5819; MESSAGES, and SIZE where the
server offers it, RFC 8438).  When the pool copies while the parent still plans
(`syncpass.py`), each group of folder pairs is surveyed in one pipelined pass and its
units go to the workers as soon as it is planned; a group costs the planner about one
round trip more than surveying everything at once, off the copy's path.  Two wants:

* the first units start soon: the first group is the single cheapest pair that has
  something to copy (fewest messages to read on both sides);
* the largest messages start early, since a large message alone on its connection can
  set the run's wall time (a 5.8 MB message at 1 MB/s takes 5.8 s whatever the others
  do): after the first group, pairs whose missing messages are largest on average
  (source SIZE minus destination SIZE, over the missing count) come first.

Later groups grow (each at least twice the messages of the one before), so that a run
of many folders costs a few round trips more, not one per folder.  Pairs into one
destination folder stay in one group (the planner compares them together), and a Gmail
\\All source folder, diffed against every other folder, makes a single group of all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fastsync.records.model import FolderPair, FolderStatus
from fastsync.rules import folders as folder_rules

# Messages a pair counts for when STATUS did not tell (a folder not listed with it).
UNKNOWN_MESSAGES = 1_000_000

# Each group after the second holds at least this many times the messages of the one before.
GROWTH = 2


@dataclass(frozen=True)
class _Group:
    pairs: tuple[FolderPair, ...]
    # Messages the survey reads on both sides.
    cost: int
    # Messages missing on the destination, and their bytes (-1: SIZE not known), as the counts suggest.
    missing: int
    missing_bytes: int

    @property
    def mean_missing_bytes(self) -> float:
        return self.missing_bytes / self.missing if self.missing and self.missing_bytes > 0 else 0.0


def survey_groups(
    pairs: Sequence[FolderPair], src: Mapping[str, FolderStatus], dst: Mapping[str, FolderStatus]
) -> list[list[FolderPair]]:
    """The pairs in the groups to survey one after the other (see the module's text).
    Every pair appears once; within a group, pairs keep their order in *pairs*."""
    if not pairs:
        return []
    if any(p.src_role == folder_rules.ALL for p in pairs):
        return [list(pairs)]
    by_dst: dict[str, list[FolderPair]] = {}
    for pair in pairs:
        by_dst.setdefault(pair.dst, []).append(pair)
    groups = [_group(members, src, dst) for members in by_dst.values()]
    wanted = [g for g in groups if g.missing]
    first = min(wanted, key=lambda g: g.cost) if wanted else None
    rest = sorted((g for g in groups if g is not first),
                  key=lambda g: (not g.missing, -g.mean_missing_bytes, -g.missing_bytes))
    out: list[list[FolderPair]] = [list(first.pairs)] if first is not None else []
    previous = first.cost if first is not None else 0
    chunk: list[FolderPair] = []
    cost = 0
    for group in rest:
        chunk.extend(group.pairs)
        cost += group.cost
        if cost >= GROWTH * max(previous, 1):
            out.append(chunk)
            previous, chunk, cost = cost, [], 0
    if chunk:
        out.append(chunk)
    order = {pair: index for index, pair in enumerate(pairs)}
    return [sorted(chunk, key=order.__getitem__) for chunk in out]


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
