"""TLS through OpenSSL's memory BIOs (`transport.TLSStream`) and coalesced APPEND writes.

Against Dovecot, a sync over implicit TLS and STARTTLS copies small, batched-large and
streamed messages exactly, and both connections run over a `TLSStream`.  The stream on its
own, against a Python TLS server: tests/unit/test_tls_stream.py.
"""

from __future__ import annotations

import datetime as dt

import pytest

from bench.harness.corpus import Message
from fastsync.settings.config import Account
from fastsync.imap import transport
from fastsync.imap.tls import TLSStream
from fastsync.imap.appends import APPEND_WRITE_BYTES
from fastsync.engine.transfer import STREAM_ABOVE_BYTES
from tests.dovecot.accounts import AccountFactory, ConfigFor, snapshot
from tests.helpers import run_cli, summary_line


WHEN = dt.datetime(2021, 5, 6, 7, 8, 9, tzinfo=dt.UTC)


def _message(n: int, size_bytes: int) -> Message:
    head = f"Message-ID: <tls{n}@x>\r\nSubject: tls {n}\r\n\r\n".encode()
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\r\n"
    body = head + line * max(1, (size_bytes - len(head)) // len(line))
    return Message("INBOX", body, ("\\Seen", "Tag") if n % 2 else (), WHEN + dt.timedelta(minutes=n))


def test_sync_over_implicit_tls_and_starttls_copies_exactly(accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst = accounts(2)
    messages = [_message(n, 200 + 397 * n) for n in range(60)]
    messages += [_message(100, APPEND_WRITE_BYTES + 1000), _message(101, STREAM_ABOVE_BYTES + 1000)]
    src.seed(messages)
    server = src.server
    extra = {
        "src": {"server": f"127.0.0.1:{server.tls_port}", "tls": "implicit", "ca_file": str(server.ca_file)},
        "dst": {"tls": "starttls", "ca_file": str(server.ca_file)},
    }
    result = run_cli("sync", "-c", config_for(src, dst, extra=extra), "-y", "--procs", "2")
    assert result.returncode == 0, result.stderr
    assert f"{len(messages)} copied" in summary_line(result.stdout)
    assert snapshot(dst) == snapshot(src)


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_connections_run_over_the_stream(mode: str, accounts: AccountFactory) -> None:
    (user,) = accounts(1)
    server = user.server
    port = server.tls_port if mode == "implicit" else server.port
    assert port is not None
    account = Account("src", "source", server.host, port, user.user, user.password, mode, str(server.ca_file), 10.0)
    client = transport.connect(account, None, None)
    try:
        assert isinstance(client._imap.sock, TLSStream)
        assert client._imap.sock.version() in ("TLSv1.2", "TLSv1.3")
        assert client.select_folder("INBOX", readonly=True)[b"EXISTS"] == 0
    finally:
        client.logout()
