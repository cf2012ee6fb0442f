"""A small OAuth2 identity provider for the tests: both administrator grants and the
token introspection (RFC 7662) that Dovecot's ``oauth2`` passdb asks.

- ``POST /google/token``: the JWT bearer grant (RFC 7523) of a Google service account.
  The assertion's RS256 signature is verified with the public key of the account that
  `add_service_account` made (a key pair per account, from ``cryptography``), then its
  ``iss``, ``aud`` (Google's token URI, or this one), ``scope`` and ``exp``; its ``sub`` must be a mailbox
  the account was delegated, else ``unauthorized_client``, as Google answers.
- ``POST /<tenant>/oauth2/v2.0/token``: the client-credentials grant (RFC 6749 section
  4.4) of a Microsoft app registration (`add_app`): tenant, client and secret (or a
  client assertion signed with the app's certificate) are checked, and refusals carry
  the AADSTS codes Microsoft sends (90002, 700016, 7000215, 7000222).
- ``POST /introspect``: ``{"active": true, "username": ...}`` for a token issued and not
  yet expired; anything else is inactive (and counted in `refused`).

Tokens live `lifetime_s` seconds.  `issued` lists (grant, mailbox) for every token handed
out: what the tests count.  Served over HTTP, and over HTTPS too when given a certificate
(`https_url`).  Standard library and cryptography; the servers run in daemon threads.
"""

from __future__ import annotations

import base64
import json
import secrets
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GOOGLE_AUDIENCE = "https://oauth2.googleapis.com/token"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass
class App:
    """A Microsoft app registration: its secret (or certificate) and the mailbox it may open."""

    secret: str
    mailbox: str
    secret_expired: bool = False
    certificate: x509.Certificate | None = None


@dataclass
class ServiceAccount:
    public_key: rsa.RSAPublicKey
    delegated: set[str] = field(default_factory=set)


class IdentityProvider:
    """``with IdentityProvider() as idp: key = idp.add_service_account(...); idp.url``."""

    def __init__(self, lifetime_s: float = 3600.0, tls: tuple[Path, Path] | None = None) -> None:
        self.lifetime_s = lifetime_s
        self.issued: list[tuple[str, str]] = []
        self.refused: list[str] = []
        self.introspections = 0
        self.apps: dict[tuple[str, str], App] = {}
        self.accounts: dict[str, ServiceAccount] = {}
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        handler = _handler(self)
        self._servers = [ThreadingHTTPServer(("127.0.0.1", 0), handler)]
        if tls is not None:
            secure = ThreadingHTTPServer(("127.0.0.1", 0), handler)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            secure.socket = context.wrap_socket(secure.socket, server_side=True)
            self._servers.append(secure)

    @property
    def url(self) -> str:
        """The plain HTTP base URL (introspection, and token endpoints without TLS)."""
        return f"http://127.0.0.1:{self._servers[0].server_address[1]}"

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self._servers[1].server_address[1]}"

    @property
    def introspection_url(self) -> str:
        return f"{self.url}/introspect"

    def add_service_account(self, email: str, delegated: set[str], token_uri: str) -> dict[str, str]:
        """A service account whose domain-wide delegation covers *delegated*: its JSON key."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.accounts[email] = ServiceAccount(key.public_key(), set(delegated))
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
        return {"type": "service_account", "project_id": "test", "private_key_id": secrets.token_hex(20),
                "private_key": pem, "client_email": email, "client_id": "1234567890",
                "token_uri": token_uri}

    def delete_key(self, email: str) -> None:
        """The account's key was deleted in the console: its signatures no longer verify."""
        self.accounts[email].public_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()

    def add_app(self, tenant: str, client_id: str, app: App) -> None:
        self.apps[(tenant, client_id)] = app

    # ------------------------------------------------------------------ grants

    def google_grant(self, url: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if form.get("grant_type") != JWT_BEARER:
            return 400, {"error": "unsupported_grant_type"}
        claims = _verified_claims(form.get("assertion", ""), lambda c: self._service_key(c))
        if claims is None:
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
        # google-auth signs for Google's token URI whatever token_uri it posts to.
        if claims.get("aud") not in (url, GOOGLE_AUDIENCE) or "https://mail.google.com/" not in str(claims.get("scope", "")).split():
            return 400, {"error": "invalid_scope", "error_description": "Invalid OAuth scope or ID token audience provided."}
        if float(claims.get("exp", 0)) < time.time():
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT: Token must be a short-lived token"}
        subject = str(claims.get("sub", ""))
        if subject not in self.accounts[str(claims["iss"])].delegated:
            return 401, {"error": "unauthorized_client", "error_description": "Client is unauthorized to retrieve "
                         "access tokens using this method, or client not authorized for any of the scopes requested."}
        return 200, self._issue("google", subject)

    def microsoft_grant(self, url: str, tenant: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if form.get("grant_type") != "client_credentials" or form.get("scope") != "https://outlook.office365.com/.default":
            return 400, {"error": "invalid_request", "error_description": "AADSTS900144: bad grant or scope"}
        if tenant not in {t for t, _c in self.apps}:
            return 400, _aad("invalid_request", 90002, f"Tenant '{tenant}' not found.")
        app = self.apps.get((tenant, form.get("client_id", "")))
        if app is None:
            return 400, _aad("unauthorized_client", 700016, "Application not found in the directory.")
        if app.certificate is not None:
            claims = _verified_claims(form.get("client_assertion", ""), lambda c: app.certificate.public_key())  # type: ignore[union-attr]
            good = (claims is not None and form.get("client_assertion_type") == ASSERTION_TYPE
                    and claims.get("aud") == url and claims.get("iss") == form.get("client_id"))
            if not good:
                return 401, _aad("invalid_client", 700027, "Client assertion failed signature validation.")
        elif app.secret_expired:
            return 401, _aad("invalid_client", 7000222, "The provided client secret keys are expired.")
        elif form.get("client_secret") != app.secret:
            return 401, _aad("invalid_client", 7000215, "Invalid client secret provided.")
        return 200, self._issue("microsoft", app.mailbox)

    def _service_key(self, claims: dict[str, Any]) -> rsa.RSAPublicKey | None:
        account = self.accounts.get(str(claims.get("iss", "")))
        return account.public_key if account else None

    def _issue(self, grant: str, mailbox: str) -> dict[str, Any]:
        token = f"{grant[:2]}." + secrets.token_urlsafe(24)
        with self._lock:
            self.issued.append((grant, mailbox))
            self._tokens[token] = (mailbox, time.time() + self.lifetime_s)
        return {"access_token": token, "token_type": "Bearer", "expires_in": int(self.lifetime_s)}

    def introspect(self, token: str) -> dict[str, Any]:
        with self._lock:
            self.introspections += 1
            mailbox, expires = self._tokens.get(token, ("", 0.0))
            if mailbox and time.time() < expires:
                return {"active": True, "username": mailbox}
            self.refused.append(token)
        return {"active": False}

    def revoke_all(self) -> None:
        """Every token issued so far is revoked (as an administrator's "sign out everywhere")."""
        with self._lock:
            self._tokens = {token: (mailbox, 0.0) for token, (mailbox, _e) in self._tokens.items()}

    def tokens_issued(self) -> list[str]:
        with self._lock:
            return list(self._tokens)

    def __enter__(self) -> Self:
        for server in self._servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()


def _aad(error: str, code: int, text: str) -> dict[str, Any]:
    """An error reply shaped as Microsoft's identity platform sends it."""
    return {"error": error, "error_description": f"AADSTS{code}: {text} Trace ID: 0000", "error_codes": [code]}


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _verified_claims(assertion: str, key_for: Any) -> dict[str, Any] | None:
    """The claims of an RS256 JWT whose signature the key *key_for(claims)* verifies."""
    try:
        header_b64, claims_b64, signature_b64 = assertion.split(".")
        header, claims = json.loads(_b64decode(header_b64)), json.loads(_b64decode(claims_b64))
        key = key_for(claims)
        if header.get("alg") != "RS256" or key is None:
            return None
        key.verify(_b64decode(signature_b64), f"{header_b64}.{claims_b64}".encode(), padding.PKCS1v15(), hashes.SHA256())
    except Exception:
        return None
    return claims if isinstance(claims, dict) else None


def _handler(idp: IdentityProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # http.server's naming
            length = int(self.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in urllib.parse.parse_qs(self.rfile.read(length).decode()).items()}
            path = urllib.parse.urlsplit(self.path).path
            scheme = "https" if isinstance(self.connection, ssl.SSLSocket) else "http"
            url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}{path}"
            parts = path.strip("/").split("/")
            if path == "/introspect":
                status, reply = 200, idp.introspect(form.get("token", ""))
            elif path == "/google/token":
                status, reply = idp.google_grant(url, form)
            elif len(parts) == 4 and parts[1:] == ["oauth2", "v2.0", "token"]:
                status, reply = idp.microsoft_grant(url, urllib.parse.unquote(parts[0]), form)
            else:
                status, reply = 404, {"error": "not_found"}
            body = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep test output clean

    return Handler
