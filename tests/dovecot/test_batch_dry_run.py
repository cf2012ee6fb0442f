"""`fastsync batch -n` (or FASTSYNC_DRY_RUN=1) against a real Dovecot: every pair is
planned and its plan shown, nothing is written to any destination (no copy, no deletion
with --delete-dest), and the journal does not take a planned pair for a finished one."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

from tests.dovecot.accounts import Account, AccountFactory, snapshot
from tests.helpers import message, run_cli


def _files(tmp_path: Path, pairs: list[tuple[Account, Account]]) -> tuple[Path, Path]:
    port = pairs[0][0].server.port
    servers = tmp_path / "servers.yaml"
    servers.write_text(yaml.safe_dump({
        "src": {"label": "old", "server": f"127.0.0.1:{port}", "tls": "none"},
        "dst": {"label": "new", "server": f"127.0.0.1:{port}", "tls": "none"},
    }))
    csv = tmp_path / "pairs.csv"
    lines = ["src_user,src_pass,dst_user,dst_pass"] + [f"{s.user},{s.password},{d.user},{d.password}"
                                                       for s, d in pairs]
    csv.write_text("\n".join(lines) + "\n")
    csv.chmod(0o600)
    return servers, csv


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_a_dry_batch_plans_every_pair_and_writes_nothing(accounts: AccountFactory, tmp_path: Path,
                                                         how: str) -> None:
    users = accounts(4)
    pairs = [(users[0], users[1]), (users[2], users[3])]
    users[0].seed([message("INBOX", n) for n in range(5)] + [message("Sent", 10 + n) for n in range(2)])
    users[2].seed([message("INBOX", 20 + n) for n in range(3)])
    # The second pair's destination holds two messages its source lacks: --delete-dest would delete them.
    users[3].seed([message("INBOX", 20), message("INBOX", 90), message("INBOX", 91)])
    before = [snapshot(dst) for _src, dst in pairs]
    servers, csv = _files(tmp_path, pairs)
    state = tmp_path / "state"
    dry = ["-n"] if how == "flag" else []
    env = {"FASTSYNC_DRY_RUN": "1"} if how == "environment" else None
    done = run_cli("-c", servers, "batch", csv, "--state-dir", state, "--procs", "1", "--json",
                   "--delete-dest", "--max-delete", "100%", *dry, env=env)
    assert done.returncode == 0, done.stderr
    assert [snapshot(dst) for _src, dst in pairs] == before
    doc = json.loads(done.stdout)
    assert doc["dry_run"] is True
    planned = {p["line"]: p for p in doc["pairs"]}
    assert planned[2]["outcome"] == planned[3]["outcome"] == "planned"
    assert (planned[2]["planned"], planned[2]["delete_planned"]) == (7, 0)
    assert (planned[3]["planned"], planned[3]["delete_planned"]) == (2, 2)
    assert planned[2]["copied"] == planned[3]["copied"] == 0
    assert doc["summary"]["planned"] == 9
    # The plan on the terminal, per pair, as a user reads it.
    text = run_cli("-c", servers, "batch", csv, "--state-dir", state, "--procs", "1", "-n")
    assert text.returncode == 0, text.stderr
    assert "Dry run: nothing was written." in text.stdout
    assert [snapshot(dst) for _src, dst in pairs] == before
    # A planned pair is not a finished one: the real batch afterwards syncs both.
    real = run_cli("-c", servers, "batch", csv, "--state-dir", state, "--procs", "1", "--json")
    assert real.returncode == 0, real.stderr
    assert json.loads(real.stdout)["summary"]["exact"] == 2
    for src, dst in pairs:
        copied, held = snapshot(src), snapshot(dst)
        assert all(messages <= held.get(folder, Counter()) for folder, messages in copied.items())
