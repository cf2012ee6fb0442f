"""`fastsync show` and connection failures, against real Dovecot servers."""

from __future__ import annotations

import datetime as dt
import socket
from pathlib import Path

import pytest

from bench.harness.corpus import Message
from bench.harness.dovecot import Dovecot
from tests.dovecot.accounts import Account, AccountFactory, ConfigFor, snapshot
from tests.helpers import run_cli

UTC = dt.UTC

FOLDERS = ["INBOX", "Projets/Café & [data]", "Archive/Été 2020/Q1", "Sent", "with space", "[brackets]"]


def seed_folders(account: Account) -> dict[str, int]:
    messages = []
    sizes: dict[str, int] = {}
    for index, folder in enumerate(FOLDERS):
        for n in range(index + 1):
            body = f"Message-ID: <{index}.{n}@x>\r\nSubject: {folder}\r\n\r\n{'x' * (100 * n)}\r\n".encode()
            messages.append(Message(folder, body, (), dt.datetime(2020, 1, 1, tzinfo=UTC)))
            sizes[folder] = sizes.get(folder, 0) + len(body)
    account.seed(messages)
    return sizes


def rows(output: str, side: str) -> dict[str, list[str]]:
    return {line.split("\t")[1]: line.split("\t") for line in output.splitlines() if line.startswith(side + "\t")}


@pytest.mark.parametrize("server_name", ["dovecot", "dovecot_dot"])
def test_show_lists_both_accounts_and_the_mapping(
    server_name: str, request: pytest.FixtureRequest, accounts: AccountFactory, config_for: ConfigFor
) -> None:
    server: Dovecot = request.getfixturevalue(server_name)
    src, dst = accounts(2, server=server)
    sizes = seed_folders(src)
    before = snapshot(src)

    result = run_cli("show", "-c", config_for(src, dst), "-q")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    sep = server.separator
    listed = rows(result.stdout, "src")
    for index, folder in enumerate(FOLDERS):
        name = folder.replace("/", sep)
        assert listed[name][2] == str(index + 1), name
        assert listed[name][4] == str(sizes[folder]), name
    assert listed["Sent"][5] == "\\Sent"
    # Nested parents exist as containers; shown, without counts.
    assert listed[f"Archive{sep}Été 2020"][2] in ("-", "0")
    assert list(rows(result.stdout, "dst")) == ["INBOX"]
    mapping = [line.split("\t")[1:3] for line in result.stdout.splitlines() if line.startswith("map\t")]
    assert [f"Archive{sep}Été 2020{sep}Q1"] * 2 in mapping
    assert ["Projets" + sep + "Café & [data]"] * 2 in mapping
    # Read-only: nothing changed on the source, \Seen included.
    assert snapshot(src) == before


def test_show_verbose_has_protocol_detail_and_human_mode_has_titles(
    accounts: AccountFactory, config_for: ConfigFor
) -> None:
    src, dst = accounts(2)
    seed_folders(src)
    verbose = run_cli("show", "-c", config_for(src, dst), "-V")
    assert verbose.returncode == 0, verbose.stderr
    assert "capabilities:" in verbose.stdout and "MULTIAPPEND" in verbose.stdout
    inbox = rows(verbose.stdout, "src")["INBOX"]
    assert inbox[6] == "/"
    assert int(inbox[7]) > 0 and int(inbox[8]) == 2
    assert "# source (" in verbose.stdout
    assert "# Folder mapping used by sync" in verbose.stdout
    quiet_env = run_cli("show", "-c", config_for(src, dst), env={"FASTSYNC_QUIET": "1"})
    assert "# " not in quiet_env.stdout


def test_show_an_empty_account(accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst = accounts(2)
    result = run_cli("show", "-c", config_for(src, dst), "-q")
    assert result.returncode == 0, result.stderr
    assert rows(result.stdout, "src") == {"INBOX": ["src", "INBOX", "0", "0 B", "0", "-"]}


def test_wrong_password_is_one_line_exit_4_without_the_password(
    accounts: AccountFactory, config_for: ConfigFor
) -> None:
    src, dst = accounts(2)
    secret = "Wr0ng-Pa55-zebra"
    result = run_cli("show", "-c", config_for(src, dst, extra={"dst": {"pass": secret}}))
    assert result.returncode == 4
    # Warnings (plain-text connection, readable config file) may come first; one error line.
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1
    assert lines[0].startswith(f"error: destination ({dst.address}): login as '{dst.user}' refused")
    assert "Traceback" not in result.stderr
    assert secret not in result.stdout + result.stderr


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_closed_port_is_a_connection_error(accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst = accounts(2)
    port = _closed_port()
    result = run_cli("show", "-c", config_for(src, dst, extra={"src": {"server": f"127.0.0.1:{port}"}}))
    assert result.returncode == 3
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: source (127.0.0.1:{port}): connection refused; check src.server (host and port) "
        "and that the server runs"
    )


def test_untrusted_certificate_is_refused_and_ca_file_trusts_it(
    dovecot: Dovecot, accounts: AccountFactory, config_for: ConfigFor
) -> None:
    src, dst = accounts(2)
    tls_server = f"127.0.0.1:{dovecot.tls_port}"
    implicit = {"src": {"server": tls_server, "tls": "implicit"}}
    refused = run_cli("show", "-c", config_for(src, dst, extra=implicit))
    assert refused.returncode == 3
    assert f"error: source ({tls_server}): TLS certificate not trusted" in refused.stderr
    assert "set src.ca_file" in refused.stderr
    trusted = run_cli("show", "-c", config_for(src, dst, extra={"src": {**implicit["src"], "ca_file": str(dovecot.ca_file)}}))
    assert trusted.returncode == 0, trusted.stderr
    starttls = {"src": {"tls": "starttls", "ca_file": str(dovecot.ca_file)}}
    upgraded = run_cli("show", "-c", config_for(src, dst, extra=starttls))
    assert upgraded.returncode == 0, upgraded.stderr


def test_starttls_not_offered_is_refused(tmp_path: Path, accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst = accounts(2)
    with Dovecot(tmp_path / "plain", {"p": "p-pw"}, starttls=False) as plain:
        config = config_for(src, dst, extra={"src": {"server": f"127.0.0.1:{plain.port}", "user": "p", "pass": "p-pw", "tls": "starttls"}})
        result = run_cli("show", "-c", config)
    assert result.returncode == 3
    assert "server does not offer STARTTLS" in result.stderr
    assert "set src.tls: implicit" in result.stderr


def test_starttls_by_default_says_how_to_choose_no_tls(
    tmp_path: Path, accounts: AccountFactory, config_for: ConfigFor
) -> None:
    # No tls key and a port other than 993: starttls by default.  A server that really has
    # no TLS needs tls: none, and the error line says where that goes.
    src, dst = accounts(2)
    with Dovecot(tmp_path / "plain", {"p": "p-pw"}, starttls=False) as plain:
        config = config_for(src, dst, extra={"dst": {"server": f"127.0.0.1:{plain.port}", "user": "p", "pass": "p-pw",
                                                     "tls": None}})
        result = run_cli("show", "-c", config)
    assert result.returncode == 3
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert line == (
        f"error: destination (127.0.0.1:{plain.port}): server does not offer STARTTLS (dst.tls is starttls, the "
        "default on any port but 993); if it has a TLS port (usually 993), put that port in dst.server and set "
        "dst.tls: implicit; if it really has no TLS, set dst.tls: none in the config file (there is no flag for "
        "it; the password and the mail then cross the network unencrypted)"
    )
