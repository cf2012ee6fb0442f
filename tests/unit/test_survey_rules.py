"""Unit tests of one folder pair's diff (pure: scans as plain records, no server)."""

from __future__ import annotations

from fastsync.records.model import FolderPair, FolderScan, FolderStatus, MessageRef
from fastsync.engine.planner import diff_pair
from fastsync.rules.plan import across_folders

ALL_MAIL = FolderPair("[Gmail]/All Mail", "[Gmail]/All Mail", src_role="\\All")


def scan(*refs: MessageRef) -> FolderScan:
    return FolderScan(FolderStatus(len(refs), -1, 1, 100), list(refs))


def test_all_mail_copies_only_what_no_other_folder_has() -> None:
    src = scan(MessageRef(1, 10, "<label@x>"), MessageRef(2, 10, "<archived@x>"))
    plan = diff_pair(ALL_MAIL, src, None, elsewhere={across_folders(MessageRef(7, 10, "<label@x>"))})
    assert [r.uid for r in plan.todo] == [2]
    assert "1 in other folders" in plan.note


def test_without_gmail_ids_a_message_id_alone_does_not_make_two_messages_one() -> None:
    # The received copy (archived, only in All Mail) and the sent copy (in Sent) share a
    # Message-Id; the sizes differ, and the received copy is copied.
    sent = MessageRef(4, 900, "<same@x>")
    src = scan(MessageRef(1, 900, "<same@x>"), MessageRef(2, 1400, "<same@x>"))
    plan = diff_pair(ALL_MAIL, src, None, elsewhere={across_folders(sent)})
    assert [r.uid for r in plan.todo] == [2]
    assert "1 in other folders" in plan.note


def test_gmail_ids_decide_where_the_server_gives_them() -> None:
    # Two different messages with one Message-Id: the ids tell the archived one apart.
    src = scan(MessageRef(1, 10, "<same@x>", True, 111), MessageRef(2, 10, "<same@x>", True, 222))
    plan = diff_pair(ALL_MAIL, src, None, elsewhere={"gm:111"})
    assert [r.uid for r in plan.todo] == [2]
    # Without a Message-Id, an id still recognises the labelled copy.
    src = scan(MessageRef(1, 10, "~abc", False, 333))
    assert diff_pair(ALL_MAIL, src, None, elsewhere={"gm:333"}).todo == []
