"""Tests for fastsync.settings.config: valid files, defaults, password sources and every error message."""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastsync.settings import credentials
from fastsync.settings.config import (
    Account,
    Config,
    MapEntry,
    RateLimit,
    load_config,
    parse_config,
)
from fastsync.records.errors import ConfigError

SECRETS = ("secret", "secret2", "hunter2", "12345")

FULL_YAML = """\
src:
  label: "Old provider"
  server: "imap.old.example:993"
  user: "alice@old.example"
  pass: "secret"
dst:
  label: "New provider"
  server: "imap.new.example:993"
  user: "alice@new.example"
  pass: "secret2"
map:
  - {src: "INBOX", dst: "INBOX"}
  - {src: "Sent Items", dst: "Sent"}
rate_limit:
  down_bps: 1000
  up_bps: 2000
  max_connections: 4
"""

FULL_DATA: dict[str, Any] = {
    "src": {
        "label": "Old provider",
        "server": "imap.old.example:993",
        "user": "alice@old.example",
        "pass": "secret",
    },
    "dst": {
        "label": "New provider",
        "server": "imap.new.example:993",
        "user": "alice@new.example",
        "pass": "secret2",
    },
    "map": [{"src": "INBOX", "dst": "INBOX"}, {"src": "Sent Items", "dst": "Sent"}],
    "rate_limit": {"down_bps": 1000, "up_bps": 2000, "max_connections": 4},
}

MINIMAL_YAML = """\
src:
  server: imap.a.example:993
  user: a
  pass: secret
dst:
  server: imap.b.example:143
  user: b
  pass: secret2
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path | str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=environ or {})
    message = str(info.value)
    assert "\n" not in message and "\r" not in message
    assert "Traceback" not in message
    for secret in SECRETS:
        assert secret not in message
    assert info.value.exit_code == 2
    return message


DELETE = object()


def minimal(**overrides: Any) -> dict[str, Any]:
    """A valid config as data; ``src__tls="none"`` style overrides edit one side's key."""
    data: dict[str, Any] = {
        "src": {"server": "imap.a.example:993", "user": "a", "pass": "secret"},
        "dst": {"server": "imap.b.example:993", "user": "b", "pass": "secret2"},
    }
    for key, value in overrides.items():
        side, _, field = key.partition("__")
        if field:
            if value is DELETE:
                del data[side][field]
            else:
                data[side][field] = value
        elif value is DELETE:
            del data[side]
        else:
            data[side] = value
    return data


# --------------------------------------------------------------------------- valid files


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("config.yaml", FULL_YAML),
        ("config.yml", FULL_YAML),
        ("config.json", json.dumps(FULL_DATA, indent=2)),
        ("CONFIG.JSON", json.dumps(FULL_DATA)),
    ],
)
def test_full_example(tmp_path: Path, name: str, text: str) -> None:
    config = load_config(write(tmp_path, name, text), environ={})
    assert config.path == str(tmp_path / name)
    assert os.path.isabs(config.path)
    assert config.src == Account(
        side="src",
        label="Old provider",
        host="imap.old.example",
        port=993,
        user="alice@old.example",
        password="secret",
        tls="implicit",
        ca_file=None,
        timeout_s=60.0,
    )
    assert config.dst.label == "New provider"
    assert config.dst.password == "secret2"
    assert config.map == (MapEntry("INBOX", "INBOX"), MapEntry("Sent Items", "Sent"))
    assert config.rate_limit == RateLimit(down_bps=1000, up_bps=2000, max_connections=4)


def test_minimal_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "c.yaml", MINIMAL_YAML), environ={})
    assert (config.src.label, config.dst.label) == ("source", "destination")
    assert (config.src.side, config.dst.side) == ("src", "dst")
    assert config.src.tls == "implicit"  # port 993
    assert config.dst.tls == "starttls"  # any other port
    assert config.src.timeout_s == config.dst.timeout_s == 60.0
    assert config.src.ca_file is None
    assert config.map == ()
    assert config.rate_limit == RateLimit(0, 0, 0)
    # No budget given: a provider's preset applies (None), over a day.
    assert (config.rate_limit.src_daily_limit, config.rate_limit.limit_window) == (None, 86400.0)


@pytest.mark.parametrize(("rate", "expected"), [
    ({"dst_daily_limit": "500MB", "limit_window": "10s"}, (None, 500_000_000, 10.0)),
    ({"src_daily_limit": "none", "dst_daily_limit": 0}, (0, 0, 86400.0)),
    ({"src_daily_limit": 2_000_000, "limit_window": 90}, (2_000_000, None, 90.0)),
])
def test_budgets_in_rate_limit(tmp_path: Path, rate: dict[str, object], expected: tuple[object, ...]) -> None:
    path = write(tmp_path, "c.yaml", MINIMAL_YAML + "rate_limit:\n" + "".join(f"  {k}: {v}\n" for k, v in rate.items()))
    got = load_config(path, environ={}).rate_limit
    assert (got.src_daily_limit, got.dst_daily_limit, got.limit_window) == expected


@pytest.mark.parametrize(
    ("overrides", "attribute", "expected"),
    [
        ({"src__tls": "none"}, "tls", "none"),
        ({"src__tls": "starttls"}, "tls", "starttls"),
        ({"src__tls": "IMPLICIT", "src__server": "h:143"}, "tls", "implicit"),
        ({"src__tls": None}, "tls", "implicit"),
        ({"src__timeout_s": 5}, "timeout_s", 5.0),
        ({"src__timeout_s": 0.5}, "timeout_s", 0.5),
        ({"src__label": None}, "label", "source"),
        ({"src__server": "[::1]:993"}, "host", "::1"),
        ({"src__server": "[::1]:993"}, "server", "[::1]:993"),
        ({"src__server": "[2001:db8::1]:143"}, "server", "[2001:db8::1]:143"),
        ({"src__server": "[2001:db8::1]:143"}, "tls", "starttls"),
        ({"src__server": "192.0.2.1:993"}, "server", "192.0.2.1:993"),
        ({"src__server": " imap.x:993 "}, "host", "imap.x"),
    ],
)
def test_side_values(overrides: dict[str, Any], attribute: str, expected: object) -> None:
    config = parse_config(minimal(**overrides), "c.yaml", environ={})
    assert getattr(config.src, attribute) == expected


def test_rate_limit_float_from_json_is_whole(tmp_path: Path) -> None:
    data = minimal(rate_limit={"down_bps": 1e6})
    config = parse_config(data, "c.json", environ={})
    assert config.rate_limit.down_bps == 1_000_000
    assert isinstance(config.rate_limit.down_bps, int)


def test_ca_file_relative_to_config_folder(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.pem").write_text("pem")
    text = MINIMAL_YAML.replace("  pass: secret\n", "  pass: secret\n  ca_file: certs/ca.pem\n", 1)
    config = load_config(write(tmp_path, "c.yaml", text), environ={})
    assert config.src.ca_file == str(tmp_path / "certs" / "ca.pem")


# --------------------------------------------------------------------------- passwords


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ({"pass": "hunter2"}, "hunter2"),
        ({"pass": " spaced "}, " spaced "),
        ({"pass_env": "MY_PASS"}, "hunter2"),
        ({"pass_file": "pw.txt"}, "hunter2"),
        ({"pass_file": "pw-crlf.txt"}, "hunter2"),
        ({"pass_cmd": "printf hunter2"}, "hunter2"),
        ({"pass_cmd": "echo hunter2"}, "hunter2"),
        ({"pass_cmd": "head -n 1 pw.txt"}, "hunter2"),  # runs in the config file's folder
    ],
)
def test_password_sources(tmp_path: Path, source: dict[str, str], expected: str) -> None:
    (tmp_path / "pw.txt").write_text("hunter2\nsecond line\n")
    (tmp_path / "pw-crlf.txt").write_bytes(b"hunter2\r\n")
    data = minimal(src={"server": "imap.a.example:993", "user": "a", **source})
    config = parse_config(data, str(tmp_path / "c.yaml"), environ={"MY_PASS": "hunter2"})
    assert config.src.password == expected
    assert "hunter2" not in repr(config)
    assert "hunter2" not in str(config)
    assert "hunter2" not in repr(config.src)


def test_environ_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTSYNC_TEST_PASS", "hunter2")
    data = minimal(src={"server": "h:993", "user": "a", "pass_env": "FASTSYNC_TEST_PASS"})
    assert parse_config(data, "c.yaml").src.password == "hunter2"


def test_account_pickles_and_hides_password() -> None:
    config = parse_config(minimal(), "c.yaml", environ={})
    for value in (config, config.src):
        assert pickle.loads(pickle.dumps(value)) == value
    assert "secret" not in repr(config)
    assert config.src.server == "imap.a.example:993"


def test_pass_cmd_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(credentials, "PASS_CMD_TIMEOUT_S", 0.2)
    data = minimal(src={"server": "h:993", "user": "a", "pass_cmd": "sleep 5; echo hunter2"})
    with pytest.raises(ConfigError) as info:
        parse_config(data, "c.yaml", environ={})
    assert str(info.value) == (
        "c.yaml: src.pass_cmd: command did not finish within 0.2 s; expected a command that "
        "prints the password and exits with status 0"
    )


def test_pass_cmd_not_run_when_file_is_otherwise_broken(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    data = minimal(src={"server": "h:993", "user": "a", "pass_cmd": f"touch '{marker}'; echo x"})
    data["dst"]["user"] = ""
    with pytest.raises(ConfigError, match=r"dst\.user"):
        parse_config(data, str(tmp_path / "c.yaml"), environ={})
    assert not marker.exists()


# --------------------------------------------------------------------------- bad data

# (overrides for minimal(), exact message without the leading "c.json: ")
BAD_DATA: list[tuple[dict[str, Any], str]] = [
    ({"src": DELETE}, "src: missing; expected the source account"),
    (
        {"src": "x"},
        'src: expected the source account as a mapping with server, user and pass, got "x"',
    ),
    (
        {"dst__user": DELETE},
        "dst.user: missing; expected the login name of the destination account",
    ),
    ({"dst__user": ""}, "dst.user: empty; expected the login name of the destination account"),
    ({"dst__user": "  "}, "dst.user: empty; expected the login name"),
    (
        {"dst__user": 42},
        "dst.user: expected the login name of the destination account, got 42; put it in quotes",
    ),
    ({"src__label": ""}, "src.label: empty; expected a short name"),
    ({"src__server": DELETE}, "src.server: missing; expected host:port, e.g. imap.example.com:993"),
    (
        {"src__server": "imap.example.com"},
        'src.server: "imap.example.com" has no port; expected host:port, e.g. imap.example.com:993',
    ),
    (
        {"src__server": "[::1]"},
        'src.server: "[::1]" has no port; expected [address]:port, e.g. [::1]:993',
    ),
    (
        {"src__server": "::1"},
        'src.server: "::1" is ambiguous; expected an IPv6 address in brackets, e.g. [::1]:993',
    ),
    (
        {"src__server": "[nothost]:993"},
        'src.server: "[nothost]:993" is not an IPv6 address in brackets',
    ),
    ({"src__server": "[::1:993"}, 'src.server: "[::1:993" has no closing ]'),
    ({"src__server": "h:0"}, "src.server: port 0 is out of range; expected a port number 1..65535"),
    (
        {"src__server": "h:65536"},
        "src.server: port 65536 is out of range; expected a port number 1..65535",
    ),
    (
        {"src__server": "h:imap"},
        'src.server: "h:imap" has no valid port; expected a port number 1..65535, e.g. h:993',
    ),
    ({"src__server": ":993"}, 'src.server: ":993" has no host'),
    (
        {"src__server": "imaps://h.example:993/"},
        'src.server: "imaps://h.example:993/" has a URL scheme; expected host:port without it, e.g. h.example:993',
    ),
    ({"src__server": 993}, "src.server: expected host:port, e.g. imap.example.com:993, got 993"),
    ({"src__tls": "ssl"}, 'src.tls: expected one of implicit, starttls, none, got "ssl"'),
    (
        {"src__tls": False},
        "src.tls: expected one of implicit, starttls, none, got false; write none",
    ),
    ({"src__timeout_s": 0}, "src.timeout_s: expected a number of seconds > 0, got 0"),
    ({"src__timeout_s": -1.5}, "src.timeout_s: expected a number of seconds > 0, got -1.5"),
    ({"src__timeout_s": True}, "src.timeout_s: expected a number of seconds > 0, got true"),
    ({"src__timeout_s": "60"}, 'src.timeout_s: expected a number of seconds > 0, got "60"'),
    ({"src__timeout_s": float("inf")}, "src.timeout_s: expected a number of seconds > 0, got inf"),
    (
        {"src__ca_file": "missing.pem"},
        'src.ca_file: cannot read "missing.pem": No such file or directory; expected a PEM file',
    ),
    ({"src__ca_file": "."}, 'src.ca_file: "." is not a regular file; expected a PEM file'),
    (
        {"src__pass": 12345},
        "src.pass: expected the password as a string, got a number; put it in quotes",
    ),
    (
        {"src__pass": True},
        "src.pass: expected the password as a string, got a boolean; put it in quotes",
    ),
    ({"src__pass": ""}, "src.pass: empty; expected the password as a string"),
    ({"src__pass": None}, "src.pass: empty; expected the password as a string"),
    ({"src__pass": ["hunter2"]}, "src.pass: expected the password as a string, got a list"),
    ({"src__pass_env": "MY_PASS"}, "src: pass and pass_env both given; use exactly one"),
    (
        {"src__pass_env": "A", "src__pass_cmd": "B"},
        "src: pass, pass_env and pass_cmd all given; use exactly one",
    ),
    ({"src__pass": DELETE}, "src: no password; give one of pass, pass_env, pass_file, pass_cmd"),
    (
        {"src__pass": DELETE, "src__pass_env": "UNSET_VAR"},
        "src.pass_env: environment variable UNSET_VAR is not set",
    ),
    (
        {"src__pass": DELETE, "src__pass_env": "EMPTY_VAR"},
        "src.pass_env: environment variable EMPTY_VAR is empty",
    ),
    ({"src__pass": DELETE, "src__pass_env": "A=B"}, 'src.pass_env: "A=B" is not a variable name'),
    (
        {"src__pass": DELETE, "src__pass_file": "nope.txt"},
        'src.pass_file: cannot read "nope.txt": No such file or directory; expected a readable file',
    ),
    (
        {"src__pass": DELETE, "src__pass_file": "empty.txt"},
        'src.pass_file: the first line of "empty.txt" is empty; expected',
    ),
    (
        {"src__pass": DELETE, "src__pass_file": "latin1.txt"},
        'src.pass_file: "latin1.txt" is not UTF-8 text',
    ),
    (
        {"src__pass": DELETE, "src__pass_cmd": "echo hunter2; exit 3"},
        "src.pass_cmd: command failed with exit status 3; expected a command that prints the password",
    ),
    (
        {"src__pass": DELETE, "src__pass_cmd": "kill -9 $$"},
        "src.pass_cmd: command was killed by signal 9",
    ),
    ({"src__pass": DELETE, "src__pass_cmd": "true"}, "src.pass_cmd: command printed nothing"),
    (
        {"src__pass": DELETE, "src__pass_cmd": "printf 'hunter2\\nx\\n'"},
        "src.pass_cmd: command printed more than one line",
    ),
    (
        {"src__pass": DELETE, "src__pass_cmd": 5},
        "src.pass_cmd: expected a shell command that prints the password, got a number",
    ),
    (
        {"src__passs": "x"},
        "src.passs: unknown key; known keys: label, server, user, pass, pass_env, pass_file, pass_cmd, tls, ca_file, timeout_s, oauth2_token_cmd, auth_user, oauth2, compress (did you mean pass?)",
    ),
    (
        {"src__password": "x"},
        "src.password: unknown key; known keys: label, server, user, pass, pass_env, pass_file, pass_cmd, tls, ca_file, timeout_s, oauth2_token_cmd, auth_user, oauth2, compress (did you mean pass?)",
    ),
    (
        {"src__host": "x"},
        "src.host: unknown key; known keys: label, server, user, pass, pass_env, pass_file, pass_cmd, tls, ca_file, timeout_s, oauth2_token_cmd, auth_user, oauth2, compress (did you mean server?)",
    ),
    (
        {"src__zzz": "x"},
        "src.zzz: unknown key; known keys: label, server, user, pass, pass_env, pass_file, pass_cmd, tls, ca_file, timeout_s, oauth2_token_cmd, auth_user, oauth2, compress",
    ),
    ({"extra": 1}, "extra: unknown key; known keys: src, dst, map, include, exclude, rate_limit"),
    ({"maps": []}, "maps: unknown key; known keys: src, dst, map, include, exclude, rate_limit (did you mean map?)"),
    (
        {"map": {"src": "a", "dst": "b"}},
        "map: expected a list of {src, dst} folder pairs, got a mapping",
    ),
    (
        {"map": ["INBOX"]},
        'map[0]: expected a mapping with src and dst folder names, e.g. {src: INBOX, dst: INBOX}, got "INBOX"',
    ),
    ({"map": [{"src": "a"}]}, "map[0].dst: missing; expected the name of a destination folder"),
    (
        {"map": [{"src": "a", "dst": ""}]},
        "map[0].dst: empty; expected the name of a destination folder",
    ),
    (
        {"map": [{"src": 2023, "dst": "b"}]},
        "map[0].src: expected the name of a source folder, got 2023; put it in quotes",
    ),
    (
        {"map": [{"src": "a", "dst": "b", "flags": 1}]},
        "map[0].flags: unknown key; known keys: src, dst",
    ),
    (
        {"map": [{"src": "a", "dst": "b"}, {"src": "a", "dst": "c"}]},
        'map[1].src: "a" is already mapped by map[0]; expected each source folder once',
    ),
    (
        {"rate_limit": [1]},
        "rate_limit: expected a mapping with down_bps, up_bps, max_connections, got a list",
    ),
    (
        {"rate_limit": {"down_bps": "fast"}},
        'rate_limit.down_bps: expected a whole number of bytes per second >= 0 or a size such as 2M or 500k (k, M, G: powers of 1000; Ki, Mi, Gi: of 1024), got "fast"',
    ),
    (
        {"rate_limit": {"up_bps": -1}},
        "rate_limit.up_bps: expected a whole number of bytes per second >= 0 or a size such as 2M or 500k (k, M, G: powers of 1000; Ki, Mi, Gi: of 1024), got -1",
    ),
    (
        {"rate_limit": {"up_bps": 1.5}},
        "rate_limit.up_bps: expected a whole number of bytes per second >= 0 or a size such as 2M or 500k (k, M, G: powers of 1000; Ki, Mi, Gi: of 1024), got 1.5",
    ),
    (
        {"rate_limit": {"max_connections": True}},
        "rate_limit.max_connections: expected a whole number of connections per side >= 0, got true",
    ),
    (
        {"rate_limit": {"limit_window": "soon"}},
        "rate_limit.limit_window: expected a duration such as 24h, 90m, 10s or 1d",
    ),
    (
        {"rate_limit": {"limit_window": 0}},
        "rate_limit.limit_window: expected a duration such as 24h, 90m, 10s or 1d",
    ),
    (
        {"rate_limit": {"dst_daily_limit": "lots"}},
        "rate_limit.dst_daily_limit: expected a size such as 500M or 2.5G",
    ),
    (
        {"rate_limit": {"src_daily_limit": -5}},
        "rate_limit.src_daily_limit: expected a size such as 500M or 2.5G",
    ),
    (
        {"rate_limit": {"down_bps": 1, "max_conn": 1}},
        "rate_limit.max_conn: unknown key; known keys: down_bps, up_bps, max_connections, src_daily_limit, dst_daily_limit, limit_window (did you mean max_connections?)",
    ),
]


@pytest.mark.parametrize(("overrides", "expected"), BAD_DATA, ids=[e[1][:40] for e in BAD_DATA])
def test_bad_data(tmp_path: Path, overrides: dict[str, Any], expected: str) -> None:
    (tmp_path / "empty.txt").write_text("\n")
    (tmp_path / "latin1.txt").write_bytes("pässword\n".encode("latin-1"))
    path = write(tmp_path, "c.json", json.dumps(minimal(**overrides)).replace("Infinity", "1e999"))
    message = load_error(path, environ={"MY_PASS": "hunter2", "EMPTY_VAR": ""})
    # The file is named as given; JSON from json.dumps is one line, so every field is line 1.
    prefix = f"{path}: "
    assert message.startswith(prefix)
    body = message[len(prefix) :].replace(" (line 1)", "")
    assert body.startswith(expected), message


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (None, "c.yaml: the file is empty; expected a mapping with src, dst"),
        ([], "c.yaml: the top level is a list; expected a mapping with src, dst"),
        ("src", "c.yaml: the top level is a string; expected a mapping"),
        ({1: 2}, "c.yaml: 1: unknown key; known keys: src, dst, map, include, exclude, rate_limit"),
        ({None: 2}, "c.yaml: null: unknown key"),
        ({"a b\nc": 2}, 'c.yaml: "a b\\x0ac": unknown key'),
    ],
)
def test_bad_top_level(data: object, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "c.yaml", environ={})
    assert str(info.value).startswith(expected)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- YAML lines

BAD_YAML: list[tuple[str, str, str]] = [
    # (replace in MINIMAL_YAML, by, expected message after "c.yaml: ")
    (
        "server: imap.a.example:993",
        "server: imap.example.com",
        'src.server (line 2): "imap.example.com" has no port; expected host:port, e.g. imap.example.com:993',
    ),
    (
        "  pass: secret\n",
        "  passs: secret\n",
        (
            "src.passs (line 4): unknown key; known keys: label, server, user, pass, pass_env, "
            "pass_file, pass_cmd, tls, ca_file, timeout_s, oauth2_token_cmd, auth_user, oauth2, compress (did you mean pass?)"
        ),
    ),
    (
        "  pass: secret\n",
        "  pass: 12345\n",
        "src.pass (line 4): expected the password as a string, got a number; put it in quotes",
    ),
    (
        "  pass: secret\n",
        "  pass: yes\n",
        "src.pass (line 4): expected the password as a string, got a boolean; put it in quotes",
    ),
    (
        "  pass: secret\n",
        "  pass: 2024-01-01\n",
        "src.pass (line 4): expected the password as a string, got a date; put it in quotes",
    ),
    (
        "  pass: secret\n",
        "  pass: secret\n  pass_env: MY_PASS\n",
        "src (line 1): pass and pass_env both given; use exactly one",
    ),
    ("  pass: secret\n", "", "src (line 1): no password; give one of pass, pass_env"),
    (
        "  user: b\n",
        "  user: b\n  tls: off\n",
        "dst.tls (line 8): expected one of implicit, starttls, none, got false; write none",
    ),
    (
        "  user: b\n",
        "",
        "dst.user: missing; expected the login name of the destination account",
    ),
    (
        "  user: b\n",
        "  user: b\n  user: c\n",
        "dst.user (line 8): duplicate key, first given on line 7; expected each key once",
    ),
    (
        "  user: b\n",
        "  user: b\n  pass_env: UNSET\n",
        "dst (line 5): pass and pass_env both given",
    ),
    (
        "  pass: secret2\n",
        "  pass: secret2\nmap:\n  - src: INBOX\n    dst: INBOX\n  - src: Sent\n    dest: Sent\n",
        "map[1].dest (line 13): unknown key; known keys: src, dst (did you mean dst?)",
    ),
    (
        "  pass: secret2\n",
        "  pass: secret2\nrate_limit:\n  down_bps: fast\n",
        'rate_limit.down_bps (line 10): expected a whole number of bytes per second >= 0 or a size such as 2M or 500k (k, M, G: powers of 1000; Ki, Mi, Gi: of 1024), got "fast"',
    ),
]


@pytest.mark.parametrize(("old", "new", "expected"), BAD_YAML, ids=[e[2][:40] for e in BAD_YAML])
def test_bad_yaml_with_lines(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in MINIMAL_YAML
    text = MINIMAL_YAML.replace(old, new, 1)
    message = load_error(write(tmp_path, "c.yaml", text))
    assert message.startswith(f"{tmp_path / 'c.yaml'}: {expected}"), message


def test_json_field_errors_carry_lines(tmp_path: Path) -> None:
    data = minimal(rate_limit={"down_bps": "fast"})
    path = write(tmp_path, "config.json", json.dumps(data, indent=2))
    message = load_error(path)
    assert message == (
        f"{path}: rate_limit.down_bps (line 13): expected a whole number of bytes per second "
        '>= 0 or a size such as 2M or 500k (k, M, G: powers of 1000; Ki, Mi, Gi: of 1024), got "fast"'
    )


def test_json_missing_field_has_no_line(tmp_path: Path) -> None:
    path = write(tmp_path, "config.json", json.dumps(minimal(dst__user=DELETE), indent=2))
    assert load_error(path) == (
        f"{path}: dst.user: missing; expected the login name of the destination account"
    )


def test_json_duplicate_key(tmp_path: Path) -> None:
    text = '{"src": {"server": "h:993", "user": "a", "pass": "secret", "pass": "hunter2"}}'
    message = load_error(write(tmp_path, "c.json", text))
    assert "src.pass (line 1): duplicate key" in message


def test_valid_json_is_read_without_the_yaml_parser(tmp_path: Path) -> None:
    # Key lines of a JSON file come from the YAML composer, only once a message needs one:
    # a valid config costs no YAML import (~10 ms of every run), an invalid one still
    # names its line (test_json_field_errors_carry_lines).
    path = write(tmp_path, "config.json", json.dumps(minimal(), indent=2))
    script = (
        "import sys; from fastsync.settings.config import load_config; "
        f"config = load_config({str(path)!r}); "
        "print(config.src.user, 'yaml' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.split() == [minimal()["src"]["user"], "False"]


# --------------------------------------------------------------------------- syntax, files


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        (
            "c.yaml",
            'src:\n  server: a:1\n  pass: "secret\n',
            (
                r"c\.yaml \(line 4, column 1\): not valid YAML: while scanning a quoted scalar, "
                r"found unexpected end of stream$"
            ),
        ),
        (
            "c.yaml",
            "src:\n  server: a:1\n   user: x\n",
            r"c\.yaml \(line 3, column 8\): not valid YAML: mapping values are not allowed here$",
        ),
        (
            "c.yaml",
            "src: !!python/object:os.system secret\n",
            r"c\.yaml \(line 1, column 6\): not valid YAML: .*constructor",
        ),
        ("c.yaml", "a: 1\n---\nb: 2\n", r"c\.yaml \(line 2, column 1\): not valid YAML: "),
        (
            "c.json",
            '{\n  "src": {\n    "pass": "secret",\n  }\n}\n',
            r"c\.json \(line 4, column 3\): not valid JSON: Expecting property name",
        ),
        ("c.json", "", r"c\.json \(line 1, column 1\): not valid JSON: Expecting value$"),
        ("c.json", "[" * 100_000, r"c\.json: not valid JSON: nested too deeply$"),
        ("c.yaml", "", r"c\.yaml: the file is empty; expected a mapping"),
        ("c.yaml", "- a\n- b\n", r"c\.yaml: the top level is a list; expected a mapping"),
        ("c.json", '"x"', r"c\.json: the top level is a string; expected a mapping"),
    ],
)
def test_syntax_errors(tmp_path: Path, name: str, text: str, expected: str) -> None:
    message = load_error(write(tmp_path, name, text))
    assert message.startswith(str(tmp_path))
    assert re.search(expected, message), message


def test_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_error("config.json") == (
        "config.json: cannot read: No such file or directory; pass -c PATH or set FASTSYNC_CONFIG"
    )


def test_unreadable_directory(tmp_path: Path) -> None:
    (tmp_path / "dir.yaml").mkdir()
    message = load_error(tmp_path / "dir.yaml")
    assert message.endswith(": cannot read: Is a directory; expected a readable file")


@pytest.mark.parametrize("name", ["config.toml", "config", "config.yaml.bak"])
def test_wrong_extension(tmp_path: Path, name: str) -> None:
    message = load_error(write(tmp_path, name, MINIMAL_YAML))
    assert "unsupported file type" in message
    assert "expected a .json, .yml, .yaml file" in message


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(b"src:\n  pass: \xff\n")
    assert load_error(path).endswith(
        ": cannot read: not UTF-8 text (byte 13); expected a UTF-8 encoded file"
    )


def test_utf8_bom_accepted(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(minimal()).encode())
    assert load_config(path, environ={}).src.user == "a"


def test_yaml_anchors_and_merge_keys(tmp_path: Path) -> None:
    # Merged keys have no line of their own; they must not count as duplicates either.
    text = textwrap.dedent(
        """\
        src: &side
          server: imap.example:993
          user: a
          pass: secret
        dst:
          <<: *side
          user: b
        """
    )
    config = load_config(write(tmp_path, "c.yaml", text), environ={})
    assert (config.dst.host, config.dst.user, config.dst.password) == (
        "imap.example",
        "b",
        "secret",
    )


def test_yaml_billion_laughs_is_fast(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 30):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    message = load_error(write(tmp_path, "c.yaml", "\n".join(lines) + "\n"))
    assert "a0 (line 1): unknown key" in message


# --------------------------------------------------------------------------- property

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["h:993", "[::1]:143", "x", "imap.a:0", "implicit", "none", "MY_PASS"])
)
KEYS = st.sampled_from(
    [
        "src",
        "dst",
        "map",
        "rate_limit",
        "server",
        "user",
        "pass",
        "pass_env",
        "pass_file",
        "pass_cmd",
        "tls",
        "ca_file",
        "timeout_s",
        "label",
        "down_bps",
        "up_bps",
        "max_connections",
    ]
) | st.text(max_size=8)
JSONISH = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=6),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=JSONISH
    | st.fixed_dictionaries(
        {"src": JSONISH, "dst": JSONISH}, optional={"map": JSONISH, "rate_limit": JSONISH}
    )
)
def test_parse_config_only_raises_config_error(data: object) -> None:
    fake = mock.Mock(return_value=mock.Mock(returncode=0, stdout=b"pw\n"))
    # pass_cmd strings are arbitrary text here: never hand them to a real shell.
    with mock.patch("subprocess.run", fake):
        try:
            result = parse_config(data, "nowhere/c.yaml", environ={"MY_PASS": "pw"})
        except ConfigError as exc:
            assert "\n" not in str(exc)
            return
    assert isinstance(result, Config)


FIELDS = st.sampled_from(
    [
        ("src", "server"),
        ("src", "user"),
        ("src", "pass"),
        ("src", "label"),
        ("src", "tls"),
        ("src", "timeout_s"),
        ("src", "pass_env"),
        ("src", "pass_file"),
        ("src", "pass_cmd"),
        ("dst", "ca_file"),
        ("rate_limit", "down_bps"),
        ("rate_limit", "max_connections"),
        ("map", "src"),
    ]
)


@settings(max_examples=300, deadline=None)
@given(field=FIELDS, value=JSONISH)
def test_one_bad_field_only_raises_config_error(field: tuple[str, str], value: object) -> None:
    # Starting from a valid config reaches the deep checks that random dicts rarely get to.
    data = minimal(rate_limit={}, map=[{"src": "INBOX", "dst": "INBOX"}])
    parent, key = field
    target = data["map"][0] if parent == "map" else data[parent]
    target[key] = value
    fake = mock.Mock(return_value=mock.Mock(returncode=0, stdout=b"pw\n"))
    with mock.patch("subprocess.run", fake):
        try:
            result = parse_config(data, "nowhere/c.yaml", environ={"MY_PASS": "pw"})
        except ConfigError as exc:
            message = str(exc)
            assert "\n" not in message
            assert "secret" not in message
            return
    assert isinstance(result, Config)
