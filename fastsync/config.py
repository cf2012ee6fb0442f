"""Load and validate the configuration file: two IMAP accounts, a folder map and rate limits.

The file is JSON (``.json``) or YAML (``.yml``/``.yaml``) and uses the keys of the Go tool
imapsync-go, so its users' files keep working; fastsync adds a few optional per-side keys
(``tls``, ``ca_file``, ``timeout_s``, the ``pass_env``/``pass_file``/``pass_cmd``
password sources and ``oauth2_token_cmd`` for OAuth2).  :func:`load_config` returns one
frozen :class:`Config` whose passwords are already resolved, or raises
:class:`~fastsync.errors.ConfigError` with a single line::

    <file>: <field path>[ (line N)]: <what is wrong>; <what is expected>

Messages never contain a password (nor the text of a ``pass_cmd``, which may embed one) and
never a traceback.  Validation happens in two phases: everything is checked first and only
then are password sources resolved, so a broken file never runs a ``pass_cmd``.  An
``oauth2_token_cmd`` is not run here at all: access tokens expire within the hour, so
``session.py`` runs the command for each connection it opens (:func:`run_secret_cmd`).

Secrets stay out of child processes: a ``pass_cmd`` runs without the variables named by
``pass_env``, and :func:`load_config` removes those variables from the process environment
once read, so workers, the multiprocessing forkserver and token commands never inherit
them.  :func:`warnings_for` lists what is allowed but unsafe (``tls: none``, a password in
a file others can read), for the command line to print once per run.
"""

from __future__ import annotations

import datetime
import difflib
import ipaddress
import json
import math
import os
import re
import shlex
import stat
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from fastsync.errors import ConfigError

__all__ = [
    "EXTENSIONS",
    "OAUTH2_KEY",
    "PASS_CMD_TIMEOUT_S",
    "TLS_MODES",
    "Account",
    "Config",
    "MapEntry",
    "RateLimit",
    "SecretCommandError",
    "load_config",
    "parse_config",
    "run_secret_cmd",
    "warnings_for",
]

TLS_MODES = ("implicit", "starttls", "none")
EXTENSIONS = (".json", ".yml", ".yaml")
PASS_CMD_TIMEOUT_S = 60.0
DEFAULT_TIMEOUT_S = 60.0
IMAPS_PORT = 993

TOP_KEYS = ("src", "dst", "map", "rate_limit")
SIDE_KEYS = (
    "label",
    "server",
    "user",
    "pass",
    "pass_env",
    "pass_file",
    "pass_cmd",
    "tls",
    "ca_file",
    "timeout_s",
    "oauth2_token_cmd",
)
PASS_KEYS = ("pass", "pass_env", "pass_file", "pass_cmd")
# OAuth2 (XOAUTH2 / OAUTHBEARER, RFC 7628) replaces the password: a side has exactly one
# of PASS_KEYS or this key.
OAUTH2_KEY = "oauth2_token_cmd"
CREDENTIAL_KEYS = (*PASS_KEYS, OAUTH2_KEY)
MAP_KEYS = ("src", "dst")
RATE_KEYS = ("down_bps", "up_bps", "max_connections")

SIDE_NAMES = {"src": "source", "dst": "destination"}

# Keys people bring from other tools; difflib alone would not connect "password" to "pass"
# reliably, and "host"/"port" to "server" not at all.
ALIASES = {
    "password": "pass",
    "passwd": "pass",
    "host": "server",
    "hostname": "server",
    "port": "server",
    "username": "user",
    "login": "user",
    "name": "label",
    "timeout": "timeout_s",
    "ssl": "tls",
    "source": "src",
    "destination": "dst",
    "mapping": "map",
    "folders": "map",
    "ratelimit": "rate_limit",
}


@dataclass(frozen=True)
class Account:
    """One side of the sync, fully resolved: ``password`` is the secret itself.

    ``password`` is excluded from ``repr`` (and so from ``str``) so that logging an account
    or a config can never leak it.  An OAuth2 side has an empty ``password`` and its
    ``oauth2_token_cmd`` (hidden from ``repr`` too: a command line may embed a client
    secret), run in ``workdir`` (the config file's folder) for each connection.
    ``credential_key`` is the config key the credential came from, for messages.
    """

    side: str  # "src" or "dst": the config key
    label: str
    host: str
    port: int
    user: str
    password: str = field(repr=False)
    tls: str  # one of TLS_MODES
    ca_file: str | None  # absolute path or None (use the system's trust store)
    timeout_s: float
    credential_key: str = "pass"
    oauth2_token_cmd: str | None = field(default=None, repr=False)
    workdir: str | None = field(default=None, compare=False)

    @property
    def server(self) -> str:
        """``host:port``, with an IPv6 host in brackets (``[::1]:993``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class MapEntry:
    """Copy the source folder ``src`` into the destination folder ``dst``."""

    src: str
    dst: str


@dataclass(frozen=True)
class RateLimit:
    """Throughput and connection caps; 0 means unlimited."""

    down_bps: int = 0
    up_bps: int = 0
    max_connections: int = 0  # per side


@dataclass(frozen=True)
class Config:
    """The whole validated configuration; ``path`` is the absolute path of the file."""

    path: str
    src: Account
    dst: Account
    map: tuple[MapEntry, ...]
    rate_limit: RateLimit


# --------------------------------------------------------------------------- rendering


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _quote(text: str, limit: int = 60) -> str:
    """Quote a string for a one-line message: long text is cut, unprintables escaped."""
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return '"' + _printable(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'


def _printable(text: str) -> str:
    """Escape every unprintable character (not just \\n): U+2028 and friends break lines too."""
    return "".join(
        ch
        if ch.isprintable()
        else (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        for ch in text
    )


def _kind(value: object) -> str:
    """Describe a value's type without revealing it (used for secrets and containers)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (datetime.date, datetime.datetime)):
        return "a date"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, (set, frozenset)):
        return "a set"
    if isinstance(value, (bytes, bytearray)):
        return "binary data"
    return "a " + type(value).__name__


def _show(value: object) -> str:
    """Render a (non-secret) value for a message: scalars verbatim, containers by kind."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _quote(repr(value), 40)[1:-1]
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    return _kind(value)


def _key_text(key: object) -> str:
    if isinstance(key, str) and _PLAIN_KEY.fullmatch(key):
        return key
    return _show(key)


def _join(path: str, key: object) -> str:
    part = _key_text(key)
    return f"{path}.{part}" if path else part


def _is_number(value: object) -> bool:
    # bool is a subclass of int, but `timeout_s: true` is a mistake, not 1 second.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class _Context:
    """What every error message needs: the file name as given and key-path line numbers."""

    display: str
    lines: Mapping[str, int]

    def error(self, path: str, problem: str) -> ConfigError:
        where = self.display
        if path:
            where += f": {path}"
            line = self.lines.get(path)
            if line is not None:
                where += f" (line {line})"
        return ConfigError(f"{where}: {problem}")

    def fail(self, path: str, problem: str) -> NoReturn:
        raise self.error(path, problem)


def _check_keys(ctx: _Context, path: str, data: Mapping[Any, Any], known: tuple[str, ...]) -> None:
    for key in data:
        if isinstance(key, str) and key in known:
            continue
        problem = f"unknown key; known keys: {', '.join(known)}"
        hint = _suggest(key, known)
        if hint:
            problem += f" (did you mean {hint}?)"
        ctx.fail(_join(path, key), problem)


def _suggest(key: object, known: tuple[str, ...]) -> str | None:
    if not isinstance(key, str):
        return None
    lowered = key.strip().lower().replace("-", "_").replace(" ", "_")
    if lowered in known:
        return lowered
    alias = ALIASES.get(lowered)
    if alias in known:
        return alias
    close = difflib.get_close_matches(lowered, known, n=1, cutoff=0.6)
    return close[0] if close else None


# --------------------------------------------------------------------------- field checks


def _string(
    ctx: _Context,
    path: str,
    value: object,
    expected: str,
    *,
    secret: bool = False,
) -> str:
    """A non-empty string, or an error that never echoes a secret value."""
    if isinstance(value, str):
        # A password may legitimately be spaces; anything else that is blank is a mistake.
        if not (value if secret else value.strip()):
            ctx.fail(path, f"empty; expected {expected}")
        return value
    if value is None:
        ctx.fail(path, f"empty; expected {expected}")
    got = _kind(value) if secret else _show(value)
    problem = f"expected {expected}, got {got}"
    if isinstance(value, (bool, int, float, datetime.date)):
        # YAML turns unquoted 12345, yes/no, 2024-01-01 into non-strings behind the user's back.
        problem += "; put it in quotes"
    ctx.fail(path, problem)


def _mapping(ctx: _Context, path: str, value: object, expected: str) -> Mapping[Any, Any]:
    if isinstance(value, Mapping):
        return value
    ctx.fail(path, f"expected {expected}, got {_show(value)}")


def _whole(ctx: _Context, path: str, value: object, expected: str) -> int:
    """A whole number >= 0; JSON's 1e6 (a float) counts when it is integral."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    ctx.fail(path, f"expected {expected}, got {_show(value)}")


# --------------------------------------------------------------------------- server


def _parse_server(ctx: _Context, path: str, value: object) -> tuple[str, int]:
    example = "expected host:port, e.g. imap.example.com:993"
    text = _string(ctx, path, value, "host:port, e.g. imap.example.com:993").strip()
    shown = _quote(text)
    if "://" in text:
        rest = text.split("://", 1)[1].rstrip("/")
        ctx.fail(path, f"{shown} has a URL scheme; expected host:port without it, e.g. {rest}")
    if any(ch.isspace() or ch in "/@?#" for ch in text):
        ctx.fail(path, f"{shown} is not a host name; {example}")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            ctx.fail(path, f"{shown} has no closing ]; expected [address]:port, e.g. [::1]:993")
        host, rest = text[1:end], text[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            ctx.fail(path, f"{shown} is not an IPv6 address in brackets; {example}")
        if not rest:
            ctx.fail(path, f"{shown} has no port; expected [address]:port, e.g. [{host}]:993")
        if not rest.startswith(":"):
            ctx.fail(path, f"{shown} has text after ]; expected [address]:port, e.g. [{host}]:993")
        port_text = rest[1:]
    elif text.count(":") > 1:
        # An unbracketed IPv6 address: the port would be ambiguous.
        host = text
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            host = text.rsplit(":", 1)[0]
        ctx.fail(
            path, f"{shown} is ambiguous; expected an IPv6 address in brackets, e.g. [{host}]:993"
        )
    elif ":" in text:
        host, port_text = text.split(":", 1)
        if not host:
            ctx.fail(path, f"{shown} has no host; {example}")
    else:
        ctx.fail(path, f"{shown} has no port; expected host:port, e.g. {text}:{IMAPS_PORT}")
    if not re.fullmatch(r"[0-9]{1,5}", port_text):
        ctx.fail(
            path,
            f"{shown} has no valid port; expected a port number 1..65535, e.g. {_host_for_example(host)}:993",
        )
    port = int(port_text)
    if not 1 <= port <= 65535:
        ctx.fail(path, f"port {port} is out of range; expected a port number 1..65535")
    return host, port


def _host_for_example(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# --------------------------------------------------------------------------- sides


@dataclass(frozen=True)
class _PendingSide:
    """A side that passed validation; its password source is resolved in the second phase."""

    side: str
    label: str
    host: str
    port: int
    user: str
    tls: str
    ca_file: str | None
    timeout_s: float
    pass_key: str
    pass_value: str  # the password itself, or the env name / file path / command


def _resolve_path(base_dir: str, value: str) -> str:
    return os.path.abspath(os.path.join(base_dir, os.path.expanduser(value)))


def _readable_file_problem(full: str, shown: str) -> str | None:
    """Why ``full`` cannot be read as a regular file, or None when it can."""
    if "\0" in full:
        return f"{shown} is not a file name (it holds a NUL character)"
    try:
        info = os.stat(full)
    except OSError as exc:
        return f"cannot read {shown}: {exc.strerror or 'error'}"
    # Opening a FIFO or a device could block forever or read without end.
    if not stat.S_ISREG(info.st_mode):
        return f"{shown} is not a regular file"
    try:
        with open(full, "rb"):
            pass
    except OSError as exc:
        return f"cannot read {shown}: {exc.strerror or 'error'}"
    return None


def _parse_side(ctx: _Context, side: str, data: Mapping[Any, Any], base_dir: str) -> _PendingSide:
    name = SIDE_NAMES[side]
    if side not in data or data[side] is None:
        ctx.fail(
            side, f"missing; expected the {name} account: a mapping with server, user and pass"
        )
    body = _mapping(
        ctx, side, data[side], f"the {name} account as a mapping with server, user and pass"
    )
    _check_keys(ctx, side, body, SIDE_KEYS)

    def at(key: str) -> str:
        return f"{side}.{key}"

    label = f"{name}"
    if body.get("label") is not None:
        label = _string(
            ctx, at("label"), body["label"], 'a short name for the account, e.g. "Old provider"'
        )

    if body.get("server") is None:
        ctx.fail(at("server"), "missing; expected host:port, e.g. imap.example.com:993")
    host, port = _parse_server(ctx, at("server"), body["server"])

    user_expected = f"the login name of the {name} account"
    if body.get("user") is None:
        ctx.fail(at("user"), f"missing; expected {user_expected}")
    user = _string(ctx, at("user"), body["user"], user_expected)

    given = [key for key in CREDENTIAL_KEYS if key in body]
    if len(given) > 1:
        listed = (
            " and ".join(given) if len(given) == 2 else ", ".join(given[:-1]) + " and " + given[-1]
        )
        both = "both" if len(given) == 2 else "all"
        ctx.fail(side, f"{listed} {both} given; use exactly one")
    if not given:
        ctx.fail(
            side, f"no password; give one of {', '.join(PASS_KEYS)}, or {OAUTH2_KEY} for OAuth2"
        )
    pass_key = given[0]
    pass_expected = {
        "pass": "the password as a string",
        "pass_env": "the name of an environment variable holding the password",
        "pass_file": "the path of a file whose first line is the password",
        "pass_cmd": "a shell command that prints the password",
        OAUTH2_KEY: "a shell command that prints an OAuth2 access token",
    }[pass_key]
    # Command text may embed the password (`echo hunter2`) or an OAuth2 client secret, so
    # it is as secret as pass.
    pass_value = _string(
        ctx,
        at(pass_key),
        body[pass_key],
        pass_expected,
        secret=pass_key in ("pass", "pass_cmd", OAUTH2_KEY),
    )
    if pass_key == "pass_env" and ("=" in pass_value or "\0" in pass_value):
        ctx.fail(
            at(pass_key), f"{_quote(pass_value)} is not a variable name; expected {pass_expected}"
        )

    tls_value = body.get("tls")
    if tls_value is None:
        tls = "implicit" if port == IMAPS_PORT else "starttls"
    elif isinstance(tls_value, str) and tls_value.strip().lower() in TLS_MODES:
        tls = tls_value.strip().lower()
    else:
        problem = f"expected one of {', '.join(TLS_MODES)}, got {_show(tls_value)}"
        if tls_value is False:
            # YAML reads `tls: no` / `tls: off` as false.
            problem += "; write none to connect without TLS"
        ctx.fail(at("tls"), problem)

    ca_file: str | None = None
    if body.get("ca_file") is not None:
        ca_expected = "a PEM file of trusted CA certificates, relative to the config file's folder"
        ca_text = _string(ctx, at("ca_file"), body["ca_file"], ca_expected)
        ca_file = _resolve_path(base_dir, ca_text)
        unreadable = _readable_file_problem(ca_file, _quote(ca_text))
        if unreadable:
            ctx.fail(at("ca_file"), f"{unreadable}; expected {ca_expected}")

    timeout_s = DEFAULT_TIMEOUT_S
    if body.get("timeout_s") is not None:
        raw = body["timeout_s"]
        if not (_is_number(raw) and math.isfinite(raw) and raw > 0):
            ctx.fail(at("timeout_s"), f"expected a number of seconds > 0, got {_show(raw)}")
        timeout_s = float(raw)

    return _PendingSide(
        side=side,
        label=label,
        host=host,
        port=port,
        user=user,
        tls=tls,
        ca_file=ca_file,
        timeout_s=timeout_s,
        pass_key=pass_key,
        pass_value=pass_value,
    )


def _resolve_password(
    ctx: _Context,
    pending: _PendingSide,
    base_dir: str,
    environ: Mapping[str, str],
    child_env: Mapping[str, str] | None = None,
) -> str:
    """The password of a side; '' for OAuth2, whose token is fetched per connection."""
    path = f"{pending.side}.{pending.pass_key}"
    key, value = pending.pass_key, pending.pass_value
    if key == "pass":
        return value
    if key == OAUTH2_KEY:
        return ""
    if key == "pass_env":
        if value not in environ:
            ctx.fail(
                path, f"environment variable {value} is not set; expected it to hold the password"
            )
        if not environ[value]:
            ctx.fail(
                path, f"environment variable {value} is empty; expected it to hold the password"
            )
        return environ[value]
    if key == "pass_file":
        return _read_pass_file(ctx, path, base_dir, value)
    return _run_pass_cmd(ctx, path, value, base_dir, child_env)


def _read_pass_file(ctx: _Context, path: str, base_dir: str, value: str) -> str:
    expected = (
        "a readable file whose first line is the password, relative to the config file's folder"
    )
    full = _resolve_path(base_dir, value)
    problem = _readable_file_problem(full, _quote(value))
    if problem:
        ctx.fail(path, f"{problem}; expected {expected}")
    try:
        with open(full, "rb") as handle:
            first = handle.readline(1 << 16)
    except OSError as exc:
        ctx.fail(
            path, f"cannot read {_quote(value)}: {exc.strerror or 'error'}; expected {expected}"
        )
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError:
        ctx.fail(path, f"{_quote(value)} is not UTF-8 text; expected {expected}")
    password = _strip_newline(text)
    if not password:
        ctx.fail(path, f"the first line of {_quote(value)} is empty; expected {expected}")
    return password


def _strip_newline(text: str) -> str:
    if text.endswith("\n"):
        text = text[:-1]
        text = text.removesuffix("\r")
    return text


def _run_pass_cmd(
    ctx: _Context, path: str, command: str, base_dir: str, env: Mapping[str, str] | None
) -> str:
    try:
        return run_secret_cmd(command, base_dir, "the password", env)
    except SecretCommandError as exc:
        ctx.fail(path, exc.problem)


class SecretCommandError(Exception):
    """A ``pass_cmd`` or ``oauth2_token_cmd`` gave no secret; ``problem`` says why.

    ``problem`` never contains the command (it may embed a secret) nor its output.
    """

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


def run_secret_cmd(
    command: str, workdir: str | None, what: str, env: Mapping[str, str] | None = None
) -> str:
    """Run a shell ``command`` that prints ``what`` (a password, a token) and return that line.

    The command runs in ``workdir`` (the config file's folder) with ``env`` (default: this
    process's environment), stdin closed and stderr inherited, so the user sees the
    command's own complaints on the terminal.  Raises :class:`SecretCommandError`.
    """
    expected = f"expected a command that prints {what} and exits with status 0"
    try:
        done = subprocess.run(
            command,
            shell=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            timeout=PASS_CMD_TIMEOUT_S,
            cwd=workdir if workdir and os.path.isdir(workdir) else None,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SecretCommandError(
            f"command did not finish within {PASS_CMD_TIMEOUT_S:g} s; {expected}"
        ) from None
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise SecretCommandError(f"command could not be run: {reason}; {expected}") from None
    if done.returncode < 0:
        raise SecretCommandError(f"command was killed by signal {-done.returncode}; {expected}")
    if done.returncode != 0:
        raise SecretCommandError(f"command failed with exit status {done.returncode}; {expected}")
    try:
        text = done.stdout.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretCommandError(
            f"command printed something that is not UTF-8 text; {expected}"
        ) from None
    secret = _strip_newline(text)
    if not secret:
        raise SecretCommandError(f"command printed nothing; {expected}")
    if "\n" in secret or "\r" in secret:
        raise SecretCommandError(
            f"command printed more than one line; expected only {what} (e.g. pipe it through head -n 1)"
        )
    return secret


# --------------------------------------------------------------------------- map, rate_limit


def _parse_map(ctx: _Context, value: object) -> tuple[MapEntry, ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        ctx.fail("map", f"expected a list of {{src, dst}} folder pairs, got {_show(value)}")
    entries: list[MapEntry] = []
    first_index: dict[str, int] = {}
    for index, item in enumerate(value):
        path = f"map[{index}]"
        body = _mapping(
            ctx,
            path,
            item,
            "a mapping with src and dst folder names, e.g. {src: INBOX, dst: INBOX}",
        )
        _check_keys(ctx, path, body, MAP_KEYS)
        names: dict[str, str] = {}
        for key in MAP_KEYS:
            side = SIDE_NAMES[key]
            if body.get(key) is None:
                ctx.fail(f"{path}.{key}", f"missing; expected the name of a {side} folder")
            names[key] = _string(ctx, f"{path}.{key}", body[key], f"the name of a {side} folder")
        if names["src"] in first_index:
            # Two destinations for one source folder: which one wins would be arbitrary.
            ctx.fail(
                f"{path}.src",
                f"{_quote(names['src'])} is already mapped by map[{first_index[names['src']]}]; "
                "expected each source folder once",
            )
        first_index[names["src"]] = index
        entries.append(MapEntry(src=names["src"], dst=names["dst"]))
    return tuple(entries)


def _parse_rate_limit(ctx: _Context, value: object) -> RateLimit:
    if value is None:
        return RateLimit()
    body = _mapping(ctx, "rate_limit", value, "a mapping with down_bps, up_bps, max_connections")
    _check_keys(ctx, "rate_limit", body, RATE_KEYS)
    expected = {
        "down_bps": "a whole number of bytes per second >= 0",
        "up_bps": "a whole number of bytes per second >= 0",
        "max_connections": "a whole number of connections per side >= 0",
    }
    numbers = {
        key: _whole(ctx, f"rate_limit.{key}", body[key], expected[key])
        for key in RATE_KEYS
        if body.get(key) is not None
    }
    return RateLimit(**numbers)


# --------------------------------------------------------------------------- entry points


def parse_config(
    data: object,
    path: str,
    lines: Mapping[str, int] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Validate already-parsed ``data`` as if it came from the file ``path``.

    ``path`` names the file in messages and anchors relative ``ca_file``/``pass_file``
    paths; ``lines`` maps field paths (``"src.server"``, ``"map[1].dst"``) to 1-based line
    numbers.  Password sources are resolved (env lookups, files, commands) only after the
    whole structure has been checked.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    ctx = _Context(display=_printable(str(path)), lines=lines or {})
    base_dir = os.path.dirname(os.path.abspath(path))

    top_expected = "a mapping with src, dst and optionally map, rate_limit"
    if data is None:
        ctx.fail("", f"the file is empty; expected {top_expected}")
    if not isinstance(data, Mapping):
        ctx.fail("", f"the top level is {_kind(data)}; expected {top_expected}")
    _check_keys(ctx, "", data, TOP_KEYS)

    pending = [_parse_side(ctx, side, data, base_dir) for side in ("src", "dst")]
    folder_map = _parse_map(ctx, data.get("map"))
    rate_limit = _parse_rate_limit(ctx, data.get("rate_limit"))

    # A pass_cmd must not inherit the other side's pass_env password.
    hidden = {p.pass_value for p in pending if p.pass_key == "pass_env"}
    child_env = {k: v for k, v in os.environ.items() if k not in hidden} if hidden else None
    accounts = [
        Account(
            side=p.side,
            label=p.label,
            host=p.host,
            port=p.port,
            user=p.user,
            password=_resolve_password(ctx, p, base_dir, env, child_env),
            tls=p.tls,
            ca_file=p.ca_file,
            timeout_s=p.timeout_s,
            credential_key=p.pass_key,
            oauth2_token_cmd=p.pass_value if p.pass_key == OAUTH2_KEY else None,
            workdir=base_dir,
        )
        for p in pending
    ]
    return Config(
        path=os.path.abspath(path),
        src=accounts[0],
        dst=accounts[1],
        map=folder_map,
        rate_limit=rate_limit,
    )


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Config:
    """Read, parse and validate the config file at ``path``; raise ConfigError if anything is off.

    ``environ`` (default ``os.environ``) is where ``pass_env`` names are looked up.  With
    the default, the variables named by ``pass_env`` are removed from ``os.environ`` once
    read, so that no child process (workers, the forkserver, token commands) inherits a
    password.
    """
    name = os.fspath(path)
    shown = _printable(name)  # one line even for a file name with a newline in it
    extension = os.path.splitext(name)[1].lower()
    if extension not in EXTENSIONS:
        got = f'"{extension}"' if extension else "no extension"
        raise ConfigError(
            f"{shown}: unsupported file type ({got}); expected a {', '.join(EXTENSIONS)} file"
        )
    try:
        with open(name, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{shown}: cannot read: {exc.strerror}; pass -c PATH or set FASTSYNC_CONFIG"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"{shown}: cannot read: {exc.strerror or type(exc).__name__}; expected a readable file"
        ) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{shown}: cannot read: not UTF-8 text (byte {exc.start}); expected a UTF-8 encoded file"
        ) from None

    parse: Callable[[str, str], tuple[object, dict[str, int]]]
    parse = _parse_json if extension == ".json" else _parse_yaml
    data, lines = parse(text, shown)
    config = parse_config(data, name, lines=lines, environ=environ)
    if environ is None:
        for side in ("src", "dst"):
            # parse_config has checked the structure: a pass_env value is a variable name.
            variable = data[side].get("pass_env")  # type: ignore[index]
            if isinstance(variable, str):
                os.environ.pop(variable, None)
    return config


def warnings_for(config: Config) -> list[str]:
    """What the config allows but is unsafe, one line each, to print once per run.

    A side with ``tls: none`` sends its password (or token) and all mail in clear text;
    a config file holding a plain ``pass`` must not be readable by group or others.
    """
    found: list[str] = []
    for account in (config.src, config.dst):
        if account.tls == "none":
            secret = "access token" if account.oauth2_token_cmd else "password"
            found.append(
                f"{account.label} ({account.server}): {account.side}.tls is none: the {secret} "
                f"and every message cross the network unencrypted; use starttls or implicit"
            )
    if any(account.credential_key == "pass" for account in (config.src, config.dst)):
        exposure = _exposure(config.path)
        if exposure:
            shown = _display_path(config.path)
            found.append(
                f"{shown} is readable by {exposure} and holds a password; "
                f"run chmod 600 {shlex.quote(shown)}"
            )
    return found


def _exposure(path: str) -> str:
    """Who besides the owner can read ``path``: 'others', 'its group', ... or ''."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return ""
    group, others = bool(mode & stat.S_IRGRP), bool(mode & stat.S_IROTH)
    if group and others:
        return "its group and others"
    return "others" if others else "its group" if group else ""


def _display_path(path: str) -> str:
    """``path`` relative to the working directory when it lies below it, else absolute."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return _printable(path)
    return _printable(path if relative.startswith(os.pardir) else relative)


# --------------------------------------------------------------------------- parsing


def _parse_yaml(text: str, shown: str) -> tuple[object, dict[str, int]]:
    # Imported here: worker processes import this module but never parse a file.
    import yaml  # type: ignore[import-untyped]  # PyYAML ships no type stubs

    loader = yaml.SafeLoader(text)
    try:
        # One parse gives both the node tree (for line numbers) and the data built from it.
        # Lines are taken before construction, which splices merged (<<) keys into the tree.
        node = loader.get_single_node()
        lines = _node_lines(shown, node) if node is not None else {}
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(shown, "YAML", exc) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{shown}: not valid YAML: {_oneline(str(exc))}") from None
    except RecursionError:
        raise ConfigError(f"{shown}: not valid YAML: nested too deeply") from None
    finally:
        loader.dispose()
    return data, lines


def _parse_json(text: str, shown: str) -> tuple[object, dict[str, int]]:
    # Imported here: worker processes import this module but never parse a file.
    import yaml

    duplicates: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in items:
            if key in result:
                duplicates.append(key)
            result[key] = value
        return result

    # The stdlib parser (not orjson) because its errors carry line and column.
    try:
        data = json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{shown} (line {exc.lineno}, column {exc.colno}): not valid JSON: {_oneline(exc.msg)}"
        ) from None
    except RecursionError:
        raise ConfigError(f"{shown}: not valid JSON: nested too deeply") from None

    # JSON is (nearly always) YAML, so the YAML composer gives line numbers for free; when
    # it disagrees with the JSON parser, messages simply go without line numbers.
    lines: dict[str, int] = {}
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except (yaml.YAMLError, RecursionError):
        node = None
    finally:
        loader.dispose()
    if node is not None:
        lines = _node_lines(shown, node)
    if duplicates:
        raise ConfigError(
            f"{shown}: key {_show(duplicates[0])} appears twice in one object; expected each key once"
        )
    return data, lines


def _syntax_error(shown: str, kind: str, exc: Any) -> ConfigError:
    mark = exc.problem_mark or exc.context_mark
    # exc.problem is the parser's own words; str(exc) would quote the offending source line,
    # which could be a password.
    parts = [part for part in (exc.context, exc.problem) if part]
    problem = _oneline(", ".join(parts) or "syntax error")
    if mark is None:
        return ConfigError(f"{shown}: not valid {kind}: {problem}")
    return ConfigError(
        f"{shown} (line {mark.line + 1}, column {mark.column + 1}): not valid {kind}: {problem}"
    )


def _oneline(text: str) -> str:
    return " ".join(text.split())


def _node_lines(shown: str, root: Any) -> dict[str, int]:
    """Map each key path to the 1-based line of its key; raise on a duplicate key."""
    # Imported here: worker processes import this module but never parse a file.
    import yaml

    lines: dict[str, int] = {}
    seen: set[int] = set()
    duplicate: tuple[str, int, int] | None = None

    def walk(node: Any, path: str) -> None:
        nonlocal duplicate
        # Aliases share nodes: visiting each once keeps "billion laughs" files linear.
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for key, value in node.value:
                if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                    continue
                child = _join(path, key.value)
                line = key.start_mark.line + 1
                if key.value in first:
                    if duplicate is None:
                        duplicate = (child, line, first[key.value])
                else:
                    first[key.value] = line
                    lines.setdefault(child, line)
                walk(value, child)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                child = f"{path}[{index}]"
                lines.setdefault(child, item.start_mark.line + 1)
                walk(item, child)

    try:
        walk(root, "")
    except RecursionError:
        pass  # line numbers are a nicety; validation will still run
    if duplicate is not None:
        child, line, first_line = duplicate
        raise ConfigError(
            f"{shown}: {child} (line {line}): duplicate key, first given on line {first_line}; "
            "expected each key once"
        )
    return lines
