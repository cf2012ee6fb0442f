"""Access tokens from an administrator identity (`oauth2.OAuth2Identity`) for one mailbox.

Settings layer: imports `errors`, `credentials` and `oauth2`; only `tokens.py` calls
`fetch_token`, in the run's parent process, which shares what it gets with the workers.

- Google Workspace: the JWT bearer grant (RFC 7523) at the key file's own ``token_uri``,
  subject the mailbox, scope https://mail.google.com/, through google-auth (extra
  ``google``).  The HTTP request goes through a requests session that is handed the
  identity's ``ca_file`` on every call, so it wins over REQUESTS_CA_BUNDLE.
- Microsoft 365: the client-credentials grant (RFC 6749 section 4.4) for
  https://outlook.office365.com/.default, with a client secret or a certificate (a
  client assertion, RFC 7523 section 2.2, signed here with cryptography: extra
  ``microsoft``).  This is one form POST, made with urllib: MSAL cannot be pointed at a
  token endpoint alone (it reads the authority's OpenID discovery document first), and
  ``token_url`` must work with any provider of the grant (Keycloak, Authentik).

What the provider answers becomes one line naming the side, the cause and where to fix
it: AuthError (exit 4) when it refuses the identity's credentials or grant, ConfigError
(exit 2) when the identity named does not exist (no such tenant or application) or a
local file is wrong, ConnectError (exit 3) when the endpoint cannot be reached.  The
provider's error code and description are quoted; no secret is ever part of a message
(every secret read here is registered with `credentials.remember_secret` for the
reporter and the log to redact).
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Mapping
from typing import Any

from fastsync.records.errors import AuthError, ConfigError, ConnectError, FastsyncError
from fastsync.settings.credentials import (
    CredentialError, TokenAccount, remember_secret, resolve_password, run_secret_cmd,
)
from fastsync.settings.oauth2 import (
    IdentityProblem, OAuth2Identity, missing_extra, read_certificate, read_service_account,
)

__all__ = ["GOOGLE_SCOPE", "MICROSOFT_SCOPE", "TOKEN_TIMEOUT_S", "fetch_token"]

GOOGLE_SCOPE = "https://mail.google.com/"
MICROSOFT_SCOPE = "https://outlook.office365.com/.default"
TOKEN_TIMEOUT_S = 30.0
ASSERTION_LIFETIME_S = 600

GOOGLE_DELEGATION = (
    "in the Google Admin console: Security > Access and data control > API controls > "
    "Manage Domain Wide Delegation, add the service account's client ID with the scope "
    f"{GOOGLE_SCOPE}"
)
ENTRA_APP = "in the Microsoft Entra admin center: App registrations > the app"

# Microsoft's AADSTS codes (learn.microsoft.com "Microsoft Entra authentication and
# authorization error codes"), from the reply's error_codes list: the cause and the fix.
# A tuple's third item says the identity itself is misnamed (exit 2), else refused (exit 4).
MICROSOFT_CODES: dict[int, tuple[str, str, bool]] = {
    90002: ("no such tenant", "check {field}.tenant: the Directory (tenant) ID on the app's Overview page", True),
    900023: ("not a tenant ID or domain", "check {field}.tenant: the Directory (tenant) ID on the app's Overview page", True),
    700016: ("no such application in this tenant", "check {field}.client_id: the Application (client) ID on the "
             "app's Overview page, and that the app is registered in this tenant", True),
    7000215: ("the client secret is wrong", f"give the secret's Value (not its ID) from {ENTRA_APP} > "
              "Certificates & secrets", False),
    7000222: ("the client secret has expired", f"create a new one {ENTRA_APP} > Certificates & secrets "
              "and update {field}", False),
    700027: ("the certificate's signature was not accepted", f"upload the certificate {ENTRA_APP} > "
             "Certificates & secrets", False),
    7000112: ("the application is disabled", "enable it in the Microsoft Entra admin center: "
              "Enterprise applications > the app > Properties", False),
}


def fetch_token(identity: OAuth2Identity, account: TokenAccount) -> tuple[str, float]:
    """(access token, when it expires as time.time()) for *account*'s mailbox; raises
    AuthError, ConfigError or ConnectError naming the side."""
    try:
        if identity.provider == "google":
            return _google(identity, account)
        return _microsoft(identity, account)
    except IdentityProblem as exc:
        raise ConfigError(f"{account.where}: {exc.path}: {exc.problem}", side=account.side) from None


# --------------------------------------------------------------------------- Google


def _google(identity: OAuth2Identity, account: TokenAccount) -> tuple[str, float]:
    try:
        import requests
        from google.auth import exceptions as google_errors
        from google.auth.transport.requests import Request
        from google.oauth2 import service_account
    except ImportError:
        raise IdentityProblem(identity.key_path, missing_extra("google", "google-auth")) from None
    info = read_service_account(identity)
    remember_secret(info["private_key"])
    try:
        credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
            info, scopes=[GOOGLE_SCOPE])
    except (ValueError, TypeError):
        raise IdentityProblem(f"{identity.key_path}.google_service_account",
                              "the key file's private_key is not a PEM private key; download a new JSON key") from None
    credentials = credentials.with_subject(account.user)
    ca_file = identity.ca_file

    class TrustingRequest(Request):
        """Passes ca_file on every call: a session's own verify loses to REQUESTS_CA_BUNDLE."""

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            if ca_file is not None:
                kwargs["verify"] = ca_file
            kwargs.setdefault("timeout", TOKEN_TIMEOUT_S)
            return super().__call__(*args, **kwargs)  # type: ignore[no-untyped-call]

    with requests.Session() as session:
        try:
            credentials.refresh(TrustingRequest(session))
        except google_errors.RefreshError as exc:
            raise _google_refusal(identity, account, exc.args) from None
        except google_errors.TransportError as exc:
            cause = exc.args[0] if exc.args else exc
            untrusted = isinstance(cause, requests.exceptions.SSLError)
            raise _unreachable(identity, account, info["token_uri"], cause, untrusted) from None
        except OSError as exc:  # requests: REQUESTS_CA_BUNDLE names no file, and the like
            raise _unreachable(identity, account, info["token_uri"], exc, False) from None
    token = str(credentials.token)
    expiry = credentials.expiry
    expires = calendar.timegm(expiry.utctimetuple()) if expiry is not None else time.time() + 3600
    return token, float(expires)


def _google_refusal(identity: OAuth2Identity, account: TokenAccount, args: tuple[Any, ...]) -> FastsyncError:
    data = args[1] if len(args) > 1 and isinstance(args[1], Mapping) else {}
    code = str(data.get("error", "")) or "refused"
    description = str(data.get("error_description", "")) or (_first_line(args[0]) if args else "")
    answer = f"{code}: {description}" if description else code
    head = f"{account.where}: {identity.key_path}: Google refused a token for {account.user!r} ({answer})"
    if code == "unauthorized_client":
        cause = f"domain-wide delegation is not granted for this scope; {GOOGLE_DELEGATION}"
    elif code == "invalid_grant" and "signature" in description.lower():
        cause = ("the key has been deleted or disabled; create a new JSON key in the Google Cloud console: "
                 "IAM & Admin > Service accounts > the account > Keys")
    elif code == "invalid_grant":
        cause = f"check {account.side}.user: a mailbox of the service account's Workspace domain"
    else:
        cause = f"check the service account and its delegation; {GOOGLE_DELEGATION}"
    return AuthError(f"{head}: {cause}", side=account.side)


# --------------------------------------------------------------------------- Microsoft


def _microsoft(identity: OAuth2Identity, account: TokenAccount) -> tuple[str, float]:
    url = identity.endpoint
    form = {"grant_type": "client_credentials", "client_id": identity.client_id, "scope": MICROSOFT_SCOPE}
    if identity.secret_key == "certificate_file":
        assertion = _client_assertion(identity, url)
        form["client_assertion_type"] = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        form["client_assertion"] = assertion
    else:
        form["client_secret"] = _client_secret(identity)
    request = urllib.request.Request(
        url, data=urllib.parse.urlencode(form).encode(), method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
    )
    context = ssl.create_default_context(cafile=identity.ca_file)
    started = time.time()
    try:
        with urllib.request.urlopen(request, timeout=TOKEN_TIMEOUT_S, context=context) as reply:
            data = _json(reply.read(1 << 20))
    except urllib.error.HTTPError as exc:
        raise _microsoft_refusal(identity, account, exc.code, _json(exc.read(1 << 20))) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        untrusted = isinstance(reason, ssl.SSLCertVerificationError)
        raise _unreachable(identity, account, url, reason, untrusted) from None
    token = data.get("access_token")
    if not isinstance(token, str) or not token:
        raise AuthError(f"{account.where}: {identity.key_path}: the token endpoint {url} answered without an "
                        "access_token; check token_url", side=account.side)
    remember_secret(token)
    lifetime = data.get("expires_in")
    seconds = float(lifetime) if isinstance(lifetime, int | float | str) and str(lifetime).isdigit() else 3600.0
    return token, started + seconds


def _unreachable(identity: OAuth2Identity, account: TokenAccount, url: str, reason: object,
                 untrusted: bool) -> ConnectError:
    """The token endpoint could not be asked (exit 3); a certificate it was not trusted
    with names the key that trusts a private CA."""
    hint = f"; if it has a private CA, give that CA as {identity.key_path}.ca_file" if untrusted else ""
    return ConnectError(f"{account.where}: {identity.key_path}: cannot reach the token endpoint {url} "
                        f"({_first_line(reason)}){hint}", side=account.side)


def _microsoft_refusal(identity: OAuth2Identity, account: TokenAccount, status: int,
                       data: Mapping[str, Any]) -> FastsyncError:
    code = str(data.get("error", "")) or f"HTTP {status}"
    description = _first_line(data.get("error_description", ""))
    answer = f"{code}: {description}" if description else code
    head = f"{account.where}: {identity.key_path}: the token endpoint refused the client credentials ({answer})"
    field = f"{identity.key_path}.microsoft"
    numbers = data.get("error_codes")
    known = [n for n in numbers if isinstance(n, int) and n in MICROSOFT_CODES] if isinstance(numbers, list) else []
    if known:
        cause, fix, misnamed = MICROSOFT_CODES[known[0]]
        message = f"{head}: {cause}; {fix.format(field=field)}"
        return ConfigError(message, side=account.side) if misnamed else AuthError(message, side=account.side)
    if code == "unauthorized_client":
        cause = (f"the app may not use this grant; {ENTRA_APP} > API permissions: add Office 365 Exchange Online > "
                 "IMAP.AccessAsApp (application) and grant admin consent")
    elif code == "invalid_client":
        cause = f"check {field}.client_id and its secret {ENTRA_APP} > Certificates & secrets"
    else:
        cause = f"check {field}"
    return AuthError(f"{head}: {cause}", side=account.side)


def _client_secret(identity: OAuth2Identity) -> str:
    path = f"{identity.key_path}.microsoft.{identity.secret_key}"
    try:
        if identity.secret_key == "client_secret_file":
            secret = resolve_password("pass_file", identity.secret_value, "the file", identity.workdir, {})
        else:
            secret = run_secret_cmd(identity.secret_value, identity.workdir, "the client secret")
    except CredentialError as exc:
        raise IdentityProblem(path, exc.problem) from None
    remember_secret(secret)
    return secret


def _client_assertion(identity: OAuth2Identity, audience: str) -> str:
    """A JWT signed with the certificate's key, as Microsoft's certificate credential:
    RS256, x5t the certificate's SHA-1 thumbprint, aud the token endpoint."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.serialization import Encoding

    key, certificate = read_certificate(identity)
    thumbprint = hashlib.sha1(certificate.public_bytes(Encoding.DER)).digest()
    now = int(time.time())
    header = {"alg": "RS256", "typ": "JWT", "x5t": _b64(thumbprint)}
    claims = {"aud": audience, "iss": identity.client_id, "sub": identity.client_id,
              "jti": str(uuid.uuid4()), "nbf": now, "iat": now, "exp": now + ASSERTION_LIFETIME_S}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    assertion = f"{signing_input}.{_b64(signature)}"
    remember_secret(assertion)
    return assertion


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _json(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _first_line(value: object) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else ""
