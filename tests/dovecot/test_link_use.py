"""How fastsync keeps capped links busy (issue 31), read from what proxies saw, never from
wall times: a streamed message's source download and destination upload overlap, and
small messages travel in units small enough that every worker gets several.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import subprocess

import pytest

from bench.harness.corpus import Message
from bench.harness.replyproxy import Edit, EditingProxy
from bench.harness.tcpproxy import Recording
from bench.harness.wanproxy import WanProxy, WireLog
from fastsync.rules.plan import BATCH_UNIT_MIN_BYTES, UNIT_MAX_BYTES
from tests.dovecot.accounts import Account, AccountFactory, ConfigFor, snapshot
from tests.dovecot.test_streaming import large
from tests.helpers import run_cli, summary_line
from tests.wire import Command, commands

WHEN = dt.datetime(2023, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc)


def _medium(n: int, folder: str = "INBOX") -> Message:
    """About 50 KB of text: a small message (batched), as most mail is."""
    body = f"Message-ID: <m{n}@x>\r\nSubject: medium {n}\r\n\r\n".encode() + (b"%05d " % n) * 8_300 + b"\r\n"
    return Message(folder, body, ("\\Seen",), WHEN + dt.timedelta(minutes=n))


def _recorded_sync(
    src: Account, dst: Account, config_for: ConfigFor, procs: int, sides: tuple[str, ...] = ("dst",),
    down: Edit | None = None,
) -> tuple[subprocess.CompletedProcess[str], list[Recording]]:
    """``sync -y --procs N`` through a recording proxy in front of each of *sides* (the
    server's lines edited by *down*), checked exit 0 and exact; what the proxies recorded."""
    accounts = {"src": src, "dst": dst}
    with contextlib.ExitStack() as stack:
        proxies = {side: stack.enter_context(EditingProxy(accounts[side].server.port, record=True, down=down))
                   for side in sides}
        extra = {side: {"server": f"127.0.0.1:{proxy.port}"} for side, proxy in proxies.items()}
        result = run_cli("sync", "-c", config_for(src, dst, extra=extra), "-y", "--procs", str(procs))
    assert result.returncode == 0, result.stderr
    assert snapshot(dst) == snapshot(src)
    return result, [r for proxy in proxies.values() for r in proxy.recordings]


def _appends(recordings: list[Recording]) -> list[Command]:
    return [c for r in recordings for c in commands(bytes(r.client_bytes)) if c.name == "APPEND"]


def test_a_streamed_message_is_uploaded_while_it_downloads(accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst = accounts(2)
    message = large(1, 3_000_000)
    src.seed([message])
    src_log, dst_log = WireLog(), WireLog()
    # 2 MB/s per connection and direction: the message takes 1.5 s on each link.
    with WanProxy(src.server.host, src.server.port, 0.002, 2_000_000, src_log) as src_proxy, \
            WanProxy(dst.server.host, dst.server.port, 0.002, 2_000_000, dst_log) as dst_proxy:
        extra = {"src": {"server": f"127.0.0.1:{src_proxy.port}"}, "dst": {"server": f"127.0.0.1:{dst_proxy.port}"}}
        result = run_cli("sync", "-c", config_for(src, dst, extra=extra), "-y", "--procs", "1")
    assert result.returncode == 0, result.stderr
    assert snapshot(dst) == snapshot(src)
    down = [c for c in src_log.chunks if c.direction == "down"]
    up = [c for c in dst_log.chunks if c.direction == "up"]
    assert sum(c.size_bytes for c in down) > len(message.body) and sum(c.size_bytes for c in up) > len(message.body)
    # The destination had received a third of the body before the source's proxy released
    # the last third of it: the two links carried the message at once, not in turns.
    third = len(message.body) // 3
    uploaded, upload_third_s = 0, 0.0
    for chunk in up:
        uploaded += chunk.size_bytes
        if uploaded >= third:
            upload_third_s = chunk.sent_s
            break
    downloaded_late = sum(c.size_bytes for c in down if c.sent_s > upload_third_s)
    assert downloaded_late >= third, (downloaded_late, third)


def test_small_messages_go_in_units_that_every_worker_gets_several_of(
    accounts: AccountFactory, config_for: ConfigFor,
) -> None:
    src, dst = accounts(2)
    messages = [_medium(n) for n in range(80)]  # 4 MB: four units of 1 MiB before issue 31
    total = sum(len(m.body) for m in messages)
    assert total > 3 * UNIT_MAX_BYTES
    src.seed(messages)
    result, recordings = _recorded_sync(src, dst, config_for, procs=2)
    assert "80 copied" in summary_line(result.stdout)
    appends = _appends(recordings)
    # Units of BATCH_UNIT_MIN_BYTES (the floor: 2 workers x 8 units would be smaller), one
    # MULTIAPPEND each.
    assert len(appends) >= total // BATCH_UNIT_MIN_BYTES, len(appends)
    assert all(len(a.literals) * len(messages[0].body) <= BATCH_UNIT_MIN_BYTES for a in appends)


def test_no_capability_command_when_the_greeting_lists_them(accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst = accounts(2)
    src.seed([_medium(n) for n in range(3)])
    _result, recordings = _recorded_sync(src, dst, config_for, procs=1, sides=("src", "dst"))
    assert all(bytes(r.server_bytes).startswith(b"* OK [CAPABILITY IMAP4rev1 ") for r in recordings)
    # Dovecot's greeting names its capabilities (RFC 3501 section 7.1): every connection
    # logs in with its first command, a round trip sooner.
    firsts = [next(iter(commands(bytes(r.client_bytes)))).name for r in recordings]
    assert len(firsts) >= 4 and set(firsts) == {"AUTHENTICATE"}, firsts


def test_each_folders_partly_filled_last_unit_is_copied_after_the_full_ones(
    accounts: AccountFactory, config_for: ConfigFor,
) -> None:
    src, dst = accounts(2)
    # Two folders of six 50 KB messages: units of 256 KiB (`plan.BATCH_UNIT_MIN_BYTES`)
    # take five, so each folder ends on a unit of one.
    src.seed([_medium(n, "INBOX") for n in range(6)] + [_medium(n, "Archive") for n in range(6, 12)])
    result, recordings = _recorded_sync(src, dst, config_for, procs=1)
    assert "12 copied" in summary_line(result.stdout)
    appends = _appends(recordings)
    # One worker copies the units in the order the pool sends them: both full units, then
    # the two of one message; with --copy-while-planning (`syncpass.CopyWhilePlanning`),
    # Archive, the cheaper folder, is planned and copied first, then INBOX, each folder's
    # full unit before its unit of one message.
    sizes = [len(a.literals) for a in appends]
    assert sizes in ([5, 5, 1, 1], [5, 1, 5, 1]), [a.text[:60] for a in appends]
    assert sizes[-1] == 1


def _without_sasl_ir(line: bytes) -> bytes:
    return line.replace(b" SASL-IR", b"") if line.startswith(b"* OK [CAPABILITY ") else line


@pytest.mark.parametrize("announced", [True, False])
def test_a_login_is_one_round_trip_where_the_server_takes_an_initial_response(
    announced: bool, accounts: AccountFactory, config_for: ConfigFor,
) -> None:
    """With SASL-IR (RFC 4959) in the greeting, AUTHENTICATE PLAIN carries its response
    and the server answers it at once; without, the server's empty challenge is answered."""
    src, dst = accounts(2)
    src.seed([_medium(n) for n in range(3)])
    edit = None if announced else _without_sasl_ir
    _result, recordings = _recorded_sync(src, dst, config_for, procs=1, sides=("src", "dst"), down=edit)
    assert len(recordings) >= 4
    for recording in recordings:
        server = bytes(recording.server_bytes)
        [login] = [c for c in commands(bytes(recording.client_bytes)) if c.name == "AUTHENTICATE"]
        words = login.text.split()
        assert words[2] == b"PLAIN"
        if announced:
            assert len(words) == 4 and b"\r\n+" not in server, (login.text, server[:300])
        else:
            assert len(words) == 3 and b"\r\n+ " in server
        # The credentials travel base64-encoded only, never in clear in the command line.
        assert src.password.encode() not in login.text and dst.password.encode() not in login.text
