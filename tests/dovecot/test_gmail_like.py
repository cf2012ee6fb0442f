"""Gmail-like accounts (issue 13): All Mail, Starred and Important are not folders to copy.

On Gmail every message is in "[Gmail]/All Mail" (special-use \\All), labelled or not; a
label is a folder, so a message with two labels is in two folders; "[Gmail]/Starred"
(\\Flagged) and "[Gmail]/Important" (\\Important) are views of the others.  Copied as
ordinary folders they multiply every message.  fastsync, told by special-use and not by
host name:

* copies a source \\All folder last, and of its messages only those in no other synced
  source folder (the archived ones); the plan says how many it left out, "N in other
  folders", and `check` compares that pair on the archived messages only;
* skips views (\\Flagged, \\Important), saying so in the plan ("skipped ... \\Flagged");
  a `map` entry that names one brings it back;
* never appends into a destination's \\All folder (a source folder that would go there is
  skipped, its plan note names \\All).

The Gmail-like account is Dovecot's (`dovecot_gmail`, bench/harness/dovecot.py ``gmail_like``):
virtual folders over the ordinary ones and over a hidden archive (`GMAIL_ARCHIVE`).  One
difference from Gmail: a message in two labels is shown twice by All Mail.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import imapclient
import pytest

from bench.harness.corpus import Message
from bench.harness.dovecot import GMAIL_ALL, GMAIL_ARCHIVE, GMAIL_IMPORTANT, GMAIL_STARRED, Dovecot
from bench.harness.gmailproxy import GmailIdProxy
from bench.harness.tcpproxy import CountingProxy
from tests.dovecot.accounts import Account, AccountFactory, ConfigFor, Snapshot, snapshot
from tests.helpers import message, run_cli, summary_line
from tests.wire import commands, mailbox_argument

# Labelled messages: in ordinary folders.  Message 2 has two labels (the same bytes in two
# folders) and a star; message 7 has no Message-Id (fastsync's fallback identity).
LABELLED = [
    message("INBOX", 1),
    message("INBOX", 2, flags=("\\Flagged",)),
    message("Labels/Work", 2, flags=("\\Flagged",)),
    message("Labels/Work", 3, flags=("\\Seen",)),
    message("Labels/Work", 7, message_id=None),
]
# Archived messages: in no listed folder, only All Mail shows them.  Message 5 is starred
# and important, message 6 has no Message-Id.
ARCHIVED = [
    message(GMAIL_ARCHIVE, 4, flags=("\\Seen",)),
    message(GMAIL_ARCHIVE, 5, flags=("\\Flagged", "$Important")),
    message(GMAIL_ARCHIVE, 6, message_id=None),
]
LEFT_OUT = len(LABELLED)  # All Mail's messages that are in other folders


@pytest.fixture
def gmail(dovecot_gmail: Dovecot, accounts: AccountFactory) -> Account:
    """A fresh Gmail-like account holding LABELLED and ARCHIVED."""
    [account] = accounts(1, server=dovecot_gmail)
    account.seed(LABELLED + ARCHIVED)
    return account


def subjects_in(account: Account, folder: str) -> Counter[str]:
    """The Subject lines of the messages a folder shows (SELECT by name: hidden folders too)."""
    client = account.client()
    try:
        client.select_folder(folder, readonly=True)
        fetched = client.fetch(client.search(), ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
    finally:
        client.logout()
    return Counter(data[b"BODY[HEADER.FIELDS (SUBJECT)]"].decode().strip() for data in fetched.values())


def subjects(messages: list[Message]) -> Counter[str]:
    return Counter(line for m in messages for line in m.body.decode().split("\r\n") if line.startswith("Subject: "))


def visible(snap: Snapshot) -> Snapshot:
    """The folders that hold messages."""
    return {folder: messages for folder, messages in snap.items() if messages}


# --------------------------------------------------------------------------- the fixture itself


def list_special_use(client: imapclient.IMAPClient) -> dict[str, set[str]]:
    """LIST "" "*" RETURN (SPECIAL-USE) (RFC 6154): every listed name with its attributes."""
    typ, _data = client._imap._simple_command("LIST", '""', '"*"', "RETURN", "(SPECIAL-USE)")
    assert typ == "OK"
    _typ, lines = client._imap._untagged_response(typ, [None], "LIST")
    out = {}
    for line in lines:
        match = re.fullmatch(rb'\(([^)]*)\) "(?:[^"]|\\")" (.*)', line)
        assert match is not None, line
        name = match.group(2)
        if name.startswith(b'"'):
            name = re.sub(rb"\\(.)", rb"\1", name[1:-1])
        out[imapclient.imap_utf7.decode(name)] = set(match.group(1).decode().split())
    return out


def test_gmail_fixture_lists_the_views_with_their_special_use(gmail: Account) -> None:
    client = gmail.client()
    try:
        listed = list_special_use(client)
        namespace = client.namespace()
    finally:
        client.logout()
    assert listed[GMAIL_ALL] >= {"\\All"}
    assert listed[GMAIL_STARRED] >= {"\\Flagged"}
    assert listed[GMAIL_IMPORTANT] >= {"\\Important"}
    assert {"INBOX", "Labels/Work"} <= set(listed)
    assert not [name for name in listed if name.startswith(GMAIL_ARCHIVE.split("/")[0])]  # the archive is hidden
    assert namespace.personal == (("", "/"),)  # as Gmail: one personal namespace


def test_gmail_fixture_all_mail_shows_every_message_and_the_views_their_subsets(gmail: Account) -> None:
    assert subjects_in(gmail, GMAIL_ALL) == subjects(LABELLED + ARCHIVED)
    assert subjects_in(gmail, GMAIL_STARRED) == subjects([m for m in LABELLED + ARCHIVED if "\\Flagged" in m.flags])
    assert subjects_in(gmail, GMAIL_IMPORTANT) == subjects([m for m in ARCHIVED if "$Important" in m.flags])
    assert subjects_in(gmail, GMAIL_ARCHIVE) == subjects(ARCHIVED)  # reached by its full name


def test_gmail_fixture_all_mail_holds_the_same_bytes(gmail: Account) -> None:
    """A message seen through All Mail is the message of its folder: same bytes, flags and
    internal date, so identities computed on either side agree."""
    snap = snapshot(gmail)
    assert snap[GMAIL_ALL] - snap["INBOX"] - snap["Labels/Work"] == snapshot_of(ARCHIVED)
    assert sum(snap[GMAIL_ALL].values()) == len(LABELLED) + len(ARCHIVED)


def test_gmail_fixture_serves_users_added_while_running(dovecot_gmail: Dovecot) -> None:
    dovecot_gmail.add_user("late-gmail", "late-pw")
    client = dovecot_gmail.client("late-gmail")
    try:
        assert GMAIL_ALL in {name for _flags, _d, name in client.list_folders()}
        client.append("INBOX", message("INBOX", 1).body)
        client.select_folder(GMAIL_ALL, readonly=True)
        assert len(client.search()) == 1
    finally:
        client.logout()


def snapshot_of(messages: list[Message]) -> Counter[tuple[bytes, tuple[bytes, ...], str]]:
    """What `helpers.snapshot` shows for these messages in one folder."""
    return Counter(
        (m.body, tuple(sorted(f.encode() for f in m.flags)), m.internaldate.isoformat()) for m in messages
    )


# --------------------------------------------------------------------------- plan output


@dataclass(frozen=True)
class PlanRow:
    src: str
    dst: str
    messages: int
    to_copy: int
    note: str


def plan_rows(stdout: str) -> dict[str, PlanRow]:
    """The plan's rows by source folder, from the plain output (after "# Plan" and the header
    row, tab-separated: source, destination, messages, to copy, bytes, no Message-Id, note)."""
    lines = stdout.splitlines()
    assert "# Plan" in lines, stdout
    assert lines[lines.index("# Plan") + 1].split("\t")[:2] == ["source", "destination"], stdout
    rows = {}
    for line in lines[lines.index("# Plan") + 2 :]:
        fields = line.split("\t")
        if len(fields) != 7:
            break
        rows[fields[0]] = PlanRow(fields[0], fields[1], int(fields[2]), int(fields[3]), fields[6])
    return rows


def json_rows(stdout: str) -> dict[str, dict[str, Any]]:
    doc = json.loads(stdout)
    return {row["src"]: row for row in doc["folders"]}


def assert_ok(result: Any) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


# --------------------------------------------------------------------------- Gmail-like source


@pytest.mark.parametrize(("view", "role"), [(GMAIL_STARRED, "\\Flagged"), (GMAIL_IMPORTANT, "\\Important")])
def test_plan_skips_views_and_leaves_out_all_mail_messages_in_other_folders(
    gmail: Account, accounts: AccountFactory, config_for: ConfigFor, view: str, role: str
) -> None:
    [dst] = accounts(1)
    config = config_for(gmail, dst)

    plain = run_cli("sync", "-c", config, "-n")
    assert_ok(plain)
    rows = plan_rows(plain.stdout)
    assert "skipped" in rows[view].note and role in rows[view].note, rows[view]
    assert rows[view].to_copy == 0
    all_mail = rows[GMAIL_ALL]
    assert f"{LEFT_OUT} in other folders" in all_mail.note, all_mail
    assert (all_mail.messages, all_mail.to_copy) == (len(LABELLED) + len(ARCHIVED), len(ARCHIVED))
    assert rows["INBOX"].to_copy == 2 and rows["Labels/Work"].to_copy == 3

    as_json = run_cli("sync", "-c", config, "-n", "--json")
    assert_ok(as_json)
    folders = json_rows(as_json.stdout)
    assert "skipped" in folders[view]["note"] and role in folders[view]["note"]
    assert f"{LEFT_OUT} in other folders" in folders[GMAIL_ALL]["note"]
    assert folders[GMAIL_ALL]["to_copy"] == len(ARCHIVED)

    assert visible(snapshot(dst)) == {}  # a dry run writes nothing


def test_archived_mail_arrives_once_and_labelled_mail_is_not_copied_again(
    gmail: Account, accounts: AccountFactory, config_for: ConfigFor
) -> None:
    [dst] = accounts(1)
    config = config_for(gmail, dst)
    src_snapshot = snapshot(gmail)

    first = run_cli("sync", "-c", config, "-y")
    assert_ok(first)
    assert summary_line(first.stdout).split(", ")[1] == f"{len(LABELLED) + len(ARCHIVED)} copied", first.stdout
    got = snapshot(dst)
    assert visible(got) == {
        "INBOX": src_snapshot["INBOX"],
        "Labels/Work": src_snapshot["Labels/Work"],
        # The destination has no \All folder: the source's goes to the same name.
        GMAIL_ALL: snapshot_of(ARCHIVED),
    }
    assert GMAIL_STARRED not in got and GMAIL_IMPORTANT not in got

    for args in ((), ("--full",)):
        rerun = run_cli("sync", "-c", config, "-y", *args)
        assert_ok(rerun)
        assert summary_line(rerun.stdout).split(", ")[1] == "0 copied", rerun.stdout
    assert snapshot(dst) == got

    check = run_cli("check", "-c", config)
    assert_ok(check)
    assert check.stdout.rstrip().endswith("everything matches."), check.stdout


@pytest.mark.parametrize(
    ("extra", "args"),
    [({"map": [{"src": GMAIL_STARRED, "dst": "Starred"}]}, ()), (None, ("-s", GMAIL_STARRED, "-d", "Starred"))],
    ids=["map entry", "--src-folder"],
)
def test_naming_a_view_brings_it_back(
    gmail: Account, accounts: AccountFactory, config_for: ConfigFor, extra: dict[str, Any] | None, args: tuple[str, ...]
) -> None:
    """README: -s/-d name a pair as a map entry does."""
    [dst] = accounts(1)
    result = run_cli("sync", "-c", config_for(gmail, dst, extra=extra), "-y", *args)
    assert_ok(result)
    assert "skipped" not in plan_rows(result.stdout)[GMAIL_STARRED].note
    assert visible(snapshot(dst)) == {"Starred": snapshot(gmail)[GMAIL_STARRED]}
    assert sum(snapshot(dst)["Starred"].values()) == 3


# --------------------------------------------------------------------------- Gmail-like destination


def test_nothing_is_appended_into_the_destination_all_mail(
    dovecot_gmail: Dovecot, accounts: AccountFactory, config_for: ConfigFor
) -> None:
    """A plain source: its folders arrive, the destination's All Mail shows them, and the
    source folder that bears All Mail's name is skipped: an APPEND to Gmail's All Mail
    would make another, unlabelled copy of each message."""
    [src] = accounts(1)
    [dst] = accounts(1, server=dovecot_gmail)
    client = src.client()
    try:
        # An ordinary folder on the source; created alone, so that "[Gmail]" is only its
        # \Noselect parent, as on Gmail (the seeder would make it a folder of its own, which
        # fastsync would then create on the destination, inside the [Gmail] namespace).
        client.create_folder(GMAIL_ALL)
    finally:
        client.logout()
    src.seed([message("INBOX", 1), message("INBOX", 2), message("Work", 3), message(GMAIL_ALL, 1), message(GMAIL_ALL, 4)])
    with CountingProxy(dst.server.port, record=True) as proxy:
        config = config_for(src, dst, extra={"dst": {"server": f"127.0.0.1:{proxy.port}"}})

        plan = run_cli("sync", "-c", config, "-n")
        assert_ok(plan)
        assert "\\All" in plan_rows(plan.stdout)[GMAIL_ALL].note

        result = run_cli("sync", "-c", config, "-y")
        assert_ok(result)
        rerun = run_cli("sync", "-c", config, "-y", "--full")
        assert_ok(rerun)
        assert summary_line(rerun.stdout).split(", ")[1] == "0 copied", rerun.stdout
        check = run_cli("check", "-c", config)
        assert_ok(check)

    appended_to = [
        mailbox_argument(command)
        for recording in proxy.recordings
        for command in commands(bytes(recording.client_bytes))
        if command.name == "APPEND"
    ]
    assert appended_to and set(appended_to) <= {"INBOX", "Work"}, appended_to
    src_snapshot, got = snapshot(src), snapshot(dst)
    assert (got["INBOX"], got["Work"]) == (src_snapshot["INBOX"], src_snapshot["Work"])
    assert got[GMAIL_ALL] == got["INBOX"] + got["Work"]  # All Mail shows the folders' messages...
    assert subjects_in(dst, GMAIL_ARCHIVE) == Counter()  # ...and nothing was archived through it


# --------------------------------------------------------------------------- one Message-Id, two messages

SENT_COPY = message("Sent", 40, message_id="<dup@example.org>")
# The copy received of the same message: the same Message-Id, Received lines added by the
# servers it crossed.  Archived: only All Mail shows it.
RECEIVED_COPY = Message(
    GMAIL_ARCHIVE,
    b"Received: from mx.example.org by mail.example.net; Mon, 1 Jan 2018 10:00:41 +0000\r\n"
    b"Delivered-To: me@example.net\r\n" + SENT_COPY.body,
    (), SENT_COPY.internaldate,
)
TWINS = [message("INBOX", 41), SENT_COPY, RECEIVED_COPY, *ARCHIVED]


@pytest.mark.parametrize("gmail_ids", [False, True], ids=["no X-GM-EXT-1", "X-GM-EXT-1"])
def test_all_mail_tells_a_received_copy_from_the_sent_one(
    dovecot_gmail: Dovecot, accounts: AccountFactory, config_for: ConfigFor, gmail_ids: bool
) -> None:
    """A message sent and received (one Message-Id, two messages) is two messages: the
    archived received copy arrives in All Mail, and `check` compares All Mail as sync
    copied it.  With X-GM-EXT-1 (Gmail's message ids, which the proxy plays from Dovecot's
    GUIDs) as without, where the sizes tell the two apart."""
    [src] = accounts(1, server=dovecot_gmail)
    [dst] = accounts(1)
    src.seed(TWINS)
    with contextlib.ExitStack() as stack:
        extra = None
        if gmail_ids:
            proxy = stack.enter_context(GmailIdProxy(dovecot_gmail.port, record=True))
            extra = {"src": {"server": f"127.0.0.1:{proxy.port}"}}
        config = config_for(src, dst, extra=extra)
        first = run_cli("sync", "-c", config, "-y")
        assert_ok(first)
        assert summary_line(first.stdout).split(", ")[1] == f"{len(TWINS)} copied", first.stdout
        src_snapshot = snapshot(src)
        got = snapshot(dst)
        assert visible(got) == {
            "INBOX": src_snapshot["INBOX"],
            "Sent": src_snapshot["Sent"],
            GMAIL_ALL: snapshot_of([RECEIVED_COPY, *ARCHIVED]),
        }
        for args in ((), ("--full",)):
            rerun = run_cli("sync", "-c", config, "-y", *args)
            assert_ok(rerun)
            assert summary_line(rerun.stdout).split(", ")[1] == "0 copied", rerun.stdout
        assert snapshot(dst) == got
        check = run_cli("check", "-c", config)
        assert_ok(check)
        assert check.stdout.rstrip().endswith("everything matches."), check.stdout
        if gmail_ids:
            # fastsync asked for Gmail's ids, in the survey and in check.
            sent = b"".join(bytes(r.client_bytes) for r in proxy.recordings)
            assert sent.count(b"X-GUID") >= 2, "the survey and check asked for no X-GM-MSGID"
