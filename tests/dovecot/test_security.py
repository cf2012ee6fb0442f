"""TLS verification, secrets kept out of every output, password sources and OAuth2.

Everything that speaks IMAP runs against real Dovecot servers (what needs no server:
tests/unit/test_security.py).  Certificate failures that
Dovecot cannot be made to show (a wrong host name, an expired certificate) come from a
TLS listener that presents a certificate made for the case and closes after the
handshake: verification happens during the handshake, before any IMAP is spoken.
OAuth2 logins go to a Dovecot whose ``oauth2`` passdb asks a local token-introspection
endpoint (tests/dovecot/tokenserver.py) whether a token is good.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import itertools
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import imapclient
import psutil
import pytest
from imapclient.exceptions import LoginError
from tests.dovecot.tokenserver import TokenServer

from bench.harness.corpus import Message
from bench.harness.dovecot import Dovecot
from fastsync.settings import credentials
from fastsync.imap import session
from fastsync.settings.config import Account as SideAccount
from fastsync.settings.config import load_config
from tests.dovecot.accounts import Account, AccountFactory, ConfigFor, snapshot
from tests.helpers import REPO_ROOT, cli_env, run_cli, write_config

UTC = dt.UTC
_names = itertools.count(1)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single error line of a failed run (warnings may precede it), never a traceback."""
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def messages(count: int, size: int = 200) -> list[Message]:
    return [
        Message(
            "INBOX",
            f"Message-ID: <sec{n}@example.org>\r\nSubject: s{n}\r\n\r\n{'x' * size}\r\n".encode(),
            (),
            dt.datetime(2021, 1, 1, tzinfo=UTC),
        )
        for n in range(count)
    ]


# --------------------------------------------------------------------------- certificates


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca(directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    key, cert = directory / "ca.key", directory / "ca.pem"
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "30", "-subj", f"/CN=test CA {directory.name}",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-addext", "subjectKeyIdentifier=hash")
    return cert, key


def make_leaf(directory: Path, ca: tuple[Path, Path], san: str, days: int) -> tuple[Path, Path]:
    """A server certificate for ``san``; ``days=-1`` makes one that expired a day ago."""
    key, csr, cert, ext = (directory / f"leaf.{suffix}" for suffix in ("key", "csr", "pem", "ext"))
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(csr), "-subj", "/CN=fastsync test server")
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        f"extendedKeyUsage=serverAuth\nsubjectAltName={san}\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
    )
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
            "-out", str(cert), "-days", str(days), "-extfile", str(ext))
    return cert, key


class HandshakeOnly:
    """A TLS listener on 127.0.0.1 that presents one certificate, then hangs up."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            try:
                with self.context.wrap_socket(conn, server_side=True):
                    pass
            except (OSError, ssl.SSLError):
                conn.close()  # the client refused the certificate: what these tests expect

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join()
        self.sock.close()


@pytest.mark.parametrize(
    ("san", "host", "days", "expected"),
    [
        ("DNS:imap.example.org", "localhost", 30, "TLS certificate does not match the host name 'localhost' (Hostname"),
        ("DNS:localhost", "127.0.0.1", 30, "TLS certificate does not match the host name '127.0.0.1' (IP address"),
        ("IP:127.0.0.1", "127.0.0.1", -1, "TLS certificate has expired (certificate has expired)"),
    ],
    ids=["wrong-name", "wrong-address", "expired"],
)
def test_certificate_failures_say_why(
    tmp_path: Path, accounts: AccountFactory, config_for: ConfigFor, san: str, host: str, days: int, expected: str
) -> None:
    ca = make_ca(tmp_path / "ca")
    leaf = make_leaf(tmp_path / "ca", ca, san, days)
    src, dst = accounts(2)
    with HandshakeOnly(*leaf) as listener:
        side = {"server": f"{host}:{listener.port}", "tls": "implicit", "ca_file": str(ca[0])}
        result = run_cli("show", "-c", config_for(src, dst, extra={"src": side}))
    assert result.returncode == 3
    assert one_line_error(result).startswith(f"error: source ({host}:{listener.port}): {expected}")
    if "match" in expected:
        assert "set src.server to a name the certificate holds" in result.stderr


def test_ca_file_of_another_ca_is_named(
    tmp_path: Path, dovecot: Dovecot, accounts: AccountFactory, config_for: ConfigFor
) -> None:
    other_ca, _key = make_ca(tmp_path / "other")
    src, dst = accounts(2)
    side = {"server": f"127.0.0.1:{dovecot.tls_port}", "tls": "implicit", "ca_file": str(other_ca)}
    result = run_cli("show", "-c", config_for(src, dst, extra={"src": side}))
    assert result.returncode == 3
    line = one_line_error(result)
    assert line.startswith(f"error: source (127.0.0.1:{dovecot.tls_port}): TLS certificate not trusted (")
    assert line.endswith("src.ca_file does not hold the CA that signed it: set it to that CA's certificate file")


@pytest.mark.parametrize("tls", ["starttls", "none"])
def test_a_port_that_expects_tls_from_the_first_byte_is_named(
    tls: str, dovecot: Dovecot, accounts: AccountFactory, config_for: ConfigFor
) -> None:
    # Dovecot's implicit-TLS port waits for a handshake and never greets in plain text.
    src, dst = accounts(2)
    side = {"server": f"127.0.0.1:{dovecot.tls_port}", "tls": tls, "timeout_s": 2}
    started = time.monotonic()
    result = run_cli("show", "-c", config_for(src, dst, extra={"dst": side}))
    assert result.returncode == 3
    assert time.monotonic() - started < 30
    assert one_line_error(result) == (
        f"error: destination (127.0.0.1:{dovecot.tls_port}): connected, but the server sent no greeting within 2 s: "
        "the port may expect TLS from the first byte (usually port 993); dst.tls: implicit does that"
    )


def test_tls_none_warns_once_per_side_and_quiet_silences_it(
    accounts: AccountFactory, config_for: ConfigFor
) -> None:
    src, dst = accounts(2)
    config = config_for(src, dst)  # both sides tls: none
    config.chmod(0o600)
    result = run_cli("show", "-c", config)
    assert result.returncode == 0, result.stderr
    tail = "the password and every message cross the network unencrypted; use starttls or implicit"
    assert result.stderr.splitlines() == [
        f"warning: source ({src.address}): src.tls is none: {tail}",
        f"warning: destination ({dst.address}): dst.tls is none: {tail}",
    ]
    assert run_cli("show", "-c", config, "-q").stderr == ""


# --------------------------------------------------------------------------- config checks


def side(**keys: Any) -> dict[str, Any]:
    return {"server": "imap.example.org:993", "user": "u", **keys}


# --------------------------------------------------------------------------- password sources


@pytest.mark.parametrize("source", ["pass_cmd", "pass_file", "pass_env", "pass"])
def test_each_password_source_logs_in(
    tmp_path: Path, dovecot: Dovecot, source: str
) -> None:
    # Non-ASCII on purpose: AUTHENTICATE PLAIN carries UTF-8 (RFC 4616), LOGIN could not.
    user, password = f"sec{next(_names)}{source.replace('_', '')}", f"Pässwörd-{source}-9"
    dovecot.add_user(user, password)
    (tmp_path / "secret.txt").write_text(password + "\n")
    credential = {
        "pass": {"pass": password},
        "pass_cmd": {"pass_cmd": "cat secret.txt"},
        "pass_file": {"pass_file": "secret.txt"},
        "pass_env": {"pass_env": "SEC_TEST_SRC_PW"},
    }[source]
    address = f"{dovecot.host}:{dovecot.port}"
    path = write_config(tmp_path, address, user, "x", address, "alice", "alice-pw",
                        extra={"src": {"pass": None, **credential}})
    path.chmod(0o600)
    result = run_cli("show", "-c", path, "-q", env={"SEC_TEST_SRC_PW": password})
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "src\tINBOX" in result.stdout


# --------------------------------------------------------------------------- redaction


SITECUSTOMIZE = """\
# Loaded by every Python process of the run (the forkserver and its workers too): log
# everything, so that a secret reaching any logger would show up on stderr.
import logging, sys
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(process)d %(name)s %(message)s")
"""


def secret_forms(user: str, password: str) -> list[bytes]:
    """The password as it could leak: verbatim, and inside a base64 AUTHENTICATE PLAIN response."""
    plain = f"\0{user}\0{password}".encode()
    return [password.encode(), base64.b64encode(plain), base64.b64encode(plain[1:])]


def test_no_secret_in_output_logs_argv_or_environment(tmp_path: Path, dovecot: Dovecot) -> None:
    n = next(_names)
    src_user, dst_user = f"sec{n}src", f"sec{n}dst"
    src_pw, dst_pw = "Zq9-SRC-Secret-7f3", "Vx4-DST-Secret-2k8"
    dovecot.add_users({src_user: src_pw, dst_user: dst_pw})
    src = Account(dovecot, src_user, src_pw)
    src.seed(messages(40, size=3000))
    (tmp_path / "src-secret.txt").write_text(src_pw + "\n")
    address = f"{dovecot.host}:{dovecot.port}"
    config = write_config(
        tmp_path, address, src_user, "x", address, dst_user, "x",
        extra={
            # The pass_cmd records its own environment: it must not hold dst's pass_env password.
            "src": {"pass": None, "pass_cmd": "env > pass_cmd.env; cat src-secret.txt", "tls": "starttls", "ca_file": str(dovecot.ca_file)},
            "dst": {"pass": None, "pass_env": "SEC_TEST_DST_PW", "tls": "starttls", "ca_file": str(dovecot.ca_file)},
        },
    )
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = cli_env()
    env.update(SEC_TEST_DST_PW=dst_pw, PYTHONPATH=os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")])))

    show = run_cli("show", "-c", config, "-V", env=env)
    assert show.returncode == 0, show.stderr
    assert "imapclient" in show.stderr  # debug logging was on

    out, err = tmp_path / "sync.out", tmp_path / "sync.err"
    seen: dict[int, tuple[bool, bytes, bytes]] = {}
    with out.open("wb") as stdout, err.open("wb") as stderr:
        # --bps-down stretches the copy over a few seconds so that the workers can be inspected.
        proc = subprocess.Popen(
            [sys.executable, "-m", "fastsync", "sync", "-c", str(config), "-V", "-y", "--procs", "2", "--bps-down", "40000",
             "--log-file", str(tmp_path / "sync.log"), "--log-format", "json"],
            stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, env=env, cwd=REPO_ROOT,
        )
        top = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                tree = [top, *top.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            for process in tree:
                try:
                    cmdline = "\0".join(process.cmdline()).encode()
                    environ = "\0".join(f"{k}={v}" for k, v in process.environ().items()).encode()
                except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                    continue
                seen[process.pid] = (process.pid == proc.pid, cmdline, environ)
            time.sleep(0.05)
        assert proc.wait(timeout=120) == 0, err.read_text()
    assert snapshot(Account(dovecot, dst_user, dst_pw)) == snapshot(src)

    children = [pid for pid, (is_top, _c, _e) in seen.items() if not is_top]
    assert len(children) >= 3, "forkserver and two workers were not observed"
    # The event log is written and holds no secret either.
    log = (tmp_path / "sync.log").read_bytes()
    assert b'"unit copied"' in log
    outputs = out.read_bytes() + err.read_bytes() + show.stdout.encode() + show.stderr.encode() + log
    assert b"imapclient" in outputs
    for form in secret_forms(src_user, src_pw) + secret_forms(dst_user, dst_pw):
        assert form not in outputs
        for is_top, cmdline, environ in seen.values():
            assert form not in cmdline
            # The top process's environment is what the user started it with (pass_env).
            assert is_top or form not in environ
    assert dst_pw.encode() not in (tmp_path / "pass_cmd.env").read_bytes()


# --------------------------------------------------------------------------- OAuth2


OAUTH_USERS = {f"oa{n}": f"oa{n}-pw" for n in range(1, 9)}


@pytest.fixture(scope="module")
def oauth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Dovecot, TokenServer]]:
    """A Dovecot taking passwords (passwd-file) and bearer tokens (oauth2 passdb)."""
    with TokenServer() as tokens:
        server = Dovecot(tmp_path_factory.mktemp("oauth"), dict(OAUTH_USERS), oauth2_introspection_url=tokens.url)
        with server:
            yield server, tokens


def oauth_config(
    tmp_path: Path, server: Dovecot, src_user: str, dst_user: str, token: str, src_password: str | None = None
) -> Path:
    """src logs in with its password, dst with the token the command prints (and counts)."""
    (tmp_path / "token").write_text(token + "\n")
    address = f"{server.host}:{server.port}"
    path = write_config(
        tmp_path, address, src_user, src_password or OAUTH_USERS[src_user], address, dst_user, "x",
        extra={
            "src": {"tls": "starttls", "ca_file": str(server.ca_file)},
            "dst": {"pass": None, "oauth2_token_cmd": "echo run >> calls; cat token", "tls": "starttls",
                    "ca_file": str(server.ca_file)},
        },
    )
    path.chmod(0o600)
    return path


def calls(tmp_path: Path) -> int:
    path = tmp_path / "calls"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_oauth2_token_logs_in_and_syncs_and_a_rotated_token_is_used(
    tmp_path: Path, oauth: tuple[Dovecot, TokenServer]
) -> None:
    server, tokens = oauth
    src, dst = Account(server, "oa1", OAUTH_USERS["oa1"]), Account(server, "oa2", OAUTH_USERS["oa2"])
    src.seed(messages(30))
    tokens.grant("tok-A.1~x", "oa2")
    config = oauth_config(tmp_path, server, "oa1", "oa2", "tok-A.1~x")

    result = run_cli("sync", "-c", config, "-y", "--procs", "2")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert snapshot(dst) == snapshot(src)
    # Once for the account: the workers log in with the planner's token.
    assert calls(tmp_path) == 1

    # Rotated between runs: the old token is dead, the command now prints the new one.
    tokens.revoke("tok-A.1~x")
    tokens.grant("tok-B/2+", "oa2")
    (tmp_path / "token").write_text("tok-B/2+\n")
    before = calls(tmp_path)
    again = run_cli("show", "-c", config, "-q")
    assert again.returncode == 0, again.stderr
    assert calls(tmp_path) == before + 1
    assert tokens.seen[-1] == "tok-B/2+"


def test_cached_token_refused_is_fetched_again(tmp_path: Path, oauth: tuple[Dovecot, TokenServer]) -> None:
    server, tokens = oauth
    tokens.grant("rot-1", "oa3")
    account = load_config(oauth_config(tmp_path, server, "oa1", "oa3", "rot-1"), environ={}).dst
    with session.Session.open(account) as first:
        assert "INBOX" in [f.name for f in first.list_folders()]
    with session.Session.open(account):
        pass
    assert calls(tmp_path) == 1  # reused within TOKEN_REUSE_S
    # Rotated while cached: the server refuses the cached token, the command is run again.
    tokens.revoke("rot-1")
    tokens.grant("rot-2", "oa3")
    (tmp_path / "token").write_text("rot-2\n")
    with session.Session.open(account):
        pass
    assert calls(tmp_path) == 2
    assert tokens.seen[-2:] == ["rot-1", "rot-2"]


@pytest.mark.parametrize("token", ["never-granted", "expired-1"])
def test_refused_token_is_exit_4_naming_side_server_and_command(
    tmp_path: Path, oauth: tuple[Dovecot, TokenServer], token: str
) -> None:
    server, tokens = oauth
    if token == "expired-1":
        tokens.grant(token, "oa4")
        tokens.revoke(token)  # what an introspection endpoint says of an expired token
    result = run_cli("show", "-c", oauth_config(tmp_path, server, "oa1", "oa4", token))
    assert result.returncode == 4
    assert one_line_error(result) == (
        f"error: destination ({server.host}:{server.port}): OAUTHBEARER login as 'oa4' refused "
        "([AUTHENTICATIONFAILED] Authentication failed.; status invalid_token): the access token printed by "
        "dst.oauth2_token_cmd has expired, was revoked or is not for this user"
    )
    assert token not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("exit 3", "dst.oauth2_token_cmd: command failed with exit status 3; expected a command that prints an access token"),
        ("true", "dst.oauth2_token_cmd: command printed nothing"),
        ("echo '{\"access_token\": \"t\"}'", "dst.oauth2_token_cmd: command printed something that is not an access token"),
    ],
)
def test_token_command_failure_is_exit_4(
    tmp_path: Path, oauth: tuple[Dovecot, TokenServer], command: str, expected: str
) -> None:
    server, _tokens = oauth
    config = oauth_config(tmp_path, server, "oa1", "oa5", "unused")
    text = config.read_text().replace('"echo run >> calls; cat token"', '"' + command.replace('"', '\\"') + '"')
    config.write_text(text)
    result = run_cli("show", "-c", config)
    assert result.returncode == 4
    assert one_line_error(result).startswith(f"error: destination ({server.host}:{server.port}): {expected}")


def test_server_without_oauth2_mechanisms_is_a_clear_error(tmp_path: Path, dovecot: Dovecot) -> None:
    config = oauth_config(tmp_path, dovecot, "alice", "bob", "some-token", src_password="alice-pw")
    result = run_cli("show", "-c", config)
    assert result.returncode == 4
    assert one_line_error(result) == (
        f"error: destination ({dovecot.host}:{dovecot.port}): server offers neither OAUTHBEARER nor XOAUTH2 "
        "(SASL mechanisms: PLAIN, LOGIN); dst.oauth2_token_cmd needs one of them: give a password source instead"
    )


@pytest.mark.parametrize("mechanism", ["OAUTHBEARER", "XOAUTH2"])
@pytest.mark.parametrize("valid", [True, False])
def test_bearer_exchange_against_dovecot(oauth: tuple[Dovecot, TokenServer], mechanism: str, valid: bool) -> None:
    server, tokens = oauth
    token = f"x-{mechanism}-{valid}"
    if valid:
        tokens.grant(token, "oa6")
    account = SideAccount(side="dst", label="d", host=server.host, port=server.port, user="oa6", password="",
                          tls="none", ca_file=None, timeout_s=10)
    client = imapclient.IMAPClient(server.host, server.port, ssl=False, timeout=10)
    try:
        exchange = credentials.BearerExchange(mechanism, account, token)
        if valid:
            client.sasl_login(mechanism, exchange)
            assert client.list_folders()
        else:
            # The error challenge (RFC 7628 section 3.2.2) is answered; the server then says NO.
            with pytest.raises(LoginError):
                client.sasl_login(mechanism, exchange)
            # RFC 7628's status for OAUTHBEARER; Google's HTTP-like one for XOAUTH2.
            assert exchange.status == {"OAUTHBEARER": "invalid_token", "XOAUTH2": "401"}[mechanism]
    finally:
        with contextlib.suppress(Exception):
            client.logout()
