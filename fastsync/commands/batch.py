"""`fastsync batch`: many account pairs, several at once, under per-server connection caps.

Command layer: `run(batch, options, reporter) -> BatchSummary`.  The batch package does
the work: `batch/scheduler.py` starts the pairs within the caps and keeps the journal,
and each pair runs in a process of its own that calls the engine's entry as
``fastsync sync -y`` would.  This module says what the files allow but is unsafe
(`warnings_for`); `cli.py` renders the result.
"""

from __future__ import annotations

import os
import stat
import subprocess

from fastsync.batch.inputs import Batch
from fastsync.batch.scheduler import run_batch
from fastsync.records.results import BatchSummary, Reporter
from fastsync.settings.options import Options


def warnings_for(batch: Batch) -> list[str]:
    """What the files allow but is unsafe: plain-text sides, a readable file of passwords."""
    found = [
        f"{a.where}: {a.side}.tls is none: passwords and every message cross the network "
        "unencrypted; use starttls or implicit"
        for a in (batch.template.src, batch.template.dst) if a.tls == "none"
    ]
    if _readable_by_others(batch.pairs_path) and batch.pairs_hold_passwords:
        found.append(f"{batch.pairs_path} holds passwords and is readable by others; run chmod 600 on it")
    admin_pass = any(a.auth_user and a.credential_key == "pass" for a in (batch.template.src, batch.template.dst))
    if admin_pass and _readable_by_others(batch.servers_path):
        found.append(f"{batch.servers_path} holds an administrator's password and is readable by others; "
                     "run chmod 600 on it")
    return found


def _readable_by_others(path: str) -> bool:
    try:
        return bool(os.stat(path).st_mode & (stat.S_IRGRP | stat.S_IROTH))
    except OSError:
        return False



def run(batch: Batch, options: Options, reporter: Reporter,
        spare: subprocess.Popen[bytes] | None = None, summary: BatchSummary | None = None) -> BatchSummary:
    """The batch; *spare*, a pair process from `parent.spawn` (else one started here), is
    the first pair's: the caller starts it early, so that its start-up overlaps the reading
    of the files and of the journal.  *summary*, when given, is filled as the batch goes
    (the report of a running batch reads it)."""
    return run_batch(batch, options, reporter, spare, summary)
