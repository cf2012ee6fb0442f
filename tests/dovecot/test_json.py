"""Output for scripts: --json documents, --log-file events and the exit codes of real runs
(the exit codes table itself: tests/unit/test_json.py)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fastsync.records.errors import ExitCode
from tests.dovecot.accounts import Account, AccountFactory, ConfigFor
from tests.helpers import message, run_cli, spawn_sync, summary_line, wait_for, workers_of


def seed(account: Account) -> None:
    account.seed([message("INBOX", 1), message("INBOX", 2, flags=("\\Seen",)), message("Work", 3), message("Work/Old", 4)])


def document(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """stdout is exactly one JSON document, and it carries the exit code."""
    doc: dict[str, Any] = json.loads(result.stdout)
    assert doc["exit_code"] == result.returncode
    return doc


def summary_figures(line: str) -> dict[str, int]:
    """The counts of the human summary line: '2 folders, 3 copied, 1 already present, 0 failed, ...'."""
    wanted = {"folders": "folders", "copied": "copied", "already present": "present", "failed": "failed"}
    figures = {}
    for part in line.split(", "):
        number, _, label = part.partition(" ")
        if label in wanted:
            figures[wanted[label]] = int(number)
    return figures


def test_show_json_has_the_figures_of_the_table(accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst = accounts(2)
    seed(src)
    config = config_for(src, dst)
    human = run_cli("show", "-c", config, "-q")
    doc = document(run_cli("show", "-c", config, "--json"))
    table = {line.split("\t")[1]: line.split("\t") for line in human.stdout.splitlines() if line.startswith("src\t")}
    assert {f["name"]: [str(f["messages"]), str(f["size_bytes"])] for f in doc["src"]["folders"]} == {
        name: [row[2], row[4]] for name, row in table.items()
    }
    assert doc["src"]["messages"] == 4 and doc["dst"]["messages"] == 0
    mapping = [line.split("\t")[1:3] for line in human.stdout.splitlines() if line.startswith("map\t")]
    assert [[m["src"], m["dst"]] for m in doc["mapping"]] == mapping


def test_sync_json_has_the_figures_of_the_summary_line(accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst = accounts(2)
    seed(src)
    dst.seed([message("INBOX", 1)])
    config = config_for(src, dst)
    dry = document(run_cli("sync", "-c", config, "-n", "--json"))
    assert dry["dry_run"] is True
    assert {f["src"]: f["to_copy"] for f in dry["folders"]} == {"INBOX": 1, "Work": 1, "Work/Old": 1}

    result = run_cli("sync", "-c", config, "-y", "--json")
    assert result.returncode == 0, result.stderr
    doc = document(result)
    assert doc["complete"] is True and doc["failed"] == [] and doc["errors"] == []
    figures = {k: doc["summary"][k] for k in ("folders", "copied", "present", "failed")}
    assert figures == {"folders": 3, "copied": 3, "present": 1, "failed": 0}
    assert doc["summary"]["copied_bytes"] == dry["summary"]["planned_bytes"] > 0

    # The same run shown to a human: the same figures (nothing left to copy now).
    human = run_cli("sync", "-c", config, "-y", "--full")
    again = document(run_cli("sync", "-c", config, "-y", "--full", "--json"))
    assert summary_figures(summary_line(human.stdout)) == {
        k: again["summary"][k] for k in ("folders", "copied", "present", "failed")
    } == {"folders": 3, "copied": 0, "present": 4, "failed": 0}


def test_check_json_has_the_figures_of_the_report(accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst = accounts(2)
    seed(src)
    dst.seed([message("INBOX", 1), message("INBOX", 9)])
    config = config_for(src, dst)
    human = run_cli("check", "-c", config)
    doc = document(run_cli("check", "-c", config, "--json"))
    assert human.returncode == 1
    rows = {line.split("\t")[0]: line.split("\t") for line in human.stdout.splitlines() if line.count("\t") == 8}
    for folder in doc["folders"]:
        counts = folder["counts"]
        expected = [folder["src_messages"], folder["dst_messages"], *(counts[k] for k in ("missing", "extra", "flags", "date"))]
        assert rows[folder["src"]][2:8] == [str(n) for n in expected]
    last = human.stdout.splitlines()[-1]
    assert last.startswith(f"{doc['summary']['folders']} folders checked, {doc['summary']['missing']} missing, "
                           f"{doc['summary']['extra']} extra")
    assert (doc["summary"]["missing"], doc["summary"]["extra"]) == (3, 1)


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_log_file_names_side_folder_and_uid(
    log_format: str, accounts: AccountFactory, config_for: ConfigFor, tmp_path: Path
) -> None:
    src, dst = accounts(2)
    seed(src)
    log = tmp_path / "fastsync.log"
    result = run_cli("sync", "-c", config_for(src, dst), "-y", env={"FASTSYNC_LOG_FILE": str(log),
                                                                     "FASTSYNC_LOG_FORMAT": log_format})
    assert result.returncode == 0, result.stderr
    assert "folder planned" not in result.stdout + result.stderr
    lines = log.read_text().splitlines()
    if log_format == "text":
        assert any(re.search(r" INFO unit copied side='src' folder='Work/Old' uids=\[1\] ", line) for line in lines)
        return
    events = [json.loads(line) for line in lines]
    assert all({"time", "level", "event", "side", "folder", "uid"} <= e.keys() for e in events)
    planned = {e["folder"]: e for e in events if e["event"] == "folder planned"}
    assert {f: (e["side"], e["to_copy"]) for f, e in planned.items()} == {
        "INBOX": ("src", 2), "Work": ("src", 1), "Work/Old": ("src", 1)
    }
    copied = [e for e in events if e["event"] == "unit copied"]
    assert sorted((e["folder"], uid) for e in copied for uid in e["uids"]) == [
        ("INBOX", 1), ("INBOX", 2), ("Work", 1), ("Work/Old", 1)
    ]
    assert {e["folder"] for e in events if e["event"] == "folder created"} == {"Work", "Work/Old"}
    assert all(e["side"] == "dst" for e in events if e["event"] == "folder created")
    assert events[-1]["event"] == "run finished" and events[-1]["exit_code"] == 0


def test_the_log_opens_with_the_run_and_closes_with_its_totals(
    accounts: AccountFactory, config_for: ConfigFor, tmp_path: Path
) -> None:
    src, dst = accounts(2)
    seed(src)
    log = tmp_path / "fastsync.log"
    result = run_cli("sync", "-c", config_for(src, dst), "-y", "--procs", "2", "--log-file", log,
                     "--log-format", "json")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in log.read_text().splitlines()]
    started, finished = events[0], events[-1]
    assert started["event"] == "run started" and started["level"] == "info"
    assert started["command"] == "sync" and "--procs" in started["argv"]
    assert started["src"]["user"] == src.user and started["dst"]["user"] == dst.user
    assert {"label", "server"} <= started["src"].keys() and "pass" not in started["src"]
    assert started["options"]["workers"] == 2 and started["options"]["confirm"] is True
    assert finished["event"] == "run finished" and finished["exit_code"] == 0 and finished["level"] == "info"
    # The figures of the summary line.
    totals = finished["totals"]
    assert (totals["copied"], totals["present"], totals["failed"], totals["folders"]) == (4, 0, 0, 3)
    assert totals["copied_bytes"] > 0 and totals["complete"] is True and "elapsed_s" in totals
    assert summary_line(result.stdout).startswith("3 folders, 4 copied, 0 already present, 0 failed")
    assert src.password not in log.read_text() and dst.password not in log.read_text()
    # The text format says the same, one record per line.
    again = run_cli("check", "-c", config_for(src, dst), "--log-file", tmp_path / "check.log")
    assert again.returncode == 0, again.stderr
    lines = (tmp_path / "check.log").read_text().splitlines()
    assert " INFO run started command='check'" in lines[0] and f"'user': '{src.user}'" in lines[0]
    assert " INFO run finished command='check' exit_code=0" in lines[-1] and "'missing': 0" in lines[-1]


def test_check_logs_each_difference_with_its_uid(accounts: AccountFactory, config_for: ConfigFor, tmp_path: Path) -> None:
    src, dst = accounts(2)
    src.seed([message("INBOX", 1), message("INBOX", 2)])
    dst.seed([message("INBOX", 2), message("INBOX", 3)])
    log = tmp_path / "check.log"
    result = run_cli("check", "-c", config_for(src, dst), "--log-file", log, "--log-format", "json")
    assert result.returncode == 1
    events = [json.loads(line) for line in log.read_text().splitlines()]
    differs = {(e["kind"], e["side"], e["folder"], e["uid"]) for e in events if e["event"] == "message differs"}
    assert differs == {("missing", "src", "INBOX", 1), ("extra", "dst", "INBOX", 2)}


# ----------------------------------------------------------------------------- exit codes


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scenario(name: str, src: Account, dst: Account, config_for: ConfigFor, tmp_path: Path) -> list[str]:
    """The command line that ends with the exit code *name* stands for."""
    if name == "success":
        seed(src)
        return ["sync", "-c", str(config_for(src, dst)), "-y"]
    if name == "partial":
        # check's "the accounts differ" is the same code as sync's "some messages failed".
        seed(src)
        return ["check", "-c", str(config_for(src, dst))]
    if name == "usage":
        bad = tmp_path / "bad.yaml"
        bad.write_text("src:\n  server: nowhere\n")
        return ["check", "-c", str(bad)]
    if name == "connection":
        return ["check", "-c", str(config_for(src, dst, extra={"src": {"server": f"127.0.0.1:{_closed_port()}"}}))]
    if name == "auth":
        return ["sync", "-c", str(config_for(src, dst, extra={"dst": {"pass": "wrong"}})), "-y"]
    raise AssertionError(name)


@pytest.mark.parametrize(
    ("name", "code"),
    [("success", 0), ("partial", 1), ("usage", 2), ("connection", 3), ("auth", 4)],
)
def test_exit_codes(name: str, code: int, accounts: AccountFactory, config_for: ConfigFor, tmp_path: Path) -> None:
    assert ExitCode[name.upper() if name != "success" else "OK"] == code
    src, dst = accounts(2)
    argv = _scenario(name, src, dst, config_for, tmp_path)
    result = run_cli(*argv, "--json")
    assert result.returncode == code, result.stderr
    doc = document(result)
    assert ("error" in doc) == (code in (2, 3, 4))


def test_interrupted_is_130(accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst = accounts(2)
    src.seed([message("INBOX", n, body="x" * 4000 + "\r\n") for n in range(1, 41)])
    # A bandwidth cap keeps the copy going for seconds: long enough to interrupt it.
    process = spawn_sync(config_for(src, dst), "--bps-down", "20000", "--json")
    # All 40 messages make one unit, appended at once: wait for the worker, not for mail.
    wait_for(lambda: workers_of(process.pid), timeout_s=60, what="a copy worker to start")
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == ExitCode.INTERRUPTED == 130, err
    doc = json.loads(out)
    assert doc["exit_code"] == 130 and doc["error"] == "Cancelled."
    # The copy had started: the document has the summary of what was done.
    assert doc["summary"]["planned"] == 40 and doc["complete"] is False
