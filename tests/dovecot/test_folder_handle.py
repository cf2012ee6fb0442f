"""The selected-folder handle against a real Dovecot: a handle acts on its own folder or
raises, leaving a folder never expunges, and STATUS of the selected folder is fresh."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.harness.dovecot import Dovecot
from fastsync.engine import transfer
from fastsync.imap.folder import NotSelected
from fastsync.imap.session import Session
from fastsync.records.errors import FolderError
from fastsync.records.model import FolderPair, WorkUnit
from fastsync.rules import plan
from fastsync.settings.config import parse_config
from tests.dovecot.accounts import Account, AccountFactory
from tests.helpers import message


def open_session(account: Account, side: str = "src") -> Session:
    """A session on *account* as the configuration's *side* ("src" or "dst")."""
    fields = {"server": account.address, "user": account.user, "pass": account.password, "tls": "none"}
    config = parse_config({"src": fields, "dst": fields}, "test.json")
    return Session.open(config.src if side == "src" else config.dst)


def uids_of(account: Account, folder: str) -> list[int]:
    client = account.client()
    try:
        client.select_folder(folder, readonly=True)
        return sorted(client.search())
    finally:
        client.logout()


@pytest.fixture(scope="module")
def without_unselect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dovecot]:
    """A server that does not announce UNSELECT (RFC 3691) nor UIDPLUS: leaving a folder takes CLOSE."""
    server = Dovecot(tmp_path_factory.mktemp("no-unselect"), {"u1": "p1", "u2": "p2", "u3": "p3"}, starttls=False,
                     imap_capability="IMAP4rev1 NAMESPACE")
    with server:
        yield server


def test_a_handle_after_another_selection_raises(accounts: AccountFactory) -> None:
    [account] = accounts(1)
    account.seed([message("INBOX", 1), message("INBOX", 2), message("Archive", 3)])
    with open_session(account) as session:
        inbox = session.examine("INBOX")
        assert len(inbox.message_refs(plan.identity)) == 2
        archive = session.examine("Archive")
        assert not inbox.valid and archive.valid
        # Not Archive's one message: the stale handle refuses to act at all.
        with pytest.raises(NotSelected, match="'INBOX' is no longer selected"):
            inbox.message_refs(plan.identity)
        with pytest.raises(NotSelected):
            inbox.fetch_messages([1])
        assert [r.uid for r in archive.message_refs(plan.identity)] == [1]
        # A failed selection leaves no folder selected (RFC 3501 section 6.3.1).
        with pytest.raises(Exception, match="cannot open folder 'Missing'"):
            session.examine("Missing")
        assert not archive.valid
        with pytest.raises(NotSelected):
            archive.identities_since(1, plan.identity)


def test_a_handle_ends_with_its_block_with_unselect_and_with_the_connection(accounts: AccountFactory) -> None:
    [account] = accounts(1)
    account.seed([message("INBOX", 1)])
    session = open_session(account)
    with session.examine("INBOX") as box:
        assert box.total_size() > 0
    with pytest.raises(NotSelected):
        box.total_size()
    box = session.examine("INBOX")
    session.unselect()
    with pytest.raises(NotSelected):
        box.message_states(plan.identity)
    box = session.examine("INBOX")
    # A survey selects folders of its own.
    session.survey([("INBOX", 1)], plan.identity)
    with pytest.raises(NotSelected):
        box.message_refs(plan.identity)
    box = session.examine("INBOX")
    session.close()
    with pytest.raises(NotSelected):
        box.message_refs(plan.identity)


def test_an_examined_folder_cannot_be_written(accounts: AccountFactory) -> None:
    [account] = accounts(1)
    account.seed([message("INBOX", 1)])
    with open_session(account) as session:
        box = session.examine("INBOX")
        with pytest.raises(NotSelected, match="read-only"):
            box.store_flags({("\\Flagged",): [1]})
        with pytest.raises(NotSelected, match="read-only"):
            box.delete_messages([1], box.status.uidvalidity)
    client = account.client()
    try:
        client.select_folder("INBOX", readonly=True)
        flags = client.get_flags([1])[1]
        assert b"\\Flagged" not in flags and b"\\Deleted" not in flags
    finally:
        client.logout()


@pytest.mark.parametrize("unselect", [True, False], ids=["UNSELECT", "CLOSE only"])
def test_leaving_a_folder_never_expunges(
    unselect: bool, accounts: AccountFactory, without_unselect: Dovecot
) -> None:
    """A \\Deleted message someone else left stays, whichever way the folder is left: after
    EXAMINE, after SELECT by the end of its block, and by the leave before a listing."""
    account = accounts(1)[0] if unselect else Account(without_unselect, "u1", "p1")
    account.seed([message("INBOX", 1), message("INBOX", 2, flags=("\\Deleted",)), message("Other", 3)])
    with open_session(account) as session:
        assert session.capabilities.unselect is unselect
        with session.select("INBOX") as box:
            box.store_flags({("\\Flagged",): [1]}, "+FLAGS.SILENT")
        session.examine("INBOX")
        session.statuses()
        session.select("INBOX")
        # Leaving to list every folder: the read-write selection is left without CLOSE's expunge.
        assert session.statuses()["INBOX"].messages == 2
        session.select("INBOX")
        session.examine("Other")
    assert uids_of(account, "INBOX") == [1, 2]


def test_deleting_without_uidplus_expunges_every_deleted_message(without_unselect: Dovecot) -> None:
    """Without UID EXPUNGE the handle says so (`expunges_all`) and names the command it used."""
    account = Account(without_unselect, "u2", "p2")
    account.seed([message("INBOX", 1), message("INBOX", 2, flags=("\\Deleted",)), message("INBOX", 3)])
    with open_session(account) as session, session.select("INBOX") as box:
        assert box.expunges_all
        assert box.delete_messages([3], box.status.uidvalidity) == "EXPUNGE"
    assert uids_of(account, "INBOX") == [1]


def test_deleting_with_uidplus_removes_only_the_given_uids(accounts: AccountFactory) -> None:
    [account] = accounts(1)
    account.seed([message("INBOX", 1), message("INBOX", 2, flags=("\\Deleted",)), message("INBOX", 3)])
    with open_session(account) as session, session.select("INBOX") as box:
        assert not box.expunges_all
        with pytest.raises(Exception, match="UIDVALIDITY changed"):
            box.delete_messages([3], box.status.uidvalidity + 1)
        assert box.delete_messages([3], box.status.uidvalidity) == "UID EXPUNGE"
    assert uids_of(account, "INBOX") == [1, 2]


@pytest.mark.parametrize("side", ["src", "dst"])
def test_a_refusal_in_a_folder_is_a_folder_error_of_its_side(side: str, accounts: AccountFactory) -> None:
    """What a handle or its session refuses is a `FolderError` that names the account and
    the folder, and carries the session's side, whatever the text says."""
    [account] = accounts(1)
    account.seed([message("INBOX", 1)])
    with open_session(account, side) as session:
        where = session.account.where
        with pytest.raises(FolderError) as missing:
            session.examine("Missing")
        assert missing.value.side == side and missing.value.message.startswith(f"{where}: cannot open folder 'Missing'")
        with session.select("INBOX") as box:
            with pytest.raises(FolderError) as stale:
                box.delete_messages([1], box.status.uidvalidity + 1)
        assert stale.value.side == side
        assert stale.value.message == f"{where}: folder 'INBOX': nothing deleted: UIDVALIDITY changed; run again"
    assert uids_of(account, "INBOX") == [1]


def test_status_of_the_selected_folder_after_a_change_is_fresh(accounts: AccountFactory) -> None:
    [account] = accounts(1)
    account.seed([message("INBOX", 1), message("INBOX", 2)])
    with open_session(account) as session:
        box = session.examine("INBOX")
        assert box.status.messages == 2
        account.seed([message("INBOX", 3)])
        status = session.status("INBOX")
        assert status.messages == 3
        assert status.uidnext == 4
        # Asking leaves the folder: the handle does not silently read a newer view.
        with pytest.raises(NotSelected):
            box.message_refs(plan.identity)
        # STATUS of another folder leaves the selection alone.
        account.seed([message("Other", 4)])
        box = session.examine("INBOX")
        assert session.status("Other").messages == 1
        assert [r.uid for r in box.message_refs(plan.identity)] == [1, 2, 3]


def test_capabilities_are_read_after_login(accounts: AccountFactory, without_unselect: Dovecot) -> None:
    [full] = accounts(1)
    with open_session(full) as session:
        caps = session.capabilities
        assert caps.uidplus and caps.multiappend and caps.literal_plus and caps.unselect and caps.condstore
        assert "IMAP4REV1" in caps.names
    with open_session(Account(without_unselect, "u3", "p3")) as session:
        caps = session.capabilities
        assert caps.namespace and not (caps.uidplus or caps.multiappend or caps.unselect or caps.list_status)


def test_the_rewrite_check_reads_again_when_the_copies_were_not_seen_with_the_append(accounts: AccountFactory) -> None:
    """`transfer.rewrites` takes what was read in the APPEND's round trip only where the
    copies are among it: a server may run the EXAMINE before the APPEND, and an empty
    reading must not pass for a rewritten Message-Id (the folder is read again)."""
    src, dst = accounts(2)
    src.seed([message("INBOX", 1)])
    with open_session(src) as reading, open_session(dst, "dst") as writing:
        fetched = [m.with_flags(()) for m in reading.examine("INBOX").fetch_messages([1])]
        unit = WorkUnit(0, FolderPair("INBOX", "INBOX"), 1, (1,), len(fetched[0].body), dst_uidnext=1, verify=True)
        reported = writing.append("INBOX", fetched)
        assert reported is not None  # Dovecot announces UIDPLUS (RFC 4315)
        appended = [(1, reported[1][0])]
        # Read too early (nothing), then as it is (the copy), then a copy stored otherwise.
        assert transfer.rewrites(writing, unit, fetched, appended, read_soon={}) is False
        assert transfer.rewrites(writing, unit, fetched, appended, read_soon=None) is False
        assert transfer.rewrites(writing, unit, fetched, appended, read_soon={appended[0][1]: "<other@x>"}) is True
        assert transfer.rewrites(writing, unit, fetched, [], read_soon={5: "<other@x>"}) is False
