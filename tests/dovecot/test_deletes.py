"""`sync --delete-dest` (mirroring deletions) and `--max-transfer`, against real Dovecot
servers (their pure parts: tests/unit/test_deletes.py)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any


from bench.harness.corpus import Message
from bench.harness.dovecot import Dovecot
from bench.harness.replyproxy import EditingProxy
from fastsync.records.errors import ExitCode
from tests.dovecot.accounts import Account, AccountFactory, ConfigFor, snapshot
from tests.helpers import message, run_cli, spawn_sync, summary_line


# ----------------------------------------------------------------------------- Dovecot


def sync(config: Path, *extra_args: str) -> tuple[int, dict[str, Any], str]:
    result = run_cli("sync", "-c", config, "--json", *extra_args)
    doc = json.loads(result.stdout)
    assert doc["exit_code"] == result.returncode
    return result.returncode, doc, result.stderr


def bodies(account: Account, folder: str = "INBOX") -> Counter[bytes]:
    return Counter({body: n for (body, _flags, _date), n in snapshot(account).get(folder, Counter()).items()})


def flagged(account: Account, folder: str, body: bytes) -> list[tuple[bytes, ...]]:
    return [flags for (b, flags, _date) in snapshot(account)[folder] if b == body]


def seeded_pair(accounts: AccountFactory, extra_on_dst: list[Message], dst: Account | None = None) -> tuple[Account, Account]:
    """Source: INBOX 1..20 (2 twice) and Work 30; destination: INBOX 1..20 (2 once, 4
    flagged \\Deleted by its user), Archive 40 (a folder the source does not have) and *extra_on_dst*."""
    src, made = accounts(2)
    dst = dst or made
    src.seed([message("INBOX", n) for n in range(1, 21)] + [message("INBOX", 2), message("Work", 30)])
    dst.seed(
        [message("INBOX", n, flags=("\\Deleted",) if n == 4 else ()) for n in range(1, 21)]
        + [message("Archive", 40)] + extra_on_dst
    )
    return src, dst


def test_delete_dest_removes_exactly_the_extra_messages(
    tmp_path: Path, accounts: AccountFactory, config_for: ConfigFor
) -> None:
    # Extra: two messages the source lacks and a second copy of one it has once.
    src, dst = seeded_pair(accounts, [message("INBOX", 100), message("INBOX", 101), message("INBOX", 3)])
    config = config_for(src, dst)
    src_before = snapshot(src)
    archive = snapshot(dst)["Archive"]

    plain = sync(config, "-y")
    assert plain[0] == 0 and plain[1]["summary"]["deleted"] == 0
    assert bodies(dst)[message("INBOX", 100).body] == 1

    log = tmp_path / "run.log"
    code, doc, stderr = sync(config, "-y", "--delete-dest", "--log-file", log, "--log-format", "json")
    assert code == 0, stderr
    assert (doc["summary"]["delete_planned"], doc["summary"]["deleted"], doc["summary"]["copied"]) == (3, 3, 0)
    assert [row["to_delete"] for row in doc["folders"] if row["dst"] == "INBOX"] == [3]
    assert bodies(dst) == bodies(src)
    # UID EXPUNGE removed only ours: the user's own \Deleted message is still there.
    assert flagged(dst, "INBOX", message("INBOX", 4).body) == [(b"\\Deleted",)]
    assert snapshot(dst)["Archive"] == archive  # a folder the run does not sync is never touched
    assert snapshot(src) == src_before  # nor is the source
    events = [json.loads(line) for line in log.read_text().splitlines()]
    deleted = [e for e in events if e["event"] == "messages deleted"]
    assert [(e["side"], e["folder"], len(e["uids"]), e["command"]) for e in deleted] == [("dst", "INBOX", 3, "UID EXPUNGE")]

    again = run_cli("sync", "-c", config, "-y", "--delete-dest")
    assert again.returncode == 0, again.stderr
    assert summary_line(again.stdout).endswith(", 0 deleted")


def test_one_run_copies_then_deletes_and_keeps_its_copies(accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst = seeded_pair(accounts, [message("INBOX", 100)])
    src.seed([message("INBOX", n) for n in range(200, 230)])  # 30 more to copy
    code, doc, stderr = sync(config_for(src, dst), "-y", "--delete-dest", "--procs", "2")
    assert code == 0, stderr
    # INBOX: the 30 and the second copy of 2; Work: a new folder with 30.
    assert (doc["summary"]["copied"], doc["summary"]["deleted"]) == (32, 1)
    assert bodies(dst) == bodies(src)
    assert bodies(dst, "Work") == bodies(src, "Work")


def test_over_the_ceiling_nothing_is_deleted_and_the_run_says_why(
    accounts: AccountFactory, config_for: ConfigFor
) -> None:
    src, dst = seeded_pair(accounts, [message("INBOX", n) for n in range(100, 112)])  # 12 of 32: over 10 and 10 %
    config = config_for(src, dst)

    dry = sync(config, "-n", "--delete-dest")
    assert dry[0] == 1
    assert [row["to_delete"] for row in dry[1]["folders"] if row["dst"] == "INBOX"] == [12]

    before = bodies(dst)
    code, doc, stderr = sync(config, "-y", "--delete-dest")
    assert code == 1
    assert doc["summary"]["deleted"] == 0
    assert bodies(dst) - before == Counter({message("INBOX", 2).body: 1})  # copied, nothing deleted
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "folder 'INBOX': nothing deleted: 12 of its 32 messages are not on the source" in errors[0]
    assert "--max-delete 12" in errors[0]

    allowed = sync(config, "-y", "--delete-dest", "--max-delete", "12")
    assert allowed[0] == 0, allowed[2]
    assert allowed[1]["summary"]["deleted"] == 12
    assert bodies(dst) == bodies(src)


def test_dry_run_shows_the_deletions_and_writes_nothing(accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst = seeded_pair(accounts, [message("INBOX", 100), message("Work", 101)])
    before = snapshot(dst)
    result = run_cli("sync", "-c", config_for(src, dst), "-n", "--delete-dest")
    assert result.returncode == 0, result.stderr
    plan = [line.split("\t") for line in result.stdout.splitlines() if "\t" in line]
    assert [(row[0], row[5]) for row in plan] == [("source", "to delete"), ("INBOX", "1"), ("Work", "1")]
    assert "2 messages on the destination are not on the source." in result.stdout
    assert snapshot(dst) == before


# Dovecot's capabilities without UIDPLUS (RFC 4315).
WITHOUT_UIDPLUS = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT MULTIAPPEND UNSELECT CHILDREN NAMESPACE "
    "CONDSTORE ESEARCH LIST-STATUS BINARY MOVE STATUS=SIZE LITERAL+ SPECIAL-USE"
)


def test_without_uidplus_yes_needs_force_expunge(tmp_path: Path, accounts: AccountFactory, config_for: ConfigFor) -> None:
    with Dovecot(tmp_path / "plain", {"dst": "d-pw"}, imap_capability=WITHOUT_UIDPLUS) as server:
        src, dst = seeded_pair(accounts, [message("INBOX", 100)], dst=Account(server, "dst", "d-pw"))
        config = config_for(src, dst)
        before = snapshot(dst)

        refused = run_cli("sync", "-c", config, "-y", "--delete-dest")
        assert refused.returncode == 2
        [error] = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
        assert error.startswith(f"error: destination ({dst.address}) does not offer UIDPLUS (RFC 4315): deleting 1 ")
        assert error.endswith("pass --force-expunge to accept that, or leave out --delete-dest")
        assert snapshot(dst) == before  # refused before anything was written

        code, doc, stderr = sync(config, "-y", "--delete-dest", "--force-expunge")
        assert code == 0, stderr
        assert "also removes every other message already flagged \\Deleted" in stderr
        assert doc["summary"]["deleted"] == 1
        # EXPUNGE also took the message its user had flagged \Deleted, as announced.
        assert bodies(dst) == bodies(src) - Counter({message("INBOX", 4).body: 1})


def test_max_transfer_stops_after_the_unit_in_hand_and_a_rerun_goes_on(
    accounts: AccountFactory, config_for: ConfigFor
) -> None:
    src, dst = accounts(2)
    # 60 messages of about 50 kB: units of at most 1 MiB hold about 20 of them.
    src.seed([message("INBOX", n, body="x" * 50_000 + "\r\n") for n in range(60)])
    config = config_for(src, dst)

    code, doc, stderr = sync(config, "-y", "--max-transfer", "500k", "--procs", "2")
    assert code == 1
    summary = doc["summary"]
    assert summary["stopped_at_transfer_limit"] is True
    assert 500_000 <= summary["copied_bytes"] <= 1024 * 1024
    assert 0 < summary["copied"] < 60
    assert "stopped at the transfer limit" in stderr and "run again tomorrow" in stderr

    rest = sync(config, "-y")
    assert rest[0] == 0, rest[2]
    assert rest[1]["summary"]["copied"] == 60 - summary["copied"]
    assert snapshot(dst) == snapshot(src)


class HeldExpunge:
    """Edits for an `EditingProxy` on the destination: the server's tagged reply to UID
    EXPUNGE waits until `release` (at most 20 s), after `seen` is set."""

    def __init__(self) -> None:
        self.tag = b""
        self.seen, self.released = threading.Event(), threading.Event()

    def up(self, line: bytes) -> bytes:
        words = line.split(b" ")
        if words[1:3] == [b"UID", b"EXPUNGE"]:
            self.tag = words[0]
        return line

    def down(self, line: bytes) -> bytes:
        if self.tag and line.startswith(self.tag + b" "):
            self.seen.set()
            self.released.wait(20)
        return line

    def release(self) -> None:
        self.released.set()


def test_sigterm_while_the_expunge_is_answered_counts_the_deletion(
    accounts: AccountFactory, config_for: ConfigFor
) -> None:
    """The destination has expunged; SIGTERM comes before its reply: the run waits for the
    reply, counts the deletion in its summary, then stops (143)."""
    src, dst = seeded_pair(accounts, [message("INBOX", 100)])
    held = HeldExpunge()
    with EditingProxy(dst.server.port, up=held.up, down=held.down) as proxy:
        config = config_for(src, dst, extra={"dst": {"server": f"127.0.0.1:{proxy.port}"}})
        process = spawn_sync(config, "--delete-dest", "--json")
        try:
            assert held.seen.wait(60), "no UID EXPUNGE reached the destination"
            os.kill(process.pid, signal.SIGTERM)
            time.sleep(0.5)  # the signal is delivered while the reply is held
        finally:
            held.release()
        out, err = process.communicate(timeout=60)
    assert process.returncode == ExitCode.TERMINATED, err
    doc = json.loads(out)
    assert doc["summary"]["deleted"] == 1, doc["summary"]
    assert message("INBOX", 100).body not in bodies(dst)
