"""One mailbox whatever the case of its user name: ``U015`` and ``u015`` log in to the same
account (Dovecot lowercases user names at login, as Exchange, Gmail and Cyrus ignore
their case), so two runs spelling it differently meet the same lock and the same ledger."""

from __future__ import annotations

import json
from pathlib import Path

from bench.harness.rewriteproxy import RewritingProxy
from fastsync.engine.lock import RunLock
from fastsync.records.errors import ExitCode
from fastsync.settings.config import load_config
from tests.dovecot.accounts import AccountFactory, ConfigFor, snapshot
from tests.helpers import message, run_cli


def test_two_spellings_of_one_destination_share_its_lock_and_its_ledger(
    accounts: AccountFactory, config_for: ConfigFor, tmp_path: Path,
) -> None:
    src, dst = accounts(2)
    assert dst.user == dst.user.lower()
    src.seed([message("INBOX", n) for n in range(5)])
    state = tmp_path / "state"
    # A destination that rewrites Message-Id: only the ledger tells a re-run which messages are its copies.
    with RewritingProxy(dst.server.port) as proxy:
        def config(user: str, name: str) -> Path:
            return config_for(src, dst, extra={"dst": {"server": f"127.0.0.1:{proxy.port}", "user": user}},
                              name=name)

        upper, lower = config(dst.user.upper(), "upper"), config(dst.user, "lower")
        # A run spelling the user in lower case holds the lock: the other spelling must wait.
        with RunLock.acquire(state, load_config(lower).dst):
            refused = run_cli("sync", "-c", upper, "-y", "--procs", "1", "--state-dir", state)
        assert refused.returncode == ExitCode.LOCKED, refused.stdout + refused.stderr
        assert "is copying to" in refused.stderr
        assert not snapshot(dst).get("INBOX")
        first = run_cli("sync", "-c", upper, "-y", "--procs", "1", "--state-dir", state, "--json")
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout)["summary"]["copied"] == 5
        again = run_cli("sync", "-c", lower, "-y", "--procs", "1", "--state-dir", state, "--json", "--full")
        assert again.returncode == 0, again.stderr
        # The same ledger: the rewritten copies are known, none is copied twice.
        assert json.loads(again.stdout)["summary"]["copied"] == 0
    assert sum(snapshot(dst)["INBOX"].values()) == 5
    assert len(list(state.glob("*.ledger.sqlite"))) == 1

