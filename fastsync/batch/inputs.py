"""`fastsync batch`'s input: the servers file and the CSV file of account pairs.

Settings layer: imports `errors`, `configfile`, `config` and `credentials`.  The servers
file is an ordinary config file whose ``src`` and ``dst`` give ``server``, ``tls``,
``ca_file``, ``label``... but no ``user`` and no password; each line of the pairs file
completes it into one `Config`, validated by `config.parse_config` exactly as a config file
of its own would be.  Every line is checked before anything is copied, and a bad one is
reported with its line number (exit code 2).

The pairs file has a header line naming its columns, then one pair per line, comma or
semicolon separated (as imapsync's examples write them); blank lines and lines starting
with ``#`` are skipped.  Columns: ``src_user``, ``dst_user``, and per side one of
``<side>_pass``, ``<side>_pass_file`` (relative to the pairs file) or
``<side>_oauth2_token_cmd``, each named once.  A value may be quoted (and then hold the
separator, a quote written twice, or a line break); passwords are kept exactly as written,
other values trimmed; a UTF-8 byte order mark is ignored.  Passwords never appear in
messages: an error names the line and the column.

A side of the servers file that names an administrator (``auth_user``, or the flag
``--src-auth-user``/``--dest-auth-user``) gives that administrator's password source there
too, and the pairs file then needs only that side's user column: every pair of the side
logs in as the administrator.  So does a side with an ``oauth2`` identity: each pair gets
a token for its own mailbox.  The password source is resolved once, for all pairs (a
``pass_cmd`` runs once, a ``pass_env`` variable is removed from the environment once read),
and the journal's context is then the servers file's data without it: the journal holds
nothing derived from a secret.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastsync.settings.config import PASS_KEYS, Config, parse_config, with_sides
from fastsync.settings.configfile import display_path, read_config_file
from fastsync.settings.credentials import forget_env_passwords
from fastsync.records.errors import ConfigError

CREDENTIAL_COLUMNS = ("pass", "pass_file", "oauth2_token_cmd")
COLUMNS = tuple(f"{side}_{key}" for side in ("src", "dst") for key in ("user", *CREDENTIAL_COLUMNS))
# What the servers file may not say: each pair gives its own.
PAIR_KEYS = ("user", "pass", "pass_env", "pass_file", "pass_cmd", "oauth2_token_cmd")
# Stands in for a pair's values while the servers file is checked on its own.
_PLACEHOLDER = {"user": "batch-user", "pass": "batch-placeholder"}


@dataclass(frozen=True)
class PairLine:
    """One account pair: where it stands in the file, and its whole configuration."""

    line: int
    text: str
    config: Config

    @property
    def name(self) -> str:
        return f"{self.config.src.user} -> {self.config.dst.user}"

    def key(self, context: str) -> str:
        """The journal's key of this pair: a hash of its two accounts and of what else decides
        the sync (*context*: the servers file and the options).  Nothing derived from a
        secret: a password, a password file or a token command (which may embed a client
        secret) never enters it, so that whoever reads the journal cannot test guesses."""
        src, dst = self.config.src, self.config.dst
        accounts = f"{src.server}\0{src.user}\0{dst.server}\0{dst.user}"
        return hashlib.sha256(f"{context}\0{accounts}".encode()).hexdigest()[:40]


@dataclass(frozen=True)
class Batch:
    """The servers file, checked (``template`` holds placeholder accounts), and every pair."""

    servers_path: str
    pairs_path: str
    template: Config
    # What of the servers file decides a pair's sync, for the journal's keys: its text, or
    # its data without the administrators' password sources where it holds one.
    servers_text: str
    pairs: tuple[PairLine, ...]

    @property
    def secrets(self) -> list[str]:
        found = (a.password for p in self.pairs for a in (p.config.src, p.config.dst) if a.password)
        return list(dict.fromkeys(found))

    @property
    def pairs_hold_passwords(self) -> bool:
        """Whether the pairs file gives a password (a side without an administrator)."""
        sides = [side for side in ("src", "dst") if getattr(self.template, side).auth_user is None]
        return any(getattr(p.config, side).password for p in self.pairs for side in sides)


def load_batch(
    servers_path: str, pairs_path: str, environ: Mapping[str, str] | None = None,
    sides: Mapping[str, Mapping[str, str]] | None = None,
) -> Batch:
    """Read and check both files; raise ConfigError (one line) on the first problem.
    *sides* adds per-side keys that flags set (`config.with_sides`)."""
    data, lines = read_config_file(servers_path)
    data = with_sides(data, sides or {})
    admins = _admin_sides(servers_path, data)
    placeholders = {side: {"user": _PLACEHOLDER["user"]} if side in admins else _PLACEHOLDER for side in ("src", "dst")}
    template = parse_config(with_sides(data, placeholders), servers_path, lines, environ)
    with open(servers_path, encoding="utf-8", errors="replace") as servers:
        servers_text = servers.read()
    if admins:
        # Each pair takes the administrator's password as resolved once, here (an oauth2
        # identity has none: each pair's process obtains its mailbox's token).
        resolved = {side: getattr(template, side).password for side in admins if getattr(template, side).oauth2 is None}
        if environ is None:
            forget_env_passwords(str(data[side]["pass_env"]) for side in admins if "pass_env" in data[side])
        servers_text = json.dumps(_without(data, admins, PASS_KEYS), sort_keys=True, default=str)
        data = _without(data, admins, PASS_KEYS)
        data = with_sides(data, {side: {"pass": password} for side, password in resolved.items()})
    pairs = tuple(
        PairLine(number, text, _pair_config(data, (servers_path, lines, environ), (number, row, pairs_path), admins))
        for number, text, row in read_pairs(pairs_path)
    )
    if not pairs:
        raise ConfigError(f"{display_path(pairs_path)}: no account pairs; expected a header line, then one per line")
    return Batch(os.path.abspath(servers_path), os.path.abspath(pairs_path), template, servers_text, pairs)


def _admin_sides(servers_path: str, data: object) -> dict[str, str]:
    """The sides of the servers file that log in as an administrator (``auth_user``), with
    his name; the keys each pair gives are refused in the servers file: a user always, and a
    password source unless the side names an administrator."""
    admins: dict[str, str] = {}
    for side in ("src", "dst"):
        body = data.get(side) if isinstance(data, Mapping) else None
        if not isinstance(body, Mapping):
            continue
        if body.get("auth_user") is not None:
            admins[side] = str(body["auth_user"])
        elif body.get("oauth2") is not None:
            admins[side] = f"{side}.oauth2"
        for key in PAIR_KEYS:
            if key in body and (side not in admins or key not in PASS_KEYS):
                also = "" if key == "user" else " (or name an administrator with auth_user, whose password it is)"
                raise ConfigError(
                    f"{display_path(servers_path)}: {side}.{key}: a batch takes users and passwords from "
                    f"the pairs file; remove it from the servers file{also}"
                )
    return admins


def _without(data: Any, sides: Mapping[str, str], keys: tuple[str, ...]) -> Any:
    """*data* with *keys* removed from the given *sides*."""
    full = dict(data)
    for side in sides:
        full[side] = {k: v for k, v in full[side].items() if k not in keys}
    return full


def read_pairs(path: str) -> list[tuple[int, str, dict[str, str]]]:
    """(line number, record text, {column: value}) for each pair of the CSV file.

    A record may span lines where a quoted value holds a line break; its number is the line
    it starts on.  A UTF-8 byte order mark (Excel's "CSV UTF-8") is not part of the first
    column's name.  Passwords are kept exactly as written (a space may belong to one); the
    other values are trimmed.
    """
    shown = display_path(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{shown}: not UTF-8 text; save it as UTF-8") from None
    records = _records(text)
    if not records:
        raise ConfigError(f"{shown}: empty; expected a header line such as src_user,src_pass,dst_user,dst_pass")
    header_line, header = records[0]
    delimiter = ";" if header.count(";") > header.count(",") else ","
    columns = _columns(shown, header_line, header, delimiter)
    rows = []
    for number, record in records[1:]:
        if record.count('"') % 2:
            raise ConfigError(f"{shown}: line {number}: a quoted value is not closed; end it with a double quote")
        values = next(csv.reader(io.StringIO(record, newline=""), delimiter=delimiter))
        if len(values) != len(columns):
            raise ConfigError(
                f"{shown}: line {number}: {len(values)} fields where the header has {len(columns)}; "
                f"quote a value holding {delimiter!r} with double quotes"
            )
        row = {c: v if c.endswith("_pass") else v.strip() for c, v in zip(columns, values, strict=True)}
        rows.append((number, record, row))
    return rows


def _records(text: str) -> list[tuple[int, str]]:
    """(first line number, text) of each CSV record, skipping blank and ``#`` lines outside
    quotes; a record goes on while it holds an odd number of double quotes (RFC 4180: a
    quote inside a quoted value is doubled, so the count is even once every value is closed)."""
    records: list[tuple[int, str]] = []
    pending: tuple[int, list[str]] | None = None
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        if pending is None:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            pending = (number, [])
        pending[1].append(line)
        joined = "".join(pending[1])
        if joined.count('"') % 2 == 0:
            records.append((pending[0], joined.rstrip("\r\n")))
            pending = None
    if pending is not None:
        records.append((pending[0], "".join(pending[1]).rstrip("\r\n")))
    return records


def _columns(shown: str, header_line: int, header: str, delimiter: str) -> list[str]:
    """The header's column names, each known and named once."""
    columns = [c.strip().lower() for c in next(csv.reader([header], delimiter=delimiter))]
    for index, column in enumerate(columns):
        if column not in COLUMNS:
            close = difflib.get_close_matches(column, COLUMNS, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"{shown}: line {header_line}: unknown column {column!r}; {hint}expected {', '.join(COLUMNS)}"
            )
        if column in columns[:index]:
            raise ConfigError(f"{shown}: line {header_line}: column {column!r} is named twice; keep one")
    for needed in ("src_user", "dst_user"):
        if needed not in columns:
            raise ConfigError(f"{shown}: line {header_line}: no {needed} column; the header names the columns")
    return columns


def _pair_config(
    data: Any, servers: tuple[str, Mapping[str, int], Mapping[str, str] | None],
    where: tuple[int, dict[str, str], str], admins: Mapping[str, str],
) -> Config:
    """The configuration of one line: the servers file's *data* completed with the line's
    users and passwords (a side with an administrator in *admins* takes the user alone)."""
    servers_path, lines, environ = servers
    number, row, pairs_path = where
    shown = f"{display_path(pairs_path)}: line {number}"
    sides: dict[str, dict[str, str]] = {}
    for side in ("src", "dst"):
        user = row.get(f"{side}_user", "")
        if not user:
            raise ConfigError(f"{shown}: {side}_user is empty; every pair needs both users")
        given = [key for key in CREDENTIAL_COLUMNS if row.get(f"{side}_{key}")]
        if side in admins:
            if given:
                raise ConfigError(
                    f"{shown}: {side}_{given[0]} is given, but the servers file logs in to every {side} mailbox "
                    f"as the administrator {admins[side]!r}; leave it empty"
                )
            sides[side] = {"user": user}
            continue
        if len(given) != 1:
            problem = "none is given" if not given else f"{' and '.join(side + '_' + k for k in given)} are both given"
            raise ConfigError(
                f"{shown}: {side}: {problem}; give exactly one of "
                f"{', '.join(side + '_' + k for k in CREDENTIAL_COLUMNS)}, or an administrator (auth_user or oauth2) "
                "in the servers file"
            )
        value = row[f"{side}_{given[0]}"]
        if given[0] == "pass_file":
            value = os.path.join(os.path.dirname(os.path.abspath(pairs_path)), value)
        sides[side] = {"user": user, given[0]: value}
    try:
        return parse_config(with_sides(data, sides), servers_path, lines, environ)
    except ConfigError as exc:
        # The servers file was checked on its own: what is wrong now is this line's.
        raise ConfigError(f"{shown}: {exc.message}") from None
