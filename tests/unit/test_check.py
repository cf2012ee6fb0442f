"""`fastsync check` and `sync --sync-flags` against real Dovecot servers, and their pure parts."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import Account, AccountFactory, ConfigFor
from helpers import message, run_cli, snapshot

from fastsync.engine.check import compare
from fastsync.records.model import MessageState
from fastsync.rules.plan import flag_changes, match_states

UTC = dt.UTC
DAY = dt.datetime(2020, 1, 1, tzinfo=UTC)


def state(uid: int, identity: str, flags: tuple[str, ...] = (), date: dt.datetime = DAY) -> MessageState:
    return MessageState(uid, 100, identity, flags, date)


# ----------------------------------------------------------------------------- pure


@pytest.mark.parametrize(
    ("src", "dst", "expected"),
    [
        ([state(1, "a")], [state(7, "a")], []),
        ([state(1, "a"), state(2, "a")], [state(7, "a")], [("missing", 2, None)]),
        ([state(1, "a")], [state(7, "a"), state(9, "a")], [("extra", None, 9)]),
        ([state(1, "a", ("\\Seen",))], [state(7, "a", ("\\seen", "\\Recent"))], []),
        ([state(1, "a", ("\\Seen",))], [state(7, "a")], [("flags", 1, 7)]),
        # The same instant with another UTC offset is the same internal date.
        ([state(1, "a")], [state(7, "a", date=DAY.astimezone(dt.timezone(dt.timedelta(hours=2))))], []),
        ([state(1, "a")], [state(7, "a", date=DAY + dt.timedelta(seconds=1))], [("date", 1, 7)]),
    ],
)
def test_compare(src: list[MessageState], dst: list[MessageState], expected: list[tuple[str, Any, Any]]) -> None:
    assert [(d.kind, d.src_uid, d.dst_uid) for d in compare(match_states(src, dst))] == expected


def test_kth_copy_pairs_with_kth_copy_and_flag_sets_are_batched() -> None:
    src = [state(1, "a", ("\\Seen",)), state(2, "a", ("\\Flagged",)), state(3, "b", ("\\Seen",))]
    dst = [state(10, "a"), state(11, "a", ("\\Flagged",)), state(12, "b")]
    matching = match_states(src, dst)
    matched, missing, extra = matching.matched, matching.missing, matching.extra
    assert [(s.uid, d.uid) for s, d in matched] == [(1, 10), (2, 11), (3, 12)]
    assert missing == extra == []
    assert flag_changes(matched) == {("\\Seen",): [10, 12]}


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
