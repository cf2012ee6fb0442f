"""Organisation migrations with an administrator per side (``auth_user``), against Dovecots
whose master users play the administrators: SASL PLAIN with the user as authorization
identity opens the user's mailbox.  A batch of pairs named by user alone is exact; the
administrator's password never shows (stderr, --json, the log, the journal) nor crosses a
connection that was meant to be encrypted and is not; a server without AUTH=PLAIN and a
refused administrator get one line each."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.harness.dovecot import Dovecot
from bench.harness.tcpproxy import CountingProxy
from bench.harness.verify import compare
from tests.dovecot.accounts import STATIC_USERS, Account, AccountFactory
from tests.helpers import message, run_cli
from tests.wire import commands

SRC_ADMIN, SRC_ADMIN_PW = "oldadmin", "old-Admin-Secret-41"
DST_ADMIN, DST_ADMIN_PW = "newadmin", "new-Admin-Secret-42"
FOLDERS = ("INBOX", "Sent", "Archive/2020")
PAIRS = 20


@pytest.fixture(scope="module")
def admin_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Dovecot, Dovecot]]:
    """An old and a new server, each with its own master user (the side's administrator)."""
    src = Dovecot(tmp_path_factory.mktemp("admin-src"), dict(STATIC_USERS), master_users={SRC_ADMIN: SRC_ADMIN_PW})
    dst = Dovecot(tmp_path_factory.mktemp("admin-dst"), dict(STATIC_USERS), master_users={DST_ADMIN: DST_ADMIN_PW})
    with src, dst:
        yield src, dst


def _pair(accounts: AccountFactory, servers: tuple[Dovecot, Dovecot], index: int = 0,
          per_folder: int = 5) -> tuple[Account, Account]:
    [src], [dst] = accounts(1, server=servers[0]), accounts(1, server=servers[1])
    src.seed([message(folder, index * 1000 + f * 100 + n) for f, folder in enumerate(FOLDERS) for n in range(per_folder)])
    return src, dst


def _side(account: Account, tls: str = "implicit", **keys: Any) -> dict[str, Any]:
    server = account.server
    side: dict[str, Any] = {"user": account.user, "tls": tls}
    if tls == "implicit":
        side.update(server=f"{server.host}:{server.tls_port}", ca_file=str(server.ca_file))
    else:
        side["server"] = f"{server.host}:{server.port}"
    side.update(keys)
    return {k: v for k, v in side.items() if v is not None}


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    path.chmod(0o600)
    return path


def _exact(src: Account, dst: Account) -> None:
    report = compare(lambda: src.client(), lambda: dst.client())
    assert report.ok, report.describe()


def _secret_free(*texts: str, secrets: tuple[str, ...] = (SRC_ADMIN_PW, DST_ADMIN_PW)) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in text


def test_a_sync_with_an_administrator_on_each_side_is_exact(
    accounts: AccountFactory, admin_servers: tuple[Dovecot, Dovecot], tmp_path: Path,
) -> None:
    src, dst = _pair(accounts, admin_servers)
    config = _write(tmp_path / "c.yaml", {
        "src": _side(src, auth_user=SRC_ADMIN, **{"pass": SRC_ADMIN_PW}),
        "dst": _side(dst, auth_user=DST_ADMIN, **{"pass": DST_ADMIN_PW}),
    })
    log = tmp_path / "run.log"
    done = run_cli("sync", "-c", config, "-y", "--json", "--log-file", log)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["summary"]["copied"] == 5 * len(FOLDERS)
    _exact(src, dst)
    _secret_free(done.stdout, done.stderr, log.read_text())


@pytest.mark.parametrize("how", ["FASTSYNC variables", "IMAPSYNC variables", "flags over variables"])
def test_the_administrators_come_from_flags_and_variables(
    accounts: AccountFactory, admin_servers: tuple[Dovecot, Dovecot], tmp_path: Path, how: str,
) -> None:
    src, dst = _pair(accounts, admin_servers)
    # The file names the mailboxes and the administrators' passwords; who logs in comes
    # from the command line or the environment.
    config = _write(tmp_path / "c.yaml", {
        "src": _side(src, pass_env="OLD_ADMIN_PW"), "dst": _side(dst, **{"pass": DST_ADMIN_PW}),
    })
    env = {"OLD_ADMIN_PW": SRC_ADMIN_PW}
    flags: list[str] = []
    if how == "FASTSYNC variables":
        env |= {"FASTSYNC_SOURCE_AUTH_USER": SRC_ADMIN, "FASTSYNC_DESTINATION_AUTH_USER": DST_ADMIN}
    elif how == "IMAPSYNC variables":
        env |= {"IMAPSYNC_AUTHUSER1": SRC_ADMIN, "IMAPSYNC_AUTHUSER2": DST_ADMIN}
    else:
        env |= {"FASTSYNC_SOURCE_AUTH_USER": "nobody-admin", "IMAPSYNC_AUTHUSER2": "nobody-admin"}
        flags = ["--src-auth-user", SRC_ADMIN, "--authuser2", DST_ADMIN]
    done = run_cli("sync", "-c", config, "-y", *flags, env=env)
    assert done.returncode == 0, done.stderr
    _exact(src, dst)


def test_an_empty_variable_is_a_usage_error(accounts: AccountFactory, admin_servers: tuple[Dovecot, Dovecot],
                                            tmp_path: Path) -> None:
    src, dst = _pair(accounts, admin_servers, per_folder=1)
    config = _write(tmp_path / "c.yaml", {"src": _side(src, **{"pass": SRC_ADMIN_PW}),
                                          "dst": _side(dst, **{"pass": dst.password})})
    done = run_cli("sync", "-c", config, "-y", env={"IMAPSYNC_AUTHUSER1": " "})
    assert done.returncode == 2
    assert done.stderr.strip().endswith("--src-auth-user / IMAPSYNC_AUTHUSER1: empty; expected a login name "
                                        "(leave it out for none)")


@pytest.mark.parametrize("case", ["wrong password", "no such mailbox"])
def test_a_refused_administrator_exits_4_naming_side_administrator_and_mailbox(
    accounts: AccountFactory, admin_servers: tuple[Dovecot, Dovecot], tmp_path: Path, case: str,
) -> None:
    src, dst = _pair(accounts, admin_servers, per_folder=1)
    wrong = "wrong-Admin-Guess-77"
    src_side = (_side(src, auth_user=SRC_ADMIN, **{"pass": wrong}) if case == "wrong password"
                else _side(src, auth_user=SRC_ADMIN, user="nosuchuser", **{"pass": SRC_ADMIN_PW}))
    config = _write(tmp_path / "c.yaml", {"src": src_side, "dst": _side(dst, **{"pass": dst.password})})
    log = tmp_path / "run.log"
    plain = run_cli("sync", "-c", config, "-y", "--log-file", log)
    as_json = run_cli("sync", "-c", config, "-y", "--json")
    assert plain.returncode == as_json.returncode == 4, plain.stderr
    mailbox = src.user if case == "wrong password" else "nosuchuser"
    line = f"login to the mailbox {mailbox!r} as the administrator {SRC_ADMIN!r} refused"
    [error] = [text for text in plain.stderr.splitlines() if "refused" in text]
    assert line in error and error.startswith("error: source (127.0.0.1:")
    if case == "wrong password":
        assert "[AUTHENTICATIONFAILED]" in error and "check src.auth_user and its password" in error
    else:
        assert "[AUTHORIZATIONFAILED]" in error and "may not open this mailbox, or it does not exist" in error
    assert line in json.loads(as_json.stdout)["error"]
    _secret_free(plain.stdout, plain.stderr, as_json.stdout, as_json.stderr, log.read_text(),
                 secrets=(wrong, SRC_ADMIN_PW, dst.password))
    assert "Traceback" not in plain.stderr + as_json.stderr


def test_a_server_without_auth_plain_gets_one_line_naming_user_star_admin(
    accounts: AccountFactory, admin_servers: tuple[Dovecot, Dovecot], tmp_path: Path,
) -> None:
    src, dst = _pair(accounts, admin_servers)
    # A proxy hides AUTH=PLAIN from every capability list (same length, so nothing else
    # moves); Dovecot itself still takes the master user in the login name.
    with CountingProxy(src.server.port, replace_down=(b"AUTH=PLAIN", b"X-NO-PLAIN"), record=True) as proxy:
        side = {"server": f"127.0.0.1:{proxy.port}", "tls": "none", "user": src.user, "pass": SRC_ADMIN_PW}
        config = _write(tmp_path / "c.yaml", {"src": {**side, "auth_user": SRC_ADMIN},
                                              "dst": _side(dst, **{"pass": dst.password})})
        done = run_cli("sync", "-c", config, "-y")
        assert done.returncode == 4, done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1
        assert (f"server does not accept AUTHENTICATE PLAIN, which src.auth_user needs to open the mailbox "
                f"{src.user!r} as the administrator {SRC_ADMIN!r}") in errors[0]
        assert f"set src.user to '{src.user}*{SRC_ADMIN}'" in errors[0] and "remove src.auth_user" in errors[0]
        # Nothing was sent that carries the password: no AUTHENTICATE, no LOGIN.
        sent = [c.name for r in proxy.recordings for c in commands(bytes(r.client_bytes))]
        assert "AUTHENTICATE" not in sent and "LOGIN" not in sent
        # As the line says: the administrator in the login name.
        config = _write(tmp_path / "c.yaml", {"src": {**side, "user": f"{src.user}*{SRC_ADMIN}"},
                                              "dst": _side(dst, **{"pass": dst.password})})
        done = run_cli("sync", "-c", config, "-y")
        assert done.returncode == 0, done.stderr
    _exact(src, dst)


@pytest.mark.parametrize("tls", [None, "starttls"])
def test_plain_tcp_without_tls_none_refuses_before_sending_the_password(
    accounts: AccountFactory, admin_servers: tuple[Dovecot, Dovecot], tmp_path: Path, tls: str | None,
) -> None:
    src, dst = _pair(accounts, admin_servers, per_folder=1)
    # The server's STARTTLS is hidden, as by a server without TLS or someone in between.
    with CountingProxy(src.server.port, replace_down=(b"STARTTLS", b"XTARTTLS"), record=True) as proxy:
        side = {"server": f"127.0.0.1:{proxy.port}", "tls": tls, "user": src.user, "auth_user": SRC_ADMIN,
                "pass": SRC_ADMIN_PW}
        config = _write(tmp_path / "c.yaml", {"src": {k: v for k, v in side.items() if v is not None},
                                              "dst": _side(dst, **{"pass": dst.password})})
        done = run_cli("sync", "-c", config, "-y")
        assert done.returncode == 3, done.stderr
        assert "server does not offer STARTTLS" in done.stderr
        sent = b"".join(bytes(r.client_bytes) for r in proxy.recordings)
        assert b"AUTHENTICATE" not in sent.upper() and b"LOGIN" not in sent.upper()
        _secret_free(sent.decode("latin-1"), done.stdout, done.stderr)


def test_tls_none_written_logs_in_with_a_warning(
    accounts: AccountFactory, admin_servers: tuple[Dovecot, Dovecot], tmp_path: Path,
) -> None:
    src, dst = _pair(accounts, admin_servers, per_folder=2)
    config = _write(tmp_path / "c.yaml", {"src": _side(src, tls="none", auth_user=SRC_ADMIN, **{"pass": SRC_ADMIN_PW}),
                                          "dst": _side(dst, **{"pass": dst.password})})
    done = run_cli("sync", "-c", config, "-y")
    assert done.returncode == 0, done.stderr
    assert "src.tls is none: the administrator's password and every message cross the network" in done.stderr
    _exact(src, dst)


def test_a_batch_of_user_names_with_an_administrator_on_each_side_is_exact(
    accounts: AccountFactory, admin_servers: tuple[Dovecot, Dovecot], tmp_path: Path,
) -> None:
    pairs = [_pair(accounts, admin_servers, index, per_folder=4) for index in range(PAIRS)]
    runs = tmp_path / "runs"
    old, new = admin_servers
    servers = _write(tmp_path / "servers.yaml", {
        # The source administrator's password from a command (run once for all pairs), the
        # destination's from a variable.
        "src": {"label": "old", "server": f"127.0.0.1:{old.tls_port}", "tls": "implicit", "ca_file": str(old.ca_file),
                "auth_user": SRC_ADMIN, "pass_cmd": f"echo run >> {runs}; echo {SRC_ADMIN_PW}"},
        "dst": {"label": "new", "server": f"127.0.0.1:{new.tls_port}", "tls": "implicit", "ca_file": str(new.ca_file),
                "auth_user": DST_ADMIN, "pass_env": "NEW_ADMIN_PW"},
    })
    csv = tmp_path / "pairs.csv"
    csv.write_text("src_user,dst_user\n" + "".join(f"{s.user},{d.user}\n" for s, d in pairs))
    state, log = tmp_path / "state", tmp_path / "batch.log"
    env = {"NEW_ADMIN_PW": DST_ADMIN_PW}
    done = run_cli("-c", servers, "batch", csv, "--state-dir", state, "--procs", "2", "--json", "--log-file", log,
                   env=env)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["summary"]["exact"] == PAIRS
    assert doc["summary"]["copied"] == PAIRS * 4 * len(FOLDERS)
    assert runs.read_text().count("run") == 1
    for src, dst in pairs:
        _exact(src, dst)
    again = run_cli("-c", servers, "batch", csv, "--state-dir", state, "--json", "--log-file", log, env=env)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["summary"]["skipped"] == PAIRS
    journal = [p for p in state.rglob("*") if p.is_file()]
    assert journal
    stored = b"".join(p.read_bytes() for p in journal)
    for secret in (SRC_ADMIN_PW, DST_ADMIN_PW):
        assert secret.encode() not in stored
    _secret_free(done.stdout, done.stderr, again.stdout, again.stderr, log.read_text())
    # The journal knows each pair by its users.
    [db] = [p for p in journal if p.suffix == ".sqlite" and p.parent.name == "batches"]
    with sqlite3.connect(db) as conn:
        users = {row for row in conn.execute("SELECT src_user, dst_user FROM pairs")}
    assert users == {(s.user, d.user) for s, d in pairs}
