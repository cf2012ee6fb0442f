"""Refused messages and the report, without a server: how a subject is shown, when a
refusal is held, the verdict, the chart's numbers, the CSV cells and the page's escaping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastsync.engine.refusals import Refusals
from fastsync.records.model import Failure
from fastsync.records.results import BatchSummary, FolderRow, PairResult, Summary
from fastsync.report import document, render
from fastsync.rules import refusals as rules


@pytest.mark.parametrize(("raw", "shown"), [
    (b"plain words", "plain words"),
    (b"=?utf-8?q?caf=C3=A9_invoice?=", "café invoice"),
    (b"=?iso-8859-1?b?Y2Fm6Q==?=", "café"),
    (b"<script>window.pwned=1</script>", "<script>window.pwned=1</script>"),
    (b"bell\x07 and \x1b[31mred", "bell\\x07 and \\x1b[31mred"),
    (b"=?utf-8?q?esc=1B=5B2J?=", "esc\\x1b[2J"),
    (b"folded\r\n continued", "folded continued"),
    (b"=?unknown-charset?q?x?=", "=?unknown-charset?q?x?="),
    ("\u202etxt.exe".encode(), "\\u202etxt.exe"),
    (b"x" * 400, "x" * rules.MAX_FIELD_CHARS),
])
def test_header_text(raw: bytes, shown: str) -> None:
    assert rules.header_text(raw) == shown


@pytest.mark.parametrize(("attempts", "accepted", "retries", "held"), [
    (1, False, 3, False), (3, False, 3, False), (4, False, 3, True), (9, False, 3, True),
    (1, False, 0, True), (1, True, 3, True), (1, False, 1, False), (2, False, 1, True),
])
def test_a_refusal_is_held_when_accepted_or_tried_enough(attempts: int, accepted: bool, retries: int,
                                                       held: bool) -> None:
    assert rules.held(attempts, accepted, retries) is held


def _failure(uid: int, folder: str = "INBOX") -> Failure:
    return Failure(folder, uid, 100, "[POLICY] no", f"<{uid}@x>", "subject", "date")


def test_the_store_counts_forgets_and_accepts_only_what_it_knew(tmp_path: Path) -> None:
    path = tmp_path / "r.refused.json"
    store = Refusals(path)
    store.record([_failure(1), _failure(2)], {"INBOX"}, set())
    store.save()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    store = Refusals(path)
    store.record([_failure(1)], {"INBOX"}, {"INBOX"})
    assert [(r.uid, r.attempts) for r in store.listed()] == [(1, 2)]
    assert [r.uid for r in store.accept()] == [1]
    store.record([_failure(3)], {"INBOX"}, set())
    store.save()
    store = Refusals(path)
    assert [(r.uid, r.accepted) for r in store.listed()] == [(1, True), (3, False)]
    assert store.held("INBOX", 1, 3) is not None and store.held("INBOX", 3, 3) is None
    assert [r.uid for r in store.accept(folder="Other")] == []


def test_a_damaged_store_is_a_fresh_one(tmp_path: Path) -> None:
    path = tmp_path / "r.refused.json"
    path.write_text("{not json")
    assert Refusals(path).items == {}


@pytest.mark.parametrize(("failed", "accepted", "verdict", "ok"), [
    ([], [], "complete", True),
    ([], [_failure(1), _failure(2)], "complete with 2 accepted exceptions", True),
    ([_failure(3)], [_failure(1)], "failed", False),
])
def test_the_sync_verdict(failed: list[Failure], accepted: list[Failure], verdict: str, ok: bool) -> None:
    summary = Summary(failed=failed, accepted=accepted, rows=[FolderRow("INBOX", "INBOX", 5, 0, 2, 200)])
    doc = document.of_sync(summary, "a -> b")
    assert (doc["verdict"], doc["verdict_ok"]) == (verdict, ok)
    assert [r["accepted"] for r in doc["refused"]] == [False] * len(failed) + [True] * len(accepted)


@pytest.mark.parametrize(("outcomes", "running", "verdict"), [
    (["exact", "skipped"], False, "complete"),
    (["exact", "partial"], False, "failed"),
    (["exact", "running"], True, "running"),
])
def test_the_batch_verdict(outcomes: list[str], running: bool, verdict: str) -> None:
    summary = BatchSummary(pairs=[PairResult(n, f"u{n}", f"d{n}", o) for n, o in enumerate(outcomes)])
    assert document.of_batch(summary, "pairs.csv", running)["verdict"] == verdict


@pytest.mark.parametrize(("samples", "points"), [
    ([], ""),
    ([(0, 0)], ""),
    ([(0, 0), (1, 1_000_000), (2, 3_000_000)], "0,200 320.0,105.0 640.0,10.0"),
    ([(0, 0), (0, 5)], ""),
])
def test_the_chart_is_numbers(samples: list[tuple[float, int]], points: str) -> None:
    assert render.chart(samples)["points"] == points


def test_csv_cells_are_never_formulas() -> None:
    doc = {"rows": [{**dict.fromkeys(document.ROW_FIELDS, ""), "name": "=HYPERLINK(\"x\")", "last_error": "-1"}]}
    text = render.rows_csv(doc)
    assert "'=HYPERLINK" in text and ",'-1" in text


def test_the_page_shows_hostile_text_as_text_and_reloads_only_while_running(tmp_path: Path) -> None:
    hostile = '<script>window.pwned=1</script><img src=x onerror="alert(1)">'
    pair = PairResult(2, hostile, "d", "partial", refused=[{"folder": hostile, "subject": hostile, "reason": hostile}])
    summary = BatchSummary(pairs=[pair])
    render.write(document.of_batch(summary, hostile, running=True), str(tmp_path))
    page = (tmp_path / "report.html").read_text()
    assert "<script" not in page and "<img" not in page and "&lt;script&gt;" in page
    assert 'http-equiv="refresh"' in page and "Content-Security-Policy" in page
    assert "http:" not in page.replace("http://www.w3.org/2000/svg", "") and "https:" not in page
    assert json.loads((tmp_path / "report.json").read_text())["rows"][0]["name"] == f"{hostile} -> d"
    render.write(document.of_batch(summary, "pairs.csv"), str(tmp_path))
    assert 'http-equiv="refresh"' not in (tmp_path / "report.html").read_text()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(("value", "shown"), [
    (0, "0 bytes"), (999, "999 bytes"), (1500, "1.5 KB"), (2_500_000, "2.5 MB"), (7e12, "7000.0 GB"), ("", ""),
])
def test_sizes_on_the_page(value: object, shown: str) -> None:
    assert render.size(value) == shown
