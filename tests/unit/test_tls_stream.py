"""TLS through OpenSSL's memory BIOs (`transport.TLSStream`) and coalesced APPEND writes.

Unit tests speak to a Python TLS server over a socket pair (certificates from the bench's
test CA): data of every size arrives exactly both ways, a clean close and a truncated
stream both read as EOF, a certificate for another name is refused and the socket closed.
Against Dovecot (tests/dovecot/test_tls_stream.py), a sync over implicit TLS and STARTTLS
copies small, batched-large and streamed messages exactly, and both connections run over a
`TLSStream`.
"""

from __future__ import annotations

import os
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.harness.dovecot import make_certificates
from fastsync.settings.config import Account
from fastsync.imap import transport
from fastsync.imap.tls import TLS_WRITE_BYTES, TLSStream
from fastsync.imap.appends import APPEND_WRITE_BYTES, _Writes


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return make_certificates(tmp_path_factory.mktemp("tls"))


Serve = Callable[[ssl.SSLSocket], object]


@pytest.fixture
def tls_pair(certificates: tuple[Path, Path, Path]) -> Iterator[Callable[[Serve, str], tuple[TLSStream, list[object]]]]:
    """``connect(serve, server_hostname)``: a TLSStream whose peer runs *serve* in a thread
    (its return value lands in the list once the thread is done)."""
    ca_file, cert, key = certificates
    threads: list[threading.Thread] = []

    def connect(serve: Serve, server_hostname: str = "localhost") -> tuple[TLSStream, list[object]]:
        ours, theirs = socket.socketpair()
        ours.settimeout(10)
        theirs.settimeout(10)
        server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_context.load_cert_chain(cert, key)
        results: list[object] = []

        def run() -> None:
            try:
                with server_context.wrap_socket(theirs, server_side=True) as tls:
                    results.append(serve(tls))
            except (OSError, ssl.SSLError) as exc:
                results.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append(thread)
        context = ssl.create_default_context(cafile=str(ca_file))
        return TLSStream(ours, context, server_hostname), results

    yield connect
    for thread in threads:
        thread.join(10)


PAYLOAD = random.Random(7).randbytes(3 * TLS_WRITE_BYTES + 12345)


def test_what_the_server_sends_arrives_exactly_then_a_clean_close_is_eof(tls_pair) -> None:  # type: ignore[no-untyped-def]
    def serve(tls: ssl.SSLSocket) -> None:
        for start in range(0, len(PAYLOAD), 7000):  # records of odd sizes
            tls.sendall(PAYLOAD[start : start + 7000])
        tls.unwrap()  # close_notify

    stream, _ = tls_pair(serve)
    assert stream.version() in ("TLSv1.2", "TLSv1.3")
    file = stream.makefile("rb")
    assert file.read(len(PAYLOAD)) == PAYLOAD
    assert file.read(1) == b""
    stream.close()


def test_a_truncated_stream_reads_as_eof(tls_pair) -> None:  # type: ignore[no-untyped-def]
    def serve(tls: ssl.SSLSocket) -> None:
        tls.sendall(b"* OK hello\r\npartial")
        # The TCP connection ends without close_notify.
        tls.shutdown(socket.SHUT_RDWR)

    stream, _ = tls_pair(serve)
    file = stream.makefile("rb")
    assert file.readline() == b"* OK hello\r\n"
    assert file.read(100) == b"partial"
    assert file.read(1) == b""
    stream.close()


@pytest.mark.parametrize("size_bytes", [1, 5000, TLS_WRITE_BYTES, 3 * TLS_WRITE_BYTES + 1])
def test_sendall_arrives_exactly(tls_pair, size_bytes: int) -> None:  # type: ignore[no-untyped-def]
    data = PAYLOAD[:size_bytes]

    def serve(tls: ssl.SSLSocket) -> bytes:
        received = bytearray()
        while len(received) < size_bytes:
            part = tls.recv(65536)
            if not part:
                break
            received += part
        tls.sendall(b"done")
        return bytes(received)

    stream, results = tls_pair(serve)
    stream.sendall(memoryview(data))
    assert stream.makefile("rb").read(4) == b"done"
    stream.close()
    deadline = time.monotonic() + 10
    while not results and time.monotonic() < deadline:
        time.sleep(0.02)
    assert results == [data]


def test_a_certificate_for_another_name_is_refused_and_the_socket_closed(tls_pair) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_pair(lambda tls: None, "imap.example.org")


class _Recorder:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sent.append(bytes(data))


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [
        # Small pieces are joined until a write reaches APPEND_WRITE_BYTES.
        ([10, 20, 30], [60]),
        ([APPEND_WRITE_BYTES - 10, 5, 5, 7], [APPEND_WRITE_BYTES, 7]),
        # A piece that large on its own goes alone, after what was pending.
        ([10, APPEND_WRITE_BYTES, 3], [10, APPEND_WRITE_BYTES, 3]),
        ([APPEND_WRITE_BYTES + 1], [APPEND_WRITE_BYTES + 1]),
        ([], []),
    ],
)
def test_append_pieces_are_coalesced(sizes: list[int], expected: list[int]) -> None:
    recorder = _Recorder()
    writes = _Writes(recorder)  # type: ignore[arg-type]
    pieces = [bytes([n % 251]) * size for n, size in enumerate(sizes)]
    for piece in pieces:
        writes.add(piece)
    writes.flush()
    assert [len(s) for s in recorder.sent] == expected
    assert b"".join(recorder.sent) == b"".join(pieces)


def test_connections_share_a_context_per_trust_store(certificates: tuple[Path, Path, Path], tmp_path: Path) -> None:
    ca_file = str(certificates[0])

    def account(ca: str | None) -> Account:
        return Account("src", "source", "127.0.0.1", 993, "u", "p", "implicit", ca, 10.0)

    shared = transport.tls_context(account(ca_file))
    assert transport.tls_context(account(ca_file)) is shared
    assert shared.verify_mode == ssl.CERT_REQUIRED and shared.check_hostname
    assert shared.minimum_version == ssl.TLSVersion.TLSv1_2
    assert transport.tls_context(account(None)) is not shared
    # A CA file written again is read again.
    copy = tmp_path / "ca.pem"
    copy.write_bytes(Path(ca_file).read_bytes())
    first = transport.tls_context(account(str(copy)))
    os.utime(copy, ns=(1, 1))
    assert transport.tls_context(account(str(copy))) is not first
