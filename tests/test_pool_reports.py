"""The parent's half of the pool hears every worker report, also after the last unit (pure:
real pipes, no worker process, no server)."""

from __future__ import annotations

import io

from fastsync.config import parse_config
from fastsync.limits import Limits
from fastsync.model import FolderPair, UnitDone, WorkerExit, WorkerSettings, WorkUnit
from fastsync.pool import Coordinator, context
from fastsync.progress import Reporter
from fastsync.results import Summary

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
    coordinator = Coordinator(config, Limits.create(ctx, 0, 0, 0), WorkerSettings(), [unit], 1, reporter, summary)
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
