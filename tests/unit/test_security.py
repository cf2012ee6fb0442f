"""Security checks that need no server: one credential per side, OAuth2 settings that run
nothing at load, warnings on readable config files, `pass_env` removed once read, the log's
redaction, and the choice of the OAuth2 mechanism.

TLS verification, secrets in real runs and OAuth2 logins: tests/dovecot/test_security.py.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import pickle
import shlex
from pathlib import Path
from typing import Any

import pytest

from fastsync import cli
from fastsync.settings import credentials
from fastsync.imap.capabilities import Capabilities
from fastsync.settings.config import load_config, parse_config, warnings_for
from fastsync.records.errors import ConfigError
from tests.helpers import write_config

_names = itertools.count(1)


# --------------------------------------------------------------------------- config checks


def side(**keys: Any) -> dict[str, Any]:
    return {"server": "imap.example.org:993", "user": "u", **keys}


@pytest.mark.parametrize(
    ("src", "expected"),
    [
        (side(), "src: no password; give one of pass, pass_env, pass_file, pass_cmd, or oauth2_token_cmd or oauth2 for OAuth2"),
        (side(**{"pass": "Hunter2-x", "oauth2_token_cmd": "tok"}), "src: pass and oauth2_token_cmd both given; use exactly one"),
        (side(pass_cmd="echo Hunter2-x", oauth2_token_cmd="tok"), "src: pass_cmd and oauth2_token_cmd both given"),
        (side(oauth2_token_cmd=""), "src.oauth2_token_cmd: empty; expected a shell command that prints an OAuth2 access token"),
        (side(oauth2_token_cmd=7), "src.oauth2_token_cmd: expected a shell command that prints an OAuth2 access token, got a number"),
    ],
)
def test_exactly_one_credential_per_side(src: dict[str, Any], expected: str) -> None:
    data = {"src": src, "dst": side(**{"pass": "p"})}
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "c.yaml", environ={})
    assert str(caught.value).startswith(f"c.yaml: {expected}")
    assert "Hunter2-x" not in str(caught.value)


def test_oauth2_side_keeps_its_command_out_of_repr_and_runs_nothing_at_load(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    data = {"src": side(oauth2_token_cmd=f"touch {shlex.quote(str(marker))}; echo client_secret=S3cr3t"), "dst": side(**{"pass": "p"})}
    config = parse_config(data, str(tmp_path / "c.yaml"), environ={})
    assert config.src.password == "" and config.src.credential_key == "oauth2_token_cmd"
    assert "S3cr3t" not in repr(config)
    assert pickle.loads(pickle.dumps(config)) == config
    assert not marker.exists()  # tokens are fetched per connection, not at load


@pytest.mark.parametrize(
    ("mode", "credential", "expected"),
    [
        (0o600, {"pass": "p"}, None),
        (0o640, {"pass": "p"}, "is readable by its group and holds a password; run chmod 600 "),
        (0o604, {"pass": "p"}, "is readable by others and holds a password; run chmod 600 "),
        (0o644, {"pass": "p"}, "is readable by its group and others and holds a password; run chmod 600 "),
        (0o644, {"pass_cmd": "echo p"}, None),  # the file holds no password
    ],
)
def test_config_readable_by_others_with_a_password_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: int, credential: dict[str, str], expected: str | None
) -> None:
    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path, "imap.example.org:993", "a", "x", "imap.example.org:993", "b", "y",
                        extra={"src": {"pass": None, **credential}, "dst": {"pass": None, **credential, "tls": "implicit"}},
                        src_tls="implicit", name="my config")
    path.chmod(mode)
    found = warnings_for(load_config(path, environ={}))
    if expected is None:
        assert found == []
    else:
        # Named as the user would type it, relative to the working directory, quoted for the shell.
        assert found == [f"my config.json {expected}'my config.json'"]


def test_pass_env_is_removed_from_the_environment_once_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEC_TEST_PW", "Env-Secret-41")
    path = write_config(tmp_path, "h:993", "a", "x", "h:993", "b", "y", extra={"src": {"pass": None, "pass_env": "SEC_TEST_PW"}})
    assert load_config(path).src.password == "Env-Secret-41"
    assert "SEC_TEST_PW" not in os.environ


# --------------------------------------------------------------------------- redaction


class Opaque:
    """A value an event might carry that is not a primitive (rendered with str())."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return f"Opaque({self.text})"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_log_redacts_secrets_before_rendering_them(log_format: str) -> None:
    # Characters that repr() and JSON escape: replacing after rendering would miss them.
    password = 'pa"ss\\wo\'rd\n'
    token = "ya29.token-" + str(next(_names)) + "-Zx"
    formatter = cli.log_formatter(log_format, [password, ""], credentials.known_secrets)
    # A token fetched after the log was opened is redacted too.
    credentials.remember_secret(token)
    record = logging.LogRecord("fastsync", logging.ERROR, __file__, 1, "retry", None, None)
    record.event = f"retry after {password}"
    record.side, record.folder, record.uid = "dst", f"INBOX {token}", 7
    record.fields = {
        "message": f"server said: LOGIN u {password} failed",
        "uids": [1, 2, password],
        "nested": {"token": f"Bearer {token}", password: "as a key"},
        "error": Opaque(password),
        "both": (token, password),
    }
    line = formatter.format(record)
    for secret in (password, token):
        forms = {secret, repr(secret)[1:-1], json.dumps(secret)[1:-1], repr(repr(secret))[1:-1]}
        for form in forms:
            assert form not in line, (form, line)
    assert line.count("***") >= 9
    assert "server said: LOGIN u *** failed" in (json.loads(line)["message"] if log_format == "json" else line)


# --------------------------------------------------------------------------- OAuth2


@pytest.mark.parametrize(
    ("capabilities", "expected"),
    [
        (["IMAP4REV1", "AUTH=PLAIN", "AUTH=XOAUTH2", "AUTH=OAUTHBEARER"], "OAUTHBEARER"),
        (["IMAP4REV1", "AUTH=XOAUTH2"], "XOAUTH2"),
        (["IMAP4REV1", "AUTH=PLAIN", "AUTH=LOGIN"], None),
    ],
)
def test_bearer_mechanism_prefers_the_standard(capabilities: list[str], expected: str | None) -> None:
    assert credentials.bearer_mechanism(Capabilities.parse(capabilities).auth_mechanisms) == expected
