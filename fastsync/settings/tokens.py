"""OAuth2 access tokens: one per mailbox and identity, shared by every process of a run.

Settings layer: imports `errors`, `credentials` and `grants` (the last where a token is
fetched, so that worker processes never load it).  The protocol edge asks
`access_token` for each login of an OAuth2 side (one with ``oauth2_token_cmd`` or an
``oauth2:`` identity); the engine hands `token_handoff`'s `TokenLink` to its workers in
the pool's setup, and each worker `adopt_tokens` it as it starts.

Sharing (data flow)::

    parent: access_token -> cache -> oauth2_token_cmd / grants.fetch_token (the only fetch)
       ^  TokenBroker thread: a Unix socket in a private folder, HMAC-authenticated with
       |  a key that only travels inside the pickled setup over the worker's pipe
    worker: access_token -> its cache -> asks the broker when due ((side, user, refused))

So the planner, every worker, every reconnect and the watch's listeners (threads of the
parent) log in with the one token the parent holds for the mailbox, and a worker never
runs the token command nor asks the provider itself.  No token, secret or key is written
to a file or put in a process's arguments or environment.

Renewal: a token is renewed `TOKEN_RENEW_BEFORE_S` before it expires (half its lifetime
for tokens that live less than twice that), so that a watch running for days never logs
in with an expired one; the expiry comes from the provider's ``expires_in``, else from a
JWT's "exp" claim, else tokens are kept `TOKEN_REUSE_S`.  A token the server refuses is
renewed once (the caller asks again with ``fresh=True``; if another process renewed it
meanwhile, that newer token is the answer), and a second refusal stops the run.
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Client, Connection, Listener
from typing import TYPE_CHECKING, Any, Protocol

from fastsync.records.errors import AuthError, FastsyncError
from fastsync.settings.credentials import SecretCommandError, TokenAccount, remember_secret, run_secret_cmd

if TYPE_CHECKING:  # only the parent, which fetches tokens, reads an identity
    from fastsync.settings.oauth2 import OAuth2Identity

__all__ = [
    "TOKEN_REUSE_S",
    "TOKEN_RENEW_BEFORE_S",
    "BearerAccount",
    "TokenLink",
    "access_token",
    "adopt_tokens",
    "bearer",
    "renew_at",
    "token_expiry",
    "token_handoff",
    "token_origin",
]

TOKEN_REUSE_S = 30 * 60.0
TOKEN_RENEW_BEFORE_S = 5 * 60.0


class BearerAccount(TokenAccount, Protocol):
    """A side that may log in with a token: `config.Account`."""

    @property
    def oauth2(self) -> OAuth2Identity | None: ...


TokenKey = tuple[object, ...]


@dataclass(frozen=True)
class TokenLink:
    """What a worker needs to share its parent's tokens: the broker's address and key, and
    the tokens the parent held as the pool started.  Empty when no side uses OAuth2."""

    address: str = ""
    authkey: bytes = field(default=b"", repr=False)
    tokens: Mapping[TokenKey, tuple[float, str]] = field(default_factory=dict, repr=False)


# key -> (renew at, as time.time(), token)
_tokens: dict[TokenKey, tuple[float, str]] = {}
_lock = threading.RLock()
# In a worker: the parent to ask.  In the parent: the broker serving its workers.
_link: TokenLink | None = None
_broker: _Broker | None = None


def bearer(account: BearerAccount) -> bool:
    """Whether *account* logs in with an access token."""
    return account.oauth2 is not None or account.oauth2_token_cmd is not None


def token_origin(account: BearerAccount) -> str:
    """Where the side's tokens come from, for messages: ``printed by dst.oauth2_token_cmd``."""
    if account.oauth2 is not None:
        return f"obtained through {account.side}.oauth2"
    return f"printed by {account.side}.oauth2_token_cmd"


def _key(account: BearerAccount) -> TokenKey:
    """One token per mailbox and identity."""
    if account.oauth2 is not None:
        return ("oauth2", account.oauth2, account.user, account.server)
    return ("cmd", account.oauth2_token_cmd, account.workdir, account.user, account.server)


def access_token(account: BearerAccount, *, fresh: bool = False) -> tuple[str, bool]:
    """(token, came from this process's cache) for an OAuth2 side.  *fresh*: the cached
    token was refused; get another.  Raises AuthError (or ConfigError, ConnectError for
    an identity) naming the side, never the command nor a secret."""
    if not bearer(account):
        raise ValueError(f"{account.side} has no OAuth2 credential")
    key = _key(account)
    with _lock:
        cached = _tokens.get(key)
        if cached is not None and not fresh and time.time() < cached[0]:
            return cached[1], True
        refused = cached[1] if fresh and cached is not None else None
        link = _link
    if link is not None and link.address:
        entry = _ask_parent(link, account, refused)
        with _lock:
            _tokens[key] = entry
        remember_secret(entry[1])
        return entry[1], False
    return _obtain(account, refused)[1], False


def _obtain(account: BearerAccount, refused: str | None) -> tuple[float, str]:
    """The parent's token for *account*: its cached one unless due or *refused*, else a new
    one.  One fetch at a time: who waits gets the token just fetched."""
    key = _key(account)
    with _lock:
        cached = _tokens.get(key)
        if cached is not None and time.time() < cached[0] and cached[1] != refused:
            return cached
        now = time.time()
        if account.oauth2 is not None:
            # Imported here: only the parent fetches, and only for an ``oauth2:`` identity;
            # urllib.request and http.client (about 2 MB of code) stay out of every worker.
            from fastsync.settings import grants

            token, expires = grants.fetch_token(account.oauth2, account)
            entry = (renew_at(now, expires), token)
        else:
            token = _command_token(account)
            entry = (token_expiry(token, now), token)
        remember_secret(token)
        _tokens[key] = entry
        return entry


def _command_token(account: BearerAccount) -> str:
    command = account.oauth2_token_cmd
    assert command is not None
    field_name = f"{account.side}.oauth2_token_cmd"
    try:
        token = run_secret_cmd(command, account.workdir, "an access token").strip()
    except SecretCommandError as exc:
        raise AuthError(f"{account.where}: {field_name}: {exc.problem}", side=account.side) from None
    if not _is_b64token(token):
        raise AuthError(
            f"{account.where}: {field_name}: command printed something that is not an access token "
            "(RFC 6750: letters, digits and -._~+/=); print only the token, "
            "e.g. pipe JSON through jq -r .access_token", side=account.side,
        )
    return token


def _is_b64token(token: str) -> bool:
    """RFC 6750 section 2.1 b64token: what a bearer token may consist of.  Checked so that a
    command printing JSON or a "Bearer ..." line fails clearly instead of at the server."""
    body = token.rstrip("=")
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/")
    return bool(body) and all(ch in allowed for ch in body)


def renew_at(now: float, expires: float) -> float:
    """When a token fetched at *now* that expires at *expires* is renewed:
    `TOKEN_RENEW_BEFORE_S` ahead, or half its lifetime ahead when it lives less than
    twice that; never in the past."""
    lifetime = expires - now
    return max(now, expires - min(TOKEN_RENEW_BEFORE_S, lifetime / 2))


def token_expiry(token: str, now: float) -> float:
    """When a token from a command, fetched at *now*, is renewed: by `renew_at` from a JWT's
    "exp" claim (RFC 7519 section 4.1.4), never later than `TOKEN_REUSE_S`; an opaque token
    after `TOKEN_REUSE_S`."""
    parts = token.split(".")
    if len(parts) == 3:
        try:
            claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        except (ValueError, TypeError):
            claims = None
        expires = claims.get("exp") if isinstance(claims, dict) else None
        if isinstance(expires, int | float) and not isinstance(expires, bool):
            return min(now + TOKEN_REUSE_S, renew_at(now, float(expires)))
    return now + TOKEN_REUSE_S


# --------------------------------------------------------------------------- sharing


def token_handoff(accounts: Iterable[BearerAccount]) -> TokenLink:
    """The link for this run's workers: the OAuth2 *accounts*' tokens (fetched now if not
    cached) and the broker that renews them.  Raises as `access_token` does."""
    global _broker
    handed: dict[TokenKey, tuple[float, str]] = {}
    sides = [account for account in accounts if bearer(account)]
    if not sides:
        return TokenLink()
    if _link is not None and _link.address:
        # A worker's own pool (none today) would share its parent's broker.
        return _link
    for account in sides:
        handed[_key(account)] = _obtain(account, None)
    with _lock:
        if _broker is None:
            _broker = _Broker()
        for account in sides:
            _broker.accounts[(account.side, account.user)] = account
    return TokenLink(_broker.address, _broker.authkey, handed)


def adopt_tokens(link: TokenLink) -> None:
    """In a worker: log in with the parent's tokens, and ask the parent for new ones."""
    global _link
    with _lock:
        _link = link
        for key, entry in link.tokens.items():
            _tokens[key] = entry
            remember_secret(entry[1])


def _ask_parent(link: TokenLink, account: BearerAccount, refused: str | None) -> tuple[float, str]:
    try:
        with Client(link.address, "AF_UNIX", authkey=link.authkey) as connection:
            connection.send((account.side, account.user, refused))
            status, value = connection.recv()
    except (OSError, EOFError) as exc:
        raise AuthError(f"{account.where}: no access token: the run's parent process, which holds it, "
                        f"cannot be reached ({type(exc).__name__})", side=account.side) from None
    if status == "error":
        raise value
    return tuple(value)


class _Broker:
    """The parent's end: answers its workers' requests for tokens, one thread each."""

    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="fastsync-tokens-")
        self.address = os.path.join(self.folder, "broker")
        self.authkey = secrets.token_bytes(32)
        self.accounts: dict[tuple[str, str], BearerAccount] = {}
        self.listener = Listener(self.address, "AF_UNIX", authkey=self.authkey)
        self.closed = False
        threading.Thread(target=self.serve, daemon=True, name="fastsync-tokens").start()
        atexit.register(self.close)

    def serve(self) -> None:
        while not self.closed:
            try:
                connection = self.listener.accept()
            except Exception:  # a peer without the key, a reset: the next one may be ours
                if self.closed:
                    return
                continue
            threading.Thread(target=self.answer, args=(connection,), daemon=True).start()

    def answer(self, connection: Connection) -> None:
        with connection:
            try:
                side, user, refused = connection.recv()
                account = self.accounts[(side, user)]
                reply: tuple[str, Any] = ("ok", _obtain(account, refused))
            except FastsyncError as exc:
                reply = ("error", exc)
            except (OSError, EOFError, KeyError, TypeError, ValueError):
                return
            try:
                connection.send(reply)
            except OSError:
                pass

    def close(self) -> None:
        self.closed = True
        try:
            self.listener.close()
        except OSError:
            pass
        shutil.rmtree(self.folder, ignore_errors=True)
