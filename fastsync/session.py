"""IMAP sessions: the only module that imports imapclient.

A `Session` is one logged-in connection to one side.  It turns imapclient's values into
`fastsync.model` records and its exceptions into `fastsync.errors` classes that name the
side's label and server, so nothing above this module ever sees an imapclient object.

Bandwidth accounting hooks in at the socket layer (`_Metered`): every byte read or written
is charged to the side's `Meter`, in chunks, so the sync logic never mentions bandwidth.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import imaplib
import random
import re
import socket
import ssl
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import imapclient
from imapclient import exceptions as imap_exc
from imapclient import imap4, tls
from imapclient.response_parser import parse_fetch_response

from fastsync.config import Account
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
from fastsync.model import Folder, FolderStatus, MessageRef, WorkerSettings

# Planning fetches message identities this many at a time: one round trip per few thousand
# messages keeps a 100,000-message folder at a few dozen commands and bounded memory.
IDENTITY_BATCH = 5000

# Header fields that make up a message's identity (see plan.identity).  Fetched with
# BODY.PEEK so the source's \Seen flags never change (RFC 3501 section 6.4.5).
IDENTITY_FIELDS = b"MESSAGE-ID DATE FROM SUBJECT"

# Bytes charged to a meter per read or write: small enough that a 20 MB message cannot
# burst through a bandwidth cap, large enough that accounting costs nothing measurable.
CHUNK_BYTES = 64 * 1024

_RESPONSE_CODE = re.compile(rb"^\s*\[([A-Za-z0-9-]+)")


class Meter(Protocol):
    """Something that is told about bytes before they cross the wire (limits.Bucket)."""

    def charge(self, size_bytes: int) -> None: ...


class Slots(Protocol):
    """A per-side connection cap (limits.ConnectionSlots)."""

    def acquire(self) -> None: ...

    def release(self) -> None: ...


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
    """imaplib transport mixin that charges the side's meters for every byte."""

    meter_down: Meter | None = None
    meter_up: Meter | None = None

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

    meter_down: Meter | None = None
    meter_up: Meter | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
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
        return transport


def tls_context(account: Account) -> ssl.SSLContext:
    """Verification on (system store or the side's ``ca_file``), TLS 1.2 or newer."""
    context = ssl.create_default_context(cafile=account.ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _describe_os_error(exc: BaseException, account: Account) -> str:
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host {account.host!r}; check {account.side}.server"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused; check {account.side}.server (host and port) and that the server runs"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return f"no answer within {account.timeout_s:g} s; check the address, the firewall or raise {account.side}.timeout_s"
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = exc.verify_message or exc.reason or "verification failed"
        return (
            f"TLS certificate not trusted ({reason}); for a private CA set {account.side}.ca_file "
            "to its certificate file"
        )
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
        self.permanent_flags: tuple[str, ...] = ()

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
        client: _Client | None = None
        try:
            _Client.meter_down = meter_down
            _Client.meter_up = meter_up
            client = _Client(
                account.host,
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
            client.login(account.user, account.password)
            return client
        except (TLSError, AuthError):
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
            raise ConnectError(f"{where}: {_redact(_text(exc), account)}") from None
        finally:
            _Client.meter_down = None
            _Client.meter_up = None

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
        folders = []
        for flags, delimiter, name in rows:
            attributes = tuple(_text(f) for f in flags)
            folders.append(Folder(name=_text(name), delimiter=_text(delimiter or ""), attributes=attributes))
        return folders

    def status(self, folder: str) -> FolderStatus:
        items = ["MESSAGES", "UIDVALIDITY", "UIDNEXT"]
        if "STATUS=SIZE" in self.capabilities:
            items.append("SIZE")
        try:
            with self._guard(folder):
                reply = self._client.folder_status(folder, items)
        except imap_exc.IMAPClientError as exc:
            raise FolderError(f"{self.where}: folder {folder!r}: STATUS refused: {_text(exc)}") from None
        values = {_text(k).upper(): int(v) for k, v in reply.items()}
        return FolderStatus(
            messages=values.get("MESSAGES", 0),
            size_bytes=values.get("SIZE", -1),
            uidvalidity=values.get("UIDVALIDITY", 0),
            uidnext=values.get("UIDNEXT", 0),
        )

    def examine(self, folder: str) -> FolderStatus:
        """Select a folder read-only (RFC 3501 section 6.3.2): nothing on it can change."""
        try:
            with self._guard(folder):
                reply = self._client.select_folder(folder, readonly=True)
        except imap_exc.IMAPClientError as exc:
            self._selected = None
            raise FolderError(f"{self.where}: cannot open folder {folder!r}: {_text(exc)}") from None
        self._selected = folder
        self.permanent_flags = tuple(_text(f) for f in reply.get(b"PERMANENTFLAGS", ()))
        return FolderStatus(
            messages=int(reply.get(b"EXISTS", 0)),
            size_bytes=-1,
            uidvalidity=int(reply.get(b"UIDVALIDITY", 0)),
            uidnext=int(reply.get(b"UIDNEXT", 0)),
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
        header_key = b"BODY[HEADER.FIELDS (" + IDENTITY_FIELDS + b")]"
        for start in range(1, count + 1, IDENTITY_BATCH):
            end = min(count, start + IDENTITY_BATCH - 1)
            reply = self._fetch_sequence(
                start, end, [b"UID", b"RFC822.SIZE", b"BODY.PEEK[HEADER.FIELDS (" + IDENTITY_FIELDS + b")]"]
            )
            for data in reply.values():
                size = int(data.get(b"RFC822.SIZE", 0))
                header = data.get(header_key) or b""
                key, has_id = identity(header, size)
                refs.append(MessageRef(uid=int(data[b"UID"]), size_bytes=size, identity=key, has_message_id=has_id))
        return refs

    def identities_since(self, first_uid: int, identity: Callable[[bytes, int], tuple[str, bool]]) -> list[str]:
        """Identities of the examined folder's messages with UID >= *first_uid*."""
        header_key = b"BODY[HEADER.FIELDS (" + IDENTITY_FIELDS + b")]"
        # "n:*" also matches the highest UID when it is below n (RFC 3501 section 6.4.8),
        # hence the filter on the UID.
        reply = self._fetch(
            f"{max(first_uid, 1)}:*",
            [b"UID", b"RFC822.SIZE", b"BODY.PEEK[HEADER.FIELDS (" + IDENTITY_FIELDS + b")]"],
            uid=True,
        )
        return [
            identity(data.get(header_key) or b"", int(data.get(b"RFC822.SIZE", 0)))[0]
            for uid, data in reply.items()
            if uid >= first_uid
        ]

    def _fetch(self, message_set: str, items: Sequence[bytes], uid: bool) -> dict[int, dict[bytes, Any]]:
        """FETCH with a compact message set (``1:5000``), which IMAPClient.fetch cannot send.

        Keys are UIDs for UID FETCH, sequence numbers otherwise.  Unsolicited FETCH
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
            return parse_fetch_response(data, self._client.normalise_times, uid)  # type: ignore[no-any-return]

    def _fetch_sequence(self, start: int, end: int, items: list[bytes]) -> dict[int, dict[bytes, Any]]:
        """FETCH by message sequence numbers (not UIDs) in the examined folder."""
        return self._fetch(f"{start}:{end}", items, uid=False)

    def total_size(self, count: int) -> int:
        """Sum of RFC822.SIZE over the examined folder, for servers without STATUS=SIZE (RFC 8438)."""
        total = 0
        for start in range(1, count + 1, IDENTITY_BATCH):
            end = min(count, start + IDENTITY_BATCH - 1)
            reply = self._fetch_sequence(start, end, [b"RFC822.SIZE"])
            total += sum(int(d.get(b"RFC822.SIZE", 0)) for d in reply.values())
        return total

    def fetch_messages(self, uids: Sequence[int]) -> list[Fetched]:
        """Bodies, flags and internal dates of the examined folder; UIDs gone are left out."""
        reply = self._fetch(sequence_set(uids), [b"FLAGS", b"INTERNALDATE", b"BODY.PEEK[]"], uid=True)
        wanted = set(uids)
        fetched = []
        for uid, data in reply.items():
            body = data.get(b"BODY[]")
            if body is None or uid not in wanted:
                continue
            flags = tuple(_text(f) for f in data.get(b"FLAGS", ()))
            fetched.append(Fetched(uid=int(uid), flags=flags, internaldate=data[b"INTERNALDATE"], body=body))
        return fetched

    def append(self, folder: str, messages: Sequence[Fetched]) -> None:
        """Append messages with their flags and dates: one MULTIAPPEND (RFC 3502) when offered.

        A MULTIAPPEND is all-or-nothing; when the server refuses it, the caller retries the
        messages one by one to find the refused one.
        """
        items = [
            {"msg": m.body, "flags": m.flags, "date": m.internaldate} for m in messages
        ]
        try:
            with self._guard(folder):
                if len(items) > 1 and "MULTIAPPEND" in self.capabilities:
                    self._client.multiappend(folder, items)
                else:
                    for item in items:
                        self._client.append(folder, item["msg"], item["flags"], item["date"])
        except imap_exc.IMAPClientError as exc:
            text = _text(exc)
            code = response_code(text.split(":", 1)[-1]) or response_code(text)
            raise MessageError(f"{self.where}: {folder!r}: APPEND refused: {text}", code) from None

    @property
    def multiappend(self) -> bool:
        return "MULTIAPPEND" in self.capabilities


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


def _redact(text: str, account: Account) -> str:
    return text.replace(account.password, "***") if account.password else text


def _close_quietly(client: Any) -> None:
    if client is None:
        return
    with contextlib.suppress(Exception):
        client.shutdown()
