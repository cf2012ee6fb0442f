"""`fastsync sync --watch` against a real Dovecot: after the first sync, new messages, flag
changes and (with --delete-dest) expunges on the source reach the destination while the
watch runs; NOTIFY, IDLE and polling each carry them; Ctrl-C and SIGTERM end it with the
summary, and `check` then finds both sides equal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.harness.dovecot import Dovecot
from bench.harness.tcpproxy import CountingProxy
from fastsync.engine.changes import Interrupts
from tests.dovecot.accounts import Account, AccountFactory, snapshot
from tests.helpers import message, run_cli, spawn_sync, wait_for, write_config


def _count(account: Account, folder: str = "INBOX") -> int:
    client = account.client()
    try:
        return int(client.folder_status(folder, ["MESSAGES"])[b"MESSAGES"])
    finally:
        client.logout()


def _flags(account: Account, folder: str = "INBOX") -> dict[bytes, tuple[bytes, ...]]:
    """Message-Id -> flags (without \\Recent) of every message of *folder*."""
    client = account.client()
    try:
        client.select_folder(folder, readonly=True)
        reply = client.fetch(client.search(), ["FLAGS", "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
        return {
            data[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"].strip(): tuple(sorted(f for f in data[b"FLAGS"] if f != b"\\Recent"))
            for data in reply.values()
        }
    finally:
        client.logout()


def _set_flag(account: Account, folder: str, n: int, flag: bytes, on: bool = True) -> None:
    client = account.client()
    try:
        client.select_folder(folder)
        uids = client.search(["HEADER", "Message-ID", f"<m{n}@example.org>"])
        (client.add_flags if on else client.remove_flags)(uids, [flag])
    finally:
        client.logout()


def _stop(process: subprocess.Popen[str], signum: int = signal.SIGINT) -> tuple[str, str]:
    os.kill(process.pid, signum)
    return process.communicate(timeout=60)


def _watching(process: subprocess.Popen[str], log: Path) -> None:
    """Wait until the watch has started listening (its log says so)."""
    def started() -> bool:
        assert process.poll() is None, process.communicate()
        return log.exists() and "watch started" in log.read_text()

    wait_for(started, timeout_s=60, what="the watch to start")


def _spawn_watch(config: Path, tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[str], Path]:
    """A watch with a log of its own (a new file each time) and the test's state directory."""
    log = tmp_path / f"watch-{len(list(tmp_path.glob('watch-*.log')))}.log"
    process = spawn_sync(config, "--watch", "--procs", "2", "--state-dir", str(tmp_path / "state"),
                         "--log-file", str(log), "--log-format", "json", *extra)
    _watching(process, log)
    return process, log


def _events(log: Path, name: str) -> list[dict[str, object]]:
    out = []
    for line in log.read_text().splitlines():
        record = json.loads(line)
        if record.get("event") == name:
            out.append(record)
    return out


def test_watch_copies_new_mail_and_flag_changes_until_ctrl_c(
    accounts: AccountFactory, config_for: Callable[..., Path], tmp_path: Path,
) -> None:
    src, dst = accounts(2)
    src.client().create_folder("Archive")
    src.seed([message("INBOX", n) for n in range(5)] + [message("Archive", 100 + n) for n in range(3)])
    config = config_for(src, dst)
    process, log = _spawn_watch(config, tmp_path, "--poll", "2")
    assert _count(dst) == 5
    # New mail in INBOX (IDLE or NOTIFY) and in another folder (NOTIFY or the poll).
    src.seed([message("INBOX", 10), message("INBOX", 11), message("Archive", 110)])
    wait_for(lambda: _count(dst) == 7 and _count(dst, "Archive") == 4, timeout_s=20, what="the new messages")
    # A flag set, and one cleared, on messages already copied.
    _set_flag(src, "INBOX", 1, b"\\Flagged")
    _set_flag(src, "INBOX", 10, b"\\Seen")
    wait_for(lambda: _flags(dst)[b"Message-ID: <m1@example.org>"] == (b"\\Flagged",)
             and _flags(dst)[b"Message-ID: <m10@example.org>"] == (b"\\Seen",), timeout_s=20, what="flags set")
    _set_flag(src, "INBOX", 1, b"\\Flagged", on=False)
    wait_for(lambda: _flags(dst)[b"Message-ID: <m1@example.org>"] == (), timeout_s=20, what="a flag cleared")
    out, err = _stop(process)
    assert process.returncode == 130, err
    assert "Cancelled." in err
    assert "3 messages copied" in out and "after the first sync" in out
    assert snapshot(src) == snapshot(dst)
    assert run_cli("-c", config, "check", "--state-dir", tmp_path / "state").returncode == 0
    # One event per change in the log, and one per pass.
    assert _events(log, "watch change") and _events(log, "watch pass")
    # Ctrl-C is how a watch ends: a normal end in the log, not an error.
    [finished] = _events(log, "run finished")
    assert (finished["level"], finished["exit_code"], finished["stopped"]) == ("info", 130, "Cancelled.")
    assert not finished["error"] and finished["totals"]["copied"] == 11
    assert not [line for line in log.read_text().splitlines() if json.loads(line)["level"] == "error"]
    # New mail alone is planned from the new messages (CONDSTORE), a flag change by a diff.
    notes = [e["note"] for e in _events(log, "folder planned") if e["to_copy"]]
    assert "new messages only" in notes
    assert src.password not in log.read_text() + out + err


def test_watch_propagates_expunges_within_the_ceiling_and_stops_on_sigterm(
    accounts: AccountFactory, config_for: Callable[..., Path], tmp_path: Path,
) -> None:
    src, dst = accounts(2)
    src.seed([message("INBOX", n) for n in range(20)])
    config = config_for(src, dst)
    process, log = _spawn_watch(config, tmp_path, "--delete-dest", "--poll", "2")
    assert _count(dst) == 20
    client = src.client()
    client.select_folder("INBOX")
    client.delete_messages(client.search(["HEADER", "Message-ID", "<m3@example.org>"]))
    client.expunge()
    client.logout()
    wait_for(lambda: _count(dst) == 19, timeout_s=20, what="the expunge to reach the destination")
    _out, err = _stop(process, signal.SIGTERM)
    assert process.returncode == 143, err
    assert snapshot(src) == snapshot(dst)
    [finished] = _events(log, "run finished")
    assert (finished["level"], finished["exit_code"], finished["stopped"]) == ("info", 143, "Stopped by SIGTERM.")
    assert finished["totals"]["copied"] == 20
    # The pass that deleted may still be finishing as SIGTERM comes: its deletion is counted.
    assert finished["totals"]["deleted"] == 1, finished["totals"]


@pytest.fixture(scope="module")
def dovecot_plain(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A Dovecot that announces neither NOTIFY nor CONDSTORE nor QRESYNC: IDLE and polling,
    and flags compared in full."""
    root = tmp_path_factory.mktemp("dovecot-plain")
    users = {f"p{n}": f"pw-p{n}" for n in range(4)}
    with Dovecot(root, users=users, imap_capability="IMAP4rev1 IDLE UIDPLUS MULTIAPPEND LITERAL+ NAMESPACE") as server:
        yield server, users


def test_watch_without_notify_or_condstore_idles_on_inbox_and_polls_the_rest(
    dovecot_plain: tuple[Dovecot, dict[str, str]], config_for: Callable[..., Path], tmp_path: Path,
) -> None:
    server, users = dovecot_plain
    src, dst = (Account(server, user, users[user]) for user in ("p0", "p1"))
    src.client().create_folder("Archive")
    src.seed([message("INBOX", n) for n in range(3)] + [message("Archive", 50)])
    config = config_for(src, dst)
    process, log = _spawn_watch(config, tmp_path, "--poll", "3")
    assert [e["how"] for e in _events(log, "watch started")] == ["idle"]
    src.seed([message("INBOX", 10)])
    wait_for(lambda: _count(dst) == 4, timeout_s=10, what="the new INBOX message (IDLE)")
    src.seed([message("Archive", 51)])
    wait_for(lambda: _count(dst, "Archive") == 2, timeout_s=15, what="the new Archive message (poll)")
    _set_flag(src, "INBOX", 2, b"\\Answered")
    wait_for(lambda: _flags(dst)[b"Message-ID: <m2@example.org>"] == (b"\\Answered",), timeout_s=15,
             what="the flag change without CONDSTORE")
    _out, err = _stop(process)
    assert process.returncode == 130, err
    assert snapshot(src) == snapshot(dst)


def test_watch_holds_the_connection_cap_with_its_listeners(
    accounts: AccountFactory, config_for: Callable[..., Path], tmp_path: Path,
) -> None:
    src, dst = accounts(2)
    src.seed([message("INBOX", n) for n in range(30)])
    with CountingProxy(src.server.port) as src_proxy, CountingProxy(dst.server.port) as dst_proxy:
        config = write_config(tmp_path, f"127.0.0.1:{src_proxy.port}", src.user, src.password,
                              f"127.0.0.1:{dst_proxy.port}", dst.user, dst.password)
        process, _log = _spawn_watch(config, tmp_path, "--max-connections", "3", "--poll", "2")
        src.seed([message("INBOX", 100 + n) for n in range(30)])
        wait_for(lambda: _count(dst) == 60, timeout_s=20, what="the new messages")
        _out, err = _stop(process)
        assert process.returncode == 130, err
        assert src_proxy.peak_connections <= 3 and dst_proxy.peak_connections <= 3
        # The listener was one of the three source connections.
        assert src_proxy.peak_connections == 3


def test_watch_recovers_when_every_connection_drops(
    accounts: AccountFactory, tmp_path: Path,
) -> None:
    """All source connections cut at once (a server restart, a lost network): the listener
    and the planner reconnect, and what arrived meanwhile is copied."""
    src, dst = accounts(2)
    src.seed([message("INBOX", n) for n in range(5)])
    with CountingProxy(src.server.port) as src_proxy:
        config = write_config(tmp_path, f"127.0.0.1:{src_proxy.port}", src.user, src.password,
                              dst.address, dst.user, dst.password)
        process, log = _spawn_watch(config, tmp_path, "--poll", "2")
        wait_for(lambda: "watch listening" in log.read_text(), timeout_s=20, what="the listener")
        assert src_proxy.drop_all() >= 1
        src.seed([message("INBOX", 20)])
        wait_for(lambda: _count(dst) == 6, timeout_s=30, what="the message sent while the connections were down")
        src.seed([message("INBOX", 21)])
        wait_for(lambda: _count(dst) == 7, timeout_s=20, what="a message after the reconnection")
        _out, err = _stop(process)
    assert process.returncode == 130, err
    assert _events(log, "watch connection lost")
    assert "Traceback" not in err
    assert snapshot(src) == snapshot(dst)


def test_a_restarted_watch_resumes_from_its_state_without_diffing_unchanged_folders(
    accounts: AccountFactory, config_for: Callable[..., Path], tmp_path: Path,
) -> None:
    src, dst = accounts(2)
    src.client().create_folder("Archive")
    src.seed([message("INBOX", n) for n in range(10)] + [message("Archive", 100 + n) for n in range(10)])
    config = config_for(src, dst)
    process, _log = _spawn_watch(config, tmp_path)
    _stop(process)
    # Started again with nothing changed: every folder pair is known unchanged.
    again, log = _spawn_watch(config, tmp_path)
    planned = _events(log, "folder planned")
    _out, err = _stop(again)
    assert again.returncode == 130, err
    assert planned and all(event["note"] == "unchanged since the last run" for event in planned)


def test_a_listener_issues_idle_again_and_still_hears_changes(
    dovecot_plain: tuple[Dovecot, dict[str, str]], config_for: Callable[..., Path], caplog: pytest.LogCaptureFixture,
) -> None:
    """RFC 2177: IDLE is ended and issued again before the server's 29-30 minutes; here
    every half second, and a change after several renewals is still heard."""
    import io
    import logging

    from fastsync.engine.changes import ChangeFeed, Watched
    from fastsync.settings.config import load_config
    from fastsync.rules.limits import Limits
    from fastsync.records.model import WorkerSettings
    from fastsync.progress import Reporter

    server, users = dovecot_plain
    src, dst = (Account(server, user, users[user]) for user in ("p2", "p3"))
    config = load_config(config_for(src, dst))
    caplog.set_level(logging.INFO, logger="fastsync")
    feed = ChangeFeed(config.src, Limits(), WorkerSettings(), Reporter(out=io.StringIO(), err=io.StringIO()),
                      Watched(["INBOX"], poll_s=3600, notify=False, renew_s=0.5))
    feed.start()
    try:
        first = feed.wait(10)
        assert [c.how for c in first] == ["listening"]
        wait_for(lambda: sum(r.getMessage() == "watch renewed" for r in caplog.records) >= 3, timeout_s=10,
                 what="three renewals")
        src.seed([message("INBOX", 1)])
        heard: list[str] = []
        wait_for(lambda: heard.extend(c.folder for c in feed.wait(0.5)) or "INBOX" in heard, timeout_s=10,
                 what="the change after the renewals")
    finally:
        feed.close()


def test_watch_follows_a_source_folder_recreated_with_a_new_uidvalidity(
    accounts: AccountFactory, config_for: Callable[..., Path], tmp_path: Path,
) -> None:
    src, dst = accounts(2)
    src.client().create_folder("Archive")
    src.seed([message("Archive", n) for n in range(5)])
    config = config_for(src, dst)
    process, _log = _spawn_watch(config, tmp_path, "--poll", "2")
    client = src.client()
    before = client.folder_status("Archive", [b"UIDVALIDITY"])[b"UIDVALIDITY"]
    client.delete_folder("Archive")
    client.create_folder("Archive")
    assert client.folder_status("Archive", [b"UIDVALIDITY"])[b"UIDVALIDITY"] != before
    client.logout()
    # The same five messages again, and a new one: only the new one is copied.
    src.seed([message("Archive", n) for n in range(6)])
    wait_for(lambda: _count(dst, "Archive") == 6, timeout_s=20, what="the new message of the recreated folder")
    _out, err = _stop(process)
    assert process.returncode == 130, err
    assert _count(dst, "Archive") == 6
    assert snapshot(src) == snapshot(dst)


def test_a_new_source_message_the_destination_already_holds_is_not_copied_again(
    accounts: AccountFactory, config_for: Callable[..., Path], tmp_path: Path,
) -> None:
    src, dst = accounts(2)
    src.seed([message("INBOX", n) for n in range(3)])
    # The destination holds one message besides the source's (as after a source folder
    # emptied and refilled, or a message put there by hand).
    dst.seed([message("INBOX", n) for n in range(3)] + [message("INBOX", 9)])
    process, log = _spawn_watch(config_for(src, dst), tmp_path, "--poll", "1")
    # Message 9 arrives on the source too: a diff matches it with the destination's copy.
    src.seed([message("INBOX", 9), message("INBOX", 10)])
    # A copy of 9 would come before 10 (planned in UID order), in that pass or an earlier one.
    wait_for(lambda: b"Message-ID: <m10@example.org>" in _flags(dst) and _events(log, "watch pass"),
             timeout_s=20, what="the new message")
    assert _count(dst) == 5
    _out, err = _stop(process)
    assert process.returncode == 130, err
    assert snapshot(dst) == snapshot(src)


def test_a_survey_of_no_folder_keeps_the_selected_folder_known(accounts: AccountFactory) -> None:
    """A survey with nothing to read leaves the examined folder selected on the server; the
    session must still know it, or its next LIST-STATUS (which leaves the selected folder
    first) reads that folder's STATUS from the session's stale view (RFC 3501 6.3.10)."""
    from fastsync.rules import plan
    from fastsync.settings.config import parse_config
    from fastsync.imap.session import Session

    src, _dst = accounts(2)
    src.seed([message("INBOX", n) for n in range(3)])
    side = {"server": src.address, "user": src.user, "pass": src.password, "tls": "none"}
    config = parse_config({"src": side, "dst": side}, "test.json")
    session = Session.open(config.src)
    try:
        session.examine("INBOX")
        assert session.survey([], plan.identity) == {}
        src.seed([message("INBOX", 10)])
        assert session.statuses()["INBOX"].messages == 4
    finally:
        session.close()


class _Thing:
    pass


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_ctrl_c_that_a_finalizer_dropped_is_raised_again_between_waits() -> None:
    """A KeyboardInterrupt raised inside a weakref callback (a multiprocessing finalizer run
    by the garbage collector) is printed and dropped by Python: the watch's loop raises it
    again instead of waiting on for good."""
    def interrupted_while_finalizing(_ref: object) -> None:
        # To the main thread itself (sent to the process, a signal may land on another of
        # the suite's threads), so that the handler runs here, inside the callback.
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
        time.sleep(1)

    # Python's own Ctrl-C handler, which a command starts with, whatever earlier tests left.
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with Interrupts() as interrupts:
            thing = _Thing()
            ref = weakref.ref(thing, interrupted_while_finalizing)
            del thing  # the callback runs now; its KeyboardInterrupt goes nowhere
            assert ref() is None
            assert interrupts.received == [signal.SIGINT]
            with pytest.raises(KeyboardInterrupt):
                interrupts.check()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        # Nothing received: nothing raised.
        with Interrupts() as quiet:
            quiet.check()
    finally:
        signal.signal(signal.SIGINT, before)
