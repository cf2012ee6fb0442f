"""Administrator OAuth2 identities (``oauth2:`` per side) against a real Dovecot whose
``oauth2`` passdb validates every token with the identity provider of
tests/dovecot/identityprovider.py, which implements both grants (a Google service account's
JWT bearer grant, verified with the account's public key; a Microsoft app's client
credentials) over HTTPS with a private CA, and counts the tokens it issues.

Shown: one token for a mailbox however many processes log in (--procs 8); tokens that
expire every 20 s never fail a login during a 60 s watch; each bad input is one line with
its exit code; no key, secret or token appears in any output, log or process.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from bench.harness.dovecot import Dovecot, make_certificates
from bench.harness.tcpproxy import CountingProxy
from fastsync.imap import session
from fastsync.settings.config import load_config
from tests.dovecot.accounts import Account, snapshot
from tests.dovecot.identityprovider import App, IdentityProvider
from tests.helpers import REPO_ROOT, cli_env, message, run_cli, wait_for, write_config

pytestmark = pytest.mark.dovecot

USERS = {f"ox{n}": f"ox{n}-pw" for n in range(1, 12)}
SERVICE_ACCOUNT = "migrator@project.iam.gserviceaccount.com"
TENANT, CLIENT_ID, CLIENT_SECRET = "contoso", "0c1d2e3f-app", "s3cr3t~client.Value"
# Where requests would look for CAs if fastsync let it: ca_file must win over it.
NO_CA = {"REQUESTS_CA_BUNDLE": "/nonexistent/ca.pem", "CURL_CA_BUNDLE": "/nonexistent/ca.pem"}


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Dovecot, IdentityProvider, Path]]:
    """(Dovecot asking the provider, the provider, the provider's CA file)."""
    ca_file, cert, key = make_certificates(tmp_path_factory.mktemp("idp-tls"))
    with IdentityProvider(tls=(cert, key)) as provider:
        server = Dovecot(tmp_path_factory.mktemp("oauth-id"), dict(USERS),
                         oauth2_introspection_url=provider.introspection_url)
        with server:
            yield server, provider, ca_file


def _google_key(tmp_path: Path, provider: IdentityProvider, delegated: set[str]) -> dict[str, str]:
    info = provider.add_service_account(SERVICE_ACCOUNT, delegated, f"{provider.https_url}/google/token")
    (tmp_path / "key.json").write_text(json.dumps(info))
    return info


def _config(tmp_path: Path, server: Dovecot, src: str, dst: str, oauth2: dict[str, Any], dst_port: int = 0) -> Path:
    """src logs in with its password, dst with the administrator identity *oauth2*."""
    address = f"{server.host}:{server.port}"
    dst_address = f"{server.host}:{dst_port or server.port}"
    return write_config(tmp_path, address, src, USERS[src], dst_address, dst, "x", extra={
        "src": {"tls": "starttls", "ca_file": str(server.ca_file)},
        "dst": {"pass": None, "oauth2": oauth2, "tls": "starttls", "ca_file": str(server.ca_file)},
    })


def _microsoft(ca_file: Path, provider: IdentityProvider, **keys: str) -> dict[str, Any]:
    block = {"tenant": TENANT, "client_id": CLIENT_ID, "client_secret_file": "secret.txt",
             "token_url": f"{provider.https_url}/{{tenant}}/oauth2/v2.0/token", **keys}
    return {"microsoft": {k: v for k, v in block.items() if v}, "ca_file": str(ca_file)}


def _secrets_absent(provider: IdentityProvider, texts: list[str], more: list[str]) -> None:
    text = "\n".join(texts)
    for secret in [*provider.tokens_issued(), *more]:
        assert secret not in text


def _key_body(info: dict[str, str]) -> str:
    """A line from the middle of the private key's PEM: what any leak would contain."""
    return info["private_key"].splitlines()[5]


def test_google_sync_with_8_workers_asks_the_provider_for_one_token(
    tmp_path: Path, idp: tuple[Dovecot, IdentityProvider, Path]
) -> None:
    server, provider, ca_file = idp
    src, dst = Account(server, "ox1", USERS["ox1"]), Account(server, "ox2", USERS["ox2"])
    src.seed([message(f"F{n % 8}", n) for n in range(64)])
    info = _google_key(tmp_path, provider, {"ox2"})
    config = _config(tmp_path, server, "ox1", "ox2", {"google_service_account": "key.json", "ca_file": str(ca_file)})
    issued, logins = len(provider.issued), provider.introspections
    log = tmp_path / "run.log"

    result = run_cli("sync", "-c", config, "-y", "--procs", "8", "--log-file", log, "--json", env=NO_CA)

    assert result.returncode == 0, result.stderr
    assert snapshot(dst) == snapshot(src)
    # One token for the mailbox, though the planner and every worker logged in with it.
    assert provider.issued[issued:] == [("google", "ox2")]
    assert provider.introspections - logins >= 3
    _secrets_absent(provider, [result.stdout, result.stderr, log.read_text()], [_key_body(info)])


def test_a_batch_of_user_names_into_a_google_domain_gets_one_token_per_mailbox(
    tmp_path: Path, idp: tuple[Dovecot, IdentityProvider, Path]
) -> None:
    server, provider, ca_file = idp
    pairs = [("ox1", "ox2"), ("ox3", "ox5"), ("ox7", "ox8")]
    for n, (src_user, _dst) in enumerate(pairs):
        Account(server, src_user, USERS[src_user]).seed([message(f"B{n}", 500 + 10 * n + k) for k in range(4)])
    _google_key(tmp_path, provider, {dst for _src, dst in pairs})
    address = f"{server.host}:{server.port}"
    servers = tmp_path / "servers.json"
    servers.write_text(json.dumps({
        "src": {"server": address, "tls": "starttls", "ca_file": str(server.ca_file)},
        "dst": {"server": address, "tls": "starttls", "ca_file": str(server.ca_file),
                "oauth2": {"google_service_account": "key.json", "ca_file": str(ca_file)}},
    }))
    csv = tmp_path / "pairs.csv"
    csv.write_text("src_user,src_pass,dst_user\n" + "".join(f"{s},{USERS[s]},{d}\n" for s, d in pairs))
    issued = len(provider.issued)

    result = run_cli("-c", servers, "batch", csv, "-y", "--procs", "2", "--state-dir", tmp_path / "state", env=NO_CA)

    assert result.returncode == 0, result.stderr
    for src_user, dst_user in pairs:
        assert snapshot(Account(server, dst_user, USERS[dst_user])) == snapshot(Account(server, src_user, USERS[src_user]))
    assert sorted(provider.issued[issued:]) == sorted(("google", dst) for _src, dst in pairs)
    journal = "".join(p.read_bytes().decode("utf-8", "replace") for p in (tmp_path / "state").rglob("*") if p.is_file())
    _secrets_absent(provider, [result.stdout, result.stderr, journal], [])


def _processes_hold_none(pid: int, secrets: list[str]) -> None:
    """No process of the run has a secret in its arguments or environment."""
    tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    for process in tree:
        try:
            exposed = " ".join(process.cmdline()) + json.dumps(process.environ())
        except psutil.NoSuchProcess:
            continue
        for secret in secrets:
            assert secret not in exposed


def test_tokens_expiring_every_20_s_never_fail_a_login_during_a_60_s_watch(
    tmp_path: Path, idp: tuple[Dovecot, IdentityProvider, Path]
) -> None:
    server, provider, ca_file = idp
    src, dst = Account(server, "ox3", USERS["ox3"]), Account(server, "ox4", USERS["ox4"])
    provider.add_app(TENANT, CLIENT_ID, App(CLIENT_SECRET, mailbox="ox4"))
    (tmp_path / "secret.txt").write_text(CLIENT_SECRET + "\n")
    src.seed([message("INBOX", n) for n in range(5)])
    provider.lifetime_s = 20.0
    issued, refused = len(provider.issued), len(provider.refused)
    log = tmp_path / "watch.log"
    # The destination behind a proxy that drops its connections every 10 s: each drop
    # makes the watch log in again, with the token the parent holds by then.
    with CountingProxy(server.port) as dst_proxy:
        config = _config(tmp_path, server, "ox3", "ox4", _microsoft(ca_file, provider), dst_port=dst_proxy.port)
        process = subprocess.Popen(
            [sys.executable, "-m", "fastsync", "sync", "-c", str(config), "-y", "--watch", "--procs", "2",
             "--poll", "2", "--state-dir", str(tmp_path / "state"), "--log-file", str(log)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(NO_CA), cwd=REPO_ROOT,
            start_new_session=True,
        )
        try:
            wait_for(lambda: _count(dst) == 5, timeout_s=60, what="the first sync")
            started, n, logins = time.monotonic(), 100, dst_proxy.accepted
            while time.monotonic() - started < 60:
                time.sleep(10)
                assert dst_proxy.drop_all() >= 1
                src.seed([message("INBOX", n)])
                n += 1
                wait_for(lambda: _count(dst) == 5 + n - 100, timeout_s=40, what="the new message")
                _processes_hold_none(process.pid, provider.tokens_issued() + [CLIENT_SECRET])
            assert process.poll() is None
            assert dst_proxy.accepted - logins >= 6
        finally:
            os.kill(process.pid, signal.SIGINT)
            out, err = process.communicate(timeout=60)
            provider.lifetime_s = 3600.0
    assert process.returncode == 130, err
    assert snapshot(dst) == snapshot(src)
    # Renewed (every 10 s: half-way through their life), and never a login with an expired one.
    assert len(provider.issued) - issued >= 5
    assert provider.refused[refused:] == []
    _secrets_absent(provider, [out, err, log.read_text()], [CLIENT_SECRET])


def _count(account: Account) -> int:
    client = account.client()
    try:
        return int(client.folder_status("INBOX", ["MESSAGES"])[b"MESSAGES"])
    finally:
        client.logout()


def _certificate(tmp_path: Path) -> x509.Certificate:
    """An app's certificate with its private key, in certificate.pem."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fastsync migration")])
    now = dt.datetime.now(dt.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now)
                   .not_valid_after(now + dt.timedelta(days=30)).sign(key, hashes.SHA256()))
    (tmp_path / "certificate.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        + certificate.public_bytes(serialization.Encoding.PEM))
    return certificate


def test_microsoft_certificate_credential_logs_in(tmp_path: Path, idp: tuple[Dovecot, IdentityProvider, Path]) -> None:
    server, provider, ca_file = idp
    provider.add_app("fabrikam", "cert-app", App("", mailbox="ox5", certificate=_certificate(tmp_path)))
    oauth2 = _microsoft(ca_file, provider, tenant="fabrikam", client_id="cert-app", client_secret_file="",
                        certificate_file="certificate.pem")
    result = run_cli("show", "-c", _config(tmp_path, server, "ox1", "ox5", oauth2), env=NO_CA)
    assert result.returncode == 0, result.stderr
    assert provider.issued[-1] == ("microsoft", "ox5")


def test_a_token_refused_mid_run_is_renewed_once(tmp_path: Path, idp: tuple[Dovecot, IdentityProvider, Path]) -> None:
    server, provider, ca_file = idp
    _google_key(tmp_path, provider, {"ox9"})
    config = _config(tmp_path, server, "ox1", "ox9", {"google_service_account": "key.json", "ca_file": str(ca_file)})
    account = load_config(config, environ={}).dst
    issued = len(provider.issued)
    os.environ.update(NO_CA)
    try:
        with session.Session.open(account):
            pass
        with session.Session.open(account):
            pass
        assert len(provider.issued) - issued == 1  # the second login reuses the token
        provider.revoke_all()
        with session.Session.open(account) as again:
            assert "INBOX" in [f.name for f in again.list_folders()]
    finally:
        for name in NO_CA:
            os.environ.pop(name, None)
    assert len(provider.issued) - issued == 2


def test_tokens_refused_twice_stop_the_run_naming_the_side_and_the_answer(
    tmp_path: Path, idp: tuple[Dovecot, IdentityProvider, Path]
) -> None:
    """The app may open ox6 only: a token for it is refused for ox10, renewed once, refused again."""
    server, provider, ca_file = idp
    provider.add_app(TENANT, CLIENT_ID, App(CLIENT_SECRET, mailbox="ox6"))
    (tmp_path / "secret.txt").write_text(CLIENT_SECRET + "\n")
    issued = len(provider.issued)
    result = run_cli("show", "-c", _config(tmp_path, server, "ox1", "ox10", _microsoft(ca_file, provider)), env=NO_CA)
    assert result.returncode == 4, result.stderr
    assert _error_line(result) == (
        f"error: destination ({server.host}:{server.port}): OAUTHBEARER login as 'ox10' refused "
        "([AUTHENTICATIONFAILED] Authentication failed.; status invalid_token): the access token obtained through "
        "dst.oauth2 has expired, was revoked or is not for this user"
    )
    assert len(provider.issued) - issued == 2
    _secrets_absent(provider, [result.stdout, result.stderr], [CLIENT_SECRET])


def _error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


BAD_INPUTS = [
    # (case, exit code, what the line says)
    ("key file missing", 2, 'dst.oauth2.google_service_account: cannot read "missing.json": No such file or directory; '
     "expected a service account's JSON key: Google Cloud console > IAM & Admin > Service accounts"),
    ("key file malformed", 2, "dst.oauth2.google_service_account: the key file is not JSON; expected a service "
     "account's JSON key"),
    ("not a service account key", 2, "dst.oauth2.google_service_account: the key file is not a service account key"),
    ("delegation not granted", 4, "dst.oauth2: Google refused a token for 'ox6' (unauthorized_client: Client is "
     "unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes "
     "requested.): domain-wide delegation is not granted for this scope; in the Google Admin console: Security > "
     "Access and data control > API controls > Manage Domain Wide Delegation, add the service account's client ID "
     "with the scope https://mail.google.com/"),
    ("key deleted", 4, "dst.oauth2: Google refused a token for 'ox6' (invalid_grant: Invalid JWT Signature.): the key "
     "has been deleted or disabled; create a new JSON key"),
    ("wrong tenant", 2, "dst.oauth2: the token endpoint refused the client credentials (invalid_request: AADSTS90002: "
     "Tenant 'nowhere' not found. Trace ID: 0000): no such tenant; check dst.oauth2.microsoft.tenant"),
    ("wrong client", 2, "dst.oauth2: the token endpoint refused the client credentials (unauthorized_client: "
     "AADSTS700016: Application not found in the directory. Trace ID: 0000): no such application in this tenant; "
     "check dst.oauth2.microsoft.client_id"),
    ("wrong secret", 4, "(invalid_client: AADSTS7000215: Invalid client secret provided. Trace ID: 0000): the client "
     "secret is wrong; give the secret's Value (not its ID)"),
    ("expired secret", 4, "(invalid_client: AADSTS7000222: The provided client secret keys are expired. Trace ID: "
     "0000): the client secret has expired; create a new one in the Microsoft Entra admin center: App registrations "
     "> the app > Certificates & secrets and update dst.oauth2.microsoft"),
    ("token endpoint unreachable", 3, "dst.oauth2: cannot reach the token endpoint http://127.0.0.1:1/contoso/token "
     "([Errno 111] Connection refused)"),
    ("token endpoint not trusted", 3, "dst.oauth2: cannot reach the token endpoint https://127.0.0.1:"),
    ("CA bundle variable names no file", 3, "dst.oauth2: cannot reach the token endpoint https://127.0.0.1:"),
    ("secret command fails", 2, "dst.oauth2.microsoft.client_secret_cmd: command failed with exit status 3"),
]


@pytest.mark.parametrize(("case", "code", "expected"), BAD_INPUTS, ids=[case for case, _c, _e in BAD_INPUTS])
def test_bad_input_is_one_line_with_its_exit_code(
    tmp_path: Path, idp: tuple[Dovecot, IdentityProvider, Path], case: str, code: int, expected: str
) -> None:
    server, provider, ca_file = idp
    info = _google_key(tmp_path, provider, {"ox7"})
    google: dict[str, Any] = {"google_service_account": "key.json", "ca_file": str(ca_file)}
    (tmp_path / "secret.txt").write_text(CLIENT_SECRET + "\n")
    provider.add_app(TENANT, CLIENT_ID, App(CLIENT_SECRET, mailbox="ox6"))
    provider.add_app("old", CLIENT_ID, App(CLIENT_SECRET, mailbox="ox6", secret_expired=True))
    oauth2 = {
        "key file missing": {**google, "google_service_account": "missing.json"},
        "key file malformed": google,
        "not a service account key": google,
        "delegation not granted": google,
        "key deleted": google,
        "wrong tenant": _microsoft(ca_file, provider, tenant="nowhere"),
        "wrong client": _microsoft(ca_file, provider, client_id="no-such-app"),
        "wrong secret": _microsoft(ca_file, provider, client_secret_file="wrong.txt"),
        "expired secret": _microsoft(ca_file, provider, tenant="old"),
        "token endpoint unreachable": _microsoft(ca_file, provider, token_url="http://127.0.0.1:1/{tenant}/token"),
        "token endpoint not trusted": {"google_service_account": "key.json"},
        "CA bundle variable names no file": {"google_service_account": "key.json"},
        "secret command fails": _microsoft(ca_file, provider, client_secret_file="",
                                           client_secret_cmd="echo " + CLIENT_SECRET + " >/dev/null; exit 3"),
    }[case]
    if case == "key file malformed":
        (tmp_path / "key.json").write_text(json.dumps(info)[:-20])
    if case == "not a service account key":
        (tmp_path / "key.json").write_text(json.dumps({**info, "type": "authorized_user"}))
    if case == "key deleted":
        provider.delete_key(SERVICE_ACCOUNT)
    (tmp_path / "wrong.txt").write_text("not-the-secret\n")
    log = tmp_path / "run.log"

    env = {} if case == "token endpoint not trusted" else NO_CA
    result = run_cli("show", "-c", _config(tmp_path, server, "ox1", "ox6", oauth2), "--log-file", log, env=env)

    assert result.returncode == code, result.stderr
    line = _error_line(result)
    if "google_service_account:" in expected:
        assert "dst.oauth2.google_service_account (line " in line  # the key's line in the config file
    assert expected in re.sub(r" \(line \d+\)", "", line)
    if case == "token endpoint not trusted":
        assert "certificate verify failed" in line
        assert line.endswith("; if it has a private CA, give that CA as dst.oauth2.ca_file")
    if case == "CA bundle variable names no file":
        assert line.endswith("(Could not find a suitable TLS CA certificate bundle, invalid path: /nonexistent/ca.pem)")
    _secrets_absent(provider, [result.stdout, result.stderr, log.read_text() if log.exists() else ""],
                    [CLIENT_SECRET, _key_body(info)])
