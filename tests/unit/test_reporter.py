"""What the reporter writes: the --json documents of sync, check and show, and the plain text output."""

from __future__ import annotations

import dataclasses
import io
import json
from typing import Any

import orjson
import pytest

from fastsync.records.model import Failure, Folder, FolderPair, FolderStatus, Namespace, Skipped
from fastsync.terminal import fitted
from fastsync.progress import Reporter, check_document, show_document, sync_document
from fastsync.records.results import AccountInfo, CheckSummary, Difference, FolderCheck, FolderInfo, FolderRow, Listing, RefusedFolder, Summary

ROWS = [
    FolderRow("INBOX", "INBOX", messages=5, size_bytes=2500, to_copy=3, to_copy_bytes=1500, without_id=1),
    FolderRow("Sent Items", "Sent", messages=2, size_bytes=900, note="special-use \\Sent"),
]
FAILURE = Failure("INBOX", 4, 40_000, "[LIMIT] Message too large", "<m4@example.org>")
SKIPPED = Skipped("Archive", 12, 30_000_000, "larger than --max-size (25000000 bytes)")


def summary(**changes: Any) -> Summary:
    base: dict[str, Any] = dict(
        folders=2, planned=3, planned_bytes=1500, copied=10, copied_bytes=5_000_000, present=4, vanished=1,
        elapsed_s=2.5, copy_s=2.0, rows=ROWS,
    )
    return Summary(**{**base, **changes})


def reporter(**kwargs: Any) -> tuple[Reporter, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    return Reporter(out=out, err=err, interactive=False, **kwargs), out, err


def check_summary(*, differ: bool, bodies: bool = False) -> CheckSummary:
    differences = [
        Difference("missing", "<a@example.org>", 3, None),
        Difference("extra", "<z@example.org>", None, 8),
        Difference("flags", "<b@example.org>", 1, 5, "\\Seen", ""),
    ]
    return CheckSummary(
        folders=[
            FolderCheck(FolderPair("INBOX", "INBOX"), 3, 3, differences if differ else []),
            FolderCheck(FolderPair("Work", "Archive/Work", "map"), 2, 2),
        ],
        bodies=bodies,
        elapsed_s=0.5234,
    )


# ----------------------------------------------------------------------------- sync --json


def test_sync_document() -> None:
    s = summary(failed=[FAILURE], errors=["folder 'Junk': cannot be selected"], flags_planned=2, flags_updated=1)
    assert sync_document(s) == {
        "command": "sync",
        "dry_run": False,
        "declined": False,
        "folders": [
            {"src": "INBOX", "dst": "INBOX", "messages": 5, "to_copy": 3, "to_copy_bytes": 1500,
             "without_message_id": 1, "note": "", "skipped": 0, "outside_dates": 0},
            {"src": "Sent Items", "dst": "Sent", "messages": 2, "to_copy": 0, "to_copy_bytes": 0,
             "without_message_id": 0, "note": "special-use \\Sent", "skipped": 0, "outside_dates": 0},
        ],
        "summary": {
            "folders": 2, "planned": 3, "planned_bytes": 1500, "copied": 10, "present": 4, "failed": 1,
            "skipped": 0, "copied_bytes": 5_000_000,
            "wire_bytes": {"down": 0, "up": 0, "imap_down": 0, "imap_up": 0}, "vanished": 1, "flags_planned": 2, "flags_updated": 1,
            "delete_planned": 0, "deleted": 0, "stopped_at_transfer_limit": False, "connection_ceilings": {},
            "throttled": [], "elapsed_s": 2.5, "copy_s": 2.0, "prompt_s": 0.0, "messages_per_s": 5.0, "mb_per_s": 2.5,
        },
        "failed": [
            {"folder": "INBOX", "uid": 4, "size_bytes": 40_000, "reason": "[LIMIT] Message too large",
             "message_id": "<m4@example.org>", "subject": "", "date": ""},
        ],
        "accepted": [],
        "skipped": [],
        "folders_refused": [],
        "budgets": [],
        "parked": [],
        "resume_at": None,
        "budget_uses": {},
        "errors": ["folder 'Junk': cannot be selected"],
        "complete": False,
    }


def test_a_refused_folder_is_one_error_line_and_one_document_entry() -> None:
    report, out, err = reporter()
    s = summary(folders_refused=[RefusedFolder("~old", "[CANNOT] Invalid mailbox name", 12)])
    report.summary(s)
    assert err.getvalue() == (
        "error: folder '~old' could not be created on the destination: [CANNOT] Invalid mailbox name; "
        "12 messages not copied\n"
    )
    assert s.complete is False
    assert sync_document(s)["folders_refused"] == [
        {"folder": "~old", "reason": "[CANNOT] Invalid mailbox name", "messages": 12}
    ]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, {"complete": True, "dry_run": False, "declined": False, "messages_per_s": 5.0, "mb_per_s": 2.5}),
        ({"dry_run": True, "copied": 0, "copied_bytes": 0, "copy_s": 0.0},
         {"complete": True, "dry_run": True, "declined": False, "messages_per_s": 0.0, "mb_per_s": 0.0}),
        ({"declined": True, "copied": 0, "copied_bytes": 0, "copy_s": 0.0},
         {"complete": True, "dry_run": False, "declined": True, "messages_per_s": 0.0, "mb_per_s": 0.0}),
        ({"failed": [FAILURE]}, {"complete": False, "dry_run": False, "declined": False, "messages_per_s": 5.0,
                                 "mb_per_s": 2.5}),
        ({"errors": ["lost"]}, {"complete": False, "dry_run": False, "declined": False, "messages_per_s": 5.0,
                                "mb_per_s": 2.5}),
        ({"copied": 1, "copied_bytes": 1234567, "copy_s": 3.0, "elapsed_s": 3.14159},
         {"complete": True, "dry_run": False, "declined": False, "messages_per_s": 0.3, "mb_per_s": 0.412}),
    ],
    ids=["complete", "dry run", "declined", "a message failed", "an error", "rounded"],
)
def test_sync_document_flags_and_rates(changes: dict[str, Any], expected: dict[str, Any]) -> None:
    doc = sync_document(summary(**changes, rows=[]))
    got = {"complete": doc["complete"], "dry_run": doc["dry_run"], "declined": doc["declined"],
           "messages_per_s": doc["summary"]["messages_per_s"], "mb_per_s": doc["summary"]["mb_per_s"]}
    assert got == expected
    assert doc["folders"] == []


# ----------------------------------------------------------------------------- check --json


def test_check_document_with_differences() -> None:
    assert check_document(check_summary(differ=True)) == {
        "command": "check",
        "bodies": False,
        "folders": [
            {
                "src": "INBOX", "dst": "INBOX", "src_messages": 3, "dst_messages": 3,
                "counts": {"missing": 1, "extra": 1, "flags": 1, "date": 0},
                "differences": [
                    {"kind": "missing", "identity": "<a@example.org>", "src_uid": 3, "dst_uid": None, "src": "", "dst": ""},
                    {"kind": "extra", "identity": "<z@example.org>", "src_uid": None, "dst_uid": 8, "src": "", "dst": ""},
                    {"kind": "flags", "identity": "<b@example.org>", "src_uid": 1, "dst_uid": 5, "src": "\\Seen",
                     "dst": ""},
                ],
                "unkept_flags": [],
                "error": "",
                "matches": False,
            },
            {
                "src": "Work", "dst": "Archive/Work", "src_messages": 2, "dst_messages": 2,
                "counts": {"missing": 0, "extra": 0, "flags": 0, "date": 0},
                "differences": [], "unkept_flags": [], "error": "", "matches": True,
            },
        ],
        "summary": {"folders": 2, "missing": 1, "extra": 1, "flags": 1, "date": 0, "errors": 0, "elapsed_s": 0.523},
        "errors": [],
        "matches": False,
    }


def test_check_document_bodies_and_errors() -> None:
    s = CheckSummary(
        folders=[
            FolderCheck(FolderPair("INBOX", "INBOX"), 1, 1, [Difference("body", "<a@example.org>", 1, 1, "ab12", "cd34")]),
            FolderCheck(FolderPair("Junk", "Spam"), error="folder 'Spam' cannot be selected"),
        ],
        bodies=True,
        elapsed_s=1.0,
    )
    doc = check_document(s)
    assert doc["bodies"] is True
    assert [f["counts"] for f in doc["folders"]] == [
        {"missing": 0, "extra": 0, "flags": 0, "date": 0, "body": 1},
        {"missing": 0, "extra": 0, "flags": 0, "date": 0, "body": 0},
    ]
    assert [(f["error"], f["matches"]) for f in doc["folders"]] == [("", False), ("folder 'Spam' cannot be selected", False)]
    assert doc["summary"] == {"folders": 2, "missing": 0, "extra": 0, "flags": 0, "date": 0, "body": 1, "errors": 1,
                              "elapsed_s": 1.0}
    assert doc["errors"] == ["folder 'Spam' cannot be selected"]
    assert doc["matches"] is False
    assert check_document(check_summary(differ=False))["matches"] is True


# ----------------------------------------------------------------------------- show --json


def side(name: str, label: str, server: str, user: str) -> tuple[str, str, str, str]:
    return name, label, server, user


def test_show_document() -> None:
    src = AccountInfo(
        *side("src", "source", "imap.example.org:993", "alice"),
        ("IMAP4rev1", "SPECIAL-USE"),
        (
            FolderInfo(Folder("INBOX", "/", ("\\HasNoChildren",)), FolderStatus(3, 3000, 17, 4, 9)),
            FolderInfo(Folder("Sent Items", "/", ("\\Sent",)), FolderStatus(1, 500, 18, 2)),
            FolderInfo(Folder("Archive", "/", ("\\Noselect", "\\HasChildren")), None),
            FolderInfo(Folder("Broken", "/"), None, "STATUS failed"),
        ),
    )
    dst = AccountInfo(*side("dst", "destination", "mail.example.net:993", "alice.smith"), (), (),
                      Namespace("INBOX.", ".", announced=False))
    pairs = (FolderPair("INBOX", "INBOX"), FolderPair("Sent Items", "Sent", "special-use \\Sent"))
    excluded = (FolderPair("Broken", "Broken", "excluded by --exclude 'Bro'"),)
    doc = show_document(Listing(src, dst, pairs, excluded=excluded))
    assert doc == {
        "command": "show",
        "src": {
            "label": "source",
            "server": "imap.example.org:993",
            "user": "alice",
            "capabilities": ["IMAP4rev1", "SPECIAL-USE"],
            "namespace": {"prefix": "", "delimiter": "/", "announced": True},
            "folders": [
                {"name": "INBOX", "delimiter": "/", "attributes": ["\\HasNoChildren"], "special_use": "",
                 "selectable": True, "messages": 3, "size_bytes": 3000, "uidvalidity": 17, "uidnext": 4, "error": "",
                 "excluded": ""},
                {"name": "Sent Items", "delimiter": "/", "attributes": ["\\Sent"], "special_use": "\\Sent",
                 "selectable": True, "messages": 1, "size_bytes": 500, "uidvalidity": 18, "uidnext": 2, "error": "",
                 "excluded": ""},
                {"name": "Archive", "delimiter": "/", "attributes": ["\\Noselect", "\\HasChildren"], "special_use": "",
                 "selectable": False, "messages": None, "size_bytes": None, "uidvalidity": None, "uidnext": None,
                 "error": "", "excluded": ""},
                {"name": "Broken", "delimiter": "/", "attributes": [], "special_use": "", "selectable": True,
                 "messages": None, "size_bytes": None, "uidvalidity": None, "uidnext": None, "error": "STATUS failed",
                 "excluded": "excluded by --exclude 'Bro'"},
            ],
            "messages": 4,
            "size_bytes": 3500,
        },
        "dst": {
            "label": "destination", "server": "mail.example.net:993", "user": "alice.smith",
            "capabilities": [], "namespace": {"prefix": "INBOX.", "delimiter": ".", "announced": False},
            "folders": [], "messages": 0, "size_bytes": 0,
        },
        "mapping": [
            {"src": "INBOX", "dst": "INBOX", "reason": "same name"},
            {"src": "Sent Items", "dst": "Sent", "reason": "special-use \\Sent"},
        ],
        "left_out": [],
        "excluded": [{"src": "Broken", "reason": "excluded by --exclude 'Bro'"}],
    }
    assert "pw-not-shown" not in json.dumps(doc)


# ----------------------------------------------------------------------------- text output


@pytest.mark.parametrize(
    ("changes", "line"),
    [
        ({}, "2 folders, 10 copied, 4 already present, 0 failed, 5.0 MB, 2.5 s, 5 messages/s, 2.5 MB/s"),
        ({"failed": [FAILURE]}, "2 folders, 10 copied, 4 already present, 1 failed, 5.0 MB, 2.5 s, 5 messages/s, 2.5 MB/s"),
        ({"copied": 0, "copied_bytes": 0, "copy_s": 0.0, "present": 7},
         "2 folders, 0 copied, 7 already present, 0 failed, 0 B, 2.5 s, 0 messages/s, 0.0 MB/s"),
        ({"sync_flags": True, "flags_updated": 3},
         "2 folders, 10 copied, 4 already present, 0 failed, 5.0 MB, 2.5 s, 5 messages/s, 2.5 MB/s, 3 flags updated"),
        ({"copied": 1200, "copied_bytes": 1_234_567_890, "copy_s": 60.0, "elapsed_s": 61.25},
         "2 folders, 1200 copied, 4 already present, 0 failed, 1.2 GB, 61.2 s, 20 messages/s, 20.6 MB/s"),
        ({"size_bounds": True},
         "2 folders, 10 copied, 4 already present, 0 failed, 5.0 MB, 2.5 s, 5 messages/s, 2.5 MB/s, 0 skipped"),
        ({"skipped": [SKIPPED], "sync_flags": True},
         "2 folders, 10 copied, 4 already present, 0 failed, 5.0 MB, 2.5 s, 5 messages/s, 2.5 MB/s, 0 flags updated, "
         "1 skipped"),
        ({"sync_flags": True, "flags_updated": 3, "delete_dest": True, "deleted": 7},
         "2 folders, 10 copied, 4 already present, 0 failed, 5.0 MB, 2.5 s, 5 messages/s, 2.5 MB/s, 3 flags updated, "
         "7 deleted"),
        ({"wire": [2_000_000, 500_000, 5_100_000, 900_000]},
         "2 folders, 10 copied, 4 already present, 0 failed, 5.0 MB, 2.5 s, 5 messages/s, 2.5 MB/s, "
         "2.5 MB on the wire for 6.0 MB"),
        ({"wire": [5_100_000, 900_000, 5_100_000, 900_000]},
         "2 folders, 10 copied, 4 already present, 0 failed, 5.0 MB, 2.5 s, 5 messages/s, 2.5 MB/s"),
    ],
    ids=["copied", "one failed", "nothing to copy", "flags updated", "large run", "size bounds", "skipped", "deleted",
         "compressed", "uncompressed"],
)
def test_summary_line(changes: dict[str, Any], line: str) -> None:
    report, out, err = reporter()
    report.summary(summary(**changes))
    assert out.getvalue() == line + "\n"
    failures = changes.get("failed", [])
    assert err.getvalue() == "".join(
        "error: not copied: folder 'INBOX' UID 4 <m4@example.org> 40.0 KB: [LIMIT] Message too large\n" for _ in failures
    )


def test_skipped_messages_are_listed_with_verbose_and_counted_in_the_document() -> None:
    report, out, err = reporter(verbose=True)
    s = summary(skipped=[SKIPPED])
    report.summary(s)
    assert out.getvalue().splitlines()[0] == (
        "skipped: folder 'Archive' UID 12 30.0 MB (30000000 bytes): larger than --max-size (25000000 bytes)"
    )
    assert err.getvalue() == ""
    assert s.complete is True
    doc = sync_document(s)
    assert doc["summary"]["skipped"] == 1
    assert doc["skipped"] == [
        {"folder": "Archive", "uid": 12, "size_bytes": 30_000_000, "reason": "larger than --max-size (25000000 bytes)"}
    ]
    quiet, out, _err = reporter()
    quiet.summary(s)
    assert "skipped: folder" not in out.getvalue()


def test_show_marks_excluded_folders_in_the_mapping_table() -> None:
    report, out, _err = reporter()
    src = AccountInfo("src", "source", "a:993", "alice", (), ())
    dst = AccountInfo("dst", "destination", "b:993", "bob", (), ())
    excluded = (FolderPair("Trash", "Trash", "excluded by --exclude '^Trash$'"),)
    report.show_report(Listing(src, dst, (FolderPair("INBOX", "INBOX"),), excluded=excluded))
    assert out.getvalue().splitlines()[-2:] == [
        "map\tINBOX\tINBOX\tsame name",
        "excluded\tTrash\t-\texcluded by --exclude '^Trash$'",
    ]


def test_show_piped_has_a_header_row_per_table_and_quiet_none() -> None:
    src = AccountInfo("src", "source", "a:993", "alice", (), ())
    dst = AccountInfo("dst", "destination", "b:993", "bob", (), ())
    report, out, _err = reporter()
    report.show_report(Listing(src, dst, (FolderPair("INBOX", "INBOX"),)))
    lines = out.getvalue().splitlines()
    titles = [i for i, line in enumerate(lines) if line.startswith("# ")]
    assert [lines[i + 1] for i in titles] == [
        "side\tfolder\tmessages\tsize\tbytes\tspecial-use",
        "side\tfolder\tmessages\tsize\tbytes\tspecial-use",
        "entry\tsource\tdestination\twhy",
    ]
    quiet, out, _err = reporter(quiet=True)
    quiet.show_report(Listing(src, dst, (FolderPair("INBOX", "INBOX"),)))
    assert out.getvalue() == "map\tINBOX\tINBOX\tsame name\n"


def test_summary_lists_failures_and_errors_on_stderr_even_when_quiet() -> None:
    report, out, err = reporter(quiet=True)
    report.summary(summary(failed=[FAILURE, Failure("Work", 9, 999, "[CANNOT] refused")], errors=["folder 'Junk': gone"]))
    assert out.getvalue() == ""
    assert err.getvalue() == (
        "error: not copied: folder 'INBOX' UID 4 <m4@example.org> 40.0 KB: [LIMIT] Message too large\n"
        "error: not copied: folder 'Work' UID 9 (no Message-Id) 999 B: [CANNOT] refused\n"
        "error: folder 'Junk': gone\n"
    )


def test_plan_is_a_tab_separated_table_with_a_header_row() -> None:
    report, out, err = reporter()
    report.plan(ROWS)
    assert out.getvalue() == (
        "# Plan\n"
        "source\tdestination\tmessages\tto copy\tbytes\tno Message-Id\tnote\n"
        "INBOX\tINBOX\t5\t3\t1.5 KB\t1\t\n"
        "Sent Items\tSent\t2\t0\t0 B\t0\tspecial-use \\Sent\n"
        "3 messages (1.5 KB) to copy in 2 folders.\n"
    )
    assert err.getvalue() == ""


def test_with_delete_dest_the_plan_has_a_to_delete_column_and_the_document_a_count() -> None:
    rows = [dataclasses.replace(ROWS[0], to_delete=4), dataclasses.replace(ROWS[1], to_delete=0)]
    report, out, _err = reporter()
    report.plan(rows)
    assert out.getvalue() == (
        "# Plan\n"
        "source\tdestination\tmessages\tto copy\tbytes\tto delete\tno Message-Id\tnote\n"
        "INBOX\tINBOX\t5\t3\t1.5 KB\t4\t1\t\n"
        "Sent Items\tSent\t2\t0\t0 B\t0\t0\tspecial-use \\Sent\n"
        "3 messages (1.5 KB) to copy in 2 folders.\n"
        "4 messages on the destination are not on the source.\n"
    )
    doc = sync_document(summary(rows=rows, delete_dest=True, delete_planned=4, deleted=4))
    assert [row["to_delete"] for row in doc["folders"]] == [4, 0]
    assert (doc["summary"]["delete_planned"], doc["summary"]["deleted"]) == (4, 4)
    assert "to_delete" not in sync_document(summary())["folders"][0]


def test_quiet_plan_writes_nothing() -> None:
    report, out, err = reporter(quiet=True)
    report.plan(ROWS)
    assert (out.getvalue(), err.getvalue()) == ("", "")


@pytest.mark.parametrize(
    ("differ", "last"),
    [
        (False, "2 folders checked, 0 missing, 0 extra, 0 flags, 0 date, 0.5 s: everything matches."),
        (True, "2 folders checked, 1 missing, 1 extra, 1 flags, 0 date, 0.5 s: the accounts differ."),
    ],
    ids=["match", "differ"],
)
def test_check_report(differ: bool, last: str) -> None:
    report, out, err = reporter()
    report.check_report(check_summary(differ=differ))
    lines = out.getvalue().splitlines()
    assert lines[-1] == last
    assert lines[0] == "# Check"
    assert lines[1] == "source\tdestination\tsrc messages\tdst messages\tmissing\textra\tflags\tdate\tresult"
    assert lines[2] == "INBOX\tINBOX\t3\t3\t" + ("1\t1\t1\t0\tdiffers" if differ else "0\t0\t0\t0\tmatch")
    assert lines[3] == "Work\tArchive/Work\t2\t2\t0\t0\t0\t0\tmatch"
    assert lines[4:-1] == ([
        "missing: folder 'INBOX' UID 3 <a@example.org>",
        "extra: folder 'INBOX' destination UID 8 <z@example.org>",
        "flags: folder 'INBOX' UID 1 <b@example.org>: '\\\\Seen' on the source, '' on the destination",
    ] if differ else [])
    assert err.getvalue() == ""


def test_check_report_limits_the_differences_shown_per_folder() -> None:
    many = [Difference("missing", f"<m{n}@example.org>", n, None) for n in range(1, 26)]
    report, out, _err = reporter()
    report.check_report(CheckSummary([FolderCheck(FolderPair("INBOX", "INBOX"), 25, 0, many)]), limit=20)
    lines = out.getvalue().splitlines()
    assert [line for line in lines if line.startswith("missing: ")] == [
        f"missing: folder 'INBOX' UID {n} <m{n}@example.org>" for n in range(1, 21)
    ]
    assert lines[-2] == "... and 5 more in 'INBOX' (--json lists all)"
    assert lines[-1] == "1 folders checked, 25 missing, 0 extra, 0 flags, 0 date, 0.0 s: the accounts differ."


def test_check_report_errors_go_to_stderr() -> None:
    s = CheckSummary([FolderCheck(FolderPair("Junk", "Spam"), error="folder 'Spam' cannot be selected")])
    report, out, err = reporter()
    report.check_report(s)
    assert err.getvalue() == "error: folder 'Spam' cannot be selected\n"
    assert out.getvalue().splitlines()[2] == "Junk\tSpam\t0\t0\t0\t0\t0\t0\terror"


def test_json_mode_puts_nothing_but_the_document_on_stdout() -> None:
    report, out, err = reporter(json_output=True)
    s = summary(failed=[FAILURE])
    report.info("planning")
    report.plan(ROWS)
    report.summary(s)
    report.check_report(check_summary(differ=True))
    report.warn("src.tls is none")
    doc = {**sync_document(s), "exit_code": 1}
    report.document(doc)
    assert out.getvalue() == orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n"
    assert json.loads(out.getvalue()) == doc
    assert err.getvalue() == (
        "error: not copied: folder 'INBOX' UID 4 <m4@example.org> 40.0 KB: [LIMIT] Message too large\n"
        "warning: src.tls is none\n"
    )
    assert report.interactive is False


def test_without_json_mode_document_writes_nothing() -> None:
    report, out, err = reporter()
    report.document({"command": "sync"})
    assert (out.getvalue(), err.getvalue()) == ("", "")


# ------------------------------------------------------------ server-supplied text on the terminal

HOSTILE = [
    ("\x1b]52;c;aGVsbG8=\x07Inbox", "\\x1b]52;c;aGVsbG8=\\x07Inbox"),
    ("\x1b]0;owned\x07", "\\x1b]0;owned\\x07"),
    ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
    ("\x9b2J", "\\x9b2J"),
    ("Work\n0 folders, 0 copied", "Work\\n0 folders, 0 copied"),
    ("tab\there", "tab\\there"),
    ("cr\rover", "cr\\rover"),
    ("evil\u202etxt.exe", "evil\\u202etxt.exe"),
    ("Test.[some_group].box", "Test.[some_group].box"),
    ("Test.[bold].box", "Test.[bold].box"),
    ("Old[/]", "Old[/]"),
    ("Entwürfe/日本語 :warning:", "Entwürfe/日本語 :warning:"),
]


@pytest.mark.parametrize(("name", "shown"), HOSTILE)
def test_folder_names_reach_the_terminal_escaped(name: str, shown: str) -> None:
    report, out, err = reporter()
    report.plan([FolderRow(name, name, messages=1, size_bytes=10, to_copy=1, to_copy_bytes=10)])
    report.summary(summary(failed=[Failure(name, 4, 10, f"NO [CANNOT] {name}")], errors=[f"folder {name}: gone"]))
    report.table("Check", ["source"], [[name]])
    for text in (out.getvalue(), err.getvalue()):
        assert all(ch in "\n\t" or ch >= " " and not 0x7F <= ord(ch) < 0xA0 and ch != "\u202e" for ch in text)
    assert out.getvalue().splitlines()[2].split("\t")[:2] == [shown, shown]
    # In a message, a line break starts an indented line: no line of its own.
    assert f"error: folder {shown.replace(chr(92) + 'n', chr(10) + '  ')}: gone" in err.getvalue()
    for text in (out.getvalue(), err.getvalue()):
        assert not any(line.startswith("0 folders") for line in text.splitlines())


@pytest.mark.parametrize(("name", "shown"), HOSTILE)
def test_rich_tables_show_names_as_they_are_escaped(name: str, shown: str) -> None:
    out = io.StringIO()
    report = Reporter(out=out, err=io.StringIO(), interactive=True)
    report.table("Folders", ["side", "folder"], [["src", name]])
    report.info(f"folder {name}")
    text = out.getvalue()
    assert "\x1b" not in text and "\x07" not in text and "\x9b" not in text
    in_message = shown.replace("\\n", "\n  ")
    assert f"folder {in_message}" in text
    assert text.count(shown) == (1 if in_message != shown else 2)


def test_status_and_traceback_are_escaped() -> None:
    err = io.StringIO()
    report = Reporter(out=io.StringIO(), err=err, interactive=True)
    report.status("planning \x1b]0;t\x07")
    report.trace("Traceback\n  File x\nValueError: '\x1b[2J'\n")
    assert "\x1b" not in err.getvalue() and "\x07" not in err.getvalue()
    assert err.getvalue().endswith("Traceback\n  File x\nValueError: '\\x1b[2J'\n")


@pytest.mark.parametrize("width", [40, 60, 80, 120, 200])
def test_the_status_line_fits_the_terminal(width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # Neither wider than the terminal (it would scroll a line per update) nor cut short of it.
    monkeypatch.setenv("COLUMNS", str(width))
    err = io.StringIO()
    report = Reporter(out=io.StringIO(), err=err, interactive=True)
    report.status("planning folder " + "Archive/" * 40)
    report.clear_status()
    report.status("short")
    first, cleared, short, _ = err.getvalue().split("\r")
    assert len(first) == len(cleared) == len(short) == width - 1
    assert first.startswith("planning folder Archive/") and cleared.strip() == "" and short.rstrip() == "short"


@pytest.mark.parametrize(("text", "width", "shown"), [
    ("abc", 5, "abc  "),
    ("abcdef", 4, "abcd"),
    ("日本語", 5, "日本 "),
    ("日本語", 6, "日本語"),
    ("", 3, "   "),
])
def test_fitted_counts_terminal_cells(text: str, width: int, shown: str) -> None:
    assert fitted(text, width) == shown


LONG_NAMES = [
    ("Archive/2019/Customer Correspondence/Quarterly-Reports-Final",
     "Archive.2019.Customer Correspondence.Quarterly-Reports-Final"),
    ("INBOX/Projekte/Entwürfe und Vorlagen für das nächste Jahr", "INBOX.Projekte.Entwürfe und Vorlagen"),
    ("INBOX", "INBOX"),
]


def _table_columns(text: str, columns: int) -> list[list[str]]:
    """The body rows of a rich table as its cells, each cell's folded lines joined (spaces
    left out: a line may be folded at one); a row starts where its third cell has text."""
    rows: list[list[str]] = []
    body = False
    for line in text.splitlines():
        if line.startswith("┡"):
            body = True
            continue
        if not body or not line.startswith("│"):
            continue
        cells = [cell.strip() for cell in line.strip("│").split("│")]
        if cells[2]:
            rows.append([""] * columns)
        rows[-1] = [joined + cell.replace(" ", "") for joined, cell in zip(rows[-1], cells)]
    return rows


@pytest.mark.parametrize("width", [60, 80, 100])
def test_the_plan_shows_whole_folder_names_at_any_width(width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # The plan is what a user confirms: a folder name cut with an ellipsis hides which
    # folder goes where.
    monkeypatch.setenv("COLUMNS", str(width))
    out = io.StringIO()
    report = Reporter(out=out, err=io.StringIO(), interactive=True)
    report.plan([FolderRow(src, dst, messages=12345, size_bytes=10, to_copy=12000, to_copy_bytes=123456789,
                           without_id=3, note="special-use \\Sent") for src, dst in LONG_NAMES])
    text = out.getvalue()
    assert "…" not in text
    assert all(len(line) <= width for line in text.splitlines())
    rows = _table_columns(text, 7)
    assert [(row[0], row[1]) for row in rows] == [(src.replace(" ", ""), dst.replace(" ", "")) for src, dst in LONG_NAMES]
    assert all(row[2:5] == ["12345", "12000", "123.5MB"] for row in rows)
