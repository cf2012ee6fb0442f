"""What a server's reply means: the one place where reply text becomes a typed exception,
and where a failed connection becomes one line that says what to check.

Protocol edge, but pure: no I/O, no imapclient.  A tagged NO or BAD reaches fastsync only
as text (imapclient raises it as a message), so response codes (RFC 3501 section 7.1:
``[TRYCREATE]``, ``[OVERQUOTA]``, ``[ALREADYEXISTS]``...) and the throttling phrases of the
big providers are recognised here, and every caller routes on the exception's type.
(What a server announces is read in `capabilities.py`.)
"""

from __future__ import annotations

import re
import socket
import ssl

from fastsync.settings.config import Account
from fastsync.records.errors import (
    AuthError, DestinationFull, FolderMissing, MessageError, OverLimit, Throttled, TooManyConnections,
)
from fastsync.records import secrets as secrets_rules
from fastsync.imap.tls import describe_certificate_error

_RESPONSE_CODE = re.compile(rb"^\s*\[([A-Za-z0-9-]+)")
_BACKOFF_HINT = re.compile(r"Suggested Backoff Time:\s*(\d+)\s*milli", re.IGNORECASE)
# Microsoft 365 answers "NO Server Unavailable. 15" (or says BYE so) while it sheds load.
_THROTTLE_SIGNS = ("[THROTTLED]", "[UNAVAILABLE]", "TOO MANY SIMULTANEOUS CONNECTIONS", "REQUEST IS THROTTLED",
                   "SERVER UNAVAILABLE")
# Gmail's refusal once an account has moved its daily bandwidth or made too many commands:
# "[OVERQUOTA] Account exceeded command or bandwidth limits" (RFC 9208's code, used for a
# budget, not for a full mailbox).
_OVER_LIMIT = re.compile(r"\[OVERQUOTA\][^\r\n]*\b(bandwidth|command)\b[^\r\n]*\blimit", re.IGNORECASE)


def over_limit(text: str) -> bool:
    """Whether *text* says the account exceeded a bandwidth or command limit (Gmail), as
    opposed to a full mailbox (a plain ``[OVERQUOTA]``, RFC 9208 section 4.3)."""
    return _OVER_LIMIT.search(text) is not None


def response_code(text: str | bytes) -> str:
    """The RFC 3501 section 7.1 response code of a tagged reply (``TRYCREATE``...) or ''."""
    raw = text.encode("utf-8", "replace") if isinstance(text, str) else text
    match = _RESPONSE_CODE.match(raw)
    return match.group(1).decode("ascii").upper() if match else ""


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


# A login refused for the number of connections already open (the words differ by server:
# Dovecot "Maximum number of connections from user+IP exceeded", Gmail "[ALERT] Too many
# simultaneous connections", Cyrus and Courier "Too many connections", Exchange "connection
# limit"; RFC 5530 gives no response code of its own for it, Dovecot sends [UNAVAILABLE]).
_CEILING_SIGNS = ("TOO MANY SIMULTANEOUS CONNECTIONS", "TOO MANY CONNECTIONS", "MAXIMUM NUMBER OF CONNECTIONS",
                  "CONNECTION LIMIT", "MAX_USERIP_CONNECTIONS", "MAIL_MAX_USERIP_CONNECTIONS")


def connection_ceiling(text: str) -> bool:
    """True when *text* refuses a login (or greets with BYE) because too many connections are open."""
    upper = text.upper()
    return any(sign in upper for sign in _CEILING_SIGNS)


def raise_if_throttled(text: str, account: Account) -> None:
    """Raise `Throttled` (with the server's suggested wait) when *text*, *account*'s server's
    reply, is a throttling reply; `OverLimit` when it says the account's limits are spent;
    `TooManyConnections` when it refuses for the number of connections open."""
    if over_limit(text):
        raise OverLimit(f"{account.where}: account over the provider's limits: {text.strip()[:200]}",
                        side=account.side) from None
    if connection_ceiling(text):
        raise TooManyConnections(f"{account.where}: server refuses more connections: {text.strip()[:200]}",
                                 throttle_wait(text) or 0.0, side=account.side) from None
    wait_s = throttle_wait(text)
    if wait_s is not None:
        raise Throttled(f"{account.where}: server is throttling: {text.strip()[:200]}", wait_s,
                        side=account.side) from None


# RFC 5530 section 3: the response codes of a refused login that are about the user, the
# credentials or the account.  Another attempt with LOGIN would fail the same way, and count
# as one more failed login against the account.  ([ALERT] says only that the text is for
# the user: Dovecot sends "NO [ALERT] Unsupported authentication mechanism.")
_CREDENTIAL_CODES = frozenset({
    "AUTHENTICATIONFAILED", "AUTHORIZATIONFAILED", "EXPIRED", "PRIVACYREQUIRED", "CONTACTADMIN",
})


def sasl_unusable(status: str, text: str) -> bool:
    """True when a failed AUTHENTICATE says nothing against the credentials, so that the
    LOGIN command may be tried instead: BAD (RFC 3501 section 6.2.2: a mechanism or an
    exchange the server does not understand, whatever it announced), or NO with a response
    code that is not about the credentials (``[ALERT]``, ``[CANNOT]``, ``[SERVERBUG]``...).  A NO without
    a code is how most servers refuse a wrong password: not tried again."""
    if status.upper() == "BAD":
        return True
    code = response_code(text)
    return bool(code) and code not in _CREDENTIAL_CODES


def admin_refused(account: Account, text: str) -> AuthError:
    """The error for an administrator's login that *account*'s server refused (*text*, the
    reply, already redacted): RFC 5530 section 3's AUTHORIZATIONFAILED says that his
    identity and password were right but he may not open this mailbox (Dovecot answers so
    for a mailbox that does not exist); anything else, that they were not."""
    side, mailbox, admin = account.side, account.user, account.auth_user
    if response_code(text) == "AUTHORIZATIONFAILED":
        check = (f"the administrator may not open this mailbox, or it does not exist; check {side}.user and "
                 f"what {side}.auth_user may open")
    else:
        check = f"check {side}.auth_user and its password (the administrator's, not the user's)"
    return AuthError(f"{account.where}: login to the mailbox {mailbox!r} as the administrator {admin!r} refused "
                     f"({text.strip()}); {check}", side=side)


def already_exists(text: str) -> bool:
    """True when a refused CREATE says the folder is there already (RFC 5530
    ``[ALREADYEXISTS]``; servers without response codes say so in words)."""
    return response_code(text) == "ALREADYEXISTS" or "exists" in text.lower()


def append_refused(
    account: Account, folder: str, text: str, status: str = "",
) -> MessageError | DestinationFull | Throttled:
    """The exception for a refused APPEND to *account*: the account is over its provider's
    limits or throttled, the folder is missing, the account is full, or the server refused
    these messages (too big, a limit, anything else).

    *text* is the reply after its status (*status*: "NO", "BAD"), or the message of an
    error imaplib raised, which puts its own words before the server's ("...: BAD [...]").
    """
    code = response_code(text) or response_code(text.split(":", 1)[-1])
    message = f"{account.where}: {folder!r}: APPEND refused: {status + ' ' if status else ''}{text}"
    try:
        raise_if_throttled(text, account)
    except Throttled as exc:
        # A tagged refusal: the APPEND stored nothing (RFC 3501 section 6.3.11).
        exc.refused = True
        return exc
    if code == "OVERQUOTA":
        # RFC 9208 section 4.3.  A batch refused for quota may still fit in part: the
        # caller retries its messages one by one before concluding the account is full.
        return DestinationFull(f"{message.rstrip('. ')}; free space on the destination and run again",
                               side=account.side)
    if code == "TRYCREATE":
        return FolderMissing(message, code, side=account.side)
    return MessageError(message, code, side=account.side)


# Response codes that name a cause of a refused APPEND other than its flags (RFC 5530
# section 3: LIMIT, NOPERM, UNAVAILABLE, INUSE, SERVERBUG...; RFC 4469 TOOBIG; RFC 9208
# OVERQUOTA; RFC 3501 TRYCREATE).  A refusal with any other code, or none (Dovecot says
# "NO [CANNOT] Keyword length too long", others BAD for a keyword they cannot parse), may
# be about a keyword the server will not take.
_NOT_ABOUT_FLAGS = frozenset({
    "LIMIT", "TOOBIG", "OVERQUOTA", "TRYCREATE", "NOPERM", "UNAVAILABLE", "INUSE", "SERVERBUG",
    "EXPUNGEISSUED", "NONEXISTENT", "ALREADYEXISTS", "AUTHORIZATIONFAILED", "EXPIRED", "PRIVACYREQUIRED",
})


def flags_may_be_why(refusal: MessageError) -> bool:
    """Whether a refused APPEND may have been refused for the message's keywords (too
    long, characters the server does not take, not in PERMANENTFLAGS): its response code,
    if any, names no other cause.  The caller sends the message again without them."""
    return refusal.code not in _NOT_ABOUT_FLAGS


# RFC 4315 section 4: "APPENDUID" SP nz-number SP append-uid, where a MULTIAPPEND's
# append-uid is a uid-set (uniqueid / uid-range, comma-separated; nz-numbers).  A reply
# that does not follow it reports nothing: the copies are made, their UIDs unknown (as
# without UIDPLUS), never an error after the server has stored them.
_UNIQUEID = r"[1-9][0-9]*"
_UID_SET = rf"{_UNIQUEID}(?::{_UNIQUEID})?(?:,{_UNIQUEID}(?::{_UNIQUEID})?)*"
_APPENDUID = re.compile(rf"\[APPENDUID ({_UNIQUEID}) ({_UID_SET})\]", re.IGNORECASE)


def append_uids(text: str, count: int) -> tuple[int, list[int]] | None:
    """(UIDVALIDITY, the new messages' UIDs in order) from a tagged OK to an APPEND that
    carried *count* messages (RFC 4315 section 3 APPENDUID; RFC 3502 gives a MULTIAPPEND a
    uid-set); None when the reply has none, or a set of another size."""
    match = _APPENDUID.search(text)
    if match is None:
        return None
    ranges: list[tuple[int, int]] = []
    for part in match.group(2).split(","):
        first, colon, last = part.partition(":")
        if not first.isdigit() or (colon and not last.isdigit()):
            # Not a uid-set (",,", "5:", ":"): as good as no APPENDUID.
            return None
        ranges.append(tuple(sorted((int(first), int(last or first)))))  # type: ignore[arg-type]
    # Counted before anything is built: a hostile "1:10000000" for one message must not
    # become a list of ten million UIDs.
    if sum(high - low + 1 for low, high in ranges) != count:
        return None
    return int(match.group(1)), [uid for low, high in ranges for uid in range(low, high + 1)]


def redact(text: str, *secrets: str) -> str:
    """*text* with every non-empty secret (password, token) replaced by ***, in every
    spelling a server's echo may give it: quoted, escaped, inside a SASL exchange's base64
    (`records.secrets`)."""
    return secrets_rules.redact(text, secrets)


class NoGreeting(TimeoutError):
    """The connection opened but the server said nothing within the timeout: typically a
    port that speaks TLS from the first byte, waiting for a TLS handshake that never comes."""


def describe_os_error(exc: BaseException, account: Account) -> str:
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host {account.host!r}; check {account.side}.server"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused; check {account.side}.server (host and port) and that the server runs"
    if isinstance(exc, NoGreeting) and account.tls != "implicit":
        return (
            f"connected, but the server sent no greeting within {account.timeout_s:g} s: the port may expect TLS "
            f"from the first byte (usually port 993); {account.side}.tls: implicit does that"
        )
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return (
            f"no answer within {account.timeout_s:g} s; check the address, the firewall "
            f"or raise {account.side}.timeout_s"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return describe_certificate_error(exc, account)
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({exc.reason or exc}); check {account.side}.tls ({account.tls}) and the port"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, EOFError)):
        return "connection closed by the server"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    return str(exc) or type(exc).__name__
