"""The report's one document, built from a command's result record.

Output layer: imports the result records only.  `report.json` is this document as it is,
`report.csv` its rows, `report.html` its rendering (`render.py`).  One function per
command's result: `of_sync` (a row per folder pair), `of_check` (a row per folder pair),
`of_batch` (a row per account pair).  Every text field in it (folder names, subjects,
the servers' words) is the server's or a sender's: the renderers show it as text only.

The verdict comes first: ``complete``, ``complete with N accepted exceptions``,
``running``, ``failed`` (something is not copied: run again, or accept the refusals), or
for check ``match`` / ``differ``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fastsync.records.model import Failure
from fastsync.records.results import BatchSummary, CheckSummary, PairResult, Summary

ROW_FIELDS = ("name", "outcome", "copied", "present", "skipped", "skip_rules", "refused", "accepted", "bytes",
              "seconds", "last_error")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _verdict(ok: bool, accepted: int, running: bool = False) -> tuple[str, bool]:
    if running:
        return "running", False
    if not ok:
        return "failed", False
    return (f"complete with {accepted} accepted exceptions" if accepted else "complete"), True


def _refused(where: str, failures: Iterable[Mapping[str, Any]], accepted: bool) -> list[dict[str, Any]]:
    return [
        {"pair": where, "folder": f.get("folder", ""), "uid": f.get("uid", 0), "message_id": f.get("message_id", ""),
         "subject": f.get("subject", ""), "date": f.get("date", ""), "size_bytes": f.get("size_bytes", 0),
         "reason": f.get("reason", ""), "accepted": accepted}
        for f in failures
    ]


def _as_dicts(failures: Sequence[Failure]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(f) for f in failures]


def _totals(rows: Sequence[Mapping[str, Any]], seconds: float) -> dict[str, Any]:
    total: dict[str, Any] = {name: sum(int(r[name] or 0) for r in rows)
                             for name in ("copied", "present", "skipped", "refused", "accepted", "bytes")}
    total["rows"], total["seconds"] = len(rows), round(seconds, 1)
    return total


def _document(kind: str, rows: list[dict[str, Any]], refused: list[dict[str, Any]],
              verdict: tuple[str, bool], extra: Mapping[str, Any]) -> dict[str, Any]:
    return {"kind": kind, "generated_at": _now(), "verdict": verdict[0], "verdict_ok": verdict[1],
            "running": verdict[0] == "running", "rows": rows, "refused": refused, **extra}


def of_sync(s: Summary, name: str) -> dict[str, Any]:
    """A sync: one row per folder pair; *name* says which accounts (source -> destination)."""
    failed = [f for f in s.failed]
    rows = []
    for row in s.rows:
        mine = [f for f in failed if f.folder == row.src]
        rules = sorted({k.reason for k in s.skipped if k.folder == row.src})
        rows.append({
            "name": row.src if row.src == row.dst or not row.dst else f"{row.src} -> {row.dst}",
            "outcome": "left out" if not row.dst else "incomplete" if (mine or row.src in s.incomplete) else "complete",
            "copied": s.copied_by_folder.get(row.src, 0), "present": max(0, row.messages - row.to_copy - row.skipped),
            "skipped": row.skipped, "skip_rules": "; ".join(rules) or (row.note if not row.dst else ""),
            "refused": len(mine), "accepted": sum(1 for f in s.accepted if f.folder == row.src),
            "bytes": row.to_copy_bytes if not mine else 0, "seconds": "",
            "last_error": mine[-1].reason if mine else "",
        })
    refused = _refused(name, _as_dicts(s.failed), False) + _refused(name, _as_dicts(s.accepted), True)
    totals = _totals(rows, s.elapsed_s)
    totals.update(copied=s.copied, present=s.present, bytes=s.copied_bytes)
    verdict = _verdict(s.complete, len(s.accepted))
    return _document("sync", rows, refused, verdict, {
        "title": name, "totals": totals, "errors": list(s.errors), "samples": [list(x) for x in s.samples]})


def of_check(s: CheckSummary, name: str) -> dict[str, Any]:
    """check: one row per folder pair, its differences in place of copies."""
    rows = [{
        "name": f.pair.src if f.pair.src == f.pair.dst else f"{f.pair.src} -> {f.pair.dst}",
        "outcome": "error" if f.error else "match" if f.matches else "differs",
        "copied": 0, "present": f.dst_messages, "skipped": 0, "skip_rules": "",
        "refused": 0, "accepted": 0, "bytes": 0, "seconds": "",
        "last_error": f.error or ", ".join(f"{f.count(k)} {k}" for k in s.kinds if f.count(k)),
    } for f in s.folders]
    verdict = ("match", True) if s.matches else ("differ", False)
    return _document("check", rows, [], verdict, {
        "title": name, "totals": _totals(rows, s.elapsed_s), "errors": s.errors, "samples": []})


def pair_row(p: PairResult) -> dict[str, Any]:
    return {
        "name": f"{p.src_user} -> {p.dst_user}", "line": p.line, "outcome": p.outcome, "copied": p.copied,
        "present": p.present, "skipped": p.skipped, "skip_rules": "; ".join(p.skip_rules), "refused": len(p.refused),
        "accepted": len(p.accepted), "bytes": p.copied_bytes, "seconds": round(p.elapsed_s, 1),
        "last_error": p.errors[-1] if p.errors else "",
    }


def of_batch(s: BatchSummary, name: str, running: bool = False) -> dict[str, Any]:
    """A batch: one row per account pair; *running* while the batch goes on."""
    rows = [pair_row(p) for p in s.pairs]
    refused = []
    for p in s.pairs:
        refused += _refused(f"{p.src_user} -> {p.dst_user}", p.refused, False)
        refused += _refused(f"{p.src_user} -> {p.dst_user}", p.accepted, True)
    ok = not s.cancelled and all(p.outcome in ("exact", "skipped") for p in s.pairs)
    accepted = sum(len(p.accepted) for p in s.pairs)
    totals = _totals(rows, s.elapsed_s)
    totals["bytes"] = max(totals["bytes"], s.progress_bytes)
    return _document("batch", rows, refused, _verdict(ok, accepted, running), {
        "title": name, "totals": totals, "errors": [s.cancelled] if s.cancelled else [],
        "samples": [list(x) for x in s.samples]})
