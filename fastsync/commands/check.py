"""`fastsync check`: does the destination hold what the source holds?  Changes nothing on either side.

Command layer: `run(config, options, reporter) -> CheckSummary`, one call of the engine's
entry (`engine.run.run`, `Mode.CHECK`; `engine/check.py` says what is compared and which
commands are sent).  This is what a migration team runs before switching MX records:
`cli.py` renders the report, and exits 0 when everything matches, 1 otherwise.
"""

from __future__ import annotations

from fastsync.engine import run as engine
from fastsync.records.results import CheckSummary, Reporter
from fastsync.settings.config import Config
from fastsync.settings.options import Options


def run(config: Config, options: Options, reporter: Reporter) -> CheckSummary:
    """Compare every mapped folder pair; never writes to either side."""
    result = engine.run(engine.RunRequest(config, options, engine.Mode.CHECK), reporter)
    assert isinstance(result, CheckSummary)
    return result
