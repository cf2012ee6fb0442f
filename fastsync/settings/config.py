"""Load and validate the configuration file: two IMAP accounts, a folder map, folder filters
and rate limits.

Settings layer: imports `errors`, `configfile` and `credentials`; every layer below reads
the `Config` it returns.

The file is JSON (``.json``) or YAML (``.yml``/``.yaml``) and uses the keys of the Go tool
imapsync-go, so its users' files keep working; fastsync adds a few optional per-side keys
(``tls``, ``ca_file``, ``timeout_s``, the ``pass_env``/``pass_file``/``pass_cmd``
password sources, ``oauth2_token_cmd`` or an ``oauth2`` identity for OAuth2 and ``auth_user``
for an administrator's login, whose password the password source then gives).  :func:`load_config` returns one
frozen :class:`Config` whose passwords are already resolved, or raises
:class:`~fastsync.records.errors.ConfigError` with a single line::

    <file>: <field path>[ (line N)]: <what is wrong>; <what is expected>

Messages never contain a password (nor the text of a ``pass_cmd``, which may embed one) and
never a traceback.  Validation happens in two phases: everything is checked first and only
then are password sources resolved, so a broken file never runs a ``pass_cmd``.  OAuth2
tokens (``oauth2_token_cmd``, an ``oauth2:`` identity) are fetched later, by `tokens.py`.

Secrets stay out of child processes: a ``pass_cmd`` runs without the variables named by
``pass_env``, and :func:`load_config` removes those variables from the process environment
once read, so workers, the multiprocessing forkserver and token commands never inherit
them.  :func:`warnings_for` lists what is allowed but unsafe (``tls: none``, a password in
a file others can read), for the command line to print once per run.

This module is the schema; the password sources are :mod:`fastsync.settings.credentials`'s and the
file syntax (YAML, JSON, line numbers, values rendered for messages) is
:mod:`fastsync.settings.configfile`'s.  The command line calls :func:`load_config` and
:func:`warnings_for`; any module may use the records :class:`Config` and :class:`Account`.
"""

from __future__ import annotations

import datetime
import math
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from fastsync.settings import addresses
from fastsync.settings.configfile import (
    display_path, join_path, kind, printable, quote, read_config_file, show, suggest_key,
)
from fastsync.settings.credentials import (
    CredentialError,
    environ_without,
    file_exposure,
    forget_env_passwords,
    readable_file_problem,
    resolve_password,
    resolve_path,
)
from fastsync.records.errors import ConfigError
from fastsync.settings.ratelimit import RATE_KEYS, RateLimit, parse_rate_limit
from fastsync.settings.values import regex_problem

if TYPE_CHECKING:  # an identity is read where the config is (`_parse_identity`), never in a worker
    from fastsync.settings.oauth2 import OAuth2Identity

__all__ = [
    "OAUTH2_KEY",
    "TLS_MODES",
    "Account",
    "Config",
    "MapEntry",
    "RateLimit",
    "load_config",
    "parse_config",
    "warnings_for",
    "with_sides",
]

TLS_MODES = ("implicit", "starttls", "none")
DEFAULT_TIMEOUT_S = 60.0
IMAPS_PORT = 993

TOP_KEYS = ("src", "dst", "map", "include", "exclude", "rate_limit")
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
    "auth_user",
    "oauth2",
    "compress",
)
# COMPRESS=DEFLATE (RFC 4978): "auto" uses it where the server announces it, "no" never.
COMPRESS_MODES = ("auto", "no")
PASS_KEYS = ("pass", "pass_env", "pass_file", "pass_cmd")
# OAuth2 (XOAUTH2 / OAUTHBEARER, RFC 7628) replaces the password: a side has exactly one
# of PASS_KEYS or this key.
OAUTH2_KEY = "oauth2_token_cmd"
IDENTITY_KEY = "oauth2"  # an administrator identity (settings/oauth2.py): a token per mailbox
CREDENTIAL_KEYS = (*PASS_KEYS, OAUTH2_KEY, IDENTITY_KEY)
CREDENTIAL_EXPECTED = {
    "pass": "the password as a string",
    "pass_env": "the name of an environment variable holding the password",
    "pass_file": "the path of a file whose first line is the password",
    "pass_cmd": "a shell command that prints the password",
    OAUTH2_KEY: "a shell command that prints an OAuth2 access token",
    IDENTITY_KEY: "an OAuth2 identity: google_service_account or microsoft",
}
MAP_KEYS = ("src", "dst")
SIDE_NAMES = {"src": "source", "dst": "destination"}

@dataclass(frozen=True)
class Account:
    """One side of the sync, fully resolved: ``password`` is the secret itself.

    ``password`` is excluded from ``repr`` (and so from ``str``) so that logging an account
    or a config can never leak it.  An OAuth2 side has an empty ``password`` and its
    ``oauth2_token_cmd`` (hidden from ``repr``: it may embed a client secret; run in
    ``workdir``, the config file's folder) or ``oauth2`` identity.  ``credential_key`` is the
    key the credential came from.  With ``auth_user``, ``password`` is that administrator's.
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
    auth_user: str | None = None
    oauth2: OAuth2Identity | None = field(default=None, repr=False)
    compress: str = "auto"  # one of COMPRESS_MODES

    @property
    def server(self) -> str:
        """``host:port``, with an IPv6 host in brackets (``[::1]:993``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def where(self) -> str:
        """How a message names this account: ``label (host:port)``."""
        return f"{self.label} ({self.server})"


@dataclass(frozen=True)
class MapEntry:
    """Copy the source folder ``src`` into the destination folder ``dst``."""

    src: str
    dst: str


@dataclass(frozen=True)
class Config:
    """The whole validated configuration; ``path`` is the absolute path of the file."""

    path: str
    src: Account
    dst: Account
    map: tuple[MapEntry, ...]
    rate_limit: RateLimit
    # Regular expressions on source folder names (see options.FILTER_FLAGS).
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


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
        hint = suggest_key(key, known)
        if hint:
            problem += f" (did you mean {hint}?)"
        ctx.fail(join_path(path, key), problem)


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
    got = kind(value) if secret else show(value)
    problem = f"expected {expected}, got {got}"
    if isinstance(value, (bool, int, float, datetime.date)):
        # YAML turns unquoted 12345, yes/no, 2024-01-01 into non-strings behind the user's back.
        problem += "; put it in quotes"
    ctx.fail(path, problem)


def _mapping(ctx: _Context, path: str, value: object, expected: str) -> Mapping[Any, Any]:
    if isinstance(value, Mapping):
        return value
    ctx.fail(path, f"expected {expected}, got {show(value)}")


def _is_number(value: object) -> bool:
    # bool is a subclass of int, but `timeout_s: true` is a mistake, not 1 second.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --------------------------------------------------------------------------- server


def _parse_server(ctx: _Context, path: str, value: object) -> tuple[str, int]:
    text = _string(ctx, path, value, "host:port, e.g. imap.example.com:993").strip()
    try:
        return addresses.parse_server(text)
    except ValueError as exc:
        ctx.fail(path, str(exc))


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
    auth_user: str | None = None
    identity: OAuth2Identity | None = None
    compress: str = "auto"


def _parse_side(ctx: _Context, side: str, data: Mapping[Any, Any], base_dir: str) -> _PendingSide:
    """Check the account ``side`` (``src`` or ``dst``) of the file, one field after the other."""
    body = _side_body(ctx, side, data)
    label = _parse_label(ctx, side, body)
    if body.get("server") is None:
        ctx.fail(f"{side}.server", "missing; expected host:port, e.g. imap.example.com:993")
    host, port = _parse_server(ctx, f"{side}.server", body["server"])
    user = _parse_user(ctx, side, body)
    pass_key = _credential_key(ctx, side, body)
    pass_value = _parse_credential(ctx, side, body, pass_key) if pass_key != IDENTITY_KEY else ""
    identity = _parse_identity(ctx, side, body, base_dir) if pass_key == IDENTITY_KEY else None
    tls = _parse_tls(ctx, side, body, port)
    ca_file = _parse_ca_file(ctx, side, body, base_dir)
    timeout_s = _parse_timeout(ctx, side, body)
    auth_user = _parse_auth_user(ctx, side, body, pass_key)
    compress = _parse_compress(ctx, side, body)
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
        auth_user=auth_user,
        identity=identity,
        compress=compress,
    )


def _side_body(ctx: _Context, side: str, data: Mapping[Any, Any]) -> Mapping[Any, Any]:
    """The mapping of one account, present and holding only known keys."""
    name = SIDE_NAMES[side]
    if side not in data or data[side] is None:
        ctx.fail(
            side, f"missing; expected the {name} account: a mapping with server, user and pass"
        )
    body = _mapping(
        ctx, side, data[side], f"the {name} account as a mapping with server, user and pass"
    )
    _check_keys(ctx, side, body, SIDE_KEYS)
    return body


def _parse_label(ctx: _Context, side: str, body: Mapping[Any, Any]) -> str:
    """The account's name in messages: ``label`` if given, else "source" or "destination"."""
    if body.get("label") is None:
        return SIDE_NAMES[side]
    return _string(
        ctx, f"{side}.label", body["label"], 'a short name for the account, e.g. "Old provider"'
    )


def _parse_user(ctx: _Context, side: str, body: Mapping[Any, Any]) -> str:
    expected = f"the login name of the {SIDE_NAMES[side]} account"
    if body.get("user") is None:
        ctx.fail(f"{side}.user", f"missing; expected {expected}")
    return _string(ctx, f"{side}.user", body["user"], expected)


def _credential_key(ctx: _Context, side: str, body: Mapping[Any, Any]) -> str:
    """Which one of CREDENTIAL_KEYS the account uses; none or several is an error."""
    given = [key for key in CREDENTIAL_KEYS if key in body]
    if len(given) > 1:
        listed = (
            " and ".join(given) if len(given) == 2 else ", ".join(given[:-1]) + " and " + given[-1]
        )
        both = "both" if len(given) == 2 else "all"
        ctx.fail(side, f"{listed} {both} given; use exactly one")
    if not given and body.get("auth_user") is not None:
        ctx.fail(side, f"no password for the administrator {side}.auth_user; give one of {', '.join(PASS_KEYS)}")
    if not given:
        ctx.fail(side, f"no password; give one of {', '.join(PASS_KEYS)}, or {OAUTH2_KEY} or {IDENTITY_KEY} for OAuth2")
    return given[0]


def _parse_credential(ctx: _Context, side: str, body: Mapping[Any, Any], key: str) -> str:
    """The value of the credential ``key``: a password, variable name, file path or command."""
    expected = CREDENTIAL_EXPECTED[key]
    # Command text may embed the password (`echo hunter2`) or an OAuth2 client secret, so
    # it is as secret as pass.
    value = _string(
        ctx, f"{side}.{key}", body[key], expected, secret=key in ("pass", "pass_cmd", OAUTH2_KEY)
    )
    if key == "pass_env" and ("=" in value or "\0" in value):
        ctx.fail(f"{side}.{key}", f"{quote(value)} is not a variable name; expected {expected}")
    return value


def _parse_auth_user(ctx: _Context, side: str, body: Mapping[Any, Any], pass_key: str) -> str | None:
    """The administrator who logs in to the mailbox ``user``; the password source is then his."""
    path, value = f"{side}.auth_user", body.get("auth_user")
    if value is None:
        return None
    value = _string(ctx, path, value, "the login name of an administrator who may open the mailbox")
    if pass_key not in PASS_KEYS:
        ctx.fail(path, f"logs in with the administrator's password; give it with one of {', '.join(PASS_KEYS)} "
                       f"instead of {pass_key}")
    return value


def _parse_identity(ctx: _Context, side: str, body: Mapping[Any, Any], base_dir: str) -> OAuth2Identity:
    from fastsync.settings.oauth2 import IdentityProblem, parse_identity

    try:
        return parse_identity(body[IDENTITY_KEY], side, base_dir)
    except IdentityProblem as exc:
        ctx.fail(exc.path, exc.problem)


def _parse_tls(ctx: _Context, side: str, body: Mapping[Any, Any], port: int) -> str:
    """One of TLS_MODES; by default implicit on port 993 and starttls on any other."""
    value = body.get("tls")
    if value is None:
        return "implicit" if port == IMAPS_PORT else "starttls"
    if isinstance(value, str) and value.strip().lower() in TLS_MODES:
        return value.strip().lower()
    problem = f"expected one of {', '.join(TLS_MODES)}, got {show(value)}"
    if value is False:
        # YAML reads `tls: no` / `tls: off` as false.
        problem += "; write none to connect without TLS"
    ctx.fail(f"{side}.tls", problem)


def _parse_compress(ctx: _Context, side: str, body: Mapping[Any, Any]) -> str:
    """One of COMPRESS_MODES; auto by default."""
    value = body.get("compress")
    if value is None:
        return "auto"
    if value is False:
        # YAML reads `compress: no` / `off` as false.
        return "no"
    if isinstance(value, str) and value.strip().lower() in COMPRESS_MODES:
        return value.strip().lower()
    ctx.fail(f"{side}.compress", f"expected one of {', '.join(COMPRESS_MODES)}, got {show(value)}")


def _parse_ca_file(ctx: _Context, side: str, body: Mapping[Any, Any], base_dir: str) -> str | None:
    """The absolute path of a readable ``ca_file``, or None for the system's trust store."""
    if body.get("ca_file") is None:
        return None
    expected = "a PEM file of trusted CA certificates, relative to the config file's folder"
    text = _string(ctx, f"{side}.ca_file", body["ca_file"], expected)
    ca_file = resolve_path(base_dir, text)
    unreadable = readable_file_problem(ca_file, quote(text))
    if unreadable:
        ctx.fail(f"{side}.ca_file", f"{unreadable}; expected {expected}")
    return ca_file


def _parse_timeout(ctx: _Context, side: str, body: Mapping[Any, Any]) -> float:
    if body.get("timeout_s") is None:
        return DEFAULT_TIMEOUT_S
    raw = body["timeout_s"]
    if not (_is_number(raw) and math.isfinite(raw) and raw > 0):
        ctx.fail(f"{side}.timeout_s", f"expected a number of seconds > 0, got {show(raw)}")
    return float(raw)


def _resolve_password(
    ctx: _Context,
    pending: _PendingSide,
    base_dir: str,
    environ: Mapping[str, str],
    child_env: Mapping[str, str] | None = None,
) -> str:
    """The password of a side; '' for OAuth2, whose token is fetched per connection."""
    key, value = pending.pass_key, pending.pass_value
    if key in (OAUTH2_KEY, IDENTITY_KEY):
        return ""
    try:
        return resolve_password(key, value, quote(value), base_dir, environ, child_env)
    except CredentialError as exc:
        ctx.fail(f"{pending.side}.{key}", exc.problem)


# --------------------------------------------------------------------------- map, rate_limit


def _parse_map(ctx: _Context, value: object) -> tuple[MapEntry, ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        ctx.fail("map", f"expected a list of {{src, dst}} folder pairs, got {show(value)}")
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
                f"{quote(names['src'])} is already mapped by map[{first_index[names['src']]}]; "
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
    return parse_rate_limit(body, ctx.fail)


def _parse_patterns(ctx: _Context, key: str, value: object) -> tuple[str, ...]:
    """``include`` / ``exclude``: regular expressions; a single string is a list of one."""
    if value is None:
        return ()
    if not isinstance(value, (str, list, tuple)):
        ctx.fail(key, f'expected a list of regular expressions, e.g. ["^Trash$"], got {show(value)}')
    named = [(key, value)] if isinstance(value, str) else [(f"{key}[{i}]", item) for i, item in enumerate(value)]
    for path, item in named:
        problem = regex_problem(_string(ctx, path, item, "a regular expression"))
        if problem:
            ctx.fail(path, f"{quote(item)} is not a valid regular expression: {problem}")
    return tuple(item for _path, item in named)


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
    ctx = _Context(display=printable(str(path)), lines={} if lines is None else lines)
    base_dir = os.path.dirname(os.path.abspath(path))

    top_expected = "a mapping with src, dst and optionally map, rate_limit"
    if data is None:
        ctx.fail("", f"the file is empty; expected {top_expected}")
    if not isinstance(data, Mapping):
        ctx.fail("", f"the top level is {kind(data)}; expected {top_expected}")
    _check_keys(ctx, "", data, TOP_KEYS)

    pending = [_parse_side(ctx, side, data, base_dir) for side in ("src", "dst")]
    folder_map = _parse_map(ctx, data.get("map"))
    patterns = {key: _parse_patterns(ctx, key, data.get(key)) for key in ("include", "exclude")}
    rate_limit = _parse_rate_limit(ctx, data.get("rate_limit"))

    # A pass_cmd must not inherit the other side's pass_env password.
    child_env = environ_without(p.pass_value for p in pending if p.pass_key == "pass_env")
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
            auth_user=p.auth_user,
            oauth2=p.identity,
            compress=p.compress,
        )
        for p in pending
    ]
    return Config(
        path=os.path.abspath(path),
        src=accounts[0],
        dst=accounts[1],
        map=folder_map,
        rate_limit=rate_limit,
        **patterns,
    )


def with_sides(data: Any, sides: Mapping[str, Mapping[str, str]]) -> Any:
    """A copy of a config file's *data* with keys added to (or replacing those of) its
    sides: a batch's pair (user, password), or per-side flags (``--src-auth-user``)."""
    if not isinstance(data, Mapping) or not sides:
        return data
    full = dict(data)
    for side, values in sides.items():
        if isinstance(full.get(side), Mapping):
            full[side] = {**full[side], **values}
    return full


def load_config(
    path: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
    sides: Mapping[str, Mapping[str, str]] | None = None,
) -> Config:
    """Read, parse and validate the config file at ``path``; raise ConfigError if anything is off.

    ``environ`` (default ``os.environ``) is where ``pass_env`` names are looked up.  With
    the default, the variables named by ``pass_env`` are removed from ``os.environ`` once
    read, so that no child process (workers, the forkserver, token commands) inherits a
    password.  *sides* adds per-side keys that flags or variables set (`with_sides`).
    """
    name = os.fspath(path)
    data, lines = read_config_file(name)
    data = with_sides(data, sides or {})
    config = parse_config(data, name, lines=lines, environ=environ)
    if environ is None:
        # parse_config has checked the structure: a pass_env value is a variable name.
        variables = [data[side].get("pass_env") for side in ("src", "dst")]
        forget_env_passwords(v for v in variables if isinstance(v, str))
    return config


def warnings_for(config: Config) -> list[str]:
    """What the config allows but is unsafe, one line each, to print once per run.

    A side with ``tls: none`` sends its password (or token) and all mail in clear text;
    a config file holding a plain ``pass`` must not be readable by group or others.
    """
    found: list[str] = []
    for account in (config.src, config.dst):
        if account.tls == "none":
            secret = ("access token" if account.oauth2_token_cmd or account.oauth2
                      else "administrator's password" if account.auth_user else "password")
            found.append(
                f"{account.where}: {account.side}.tls is none: the {secret} "
                f"and every message cross the network unencrypted; use starttls or implicit"
            )
    if any(account.credential_key == "pass" for account in (config.src, config.dst)):
        exposure = file_exposure(config.path)
        if exposure:
            shown = display_path(config.path)
            found.append(
                f"{shown} is readable by {exposure} and holds a password; "
                f"run chmod 600 {shlex.quote(shown)}"
            )
    return found
