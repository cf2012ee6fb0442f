"""A pool worker's process: what it starts with (`PoolSetup`) and its loop (`worker_main`).

Engine layer.  The parent's side of the pool, which starts these processes, hands them
units and hears their reports, is `pool.py`; this module is what runs in each worker:
it logs in on both sides, then copies the units its pipe brings (`transfer.Copier`)
and reports each (`UnitDone`), with its login's and first APPEND's times once, for the
log's timing of a run.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import multiprocessing
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from fastsync.engine.ledger import Ledger
from fastsync.engine.processes import ParentWatch, next_sent, parent_watch, thrifty_malloc
from fastsync.engine.lock import RunLock
from fastsync.engine.transfer import Copier
from fastsync.imap import transport
from fastsync.imap.pair import SessionPair
from fastsync.records.errors import ConnectError, FastsyncError, FolderError, Throttled
from fastsync.records.model import UnitDone, WorkerExit, WorkerSettings, WorkUnit
from fastsync.rules.limits import Limits
from fastsync.rules.retry import backoff_s
from fastsync.settings import tokens
from fastsync.settings.config import Account

# How often an idle worker wakes to check for cancellation and for a dead parent.
POLL_S = 0.2


@dataclass(frozen=True)
class PoolSetup:
    """What every worker of a run starts with: both accounts, the run's caps and meters,
    the retry rule, the destination's lock (held while any worker lives) and the ledger's
    file (each worker records its own copies).  Pickled once per worker as it starts,
    while multiprocessing may pickle the caps' semaphores (`Limits`) and the lock."""

    src: Account
    dst: Account
    limits: Limits
    settings: WorkerSettings
    lock: RunLock | None = None
    ledger_path: Path | None = None
    # The OAuth2 sides' access tokens and the parent's token broker (`tokens.token_handoff`):
    # workers log in with them and ask the parent for new ones, never the provider.
    tokens: tokens.TokenLink = dataclasses.field(default_factory=tokens.TokenLink)


def worker_main(index: int, setup: PoolSetup, channel: Connection, stop: Any) -> None:
    """Process entry point: copy the units the parent sends until it sends None, the run is
    cancelled or the parent is gone.

    The setup's lock is only held: the destination's run lock stays taken while this
    process lives.  The worker records its own copies in the ledger at the setup's
    ``ledger_path``, once per unit: a copy made after the parent died (``kill -9``) is
    known to the next run.
    """
    thrifty_malloc()
    # Ctrl-C reaches the whole process group; the parent decides, workers are told via `stop`.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # SIGTERM (systemd, kill, to the group or this worker) or SIGHUP (a closed terminal): as `stop`.
    leaving = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: leaving.set())
    signal.signal(signal.SIGHUP, signal.getsignal(signal.SIGTERM))
    # The fork server is this process's parent and outlives the run's process while a
    # worker lives, so os.getppid() cannot tell; nor can `parent_process().is_alive()`,
    # whose sentinel the fork server's children hold open themselves.  The run's process
    # is known by its PID and start time (a PID may be reused).
    parent_gone = ParentWatch(parent_watch(multiprocessing.parent_process()))
    threading.Thread(target=parent_gone.run, args=(leaving, stop), daemon=True, name="fastsync-parent-watch").start()
    # A worker waiting for a connection slot gives up when the run stops or its process is gone.
    setup.limits.adopt(index, give_up=lambda: stop.is_set() or leaving.is_set() or parent_gone())
    tokens.adopt_tokens(setup.tokens)
    sessions = SessionPair(setup.src, setup.dst, setup.limits)
    copier = Copier(index, sessions, setup.settings, channel.send, stop, Ledger(setup.ledger_path))
    timing = _Timing()
    try:
        # Logged in before the first unit comes (a `Standby` worker, while the run plans).
        try:
            copier.connect()
            timing.logged_in_epoch_s = time.time()
        except Throttled:
            raise  # the server wants fewer connections: this worker leaves (below)
        except ConnectError:
            pass  # a lost connection is met again, with retries, by the first unit
        # Units sent ahead (`UNITS_AHEAD`); None: stop after the unit in hand.
        units: collections.deque[WorkUnit | None] = collections.deque()
        copier.upcoming = lambda settling: next_sent(channel, units, settling)
        while not stop.is_set() and not leaving.is_set():
            # A fetch ahead reads the pipe while it waits for the next unit: done first.
            copier.ahead.settle()
            if not units:
                if not channel.poll(POLL_S):
                    if parent_gone():
                        break
                    continue
                units.append(channel.recv())
            unit = units.popleft()
            if unit is None:
                break
            try:
                done = copier.process(unit)
            except FolderError as exc:
                done = UnitDone(index, unit.unit_id, unit.pair.src, 0, 0, error=exc.message)
            logged_in_epoch_s, first_append_epoch_s = timing.said()
            channel.send(dataclasses.replace(done, wire=sessions.wire(), logged_in_epoch_s=logged_in_epoch_s,
                                             first_append_epoch_s=first_append_epoch_s))
            if copier.full is not None:
                raise copier.full
    except (EOFError, BrokenPipeError):
        pass  # the parent is gone
    except Throttled as exc:
        copier.close()
        # Wait as the server asked before giving the unit back, then leave: the parent
        # runs on with one connection per side fewer.
        stop.wait(exc.wait_s or backoff_s(1, setup.settings, copier.rng))
        _last_word(channel, WorkerExit(index, exc))
    except FastsyncError as exc:
        # The parent decides what the error means for the run (`Coordinator.worker_stopped`).
        _last_word(channel, WorkerExit(index, exc))
    except Exception:
        # A defect: its exception may not pickle, its traceback as text always does.
        _last_word(channel, WorkerExit(index, None, traceback.format_exc(limit=8)))
    finally:
        with contextlib.suppress(Exception):
            copier.close()
        channel.close()


class _Timing:
    """A worker's login and first APPEND times, each said once (`UnitDone.logged_in_epoch_s`)."""

    def __init__(self) -> None:
        self.logged_in_epoch_s = 0.0
        self.append_said = False

    def said(self) -> tuple[float, float]:
        """(login, first APPEND) not said yet, 0.0 for either said before or not known."""
        logged_in, self.logged_in_epoch_s = self.logged_in_epoch_s, 0.0
        first = 0.0 if self.append_said else transport.first_append_epoch_s()
        self.append_said = self.append_said or bool(first)
        return logged_in, first


def _last_word(channel: Connection, exit: WorkerExit) -> None:
    with contextlib.suppress(OSError):
        channel.send(exit)
