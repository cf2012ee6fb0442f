"""`sync --watch`: after the first sync, one pass whenever the source changes, until stopped.

Engine layer, beside the entry (`run.py`), which calls `watch` once the first sync pass
is done.  The change feed (`changes.py`) says how changes are heard: NOTIFY (RFC 5465)
for the whole account where the source offers it, else IDLE (RFC 2177) on INBOX and
the \\Sent folder and a poll of every folder.  Each pass is an ordinary `SyncPass`
(with `-y`, quietly, planned incrementally), so it costs what changed.  Ctrl-C or
SIGTERM end the watch with the summary of everything done.
"""

from __future__ import annotations

import dataclasses
import time

from fastsync.engine import changes
from fastsync.engine.syncpass import SyncPass
from fastsync.imap.idle import heard_by
from fastsync.records.errors import Cancelled, describe, exit_code_of
from fastsync.records.events import event
from fastsync.records.results import Summary
from fastsync.settings.options import Options


def watch(first: SyncPass) -> None:
    """After *first* (the run's first pass), one pass (a sync of what changed) whenever the
    change feed hears of a change, until Ctrl-C or SIGTERM, which end it with the summary
    of everything done (changes.py says how changes are heard)."""
    config, reporter, summary = first.config, first.reporter, first.summary
    options = dataclasses.replace(first.options, confirm=True)
    folders, notify = _listened(first)
    workers = first.workers
    if options.max_connections:
        # The listeners hold source connections too: planner + listeners + workers fit the cap.
        spare = options.max_connections - 1
        workers = max(1, min(workers, spare - len(folders)))
        room = max(0, spare - workers)
        if room < len(folders):
            polled, folders = folders[room:], folders[:room]
            reporter.warn(
                f"--max-connections {options.max_connections} leaves no connection to watch "
                f"{', '.join(f or 'the account' for f in polled)}: polled every {options.poll_s} s instead"
            )
            notify = notify and bool(folders)
    watched = changes.Watched(folders, options.poll_s, notify)
    feed = changes.ChangeFeed(config.src, first.limits, options.settings, reporter, watched)
    totals = changes.Totals()
    reporter.info(f"First sync: {summary.copied} copied, {summary.present} already present, "
                  f"{len(summary.failed)} failed.")
    how = heard_by(notify, folders)
    reporter.info(f"Watching {config.src.where} for changes: {how}"
                  + ("" if notify else f", every folder polled every {options.poll_s} s") + "; Ctrl-C stops.")
    event("watch started", side="src", how="notify" if notify else "idle", folders=folders, poll_s=options.poll_s)
    feed.start()
    interrupts = changes.Interrupts()
    try:
        with interrupts:
            _follow(first, options, feed, totals, workers, interrupts)
    except (Cancelled, KeyboardInterrupt) as exc:
        summary.cancelled, summary.cancel_code = describe(exc), int(exit_code_of(exc))
    finally:
        feed.close()
        reporter.clear_status()
        reporter.info(f"Watched for {time.monotonic() - totals.started_s:.0f} s: {totals.copied} messages copied, "
                      f"{totals.flags_updated} flags updated, {totals.deleted} deleted after the first sync.")


def _follow(
    first: SyncPass, options: Options, feed: changes.ChangeFeed, totals: changes.Totals, workers: int,
    interrupts: changes.Interrupts,
) -> None:
    """The watch's passes, one per change heard, until a signal or a cancelled pass."""
    reporter, summary = first.reporter, first.summary
    quiet = changes.PassReporter(reporter)
    while True:
        # A Ctrl-C or SIGTERM that a finalizer dropped is raised here (`changes.Interrupts`).
        interrupts.check()
        reporter.status(totals.line(time.monotonic()))
        heard = feed.wait(changes.STEP_S)
        if not heard:
            continue
        for change in heard:
            event("watch change", side="src", folder=change.folder, how=change.how)
        noticed = min(c.at_s for c in heard)
        done = Summary()
        step = SyncPass(first.context, options, workers, quiet, done, incremental=True)
        step.go(True)
        changes.add_pass(summary, done)
        now = time.monotonic()
        totals.count(done.copied, done.flags_updated, done.deleted, noticed, now)
        event("watch pass", copied=done.copied, flags_updated=done.flags_updated, deleted=done.deleted,
              failed=len(done.failed), lag_s=round(now - noticed, 3))
        if done.cancelled:
            summary.cancelled, summary.cancel_code = done.cancelled, done.cancel_code
            return


def _listened(first: SyncPass) -> tuple[list[str], bool]:
    """What the listeners watch, from the folders the first sync listed: [""] (the whole
    account) where the source offers NOTIFY (RFC 5465), else INBOX and the \\Sent folder
    among those synced (IDLE on each); and whether it is NOTIFY."""
    if first.planner.call("reading capabilities", lambda src, _dst: src.capabilities.notify):
        return [""], True
    roles = {f.name: f.special_use for f in first.src_folders}
    synced = [p.src for p in first.pairs]
    folders = [name for name in synced if name.upper() == "INBOX"]
    return folders + [name for name in synced if roles.get(name) == "\\Sent"][:1], False


