"""`fastsync check` and `sync --sync-flags` against real Dovecot servers (their pure parts: tests/unit/test_check.py)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from tests.dovecot.accounts import Account, AccountFactory, ConfigFor, snapshot
from tests.helpers import message, run_cli


# ----------------------------------------------------------------------------- Dovecot


def check(config: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    result = run_cli("check", "-c", config, "--json", *extra)
    doc = json.loads(result.stdout)
    assert doc["exit_code"] == result.returncode
    return result.returncode, doc


def synced(accounts: AccountFactory, config_for: ConfigFor) -> tuple[Account, Account, Path]:
    src, dst = accounts(2)
    src.seed([
        message("INBOX", 1, flags=("\\Seen",)), message("INBOX", 2), message("INBOX", 3, flags=("$Label1",)),
        message("Work", 4), message("Work", 5, message_id=None),
    ])
    config = config_for(src, dst)
    first = run_cli("sync", "-c", config, "-y")
    assert first.returncode == 0, first.stderr
    return src, dst, config


def set_flags(account: Account, folder: str, changes: dict[int, list[bytes]]) -> None:
    client = account.client()
    try:
        client.select_folder(folder)
        for uid, flags in changes.items():
            client.set_flags([uid], flags)
    finally:
        client.logout()


def drop_first(account: Account, folder: str) -> None:
    client = account.client()
    try:
        client.select_folder(folder)
        client.delete_messages(client.search()[:1])
        client.expunge()
    finally:
        client.logout()


def diverge(how: str, src: Account, dst: Account) -> dict[str, int]:
    """Make the destination differ as *how* says; returns the totals check must find."""
    if how == "identical":
        return {}
    if how == "partly copied":
        drop_first(dst, "INBOX")
        dst.seed([message("Work", 9)])
        return {"missing": 1, "extra": 1}
    if how == "flags diverged":
        set_flags(dst, "INBOX", {1: [], 2: [b"\\Answered", b"\\Seen"]})
        return {"flags": 2}
    if how == "date differs":
        drop_first(dst, "INBOX")
        other = message("INBOX", 1, flags=("\\Seen",))
        dst.seed([dataclasses.replace(other, internaldate=other.internaldate + dt.timedelta(days=1))])
        return {"date": 1}
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["identical", "partly copied", "flags diverged", "date differs"])
def test_check_finds_exactly_the_differences(how: str, accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst, config = synced(accounts, config_for)
    expected = diverge(how, src, dst)
    before = (snapshot(src), snapshot(dst))
    code, doc = check(config)
    assert code == (1 if expected else 0)
    assert doc["matches"] is (not expected)
    totals = {k: doc["summary"][k] for k in ("missing", "extra", "flags", "date") if doc["summary"][k]}
    assert totals == expected
    assert doc["summary"]["folders"] == 2
    # Read-only on both sides: \Seen included.
    assert (snapshot(src), snapshot(dst)) == before


def test_check_bodies_sees_a_changed_body_with_the_same_message_id(
    accounts: AccountFactory, config_for: ConfigFor
) -> None:
    src, dst = accounts(2)
    src.seed([message("INBOX", 1), message("INBOX", 2)])
    dst.seed([message("INBOX", 1), message("INBOX", 2, body="Another body, same Message-Id.\r\n")])
    config = config_for(src, dst)
    code, doc = check(config)
    assert code == 0, doc
    code, doc = check(config, "--bodies")
    assert code == 1
    [body] = [d for f in doc["folders"] for d in f["differences"]]
    assert (body["kind"], body["identity"], body["src_uid"], body["dst_uid"]) == ("body", "<m2@example.org>", 2, 2)
    assert len(body["src"]) == len(body["dst"]) == 64 and body["src"] != body["dst"]


def test_check_a_missing_destination_folder_is_all_missing(accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst = accounts(2)
    src.seed([message("Archive", 1), message("Archive", 2)])
    code, doc = check(config_for(src, dst), "-s", "Archive")
    assert code == 1
    assert [(f["src"], f["counts"]["missing"]) for f in doc["folders"]] == [("Archive", 2)]


def test_sync_flags_changes_exactly_the_diverged_flags(accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst, config = synced(accounts, config_for)
    set_flags(dst, "INBOX", {1: [], 2: [b"\\Flagged"]})
    set_flags(src, "Work", {1: [b"\\Answered", b"$Done"]})
    untouched = snapshot(dst)["INBOX"]
    src_before = snapshot(src)

    plain = run_cli("sync", "-c", config, "-y", "--json")
    assert json.loads(plain.stdout)["summary"]["flags_updated"] == 0
    assert snapshot(dst)["INBOX"] == untouched

    first = run_cli("sync", "-c", config, "-y", "--sync-flags", "--json")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)["summary"]
    assert (summary["flags_planned"], summary["flags_updated"], summary["copied"]) == (3, 3, 0)
    assert snapshot(dst) == snapshot(src) == src_before
    assert check(config)[0] == 0

    second = run_cli("sync", "-c", config, "-y", "--sync-flags")
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines()[-1].endswith(", 0 flags updated")

    # A flag change behind the state cache moves HIGHESTMODSEQ (RFC 7162): it is seen.
    set_flags(dst, "Work", {2: [b"\\Deleted"]})
    third = run_cli("sync", "-c", config, "-y", "--sync-flags", "--json")
    assert json.loads(third.stdout)["summary"]["flags_updated"] == 1
    assert snapshot(dst) == snapshot(src)


def test_sync_flags_dry_run_counts_and_writes_nothing(accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst, config = synced(accounts, config_for)
    set_flags(dst, "INBOX", {1: []})
    before = snapshot(dst)
    result = run_cli("sync", "-c", config, "-n", "--sync-flags", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)["summary"]
    assert (summary["flags_planned"], summary["flags_updated"]) == (1, 0)
    assert snapshot(dst) == before
