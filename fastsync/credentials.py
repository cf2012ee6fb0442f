"""Credentials: OAuth2 access tokens from ``oauth2_token_cmd``, their cache, and the SASL
exchange that carries them.

Settings layer: imports `config` and `errors`.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence

from fastsync.config import Account, SecretCommandError, run_secret_cmd
from fastsync.errors import AuthError

# An access token from oauth2_token_cmd is reused for this long within one process, so the
# planner's two connections, or a worker's reconnects, do not run the command each time.
# Providers' tokens live an hour (Google, Microsoft 365); a cached token the server refuses
# is fetched again at once (see transport's OAuth2 login), so a rotated token is still picked up.
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


class BearerExchange:
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

