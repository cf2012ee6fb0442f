"""The wire under a session: metered sockets, TLS, logging in, and imaplib's internals.

Protocol edge, with `session.py` the only modules that import imapclient or imaplib.
Bandwidth accounting hooks in at the socket layer (`Metered`): every byte read or written
is charged to the side's `Meter`, in chunks, so nothing above this module mentions
bandwidth.  `connect` verifies the server's certificate and host name (TLS 1.2 or newer),
upgrades with STARTTLS where configured, then authenticates: AUTHENTICATE PLAIN
(RFC 4616) when offered (its response sent with the command where SASL-IR, RFC 4959, is
announced: one round trip), else the LOGIN command, or for an OAuth2 side OAUTHBEARER
(RFC 7628) or XOAUTH2 with a token from `tokens.access_token`, or for a side with an
administrator (``auth_user``) SASL PLAIN with an authorization identity (`login.py`).  Neither passwords
nor tokens reach an error message: server text goes through `replies.redact`.

`Client` also holds the few imaplib internals fastsync relies on to pipeline commands and
to send APPEND literals without copying them (`appends.py`; imapclient's range is pinned
in setup.cfg).
What the server sends as literals is read by `literals.py`, by each literal's own length:
FETCH replies, and bodies relayed into an APPEND a chunk at a time.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import imaplib
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import imapclient
from imapclient import exceptions as imap_exc
from imapclient import imap4
from imapclient.imap_utf7 import decode as decode_utf7
from imapclient.response_parser import parse_fetch_response

from fastsync.settings import credentials, tokens
from fastsync.imap import deflate, literals, wire
from fastsync.imap.login import admin_login
from fastsync.imap.wire import text_of
from fastsync.imap.capabilities import Capabilities
from fastsync.settings.config import Account
from fastsync.records.errors import AuthError, ConnectError, MalformedResponse, Throttled, TLSError, TooManyConnections
from fastsync.imap.replies import NoGreeting, describe_os_error, raise_if_throttled, redact, sasl_unusable
from fastsync.imap.tls import StreamContext, TLSStream, starttls_refused, tls_context
from fastsync.rules.limits import capped_buffer_bytes

# Bytes charged to a meter per read or write: small enough that a 20 MB message cannot
# burst through a bandwidth cap, large enough that accounting costs nothing measurable.
CHUNK_BYTES = 64 * 1024


# The bytes this process's connections moved: ``plain_*`` as IMAP reads and writes them,
# ``wire_*`` as they crossed the wire (deflated where COMPRESS is on, `deflate.py`).
# Workers report the difference per unit (`wire_bytes`).
WIRE = deflate.Counts()


# When this process's first APPEND went out (seconds since the epoch; 0.0: none yet), for
# the log's timing of a run (`worker.worker_main` reports it with each unit).
FIRST_APPEND_EPOCH_S = [0.0]


def first_append_epoch_s() -> float:
    """When this process sent its first APPEND command (`time.time`), 0.0 before."""
    return FIRST_APPEND_EPOCH_S[0]


def appending() -> None:
    """Note this process's first APPEND (`first_append_epoch_s`)."""
    if not FIRST_APPEND_EPOCH_S[0]:
        FIRST_APPEND_EPOCH_S[0] = time.time()


def wire_bytes() -> tuple[int, int, int, int]:
    """(wire down, wire up, plain down, plain up) of this process's connections so far."""
    return WIRE.wire_down, WIRE.wire_up, WIRE.plain_down, WIRE.plain_up


def wire_since(before: tuple[int, int, int, int], now: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """What `wire_bytes` grew by from *before* to *now*."""
    return now[0] - before[0], now[1] - before[1], now[2] - before[2], now[3] - before[3]


class Meter(Protocol):
    """Something that is told about bytes before they cross the wire (limits.SharedBucket)."""

    rate_bytes_per_s: float

    def charge(self, size_bytes: int) -> None: ...


class Metered:
    """imaplib transport mixin: charges the side's meters for every byte, sends without delay."""

    meter_down: Meter | None = None
    meter_up: Meter | None = None
    # imaplib's, named here for `literals.Source`.
    abort = imaplib.IMAP4.abort
    # The last response line read, without its line ending: the one announcing a literal;
    # the first line of the response it belongs to (a line read after a literal continues
    # its response, RFC 3501 section 4.3).
    last_line = b""
    response_start = b""
    after_literal = False
    # False once COMPRESS is on: the `deflate.Deflated` stream counts the wire bytes then.
    counting_wire = True

    def _count(self, down: int, up: int) -> None:
        WIRE.plain_down += down
        WIRE.plain_up += up
        if self.counting_wire:
            WIRE.wire_down += down
            WIRE.wire_up += up

    def _connect(self) -> None:
        # imaplib reads the greeting here (RFC 3501 section 7.1), then asks for CAPABILITY.
        try:
            super()._connect()  # type: ignore[misc]
        except TimeoutError as exc:
            if getattr(self, "welcome", None) is None:
                raise NoGreeting(*exc.args) from None
            raise

    def _get_capabilities(self) -> None:
        # imaplib asks for CAPABILITY right after the greeting; a greeting that carries the
        # CAPABILITY response code (RFC 3501 section 7.1, Dovecot's does) already says it:
        # one round trip less before every login (issue 31).  Taken out of the untagged
        # responses as the command's reply would be, so that imapclient does not keep this
        # pre-login list for after the login, when the server announces more.
        offered = self.untagged_responses.pop("CAPABILITY", None)  # type: ignore[attr-defined]
        if offered and isinstance(offered[-1], bytes) and offered[-1].strip():
            self.capabilities = tuple(offered[-1].decode("ascii", "replace").upper().split())
            return
        super()._get_capabilities()  # type: ignore[misc]

    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        sock: socket.socket = super()._create_socket(timeout)  # type: ignore[misc]
        # An APPEND ends with a 2-byte CRLF after its last literal.  With Nagle's algorithm
        # that small segment waits for the ACK of the literal, which the server delays
        # (delayed ACK, 40 ms on Linux): 40 ms lost per APPEND.  Measured on 200 messages
        # of 2 MB with 4 workers: 1.95 s with Nagle, see bench/README.md for without.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    # While fastsync reads a FETCH reply (`literals.read_fetch`), the bounds of its literals:
    # imaplib reads the literals of the lines that reader hands it (one not fully arrived
    # when looked at) through `read`, and they are bounded the same way.
    literal_bounds: literals.Bounds | None = None

    def read(self, size: int) -> bytes:
        """A literal imaplib reads (its reader calls ``read`` for nothing else; fastsync's
        readers call `read_bytes`), by its own announced length: within a FETCH reply's
        bounds; in a FETCH response imaplib reads for another command (pipelined, or
        unsolicited), by the same rules with no whole message held; in any other reply,
        refused above `literals.HEADER_LITERAL_MAX_BYTES`, quoting the start of the line
        that announced it (the session is dropped: nothing was read)."""
        announced = self.last_line  # imaplib reads a literal right after the line announcing it
        self.after_literal = True
        bounds = self.literal_bounds
        if bounds is None and literals.starts_fetch(self.response_start):
            bounds = literals.Bounds(body_bytes=0)
        if bounds is not None:
            return bounds.take(self, announced, size)
        if size > literals.HEADER_LITERAL_MAX_BYTES:
            raise imaplib.IMAP4.abort(literals.absurd(announced, size))
        return self.read_bytes(size)

    def read_bytes(self, size: int) -> bytes:
        """*size* bytes or fewer (the connection ended), metered."""
        file = self.file  # type: ignore[attr-defined]
        if self.meter_down is None:
            whole: bytes = file.read(size)
            self._count(len(whole), 0)
            return whole
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
        self._count(size - remaining, 0)
        return b"".join(parts)

    def read_some(self, size: int) -> bytes:
        """What has arrived, up to *size* bytes (none: the connection ended), without
        waiting for more, metered once read (a capped side then waits before its next)."""
        part: bytes = self.file.read1(size)  # type: ignore[attr-defined]
        self._count(len(part), 0)
        if self.meter_down is not None and part:
            self.meter_down.charge(len(part))
        return part

    def readline(self) -> bytes:
        line: bytes = self.file.readline(wire.MAX_LINE_BYTES + 1)  # type: ignore[attr-defined]
        if len(line) > wire.MAX_LINE_BYTES:
            raise imaplib.IMAP4.abort(wire.overlong(line))  # the session is out of step: dropped
        self._count(len(line), 0)
        if self.meter_down is not None:
            self.meter_down.charge(len(line))
        if line.endswith(b"\n") and not line.endswith(b"\r\n"):
            # RFC 3501 section 2.2 ends every line with CRLF, but some servers end some
            # lines with a bare LF (after AUTHENTICATE, for one); imaplib would call that an
            # unterminated line and drop the connection.  A bare LF ends the line all the
            # same (be liberal in what you accept, RFC 1122 section 1.2.2); a literal's
            # bytes are read by count, never through here, so no message changes.
            line = line[:-1] + b"\r\n"
        self.last_line = line[:-2]
        if not self.after_literal:
            self.response_start = self.last_line
        self.after_literal = False
        return line

    def send(self, data: bytes) -> None:
        self._count(0, len(data))
        if self.meter_up is None:
            super().send(data)  # type: ignore[misc]
            return
        view = memoryview(data)
        for start in range(0, len(view), CHUNK_BYTES):
            chunk = view[start : start + CHUNK_BYTES]
            self.meter_up.charge(len(chunk))
            super().send(chunk)  # type: ignore[misc]


class _PlainTransport(Metered, imap4.IMAP4WithTimeout):  # type: ignore[misc]
    pass


class _TLSTransport(Metered, imap4.IMAP4WithTimeout):  # type: ignore[misc]
    """Implicit TLS (RFC 8314) from the first byte, through a `TLSStream`."""

    def __init__(self, host: str, port: int, ssl_context: ssl.SSLContext, timeout: float | None) -> None:
        self.ssl_context = ssl_context
        super().__init__(host, port, timeout)

    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        sock = super()._create_socket(timeout)
        return TLSStream(sock, self.ssl_context, self.host)  # type: ignore[return-value]


class Client(imapclient.IMAPClient):  # type: ignore[misc]
    """IMAPClient whose transport is metered."""

    # The byte counts of a connection compressed with COMPRESS=DEFLATE (`start_compress`).
    deflated: deflate.Counts | None = None

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


def connect(account: Account, meter_down: Meter | None, meter_up: Meter | None,
            step: Callable[[str], None] = lambda _text: None) -> Client:
    """Connect, secure and log in, telling *step* what it waits for; a failure is one line naming the side."""
    where, side = account.where, account.side
    context = tls_context(account) if account.tls != "none" else None
    # The token is fetched before connecting: a failing command then opens no
    # connection, and a slow one cannot run into the server's pre-login timeout.
    token = tokens.access_token(account) if tokens.bearer(account) else None
    client: Client | None = None
    try:
        client = Client(
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
            if not Capabilities.parse(client.capabilities()).starttls:
                raise TLSError(starttls_refused(account), side=side)
            assert context is not None
            step("STARTTLS")
            client.starttls(StreamContext(context))
        # After STARTTLS the server's list is read again (RFC 3501 section 6.2.1).
        offered = Capabilities.parse(client.capabilities())
        if offered.login_disabled:
            raise AuthError(
                f"{where}: server refuses LOGIN on this connection (LOGINDISABLED); "
                f"set {account.side}.tls to implicit or starttls", side=side,
            )
        step("logging in")
        try:
            if token is not None:
                _oauth2_login(client, account, offered, token[0], True)
            elif account.auth_user is not None:
                # Only here: over TLS (implicit, or the STARTTLS insisted on above), or where tls: none.
                admin_login(account, offered, functools.partial(authenticate, client, initial=offered.sasl_ir))
            else:
                _password_login(client, account, offered)
        except (OSError, EOFError, imaplib.IMAP4.abort) as exc:
            raise_if_throttled(str(exc), account)  # hung up at login (mox past 30 connections): a ceiling
            raise TooManyConnections(f"{where}: server hung up at login ({describe_os_error(exc, account)})", side=side)
        if account.compress == "auto":
            start_compress(client)
        return client
    except (TLSError, AuthError, Throttled):
        close_quietly(client)
        raise
    except imap_exc.LoginError as exc:
        close_quietly(client)
        raise_if_throttled(text_of(exc.args[0] if exc.args else exc), account)
        text = redact(text_of(exc.args[0] if exc.args else exc), account.password)
        raise AuthError(f"{where}: login as {account.user!r} refused ({text}); "
                        f"check {account.side}.user and the password", side=side) from None
    except (OSError, EOFError, imaplib.IMAP4.abort) as exc:
        close_quietly(client)
        raise_if_throttled(str(exc), account)
        reason = describe_os_error(exc, account)
        error_class = TLSError if isinstance(exc, ssl.SSLError) else ConnectError
        raise error_class(f"{where}: {reason}", side=side) from None
    except imaplib.IMAP4.error as exc:
        close_quietly(client)
        # A server that greets with BYE: busy, or throttling this account.
        raise_if_throttled(text_of(exc), account)
        raise ConnectError(f"{where}: {redact(text_of(exc), account.password)}", side=side) from None


def start_compress(client: Client) -> None:
    """COMPRESS DEFLATE (RFC 4978) when the logged-in server announces it: from its OK on,
    both directions are deflated (`deflate.py`), inside TLS where there is TLS.  A refusal
    (NO, or BAD: the server did not mean it) leaves the connection as it was."""
    if not Capabilities.parse(client.capabilities()).compress_deflate:
        return
    imap = client._imap
    # imaplib checks each command against its table of known ones; COMPRESS is not there.
    imaplib.Commands.setdefault("COMPRESS", ("AUTH", "SELECTED"))
    status, _text = complete(client, "COMPRESS", imap._command("COMPRESS", "DEFLATE"))
    if status != "OK":
        return
    stream = deflate.Deflated(imap.file, imap.sock, imap.meter_down, imap.meter_up, WIRE)
    # The stream charges the meters for the compressed bytes and counts them: the transport
    # no longer does.
    imap.meter_down = imap.meter_up = None
    imap.counting_wire = False
    imap.sock, imap.file = stream, deflate.Reading(stream)
    client.deflated = stream.counts


def _oauth2_login(client: Client, account: Account, offered: Capabilities, token: str, cached: bool) -> None:
    """Authenticate with the bearer token: OAUTHBEARER when offered, else XOAUTH2."""
    where = account.where
    field = f"{account.side}.oauth2" if account.oauth2 else f"{account.side}.oauth2_token_cmd"
    mechanism = credentials.bearer_mechanism(offered.auth_mechanisms)
    if mechanism is None:
        announced = [n.removeprefix("AUTH=") for n in offered.names if n.startswith("AUTH=")]
        mechanisms = ", ".join(announced) or "none"
        raise AuthError(
            f"{where}: server offers neither OAUTHBEARER nor XOAUTH2 (SASL mechanisms: {mechanisms}); "
            f"{field} needs one of them: give a password source instead", side=account.side,
        )
    while True:
        exchange = credentials.BearerExchange(mechanism, account, token)
        try:
            client.sasl_login(mechanism, exchange)
            return
        except imap_exc.LoginError as exc:
            text = redact(text_of(exc.args[0] if exc.args else exc), account.password, token)
        raise_if_throttled(text, account)
        if cached:
            # Expired, revoked or rotated since it was fetched: renewed once, then the run stops.
            token, cached = tokens.access_token(account, fresh=True)[0], False
            continue
        status = f"; status {exchange.status}" if exchange.status else ""
        raise AuthError(
            f"{where}: {mechanism} login as {account.user!r} refused ({text}{status}): "
            f"the access token {tokens.token_origin(account)} has expired, was revoked or is not for this user", side=account.side
        )


def _password_login(client: Client, account: Account, offered: Capabilities) -> None:
    """AUTHENTICATE PLAIN when offered, else LOGIN; a refusal of the credentials is a
    LoginError, left to the caller.  When AUTHENTICATE fails for another reason (BAD: the
    server does not know the mechanism it announced; a NO whose response code is not about
    the credentials: `replies.sasl_unusable`), LOGIN is tried instead: LOGINDISABLED was
    ruled out before."""
    if "PLAIN" in offered.auth_mechanisms:
        # RFC 4616 carries the user name and password as UTF-8; imaplib sends the LOGIN
        # command's arguments as ASCII only.
        secret = f"\0{account.user}\0{account.password}".encode()
        status, text = authenticate(client, "PLAIN", secret, initial=offered.sasl_ir)
        if status == "OK":
            return
        text = redact(text, account.password)
        raise_if_throttled(text, account)
        if not sasl_unusable(status, text):
            raise imap_exc.LoginError(text)
    if not (account.user.isascii() and account.password.isascii()):
        raise AuthError(
            f"{account.where}: server does not offer AUTH=PLAIN and its LOGIN command cannot carry a "
            f"user name or password with non-ASCII characters; check {account.side}.user "
            "and the password", side=account.side,
        )
    client.login(account.user, account.password)


class _SaslResponse:
    """The client's answer to a one-step SASL mechanism (PLAIN, RFC 4616), for imaplib's
    ``_command``, which calls it on each continuation (it wants a bound method)."""

    def __init__(self, response: bytes | None) -> None:
        self._response = response

    def answer(self, _challenge: bytes) -> bytes:
        response, self._response = self._response, None
        # A second challenge has no answer: "*" cancels the exchange (RFC 3501 section 6.2.2).
        return b"*" if response is None else base64.b64encode(response)


def authenticate(client: Client, mechanism: str, response: bytes, initial: bool = False) -> tuple[str, str]:
    """AUTHENTICATE *mechanism* with one response (RFC 3501 section 6.2.2); the tagged reply's
    status (OK, NO or BAD) and text.  imapclient's ``plain_login`` raises one LoginError for
    all three, and a BAD (the mechanism is not known after all) is no wrong password.

    *initial* (the server announces SASL-IR, RFC 4959): the response goes with the command,
    so the login takes one round trip instead of two (the server's empty challenge, then
    the answer); a challenge that still comes is cancelled."""
    imap = client._imap
    imap.literal = _SaslResponse(None if initial else response).answer
    try:
        # RFC 4959 section 3: an empty initial response is sent as "=".
        first = (base64.b64encode(response).decode("ascii") or "=",) if initial else ()
        tag = imap._command("AUTHENTICATE", mechanism, *first)
        status, data = imap._command_complete("AUTHENTICATE", tag)
    except imaplib.IMAP4.error as exc:
        if isinstance(exc, imaplib.IMAP4.abort):
            raise
        return "BAD", str(exc)  # imaplib raises on BAD; the connection is still in step
    if status == "OK":
        imap.state = "AUTH"
    return status, text_of(data)


def close_quietly(client: Any) -> None:
    if client is None:
        return
    with contextlib.suppress(Exception):
        client.shutdown()


def open_body(client: Client, uid: int) -> literals.BodyLiteral | None:
    """`literals.open_body` on *client*'s connection."""
    return literals.open_body(client._imap, uid)


def body_digest(client: Client, uid: int) -> tuple[str, str]:
    """`literals.body_digest` on *client*'s connection."""
    return literals.body_digest(client._imap, uid)


def read_fetch(client: Client, tag: bytes, bounds: literals.Bounds | None = None) -> tuple[str, str, list[Any]]:
    """The tagged status and text of FETCH command *tag* and its untagged FETCH items, each
    literal read within *bounds* (by default: whole-message literals whole, others cut at
    `literals.HEADER_LITERAL_MAX_BYTES`): `literals.read_fetch`.  BAD is imaplib's error."""
    status, text, items = literals.read_fetch(client._imap, tag, bounds or literals.Bounds())
    if status == "BAD":
        raise imaplib.IMAP4.error(f"FETCH command error: BAD {text_of(text)}")
    return status, text_of(text), items


def pipelined(client: Client, command: str, argument_lists: Sequence[Sequence[str]]) -> list[tuple[str, str]]:
    """Send every command before reading any reply (RFC 3501 section 5.5); (status, text) each."""
    tags = [client._imap._command(*arguments) for arguments in argument_lists]
    return [complete(client, command, tag) for tag in tags]


def complete(client: Client, name: str, tag: bytes) -> tuple[str, str]:
    """Status (OK, NO, BAD: in step, later replies follow) and text of command *tag* sent ahead."""
    try:
        typ, data = client._imap._command_complete(name, tag)
    except imaplib.IMAP4.abort:
        raise
    except imaplib.IMAP4.error as exc:
        typ, data = "BAD", str(exc)
    return typ, text_of(data)


def fetch(
    client: Client, words: Sequence[str], items: Sequence[bytes], modifier: str = "",
    bounds: literals.Bounds | None = None,
) -> tuple[str, str, list[Any]]:
    """Send ``FETCH`` (or ``UID FETCH``: *words*) with *items* and read it (`read_fetch`)."""
    listed = "(" + " ".join(i.decode() for i in items) + ")"
    tag = client._imap._command(*words, listed, *([modifier] if modifier else []))
    return read_fetch(client, tag, bounds)


def take_untagged(client: Client, name: str) -> list[Any]:
    """The untagged responses *name* (SEARCH, FETCH...) imaplib kept, removed from its store."""
    taken: list[Any] = client._imap.untagged_responses.pop(name, [])
    return taken


def notify_set(client: Client, events: str) -> str:
    """NOTIFY SET STATUS *events* (RFC 5465 section 5.1); the server's refusal, or ''.

    The STATUS of every folder that the server sends first says nothing new: dropped."""
    imap = client._imap
    # imaplib checks each command against its table of known ones; NOTIFY is not there.
    imaplib.Commands.setdefault("NOTIFY", ("AUTH", "SELECTED"))
    try:
        typ, data = imap._simple_command("NOTIFY", "SET", "STATUS", events)
    except imaplib.IMAP4.abort:
        raise
    except imaplib.IMAP4.error as exc:
        return str(exc)
    imap.untagged_responses.clear()
    return "" if typ == "OK" else text_of(data)


def quoted_folder(client: Client, name: str) -> str:
    """A folder name as a command argument: modified UTF-7 (RFC 3501 section 5.1.3), quoted."""
    return bytes(client._normalise_folder(name)).decode("ascii")


# -- server values -------------------------------------------------------------------------


def decode_name(raw: bytes | str) -> str:
    """A folder name as a reply sends it, decoded from modified UTF-7 (RFC 3501 section 5.1.3)."""
    decoded: str = decode_utf7(raw)
    return decoded


def parse_fetch(items: Sequence[object], account: Account) -> dict[bytes, Any] | None:
    """One message's FETCH items by imapclient's general parser (for the shapes `wire` does
    not read); None when there are none.  Unreadable: `MalformedResponse`."""
    try:
        parsed: dict[bytes, Any] | None = next(iter(parse_fetch_response(items, False, False).values()), None)
    except imap_exc.ProtocolError as exc:
        text = f"{account.where}: malformed FETCH response: {text_of(exc)[:200]}"
        raise MalformedResponse(text, side=account.side) from None
    return parsed


def command(client: Client, name: str, *args: str, keep: Sequence[str] = ()) -> tuple[str, str, dict[str, list[Any]]]:
    """One command to its tagged reply: OK, NO or BAD (which imaplib raises), the reply's text,
    and the untagged responses named in *keep* as imaplib keeps them, taken from its store."""
    imap = client._imap
    try:
        typ, data = imap._simple_command(name, *args)
    except imaplib.IMAP4.abort:
        raise
    except imaplib.IMAP4.error as exc:
        # The connection is still in step.
        typ, data = "BAD", str(exc)
    kept = {key: imap.untagged_responses.pop(key) for key in keep if key in imap.untagged_responses}
    return typ, text_of(data), kept
