"""Budgets per account and window, and --until-done, against real Dovecot servers behind
`bench/harness/quotaproxy.py`, which refuses past a byte budget the way Gmail does and
throttles the way Microsoft 365 does, and counts its refusals (pure parts:
tests/unit/test_budget.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.harness.quotaproxy import QuotaProxy
from tests.dovecot.accounts import Account, AccountFactory, snapshot
from tests.helpers import message, run_cli, write_config


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
