"""`fastsync accept`: the refusals recorded so far become accepted exceptions.

Command layer: `run(config_path, pairs_path, options) -> lines to show`.  Without PAIRS,
the config's two accounts; with PAIRS, the batch's pairs (``--all``, or ``--pair
SRC_USER``); ``--folder NAME`` narrows it to one source folder.  The records are those of
`engine/refusals.py`, in the state directory; no server is contacted.  The next run
leaves the accepted messages out and counts as complete with accepted exceptions; a
message refused after this accept is a new refusal, not covered.
"""

from __future__ import annotations

from fastsync.batch.inputs import load_batch
from fastsync.engine.refusals import Refusals
from fastsync.records.errors import UsageError
from fastsync.settings.config import Config, load_config
from fastsync.settings.options import Options


def _accept(config: Config, options: Options, name: str) -> str:
    refusals = Refusals.for_config(config, options.state_dir)
    newly = refusals.accept(options.folder)
    refusals.save()
    where = f" of folder {options.folder!r}" if options.folder else ""
    return f"{name}: {len(newly)} refused messages{where} accepted"


def run(config_path: str, pairs_path: str | None, options: Options) -> list[str]:
    """Accept the current refusals; one line per account pair saying how many."""
    if pairs_path is None:
        if options.all_pairs or options.pair:
            raise UsageError("accept: --all and --pair choose pairs of a batch; give its PAIRS file too")
        config = load_config(config_path)
        return [_accept(config, options, f"{config.src.user} -> {config.dst.user}")]
    if options.all_pairs == bool(options.pair):
        raise UsageError(f"accept {pairs_path}: give --all (every pair) or --pair SRC_USER (one pair)")
    batch = load_batch(config_path, pairs_path)
    wanted = (options.pair or "").lower()
    chosen = [p for p in batch.pairs if options.all_pairs or p.config.src.user.lower() == wanted]
    if not chosen:
        raise UsageError(f"accept: {pairs_path} has no pair whose source user is {options.pair!r}")
    return [_accept(p.config, options, f"line {p.line} ({p.name})") for p in chosen]
