"""Minimal servers, the parts that need no server: the checker that reads what a client sent
and what the server announced (`tests.wire`), the proxy's INTERNALDATE rewriting across
chunks, and what fastsync does with an EXAMINE that sends no UIDNEXT or UIDVALIDITY (some
servers send them only to STATUS; Dovecot cannot be made to imitate them).

tests/dovecot/test_minimal_server.py copies between Dovecots that announce only
"IMAP4rev1 NAMESPACE" and checks every command with that checker.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from bench.harness.tcpproxy import Recording, _replace
from fastsync.imap.records import selected_status
from fastsync.records.model import FolderPair, FolderScan, FolderStatus, MessageRef
from fastsync.engine.planner import diff_pair
from tests.wire import announcements, commands, violations


# --------------------------------------------------------------------------- the parser, on its own


def _stream(*parts: bytes) -> Recording:
    greeting = b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n+ \r\n"
    login_reply = b"a1 OK [CAPABILITY IMAP4rev1 NAMESPACE] Logged in\r\n"
    return Recording(bytearray(b"a1 AUTHENTICATE PLAIN\r\nAGEAYQ==\r\n" + b"".join(parts)), bytearray(greeting + login_reply))


def test_literal_payloads_are_skipped() -> None:
    body = b"Subject: x\r\n\r\nb1 UNSELECT\r\nb2 APPEND INBOX {3+}\r\nabc\r\nb3 ENABLE X\r\n"
    recording = _stream(b'a2 APPEND "INBOX" (\\Seen) "05-Jul-2021 23:45:00 +0530" {%d}\r\n' % len(body), body, b"\r\n",
                        b"a3 LOGOUT\r\n")
    assert [c.name for c in commands(bytes(recording.client_bytes))] == ["AUTHENTICATE", "APPEND", "LOGOUT"]
    assert violations(recording) == []


@pytest.mark.parametrize(
    ("command", "need"),
    [
        (b"a2 UNSELECT\r\n", "UNSELECT"),
        (b"a2 ENABLE CONDSTORE\r\n", "ENABLE"),
        (b'a2 ID ("name" "x")\r\n', "ID"),
        (b"a2 IDLE\r\nDONE\r\n", "IDLE"),
        (b"a2 UID SEARCH RETURN (ALL) ALL\r\n", "ESEARCH"),
        (b'a2 LIST "" "*" RETURN (SPECIAL-USE STATUS (MESSAGES))\r\n', "LIST-STATUS"),
        (b'a2 LIST (SUBSCRIBED) "" "*"\r\n', "LIST-EXTENDED"),
        (b'a2 STATUS "INBOX" (MESSAGES SIZE)\r\n', "STATUS=SIZE"),
        (b'a2 STATUS "INBOX" (HIGHESTMODSEQ)\r\n', "CONDSTORE"),
        (b"a2 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 5)\r\n", "CONDSTORE"),
        (b'a2 EXAMINE "INBOX" (CONDSTORE)\r\n', "CONDSTORE"),
        (b"a2 UID EXPUNGE 4\r\n", "UIDPLUS"),
        (b'a2 UID MOVE 4 "Trash"\r\n', "MOVE"),
        (b"a2 COMPRESS DEFLATE\r\n", "COMPRESS=DEFLATE"),
        (b'a2 GETQUOTAROOT "INBOX"\r\n', "QUOTA"),
        (b"a2 UID FETCH 1 (X-GM-LABELS)\r\n", "X-GM-EXT-1"),
        (b'a2 APPEND "INBOX" {1+}\r\nx\r\n', "LITERAL+|LITERAL-"),
        (b'a2 APPEND "INBOX" {1}\r\nx {1}\r\ny\r\n', "MULTIAPPEND"),
        (b'a2 APPEND "INBOX" {1-}\r\nx\r\n', "literal {N-} (no such syntax)"),
    ],
)
def test_unannounced_commands_are_found(command: bytes, need: str) -> None:
    found = violations(_stream(command))
    assert any(f"needs {need};" in v for v in found), found


def test_announcements_before_and_after_login() -> None:
    dovecot = (
        b"* OK [CAPABILITY IMAP4rev1 NAMESPACE AUTH=PLAIN] ready\r\n* CAPABILITY IMAP4rev1 NAMESPACE AUTH=PLAIN\r\n"
        b"a0 OK Pre-login capabilities listed\r\n+ \r\n* CAPABILITY IMAP4rev1 NAMESPACE\r\na1 OK Logged in\r\n"
    )
    in_reply = b"* OK ready\r\na0 OK [CAPABILITY IMAP4rev1 LOGINDISABLED] done\r\na1 OK [CAPABILITY IMAP4rev1 X] in\r\n"
    first_only = b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n+ \r\na1 OK in\r\n"
    assert announcements(dovecot, "a0") == (
        frozenset({"IMAP4REV1", "NAMESPACE", "AUTH=PLAIN"}), frozenset({"IMAP4REV1", "NAMESPACE"})
    )
    assert announcements(in_reply, "a0") == (frozenset({"IMAP4REV1", "LOGINDISABLED"}), frozenset({"IMAP4REV1", "X"}))
    assert announcements(first_only, None) == (frozenset({"IMAP4REV1", "AUTH=PLAIN"}), None)


def test_login_must_use_a_mechanism_announced_before_login() -> None:
    recording = Recording(
        bytearray(b"a1 AUTHENTICATE CRAM-MD5\r\nabc\r\n"), bytearray(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n")
    )
    assert [v.split(" needs ")[1].split(";")[0] for v in violations(recording)] == ["AUTH=CRAM-MD5"]
    refused = Recording(bytearray(b"a1 LOGIN u p\r\n"), bytearray(b"* OK [CAPABILITY IMAP4rev1 LOGINDISABLED] ready\r\n"))
    assert len(violations(refused)) == 1


def test_replacement_across_chunks_is_held_back_until_complete() -> None:
    old, new = b'INTERNALDATE "0', b'INTERNALDATE " '
    sent, held = _replace(b'* 1 FETCH (INTERNALDATE "0', old, new)
    assert (sent, held) == (b'* 1 FETCH (INTERNALDATE " ', b"")
    sent, held = _replace(b"* 1 FETCH (INTERNAL", old, new)
    assert (sent, held) == (b"* 1 FETCH (", b"INTERNAL")
    sent, held = _replace(held + b'DATE "05-Jul', old, new)
    assert (sent, held) == (b'INTERNALDATE " 5-Jul', b"")


# --------------------------------------------------------------------------- UIDNEXT / UIDVALIDITY only on request


def test_examine_without_uidnext_or_uidvalidity_reads_as_zero() -> None:
    status = selected_status({"EXISTS": [b"3"], "FLAGS": [b"()"], "OK": [b"[PERMANENTFLAGS ()] Limited"]})
    assert (status.messages, status.uidvalidity, status.uidnext) == (3, 0, 0)


def _scan(uidnext: int, uids: Sequence[int]) -> FolderScan:
    refs = [MessageRef(uid, 10, f"id{uid}") for uid in uids]
    return FolderScan(FolderStatus(len(refs), -1, 0, uidnext), refs)


@pytest.mark.parametrize(
    ("dst_uidnext", "dst_uids", "expected"),
    [(0, [3, 9, 4], 10), (0, [], 1), (42, [3, 9], 42)],
    ids=["unknown: one past the highest UID seen", "unknown and empty: 1", "known: kept"],
)
def test_plan_marks_where_copies_begin_without_uidnext(dst_uidnext: int, dst_uids: list[int], expected: int) -> None:
    """Without UIDNEXT in EXAMINE, a retried unit must still tell its own copies from the
    messages that were there before (`transfer.Copier._already_there`)."""
    folder_plan = diff_pair(FolderPair("INBOX", "INBOX"), _scan(0, [1, 2]), _scan(dst_uidnext, dst_uids))
    assert folder_plan.dst_uidnext == expected
    assert folder_plan.uidvalidity == 0  # the worker compares it with its own EXAMINE's: 0 == 0
