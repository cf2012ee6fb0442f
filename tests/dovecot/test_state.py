"""The state cache: an unchanged folder pair is skipped, any change on either side is seen."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from bench.harness.corpus import Message
from tests.dovecot.accounts import Account, AccountFactory, ConfigFor, snapshot
from tests.helpers import run_cli, summary_line

UTC = dt.timezone.utc
UNCHANGED = "unchanged since the last run"


def message(folder: str, n: int) -> Message:
    body = f"Message-ID: <state{n}@x>\r\nSubject: {n}\r\n\r\nbody {n}\r\n".encode()
    return Message(folder, body, (), dt.datetime(2022, 1, 1, tzinfo=UTC))


def synced(accounts: AccountFactory, config_for: ConfigFor, tmp_path: Path) -> tuple[Account, Account, list[str]]:
    src, dst = accounts(2)
    src.seed([message("INBOX", 1), message("INBOX", 2), message("Work", 3), message("Work/Old", 4)])
    args = ["sync", "-c", str(config_for(src, dst)), "-y", "--state-dir", str(tmp_path / "state")]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    return src, dst, args


def plan_notes(output: str) -> dict[str, str]:
    # The rows of the plan, its header row ("source ... note") aside.
    return {line.split("\t")[0]: line.split("\t")[-1] for line in output.splitlines()
            if line.count("\t") == 6 and not line.startswith("source\t")}


def test_unchanged_pairs_are_skipped_and_full_diffs_them(
    accounts: AccountFactory, config_for: ConfigFor, tmp_path: Path
) -> None:
    _src, _dst, args = synced(accounts, config_for, tmp_path)
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert set(plan_notes(again.stdout).values()) == {UNCHANGED}
    assert "0 copied, 4 already present" in summary_line(again.stdout)
    full = run_cli(*args, "--full")
    assert UNCHANGED not in full.stdout
    assert "0 copied, 4 already present" in summary_line(full.stdout)


@pytest.mark.parametrize("change", ["new message at the source", "message deleted at the destination"])
def test_a_change_behind_the_cache_is_seen(
    change: str, accounts: AccountFactory, config_for: ConfigFor, tmp_path: Path
) -> None:
    src, dst, args = synced(accounts, config_for, tmp_path)
    if change == "new message at the source":
        src.seed([message("Work", 5)])
    else:
        client = dst.client()
        try:
            client.select_folder("Work")
            client.delete_messages(client.search())
            client.expunge()
        finally:
            client.logout()
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    notes = plan_notes(again.stdout)
    assert notes["Work"] != UNCHANGED
    assert notes["INBOX"] == UNCHANGED
    assert "1 copied" in summary_line(again.stdout)
    assert snapshot(dst) == snapshot(src)


def test_a_broken_cache_file_costs_one_full_diff(accounts: AccountFactory, config_for: ConfigFor, tmp_path: Path) -> None:
    _src, _dst, args = synced(accounts, config_for, tmp_path)
    for path in (tmp_path / "state").iterdir():
        path.write_text("{not json")
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert UNCHANGED not in again.stdout
    # The ledger of copies was overwritten too: the run goes on without it, and says so.
    assert "ledger" in again.stderr and "cannot be read" in again.stderr
    assert UNCHANGED in run_cli(*args).stdout
