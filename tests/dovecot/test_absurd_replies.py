"""Replies no server should send, each an ordinary condition with one line and its exit
code, never an internal error.  Against a real Dovecot behind a proxy that alters them."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bench.harness.corpus import Message
from bench.harness.tcpproxy import CountingProxy, Fault
from tests.dovecot.accounts import AccountFactory, ConfigFor, message_count, snapshot
from tests.helpers import run_cli


def _seed(account: Any, count: int = 3) -> bytes:
    """Messages whose sizes differ from each other; returns the body of the first."""
    bodies = [f"Message-ID: <abs{n}@x>\r\nSubject: {n}\r\n\r\n{'z' * (50 + n)}\r\n".encode() for n in range(count)]
    account.seed([Message("INBOX", body, (), dt.datetime(2023, 1, 1, tzinfo=dt.UTC)) for body in bodies])
    return bodies[0]


def test_an_rfc822_size_above_2_64_is_no_internal_error(accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst = accounts(2)
    body = _seed(src)
    huge = str(2**64 + 5).encode()
    with CountingProxy(src.server.port, replace_down=(b"RFC822.SIZE %d" % len(body), b"RFC822.SIZE " + huge)) as proxy:
        config = config_for(src, dst, extra={"src": {"server": f"127.0.0.1:{proxy.port}"}})
        # --max-size: a size the protocol does not allow decides nothing, the message is copied.
        result = run_cli("sync", "-c", config, "-y", "--json", "--max-size", "1M")
        check = run_cli("check", "-c", config, "--json")
    assert result.returncode == 0, result.stderr
    assert "internal error" not in result.stderr + check.stderr
    document = json.loads(result.stdout)
    assert document["exit_code"] == result.returncode
    json.loads(check.stdout)
    assert snapshot(dst) == snapshot(src)


def _run_behind(
    src: Any, dst: Any, config_for: ConfigFor, proxy_side: str, **proxy: Any
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """A sync with *proxy_side*'s server behind a `CountingProxy(**proxy)`, timeouts of 5 s."""
    server = (src if proxy_side == "src" else dst).server
    with CountingProxy(server.port, **proxy) as relay:
        config = config_for(src, dst, extra={proxy_side: {"server": f"127.0.0.1:{relay.port}", "timeout_s": 5}})
        result = run_cli("sync", "-c", config, "-y", "--procs", "1")
    return result, config


@pytest.mark.parametrize(("side", "anchor"), [("src", b"* LIST "), ("dst", b"* OK [CAPABILITY")])
def test_a_response_line_over_1_mb(anchor: bytes, side: str, accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst = accounts(2)
    _seed(src)
    line = b"* OK " + b"x" * (1 << 21) + b"\r\n"
    result, _config = _run_behind(src, dst, config_for, side, replace_down=(anchor, line + anchor))
    assert result.returncode == 3, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "the server sent a response line of more than 1000000 bytes (starting b'* OK xxx" in last, last
    assert last.startswith(f"error: {'source' if side == 'src' else 'destination'} (127.0.0.1:")


def test_a_server_that_stalls_right_after_login(accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst = accounts(2)
    _seed(src)
    with CountingProxy(src.server.port, record=True) as recorder:
        config = config_for(src, dst, extra={"src": {"server": f"127.0.0.1:{recorder.port}"}})
        assert run_cli("show", "-c", config).returncode == 0
    # Where the server's reply to the login ends, on the first connection.
    login = re.search(rb"\r\n[A-Za-z0-9]+ OK [^\r\n]*Logged in[^\r\n]*\r\n", bytes(recorder.recordings[0].server_bytes))
    assert login is not None and b"Logged in" in login.group(), login
    stall = Fault(stall_after_down=login.end() + 1, stall_s=20)
    result, _config = _run_behind(src, dst, config_for, "src", faults=lambda _n: stall)
    assert result.returncode == 3, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: source (127.0.0.1:") and "no answer within 5 s" in last, last


@pytest.mark.parametrize("procs", ["1", "2"])
def test_a_malformed_appenduid_is_read_as_none_and_nothing_is_appended_twice(
    procs: str, accounts: AccountFactory, config_for: ConfigFor
) -> None:
    src, dst = accounts(2)
    _seed(src, 6)
    # "[APPENDUID 1700000000 1:3,]": a uid-set with an empty last member (RFC 4315 section 4).
    with CountingProxy(dst.server.port, replace_down=(b"] Append completed", b",] Append completed"),
                       record=True) as proxy:
        config = config_for(src, dst, extra={"dst": {"server": f"127.0.0.1:{proxy.port}"}})
        log = config.parent / "run.log"
        result = run_cli("sync", "-c", config, "-y", "--procs", procs, "--log-file", log)
        rerun = run_cli("sync", "-c", config, "-y", "--procs", procs)
    assert b",] Append completed" in b"".join(bytes(r.server_bytes) for r in proxy.recordings)
    # The worker that read the reply carried on: no crash after the server had stored the copies.
    assert "worker exit" not in log.read_text(), log.read_text()
    assert result.returncode == 0, result.stderr
    assert "internal error" not in result.stderr
    assert message_count(dst) == 6
    assert snapshot(dst) == snapshot(src)
    assert "0 copied, 6 already present" in rerun.stdout, rerun.stdout
