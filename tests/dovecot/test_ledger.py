"""Destinations that rewrite Message-Id on APPEND (issue 13): the ledger keeps re-runs exact.

Some Exchange and hosted setups store an appended message under a Message-Id of their own.
Matched by Message-Id, every message then looks missing on the next run and is copied
again.  fastsync keeps a ledger in its state directory: for each copy, the source message
(server, user, folder, UIDVALIDITY, UID) and the destination one (folder, UIDVALIDITY,
UID, from APPENDUID, RFC 4315, where the destination announces UIDPLUS).  A re-run counts
a ledgered message whose destination UID still exists as present; `check` pairs messages
by the ledger too.  The run that notices the rewriting says so once: "the destination
rewrites Message-Id; re-runs rely on the ledger".  Without UIDPLUS there is no ledger,
and fastsync says that re-runs may duplicate.

The destination is a real Dovecot behind `bench.harness.rewriteproxy.RewritingProxy`, which gives
every appended message a new Message-Id of the same length.  Messages are compared with
their Message-Id lines blanked: everything else (bytes, flags, internal dates) must match.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from bench.harness.corpus import Message
from bench.harness.dovecot import Dovecot
from bench.harness.rewriteproxy import RewritingProxy
from tests.dovecot.accounts import Account, AccountFactory, ConfigFor, Snapshot, snapshot
from tests.helpers import message, run_cli, spawn_sync, summary_line, wait_for, write_config

REWRITES = "the destination rewrites Message-Id; re-runs rely on the ledger"
NO_UIDPLUS = "IMAP4rev1 NAMESPACE LITERAL+ MULTIAPPEND"
_ID_LINE = re.compile(rb"(?im)^message-id[ \t]*:[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*")

# rewriting(src, dst) -> (proxy, config): see the fixture.
Rewriting = Callable[[Account, Account], tuple[RewritingProxy, Path]]


def without_message_id(body: bytes) -> bytes:
    """*body* with its header's Message-Id field (folding included) emptied."""
    head_end = body.find(b"\r\n\r\n")
    head_end = len(body) if head_end < 0 else head_end
    return _ID_LINE.sub(b"Message-ID:", body[:head_end]) + body[head_end:]


def message_ids(snap: Snapshot) -> set[bytes]:
    return {m.group(0) for messages in snap.values() for body, _f, _d in messages if (m := _ID_LINE.search(body))}


def modulo_message_id(snap: Snapshot) -> Snapshot:
    """The snapshot with every message's Message-Id emptied: what a rewriting server keeps."""
    out: Snapshot = {}
    for folder, messages in snap.items():
        out[folder] = Counter()
        for (body, flags, date), count in messages.items():
            out[folder][(without_message_id(body), flags, date)] += count
    return out


def counts(account: Account) -> dict[str, int]:
    """Messages per selectable folder (STATUS MESSAGES)."""
    client = account.client()
    try:
        return {
            name: client.folder_status(name, ["MESSAGES"])[b"MESSAGES"]
            for flags, _d, name in client.list_folders()
            if b"\\Noselect" not in flags
        }
    finally:
        client.logout()


def corpus() -> list[Message]:
    """Duplicates, a Message-Id in two folders and messages without one: what the ledger
    must tell apart once the destination's ids are all new."""
    same = message("INBOX", 1, flags=("\\Seen",))
    return [
        same, same,  # two identical copies
        *(message("INBOX", n, flags=("\\Seen",) if n % 3 else ()) for n in range(2, 25)),
        message("INBOX", 25, message_id=None),
        message("INBOX", 26, message_id=None),
        message("Work", 2),  # also in INBOX
        *(message("Work", n, flags=("$Label1",)) for n in range(30, 45)),
        message("Work/2019", 50, message_id=None),
        *(message("Work/2019", n) for n in range(51, 56)),
    ]


def lines_with(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


def assert_exact(src: Account, dst: Account) -> None:
    """Each source message is on the destination once, in its folder, byte for byte but for
    its Message-Id, with its flags and internal date."""
    assert counts(dst) == counts(src)
    assert modulo_message_id(snapshot(dst)) == modulo_message_id(snapshot(src))


@pytest.fixture
def rewriting(tmp_path: Path) -> Iterator[Rewriting]:
    """``rewriting(src, dst) -> (proxy, config)``: a RewritingProxy in front of *dst* and a
    config through it, kept for the whole test (the ledger is keyed by the server)."""
    with contextlib.ExitStack() as stack:

        def make(src: Account, dst: Account) -> tuple[RewritingProxy, Path]:
            proxy = stack.enter_context(RewritingProxy(dst.server.port))
            config = write_config(
                tmp_path, src.address, src.user, src.password, f"127.0.0.1:{proxy.port}", dst.user, dst.password
            )
            return proxy, config

        yield make


# --------------------------------------------------------------------------- with UIDPLUS


def test_reruns_against_a_rewriting_destination_copy_nothing(accounts: AccountFactory, rewriting: Rewriting) -> None:
    src, dst = accounts(2)
    messages = corpus()
    src.seed(messages)
    proxy, config = rewriting(src, dst)

    first = run_cli("sync", "-c", config, "-y")
    assert_ok(first)
    assert summary_line(first.stdout).split(", ")[1] == f"{len(messages)} copied"
    assert_exact(src, dst)
    # The proxy did its part: the destination knows none of the source's Message-Ids.
    assert len(proxy.rewritten) == sum(1 for m in messages if b"Message-ID:" in m.body)
    assert not message_ids(snapshot(dst)) & message_ids(snapshot(src))
    assert lines_with(first.stderr, "rewrites Message-Id") == [f"warning: {REWRITES}"], first.stderr

    # --full: every pair is diffed, none is let through by the state cache.
    for run in ("second", "third"):
        rerun = run_cli("sync", "-c", config, "-y", "--full")
        assert_ok(rerun)
        assert summary_line(rerun.stdout).split(", ")[1] == "0 copied", f"{run} run\n{rerun.stdout}"
        assert_exact(src, dst)

    check = run_cli("check", "-c", config)
    assert_ok(check)
    assert check.stdout.rstrip().endswith("everything matches."), check.stdout

    # New mail at the source changes the pair: it is diffed again, and only the new message goes.
    src.seed([message("INBOX", 99)])
    fourth = run_cli("sync", "-c", config, "-y")
    assert_ok(fourth)
    assert summary_line(fourth.stdout).split(", ")[1] == "1 copied", fourth.stdout
    assert_exact(src, dst)


def _expunge_one(dst: Account) -> str:
    client = dst.client()
    try:
        client.select_folder("Work")
        client.delete_messages(client.search()[:1])
        client.expunge()
    finally:
        client.logout()
    return "1 copied"


def _recreate_a_folder(dst: Account) -> str:
    """Delete and create "Work/2019" again: a new UIDVALIDITY, the ledger's UIDs mean nothing."""
    client = dst.client()
    try:
        before = client.folder_status("Work/2019", ["UIDVALIDITY"])[b"UIDVALIDITY"]
        client.delete_folder("Work/2019")
        client.create_folder("Work/2019")
        assert client.folder_status("Work/2019", ["UIDVALIDITY"])[b"UIDVALIDITY"] != before
    finally:
        client.logout()
    return f"{sum(1 for m in corpus() if m.folder == 'Work/2019')} copied"


@pytest.mark.parametrize("change", [_expunge_one, _recreate_a_folder], ids=["destination UID gone", "UIDVALIDITY changed"])
def test_the_ledger_is_checked_against_the_destination(
    accounts: AccountFactory, rewriting: Rewriting, change: Callable[[Account], str]
) -> None:
    src, dst = accounts(2)
    src.seed(corpus())
    _proxy, config = rewriting(src, dst)
    assert_ok(run_cli("sync", "-c", config, "-y"))
    expected = change(dst)
    rerun = run_cli("sync", "-c", config, "-y", "--full")
    assert_ok(rerun)
    assert summary_line(rerun.stdout).split(", ")[1] == expected, rerun.stdout
    assert_exact(src, dst)


def test_no_rewriting_notice_when_the_destination_keeps_message_ids(
    accounts: AccountFactory, config_for: ConfigFor
) -> None:
    src, dst = accounts(2)
    src.seed(corpus())
    result = run_cli("sync", "-c", config_for(src, dst), "-y")
    assert_ok(result)
    assert not lines_with(result.stderr, "rewrites Message-Id"), result.stderr
    assert not lines_with(result.stderr, "may duplicate"), result.stderr
    assert snapshot(dst) == snapshot(src)


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _alive(processes: list[psutil.Process]) -> list[int]:
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process.pid)
        except psutil.NoSuchProcess:
            pass
    return alive


@pytest.mark.slow
def test_the_ledger_survives_a_killed_parent(accounts: AccountFactory, rewriting: Rewriting) -> None:
    """kill -9 of the parent mid-run, then a normal run: exact, no message twice."""
    src, dst = accounts(2)
    padding = "Lorem ipsum dolor sit amet. " * 12 + "\r\n"
    messages = [message("INBOX" if n % 5 else "Work", n, body=f"Message {n}.\r\n{padding}") for n in range(1, 2001)]
    src.seed(messages)
    proxy, config = rewriting(src, dst)

    # ~1.1 MB at 250 kB/s: seconds in which to catch the run with some messages copied.
    process = spawn_sync(config, "--procs", "2", "--bps-up", "250000")
    try:
        wait_for(lambda: sum(counts(dst).values()) >= 50, timeout_s=60, interval_s=0.1, what="the first copies")
        tree = _descendants(process.pid)
        os.kill(process.pid, signal.SIGKILL)  # the parent only
        at_kill = sum(counts(dst).values())
        process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL  # it was still running
    assert at_kill < len(messages), f"{at_kill} copied when the parent was killed: not mid-run"
    # Workers left behind must notice and end before the next run starts.
    try:
        wait_for(lambda: not _alive(tree), timeout_s=60, interval_s=0.2, what="the orphaned workers to exit")
    finally:
        for pid in _alive(tree):
            os.kill(pid, signal.SIGKILL)
    assert proxy.rewritten

    rerun = run_cli("sync", "-c", config, "-y", "--procs", "2")
    assert_ok(rerun)
    assert_exact(src, dst)
    again = run_cli("sync", "-c", config, "-y", "--full")
    assert_ok(again)
    assert summary_line(again.stdout).split(", ")[1] == "0 copied", again.stdout


# --------------------------------------------------------------------------- without UIDPLUS


@pytest.fixture(scope="module")
def no_uidplus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dovecot]:
    """A destination that does not announce UIDPLUS (Dovecot still sends APPENDUID; a client
    must not use what was not announced)."""
    users = {f"n{n}": f"n{n}-pw" for n in range(1, 4)}
    server = Dovecot(tmp_path_factory.mktemp("no-uidplus"), users, starttls=False, imap_capability=NO_UIDPLUS)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_without_uidplus_a_rewriting_destination_is_named_and_the_copy_goes_on(
    no_uidplus: Dovecot, accounts: AccountFactory, rewriting: Rewriting
) -> None:
    [src] = accounts(1)
    dst = Account(no_uidplus, "n1", no_uidplus.users["n1"])
    messages = corpus()
    src.seed(messages)
    _proxy, config = rewriting(src, dst)
    result = run_cli("sync", "-c", config, "-y")
    assert_ok(result)
    assert summary_line(result.stdout).split(", ")[1] == f"{len(messages)} copied"
    assert lines_with(result.stderr, "may duplicate"), result.stderr
    assert_exact(src, dst)


def test_the_message_id_is_all_that_differs() -> None:
    """The comparison's own check: only the Message-Id field is left out."""
    original = message("INBOX", 7, message_id="<abc@example.org>").body
    rewritten = original.replace(b"<abc@example.org>", b"<zzz@q1a2b3c.d4e>")
    assert without_message_id(rewritten) == without_message_id(original)
    assert without_message_id(original.replace(b"Body", b"body")) != without_message_id(original)
    folded = original.replace(b"Message-ID: <abc@", b"Message-ID:\r\n <abc@")
    assert without_message_id(folded) == without_message_id(original)
