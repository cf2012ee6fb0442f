"""Replies no server should send, each an ordinary condition with one line and its exit
code, never an internal error.  Against a real Dovecot behind a proxy that alters them."""

from __future__ import annotations

import datetime as dt
import json

from conftest import AccountFactory, ConfigFor
from helpers import run_cli, snapshot

from bench.corpus import Message
from bench.tcpproxy import CountingProxy


def _seed(account: object, count: int = 3) -> bytes:
    """Messages whose sizes differ from each other; returns the body of the first."""
    bodies = [f"Message-ID: <abs{n}@x>\r\nSubject: {n}\r\n\r\n{'z' * (50 + n)}\r\n".encode() for n in range(count)]
    account.seed([Message("INBOX", body, (), dt.datetime(2023, 1, 1, tzinfo=dt.UTC)) for body in bodies])  # type: ignore[attr-defined]
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
