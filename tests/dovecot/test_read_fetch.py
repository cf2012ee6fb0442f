"""FETCH replies read without imaplib's general reader (`transport.read_fetch`), on Dovecot.

The fast path reads FETCH responses and the command's tagged reply; everything else goes
to imaplib as before.  A proxy in front of the source slips untagged lines of other kinds
between Dovecot's FETCH responses (as a server may send at any time, RFC 3501 section
7), and a source that is slowed to a trickle delivers lines in pieces: the copy is exact
either way, and the lines reach imaplib's bookkeeping.
"""

from __future__ import annotations

import datetime as dt

import pytest

from bench.harness.corpus import Message
from bench.harness.tcpproxy import CountingProxy
from bench.harness.wanproxy import WanProxy
from tests.dovecot.accounts import AccountFactory, ConfigFor, snapshot
from tests.helpers import run_cli, summary_line

WHEN = dt.datetime(2021, 9, 8, 7, 6, 5, tzinfo=dt.timezone(dt.timedelta(hours=2)))


def _messages(count: int) -> list[Message]:
    return [
        Message("INBOX", f"Message-ID: <rf{n}@x>\r\nSubject: {n}\r\n\r\n{'z' * (n * 37)}\r\n".encode(),
                ("\\Flagged", f"Tag{n % 3}"), WHEN + dt.timedelta(hours=n))
        for n in range(count)
    ]


@pytest.mark.parametrize("extra", [
    b"* OK [ALERT] maintenance tonight\r\n", b"* 3 RECENT\r\n* OK still here\r\n",
    # Another client's flag change, told unasked: the messages after it are read the general way.
    b"* 1 FETCH (FLAGS (\\Seen))\r\n",
])
def test_untagged_lines_between_fetch_responses(extra: bytes, accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst = accounts(2)
    archived = [Message("Archive", m.body.replace(b"<rf", b"<ar"), m.flags, m.internaldate) for m in _messages(5)]
    src.seed(_messages(40) + archived)
    # Before the response of message 2, in every FETCH of every connection to the source:
    # the planner's pipelined survey of both folders as well as the workers' copy.
    with CountingProxy(src.server.port, replace_down=(b"* 2 FETCH (", extra + b"* 2 FETCH (")) as proxy:
        config = config_for(src, dst, extra={"src": {"server": f"127.0.0.1:{proxy.port}"}})
        result = run_cli("sync", "-c", config, "-y", "--procs", "1")
        rerun = run_cli("sync", "-c", config, "-y", "--procs", "1")
        check = run_cli("check", "-c", config)
    assert result.returncode == 0, result.stderr
    assert "45 copied" in summary_line(result.stdout)
    # Every source identity was read: nothing is copied twice.
    assert "0 copied, 45 already present" in summary_line(rerun.stdout), rerun.stdout
    assert check.returncode == 0, check.stdout + check.stderr
    assert snapshot(dst) == snapshot(src)


@pytest.mark.slow
def test_lines_that_arrive_in_pieces(accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst = accounts(2)
    src.seed(_messages(60))
    # 20 KB/s per connection: lines and literals reach fastsync a few bytes at a time.
    with WanProxy(src.server.host, src.server.port, 0.001, 20_000) as slow:
        config = config_for(src, dst, extra={"src": {"server": f"127.0.0.1:{slow.port}"}})
        result = run_cli("sync", "-c", config, "-y", "--procs", "2")
    assert result.returncode == 0, result.stderr
    assert snapshot(dst) == snapshot(src)
