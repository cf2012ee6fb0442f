"""The parent's half of the pool hears every worker report, also after the last unit (pure:
real pipes, no worker process, no server)."""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import psutil
import pytest

from fastsync.cli import sigterm_stops
from fastsync.settings.config import Config, parse_config
from fastsync.rules.limits import Limits
from fastsync.records.errors import (
    AuthError, Cancelled, ConnectionLost, DestinationFull, FastsyncError, MalformedResponse, Terminated, Throttled,
    TLSError,
)
from fastsync.records.model import FolderPair, UnitDone, WorkerExit, WorkerSettings, WorkUnit
from fastsync.engine.pool import Coordinator
from fastsync.engine.worker import PoolSetup
from fastsync.engine.processes import parent_watch
from fastsync.engine.processes import context
from fastsync.progress import Reporter
from fastsync.records.results import Summary

CONFIG = {
    "src": {"server": "127.0.0.1:1", "user": "a", "pass": "pa", "tls": "none"},
    "dst": {"server": "127.0.0.1:2", "user": "b", "pass": "pb", "tls": "none"},
}


def setup_of(config: Config) -> PoolSetup:
    """A pool's setup for *config*'s two accounts, without caps."""
    return PoolSetup(config.src, config.dst, Limits.create(context(), 0, 0, 0), WorkerSettings())


def test_a_full_destination_said_after_the_last_unit_is_an_error() -> None:
    """A worker counts its unit, then says the destination is full: the parent may read the
    second report only while it drains, after the last unit ended its loop."""
    config = parse_config(CONFIG, "fastsync.json", environ={})
    unit = WorkUnit(0, FolderPair("INBOX", "INBOX"), 1, (1, 2), 20)
    summary = Summary()
    reporter = Reporter(out=io.StringIO(), err=io.StringIO(), interactive=False)
    ctx = context()
    setup = PoolSetup(config.src, config.dst, Limits.create(ctx, 0, 0, 0), WorkerSettings())
    coordinator = Coordinator(setup, [unit], 1, reporter, summary)
    parent_end, worker_end = ctx.Pipe()
    coordinator.channels[0] = parent_end
    coordinator.taken[0] = [0]
    full = "destination (h:2): 'INBOX': APPEND refused: NO [OVERQUOTA] Quota exceeded; free space on the destination"
    worker_end.send(UnitDone(0, 0, "INBOX", 1, 10, error="1 messages of folder 'INBOX' not copied"))
    worker_end.send(WorkerExit(0, DestinationFull(full, side="dst")))
    worker_end.close()
    coordinator.drain({"INBOX": (2, 20)}, timeout_s=2.0)
    assert summary.copied == 1
    assert full in summary.errors
    assert coordinator.stop.is_set()


class Events(logging.Handler):
    """The "fastsync" logger's events, as the log file would get them."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize(
    ("error", "goes_on", "stops", "workers", "said"),
    [
        # A refused login or an untrusted certificate will be refused again: the run stops.
        (AuthError("destination (h:2): login as 'b' refused", side="dst"), False, False, 3, "error"),
        (TLSError("source (h:1): certificate has expired", side="src"), False, False, 3, "error"),
        # Over quota: the run stops, and the other workers stop after the unit in hand.
        (DestinationFull("destination (h:2): 'INBOX': APPEND refused: NO [OVERQUOTA]", side="dst"),
         False, True, 3, "error"),
        # The server wants fewer connections: one worker fewer, the run goes on.
        (Throttled("source (h:1): server is throttling", 5.0, side="src"), True, False, 2,
         "warning: source (h:1): server is throttling; continuing with 2 workers"),
        # Retries used up: this worker ends, its unit goes to another.
        (ConnectionLost("source (h:1): connection closed by the server", side="src"), True, False, 3,
         "warning: worker 0 stopped: source (h:1): connection closed by the server"),
        (MalformedResponse("destination (h:2): malformed response", side="dst"), True, False, 3,
         "warning: worker 0 stopped: destination (h:2): malformed response"),
        (Cancelled("stopped while waiting for a connection slot"), True, False, 3,
         "warning: worker 0 stopped: stopped while waiting for a connection slot"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, FastsyncError) else None,
)
def test_the_parent_routes_a_last_word_on_its_type(
    error: FastsyncError, goes_on: bool, stops: bool, workers: int, said: str
) -> None:
    """What a worker's exception means for the run is read from its type, and the event
    names the exception's side, whatever its text says."""
    config = parse_config(CONFIG, "fastsync.json", environ={})
    unit = WorkUnit(0, FolderPair("INBOX", "INBOX"), 1, (1, 2), 20)
    summary = Summary()
    err = io.StringIO()
    reporter = Reporter(out=io.StringIO(), err=err, interactive=False)
    coordinator = Coordinator(setup_of(config), [unit], 3, reporter, summary)
    coordinator.taken[0] = [0]
    events = Events()
    logger = logging.getLogger("fastsync")
    logger.addHandler(events)
    level, logger.level = logger.level, logging.DEBUG
    try:
        assert coordinator.worker_stopped(WorkerExit(0, error)) is goes_on
    finally:
        logger.removeHandler(events)
        logger.setLevel(level)
    assert coordinator.stop.is_set() is stops
    assert coordinator.workers == workers
    if said == "error":
        assert summary.errors == [error.message] and err.getvalue() == ""
    else:
        assert summary.errors == [] and err.getvalue().strip() == said
    [record] = [r for r in events.records if r.getMessage() == "worker exit"]
    fields = record.__dict__
    assert (fields["side"], fields["folder"]) == (error.side, "INBOX")
    assert fields["fields"]["error"] == type(error).__name__
    assert fields["fields"]["exit_code"] == int(error.exit_code)


def test_a_defect_in_a_worker_is_a_warning_with_its_traceback() -> None:
    config = parse_config(CONFIG, "fastsync.json", environ={})
    summary = Summary()
    err = io.StringIO()
    reporter = Reporter(out=io.StringIO(), err=err, interactive=False)
    unit = WorkUnit(0, FolderPair("INBOX", "INBOX"), 1, (1, 2), 20)
    coordinator = Coordinator(setup_of(config), [unit], 2, reporter, summary)
    trace = "Traceback (most recent call last):\n  File \"x.py\", line 1, in f\nKeyError: 'uid'\n"
    assert coordinator.worker_stopped(WorkerExit(1, None, trace)) is True
    # Each line after the first indented: none passes for a line of its own.
    indented = trace.strip().replace("\n", "\n  ")
    assert err.getvalue() == f"warning: worker 1 stopped: {indented}\n"
    assert summary.errors == [] and not coordinator.stop.is_set() and coordinator.workers == 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the boot time psutil reads is Linux's /proc/stat")
def test_a_step_of_the_system_clock_is_not_a_dead_parent(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker's test of its run's process holds when the clock steps (the boot time psutil
    adds to a start time moves with it), and still sees the process end."""
    import psutil._pslinux

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        gone = parent_watch(SimpleNamespace(pid=child.pid))
        assert not gone()
        boot = psutil._pslinux.boot_time()
        monkeypatch.setattr(psutil._pslinux, "boot_time", lambda: boot + 7.0)
        assert not gone()
    finally:
        child.kill()
        child.wait()
    assert gone()


def test_a_parent_that_ended_is_gone_before_it_is_reaped() -> None:
    """A run's process killed with -9 is a zombie until its own parent (a shell, a batch)
    reaps it: its workers must stop all the same."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        gone = parent_watch(SimpleNamespace(pid=child.pid))
        assert not gone()
        child.kill()
        deadline = time.monotonic() + 10
        while not gone() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gone()
        # Not reaped yet: the process is still there, as a zombie.
        assert psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE
    finally:
        child.kill()
        child.wait()
    assert gone()


def test_units_go_out_largest_streamed_first_and_one_ahead_only_behind_small_ones() -> None:
    """A large message holds its worker longest: streamed units start first, the largest
    first, the small ones keep their planned order; a unit waits with a worker (to be
    fetched while the worker appends) only once every worker holds one, and never behind
    a streamed unit, where it would wait while other workers may be idle."""
    config = parse_config(CONFIG, "fastsync.json", environ={})
    mb = 1024 * 1024
    units = [
        WorkUnit(0, FolderPair("INBOX", "INBOX"), 1, (1,), 1 * mb),
        WorkUnit(1, FolderPair("INBOX", "INBOX"), 1, (2,), 6 * mb, streamed=True),
        WorkUnit(2, FolderPair("Sent", "Sent"), 1, (1,), 1 * mb),
        WorkUnit(3, FolderPair("Sent", "Sent"), 1, (2,), 9 * mb, streamed=True),
        WorkUnit(4, FolderPair("Sent", "Sent"), 1, (3,), 5 * mb),  # batched, yet above 4 MiB: streamed
        WorkUnit(5, FolderPair("Lists", "Lists"), 1, (1,), 1 * mb),
        WorkUnit(6, FolderPair("Lists", "Lists"), 1, (2,), 1 * mb),
    ]
    reporter = Reporter(out=io.StringIO(), err=io.StringIO(), interactive=False)
    ctx = context()
    coordinator = Coordinator(setup_of(config), units, 3, reporter, Summary())
    assert [u.unit_id for u in coordinator.pending] == [3, 1, 4, 0, 2, 5, 6]
    ends = {}
    for index in range(3):
        coordinator.channels[index], ends[index] = ctx.Pipe()
    for index in range(3):
        coordinator.dispatch(index)
    # One each, all streamed: none waits behind them.
    assert coordinator.taken == {0: [3], 1: [1], 2: [4]}
    # Worker 1 done: a small unit, and one more to fetch while it appends that one.
    coordinator.finished(UnitDone(1, 1, "INBOX", 1, 6 * mb), {})
    coordinator.dispatch(1)
    assert coordinator.taken == {0: [3], 1: [0, 2], 2: [4]}


@pytest.mark.parametrize("stage", ["copying", "draining"])
def test_sigterm_while_a_report_is_counted_stops_after_the_count(stage: str) -> None:
    """SIGTERM reaches the run's process just as it counts a worker's report (here while the
    ledger's hook hears of the first unit; `kill` to the whole group arrives as a unit
    lands): every report read is counted first, then the run stops."""
    config = parse_config(CONFIG, "fastsync.json", environ={})
    units = [WorkUnit(n, FolderPair("INBOX", "INBOX"), 1, (2 * n + 1, 2 * n + 2), 20) for n in range(2)]
    summary = Summary()
    reporter = Reporter(out=io.StringIO(), err=io.StringIO(), interactive=False)
    ctx = context()
    coordinator = Coordinator(setup_of(config), units, 1, reporter, summary)
    parent_end, worker_end = ctx.Pipe()
    coordinator.channels[0] = parent_end
    coordinator.processes[0] = SimpleNamespace(is_alive=lambda: True)  # the worker, still running
    coordinator.taken[0] = [0, 1]
    coordinator.pending.popleft(), coordinator.pending.popleft()
    heard = []

    def on_unit(unit: WorkUnit, done: UnitDone) -> None:
        heard.append(unit.unit_id)
        if len(heard) == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    coordinator.on_unit = on_unit
    for unit in units:
        worker_end.send(UnitDone(0, unit.unit_id, "INBOX", 2, 20))
    with sigterm_stops(), coordinator.signals, pytest.raises(Terminated):
        if stage == "copying":
            coordinator.run({"INBOX": (4, 40)})
        else:
            coordinator.drain({"INBOX": (4, 40)}, timeout_s=5.0)
    assert heard == [0, 1]
    assert (summary.copied, summary.copied_bytes) == (4, 40)
    assert not coordinator.units
    worker_end.close()
