"""Faults between fastsync and a real Dovecot: after the run, every message is there exactly once.

A fault-injecting proxy (bench/harness/tcpproxy.py) breaks chosen connections: closed after so many
bytes, reset, stalled, refused, or with the server's answer to an APPEND swallowed so that
the message lands but fastsync never learns it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.harness.corpus import Message, generate
from bench.harness.dovecot import Dovecot
from bench.harness.tcpproxy import CountingProxy, Fault
from tests.dovecot.accounts import Account, AccountFactory, ConfigFor, message_count, snapshot
from tests.helpers import run_cli, spawn_sync, summary_line, wait_for, workers_of


# Connection 0 to each side is the planner's; workers open 1, 2, ...
FAULTS: dict[str, tuple[str, Callable[[int], Fault | None]]] = {
    "source closes mid-fetch": ("src", lambda n: Fault(close_after_down=150_000) if n in (1, 2) else None),
    "source resets mid-fetch": ("src", lambda n: Fault(close_after_down=90_000, reset=True) if n in (1, 3) else None),
    "destination closes mid-append": ("dst", lambda n: Fault(close_after_up=200_000) if n in (1, 2, 3) else None),
    "destination resets mid-append": ("dst", lambda n: Fault(close_after_up=120_000, reset=True) if n == 2 else None),
    "append lands, reply lost": ("dst", lambda n: Fault(lose_append_reply=True) if n in (1, 2) else None),
    "source stalls": ("src", lambda n: Fault(stall_after_down=50_000, stall_s=6) if n == 1 else None),
    "destination refuses connections": ("dst", lambda n: Fault(refuse=True) if n in (1, 2, 3) else None),
    "source busy (Gmail)": (
        "src", lambda n: Fault(greeting=b"* BYE [UNAVAILABLE] Too many simultaneous connections\r\n") if n in (1, 2) else None
    ),
    "destination throttles (Office 365)": (
        "dst",
        lambda n: Fault(greeting=b"* BYE Request is throttled. Suggested Backoff Time: 300 milliseconds\r\n")
        if n == 1 else None,
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAULTS))
def test_fault_then_exactly_once(name: str, accounts: AccountFactory, config_for: ConfigFor) -> None:
    side, faults = FAULTS[name]
    src, dst = accounts(2)
    # Several folders, duplicate Message-Ids and messages without one: the hard cases.
    src.seed(generate("tiny", seed=11) + generate("realistic", seed=12, scale=0.05))
    target = src if side == "src" else dst
    with CountingProxy(target.server.port, faults=faults) as proxy:
        extra = {side: {"server": f"127.0.0.1:{proxy.port}", "timeout_s": 2}}
        config = config_for(src, dst, extra=extra)
        result = run_cli("sync", "-c", config, "-y", "--procs", "3")
        assert proxy.faults_done >= 1, "the fault never fired"
        if result.returncode != 0:
            # At most one re-run, and only when the run said it could not finish.
            assert result.returncode == 1 and "run again" in result.stderr, result.stderr
            result = run_cli("sync", "-c", config, "-y", "--procs", "3")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    if "throttles" in name or "busy" in name:
        # The server asked for fewer connections: the run goes on with fewer workers.  Too
        # many connections is a ceiling (`TooManyConnections`), said as such.
        said = "server refuses more connections" if "busy" in name else "server is throttling"
        assert said in result.stderr and "continuing with" in result.stderr, result.stderr
    assert snapshot(dst) == snapshot(src)


@pytest.mark.slow
@pytest.mark.parametrize("fault", [Fault(lose_append_reply=True), Fault(close_after_up=200_000)],
                         ids=["append lands, reply lost", "append cut"])
def test_broken_appends_into_a_folder_planned_without_identities(
    fault: Fault, accounts: AccountFactory, config_for: ConfigFor
) -> None:
    """Into an empty folder the plan reads no identity, so the copies of one message go
    into different units.  A unit whose APPEND may have landed tells its copies from the
    others' once those are done: the first run leaves every message there once, whether
    the APPEND landed or not, and whether or not another unit copied the same message."""
    src, dst = accounts(2)
    distinct = [_sized(n, 1_000) for n in range(1_000)]
    # Units of at most 400 messages: each copy of a message is in another unit than the first.
    src.seed(distinct + distinct)
    with CountingProxy(dst.server.port, faults=lambda n: fault if n in (1, 2) else None) as proxy:
        config = config_for(src, dst, extra={"dst": {"server": f"127.0.0.1:{proxy.port}", "timeout_s": 2}})
        result = run_cli("sync", "-c", config, "-y", "--json", "--procs", "3")
        assert proxy.faults_done >= 1, "the fault never fired"
    assert result.returncode == 0, result.stderr
    [folder] = json.loads(result.stdout)["folders"]
    # Planned without identities: the plan cannot say how many lack a Message-Id.
    assert (folder["to_copy"], folder["without_message_id"]) == (2_000, None), folder
    assert "retrying in" in result.stderr
    assert snapshot(dst) == snapshot(src)
    assert sum(snapshot(dst)["INBOX"].values()) == 2_000


@pytest.mark.slow
def test_broken_appends_without_appenduid_are_left_to_a_rerun(accounts: AccountFactory, config_for: ConfigFor) -> None:
    """A destination that announces UIDPLUS but leaves APPENDUID out: a unit whose APPEND
    broke, in a folder planned without identities, cannot tell its copies from the others'.
    Its messages are left to a re-run, which says so, and nothing is copied twice."""
    src, dst = accounts(2)
    distinct = [_sized(n, 1_000) for n in range(1_000)]
    src.seed(distinct + distinct)
    with CountingProxy(dst.server.port, faults=lambda n: Fault(close_after_up=200_000) if n in (1, 2) else None,
                       replace_down=(b"[APPENDUID ", b"[XPPENDUID ")) as proxy:
        config = config_for(src, dst, extra={"dst": {"server": f"127.0.0.1:{proxy.port}", "timeout_s": 2}})
        result = run_cli("sync", "-c", config, "-y", "--procs", "3")
        assert proxy.faults_done >= 1, "the fault never fired"
        assert result.returncode == 1, result.stderr
        assert "did not report the UIDs of every copy (APPENDUID); run again" in result.stderr
        copied = snapshot(dst)["INBOX"]
        assert 0 < sum(copied.values()) < 2_000
        assert all(count <= 2 for count in copied.values())
        result = run_cli("sync", "-c", config, "-y", "--procs", "3")
    assert result.returncode == 0, result.stderr
    assert snapshot(dst) == snapshot(src)


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_its_unit_requeued(accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst = accounts(2)
    src.seed(generate("realistic", seed=13, scale=0.15))
    process = spawn_sync(config_for(src, dst), "--procs", "3")
    wait_for(lambda: message_count(dst) > 0, timeout_s=60, what="the sync to start copying")
    workers = workers_of(process.pid)
    assert workers, "no worker processes found"
    workers[0].kill()
    _out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "exited unexpectedly" in err
    assert snapshot(dst) == snapshot(src)


@pytest.mark.slow
def test_dovecot_restarted_mid_run(tmp_path: Path, config_for: ConfigFor) -> None:
    with Dovecot(tmp_path / "restart", {"src": "s-pw", "dst": "d-pw"}) as server:
        src, dst = Account(server, "src", "s-pw"), Account(server, "dst", "d-pw")
        src.seed(generate("realistic", seed=14, scale=0.2))
        # Capped at 10 MB/s so that the restart falls in the middle of the copy.
        config = config_for(src, dst, extra={"dst": {"timeout_s": 5}, "src": {"timeout_s": 5}})
        process = spawn_sync(config, "--procs", "3", "--bps-down", "10000000")
        wait_for(lambda: message_count(dst) > 0, timeout_s=60, what="the sync to start copying")
        server.stop()
        server.start()
        _out, err = process.communicate(timeout=180)
        if process.returncode != 0:
            assert process.returncode == 1 and "run again" in err, err
            rerun = run_cli("sync", "-c", config_for(src, dst), "-y")
            assert rerun.returncode == 0, rerun.stderr
        assert "retrying in" in err
        assert snapshot(dst) == snapshot(src)


def _sized(n: int, size: int) -> Message:
    body = f"Message-ID: <sized{n}@x>\r\nSubject: {n}\r\n\r\n".encode() + b"x" * size + b"\r\n"
    return Message("INBOX", body, ("\\Seen",), dt.datetime(2020, 6, 1, tzinfo=dt.UTC))


def test_refused_messages_are_listed_and_the_run_goes_on(
    tmp_path: Path, accounts: AccountFactory, config_for: ConfigFor
) -> None:
    [src] = accounts(1)
    messages = [_sized(n, 40_000 if n in (3, 7) else 2_000) for n in range(10)]
    src.seed(messages)
    with Dovecot(tmp_path / "limited", {"dst": "d-pw"}, quota_max_mail_size="20k") as limited:
        dst = Account(limited, "dst", "d-pw")
        config = config_for(src, dst)
        for _run in range(2):
            result = run_cli("sync", "-c", config, "-y")
            assert result.returncode == 1, result.stderr
            refused = [line for line in result.stderr.splitlines() if line.startswith("error: not copied:")]
            assert len(refused) == 2
            for line, uid in zip(sorted(refused), (4, 8), strict=True):
                assert f"folder 'INBOX' UID {uid} <sized{uid - 1}@x>" in line
                assert "[LIMIT]" in line
        assert "0 copied" in summary_line(result.stdout)
        copied = snapshot(dst)["INBOX"]
    assert sum(copied.values()) == 8
    assert all(count == 1 for count in copied.values())


def test_over_quota_destination_stops_the_run(tmp_path: Path, accounts: AccountFactory, config_for: ConfigFor) -> None:
    [src] = accounts(1)
    src.seed([_sized(n, 10_000) for n in range(300)])
    with Dovecot(tmp_path / "full", {"dst": "d-pw"}, quota_storage="300K") as full:
        dst = Account(full, "dst", "d-pw")
        result = run_cli("sync", "-c", config_for(src, dst), "-y", "--procs", "3")
        assert result.returncode == 1
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert any("[OVERQUOTA]" in line and "free space on the destination" in line for line in errors)
        # Stopped, instead of reporting each of the hundreds of remaining messages.
        assert len(errors) < 10
        assert "Traceback" not in result.stderr
        assert 0 < sum(snapshot(dst)["INBOX"].values()) < 300
