"""IMAP sessions: the only module that imports imapclient.

A `Session` is one logged-in connection to one side.  It turns imapclient's values into
`fastsync.model` records and its exceptions into `fastsync.errors` classes that name the
side's label and server, so nothing above this module ever sees an imapclient object.

Bandwidth accounting hooks in at the socket layer (`_Metered`): every byte read or written
is charged to the side's `Meter`, in chunks, so the sync logic never mentions bandwidth.

Connecting (`Session._connect`) verifies the server's certificate and host name (TLS 1.2
or newer), upgrades with STARTTLS where configured, then authenticates: AUTHENTICATE PLAIN
(RFC 4616) when offered, else the LOGIN command, or for an OAuth2 side OAUTHBEARER
(RFC 7628) or XOAUTH2 with a token from the side's ``oauth2_token_cmd``, run afresh for
each connection (cached in-process for `TOKEN_REUSE_S`).  Neither passwords nor tokens
reach an error message: server text is passed through `_redact`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import hashlib
import imaplib
import json
import random
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import imapclient
from imapclient import exceptions as imap_exc
from imapclient import imap4, tls
from imapclient.imap_utf7 import decode as decode_utf7
from imapclient.response_parser import parse_fetch_response, parse_response

from fastsync import wire
from fastsync.config import Account
from fastsync.credentials import SecretCommandError, run_secret_cmd
from fastsync.errors import (
    AuthError,
    ConnectError,
    ConnectionLost,
    FolderError,
    MalformedResponse,
    MessageError,
    Throttled,
    TLSError,
)
from fastsync.limits import Limits
from fastsync.model import Folder, FolderStatus, MessageRef, WorkerSettings

# Planning fetches message identities this many at a time: one round trip per few thousand
# messages keeps a 100,000-message folder at a few dozen commands and bounded memory.
IDENTITY_BATCH = 5000

# Header fields that make up a message's identity (see plan.identity).  Fetched with
# BODY.PEEK so the source's \Seen flags never change (RFC 3501 section 6.4.5).
IDENTITY_FIELDS = b"MESSAGE-ID DATE FROM SUBJECT"
_IDENTITY_ITEMS = [b"UID", b"RFC822.SIZE", b"BODY.PEEK[HEADER.FIELDS (" + IDENTITY_FIELDS + b")]"]
_IDENTITY_LIST = "(" + " ".join(i.decode() for i in _IDENTITY_ITEMS) + ")"

# `check` and ``--sync-flags`` also want each message's flags and internal date.
_STATE_ITEMS = [b"UID", b"RFC822.SIZE", b"FLAGS", b"INTERNALDATE", _IDENTITY_ITEMS[2]]

# UIDs per UID STORE command: the sequence set is compacted (1:400), but scattered UIDs
# make a long line and some servers cap command lines at 8 or 64 KB.
STORE_BATCH = 1000

# `check --bodies` fetches full messages in batches of at most this many bytes (a bigger
# message travels alone); each body is hashed and dropped, so memory holds one batch.
HASH_BATCH_BYTES = 8 * 1024 * 1024

# Folders whose EXAMINE and FETCH commands are in flight at once while planning: enough
# to hide the round trip, few enough that the commands never fill a socket buffer while
# the server waits for us to read its answers.
SURVEY_WINDOW = 16

# Bytes charged to a meter per read or write: small enough that a 20 MB message cannot
# burst through a bandwidth cap, large enough that accounting costs nothing measurable.
CHUNK_BYTES = 64 * 1024

_RESPONSE_CODE = re.compile(rb"^\s*\[([A-Za-z0-9-]+)")


class Meter(Protocol):
    """Something that is told about bytes before they cross the wire (limits.SharedBucket)."""

    rate_bytes_per_s: float

    def charge(self, size_bytes: int) -> None: ...


class Slots(Protocol):
    """A per-side connection cap (limits.ConnectionSlots)."""

    def acquire(self) -> None: ...

    def release(self) -> None: ...


@dataclass
class FolderScan:
    """What planning learnt of one folder: its status and every message's identity."""

    status: FolderStatus | None
    refs: list[MessageRef]
    error: str = ""


@dataclass(frozen=True)
class MessageState:
    """What `check` and ``--sync-flags`` compare of a message: its identity (see plan.identity),
    its flags as the server reports them and its internal date (None when unreadable)."""

    uid: int
    size_bytes: int
    identity: str
    flags: tuple[str, ...]
    internaldate: dt.datetime | None
    has_message_id: bool = True


@dataclass(frozen=True)
class Fetched:
    """A message body with the metadata that must travel with it."""

    uid: int
    flags: tuple[str, ...]
    internaldate: dt.datetime
    body: bytes


def sequence_set(numbers: Sequence[int]) -> str:
    """Compact IMAP sequence set (RFC 3501 section 9, ``sequence-set``): 1,2,3,7 -> ``1:3,7``."""
    ordered = sorted(set(numbers))
    parts = []
    start = prev = ordered[0] if ordered else 0
    for n in ordered[1:]:
        if n == prev + 1:
            prev = n
            continue
        parts.append(f"{start}:{prev}" if prev != start else str(start))
        start = prev = n
    if ordered:
        parts.append(f"{start}:{prev}" if prev != start else str(start))
    return ",".join(parts)


def response_code(text: str | bytes) -> str:
    """The RFC 3501 section 7.1 response code of a tagged reply (``TRYCREATE``...) or ''."""
    raw = text.encode("utf-8", "replace") if isinstance(text, str) else text
    match = _RESPONSE_CODE.match(raw)
    return match.group(1).decode("ascii").upper() if match else ""


class _Metered:
    """imaplib transport mixin: charges the side's meters for every byte, sends without delay."""

    meter_down: Meter | None = None
    meter_up: Meter | None = None

    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        sock: socket.socket = super()._create_socket(timeout)  # type: ignore[misc]
        # An APPEND ends with a 2-byte CRLF after its last literal.  With Nagle's algorithm
        # that small segment waits for the ACK of the literal, which the server delays
        # (delayed ACK, 40 ms on Linux): 40 ms lost per APPEND.  Measured on 200 messages
        # of 2 MB with 4 workers: 1.95 s with Nagle, see bench/README.md for without.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def read(self, size: int) -> bytes:
        file = self.file  # type: ignore[attr-defined]
        if self.meter_down is None:
            return file.read(size)  # type: ignore[no-any-return]
        parts = []
        remaining = size
        while remaining > 0:
            step = min(remaining, CHUNK_BYTES)
            self.meter_down.charge(step)
            part = file.read(step)
            if not part:
                break
            parts.append(part)
            remaining -= len(part)
        return b"".join(parts)

    def readline(self) -> bytes:
        line: bytes = super().readline()  # type: ignore[misc]
        if self.meter_down is not None:
            self.meter_down.charge(len(line))
        return line

    def send(self, data: bytes) -> None:
        if self.meter_up is None:
            super().send(data)  # type: ignore[misc]
            return
        view = memoryview(data)
        for start in range(0, len(view), CHUNK_BYTES):
            chunk = view[start : start + CHUNK_BYTES]
            self.meter_up.charge(len(chunk))
            super().send(chunk)  # type: ignore[misc]


class _PlainTransport(_Metered, imap4.IMAP4WithTimeout):  # type: ignore[misc]
    pass


class _TLSTransport(_Metered, tls.IMAP4_TLS):  # type: ignore[misc]
    pass


class _Client(imapclient.IMAPClient):  # type: ignore[misc]
    """IMAPClient whose transport is metered."""

    def __init__(self, *args: Any, meter_down: Meter | None, meter_up: Meter | None, **kwargs: Any) -> None:
        # Set before IMAPClient.__init__, which connects through _create_IMAP4.
        self.meter_down = meter_down
        self.meter_up = meter_up
        super().__init__(*args, **kwargs)
        # IMAPClient sets imaplib's debug level to 5 so that imaplib logs every response
        # through its logger; imaplib then formats the repr() of every response, message
        # bodies included, whether or not the logger is enabled.  That formatting cost
        # more CPU than the whole rest of a copy (measured: 3.2 s of 3.7 s fetching
        # 400 MB), so imaplib's own tracing stays off.
        self._imap.debug = 0

    def _create_IMAP4(self) -> imaplib.IMAP4:
        connect_timeout = getattr(self._timeout, "connect", None)
        transport: imaplib.IMAP4
        if self.ssl:
            transport = _TLSTransport(self.host, self.port, self.ssl_context, connect_timeout)
        else:
            transport = _PlainTransport(self.host, self.port, connect_timeout)
        transport.meter_down = self.meter_down
        transport.meter_up = self.meter_up
        # Under a cap, socket buffers in proportion to it: otherwise the kernel reads (or
        # queues) megabytes ahead of the bucket, and the server sees that as a burst.
        sock = transport.sock
        if self.meter_down is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, capped_buffer_bytes(self.meter_down.rate_bytes_per_s))
        if self.meter_up is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, capped_buffer_bytes(self.meter_up.rate_bytes_per_s))
        return transport


def capped_buffer_bytes(rate_bytes_per_s: float) -> int:
    """A capped connection's socket buffer: 1/16 s at the cap, between 64 KiB (smaller
    windows, with delayed ACKs, cost more throughput than the cap allows) and 1 MiB.

    The kernel doubles the value, and it is the most a connection can take in before the
    bucket acts: part of the burst a server sees at the start of a capped transfer.
    Without it, the kernel's automatic tuning lets a connection buffer megabytes.
    """
    return int(min(1024 * 1024, max(64 * 1024, rate_bytes_per_s / 16)))


def tls_context(account: Account) -> ssl.SSLContext:
    """Verification on (system store or the side's ``ca_file``), TLS 1.2 or newer.

    ``create_default_context`` sets CERT_REQUIRED and check_hostname (RFC 6125 name
    checks); nothing in fastsync turns either off.
    """
    context = ssl.create_default_context(cafile=account.ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


# OpenSSL X509_V_ERR_* codes of ssl.SSLCertVerificationError.verify_code that get their
# own advice; every other code means the issuer is unknown (self-signed, private CA).
_CERT_NOT_YET_VALID = 9
_CERT_HAS_EXPIRED = 10
_NAME_MISMATCH = frozenset({62, 63, 64})  # host name, e-mail, IP address


def _describe_certificate_error(exc: ssl.SSLCertVerificationError, account: Account) -> str:
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


def _describe_os_error(exc: BaseException, account: Account) -> str:
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host {account.host!r}; check {account.side}.server"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused; check {account.side}.server (host and port) and that the server runs"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return f"no answer within {account.timeout_s:g} s; check the address, the firewall or raise {account.side}.timeout_s"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _describe_certificate_error(exc, account)
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({exc.reason or exc}); check {account.side}.tls ({account.tls}) and the port"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, EOFError)):
        return "connection closed by the server"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    return str(exc) or type(exc).__name__


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list | tuple):
        return " ".join(_text(v) for v in value)
    return str(value)


class Session:
    """One logged-in connection to one side."""

    def __init__(self, account: Account, client: _Client, slots: Slots | None) -> None:
        self.account = account
        self._client = client
        self._slots = slots
        self.capabilities = frozenset(
            _text(c).upper() for c in client.capabilities()
        )
        self._selected: str | None = None

    # -- connection --------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        account: Account,
        *,
        slots: Slots | None = None,
        meter_down: Meter | None = None,
        meter_up: Meter | None = None,
    ) -> Session:
        """Connect, secure and log in; every failure becomes one line naming the side."""
        if slots is not None:
            slots.acquire()
        try:
            client = cls._connect(account, meter_down, meter_up)
            return cls(account, client, slots)
        except BaseException:
            if slots is not None:
                slots.release()
            raise

    @staticmethod
    def _connect(account: Account, meter_down: Meter | None, meter_up: Meter | None) -> _Client:
        where = f"{account.label} ({account.server})"
        context = tls_context(account) if account.tls != "none" else None
        # The token is fetched before connecting: a failing command then opens no
        # connection, and a slow one cannot run into the server's pre-login timeout.
        token = access_token(account) if account.oauth2_token_cmd is not None else None
        client: _Client | None = None
        try:
            client = _Client(
                account.host,
                meter_down=meter_down,
                meter_up=meter_up,
                port=account.port,
                ssl=account.tls == "implicit",
                ssl_context=context,
                timeout=account.timeout_s,
            )
            client.normalise_times = False
            if account.tls == "starttls":
                if not client.has_capability("STARTTLS"):
                    raise TLSError(
                        f"{where}: server does not offer STARTTLS; use tls: implicit with its TLS port "
                        f"(usually 993), never plain text"
                    )
                client.starttls(context)
            if client.has_capability("LOGINDISABLED"):
                raise AuthError(
                    f"{where}: server refuses LOGIN on this connection (LOGINDISABLED); "
                    f"set {account.side}.tls to implicit or starttls"
                )
            if token is not None:
                _oauth2_login(client, account, where, *token)
            else:
                _password_login(client, account, where)
            return client
        except (TLSError, AuthError, Throttled):
            _close_quietly(client)
            raise
        except imap_exc.LoginError as exc:
            _close_quietly(client)
            _raise_if_throttled(_text(exc.args[0] if exc.args else exc), where)
            raise AuthError(
                f"{where}: login as {account.user!r} refused ({_redact(_text(exc.args[0] if exc.args else exc), account)}); "
                f"check {account.side}.user and the password"
            ) from None
        except (OSError, EOFError, imaplib.IMAP4.abort) as exc:
            _close_quietly(client)
            _raise_if_throttled(str(exc), where)
            reason = _describe_os_error(exc, account)
            error_class = TLSError if isinstance(exc, ssl.SSLError) else ConnectError
            raise error_class(f"{where}: {reason}") from None
        except imaplib.IMAP4.error as exc:
            _close_quietly(client)
            # A server that greets with BYE: busy, or throttling this account.
            _raise_if_throttled(_text(exc), where)
            raise ConnectError(f"{where}: {_redact(_text(exc), account)}") from None

    def close(self) -> None:
        """Log out politely; a connection that is already broken is simply dropped."""
        client, self._client = self._client, None  # type: ignore[assignment]
        if client is None:
            return
        try:
            with contextlib.suppress(Exception):
                client.logout()
            _close_quietly(client)
        finally:
            if self._slots is not None:
                self._slots.release()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def where(self) -> str:
        return f"{self.account.label} ({self.account.server})"

    @contextlib.contextmanager
    def _guard(self, folder: str = "") -> Iterator[None]:
        """Turn imapclient/socket failures into ours; a broken connection is ConnectionLost."""
        try:
            yield
        except (OSError, EOFError, imaplib.IMAP4.abort) as exc:
            # imapclient.IMAPClientAbortError is an IMAP4.abort: the connection is unusable
            # (a BYE, a reset, a timeout: a stalled server is a lost one).
            _raise_if_throttled(str(exc), self.where)
            reason = _describe_os_error(exc, self.account)
            raise ConnectionLost(f"{self.where}: {reason}") from None
        except imap_exc.ProtocolError as exc:
            # The parser lost its place in the stream: the connection cannot be trusted.
            raise MalformedResponse(f"{self.where}: malformed response: {_text(exc)[:200]}") from None
        except imap_exc.IMAPClientError as exc:
            _raise_if_throttled(_text(exc), self.where)
            raise

    # -- folders -----------------------------------------------------------------------

    def list_folders(self) -> list[Folder]:
        with self._guard():
            rows = self._client.list_folders()
        return [_folder(row) for row in rows]

    def _status_items(self) -> list[str]:
        items = ["MESSAGES", "UIDVALIDITY", "UIDNEXT"]
        if "STATUS=SIZE" in self.capabilities:
            items.append("SIZE")
        if "CONDSTORE" in self.capabilities:
            items.append("HIGHESTMODSEQ")
        return items

    def status(self, folder: str) -> FolderStatus:
        try:
            with self._guard(folder):
                reply = self._client.folder_status(folder, self._status_items())
        except imap_exc.IMAPClientError as exc:
            raise FolderError(f"{self.where}: folder {folder!r}: STATUS refused: {_text(exc)}") from None
        return _folder_status(reply)

    def statuses(self) -> dict[str, FolderStatus]:
        return self.folders_and_statuses()[1]

    def folders_and_statuses(self) -> tuple[list[Folder], dict[str, FolderStatus]]:
        """Every folder and its STATUS, in one round trip where LIST-STATUS (RFC 5819) is offered.

        Nothing may be selected: Dovecot answers STATUS on the selected folder from a
        stale view.
        """
        if "LIST-STATUS" not in self.capabilities:
            self.unselect()
            folders = self.list_folders()
            return folders, {f.name: self.status(f.name) for f in folders if f.selectable}
        imap = self._client._imap
        with self._guard():
            # Leaving the selected folder and listing go out together: one round trip.
            leave = self._send_unselect()
            # With RETURN options, special-use attributes come only when asked for (RFC 6154 section 5.1).
            special = "SPECIAL-USE " if "SPECIAL-USE" in self.capabilities else ""
            returns = f"({special}STATUS (" + " ".join(self._status_items()) + "))"
            tag = imap._command("LIST", '""', '"*"', "RETURN", returns)
            if leave is not None:
                imap._command_complete(*leave)
                imap.state = "AUTH"
            typ, data = imap._command_complete("LIST", tag)
            if typ != "OK":
                raise FolderError(f"{self.where}: LIST-STATUS refused: {_text(data)}")
            _typ, rows = imap._untagged_response(typ, data, "LIST")
            _typ, replies = imap._untagged_response(typ, data, "STATUS")
            folders = [_folder(row) for row in self._client._proc_folder_list(rows)]
        statuses = {}
        for reply in replies:
            if reply is None:
                continue
            try:
                name, values = parse_response([reply] if isinstance(reply, bytes) else list(reply))
            except imap_exc.ProtocolError:
                continue
            if isinstance(name, bytes | str):
                statuses[decode_utf7(name)] = _folder_status(dict(zip(values[::2], values[1::2], strict=False)))
        return folders, statuses

    def unselect(self) -> None:
        """Leave the selected folder without expunging (RFC 3691 UNSELECT; CLOSE after EXAMINE)."""
        with self._guard():
            leave = self._send_unselect()
            if leave is not None:
                self._client._imap._command_complete(*leave)
                self._client._imap.state = "AUTH"

    def _send_unselect(self) -> tuple[str, bytes] | None:
        if self._selected is None:
            return None
        self._selected = None
        # RFC 3501 section 6.4.2: CLOSE of a folder opened with EXAMINE removes nothing.
        command = "UNSELECT" if "UNSELECT" in self.capabilities else "CLOSE"
        return command, self._client._imap._command(command)

    def examine(self, folder: str) -> FolderStatus:
        """Select a folder read-only (RFC 3501 section 6.3.2): nothing on it can change."""
        return self._select(folder, readonly=True)

    def _select(self, folder: str, readonly: bool) -> FolderStatus:
        try:
            with self._guard(folder):
                reply = self._client.select_folder(folder, readonly=readonly)
        except imap_exc.IMAPClientError as exc:
            self._selected = None
            raise FolderError(f"{self.where}: cannot open folder {folder!r}: {_text(exc)}") from None
        self._selected = folder
        return FolderStatus(
            messages=int(reply.get(b"EXISTS", 0)),
            size_bytes=-1,
            uidvalidity=int(reply.get(b"UIDVALIDITY", 0)),
            uidnext=int(reply.get(b"UIDNEXT", 0)),
            highestmodseq=int(reply.get(b"HIGHESTMODSEQ", 0)),
        )

    def create_folder(self, folder: str) -> bool:
        """Create a folder; True when it was created, False when it already existed."""
        try:
            with self._guard(folder):
                self._client.create_folder(folder)
        except imap_exc.IMAPClientError as exc:
            text = _text(exc)
            if response_code(text) == "ALREADYEXISTS" or "exists" in text.lower():
                return False
            raise FolderError(f"{self.where}: cannot create folder {folder!r}: {text}") from None
        return True

    # -- messages ----------------------------------------------------------------------

    def message_refs(self, count: int, identity: Callable[[bytes, int], tuple[str, bool]]) -> list[MessageRef]:
        """UID, size and identity of every message of the examined folder.

        Sequence-number FETCH in batches: RFC 3501 section 7.4.1 forbids EXPUNGE responses
        while a FETCH is answered, so consecutive batches see stable sequence numbers and
        no UID SEARCH (whose single reply line can exceed imaplib's limit) is needed.
        """
        refs: list[MessageRef] = []
        for start in range(1, count + 1, IDENTITY_BATCH):
            end = min(count, start + IDENTITY_BATCH - 1)
            data = self._fetch(f"{start}:{end}", _IDENTITY_ITEMS, uid=False)
            refs.extend(self._refs(data, identity))
        return refs

    def survey(
        self,
        folders: Sequence[tuple[str, int]],
        identity: Callable[[bytes, int], tuple[str, bool]],
        window: int = SURVEY_WINDOW,
    ) -> dict[str, FolderScan]:
        """Status and message identities of many folders, pipelined (RFC 3501 section 5.5).

        *folders* pairs each name with its message count from STATUS.  For each folder an
        EXAMINE and the FETCH batches that cover the count (the last one open-ended,
        ``n:*``) are sent without waiting, up to *window* folders ahead, so a whole account
        costs about one round trip instead of two per folder.  The server answers in
        order; a folder whose EXAMINE or FETCH fails (it vanished, or shrank so that a
        batch fell beyond its end) is read again the plain way, or reported.
        """
        imap = self._client._imap
        pending: list[tuple[str, str, str]] = []  # (folder, command, tag)
        scans: dict[str, FolderScan] = {}
        queue_ = list(folders)
        failed: set[str] = set()

        def send(name: str, count: int) -> None:
            pending.append((name, "EXAMINE", imap._command("EXAMINE", _quoted_folder(self._client, name))))
            starts = list(range(1, count + 1, IDENTITY_BATCH))
            for index, start in enumerate(starts):
                end = "*" if index == len(starts) - 1 else str(start + IDENTITY_BATCH - 1)
                pending.append((name, "FETCH", imap._command("FETCH", f"{start}:{end}", _IDENTITY_LIST)))

        with self._guard():
            self._selected = None
            # imaplib checks the state before sending a command; the pipelined FETCHes are
            # valid once their EXAMINE is processed, which the server does first.
            imap.state = "SELECTED"
            imap.is_readonly = True
            sent = 0
            while queue_ or pending:
                while queue_ and sent < window:
                    send(*queue_.pop(0))
                    sent += 1
                name, command, tag = pending.pop(0)
                try:
                    typ, _data = imap._command_complete(command, tag)
                except imaplib.IMAP4.abort:
                    raise
                except imaplib.IMAP4.error:
                    # imaplib raises on BAD (e.g. FETCH after a failed EXAMINE).
                    typ = "BAD"
                if command == "EXAMINE":
                    sent -= 1
                    reply = self._client._process_select_response(imap.untagged_responses)
                    imap.untagged_responses.clear()
                    if typ != "OK":
                        failed.add(name)
                        continue
                    scans[name] = FolderScan(
                        FolderStatus(
                            messages=int(reply.get(b"EXISTS", 0)),
                            size_bytes=-1,
                            uidvalidity=int(reply.get(b"UIDVALIDITY", 0)),
                            uidnext=int(reply.get(b"UIDNEXT", 0)),
                            highestmodseq=int(reply.get(b"HIGHESTMODSEQ", 0)),
                        ),
                        [],
                    )
                    self._selected = name
                    continue
                items = imap.untagged_responses.pop("FETCH", [])
                imap.untagged_responses.clear()
                if typ != "OK" or name in failed:
                    failed.add(name)
                    continue
                scans[name].refs.extend(self._refs([i for i in items if i is not None], identity))
            imap.state = "SELECTED" if self._selected else "AUTH"
        # A count that moved between STATUS and EXAMINE leaves batches short or missing.
        failed.update(n for n, scan in scans.items() if scan.status and scan.status.messages != len(scan.refs))
        for name, _count in folders:
            if name not in failed:
                continue
            # Read again without pipelining: it may exist after all, or have changed size.
            scans.pop(name, None)
            try:
                status = self.examine(name)
            except FolderError as exc:
                scans[name] = FolderScan(None, [], exc.message)
                continue
            scans[name] = FolderScan(status, self.message_refs(status.messages, identity) if status.messages else [])
        return scans

    def create_folders(self, names: Sequence[str]) -> list[str]:
        """Create folders, pipelined, in the given order (parents first); returns errors.

        A folder that already exists is not an error.
        """
        imap = self._client._imap
        errors = []
        with self._guard():
            tags = [(name, imap._command("CREATE", _quoted_folder(self._client, name))) for name in names]
            for name, tag in tags:
                typ, data = imap._command_complete("CREATE", tag)
                text = _text(data)
                if typ != "OK" and response_code(text) != "ALREADYEXISTS" and "exists" not in text.lower():
                    errors.append(f"{self.where}: cannot create folder {name!r}: {text}")
        return errors

    def identities_since(self, first_uid: int, identity: Callable[[bytes, int], tuple[str, bool]]) -> list[str]:
        """Identities of the examined folder's messages with UID >= *first_uid*."""
        # "n:*" also matches the highest UID when it is below n (RFC 3501 section 6.4.8),
        # hence the filter on the UID.
        data = self._fetch(f"{max(first_uid, 1)}:*", _IDENTITY_ITEMS, uid=True)
        return [ref.identity for ref in self._refs(data, identity) if ref.uid >= first_uid]

    def _refs(self, data: list[object], identity: Callable[[bytes, int], tuple[str, bool]]) -> Iterator[MessageRef]:
        for record in wire.records(data):
            uid, size, header = record.uid(), record.size(), record.literal()
            if uid is None or size is None or header is None:
                # Not the usual shape (e.g. the header section sent as a quoted string).
                parsed = self._parse_fallback(record)
                if parsed is None or b"UID" not in parsed:
                    continue
                uid, size = int(parsed[b"UID"]), int(parsed.get(b"RFC822.SIZE", 0))
                header = next((v for k, v in parsed.items() if k.startswith(b"BODY[")), b"") or b""
            key, has_id = identity(header, size)
            yield MessageRef(uid=uid, size_bytes=size, identity=key, has_message_id=has_id)

    def _parse_fallback(self, record: wire.Record) -> dict[bytes, Any] | None:
        try:
            parsed = parse_fetch_response(record.items, False, False)
        except imap_exc.ProtocolError as exc:
            raise MalformedResponse(f"{self.where}: malformed FETCH response: {_text(exc)[:200]}") from None
        return next(iter(parsed.values()), None)

    def _fetch(self, message_set: str, items: Sequence[bytes], uid: bool) -> list[object]:
        """FETCH with a compact message set (``1:5000``), which IMAPClient.fetch cannot send.

        Returns imaplib's untagged FETCH items, for `wire.records`.  Unsolicited FETCH
        responses for other messages may be included; callers take what they asked for.
        """
        command = ["UID", "FETCH"] if uid else ["FETCH"]
        imap = self._client._imap
        with self._guard(self._selected or ""):
            tag = imap._command(*command, message_set, "(" + " ".join(i.decode() for i in items) + ")")
            typ, data = imap._command_complete("FETCH", tag)
            if typ != "OK":
                raise FolderError(f"{self.where}: folder {self._selected!r}: FETCH refused: {_text(data)}")
            typ, data = imap._untagged_response(typ, data, "FETCH")
        return [item for item in data if item is not None]

    def total_size(self, count: int) -> int:
        """Sum of RFC822.SIZE over the examined folder, for servers without STATUS=SIZE (RFC 8438)."""
        total = 0
        for start in range(1, count + 1, IDENTITY_BATCH):
            end = min(count, start + IDENTITY_BATCH - 1)
            for record in wire.records(self._fetch(f"{start}:{end}", [b"RFC822.SIZE"], uid=False)):
                total += record.size() or 0
        return total

    # -- flags, dates and body digests (check, --sync-flags) ---------------------------

    def message_states(self, count: int, identity: Callable[[bytes, int], tuple[str, bool]]) -> list[MessageState]:
        """UID, size, identity, flags and internal date of every message of the selected folder.

        The batches of `message_refs`, with FLAGS and INTERNALDATE added; the header fields
        come with BODY.PEEK, so the source's \\Seen flags never change (RFC 3501 section 6.4.5).
        """
        states: list[MessageState] = []
        for start in range(1, count + 1, IDENTITY_BATCH):
            end = min(count, start + IDENTITY_BATCH - 1)
            for record in wire.records(self._fetch(f"{start}:{end}", _STATE_ITEMS, uid=False)):
                uid, size, header = record.uid(), record.size(), record.literal()
                flags, date = record.flags(), record.internaldate()
                if uid is None or size is None or header is None or flags is None:
                    parsed = self._parse_fallback(record)
                    if parsed is None or b"UID" not in parsed:
                        continue
                    uid, size = int(parsed[b"UID"]), int(parsed.get(b"RFC822.SIZE", 0))
                    header = next((v for k, v in parsed.items() if k.startswith(b"BODY[")), b"") or b""
                    flags = tuple(_text(f) for f in parsed.get(b"FLAGS", ()))
                    raw_date = parsed.get(b"INTERNALDATE")
                    date = raw_date if isinstance(raw_date, dt.datetime) else None
                key, has_id = identity(header, size)
                states.append(MessageState(uid, size, key, flags, date, has_id))
        return states

    def select(self, folder: str) -> FolderStatus:
        """Select a folder read-write (RFC 3501 section 6.3.1): only ``--sync-flags`` does, on
        the destination, to STORE flags.  Never on the source."""
        return self._select(folder, readonly=False)

    def store_flags(self, changes: Mapping[tuple[str, ...], Sequence[int]]) -> None:
        """Set the flags of messages of the folder selected with `select`: flag set -> UIDs.

        One ``UID STORE <uids> FLAGS.SILENT (<flags>)`` per flag set (and per `STORE_BATCH`
        UIDs), all pipelined: FLAGS replaces a message's whole set and .SILENT spares the
        untagged FETCH echo of each message (RFC 3501 section 6.4.6).  \\Recent must not
        be in *changes*: only the server sets it (section 2.3.2).
        """
        imap = self._client._imap
        folder = self._selected or ""
        with self._guard(folder):
            tags = []
            for flags, uids in changes.items():
                ordered = sorted(uids)
                for start in range(0, len(ordered), STORE_BATCH):
                    message_set = sequence_set(ordered[start : start + STORE_BATCH])
                    argument = "(" + " ".join(flags) + ")"
                    tags.append(imap._command("UID", "STORE", message_set, "FLAGS.SILENT", argument))
            errors = []
            for tag in tags:
                typ, data = imap._command_complete("STORE", tag)
                if typ != "OK":
                    errors.append(_text(data))
            imap.untagged_responses.pop("FETCH", None)
        if errors:
            raise FolderError(f"{self.where}: folder {folder!r}: STORE refused: {errors[0]}")

    def body_digests(self, messages: Sequence[tuple[int, int]], max_batch_bytes: int = HASH_BATCH_BYTES) -> dict[int, str]:
        """sha256 of each whole message (BODY.PEEK[]) of the selected folder: (UID, size) -> digest.

        Fetched in batches bounded by *max_batch_bytes* (a bigger message alone); each body
        is hashed and dropped, so memory holds one batch whatever the folder's size.
        """
        digests: dict[int, str] = {}
        batch: list[int] = []
        batch_bytes = 0

        def flush() -> None:
            if not batch:
                return
            data = self._fetch(sequence_set(batch), [b"UID", b"BODY.PEEK[]"], uid=True)
            for record in wire.records(data):
                uid, body = record.uid(), record.literal()
                if uid is None or body is None:
                    parsed = self._parse_fallback(record)
                    if parsed is None or b"UID" not in parsed:
                        continue
                    uid, body = int(parsed[b"UID"]), parsed.get(b"BODY[]") or b""
                digests[uid] = hashlib.sha256(body).hexdigest()
            batch.clear()

        for uid, size in messages:
            if batch and batch_bytes + size > max_batch_bytes:
                flush()
                batch_bytes = 0
            batch.append(uid)
            batch_bytes += size
        flush()
        return digests

    def fetch_messages(self, uids: Sequence[int]) -> list[Fetched]:
        """Bodies, flags and internal dates of the examined folder; UIDs gone are left out."""
        data = self._fetch(sequence_set(uids), [b"UID", b"FLAGS", b"INTERNALDATE", b"BODY.PEEK[]"], uid=True)
        wanted = set(uids)
        fetched = []
        for record in wire.records(data):
            uid, flags, date, body = record.uid(), record.flags(), record.internaldate(), record.literal()
            if uid is None or flags is None or date is None or body is None:
                parsed = self._parse_fallback(record)
                if parsed is None or b"BODY[]" not in parsed or b"UID" not in parsed:
                    continue
                uid, body = int(parsed[b"UID"]), parsed[b"BODY[]"] or b""
                flags = tuple(_text(f) for f in parsed.get(b"FLAGS", ()))
                date = parsed[b"INTERNALDATE"]
            if uid in wanted:
                fetched.append(Fetched(uid=uid, flags=flags, internaldate=date, body=body))
        return fetched

    def append(self, folder: str, messages: Sequence[Fetched]) -> None:
        """Append messages with their flags and dates: one MULTIAPPEND (RFC 3502) when offered.

        A MULTIAPPEND is all-or-nothing; when the server refuses it, the caller retries the
        messages one by one to find the refused one.  Without MULTIAPPEND, one APPEND per
        message.
        """
        try:
            with self._guard(folder):
                if "MULTIAPPEND" in self.capabilities:
                    self._append(folder, messages)
                else:
                    for message in messages:
                        self._append(folder, [message])
        except imap_exc.IMAPClientError as exc:
            text = _text(exc)
            code = response_code(text.split(":", 1)[-1]) or response_code(text)
            raise MessageError(f"{self.where}: {folder!r}: APPEND refused: {text}", code) from None

    def _append(self, folder: str, messages: Sequence[Fetched]) -> None:
        """Send one APPEND command carrying *messages* (RFC 3501 section 6.3.11, RFC 3502).

        Bodies go to the socket as they are: no copy, no line-ending rewrite (imaplib's
        APPEND turns bare LF into CRLF, which changes the message; imapclient copies each
        body twice while building the command).  With LITERAL+ (RFC 7888) nothing waits
        for the server's "+"; without it each literal waits for its continuation.
        """
        imap = self._client._imap
        literal_plus = "LITERAL+" in self.capabilities
        tag = imap._new_tag()
        prefix = tag + b" APPEND " + bytes(self._client._normalise_folder(folder))
        refused = False
        for message in messages:
            flags = " ".join(message.flags).encode("ascii", "replace")
            size = str(len(message.body)).encode("ascii")
            imap.send(
                prefix + b" (" + flags + b') "' + wire.format_internaldate(message.internaldate) + b'" {'
                + size + (b"+}\r\n" if literal_plus else b"}\r\n")
            )
            prefix = b""
            if not literal_plus:
                # _get_response returns None on a continuation; a tagged reply means refusal.
                while imap._get_response() is not None:
                    if imap.tagged_commands.get(tag):
                        refused = True
                        break
                if refused:
                    break
            imap.send(message.body)
        if not refused:
            imap.send(b"\r\n")
        typ, data = imap._command_complete("APPEND", tag)
        if typ != "OK":
            text = _text(data)
            raise MessageError(f"{self.where}: {folder!r}: APPEND refused: {typ} {text}", response_code(text))



class SessionPair:
    """A source and a destination session, opened together and reopened after a break.

    Each side takes a connection slot of its own (`limits`) and meters the direction that
    carries messages: bytes read from the source, bytes written to the destination.
    """

    def __init__(self, src: Account, dst: Account, limits: Limits) -> None:
        self.src_account = src
        self.dst_account = dst
        self.limits = limits
        self.src: Session | None = None
        self.dst: Session | None = None

    def open(self) -> tuple[Session, Session]:
        if self.src is None or self.dst is None:
            limits = self.limits
            src, dst = open_concurrently(
                None if self.src else partial(Session.open, self.src_account, slots=limits.src_slots,
                                               meter_down=limits.down),
                None if self.dst else partial(Session.open, self.dst_account, slots=limits.dst_slots,
                                               meter_up=limits.up),
            )
            self.src, self.dst = self.src or src, self.dst or dst
        assert self.src is not None and self.dst is not None
        return self.src, self.dst

    def close(self) -> None:
        for session in (self.src, self.dst):
            if session is not None:
                session.close()
        self.src = self.dst = None


def open_concurrently(*openers: Callable[[], Session] | None) -> list[Session | None]:
    """Open several sessions at once (None: keep that slot empty).

    A login costs several round trips; both sides of a copy log in at the same time.  When
    one fails, those that opened are closed again and the first failure is raised.
    """
    with concurrent.futures.ThreadPoolExecutor(len(openers), thread_name_prefix="fastsync-connect") as threads:
        futures = [threads.submit(opener) if opener is not None else None for opener in openers]
    sessions: list[Session | None] = []
    failures: list[BaseException] = []
    for future in futures:
        try:
            sessions.append(future.result() if future is not None else None)
        except BaseException as exc:
            failures.append(exc)
            sessions.append(None)
    if failures:
        for session in sessions:
            if session is not None:
                session.close()
        raise failures[0]
    return sessions


def backoff_s(attempt: int, settings: WorkerSettings, rng: random.Random) -> float:
    """Pause before retry number *attempt* (1-based): exponential, capped, with jitter.

    The jitter (half to all of the exponential step) keeps workers that lost their
    connections at the same moment (a server restart) from reconnecting in lockstep.
    """
    step = min(settings.backoff_max_s, settings.backoff_base_s * 2 ** (attempt - 1))
    return rng.uniform(step / 2, step)


_BACKOFF_HINT = re.compile(r"Suggested Backoff Time:\s*(\d+)\s*milli", re.IGNORECASE)
_THROTTLE_SIGNS = ("[THROTTLED]", "[UNAVAILABLE]", "TOO MANY SIMULTANEOUS CONNECTIONS", "REQUEST IS THROTTLED")


def throttle_wait(text: str) -> float | None:
    """Seconds the server asks us to wait (0: unspecified) when *text* is a throttling reply, else None.

    Office 365: "Request is throttled. Suggested Backoff Time: 12000 milliseconds";
    Gmail: "[THROTTLED]", "[UNAVAILABLE]", "[ALERT] Too many simultaneous connections".
    """
    hint = _BACKOFF_HINT.search(text)
    if hint:
        return int(hint.group(1)) / 1000
    upper = text.upper()
    return 0.0 if any(sign in upper for sign in _THROTTLE_SIGNS) else None


def _raise_if_throttled(text: str, where: str) -> None:
    wait_s = throttle_wait(text)
    if wait_s is not None:
        raise Throttled(f"{where}: server is throttling: {text.strip()[:200]}", wait_s) from None


def _redact(text: str, account: Account, *secrets: str) -> str:
    """``text`` with the side's password and any of ``secrets`` (tokens) replaced by ***."""
    for secret in (account.password, *secrets):
        if secret:
            text = text.replace(secret, "***")
    return text


# -- authentication --------------------------------------------------------------------

# An access token from oauth2_token_cmd is reused for this long within one process, so the
# planner's two connections, or a worker's reconnects, do not run the command each time.
# Providers' tokens live an hour (Google, Microsoft 365); a cached token the server refuses
# is fetched again at once (see _oauth2_login), so a rotated token is still picked up.
# Workers are processes of their own, each with its own cache.
TOKEN_REUSE_S = 60.0

_tokens: dict[tuple[str, str | None], tuple[float, str]] = {}

# RFC 6750 section 2.1 b64token: what a bearer token may consist of.  Checked so that a
# command printing JSON or a "Bearer ..." line fails clearly instead of at the server.
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def access_token(account: Account, *, fresh: bool = False) -> tuple[str, bool]:
    """(token, came from the cache) for an OAuth2 side; runs its ``oauth2_token_cmd`` if needed.

    A failing command is an AuthError naming the side and the field, never the command
    (it may embed a client secret) nor what it printed.
    """
    command = account.oauth2_token_cmd
    if command is None:
        raise ValueError(f"{account.side} has no oauth2_token_cmd")
    key = (command, account.workdir)
    cached = _tokens.get(key)
    if cached is not None and not fresh and time.monotonic() - cached[0] < TOKEN_REUSE_S:
        return cached[1], True
    where = f"{account.label} ({account.server})"
    field = f"{account.side}.oauth2_token_cmd"
    try:
        token = run_secret_cmd(command, account.workdir, "an access token").strip()
    except SecretCommandError as exc:
        raise AuthError(f"{where}: {field}: {exc.problem}") from None
    if not _B64TOKEN.fullmatch(token):
        raise AuthError(
            f"{where}: {field}: command printed something that is not an access token "
            "(RFC 6750: letters, digits and -._~+/=); print only the token, "
            "e.g. pipe JSON through jq -r .access_token"
        )
    _tokens[key] = (time.monotonic(), token)
    return token, False


class _BearerExchange:
    """The client side of one OAUTHBEARER (RFC 7628) or XOAUTH2 exchange, for sasl_login.

    The first (empty) challenge is answered with the client response carrying the token.
    A server that refuses the token first sends a challenge with a JSON error (RFC 7628
    section 3.2.2), which must be answered with a dummy response (a lone 0x01 for
    OAUTHBEARER, section 3.2.3; an empty one for XOAUTH2) before the tagged NO.  The JSON
    ``status`` is kept for the error message.
    """

    def __init__(self, mechanism: str, account: Account, token: str) -> None:
        if mechanism == "OAUTHBEARER":
            # gs2-header "n,a=<authzid>," (RFC 5801 section 4: "," and "=" escaped), then
            # kvpairs separated by 0x01; host and port as in RFC 7628 section 4.1.
            authzid = account.user.replace("=", "=3D").replace(",", "=2C")
            self.first = (
                f"n,a={authzid},\x01host={account.host}\x01port={account.port}"
                f"\x01auth=Bearer {token}\x01\x01"
            ).encode()
            self.dummy = b"\x01"
        else:
            # Google's XOAUTH2 (also Microsoft 365): user=...^Aauth=Bearer ...^A^A
            self.first = f"user={account.user}\x01auth=Bearer {token}\x01\x01".encode()
            self.dummy = b""
        self.sent = False
        self.status = ""

    def __call__(self, challenge: bytes) -> bytes:
        if not self.sent:
            self.sent = True
            return self.first
        try:
            error = json.loads(challenge)
        except ValueError:
            error = None
        if isinstance(error, dict):
            self.status = str(error.get("status", ""))
        return self.dummy


def bearer_mechanism(capabilities: Sequence[str]) -> str | None:
    """The SASL mechanism for a bearer token: OAUTHBEARER (RFC 7628, the standard) when the
    server offers it, else XOAUTH2 (Google's original, the only one Microsoft 365 offers)."""
    for mechanism in ("OAUTHBEARER", "XOAUTH2"):
        if f"AUTH={mechanism}" in capabilities:
            return mechanism
    return None


def _oauth2_login(client: _Client, account: Account, where: str, token: str, cached: bool) -> None:
    """Authenticate with the bearer token: OAUTHBEARER when offered, else XOAUTH2."""
    offered = [_text(c).upper() for c in client.capabilities()]
    field = f"{account.side}.oauth2_token_cmd"
    mechanism = bearer_mechanism(offered)
    if mechanism is None:
        mechanisms = ", ".join(c.removeprefix("AUTH=") for c in offered if c.startswith("AUTH=")) or "none"
        raise AuthError(
            f"{where}: server offers neither OAUTHBEARER nor XOAUTH2 (SASL mechanisms: {mechanisms}); "
            f"{field} needs one of them: give a password source instead"
        )
    while True:
        exchange = _BearerExchange(mechanism, account, token)
        try:
            client.sasl_login(mechanism, exchange)
            return
        except imap_exc.LoginError as exc:
            text = _redact(_text(exc.args[0] if exc.args else exc), account, token)
        _raise_if_throttled(text, where)
        if cached:
            # Revoked or rotated since it was cached: the command may know a newer one.
            token, cached = access_token(account, fresh=True)
            continue
        status = f"; status {exchange.status}" if exchange.status else ""
        raise AuthError(
            f"{where}: {mechanism} login as {account.user!r} refused ({text}{status}): "
            f"the access token printed by {field} has expired, was revoked or is not for this user"
        )


def _password_login(client: _Client, account: Account, where: str) -> None:
    """AUTHENTICATE PLAIN when offered, else LOGIN; a LoginError is left to the caller."""
    if client.has_capability("AUTH=PLAIN"):
        # RFC 4616 carries the user name and password as UTF-8; imaplib sends the LOGIN
        # command's arguments as ASCII only.
        client.plain_login(account.user, account.password)
        return
    if not (account.user.isascii() and account.password.isascii()):
        raise AuthError(
            f"{where}: server does not offer AUTH=PLAIN and its LOGIN command cannot carry a "
            f"user name or password with non-ASCII characters; check {account.side}.user "
            "and the password"
        )
    client.login(account.user, account.password)


def _close_quietly(client: Any) -> None:
    if client is None:
        return
    with contextlib.suppress(Exception):
        client.shutdown()


def _folder_status(reply: dict[Any, Any]) -> FolderStatus:
    values = {_text(k).upper(): int(v) for k, v in reply.items()}
    return FolderStatus(
        messages=values.get("MESSAGES", 0),
        size_bytes=values.get("SIZE", -1),
        uidvalidity=values.get("UIDVALIDITY", 0),
        uidnext=values.get("UIDNEXT", 0),
        highestmodseq=values.get("HIGHESTMODSEQ", 0),
    )


def _quoted_folder(client: Any, name: str) -> str:
    """A folder name as a command argument: modified UTF-7 (RFC 3501 section 5.1.3), quoted."""
    return bytes(client._normalise_folder(name)).decode("ascii")


def _folder(row: tuple[Any, Any, Any]) -> Folder:
    flags, delimiter, name = row
    return Folder(name=_text(name), delimiter=_text(delimiter or ""), attributes=tuple(_text(f) for f in flags))
