"""What a sync does besides the copy: flags, deletions, and the pairs the state cache records.

Engine layer, called by a sync pass (`syncpass.py`) on the planner's connections.
``--sync-flags`` sets the source's flags on the destination's copies (`update_flags`),
``--delete-dest`` deletes the destination's messages the source does not have
(`delete_messages`, planned with the copy, applied after it), and `remember` records in
the state cache the pairs the run left complete, so that the next run skips them.
Nothing here writes to the source.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

from fastsync.engine.planner import FolderPlan, Planner, Statuses
from fastsync.engine.state import StateCache
from fastsync.imap.session import Session
from fastsync.records.errors import FolderError
from fastsync.records.events import event
from fastsync.records.model import FolderStatus
from fastsync.records.results import Reporter, Summary

# Destination folder -> {source flag set: destination UIDs} (`planner.flags_to_update`).
FlagChanges = dict[str, dict[tuple[str, ...], list[int]]]


def remember(
    cache: StateCache,
    planner: Planner,
    plans: Sequence[FolderPlan],
    before: tuple[Statuses, Statuses],
    summary: Summary,
    read_after: bool = True,
) -> None:
    """Record the pairs this run left complete, so that the next run can skip them.

    The source's status is the one read before planning.  The destination's is read now,
    and kept only when it differs from before by exactly the copies this run made: a
    change by anyone else during the run must not be mistaken for ours.  Without
    *read_after*, the status from before stands in: only pairs nothing was copied into
    can then be recorded.
    """
    src_before, dst_before = before
    changed = read_after and (summary.copied or summary.flags_updated or summary.deleted)
    after = planner.call("reading folder status", lambda _src, dst: dst.statuses()) if changed else dst_before
    for p in plans:
        src, dst0, dst1 = src_before.get(p.pair.src), dst_before.get(p.pair.dst), after.get(p.pair.dst)
        copied = summary.copied_by_folder.get(p.pair.src, 0)
        deleted = summary.deleted_by_folder.get(p.pair.dst, 0)
        # A pair with messages left out by dates or sizes is not complete for a run without them.
        complete = p.pair.src not in summary.incomplete and copied == len(p.todo) and not (p.skipped or p.outside)
        if src is None or dst1 is None or not complete:
            cache.forget(p.pair)
            continue
        if dst0 is None:
            dst0 = FolderStatus(0, -1, dst1.uidvalidity, 1)
        consistent = (
            dst1.uidvalidity == dst0.uidvalidity
            and dst1.uidnext - dst0.uidnext == copied
            and dst1.messages - dst0.messages == copied - deleted
        )
        if consistent:
            cache.record(p.pair, src, dst1)
        else:
            cache.forget(p.pair)
    try:
        cache.save()
    except OSError as exc:
        summary.errors.append(
            f"cannot write the state cache {cache.path}: {exc.strerror}; the next run will diff everything"
        )


def update_flags(
    planner: Planner, changes: FlagChanges, reporter: Reporter, summary: Summary, plans: Sequence[FolderPlan]
) -> None:
    """STORE the source's flags on the destination copies (never on the source).

    A folder whose STORE is refused leaves its pairs incomplete, so that the state cache
    does not record them as in step and the next --sync-flags run compares them again.

    A folder is selected read-write only for its STOREs, and left without expunging the
    destination's \\Deleted messages (`Session.select`).
    """

    def store(_src: Session, dst: Session, folder: str, folder_changes: dict[tuple[str, ...], list[int]]) -> None:
        with dst.select(folder) as box:
            box.store_flags(folder_changes)

    for folder, folder_changes in changes.items():
        count = sum(len(uids) for uids in folder_changes.values())
        try:
            # STORE FLAGS sets the whole set: repeating it after a lost connection is harmless.
            planner.call("updating flags", functools.partial(store, folder=folder, folder_changes=folder_changes))
        except FolderError as exc:
            summary.errors.append(exc.message)
            summary.incomplete.update(p.pair.src for p in plans if p.pair.dst == folder)
            event("flags not updated", side="dst", folder=folder, level=logging.ERROR, reason=exc.message)
            continue
        summary.flags_updated += count
        for flags, uids in folder_changes.items():
            event("flags updated", side="dst", folder=folder, uids=uids, flags=list(flags))
        reporter.detail(f"flags updated on {count} messages of {folder!r}")


def delete_messages(_src: Session, dst: Session, folder: str, uids: list[int], uidvalidity: int) -> str:
    """Delete *uids* from a destination folder, selected read-write only for that and left
    without expunging anything else (`Session.select`); the expunge used, for the log.  A
    repeat after a lost connection is harmless: the UIDs gone are simply not found again."""
    with dst.select(folder) as box:
        return box.delete_messages(uids, uidvalidity)
