"""Unit tests of the administrator identity (``auth_user``): the config key, its flags and
variables, the batch files that name users alone, and the line of a refused login."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from fastsync.batch.inputs import load_batch
from fastsync.cli import build_parser
from fastsync.commands.batch import warnings_for as batch_warnings
from fastsync.imap.replies import admin_refused
from fastsync.records.errors import ConfigError, UsageError
from fastsync.settings.config import load_config, parse_config
from fastsync.settings.options import COMMAND_FLAGS, account_keys, given, resolve

ADMIN_PW = "Admin-Secret-5150"


def _data(**src: Any) -> dict[str, Any]:
    return {
        "src": {"server": "old.example:993", "user": "alice", "pass": ADMIN_PW, **src},
        "dst": {"server": "new.example:993", "user": "alice", "pass": "user-pw"},
    }


@pytest.mark.parametrize(("src", "expected"), [
    ({"auth_user": "admin"}, "admin"),
    ({"auth_user": "admin@example.org"}, "admin@example.org"),
    ({}, None),
    ({"auth_user": None}, None),
])
def test_auth_user_is_read(src: dict[str, Any], expected: str | None) -> None:
    config = parse_config(_data(**src), "c.yaml", environ={})
    assert config.src.auth_user == expected
    assert config.src.password == ADMIN_PW and config.dst.auth_user is None


@pytest.mark.parametrize(("src", "problem"), [
    ({"auth_user": ""}, "c.yaml: src.auth_user: empty; expected the login name of an administrator"),
    ({"auth_user": 12}, ("c.yaml: src.auth_user: expected the login name of an administrator who may open the "
                        "mailbox, got 12; put it in quotes")),
    ({"auth_user": "admin", "pass": None, "oauth2_token_cmd": "get-token"},
     ("c.yaml: src.auth_user: logs in with the administrator's password; give it with one of pass, pass_env, "
     "pass_file, pass_cmd instead of oauth2_token_cmd")),
    ({"authuser": "admin"}, "did you mean auth_user?"),
    ({"admin": "admin"}, "did you mean auth_user?"),
])
def test_bad_auth_user_is_one_line(src: dict[str, Any], problem: str) -> None:
    data = _data(**src)
    data["src"] = {k: v for k, v in data["src"].items() if not (k == "pass" and v is None)}
    with pytest.raises(ConfigError) as info:
        parse_config(data, "c.yaml", environ={})
    assert problem in str(info.value) and ADMIN_PW not in str(info.value)


def _keys(argv: list[str], env: dict[str, str]) -> dict[str, dict[str, str]]:
    return account_keys(given(build_parser().parse_args(["sync", *argv]), env))


@pytest.mark.parametrize(("argv", "env", "expected"), [
    ([], {}, {}),
    (["--src-auth-user", "a1"], {}, {"src": {"auth_user": "a1"}}),
    (["--authuser1", "a1", "--authuser2", "a2"], {}, {"src": {"auth_user": "a1"}, "dst": {"auth_user": "a2"}}),
    ([], {"FASTSYNC_SOURCE_AUTH_USER": "e1", "FASTSYNC_DESTINATION_AUTH_USER": "e2"},
     {"src": {"auth_user": "e1"}, "dst": {"auth_user": "e2"}}),
    ([], {"IMAPSYNC_AUTHUSER1": "i1", "IMAPSYNC_AUTHUSER2": "i2"},
     {"src": {"auth_user": "i1"}, "dst": {"auth_user": "i2"}}),
    # FASTSYNC_ wins over IMAPSYNC_, a flag over both.
    ([], {"FASTSYNC_SOURCE_AUTH_USER": "f", "IMAPSYNC_AUTHUSER1": "i"}, {"src": {"auth_user": "f"}}),
    (["--dest-auth-user", "flag"], {"FASTSYNC_DESTINATION_AUTH_USER": "f", "IMAPSYNC_AUTHUSER2": "i"},
     {"dst": {"auth_user": "flag"}}),
    # The imapsync-go rule (IMAPSYNC_ + the suffix) is not the name of this one.
    ([], {"IMAPSYNC_SOURCE_AUTH_USER": "x"}, {}),
])
def test_flags_and_variables_set_the_side_keys(argv: list[str], env: dict[str, str],
                                               expected: dict[str, dict[str, str]]) -> None:
    assert _keys(argv, env) == expected


@pytest.mark.parametrize(("argv", "env", "problem"), [
    (["--src-auth-user", ""], {}, "--src-auth-user: empty; expected a login name"),
    ([], {"IMAPSYNC_AUTHUSER2": " "}, "--dest-auth-user / IMAPSYNC_AUTHUSER2: empty; expected a login name"),
])
def test_an_empty_administrator_is_a_usage_error(argv: list[str], env: dict[str, str], problem: str) -> None:
    with pytest.raises(UsageError) as info:
        _keys(argv, env)
    assert str(info.value).startswith(problem)


def test_a_flag_wins_over_the_file_and_is_checked_as_the_file_is(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_data(auth_user="file-admin")))
    config = load_config(path, environ={}, sides=_keys(["--src-auth-user", "flag-admin"], {}))
    assert config.src.auth_user == "flag-admin"
    args = build_parser().parse_args(["sync", "--src-auth-user", "flag-admin"])
    assert resolve(given(args, {}), config, COMMAND_FLAGS["sync"]).src_auth_user == "flag-admin"
    data = _data()
    data["src"] = {"server": "old.example:993", "user": "alice", "oauth2_token_cmd": "get-token"}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="src.auth_user: logs in with the administrator's password"):
        load_config(path, environ={}, sides={"src": {"auth_user": "flag-admin"}})


# --------------------------------------------------------------------------- batch


def _servers(tmp_path: Path, src: dict[str, Any], dst: dict[str, Any] | None = None) -> str:
    path = tmp_path / "servers.yaml"
    path.write_text(yaml.safe_dump({"src": {"server": "old.example:993", **src},
                                    "dst": {"server": "new.example:993", **(dst or {})}}))
    return str(path)


def _pairs(tmp_path: Path, text: str) -> str:
    path = tmp_path / "pairs.csv"
    path.write_text(text)
    return str(path)


def test_a_batch_with_administrators_needs_only_the_user_columns(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    servers = _servers(tmp_path, {"auth_user": "oldadmin", "pass_cmd": f"echo run >> {runs}; echo {ADMIN_PW}"},
                       {"auth_user": "newadmin", "pass_env": "NEW_PW"})
    batch = load_batch(servers, _pairs(tmp_path, "src_user,dst_user\na@old,a@new\nb@old,b@new\n"),
                       environ={"NEW_PW": "new-admin-pw"})
    assert runs.read_text() == "run\n"
    configs = [p.config for p in batch.pairs]
    assert [(c.src.user, c.src.auth_user, c.src.password) for c in configs] == [
        ("a@old", "oldadmin", ADMIN_PW), ("b@old", "oldadmin", ADMIN_PW)]
    assert [(c.dst.user, c.dst.auth_user, c.dst.password) for c in configs] == [
        ("a@new", "newadmin", "new-admin-pw"), ("b@new", "newadmin", "new-admin-pw")]
    assert batch.secrets == [ADMIN_PW, "new-admin-pw"]
    assert not batch.pairs_hold_passwords
    assert ADMIN_PW not in batch.servers_text and "pass_cmd" not in batch.servers_text
    assert "oldadmin" in batch.servers_text


def test_one_side_with_an_administrator_the_other_with_passwords(tmp_path: Path) -> None:
    servers = _servers(tmp_path, {"auth_user": "oldadmin", "pass": ADMIN_PW})
    batch = load_batch(servers, _pairs(tmp_path, "src_user;dst_user;dst_pass\na;b;pb\n"), environ={})
    [pair] = batch.pairs
    assert (pair.config.src.password, pair.config.dst.password) == (ADMIN_PW, "pb")
    assert batch.pairs_hold_passwords


def test_the_journal_key_does_not_derive_from_the_administrators_password(tmp_path: Path) -> None:
    pairs = _pairs(tmp_path, "src_user,dst_user\na,b\n")
    keys = []
    for password in ("first-Admin-pw", "second-Admin-pw"):
        servers = _servers(tmp_path, {"auth_user": "oldadmin", "pass": password}, {"auth_user": "n", "pass": "x"})
        batch = load_batch(servers, pairs, environ={})
        keys.append(batch.pairs[0].key(batch.servers_text))
        assert password not in batch.servers_text
    assert keys[0] == keys[1]


def test_the_administrators_variable_is_forgotten_once_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLD_ADMIN_PW", ADMIN_PW)
    servers = _servers(tmp_path, {"auth_user": "oldadmin", "pass_env": "OLD_ADMIN_PW"})
    batch = load_batch(servers, _pairs(tmp_path, "src_user,dst_user,dst_pass\na,b,pb\nc,d,pd\n"))
    assert [p.config.src.password for p in batch.pairs] == [ADMIN_PW, ADMIN_PW]
    assert "OLD_ADMIN_PW" not in os.environ


@pytest.mark.parametrize(("src", "text", "problem"), [
    ({"auth_user": "oldadmin", "pass": ADMIN_PW}, "src_user,src_pass,dst_user,dst_pass\na,pa,b,pb\n",
     ("pairs.csv: line 2: src_pass is given, but the servers file logs in to every src mailbox as the "
     "administrator 'oldadmin'; leave it empty")),
    ({"auth_user": "oldadmin"}, "src_user,dst_user,dst_pass\na,b,pb\n",
     "servers.yaml: src (line 3): no password for the administrator src.auth_user; give one of pass, pass_env, pass_file, pass_cmd"),
    ({"pass": ADMIN_PW}, "src_user,dst_user,dst_pass\na,b,pb\n",
     ("servers.yaml: src.pass: a batch takes users and passwords from the pairs file; remove it from the servers "
     "file (or name an administrator with auth_user, whose password it is)")),
    ({"auth_user": "oldadmin", "pass": ADMIN_PW, "user": "x"}, "src_user,dst_user,dst_pass\na,b,pb\n",
     ("servers.yaml: src.user: a batch takes users and passwords from the pairs file; remove it from the servers "
     "file")),
    ({}, "src_user,dst_user,dst_pass\na,b,pb\n",
     ("pairs.csv: line 2: src: none is given; give exactly one of src_pass, src_pass_file, src_oauth2_token_cmd, "
     "or an administrator (auth_user or oauth2) in the servers file")),
])
def test_batch_files_that_do_not_fit_together_are_one_line(tmp_path: Path, src: dict[str, Any], text: str,
                                                           problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_batch(_servers(tmp_path, src), _pairs(tmp_path, text), environ={})
    assert problem in str(info.value) and ADMIN_PW not in str(info.value)


def test_a_flag_names_the_batch_administrator(tmp_path: Path) -> None:
    servers = _servers(tmp_path, {"pass": ADMIN_PW})
    batch = load_batch(servers, _pairs(tmp_path, "src_user,dst_user,dst_pass\na,b,pb\n"), environ={},
                       sides={"src": {"auth_user": "flag-admin"}})
    assert batch.pairs[0].config.src.auth_user == "flag-admin"


# --------------------------------------------------------------------------- the refusal's line


@pytest.mark.parametrize(("reply", "advice"), [
    ("[AUTHENTICATIONFAILED] Authentication failed.", "check src.auth_user and its password"),
    ("Authentication failed", "check src.auth_user and its password"),
    ("[AUTHORIZATIONFAILED] Authorization failed", "the administrator may not open this mailbox, or it does not exist"),
])
def test_a_refused_administrator_is_named_with_the_mailbox(reply: str, advice: str) -> None:
    account = parse_config(_data(auth_user="admin"), "c.yaml", environ={}).src
    error = admin_refused(account, reply)
    assert str(error).startswith(f"source (old.example:993): login to the mailbox 'alice' as the administrator "
                                 f"'admin' refused ({reply}); {advice}")
    assert error.side == "src" and error.exit_code == 4


@pytest.mark.parametrize(("src", "columns", "warned"), [
    ({"auth_user": "oldadmin", "pass": ADMIN_PW}, "src_user,dst_user\na,b\n", False),
    ({"auth_user": "oldadmin", "pass": ADMIN_PW}, "src_user,dst_user,dst_pass\na,b,pb\n", True),
])
def test_a_readable_pairs_file_is_warned_about_only_when_it_holds_passwords(
    tmp_path: Path, src: dict[str, Any], columns: str, warned: bool,
) -> None:
    dst = {"auth_user": "newadmin", "pass": "x"} if not warned else {}
    pairs = _pairs(tmp_path, columns)
    os.chmod(pairs, 0o644)
    servers = _servers(tmp_path, src, dst)
    os.chmod(servers, 0o644)
    batch = load_batch(servers, pairs, environ={})
    warnings = batch_warnings(batch)
    assert any("holds passwords" in warning for warning in warnings) is warned
    assert f"{servers} holds an administrator's password and is readable by others; run chmod 600 on it" in warnings
