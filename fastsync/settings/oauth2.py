"""An administrator's OAuth2 identity for a side: the ``oauth2:`` block of the config file.

Settings layer: imports `credentials` only.  ``config.py`` hands the block to
`parse_identity` and gets back an `OAuth2Identity`, or an `IdentityProblem` with the field
path and what is wrong, which it turns into its one-line ConfigError.  Two identities are
known, each getting a token per mailbox (the side's ``user``) from a grant of its own
(`grants.py` fetches them, `tokens.py` caches and shares them)::

    oauth2: {google_service_account: key.json}            # RFC 7523 JWT bearer grant
    oauth2:
      microsoft: {tenant: ..., client_id: ..., client_secret_cmd | client_secret_file |
                  certificate_file: ..., token_url: ...}   # RFC 6749 section 4.4
      ca_file: ca.pem                                      # trusted for the token endpoints

The record holds paths and names, never a secret: the key file, the client secret and the
certificate's private key are read when a token is fetched, in the process that fetches
it (the run's parent), so they never travel to the workers.  What can be checked without
asking the provider is checked here (the key file is a service account's, the certificate
file holds a certificate and its key), so that a broken file is exit 2 before any
connection.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastsync.settings.credentials import readable_file_problem, resolve_path

__all__ = [
    "GOOGLE_KEY",
    "MICROSOFT_KEY",
    "MICROSOFT_SECRET_KEYS",
    "IdentityProblem",
    "OAuth2Identity",
    "parse_identity",
    "read_service_account",
    "read_certificate",
    "missing_extra",
]

GOOGLE_KEY = "google_service_account"
MICROSOFT_KEY = "microsoft"
OAUTH2_BLOCK_KEYS = (GOOGLE_KEY, MICROSOFT_KEY, "ca_file")
MICROSOFT_SECRET_KEYS = ("client_secret_cmd", "client_secret_file", "certificate_file")
MICROSOFT_KEYS = ("tenant", "client_id", *MICROSOFT_SECRET_KEYS, "token_url")
KEY_FILE_FIELDS = ("client_email", "private_key", "token_uri")
EXPECTED_BLOCK = (
    "a mapping with google_service_account: <key file> or microsoft: {tenant, client_id, "
    "client_secret_cmd | client_secret_file | certificate_file}"
)
GOOGLE_KEY_HINT = (
    "a service account's JSON key: Google Cloud console > IAM & Admin > Service accounts > "
    "the account > Keys > Add key > JSON"
)


class IdentityProblem(Exception):
    """The ``oauth2:`` block is wrong at ``path`` (``dst.oauth2.microsoft.tenant``)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


@dataclass(frozen=True)
class OAuth2Identity:
    """An administrator identity that obtains a token for any mailbox of its organisation.

    ``provider`` is "google" or "microsoft"; ``key_path`` names the block in messages
    (``dst.oauth2``).  Google: ``key_file`` (absolute path).  Microsoft: ``tenant``,
    ``client_id``, the secret's source (``secret_key`` and ``secret_value``: a command, a
    file or a certificate file; the command is hidden from ``repr`` since it may embed the
    secret) and ``token_url`` ('' for Microsoft's own endpoint; ``{tenant}`` in it is
    replaced).  ``ca_file``: trusted for the token endpoint instead of the system's store.
    """

    provider: str
    key_path: str
    key_file: str = ""
    tenant: str = ""
    client_id: str = ""
    secret_key: str = ""
    secret_value: str = field(default="", repr=False)
    token_url: str = ""
    ca_file: str | None = None
    workdir: str = ""

    @property
    def endpoint(self) -> str:
        """The Microsoft token endpoint this identity asks."""
        if not self.token_url:
            tenant = urllib.parse.quote(self.tenant, safe="")
            return f"https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"
        return self.token_url.replace("{tenant}", urllib.parse.quote(self.tenant, safe=""))


def parse_identity(value: object, side: str, base_dir: str) -> OAuth2Identity:
    """The identity the ``oauth2:`` block *value* of *side* describes; raises IdentityProblem."""
    path = f"{side}.oauth2"
    block = _mapping(path, value, EXPECTED_BLOCK)
    _known(path, block, OAUTH2_BLOCK_KEYS)
    given = [key for key in (GOOGLE_KEY, MICROSOFT_KEY) if block.get(key) is not None]
    if len(given) != 1:
        problem = "both google_service_account and microsoft given; use one" if given else "no identity"
        raise IdentityProblem(path, f"{problem}; expected {EXPECTED_BLOCK}")
    ca_file = None
    if block.get("ca_file") is not None:
        ca_file = _readable(f"{path}.ca_file", block["ca_file"], base_dir, "a PEM file of trusted CA certificates")
    if given[0] == GOOGLE_KEY:
        key_file = _readable(f"{path}.{GOOGLE_KEY}", block[GOOGLE_KEY], base_dir, GOOGLE_KEY_HINT)
        identity = OAuth2Identity("google", path, key_file=key_file, ca_file=ca_file, workdir=base_dir)
        read_service_account(identity)
        return identity
    return _parse_microsoft(f"{path}.{MICROSOFT_KEY}", block[MICROSOFT_KEY], base_dir, ca_file)


def _parse_microsoft(path: str, value: object, base_dir: str, ca_file: str | None) -> OAuth2Identity:
    body = _mapping(path, value, "a mapping with tenant, client_id and one of " + ", ".join(MICROSOFT_SECRET_KEYS))
    _known(path, body, MICROSOFT_KEYS)
    tenant = _text(f"{path}.tenant", body.get("tenant"), "the directory (tenant) ID or domain, e.g. contoso.onmicrosoft.com")
    client_id = _text(f"{path}.client_id", body.get("client_id"), "the app registration's Application (client) ID")
    secrets = [key for key in MICROSOFT_SECRET_KEYS if body.get(key) is not None]
    if len(secrets) != 1:
        problem = f"{' and '.join(secrets)} given; use one" if secrets else "no client secret"
        raise IdentityProblem(path, f"{problem}; expected one of {', '.join(MICROSOFT_SECRET_KEYS)}")
    key = secrets[0]
    secret_value = _text(f"{path}.{key}", body[key], "a shell command that prints the client secret")
    if key != "client_secret_cmd":
        what = "a file whose first line is the client secret" if key == "client_secret_file" else (
            "a PEM file with the app's certificate and its private key")
        secret_value = _readable(f"{path}.{key}", body[key], base_dir, what)
    token_url = ""
    if body.get("token_url") is not None:
        token_url = _text(f"{path}.token_url", body["token_url"], "the token endpoint's https:// URL")
        if urllib.parse.urlsplit(token_url).scheme not in ("https", "http"):
            raise IdentityProblem(f"{path}.token_url", f"{_shown(token_url)} is not an http(s) URL; "
                                  "expected the token endpoint's https:// URL")
    identity = OAuth2Identity("microsoft", path.rsplit(".", 1)[0], tenant=tenant, client_id=client_id,
                              secret_key=key, secret_value=secret_value, token_url=token_url,
                              ca_file=ca_file, workdir=base_dir)
    if key == "certificate_file":
        read_certificate(identity)
    return identity


def read_service_account(identity: OAuth2Identity) -> dict[str, Any]:
    """The service account's key file as google-auth takes it; raises IdentityProblem."""
    path = f"{identity.key_path}.{GOOGLE_KEY}"
    try:
        with open(identity.key_file, "rb") as handle:
            info = json.loads(handle.read(1 << 20))
    except OSError as exc:
        raise IdentityProblem(path, f"cannot read the key file: {exc.strerror or 'error'}; expected {GOOGLE_KEY_HINT}") from None
    except ValueError:
        raise IdentityProblem(path, f"the key file is not JSON; expected {GOOGLE_KEY_HINT}") from None
    if not isinstance(info, dict) or info.get("type") != "service_account":
        raise IdentityProblem(path, f"the key file is not a service account key; expected {GOOGLE_KEY_HINT}")
    absent = [name for name in KEY_FILE_FIELDS if not isinstance(info.get(name), str) or not info[name]]
    if absent:
        raise IdentityProblem(path, f"the key file lacks {', '.join(absent)}; expected {GOOGLE_KEY_HINT}")
    return info


def read_certificate(identity: OAuth2Identity) -> tuple[Any, Any]:
    """(private key, certificate) from a Microsoft identity's certificate file; raises IdentityProblem."""
    path = f"{identity.key_path}.{MICROSOFT_KEY}.certificate_file"
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
    except ImportError:
        raise IdentityProblem(path, missing_extra("microsoft", "cryptography")) from None
    expected = "a PEM file with the app's certificate and its unencrypted RSA private key"
    try:
        with open(identity.secret_value, "rb") as handle:
            data = handle.read(1 << 20)
        key = serialization.load_pem_private_key(data, password=None)
        certificate = x509.load_pem_x509_certificate(data)
    except OSError as exc:
        raise IdentityProblem(path, f"cannot read it: {exc.strerror or 'error'}; expected {expected}") from None
    except (ValueError, TypeError):
        raise IdentityProblem(path, f"no certificate and private key in it; expected {expected}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise IdentityProblem(path, f"the private key is not an RSA key; expected {expected}")
    return key, certificate


def missing_extra(extra: str, module: str) -> str:
    """The problem of an identity whose library is not installed."""
    return f"needs {module}, which is not installed; install it with the extra {extra!r}: pip install '.[{extra}]' in a checkout of fastsync"


def _mapping(path: str, value: object, expected: str) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise IdentityProblem(path, f"expected {expected}, got {type(value).__name__}")
    return value


def _known(path: str, body: Mapping[Any, Any], known: tuple[str, ...]) -> None:
    for key in body:
        if key not in known:
            raise IdentityProblem(f"{path}.{key}", f"unknown key; known keys: {', '.join(known)}")


def _text(path: str, value: object, expected: str) -> str:
    if not isinstance(value, str) or not value.strip():
        got = "nothing" if value is None else type(value).__name__ if not isinstance(value, str) else "an empty string"
        raise IdentityProblem(path, f"{'missing' if value is None else 'got ' + got}; expected {expected}")
    return value.strip()


def _readable(path: str, value: object, base_dir: str, expected: str) -> str:
    text = _text(path, value, f"{expected}, relative to the config file's folder")
    full = resolve_path(base_dir, text)
    problem = readable_file_problem(full, _shown(text))
    if problem:
        raise IdentityProblem(path, f"{problem}; expected {expected}")
    return full


def _shown(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)
