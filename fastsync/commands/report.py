"""`fastsync report`: the report of the last sync, or of a batch, written again.

Command layer: `run(config_path, pairs_path, options) -> (document, secrets)`.  Without
PAIRS, the document the config's last sync kept in the state directory (`engine/lastrun.py`),
its refused messages marked as they stand now (accepted since or not); with PAIRS, the
batch journal's pairs (`batch/journal.py`), the chart drawn from when each pair finished.
No server is contacted; `cli.py` writes the files (`report/render.py`).
"""

from __future__ import annotations

from typing import Any

import orjson

from fastsync.batch.inputs import load_batch
from fastsync.batch.journal import Journal
from fastsync.engine import lastrun
from fastsync.engine.refusals import Refusals
from fastsync.engine.state import default_dir
from fastsync.records.errors import UsageError
from fastsync.records.results import BatchSummary, PairResult
from fastsync.report.document import of_batch
from fastsync.rules import refusals as rules
from fastsync.settings.config import load_config
from fastsync.settings.options import Options


def _of_sync(config_path: str, options: Options) -> tuple[dict[str, Any], list[str]]:
    config = load_config(config_path)
    doc = lastrun.load(config, options.state_dir)
    known = Refusals.for_config(config, options.state_dir).items
    for item in doc.get("refused", []):
        found = known.get(rules.key(item.get("folder", ""), item.get("uid", 0), item.get("message_id", "")))
        item["accepted"] = bool(found and found.accepted)
    return doc, [config.src.password, config.dst.password]


def _of_batch(config_path: str, pairs_path: str, options: Options) -> tuple[dict[str, Any], list[str]]:
    batch = load_batch(config_path, pairs_path)
    journal = Journal.open(options.state_dir or default_dir(), pairs_path)
    try:
        entries = journal.entries()
    finally:
        journal.close()
    summary = BatchSummary()
    finished = []
    for line, src_user, dst_user, entry in entries:
        detail = orjson.loads(entry.detail or "{}")
        summary.pairs.append(PairResult(
            line, src_user, dst_user, entry.outcome, entry.copied, entry.present, entry.failed, entry.copied_bytes,
            elapsed_s=entry.seconds, exit_code=entry.exit_code, errors=list(detail.get("errors", [])),
            refused=list(detail.get("refused", [])), accepted=list(detail.get("accepted", [])),
            skipped=int(detail.get("skipped", 0)), skip_rules=list(detail.get("skip_rules", [])),
        ))
        if entry.finished_at:
            finished.append((entry.finished_at, entry.copied_bytes))
    finished.sort()
    if finished:
        start = min(e.finished_at - e.seconds for *_rest, e in entries if e.finished_at)
        total = 0
        summary.samples.append((0.0, 0))
        for at, size in finished:
            total += size
            summary.samples.append((round(at - start, 3), total))
        summary.elapsed_s = finished[-1][0] - start
    return of_batch(summary, pairs_path), batch.secrets


def run(config_path: str, pairs_path: str | None, options: Options) -> tuple[dict[str, Any], list[str]]:
    """The report's document and the secrets to mask in it."""
    if not options.report_dir:
        raise UsageError("report: give --report DIR, the directory to write report.html, .csv and .json into")
    if pairs_path is None:
        return _of_sync(config_path, options)
    return _of_batch(config_path, pairs_path, options)
