"""`fastsync sync`: copy what the destination is missing; with ``--watch``, keep copying.

Command layer: `run(config, options, reporter) -> Summary`, one call of the engine's entry
(`engine.run.run`) with the sync that the options ask for: a dry run with ``--dry-run``,
a watch with ``--watch``.  The engine plans in this process and copies in a process pool,
asks for confirmation through the reporter unless ``-y``, and holds the destination's
lock while it writes; `cli.py` renders the summary and turns it into an exit code.
"""

from __future__ import annotations

from typing import Any

from fastsync.engine import lastrun
from fastsync.engine import run as engine
from fastsync.records.results import Reporter, Summary
from fastsync.settings.config import Config
from fastsync.settings.options import Options


def run(config: Config, options: Options, reporter: Reporter, stdin_is_tty: bool | None = None) -> Summary:
    """Sync as *options* say; *stdin_is_tty* (None: ask `sys.stdin`) says whether the user
    can be asked to confirm."""
    result = engine.run(engine.RunRequest.sync(config, options, stdin_is_tty), reporter)
    assert isinstance(result, Summary)
    return result


def keep_report(config: Config, options: Options, doc: dict[str, Any]) -> None:
    """Keep the report's document of this sync in the state directory, for ``fastsync report``."""
    lastrun.save(config, options.state_dir, doc)
