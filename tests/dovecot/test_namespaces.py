"""Personal namespaces (RFC 2342) and folders the destination refuses, against real Dovecot.

A server may put every personal folder under a prefix: on `dovecot_prefixed` the prefix
is "INBOX." and the separator ".", so "Sent" is "INBOX.Sent".  fastsync maps names in
their namespace-relative form (strip the source's prefix, translate the separator, add
the destination's), so an account moves between the two kinds of server without a
`map`.  Each table below says, for one pair of servers, which destination folder every
source folder must land in; the destination must then hold exactly those folders.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pytest

from bench.harness.dovecot import Dovecot
from bench.harness.verify import compare
from tests.dovecot.accounts import Account, AccountFactory, ConfigFor, snapshot
from tests.helpers import message, run_cli, summary_line

PLAIN = "dovecot"  # separator "/", no prefix
PREFIXED = "dovecot_prefixed"  # separator ".", prefix "INBOX."

NAMESPACES = {
    PLAIN: {"prefix": "", "delimiter": "/"},
    PREFIXED: {"prefix": "INBOX.", "delimiter": "."},
}


@dataclass(frozen=True)
class Case:
    """One pair of servers: what the source holds and where each of its folders must go."""

    id: str
    src_server: str
    dst_server: str
    # Source folders as the source server names them (parents first) -> messages in each.
    src_folders: dict[str, int]
    # Folders the destination has before the sync: its special-use ones ("Sent" is \Sent
    # and "Sent Items" too on the test servers, "Trash" and "Deleted Items" are \Trash).
    dst_existing: tuple[str, ...]
    # Source folder -> destination folder.  The destination ends with exactly these.
    pairs: dict[str, str]


CASES = [
    Case(
        "prefixed-to-plain",
        PREFIXED,
        PLAIN,
        # No name with "/" in it: Dovecot refuses "/" in a name under the "." separator.
        {
            "INBOX": 3,
            "INBOX.Archive": 1,
            "INBOX.Archive.2020": 2,
            "INBOX.Sent Items": 2,
            "INBOX.Deleted Items": 1,
            "INBOX.Café": 2,
        },
        ("Sent", "Trash"),
        {
            "INBOX": "INBOX",
            "INBOX.Archive": "Archive",
            "INBOX.Archive.2020": "Archive/2020",
            "INBOX.Sent Items": "Sent",
            "INBOX.Deleted Items": "Trash",
            "INBOX.Café": "Café",
        },
    ),
    Case(
        "plain-to-prefixed",
        PLAIN,
        PREFIXED,
        {
            "INBOX": 3,
            "Archive": 1,
            "Archive/2020": 2,
            "Sent Items": 2,
            "Deleted Items": 1,
            "Café": 2,
            # "." is the destination's separator: inside a name it becomes "_".
            "a.b": 1,
        },
        ("INBOX.Sent", "INBOX.Trash"),
        {
            "INBOX": "INBOX",
            "Archive": "INBOX.Archive",
            "Archive/2020": "INBOX.Archive.2020",
            "Sent Items": "INBOX.Sent",
            "Deleted Items": "INBOX.Trash",
            "Café": "INBOX.Café",
            "a.b": "INBOX.a_b",
        },
    ),
    Case(
        "prefixed-to-prefixed",
        PREFIXED,
        PREFIXED,
        {
            "INBOX": 3,
            "INBOX.Archive": 1,
            "INBOX.Archive.2020": 2,
            "INBOX.Sent Items": 2,
            "INBOX.Deleted Items": 1,
            "INBOX.Café": 2,
        },
        ("INBOX.Sent", "INBOX.Trash"),
        {
            "INBOX": "INBOX",
            "INBOX.Archive": "INBOX.Archive",
            "INBOX.Archive.2020": "INBOX.Archive.2020",
            "INBOX.Sent Items": "INBOX.Sent",
            "INBOX.Deleted Items": "INBOX.Trash",
            "INBOX.Café": "INBOX.Café",
        },
    ),
]


# --------------------------------------------------------------------------- helpers


def account_on(request: pytest.FixtureRequest, accounts: AccountFactory, server_fixture: str) -> Account:
    server: Dovecot = request.getfixturevalue(server_fixture)
    [account] = accounts(1, server=server)
    return account


def seed(account: Account, folders: dict[str, int]) -> None:
    """Create *folders* (names as the server spells them, parents first) and fill them.

    Every message is unique across the account; flags and the 8-bit body vary so that a
    copy that loses flags or rewrites bytes shows.
    """
    client = account.client()
    try:
        n = 0
        for folder, count in folders.items():
            if folder != "INBOX":
                client.create_folder(folder)
            for _ in range(count):
                n += 1
                flags = [(), ("\\Seen",), ("\\Flagged", "$Label1")][n % 3]
                body = "Übergröße, 8-bit body: ça marche.\r\n" if "é" in folder else ""
                m = message(folder, n, message_id=f"<ns{n}@example.org>", flags=flags, body=body)
                client.append(folder, m.body, m.flags, m.internaldate)
    finally:
        client.logout()


def create_folders(account: Account, names: tuple[str, ...]) -> None:
    client = account.client()
    try:
        for name in names:
            client.create_folder(name)
    finally:
        client.logout()


def folder_names(account: Account) -> set[str]:
    """Every folder the server lists for *account*, as it spells them."""
    client = account.client()
    try:
        return {name for _flags, _delimiter, name in client.list_folders()}
    finally:
        client.logout()


def assert_copied_exactly(src: Account, dst: Account, pairs: dict[str, str]) -> None:
    """Each source folder's messages are in its destination folder: bytes, flags, internal dates."""
    report = compare(src.client, dst.client, mapping=pairs)
    assert report.ok, report.describe()
    assert not report.extra_folders, report.describe()
    assert {f.src_folder: f.dst_folder for f in report.folders} == pairs


def namespace_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if "namespace" in line.lower()]


def assert_namespaces_printed(output: str, case: Case) -> None:
    """Loosely: the output has namespace lines, showing "INBOX." for a prefixed side and
    the "/" delimiter for a plain one."""
    lines = namespace_lines(output)
    assert lines, output
    for server in {case.src_server, case.dst_server}:
        shown = NAMESPACES[server]["prefix"] or NAMESPACES[server]["delimiter"]
        assert any(shown in line for line in lines), (server, lines)


# --------------------------------------------------------------------------- sync without a map


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_sync_maps_folders_across_namespaces_without_a_map(
    case: Case, request: pytest.FixtureRequest, accounts: AccountFactory, config_for: ConfigFor
) -> None:
    src = account_on(request, accounts, case.src_server)
    dst = account_on(request, accounts, case.dst_server)
    seed(src, case.src_folders)
    create_folders(dst, case.dst_existing)
    config = config_for(src, dst)

    first = run_cli("sync", "-c", config, "-y", "-V")
    assert first.returncode == 0, first.stdout + first.stderr
    assert folder_names(dst) == set(case.pairs.values())
    assert_copied_exactly(src, dst, case.pairs)

    again = run_cli("sync", "-c", config, "-y")
    assert again.returncode == 0, again.stdout + again.stderr
    assert summary_line(again.stdout).split(", ")[1] == "0 copied"
    assert folder_names(dst) == set(case.pairs.values())

    checked = run_cli("check", "-c", config)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # -V told which namespace each side has.
    assert_namespaces_printed(first.stdout + first.stderr, case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_show_prints_both_namespaces(
    case: Case, request: pytest.FixtureRequest, accounts: AccountFactory, config_for: ConfigFor
) -> None:
    src = account_on(request, accounts, case.src_server)
    dst = account_on(request, accounts, case.dst_server)
    seed(src, {"INBOX": 1})
    config = config_for(src, dst)

    human = run_cli("show", "-c", config)
    assert human.returncode == 0, human.stderr
    assert_namespaces_printed(human.stdout, case)

    result = run_cli("show", "-c", config, "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["src"]["namespace"] == {**NAMESPACES[case.src_server], "announced": True}
    assert doc["dst"]["namespace"] == {**NAMESPACES[case.dst_server], "announced": True}


# --------------------------------------------------------------------------- map and -s/-d, either form

SUBTREE_SOURCE = {
    PREFIXED: {"INBOX": 1, "INBOX.Archive": 1, "INBOX.Archive.2020": 2, "INBOX.Other": 1},
    PLAIN: {"INBOX": 1, "Archive": 1, "Archive/2020": 2, "Other": 1},
}

FROM_PREFIXED = {"INBOX.Archive": "Archive", "INBOX.Archive.2020": "Archive/2020"}
FROM_PREFIXED_TO_OLD = {"INBOX.Archive": "Old", "INBOX.Archive.2020": "Old/2020"}
TO_PREFIXED = {"Archive": "INBOX.Archive", "Archive/2020": "INBOX.Archive.2020"}
TO_PREFIXED_OLD = {"Archive": "INBOX.Old", "Archive/2020": "INBOX.Old.2020"}

# (source server, destination server, command line, map rule or None, expected pairs):
# the folder names on either side may be written with or without the namespace prefix.
SUBTREE_CASES = [
    (PREFIXED, PLAIN, ["-s", "Archive"], None, FROM_PREFIXED),
    (PREFIXED, PLAIN, ["-s", "INBOX.Archive"], None, FROM_PREFIXED),
    (PREFIXED, PLAIN, ["-s", "Archive", "-d", "Old"], None, FROM_PREFIXED_TO_OLD),
    (PREFIXED, PLAIN, ["-s", "INBOX.Archive", "-d", "Old"], None, FROM_PREFIXED_TO_OLD),
    (PREFIXED, PLAIN, [], {"src": "Archive", "dst": "Old"}, FROM_PREFIXED_TO_OLD),
    (PREFIXED, PLAIN, [], {"src": "INBOX.Archive", "dst": "Old"}, FROM_PREFIXED_TO_OLD),
    (PLAIN, PREFIXED, ["-s", "Archive"], None, TO_PREFIXED),
    (PLAIN, PREFIXED, ["-s", "Archive", "-d", "Old"], None, TO_PREFIXED_OLD),
    (PLAIN, PREFIXED, ["-s", "Archive", "-d", "INBOX.Old"], None, TO_PREFIXED_OLD),
    (PLAIN, PREFIXED, [], {"src": "Archive", "dst": "Old"}, TO_PREFIXED_OLD),
    (PLAIN, PREFIXED, [], {"src": "Archive", "dst": "INBOX.Old"}, TO_PREFIXED_OLD),
]


def _subtree_id(case: tuple[str, str, list[str], dict[str, str] | None, dict[str, str]]) -> str:
    src, dst, args, rule, _pairs = case
    how = " ".join(args) if args else f"map {rule['src']}={rule['dst']}" if rule else ""
    kind = {PLAIN: "plain", PREFIXED: "prefixed"}
    return f"{kind[src]}-to-{kind[dst]}: {how}"


@pytest.mark.parametrize("case", SUBTREE_CASES, ids=[_subtree_id(c) for c in SUBTREE_CASES])
def test_map_and_command_line_folders_take_either_form(
    case: tuple[str, str, list[str], dict[str, str] | None, dict[str, str]],
    request: pytest.FixtureRequest,
    accounts: AccountFactory,
    config_for: ConfigFor,
) -> None:
    src_server, dst_server, args, rule, pairs = case
    src = account_on(request, accounts, src_server)
    dst = account_on(request, accounts, dst_server)
    seed(src, SUBTREE_SOURCE[src_server])
    extra: dict[str, Any] = {"map": [rule]} if rule else {}

    result = run_cli("sync", "-c", config_for(src, dst, extra=extra), "-y", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    # Exactly the Archive subtree, under the expected names; INBOX and Other stay behind.
    assert folder_names(dst) == {"INBOX", *pairs.values()}
    src_mail = snapshot(src, delimiter_to=src.server.separator)
    dst_mail = snapshot(dst, delimiter_to=dst.server.separator)
    for src_folder, dst_folder in pairs.items():
        assert dst_mail[dst_folder] == src_mail[src_folder], (src_folder, dst_folder)
    assert not dst_mail["INBOX"]


# --------------------------------------------------------------------------- a folder the destination refuses

# Dovecot refuses to create a folder whose name (below the namespace prefix) starts with
# "~", unless its mail_location says NO-FS-VALIDATION, as `dovecot_lax`'s does.
REFUSED_SOURCE = {"INBOX": 1, "Keep": 2, "Keep/sub": 1, "~tilde": 3}
REFUSED_CASES = {
    PLAIN: ("~tilde", {"INBOX": "INBOX", "Keep": "Keep", "Keep/sub": "Keep/sub"}),
    PREFIXED: ("INBOX.~tilde", {"INBOX": "INBOX", "Keep": "INBOX.Keep", "Keep/sub": "INBOX.Keep.sub"}),
}
# Dovecot's reason for refusing that CREATE; its whole reply is
# `NO [CANNOT] Invalid mailbox name: Begins with '~' (0.001 + 0.000 secs).`
REFUSED_REASON = "Invalid mailbox name: Begins with '~'"


@pytest.mark.parametrize("dst_server", [PLAIN, PREFIXED])
def test_a_folder_the_destination_refuses_is_reported_once_and_the_rest_is_copied(
    dst_server: str, request: pytest.FixtureRequest, accounts: AccountFactory, config_for: ConfigFor
) -> None:
    refused, pairs = REFUSED_CASES[dst_server]
    src = account_on(request, accounts, "dovecot_lax")
    dst = account_on(request, accounts, dst_server)
    seed(src, REFUSED_SOURCE)
    config = config_for(src, dst)

    result = run_cli("sync", "-c", config, "-y")
    assert result.returncode == 1, result.stdout + result.stderr
    # One line for the folder: its name, the server's reason, the 3 messages not copied;
    # none for each of its messages.
    about = [line for line in result.stderr.splitlines() if "~tilde" in line]
    assert len(about) == 1, result.stderr
    assert refused in about[0] and REFUSED_REASON in about[0], about[0]
    assert re.search(r"\b3\b", about[0]), about[0]
    # The other folders go on, copied exactly.
    assert folder_names(dst) == set(pairs.values())
    report = compare(src.client, dst.client, mapping={**pairs, "~tilde": refused})
    assert report.missing_folders == ["~tilde"], report.describe()
    assert all(f.ok for f in report.folders if f.src_folder != "~tilde"), report.describe()

    # The same for scripts; the run after still cannot create it and reports it again.
    rerun = run_cli("sync", "-c", config, "-y", "--json")
    assert rerun.returncode == 1, rerun.stdout + rerun.stderr
    doc = json.loads(rerun.stdout)
    assert doc["exit_code"] == 1
    [entry] = doc["folders_refused"]
    assert sorted(entry) == ["folder", "messages", "reason"]
    assert (entry["folder"], entry["messages"]) == (refused, 3)
    assert REFUSED_REASON in entry["reason"]
    assert not [f for f in doc["failed"] if "~tilde" in f["folder"]]
    assert doc["summary"]["copied"] == 0
