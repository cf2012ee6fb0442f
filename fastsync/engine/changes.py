"""What tells `sync --watch` that the source changed, and what it has done since it started.

Engine layer.  After the first sync, `ChangeFeed` hears of changes on the source:

    NOTIFY offered (RFC 5465)   one listener for the whole account; no polling
    otherwise                   one IDLE listener (RFC 2177) per watched folder (INBOX and
                                the \\Sent folder), and a poll every --poll seconds, which
                                covers every folder (one LIST-STATUS per side in the pass)

Each listener runs in a thread of its own, on a connection of its own (it holds a source
connection slot, so --max-connections counts it), and reconnects with the retry rule's
backoff when its connection breaks; while a listener is down the poll covers for it.
Listeners only say that a folder changed.  The watch (`watch.py`) then runs one pass: the
ordinary survey, whose state cache skips every folder pair whose STATUS (UIDNEXT,
MESSAGES, HIGHESTMODSEQ) did not move, copies through the pool, sets flags, and deletes
with --delete-dest.  So a pass costs what changed, and a restarted watch resumes from the
cache without diffing what nothing touched.

`Totals` keeps the figures of the status line and the final summary; `Interrupts` keeps
a Ctrl-C or SIGTERM that the garbage collector would otherwise drop.
"""

from __future__ import annotations

import logging
import queue
import random
import signal
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import TypeVar

from fastsync.engine import interrupts
from fastsync.settings.config import Account
from fastsync.records.errors import FastsyncError
from fastsync.records.events import event
from fastsync.imap.idle import Listener
from fastsync.rules.limits import Limits
from fastsync.records.model import WorkerSettings
from fastsync.records.results import FolderRow, Reporter, Summary
from fastsync.rules.retry import backoff_s

T = TypeVar("T")

# IDLE is ended and issued again this often: RFC 2177 section 3 lets a server drop an
# IDLE client after 30 minutes of silence, and several do just before (29 minutes).
RENEW_S = 24 * 60

# A listener's wait is cut into steps this long, so that it notices the end of the watch.
STEP_S = 1.0


class Interrupts(interrupts.Wrapped):
    """Ctrl-C and SIGTERM while the watch runs, remembered.

    A signal's handler raises its exception (KeyboardInterrupt, `Terminated`) wherever the
    main thread is.  If that is a weakref callback that the garbage collector runs (a
    multiprocessing finalizer of a pass's workers), Python prints the exception and drops
    it, and the watch would wait on for good.  The handlers in place are wrapped so that a
    signal is also remembered, and `check`, called between waits, raises it again.
    """

    signals = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        super().__init__()
        self.received: list[signal.Signals] = []

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        number = signal.Signals(signum)
        self.received.append(number)
        self.previous[number](signum, frame)

    def check(self) -> None:
        """Raise what the first signal received raises (it may have been dropped)."""
        if self.received:
            signum = self.received[0]
            self.previous[signum](signum, None)


@dataclass(frozen=True)
class Change:
    """A folder said to have changed (by IDLE or NOTIFY), or the poll being due (folder '')."""

    folder: str
    how: str
    at_s: float


@dataclass(frozen=True)
class Watched:
    """What a `ChangeFeed` listens to: *folders* (IDLE on each), or with *notify* the whole
    account (RFC 5465 NOTIFY); the poll's interval; how often IDLE is renewed."""

    folders: Sequence[str]
    poll_s: float
    notify: bool
    renew_s: float = RENEW_S


class ChangeFeed:
    """The listeners and the poll clock; `wait` hands the main thread what they heard."""

    def __init__(
        self, account: Account, limits: Limits, settings: WorkerSettings, reporter: Reporter, watched: Watched
    ) -> None:
        self.account, self.limits, self.settings, self.reporter = account, limits, settings, reporter
        # With NOTIFY one listener watches everything ("" stands for the whole account).
        self.folders = [""] if watched.notify else list(watched.folders)
        self.notify = watched.notify
        self.poll_s, self.renew_s = watched.poll_s, watched.renew_s
        self.changes: queue.Queue[Change] = queue.Queue()
        self.stopping = threading.Event()
        self.down: set[str] = set()
        self.threads: list[threading.Thread] = []
        self.next_poll_s = time.monotonic() + watched.poll_s
        self.lock = threading.Lock()

    @property
    def polling(self) -> bool:
        """Without NOTIFY the poll always runs; with it, only while its listener is down."""
        with self.lock:
            return not self.notify or bool(self.down)

    def start(self) -> None:
        for folder in self.folders:
            thread = threading.Thread(target=self._listen, args=(folder,), name=f"watch {folder or 'account'}",
                                      daemon=True)
            thread.start()
            self.threads.append(thread)

    def close(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=STEP_S * 3)

    def wait(self, timeout_s: float) -> list[Change]:
        """What changed, waiting at most *timeout_s* (and never past the next poll): the
        changes heard, a poll change when the poll is due, or [] when neither."""
        now = time.monotonic()
        polling = self.polling
        limit = min(timeout_s, max(0.0, self.next_poll_s - now)) if polling else timeout_s
        found: list[Change] = []
        try:
            found.append(self.changes.get(timeout=limit))
        except queue.Empty:
            pass
        while True:
            try:
                found.append(self.changes.get_nowait())
            except queue.Empty:
                break
        now = time.monotonic()
        if polling and now >= self.next_poll_s:
            found.append(Change("", "poll", now))
        if polling and (now >= self.next_poll_s or found):
            # A pass reads every folder's status: the next poll is due a full interval later.
            self.next_poll_s = now + self.poll_s
        return found

    def _listen(self, folder: str) -> None:
        """One listener's life: connect, watch, report, renew; reconnect after a break."""
        rng = random.Random()
        attempt = 0
        name = folder or "every folder (NOTIFY)"
        while not self.stopping.is_set():
            listener: Listener | None = None
            try:
                listener = Listener.open(self.account, self.limits.src_slots, self.limits.down)
                if self.notify:
                    listener.watch_account()
                else:
                    listener.watch_folder(folder)
                if attempt:
                    self.reporter.info(f"watching {name} again")
                # What changed before it listened (since the sync read the statuses, or
                # while its connection was down) is found by one pass now.
                self.changes.put(Change(folder, "reconnect" if attempt else "listening", time.monotonic()))
                attempt = 0
                with self.lock:
                    self.down.discard(folder)
                event("watch listening", side="src", folder=folder, how="notify" if self.notify else "idle")
                self._follow(listener)
            except FastsyncError as exc:
                # The listener's side, also for an error that has none (stopped waiting for a slot).
                side = exc.side or self.account.side
                with self.lock:
                    self.down.add(folder)
                if not exc.retryable:
                    self.reporter.warn(f"{exc.message}; {name} is no longer watched, only polled")
                    event("watch stopped", side=side, folder=folder, level=logging.WARNING, reason=exc.message)
                    return
                attempt += 1
                wait_s = backoff_s(attempt, self.settings, rng)
                self.reporter.warn(f"{exc.message}; watching {name}: reconnecting in {wait_s:.1f} s")
                event("watch connection lost", side=side, folder=folder, level=logging.WARNING, reason=exc.message,
                      wait_s=round(wait_s, 1))
                self.stopping.wait(wait_s)
            finally:
                if listener is not None:
                    listener.close()

    def _follow(self, listener: Listener) -> None:
        renew_at = time.monotonic() + self.renew_s
        while not self.stopping.is_set():
            now = time.monotonic()
            if now >= renew_at:
                heard = listener.renew()
                renew_at = now + self.renew_s
                event("watch renewed", side="src", folder=listener.folder)
            else:
                heard = listener.wait(min(STEP_S, renew_at - now))
            for folder in dict.fromkeys(heard):
                self.changes.put(Change(folder, "notify" if self.notify else "idle", time.monotonic()))


@dataclass
class Totals:
    """What the watch did since it started, for the status line and the summary."""

    started_s: float = field(default_factory=time.monotonic)
    passes: int = 0
    copied: int = 0
    flags_updated: int = 0
    deleted: int = 0
    last_change_s: float | None = None
    last_lag_s: float | None = None

    def count(self, copied: int, flags_updated: int, deleted: int, noticed_s: float, done_s: float) -> None:
        self.passes += 1
        if copied or flags_updated or deleted:
            self.copied += copied
            self.flags_updated += flags_updated
            self.deleted += deleted
            self.last_change_s = done_s
            self.last_lag_s = done_s - noticed_s

    def line(self, now_s: float) -> str:
        since = "no change yet" if self.last_change_s is None else f"last change {now_s - self.last_change_s:.0f} s ago"
        lag = "" if self.last_lag_s is None else f", lag {self.last_lag_s:.1f} s"
        return (f"watching: {since}{lag}; since start {self.copied} copied, {self.flags_updated} flags updated"
                + (f", {self.deleted} deleted" if self.deleted else ""))


class PassReporter:
    """The reporter of a watch pass: no plan table and no progress bar (the status line
    speaks for the watch), each warning said once however many passes repeat it."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.quiet, self.verbose = reporter.quiet, reporter.verbose
        self.said: set[str] = set()

    def info(self, text: str) -> None:
        self.reporter.detail(text)

    def detail(self, text: str) -> None:
        self.reporter.detail(text)

    def warn(self, text: str) -> None:
        if text not in self.said:
            self.said.add(text)
            self.reporter.warn(text)

    def status(self, text: str) -> None:
        pass

    def clear_status(self) -> None:
        pass

    def plan(self, rows: list[FolderRow]) -> None:
        pass

    def confirm(self, question: str) -> bool:
        return True

    def start_copy(self, messages: int, size_bytes: int) -> None:
        pass

    def more_to_copy(self, messages: int, size_bytes: int) -> None:
        pass

    def advance(self, folder: str, messages: int, size_bytes: int, folder_total: tuple[int, int] = (0, 0)) -> None:
        pass

    def stop_copy(self) -> None:
        pass

    def batch_progress(self, line: str, force: bool = False) -> None:
        pass


def add_pass(total: Summary, done: Summary) -> None:
    """Count a watch pass into the run's summary."""
    total.planned += done.planned
    total.planned_bytes += done.planned_bytes
    total.copied += done.copied
    total.copied_bytes += done.copied_bytes
    total.vanished += done.vanished
    total.flags_planned += done.flags_planned
    total.flags_updated += done.flags_updated
    total.deleted += done.deleted
    total.delete_planned += done.delete_planned
    # A pair left incomplete is diffed again by every pass, which finds the same messages
    # refused or skipped and the same folders refused: each is counted once.
    _extend_new(total.failed, done.failed, lambda f: (f.folder, f.uid))
    _extend_new(total.errors, done.errors, lambda e: e)
    _extend_new(total.folders_refused, done.folders_refused, lambda r: r.folder)
    _extend_new(total.skipped, done.skipped, lambda k: (k.folder, k.uid))
    total.copy_s += done.copy_s
    for folder, count in done.copied_by_folder.items():
        total.copied_by_folder[folder] = total.copied_by_folder.get(folder, 0) + count


def _extend_new(into: list[T], items: Sequence[T], key: Callable[[T], Hashable]) -> None:
    known = {key(item) for item in into}
    into.extend(item for item in items if key(item) not in known)
