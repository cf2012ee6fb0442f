"""The parent's half of the pool hears every worker report, also after the last unit (pure:
real pipes, no worker process, no server)."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from types import SimpleNamespace

import psutil
import pytest

from fastsync.settings.config import parse_config
from fastsync.rules.limits import Limits
from fastsync.records.model import FolderPair, UnitDone, WorkerExit, WorkerSettings, WorkUnit
from fastsync.engine.pool import Coordinator, PoolSetup, _parent_watch
from fastsync.engine.processes import context
from fastsync.progress import Reporter
from fastsync.records.results import Summary

CONFIG = {
    "src": {"server": "127.0.0.1:1", "user": "a", "pass": "pa", "tls": "none"},
    "dst": {"server": "127.0.0.1:2", "user": "b", "pass": "pb", "tls": "none"},
}


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
    coordinator.taken[0] = 0
    full = "destination (h:2): 'INBOX': APPEND refused: NO [OVERQUOTA] Quota exceeded; free space on the destination"
    worker_end.send(UnitDone(0, 0, "INBOX", 1, 10, error="1 messages of folder 'INBOX' not copied"))
    worker_end.send(WorkerExit(0, full, 1, "full"))
    worker_end.close()
    coordinator.drain({"INBOX": (2, 20)}, timeout_s=2.0)
    assert summary.copied == 1
    assert full in summary.errors
    assert coordinator.stop.is_set()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the boot time psutil reads is Linux's /proc/stat")
def test_a_step_of_the_system_clock_is_not_a_dead_parent(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker's test of its run's process holds when the clock steps (the boot time psutil
    adds to a start time moves with it), and still sees the process end."""
    import psutil._pslinux

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        gone = _parent_watch(SimpleNamespace(pid=child.pid))
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
        gone = _parent_watch(SimpleNamespace(pid=child.pid))
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
