"""COMPRESS=DEFLATE (RFC 4978) against a Dovecot with its imap_zlib plugin.

Every connection sits behind a recording `CountingProxy`: what crossed the wire shows
COMPRESS DEFLATE sent after the login, then only deflated bytes (inflated here, they hold
the commands and replies).  The copy is exact; ``compress: no`` and a server without the
plugin keep connections uncompressed; over implicit TLS and STARTTLS the connection is
compressed inside TLS; a watch (IDLE) over compressed connections still hears of new mail.
The stream and its metering without a server: tests/unit/test_deflate.py.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.harness.corpus import Message
from bench.harness.dovecot import Dovecot
from bench.harness.tcpproxy import CountingProxy, Recording
from fastsync.engine.transfer import STREAM_ABOVE_BYTES
from fastsync.imap import transport
from fastsync.imap.deflate import Deflated
from fastsync.imap.tls import TLSStream
from fastsync.settings.config import Account as Side
from tests.dovecot.accounts import Account, AccountFactory, snapshot
from tests.helpers import run_cli, spawn_sync, wait_for, write_config

WHEN = dt.datetime(2022, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
COMPRESS = b" COMPRESS DEFLATE\r\n"


@pytest.fixture(scope="module")
def zlib_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dovecot]:
    users = {f"z{n}": f"z{n}-pw" for n in range(1, 15)}
    server = Dovecot(tmp_path_factory.mktemp("dovecot-zlib"), users, imap_zlib=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _pair(server: Dovecot, first: int) -> tuple[Account, Account]:
    return (Account(server, f"z{first}", f"z{first}-pw"), Account(server, f"z{first + 1}", f"z{first + 1}-pw"))


def _messages() -> list[Message]:
    out = []
    for n in range(40):
        head = f"Message-ID: <z{n}@x>\r\nSubject: deflate {n}\r\n\r\n".encode()
        # Bytes that deflate well, and bytes that do not (random), bare LFs and NULs kept.
        body = head + b"line of text, the same again\r\n" * (n * 7 + 1) + os.urandom(n * 31) + b"\n\0end\r\n"
        out.append(Message("INBOX" if n % 3 else "Archive", body, ("\\Seen",) if n % 2 else (),
                           WHEN + dt.timedelta(minutes=n)))
    big = b"Message-ID: <zbig@x>\r\n\r\n" + os.urandom(STREAM_ABOVE_BYTES // 2) + b"x\r\n" * STREAM_ABOVE_BYTES
    out.append(Message("INBOX", big, (), WHEN))
    return out


def _after_compress(data: bytes) -> bytes | None:
    """What followed COMPRESS DEFLATE in one direction's bytes, inflated; None without it."""
    at = data.find(COMPRESS)
    if at < 0:
        return None
    return zlib.decompressobj(-15).decompress(data[at + len(COMPRESS):])


def _server_after_ok(recording: Recording) -> bytes:
    """The server's bytes after its tagged OK to COMPRESS, inflated."""
    data = bytes(recording.server_bytes)
    sent = bytes(recording.client_bytes)
    tag = sent[: sent.find(COMPRESS)].rsplit(b"\n", 1)[-1]
    ok = data.find(b"\r\n", data.find(tag + b" OK")) + 2
    return zlib.decompressobj(-15).decompress(data[ok:])


def _sync(tmp_path: Path, src: Account, dst: Account, extra: dict[str, object] | None = None,
          *args: str) -> tuple[object, list[Recording], list[Recording]]:
    with CountingProxy(src.server.port, record=True) as src_proxy, CountingProxy(dst.server.port, record=True) as dst_proxy:
        config = write_config(tmp_path, f"127.0.0.1:{src_proxy.port}", src.user, src.password,
                              f"127.0.0.1:{dst_proxy.port}", dst.user, dst.password, extra=extra)
        result = run_cli("sync", "-c", config, "-y", "--procs", "2", "--state-dir", str(tmp_path / "state"), *args)
        return result, list(src_proxy.recordings), list(dst_proxy.recordings)


def test_both_sides_compress_and_the_copy_is_exact(zlib_server: Dovecot, tmp_path: Path) -> None:
    src, dst = _pair(zlib_server, 1)
    messages = _messages()
    src.seed(messages)
    result, src_wire, dst_wire = _sync(tmp_path, src, dst, None, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)["summary"]
    assert summary["copied"] == len(messages)
    assert snapshot(dst) == snapshot(src)
    # Both sizes are reported: the wire's (deflated) and IMAP's, which holds the messages.
    wire = summary["wire_bytes"]
    assert wire["imap_down"] > summary["copied_bytes"] > wire["down"] > 0
    assert wire["imap_up"] > summary["copied_bytes"] > wire["up"] > 0
    proxied_down = sum(len(r.server_bytes) for r in src_wire + dst_wire)
    proxied_up = sum(len(r.client_bytes) for r in src_wire + dst_wire)
    # What the proxies relayed, but for the LOGOUTs after the last unit's report.
    assert proxied_down * 0.95 <= wire["down"] <= proxied_down
    assert proxied_up * 0.95 <= wire["up"] <= proxied_up
    for recording in src_wire + dst_wire:
        sent = bytes(recording.client_bytes)
        inflated = _after_compress(sent)
        assert inflated is not None, sent[:300]
        # The login came first, in clear text; after the OK nothing more is plain.
        assert sent.find(b"AUTHENTICATE") < sent.find(COMPRESS) or sent.find(b"LOGIN") < sent.find(COMPRESS)
        assert b"LOGOUT" in inflated or b"APPEND" in inflated or b"FETCH" in inflated
        assert b"FETCH" not in sent[sent.find(COMPRESS):] and b"APPEND" not in sent[sent.find(COMPRESS):]
        assert b" OK " in _server_after_ok(recording)
    appends = b"".join(_after_compress(bytes(r.client_bytes)) or b"" for r in dst_wire)
    assert b"APPEND" in appends
    # The large streamed message crossed deflated: far fewer bytes on the wire than in it.
    fetched = sum(len(r.server_bytes) for r in src_wire)
    assert fetched < sum(len(m.body) for m in messages)
    check = run_cli("check", "-c", tmp_path / "fastsync.json", "--bodies")
    assert check.returncode == 0, check.stdout + check.stderr


def test_compress_no_keeps_it_off_per_side(zlib_server: Dovecot, tmp_path: Path) -> None:
    src, dst = _pair(zlib_server, 3)
    messages = _messages()[:10]
    src.seed(messages)
    result, src_wire, dst_wire = _sync(tmp_path, src, dst, {"src": {"compress": "no"}})
    assert result.returncode == 0, result.stderr
    assert snapshot(dst) == snapshot(src)
    assert src_wire and all(COMPRESS not in bytes(r.client_bytes) for r in src_wire)
    assert dst_wire and all(COMPRESS in bytes(r.client_bytes) for r in dst_wire)
    # The flag says the same for the destination.
    src2, dst2 = _pair(zlib_server, 5)
    src2.seed(messages)
    result, src_wire, dst_wire = _sync(tmp_path, src2, dst2, None, "--dest-compress", "no")
    assert result.returncode == 0, result.stderr
    assert all(COMPRESS in bytes(r.client_bytes) for r in src_wire)
    assert all(COMPRESS not in bytes(r.client_bytes) for r in dst_wire)


def test_a_server_without_the_plugin_is_not_asked(accounts: AccountFactory, tmp_path: Path) -> None:
    src, dst = accounts(2)
    messages = _messages()[:10]
    src.seed(messages)
    result, src_wire, dst_wire = _sync(tmp_path, src, dst)
    assert result.returncode == 0, result.stderr
    assert snapshot(dst) == snapshot(src)
    assert src_wire and dst_wire
    assert all(b"COMPRESS" not in bytes(r.client_bytes) for r in src_wire + dst_wire)


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_compression_runs_inside_tls(mode: str, zlib_server: Dovecot) -> None:
    user = Account(zlib_server, "z7", "z7-pw")
    port = zlib_server.tls_port if mode == "implicit" else zlib_server.port
    assert port is not None
    side = Side("src", "source", zlib_server.host, port, user.user, user.password, mode, str(zlib_server.ca_file), 10.0)
    client = transport.connect(side, None, None)
    try:
        stream = client._imap.sock
        assert isinstance(stream, Deflated)
        assert isinstance(stream._sink, TLSStream)
        assert client.select_folder("INBOX", readonly=True)[b"EXISTS"] == 0
        assert client.deflated is not None and client.deflated.wire_down > 0
    finally:
        client.logout()


def test_sync_over_tls_with_compression_is_exact(zlib_server: Dovecot, tmp_path: Path) -> None:
    src, dst = _pair(zlib_server, 8)
    messages = _messages()
    src.seed(messages)
    extra = {
        "src": {"server": f"127.0.0.1:{zlib_server.tls_port}", "tls": "implicit", "ca_file": str(zlib_server.ca_file)},
        "dst": {"tls": "starttls", "ca_file": str(zlib_server.ca_file)},
    }
    config = write_config(tmp_path, src.address, src.user, src.password, dst.address, dst.user, dst.password,
                          extra=extra)
    result = run_cli("sync", "-c", config, "-y", "--procs", "2")
    assert result.returncode == 0, result.stderr
    assert snapshot(dst) == snapshot(src)


def test_watch_hears_new_mail_over_compressed_connections(zlib_server: Dovecot, tmp_path: Path) -> None:
    src, dst = _pair(zlib_server, 10)
    src.seed(_messages()[:3])
    with CountingProxy(src.server.port, record=True) as src_proxy, CountingProxy(dst.server.port, record=True) as dst_proxy:
        config = write_config(tmp_path, f"127.0.0.1:{src_proxy.port}", src.user, src.password,
                              f"127.0.0.1:{dst_proxy.port}", dst.user, dst.password)
        log = tmp_path / "watch.log"
        process = spawn_sync(config, "--watch", "--procs", "2", "--state-dir", str(tmp_path / "state"),
                             "--log-file", str(log), "--log-format", "json")
        try:
            def started() -> bool:
                assert process.poll() is None, process.communicate()
                return log.exists() and "watch started" in log.read_text()

            wait_for(started, timeout_s=60, what="the watch to start")
            src.seed([Message("INBOX", b"Message-ID: <late@x>\r\n\r\nlate\r\n", (), WHEN)])
            wait_for(lambda: sum(snapshot(dst).get("INBOX", {}).values()) == 3, timeout_s=30,
                     what="the new message")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGINT)
            process.communicate(timeout=60)
        assert all(COMPRESS in bytes(r.client_bytes) for r in src_proxy.recordings)
        idled = b"".join(_after_compress(bytes(r.client_bytes)) or b"" for r in src_proxy.recordings)
        assert b"IDLE" in idled or b"NOTIFY" in idled


def test_watch_over_tls_and_compression(zlib_server: Dovecot, tmp_path: Path) -> None:
    """IDLE's wait polls the TCP socket under TLS under DEFLATE, and reads what came."""
    src, dst = _pair(zlib_server, 12)
    ca = str(zlib_server.ca_file)
    tls = {"server": f"127.0.0.1:{zlib_server.tls_port}", "tls": "implicit", "ca_file": ca}
    config = write_config(tmp_path, src.address, src.user, src.password, dst.address, dst.user, dst.password,
                          extra={"src": tls, "dst": tls})
    log = tmp_path / "watch.log"
    process = spawn_sync(config, "--watch", "--procs", "1", "--state-dir", str(tmp_path / "state"),
                         "--log-file", str(log), "--log-format", "json")
    try:
        def started() -> bool:
            assert process.poll() is None, process.communicate()
            return log.exists() and "watch started" in log.read_text()

        wait_for(started, timeout_s=60, what="the watch to start")
        before = sum(snapshot(dst).get("INBOX", {}).values())
        src.seed([Message("INBOX", b"Message-ID: <tls-late@x>\r\n\r\nlate\r\n", (), WHEN)])
        wait_for(lambda: sum(snapshot(dst).get("INBOX", {}).values()) == before + 1, timeout_s=30,
                 what="the new message")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGINT)
        process.communicate(timeout=60)
