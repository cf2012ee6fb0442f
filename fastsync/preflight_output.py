"""`fastsync preflight`'s output: the table, the problems, the --json document and --csv.

Output layer, beside `progress.py`, through whose `Reporter` every line goes (tables,
errors, the document; --csv through `Reporter.raw`): this module only builds the rows.
Every field a server or a file supplied passes `terminal.printable` in the reporter.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from typing import Any

from fastsync.progress import Reporter, human_bytes
from fastsync.records.results import PairReadiness, PreflightSummary
from fastsync.terminal import printable

PREFLIGHT_COLUMNS = ("line", "source user", "destination user", "logins", "to copy", "bytes", "quota free",
                     "too large", "folders refused", "src ceiling", "dst ceiling", "estimate", "ready")


def human_duration(seconds: float) -> str:
    """1.5 s, 12 min, 3.2 h, 2.5 days."""
    for unit, size in (("days", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


def _preflight_cells(p: PairReadiness) -> list[object]:
    logins = "ok" if p.src_login == p.dst_login == "ok" else "src failed" if p.src_login != "ok" else "dst failed"
    free = "-" if p.quota_limit_bytes is None else max(0, p.quota_limit_bytes - (p.quota_used_bytes or 0))

    def ceiling(side: str) -> object:
        if side not in p.ceilings:
            return "-"
        found = p.ceilings[side]
        return f">={p.probe_max}" if found is None else found

    return [p.line, p.src_user, p.dst_user, logins, p.messages, p.size_bytes, free, p.too_large,
            len(p.folders_refused), ceiling("src"), ceiling("dst"), human_duration(p.estimate_s),
            "yes" if p.can_complete else "no"]


def preflight_report(reporter: Reporter, s: PreflightSummary) -> None:
    """The table of pairs, each problem on its own line (stderr), and a last line."""
    for p in s.pairs:
        for text in p.problems:
            reporter.error(f"line {p.line} ({p.src_user} -> {p.dst_user}): {text}" if p.line else text)
    reporter.table("Pre-flight", PREFLIGHT_COLUMNS, [_preflight_cells(p) for p in s.pairs])
    ready = sum(1 for p in s.pairs if p.can_complete)
    total = sum(p.estimate_s for p in s.pairs)
    reporter.info(f"{len(s.pairs)} pairs: {ready} ready, {len(s.pairs) - ready} not; "
                  f"{sum(p.messages for p in s.pairs)} messages, {human_bytes(sum(p.size_bytes for p in s.pairs))} "
                  f"to copy, about {human_duration(total)} one pair after another; nothing was written")


def preflight_csv(reporter: Reporter, s: PreflightSummary) -> None:
    """--csv: the table as CSV on stdout (RFC 4180 quoting), every field through `printable`."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(PREFLIGHT_COLUMNS)
    writer.writerows([[printable(str(c)) for c in _preflight_cells(p)] for p in s.pairs])
    reporter.raw(out.getvalue())


def preflight_document(s: PreflightSummary) -> dict[str, Any]:
    """preflight's --json document: every pair's findings."""
    return {
        "command": "preflight",
        "pairs": [{**dataclasses.asdict(p), "can_complete": p.can_complete} for p in s.pairs],
        "summary": {"pairs": len(s.pairs), "ready": sum(1 for p in s.pairs if p.can_complete),
                    "messages": sum(p.messages for p in s.pairs), "size_bytes": sum(p.size_bytes for p in s.pairs),
                    "estimate_s": round(sum(p.estimate_s for p in s.pairs), 1), "elapsed_s": round(s.elapsed_s, 3)},
    }
