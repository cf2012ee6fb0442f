"""Large messages are streamed from the source socket to the destination's (issue 17).

Against real Dovecots: messages above `plan.STREAM_MESSAGE_BYTES` arrive byte for byte
with their flags and internal dates, each fetched on its own (``UID FETCH n (BODY.PEEK[])``),
all of a unit's in one MULTIAPPEND; a destination that refuses one of them gets them one
by one and keeps the others; bandwidth caps hold while a message streams; a source that breaks in the middle of one leaves
nothing on the destination (whose connection had received part of the literal) and a
re-run completes exactly; an APPEND whose answer was lost is found again, not duplicated.
"""

from __future__ import annotations

import base64
import datetime as dt
import random
import time
from pathlib import Path

import pytest

from bench.harness.corpus import Message
from bench.harness.dovecot import Dovecot
from bench.harness.tcpproxy import CountingProxy, Fault, Traffic
from fastsync.rules.plan import STREAM_MESSAGE_BYTES
from tests.dovecot.accounts import Account, AccountFactory, ConfigFor, snapshot
from tests.helpers import capped_rate_allowance, run_cli, spawn_sync, summary_line, wait_for
from tests.wire import commands

WHEN = dt.datetime(2022, 3, 4, 5, 6, 7, tzinfo=dt.timezone(dt.timedelta(hours=-7)))


def large(n: int, size_bytes: int, flags: tuple[str, ...] = ("\\Seen", "Project-X")) -> Message:
    """A message of about *size_bytes*: a base64 attachment, CRLF lines of 76 characters."""
    payload = base64.encodebytes(random.Random(n).randbytes(size_bytes * 3 // 4)).replace(b"\n", b"\r\n")
    head = f"Message-ID: <large{n}@x>\r\nSubject: large {n}\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    return Message("INBOX", head.encode() + payload, flags, WHEN + dt.timedelta(minutes=n))


def small(n: int) -> Message:
    body = f"Message-ID: <small{n}@x>\r\nSubject: small {n}\r\n\r\nhello {n}\r\n".encode()
    return Message("INBOX", body, ("\\Answered", "$Label1"), WHEN - dt.timedelta(days=n))


def test_large_messages_copy_exactly_in_one_multiappend(accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst = accounts(2)
    messages = [large(1, 6_000_000), small(1), large(2, 5_000_000, flags=()), small(2)]
    assert all(len(m.body) > STREAM_MESSAGE_BYTES for m in messages[::2])
    src.seed(messages)
    with CountingProxy(src.server.port, record=True) as src_proxy, \
            CountingProxy(dst.server.port, record=True) as dst_proxy:
        extra = {"src": {"server": f"127.0.0.1:{src_proxy.port}"}, "dst": {"server": f"127.0.0.1:{dst_proxy.port}"}}
        # One worker: its share of the large messages is all of them (`plan.stream_unit_bytes`).
        result = run_cli("sync", "-c", config_for(src, dst, extra=extra), "-y", "--procs", "1")
    assert result.returncode == 0, result.stderr
    assert "4 copied" in summary_line(result.stdout)
    assert snapshot(dst) == snapshot(src)
    sent = [c.text for r in src_proxy.recordings for c in commands(bytes(r.client_bytes)) if c.name == "UID FETCH"]
    # The large ones were described first, then fetched one by one, body alone.
    assert sum(t.endswith(b" (BODY.PEEK[])") for t in sent) == 2, sent
    appends = [c for r in dst_proxy.recordings for c in commands(bytes(r.client_bytes)) if c.name == "APPEND"]
    # One MULTIAPPEND for the two small ones, one for the two large ones: their literals
    # announce the sizes of the large bodies.
    assert len(appends) == 2, [a.text[:80] for a in appends]
    literals = sorted(tuple(sorted(a.literals)) for a in appends)
    assert (b"{%d+}" % len(messages[2].body), b"{%d+}" % len(messages[0].body)) in literals, literals


def test_a_refused_large_message_fails_alone(tmp_path: Path, accounts: AccountFactory, config_for: ConfigFor) -> None:
    [src] = accounts(1)
    messages = [large(7, 2_000_000), large(8, 6_000_000), large(9, 3_000_000), small(3)]
    src.seed(messages)
    with Dovecot(tmp_path / "limited", {"dst": "d-pw"}, quota_max_mail_size="5M") as limited:
        dst = Account(limited, "dst", "d-pw")
        result = run_cli("sync", "-c", config_for(src, dst), "-y", "--procs", "1")
        assert result.returncode == 1, result.stderr
        refused = [line for line in result.stderr.splitlines() if line.startswith("error: not copied:")]
        assert len(refused) == 1 and "UID 2 <large8@x>" in refused[0], result.stderr
        assert "3 copied" in summary_line(result.stdout)
        copied = snapshot(dst)["INBOX"]
    expected = snapshot(src)["INBOX"]
    del expected[next(key for key in expected if key[0].startswith(b"Message-ID: <large8@x>"))]
    assert copied == expected


@pytest.mark.slow
@pytest.mark.parametrize("direction", ["down", "up"])
def test_caps_hold_while_a_message_streams(direction: str, accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst = accounts(2)
    cap = 1_000_000
    src.seed([large(3, 8_000_000)])
    target = src if direction == "down" else dst
    with CountingProxy(target.server.port) as proxy:
        side = "src" if direction == "down" else "dst"
        config = config_for(src, dst, extra={side: {"server": f"127.0.0.1:{proxy.port}"}})
        flag = "--bps-down" if direction == "down" else "--bps-up"
        result = run_cli("sync", "-c", config, "-y", "--procs", "2", flag, str(cap))
    assert result.returncode == 0, result.stderr
    assert snapshot(dst) == snapshot(src)
    chunks = proxy.traffic.to_client if direction == "down" else proxy.traffic.to_server
    seconds, total = Traffic.span(chunks)
    assert total > 8_000_000 and seconds >= 7
    # As tests/dovecot/test_caps.py: within the cap plus one burst and what the kernel buffers
    # per connection (planner and 2 workers) before the bucket acts, over any 5 s.
    assert Traffic.rate(chunks, 5.0) <= capped_rate_allowance(cap, 3, 5.0)
    # And the cap is used: the span also covers logging in and planning, a larger share of
    # one message's 8 s than of test_caps.py's longer transfers.
    assert total / seconds >= 0.8 * cap


@pytest.mark.slow
def test_source_broken_mid_stream_leaves_nothing_and_a_rerun_completes(
    accounts: AccountFactory, config_for: ConfigFor
) -> None:
    src, dst = accounts(2)
    src.seed([small(3), large(4, 6_000_000), small(4)])
    # Every worker connection to the source (the planner's is number 0) closes 3 MB in:
    # in the middle of the large message's literal, whatever worker takes it.
    breaks = CountingProxy(src.server.port, faults=lambda n: Fault(close_after_down=3_000_000) if n else None)
    with breaks as src_proxy, CountingProxy(dst.server.port) as dst_proxy:
        extra = {"src": {"server": f"127.0.0.1:{src_proxy.port}"}, "dst": {"server": f"127.0.0.1:{dst_proxy.port}"}}
        result = run_cli("sync", "-c", config_for(src, dst, extra=extra), "-y", "--procs", "1", "--retries", "1")
    assert src_proxy.faults_done >= 1
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    # The destination received a good part of the literal, and stored none of it.
    assert Traffic.span(dst_proxy.traffic.to_server)[1] > 2_000_000
    copied = snapshot(dst)["INBOX"]
    assert sorted(body.split(b"\r\n")[0] for (body, _f, _d) in copied) == [b"Message-ID: <small3@x>",
                                                                        b"Message-ID: <small4@x>"]
    rerun = run_cli("sync", "-c", config_for(src, dst), "-y")
    assert rerun.returncode == 0, rerun.stderr
    assert "1 copied, 2 already present" in summary_line(rerun.stdout)
    assert snapshot(dst) == snapshot(src)


@pytest.mark.slow
def test_source_broken_in_the_second_message_of_a_batch_leaves_neither(
    accounts: AccountFactory, config_for: ConfigFor
) -> None:
    src, dst = accounts(2)
    src.seed([large(10, 4_000_000), large(11, 4_000_000), small(5)])
    # Every worker connection to the source closes 6 MB in: within the second large
    # message, after the first one's literal went into the same MULTIAPPEND.
    breaks = CountingProxy(src.server.port, faults=lambda n: Fault(close_after_down=6_000_000) if n else None)
    with breaks as src_proxy, CountingProxy(dst.server.port, record=True) as dst_proxy:
        extra = {"src": {"server": f"127.0.0.1:{src_proxy.port}"}, "dst": {"server": f"127.0.0.1:{dst_proxy.port}"}}
        result = run_cli("sync", "-c", config_for(src, dst, extra=extra), "-y", "--procs", "1", "--retries", "1")
    assert src_proxy.faults_done >= 1
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    appends = [c for r in dst_proxy.recordings for c in commands(bytes(r.client_bytes)) if c.name == "APPEND"]
    assert any(len(c.literals) == 2 for c in appends), [c.literals for c in appends]
    copied = snapshot(dst)["INBOX"]
    assert [body.split(b"\r\n")[0] for (body, _f, _d) in copied] == [b"Message-ID: <small5@x>"]
    rerun = run_cli("sync", "-c", config_for(src, dst), "-y")
    assert rerun.returncode == 0, rerun.stderr
    assert "2 copied, 1 already present" in summary_line(rerun.stdout)
    assert snapshot(dst) == snapshot(src)


@pytest.mark.slow
def test_streamed_append_whose_answer_is_lost_is_not_duplicated(
    accounts: AccountFactory, config_for: ConfigFor
) -> None:
    src, dst = accounts(2)
    src.seed([large(5, 5_000_000), large(6, 5_000_000)])
    # The first worker connection's first APPEND lands, and its OK never reaches fastsync.
    with CountingProxy(dst.server.port, faults=lambda n: Fault(lose_append_reply=True) if n == 1 else None) as proxy:
        config = config_for(src, dst, extra={"dst": {"server": f"127.0.0.1:{proxy.port}", "timeout_s": 5}})
        result = run_cli("sync", "-c", config, "-y", "--procs", "1")
    assert proxy.faults_done == 1
    assert result.returncode == 0, result.stderr
    assert "retrying in" in result.stderr
    assert snapshot(dst) == snapshot(src)


def test_a_streamed_body_goes_on_as_it_arrives(accounts: AccountFactory, config_for: ConfigFor) -> None:
    """A source that pauses in the middle of a large message: what it sent up to the pause
    reaches the destination during the pause.  The pause falls 60,000 bytes into the ninth
    64 KiB of the body: a relay that waited for whole chunks of 64 KiB passed 8 of them on
    (524,288 bytes) and held the rest back, which on a 1 MB/s link kept the destination's
    side 65 ms behind the source's, to the last byte."""
    src, dst = accounts(2)
    marker = b"PAUSE-HERE"
    head = b"Message-ID: <paused@x>\r\nSubject: paused\r\n\r\n"
    paused_at = 8 * 65536 + 60_000
    line = b"x" * 76 + b"\r\n"
    room = paused_at - len(head)
    filler = line * (room // len(line)) + b"y" * (room % len(line))
    body = head + filler + marker + b"\r\n" + line * 15_000
    assert body.index(marker) == paused_at and len(body) > STREAM_MESSAGE_BYTES
    src.seed([Message("INBOX", body, ("\\Seen",), WHEN)])
    pausing = CountingProxy(src.server.port, faults=lambda _n: Fault(hold_down=marker, stall_s=4))
    with pausing as src_proxy, CountingProxy(dst.server.port) as dst_proxy:
        extra = {"src": {"server": f"127.0.0.1:{src_proxy.port}"}, "dst": {"server": f"127.0.0.1:{dst_proxy.port}"}}
        process = spawn_sync(config_for(src, dst, extra=extra), "--procs", "1")
        try:
            wait_for(lambda: src_proxy.faults_done, what="the source's pause")
            time.sleep(1.5)  # the source is paused for 4 s: whatever was sent has arrived
            during_pause = sum(size for _t, size in dst_proxy.traffic.to_server)
        finally:
            out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "1 copied" in summary_line(out)
    # Every byte of the body up to the pause (and the commands before it) was passed on.
    assert during_pause >= paused_at, during_pause
    assert snapshot(dst) == snapshot(src)


def test_the_next_unit_is_fetched_while_the_destination_answers_a_streamed_one(
    accounts: AccountFactory, config_for: ConfigFor
) -> None:
    """Once the source has sent a streamed unit's last body, the worker's source connection
    fetches its next unit while the destination still stores the streamed one: the source's
    link has no gap of a round trip and the destination's answer between the two units."""
    src, dst = accounts(2)
    src.seed([large(12, 2_000_000), small(6)])
    # Dovecot's text of an APPEND's tagged OK: the streamed unit's comes first (one worker,
    # streamed units first).
    holding = CountingProxy(dst.server.port, faults=lambda _n: Fault(hold_down=b"Append completed", stall_s=4))
    with CountingProxy(src.server.port, record=True) as src_proxy, holding as dst_proxy:
        extra = {"src": {"server": f"127.0.0.1:{src_proxy.port}"}, "dst": {"server": f"127.0.0.1:{dst_proxy.port}"}}
        process = spawn_sync(config_for(src, dst, extra=extra), "--procs", "1")
        try:
            wait_for(lambda: dst_proxy.faults_done, what="the destination's held answer")
            time.sleep(1.5)  # the answer is held for 4 s
            fetched_meanwhile = any(b"hello 6" in r.server_bytes for r in src_proxy.recordings)
        finally:
            out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "2 copied" in summary_line(out)
    assert fetched_meanwhile
    assert snapshot(dst) == snapshot(src)
