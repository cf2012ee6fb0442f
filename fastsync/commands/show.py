"""`fastsync show`: the folders of both accounts and the mapping a sync would use.

Command layer: `run(config, options, reporter) -> Listing`, one call of the engine's entry
(`engine.run.run`, `Mode.SHOW`; `engine/listing.py` reads both accounts); `progress.py`
renders it.  Read-only on both sides.
"""

from __future__ import annotations

from fastsync.engine import run as engine
from fastsync.records.results import Listing, Reporter
from fastsync.settings.config import Config
from fastsync.settings.options import Options


def run(config: Config, options: Options, reporter: Reporter) -> Listing:
    """List both accounts and the folder pairs."""
    result = engine.run(engine.RunRequest(config, options, engine.Mode.SHOW), reporter)
    assert isinstance(result, Listing)
    return result
