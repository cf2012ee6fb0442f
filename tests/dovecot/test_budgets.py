"""Budgets per account and window, and --until-done, against real Dovecot servers behind
`bench/harness/quotaproxy.py`, which refuses past a byte budget the way Gmail does and
throttles the way Microsoft 365 does, and counts its refusals (pure parts:
tests/unit/test_budget.py)."""

from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from bench.harness.quotaproxy import QuotaProxy
from tests.dovecot.accounts import Account, AccountFactory, snapshot
from tests.helpers import message, run_cli, spawn_sync, wait_for, write_config


WINDOW = "10s"
BUDGET = 2_000_000


def corpus(count: int = 80, size: int = 100_000) -> list[Any]:
    """About count * size bytes of messages."""
    return [message("INBOX", n, body="x" * size + "\r\n") for n in range(count)]


def config_through(tmp_path: Path, src: Account, dst: Account, proxy: QuotaProxy, **rate: Any) -> Path:
    extra = {"rate_limit": {"dst_daily_limit": BUDGET, "limit_window": WINDOW, **rate}}
    return write_config(tmp_path, src.address, src.user, src.password, f"127.0.0.1:{proxy.port}", dst.user,
                        dst.password, extra=extra)


def sync(config: Path, *args: str, state: Path, timeout: float = 240) -> tuple[int, dict[str, Any], str]:
    result = run_cli("sync", "-c", config, "-y", "--json", "--state-dir", state, *args, timeout=timeout)
    return result.returncode, json.loads(result.stdout), result.stderr


def test_until_done_keeps_under_the_budget_and_finishes_exact(
    accounts: AccountFactory, tmp_path: Path,
) -> None:
    src, dst = accounts(2)
    src.seed(corpus())
    with QuotaProxy(dst.server.port, window_s=10, upload_bytes=BUDGET) as proxy:
        config = config_through(tmp_path, src, dst, proxy)
        code, doc, stderr = sync(config, "--until-done", "--procs", "2", state=tmp_path / "state")
        assert code == 0, stderr
        assert proxy.refusals == 0
    assert snapshot(dst) == snapshot(src)
    # About 8 MB under 2 MB per 10 s: parked three times or more, each said with its time.
    assert len(doc["parked"]) >= 3
    assert all(p["side"] == "dst" and p["until"].endswith("Z") for p in doc["parked"])
    assert "parked until" in stderr
    assert doc["budgets"][0]["limit_bytes"] == BUDGET


def test_without_until_done_a_spent_budget_ends_the_run_and_a_rerun_counts_what_was_used(
    accounts: AccountFactory, tmp_path: Path,
) -> None:
    src, dst = accounts(2)
    src.seed(corpus(count=30))
    state = tmp_path / "state"
    with QuotaProxy(dst.server.port, window_s=10, upload_bytes=BUDGET) as proxy:
        config = config_through(tmp_path, src, dst, proxy)
        code, doc, stderr = sync(config, state=state)
        assert code == 1
        assert doc["summary"]["stopped_at_transfer_limit"] is True
        assert doc["resume_at"] is not None
        assert "daily limit spent" in stderr and "--until-done" in stderr
        first = doc["summary"]["copied_bytes"]
        assert 0 < first <= BUDGET
        # Started again inside the window: what the first run used still counts.
        code, doc, stderr = sync(config, state=state)
        assert code == 1
        assert doc["budgets"][0]["used_bytes"] >= first
        assert doc["summary"]["copied_bytes"] + first <= BUDGET
        # With --until-done the rest follows.
        code, doc, stderr = sync(config, "--until-done", state=state)
        assert code == 0, stderr
        assert proxy.refusals == 0
    assert snapshot(dst) == snapshot(src)


def test_a_budget_too_small_for_the_largest_message_is_a_configuration_error(
    accounts: AccountFactory, tmp_path: Path,
) -> None:
    src, dst = accounts(2)
    src.seed([message("INBOX", 1, body="y" * 300_000 + "\r\n")])
    config = write_config(tmp_path, src.address, src.user, src.password, dst.address, dst.user, dst.password,
                          extra={"rate_limit": {"dst_daily_limit": "200k"}})
    result = run_cli("sync", "-c", config, "-y", "--state-dir", tmp_path / "state")
    assert result.returncode == 2
    assert "200,000 bytes" in result.stderr and "cannot hold the largest message" in result.stderr
    assert "Traceback" not in result.stderr
    assert not any(snapshot(dst).values())


def test_the_servers_word_parks_the_account_without_a_budget_of_ours(
    accounts: AccountFactory, tmp_path: Path,
) -> None:
    # The proxy refuses past its budget; fastsync knows of none (no daily limit given):
    # Gmail's refusal parks the account for the window, then the copy goes on.
    src, dst = accounts(2)
    src.seed(corpus(count=30))
    with QuotaProxy(dst.server.port, window_s=5, upload_bytes=BUDGET) as proxy:
        config = write_config(tmp_path, src.address, src.user, src.password, f"127.0.0.1:{proxy.port}", dst.user,
                              dst.password, extra={"rate_limit": {"limit_window": "5s"}})
        code, doc, stderr = sync(config, "--until-done", "--procs", "2", state=tmp_path / "state")
        assert code == 0, stderr
        assert proxy.refusals >= 1
    assert snapshot(dst) == snapshot(src)
    assert doc["parked"] and doc["parked"][0]["side"] == "dst"


def test_microsoft_throttling_parks_and_finishes_exact(accounts: AccountFactory, tmp_path: Path) -> None:
    src, dst = accounts(2)
    src.seed(corpus(count=60, size=50_000))
    with QuotaProxy(dst.server.port, throttle=2, backoff_ms=500) as proxy:
        config = write_config(tmp_path, src.address, src.user, src.password, f"127.0.0.1:{proxy.port}", dst.user,
                              dst.password)
        code, doc, stderr = sync(config, "--until-done", "--procs", "2", state=tmp_path / "state")
        assert code == 0, stderr
        assert proxy.throttled >= 1
    assert snapshot(dst) == snapshot(src)
    assert doc["parked"]


def test_a_batch_finishes_exact_with_two_pairs_throttled_and_the_others_not_held_up(
    accounts: AccountFactory, tmp_path: Path,
) -> None:
    users = accounts(12)
    pairs = [(users[2 * i], users[2 * i + 1]) for i in range(6)]
    for index, (src, _dst) in enumerate(pairs):
        src.seed([message("INBOX", index * 1000 + n, body="z" * 30_000 + "\r\n") for n in range(100)])
    throttled = {pairs[1][1].user, pairs[4][1].user}
    server = pairs[0][0].server
    with QuotaProxy(server.port, throttle=2, backoff_ms=2000, throttled_users=frozenset(throttled)) as proxy:
        servers = tmp_path / "servers.yaml"
        servers.write_text(json.dumps({
            "src": {"label": "old", "server": f"127.0.0.1:{server.port}", "tls": "none"},
            "dst": {"label": "new", "server": f"127.0.0.1:{proxy.port}", "tls": "none"},
        }))
        csv = tmp_path / "pairs.csv"
        csv.write_text("src_user,src_pass,dst_user,dst_pass\n" + "".join(
            f"{s.user},{s.password},{d.user},{d.password}\n" for s, d in pairs))
        csv.chmod(0o600)
        state = tmp_path / "state"
        done = run_cli("-c", servers, "batch", csv, "--state-dir", state, "--procs", "2", "--parallel", "6",
                       "--until-done", "--json", timeout=300)
        assert done.returncode == 0, done.stderr
        assert proxy.throttled >= 2
    doc = json.loads(done.stdout)
    assert doc["summary"]["exact"] == 6
    for src, dst in pairs:
        assert snapshot(dst) == snapshot(src)
    by_user = {p["dst_user"]: p for p in doc["pairs"]}
    # The throttled pairs waited (parked, each wait said); the others never did.
    assert all(by_user[user]["parked"] for user in throttled)
    assert not any(p["parked"] for user, p in by_user.items() if user not in throttled)
    # The others were not held up: each ended before the last throttled pair did.
    [journal] = (state / "batches").glob("*.sqlite")
    with sqlite3.connect(journal) as db:
        ended = dict(db.execute("SELECT dst_user, finished_at FROM pairs"))
    last_throttled = max(ended[user] for user in throttled)
    assert all(ended[user] < last_throttled for user in ended if user not in throttled)


@pytest.mark.parametrize(("stop", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_ctrl_c_and_sigterm_while_parked_end_cleanly(
    accounts: AccountFactory, tmp_path: Path, stop: signal.Signals, code: int,
) -> None:
    src, dst = accounts(2)
    src.seed(corpus(count=30))
    log = tmp_path / "run.log"
    config = write_config(tmp_path, src.address, src.user, src.password, dst.address, dst.user, dst.password,
                          extra={"rate_limit": {"dst_daily_limit": BUDGET, "limit_window": "1h"}})
    run = spawn_sync(config, "--until-done", "--state-dir", str(tmp_path / "state"), "--log-file", str(log))
    try:
        wait_for(lambda: log.exists() and "account parked" in log.read_text(), timeout_s=120,
                 what="the destination to be parked")
        run.send_signal(stop)
        _out, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == code, err
    assert "Traceback" not in err
    assert "parked until" in err


def test_a_batch_keeps_the_budgets_uses_with_its_journal(accounts: AccountFactory, tmp_path: Path) -> None:
    # A pair that runs again on another machine (here: a state directory without the
    # budgets' files, as another machine has) still counts what its budget used.
    src, dst = accounts(2)
    src.seed(corpus(count=30))
    servers = tmp_path / "servers.yaml"
    servers.write_text(json.dumps({
        "src": {"server": src.address, "tls": "none"}, "dst": {"server": dst.address, "tls": "none"},
        "rate_limit": {"dst_daily_limit": BUDGET, "limit_window": "1h"},
    }))
    csv = tmp_path / "pairs.csv"
    csv.write_text(f"src_user,src_pass,dst_user,dst_pass\n{src.user},{src.password},{dst.user},{dst.password}\n")
    csv.chmod(0o600)
    state = tmp_path / "state"

    def batch() -> dict[str, Any]:
        done = run_cli("-c", servers, "batch", csv, "--state-dir", state, "--json", timeout=240)
        assert done.returncode == 1, done.stderr
        return json.loads(done.stdout)["pairs"][0]

    first = batch()
    assert first["outcome"] == "partial" and 0 < first["copied_bytes"] <= BUDGET
    assert first["resume_at"]
    for path in (state / "budgets").iterdir():
        path.unlink()
    again = batch()
    assert again["copied_bytes"] + first["copied_bytes"] <= BUDGET
    assert again["resume_at"]


def test_gmail_is_recognised_by_its_capability_and_its_preset_can_be_lifted(
    accounts: AccountFactory, tmp_path: Path,
) -> None:
    from bench.harness.gmailproxy import GmailIdProxy

    src, dst = accounts(2)
    src.seed(corpus(count=3))
    with GmailIdProxy(dst.server.port) as proxy:
        config = write_config(tmp_path, src.address, src.user, src.password, f"127.0.0.1:{proxy.port}", dst.user,
                              dst.password)
        planned = run_cli("sync", "-c", config, "-n", "--json", "--state-dir", tmp_path / "state")
        assert planned.returncode == 0, planned.stderr
        [budget] = json.loads(planned.stdout)["budgets"]
        assert (budget["side"], budget["limit_bytes"]) == ("dst", 500_000_000)
        assert "Gmail" in budget["origin"]
        shown = run_cli("sync", "-c", config, "-n", "--state-dir", tmp_path / "state")
        assert "daily limit 500.0 MB per 24 h (Gmail's limit" in shown.stdout + shown.stderr
        lifted = run_cli("sync", "-c", config, "-n", "--json", "--state-dir", tmp_path / "state",
                         "--dst-daily-limit", "none")
        assert json.loads(lifted.stdout)["budgets"] == []


def test_a_source_budget_keeps_downloads_under_gmails_limit(accounts: AccountFactory, tmp_path: Path) -> None:
    src, dst = accounts(2)
    src.seed(corpus(count=40))
    with QuotaProxy(src.server.port, window_s=10, download_bytes=BUDGET) as proxy:
        config = write_config(tmp_path, f"127.0.0.1:{proxy.port}", src.user, src.password, dst.address, dst.user,
                              dst.password, extra={"rate_limit": {"src_daily_limit": BUDGET, "limit_window": WINDOW}})
        code, doc, stderr = sync(config, "--until-done", "--procs", "2", state=tmp_path / "state")
        assert code == 0, stderr
        assert proxy.refusals == 0
    assert snapshot(dst) == snapshot(src)
    assert doc["parked"] and all(p["side"] == "src" for p in doc["parked"])


def test_a_batch_runs_other_pairs_while_a_pair_waits_for_its_window(accounts: AccountFactory, tmp_path: Path) -> None:
    users = accounts(6)
    pairs = [(users[2 * i], users[2 * i + 1]) for i in range(3)]
    for index, (src, _dst) in enumerate(pairs):
        src.seed([message("INBOX", index * 1000 + n, body="w" * 100_000 + "\r\n") for n in range(30)])
    server = pairs[0][0].server
    with QuotaProxy(server.port, window_s=10, upload_bytes=BUDGET) as proxy:
        servers = tmp_path / "servers.yaml"
        servers.write_text(json.dumps({
            "src": {"server": f"127.0.0.1:{server.port}", "tls": "none"},
            "dst": {"server": f"127.0.0.1:{proxy.port}", "tls": "none"},
            "rate_limit": {"dst_daily_limit": BUDGET, "limit_window": WINDOW},
        }))
        csv = tmp_path / "pairs.csv"
        csv.write_text("src_user,src_pass,dst_user,dst_pass\n" + "".join(
            f"{s.user},{s.password},{d.user},{d.password}\n" for s, d in pairs))
        csv.chmod(0o600)
        done = run_cli("-c", servers, "batch", csv, "--state-dir", tmp_path / "state", "--parallel", "1",
                       "--until-done", "--json", timeout=300)
        assert done.returncode == 0, done.stderr
        assert proxy.refusals == 0
        uploads = {user: [t for t, _b in account.up] for user, account in proxy.accounts.items()}
    doc = json.loads(done.stdout)
    assert doc["summary"]["exact"] == 3
    for src, dst in pairs:
        assert snapshot(dst) == snapshot(src)
    assert all(p["parked"] for p in doc["pairs"])
    assert doc["summary"]["copied"] == 90
    # One pair at a time, yet the second pair copied while the first waited for its window.
    first, second = pairs[0][1].user, pairs[1][1].user
    assert min(uploads[second]) < max(uploads[first])
    assert "the other pairs go on" in done.stderr
