"""`fastsync preflight`: for each account pair, what would stop a complete copy, found
without writing anything to either side.

Command layer: `run(pairs, options, reporter) -> PreflightSummary`.  The pairs are a
config's one pair or a batch's (``servers.yaml`` + ``pairs.csv``); each is looked at by
the engine (`engine/preflight.py`: logins, the planner's diff, quota, message size limit,
folder names, with --probe the connection ceilings, the estimated duration), one after
another; `cli.py` renders the result and exits 0 only when every pair can complete.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from fastsync.engine.preflight import check_pair
from fastsync.records.results import PreflightSummary, Reporter
from fastsync.settings.config import Config
from fastsync.settings.options import Options


def run(pairs: Sequence[tuple[int, Config]], options: Options, reporter: Reporter) -> PreflightSummary:
    """Every pair's readiness; *pairs*: (line in the pairs file, 0 for a config; its config)."""
    started = time.monotonic()
    summary = PreflightSummary()
    for line, config in pairs:
        summary.pairs.append(check_pair(config, options, reporter, line))
    summary.elapsed_s = time.monotonic() - started
    return summary
