"""TLS for IMAP connections through OpenSSL's memory BIOs: fewer, larger system calls.

Protocol edge (`fastsync/imap/`), below `transport.py`, which puts a `TLSStream` where
imaplib expects its socket, for implicit TLS and STARTTLS alike; the verifying contexts
(`tls_context`) and what a refused certificate means (`describe_certificate_error`).
"""

from __future__ import annotations

import functools
import io
import os
import socket
import ssl
from typing import Any

from fastsync.settings.config import Account

# A TLS connection's reads take up to this much of what the kernel holds at once, and its
# writes encrypt up to this much plaintext into one send (see `TLSStream`).
TLS_READ_BYTES = 64 * 1024
TLS_WRITE_BYTES = 256 * 1024
# The buffer of a TLS connection's line reader (imaplib's readline): each refill decrypts
# every whole record received, up to this much.
READ_BUFFER_BYTES = 64 * 1024


class TLSStream:
    """A TLS connection (verification as *context* says) over a TCP socket, by way of
    OpenSSL's memory BIOs (`ssl.SSLObject`), with the few socket methods imaplib uses.

    `ssl.SSLSocket` lets OpenSSL read the socket itself, and OpenSSL reads each record in
    two system calls, its 5-byte header and then its body (Python cannot turn on its
    read-ahead), and writes each record with one: copying 2,000 realistic messages (80 MB)
    over TLS on both sides took 47,000 reads and 9,000 writes.  Here a read takes whatever
    the kernel holds, up to `TLS_READ_BYTES`, and OpenSSL decrypts from memory; a write
    encrypts up to `TLS_WRITE_BYTES` into one send (with `appends.send_append`'s coalescing: 5,700
    reads and 1,100 sends for the same copy), which also wakes the server less often.
    Verification is the context's, as with SSLSocket: the certificate chain and the host
    name are checked during the handshake, and a failure raises the same exceptions.
    """

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, server_hostname: str) -> None:
        self._sock = sock
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_hostname=server_hostname)
        self._buffer = bytearray(TLS_READ_BYTES)
        try:
            self._call(self._tls.do_handshake)
        except BaseException:
            sock.close()
            raise

    def _call(self, operation: Any, *args: Any) -> Any:
        """Run an SSLObject operation, feeding it from the socket until it has what it needs."""
        while True:
            try:
                result = operation(*args)
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()
                continue
            self._flush()
            return result

    def _fill(self) -> None:
        size = self._sock.recv_into(self._buffer)
        if size:
            self._incoming.write(memoryview(self._buffer)[:size])
        elif self._incoming.eof:
            raise ssl.SSLEOFError("EOF occurred in violation of protocol")
        else:
            # OpenSSL then tells a clean close (close_notify) from a truncated stream.
            self._incoming.write_eof()

    def _flush(self) -> None:
        if self._outgoing.pending:
            self._sock.sendall(self._outgoing.read())

    def recv_into(self, buffer: Any, nbytes: int = 0) -> int:
        """Decrypt into *buffer* every whole record already received, up to *nbytes*: a
        server sends records of a few KB, and one call per record was most of the cost of
        reading through TLS in Python."""
        nbytes = nbytes or len(buffer)
        view = memoryview(buffer)
        read = self._tls.read
        got = 0
        while True:
            try:
                got += int(read(nbytes - got, view[got:nbytes]))
            except ssl.SSLWantReadError:
                if got:
                    return got
                self._flush()
                self._fill()
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                # The end of the stream, clean or not: as SSLSocket with suppress_ragged_eofs,
                # imaplib then sees EOF and says so.
                return got
            if got >= nbytes or not self._incoming.pending:
                return got

    def sendall(self, data: Any) -> None:
        with memoryview(data) as view, view.cast("B") as octets:
            for start in range(0, len(octets), TLS_WRITE_BYTES):
                self._call(self._tls.write, octets[start : start + TLS_WRITE_BYTES])

    def makefile(self, mode: str = "rb") -> io.BufferedReader:
        if mode != "rb":
            raise ValueError(f"unsupported mode {mode!r}")
        return io.BufferedReader(_TLSReader(self), READ_BUFFER_BYTES)

    def version(self) -> str | None:
        return self._tls.version()

    def shutdown(self, how: int) -> None:
        self._sock.shutdown(how)

    def close(self) -> None:
        self._sock.close()

    def __getattr__(self, name: str) -> Any:
        # setsockopt, settimeout, fileno...: the TCP socket's.
        return getattr(self._sock, name)


class _TLSReader(io.RawIOBase):
    def __init__(self, stream: TLSStream) -> None:
        super().__init__()
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._stream.recv_into(buffer)


class StreamContext:
    """What imaplib's STARTTLS wraps its socket with: a `TLSStream` under *context*."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context

    def wrap_socket(self, sock: socket.socket, server_hostname: str) -> TLSStream:
        return TLSStream(sock, self.context, server_hostname)


def tls_context(account: Account) -> ssl.SSLContext:
    """Verification on (system store or the side's ``ca_file``), TLS 1.2 or newer.

    ``create_default_context`` sets CERT_REQUIRED and check_hostname (RFC 6125 name
    checks); nothing in fastsync turns either off.
    """
    # One context per trust store and process, shared by its connections: loading the
    # system store costs ~24 ms of CPU and ~1 MB per context (144 certificates, Debian).
    # A changed ca_file (its modification time) gets a context of its own.
    stamp = os.stat(account.ca_file).st_mtime_ns if account.ca_file is not None else 0
    return _context_for(account.ca_file, stamp)


@functools.lru_cache(maxsize=8)
def _context_for(ca_file: str | None, _stamp: int) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


# OpenSSL X509_V_ERR_* codes of ssl.SSLCertVerificationError.verify_code that get their
# own advice; every other code means the issuer is unknown (self-signed, private CA).
_CERT_NOT_YET_VALID = 9
_CERT_HAS_EXPIRED = 10
_NAME_MISMATCH = frozenset({62, 63, 64})  # host name, e-mail, IP address


def describe_certificate_error(exc: ssl.SSLCertVerificationError, account: Account) -> str:
    """Why the certificate was refused and what fixes it; verification is never switched off."""
    reason = exc.verify_message or exc.reason or "verification failed"
    side = account.side
    if exc.verify_code in _NAME_MISMATCH:
        return (
            f"TLS certificate does not match the host name {account.host!r} ({reason}); "
            f"set {side}.server to a name the certificate holds"
        )
    if exc.verify_code == _CERT_HAS_EXPIRED:
        return (
            f"TLS certificate has expired ({reason}); the server's certificate must be renewed "
            "(or this machine's clock is wrong)"
        )
    if exc.verify_code == _CERT_NOT_YET_VALID:
        return f"TLS certificate is not valid yet ({reason}); check this machine's clock"
    if account.ca_file is not None:
        return (
            f"TLS certificate not trusted ({reason}); {side}.ca_file does not hold the CA that "
            "signed it: set it to that CA's certificate file"
        )
    return (
        f"TLS certificate not trusted ({reason}); for a private CA set {side}.ca_file "
        "to its certificate file"
    )


def starttls_refused(account: Account) -> str:
    """The line for a server that does not offer STARTTLS where the side expects it (say
    so, or be on a port other than 993): how to choose each way out, plain text last."""
    side = account.side
    return (
        f"{account.where}: server does not offer STARTTLS ({side}.tls is starttls, the default on any port "
        f"but 993); if it has a TLS port (usually 993), put that port in {side}.server and set {side}.tls: "
        f"implicit; if it really has no TLS, set {side}.tls: none in the config file (there is no flag for it; "
        f"the password and the mail then cross the network unencrypted)"
    )
