"""Messages a destination refuses, recorded between runs: tried again a few times, then
listed without being sent; accepted by ``fastsync accept`` so the run counts as complete;
and ``--notify`` told of the end.  The destination is a Dovecot behind
`bench.harness.refuseproxy.RefusingProxy`, which answers NO with words of its own to the
APPEND of two marked messages."""

from __future__ import annotations

import datetime as dt
import json
import shlex
import stat
import sys
from pathlib import Path

import pytest

from bench.harness.corpus import Message
from bench.harness.refuseproxy import RefusingProxy
from tests.dovecot.accounts import Account, AccountFactory, ConfigFor, message_count
from tests.helpers import message, run_cli, summary_line

pytestmark = pytest.mark.dovecot

VIRUS = b"[POLICY] Virus found: Eicar-Test-Signature"
TOO_BIG = b"[LIMIT] Message refused by the content filter"
REFUSE = {b"<refuse-1@example.org>": VIRUS, b"<refuse-2@example.org>": TOO_BIG}
SCRIPT_SUBJECT = "<script>window.pwned=1</script>"


def refused_message(n: int, subject: str, folder: str = "INBOX") -> Message:
    text = (f"From: a@example.org\r\nSubject: {subject}\r\nDate: Tue, 2 Jan 2018 10:00:00 +0000\r\n"
            f"Message-ID: <refuse-{n}@example.org>\r\n\r\nBody {n}\r\n")
    return Message(folder, text.encode(), ("\\Seen",), dt.datetime(2018, 1, 2, 10, tzinfo=dt.UTC))


def seed_with_refusals(src: Account, base: int = 0) -> None:
    src.seed([message("INBOX", base + n) for n in range(3)] + [
        refused_message(1, SCRIPT_SUBJECT), refused_message(2, "=?utf-8?q?caf=C3=A9_invoice?=")])


def sync(config: Path, state: Path, *extra: str) -> tuple[int, dict, str]:
    done = run_cli("-c", config, "sync", "-y", "--json", "--state-dir", state, *extra)
    return done.returncode, json.loads(done.stdout), done.stderr


def test_refusals_are_recorded_retried_then_held_and_accepted(
    accounts: AccountFactory, config_for: ConfigFor, tmp_path: Path
) -> None:
    src, dst = accounts(2)
    seed_with_refusals(src)
    state = tmp_path / "state"
    with RefusingProxy(dst.server.port, refuse=REFUSE) as proxy:
        config = config_for(src, Account(dst.server, dst.user, dst.password), extra={
            "dst": {"server": f"127.0.0.1:{proxy.port}"}})
        code, doc, _err = sync(config, state, "--retry-refused", "1")
        assert code == 1 and doc["summary"]["copied"] == 3
        failed = {f["message_id"]: f for f in doc["failed"]}
        assert set(failed) == {"<refuse-1@example.org>", "<refuse-2@example.org>"}
        assert failed["<refuse-1@example.org>"]["subject"] == SCRIPT_SUBJECT
        assert failed["<refuse-2@example.org>"]["subject"] == "café invoice"
        assert VIRUS.decode() in failed["<refuse-1@example.org>"]["reason"]
        [record] = list(state.glob("*.refused.json"))
        assert stat.S_IMODE(record.stat().st_mode) == 0o600
        kept = json.loads(record.read_text())["refused"]
        assert {r["attempts"] for r in kept} == {1} and {r["date"] for r in kept} == {"Tue, 2 Jan 2018 10:00:00 +0000"}

        # --retry-refused 1: one more try...
        tries = len(proxy.refused)
        code, doc, _err = sync(config, state, "--retry-refused", "1")
        assert code == 1 and len(doc["failed"]) == 2 and len(proxy.refused) > tries
        # ...then listed as refused without being sent.
        tries = len(proxy.refused)
        code, doc, _err = sync(config, state, "--retry-refused", "1")
        assert code == 1 and len(doc["failed"]) == 2 and len(proxy.refused) == tries
        assert all("not sent again" in f["reason"] for f in doc["failed"])

        accepted = run_cli("-c", config, "accept", "--state-dir", state)
        assert accepted.returncode == 0, accepted.stderr
        assert "2 refused messages accepted" in accepted.stdout + accepted.stderr

        done = run_cli("-c", config, "sync", "-y", "--state-dir", state)
        assert done.returncode == 0, done.stderr
        assert "complete with 2 accepted exceptions" in summary_line(done.stdout + done.stderr)
        assert len(proxy.refused) == tries

        # A refusal after the accept is a new one: not covered.
        src.seed([refused_message(1, "again", folder="Later")])
        code, doc, _err = sync(config, state)
        assert code == 1 and [f["folder"] for f in doc["failed"]] == ["Later"]
        assert len(doc["accepted"]) == 2


def test_notify_gets_the_summary_document_and_its_failure_changes_nothing(
    accounts: AccountFactory, config_for: ConfigFor, tmp_path: Path
) -> None:
    src, dst = accounts(2)
    src.seed([message("INBOX", n) for n in range(4)])
    config = config_for(src, dst)
    out = tmp_path / "notified.json"
    script = f"import sys; open({str(out)!r}, 'w').write(sys.stdin.read())"
    command = shlex.join([sys.executable, "-c", script])
    done = run_cli("-c", config, "sync", "-y", "--state-dir", tmp_path / "state", "--notify", command)
    assert done.returncode == 0, done.stderr
    doc = json.loads(out.read_text())
    assert doc["summary"]["copied"] == 4 and doc["exit_code"] == 0
    assert src.password not in out.read_text() and dst.password not in out.read_text()

    failing = run_cli("-c", config, "sync", "-y", "--state-dir", tmp_path / "state", "--notify",
                      f"{sys.executable} -c 'raise SystemExit(3)'")
    assert failing.returncode == 0
    assert "--notify" in failing.stderr and "exited with code 3" in failing.stderr


def test_sync_and_check_reports_and_the_report_written_again(
    accounts: AccountFactory, config_for: ConfigFor, tmp_path: Path
) -> None:
    src, dst = accounts(2)
    seed_with_refusals(src)
    src.seed([message("Archive", 50 + n) for n in range(2)] + [message("Archive", 60, body="x" * 150_000)])
    state, report = tmp_path / "state", tmp_path / "report"
    with RefusingProxy(dst.server.port, refuse=REFUSE) as proxy:
        config = config_for(src, dst, extra={"dst": {"server": f"127.0.0.1:{proxy.port}"}})
        code, _doc, _err = sync(config, state, "--report", report, "--max-size", "100k")
        assert code == 1
        doc = json.loads((report / "report.json").read_text())
        assert doc["verdict"] == "failed" and doc["totals"]["copied"] == 5
        rows = {r["name"]: r for r in doc["rows"]}
        assert rows["INBOX"]["refused"] == 2 and rows["Archive"]["refused"] == 0
        assert rows["Archive"]["skipped"] == 1 and rows["Archive"]["skip_rules"] == "larger than --max-size (100000 bytes)"
        assert {r["subject"] for r in doc["refused"]} == {SCRIPT_SUBJECT, "café invoice"}
        assert len((report / "report.csv").read_text().splitlines()) == 1 + len(doc["rows"])
        assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in (report / "report.html").read_text()
        assert src.password not in (report / "report.json").read_text()

        assert run_cli("-c", config, "accept", "--state-dir", state, "--folder", "INBOX").returncode == 0
        again = tmp_path / "again"
        done = run_cli("-c", config, "report", "--state-dir", state, "--report", again)
        assert done.returncode == 0, done.stderr
        redone = json.loads((again / "report.json").read_text())
        assert [r["accepted"] for r in redone["refused"]] == [True, True]

        checked = run_cli("-c", config, "check", "--state-dir", state, "--max-size", "100k", "--report", tmp_path / "check")
        assert checked.returncode == 1
        doc = json.loads((tmp_path / "check" / "report.json").read_text())
        assert doc["kind"] == "check" and doc["verdict"] == "differ"
        assert {r["name"]: r["outcome"] for r in doc["rows"]} == {"INBOX": "differs", "Archive": "match"}


@pytest.mark.parametrize(("args", "words"), [
    (("accept", "PAIRS"), "give --all"),
    (("accept", "PAIRS", "--all", "--pair", "x"), "give --all"),
    (("accept", "--all"), "give its PAIRS file"),
    (("accept", "PAIRS", "--pair", "nobody"), "no pair whose source user is 'nobody'"),
    (("report",), "give --report DIR"),
    (("report", "--report", "REPORT"), "no sync of"),
])
def test_accept_and_report_say_what_is_missing(
    accounts: AccountFactory, config_for: ConfigFor, tmp_path: Path, args: tuple[str, ...], words: str
) -> None:
    src, dst = accounts(2)
    config = config_for(src, dst)
    if "PAIRS" in args:
        # A batch's servers file: no user nor password in it.
        config = config_for(src, dst, extra={side: {"user": None, "pass": None} for side in ("src", "dst")})
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"src_user,src_pass,dst_user,dst_pass\n{src.user},{src.password},{dst.user},{dst.password}\n")
    pairs.chmod(0o600)
    real = [str(pairs) if a == "PAIRS" else str(tmp_path / "r") if a == "REPORT" else a for a in args]
    done = run_cli("-c", config, *real, "--state-dir", tmp_path / "state")
    assert done.returncode == 2, done.stderr
    assert words in done.stderr and "Traceback" not in done.stderr


def test_a_batch_whose_report_cannot_be_written_stops_before_it_starts(
    accounts: AccountFactory, config_for: ConfigFor, tmp_path: Path
) -> None:
    src, dst = accounts(2)
    src.seed([message("INBOX", 1)])
    servers = config_for(src, dst, extra={side: {"user": None, "pass": None} for side in ("src", "dst")})
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"src_user,src_pass,dst_user,dst_pass\n{src.user},{src.password},{dst.user},{dst.password}\n")
    pairs.chmod(0o600)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = run_cli("-c", servers, "batch", pairs, "--state-dir", tmp_path / "state", "--report", blocker / "report")
    assert done.returncode == 74, done.stderr
    assert f"--report {blocker / 'report'}: cannot write the report" in done.stderr
    assert "Traceback" not in done.stderr
    assert message_count(dst) == 0
