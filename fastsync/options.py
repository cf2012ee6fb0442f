"""Every option of the command line, its environment variable, and the one record commands take.

Settings layer: imports `errors`, `model` and `config`.  An option is declared once, as a
`Flag` in the tables below, and has a field of the same name in `Options`; `resolve`
applies the precedence flag > environment > config file > default in one place.  `cli.py`
builds the parser from the same tables, and the man page is generated from that parser.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastsync.config import Config
from fastsync.errors import UsageError
from fastsync.model import WorkerSettings

DEFAULT_CONFIG = "config.json"
DEFAULT_WORKERS = 4

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Flag:
    """An option: its names, environment variable, type and, where a config key backs it,
    that key under ``rate_limit``.

    ``kind``: "bool" (a switch), "int" (>= 0), "count" (>= 1) or "str".  A "str" flag
    with ``parse`` takes its value (from the command line or the environment) through it;
    a ValueError's text becomes a one-line error naming the flag and the variable.
    """

    names: tuple[str, ...]
    dest: str
    env: str
    kind: str
    help: str
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    rate_limit_key: str = ""
    parse: Callable[[str], Any] | None = None


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)b?\s*", re.IGNORECASE)
_SIZE_FACTORS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_size(text: str) -> int:
    """Bytes from ``2500M``, ``500k``, ``1.5G`` or a bare number of bytes (1000-based, as
    providers state their quotas); ValueError with a one-line reason otherwise."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(f"expected a size such as 500k, 25M, 2.5G or a number of bytes, got {text!r}")
    return int(float(match.group(1)) * _SIZE_FACTORS[match.group(2).lower()])


@dataclass(frozen=True)
class DeleteCeiling:
    """The most ``--delete-dest`` may delete in one destination folder per run.

    A folder's deletions are refused when they exceed every limit set: by default more
    than 10 messages *and* more than 10 % of the folder, so a small folder can be cleaned
    and a mapping mistake cannot empty a big one.  ``--max-delete N`` keeps only the count,
    ``--max-delete N%`` only the share (``100%`` allows everything).
    """

    count: int | None = 10
    percent: float | None = 10.0

    def allows(self, to_delete: int, messages: int) -> bool:
        over_count = self.count is None or to_delete > self.count
        over_share = self.percent is None or to_delete * 100 > self.percent * messages
        return to_delete == 0 or not (over_count and over_share)

    def __str__(self) -> str:
        parts = [] if self.count is None else [f"{self.count} messages"]
        parts += [] if self.percent is None else [f"{self.percent:g} % of the folder"]
        return " and ".join(parts)


def parse_ceiling(text: str) -> DeleteCeiling:
    """``--max-delete``: ``N`` (messages) or ``N%`` (of each destination folder)."""
    value = text.strip()
    try:
        if value.endswith("%"):
            percent = float(value[:-1])
            if 0 <= percent <= 100:
                return DeleteCeiling(None, percent)
        elif int(value) >= 0:
            return DeleteCeiling(int(value), None)
    except ValueError:
        pass
    raise ValueError(f"expected a number of messages (50) or a share of each folder (5%, 100%), got {text!r}")


COMMON_FLAGS = (
    Flag(("-c", "--config"), "config", "FASTSYNC_CONFIG", "str", f"config file (default: {DEFAULT_CONFIG})", "PATH"),
    Flag(("-V", "--verbose"), "verbose", "FASTSYNC_VERBOSE", "bool",
         "more detail: capabilities, UIDs, folder creation; the traceback of an internal error"),
    Flag(("-q", "--quiet"), "quiet", "FASTSYNC_QUIET", "bool", "errors only; tables as tab-separated lines"),
    Flag(("--json",), "json", "FASTSYNC_JSON", "bool",
         "print one JSON document on stdout with every figure of the summary, and nothing else "
         "(warnings and errors stay on stderr)"),
    Flag(("--log-file",), "log_file", "FASTSYNC_LOG_FILE", "str",
         "append a log of every event (folder planned, unit copied, message refused, retry, worker exit...) "
         "naming side, folder and UID", "PATH"),
    Flag(("--log-format",), "log_format", "FASTSYNC_LOG_FORMAT", "str",
         "format of --log-file: text, or json (one JSON object per line) (default: text)", "FORMAT",
         ("text", "json")),
)

FOLDER_FLAGS = (
    Flag(("-s", "--src-folder"), "src_folder", "FASTSYNC_SOURCE_FOLDER", "str",
         "only this source folder (and its subfolders), overriding map", "FOLDER"),
    Flag(("-d", "--dest-folder"), "dst_folder", "FASTSYNC_DESTINATION_FOLDER", "str",
         "destination folder for --src-folder (default: same name)", "FOLDER"),
)

SYNC_FLAGS = FOLDER_FLAGS + (
    Flag(("--procs", "-w", "--workers"), "workers", "FASTSYNC_WORKERS", "count",
         f"worker processes copying in parallel (default: {DEFAULT_WORKERS})", "N"),
    Flag(("-y", "--yes", "--confirm"), "confirm", "FASTSYNC_CONFIRM", "bool", "copy without asking"),
    Flag(("-n", "--dry-run"), "dry_run", "FASTSYNC_DRY_RUN", "bool", "print the plan and stop; write nothing"),
    Flag(("--bps-down",), "down_bps", "FASTSYNC_BPS_DOWN", "int",
         "cap on bytes/s read from the source, all processes together (0 = unlimited)", "N",
         rate_limit_key="down_bps"),
    Flag(("--bps-up",), "up_bps", "FASTSYNC_BPS_UP", "int",
         "cap on bytes/s written to the destination (0 = unlimited)", "N", rate_limit_key="up_bps"),
    Flag(("--max-connections",), "max_connections", "FASTSYNC_MAX_CONNECTIONS", "int",
         "simultaneous connections per side, planner included (0 = unlimited)", "N",
         rate_limit_key="max_connections"),
    Flag(("--retries",), "retries", "FASTSYNC_RETRIES", "int",
         "reconnections per worker after a lost connection, with backoff of 1 s doubling to 60 s (default: 5)", "N"),
    Flag(("--full",), "full", "FASTSYNC_FULL", "bool",
         "diff every folder pair, even those the state cache knows unchanged"),
    Flag(("--state-dir",), "state_dir", "FASTSYNC_STATE_DIR", "str",
         "where the state cache lives (default: $XDG_CACHE_HOME/fastsync or ~/.cache/fastsync)", "PATH"),
    Flag(("--sync-flags",), "sync_flags", "FASTSYNC_SYNC_FLAGS", "bool",
         "also set the flags of messages already on both sides to the source's (STORE on the destination only)"),
    Flag(("--delete-dest",), "delete_dest", "FASTSYNC_DELETE_DEST", "bool",
         "also delete from each synced destination folder the messages its source folder does not have "
         "(UID EXPUNGE, RFC 4315; never the source, never a folder), within --max-delete"),
    Flag(("--max-delete",), "max_delete", "FASTSYNC_MAX_DELETE", "str",
         "--delete-dest deletes nothing in a folder where it would delete more than N messages, or N%% of "
         "the folder (default: more than 10 messages and more than 10%%; 100%% allows everything)", "LIMIT",
         parse=parse_ceiling),
    Flag(("--force-expunge",), "force_expunge", "FASTSYNC_FORCE_EXPUNGE", "bool",
         "with --delete-dest and -y, on a destination without UIDPLUS: expunge anyway, which also removes "
         "the other messages already flagged \\Deleted in those folders"),
    Flag(("--max-transfer",), "max_transfer", "FASTSYNC_MAX_TRANSFER", "str",
         "stop once this many bytes were copied (500M, 2.4G; 1000-based): units in hand finish, "
         "exit code 1; run again to go on", "SIZE", parse=parse_size),
)

CHECK_FLAGS = FOLDER_FLAGS + (
    Flag(("--bodies",), "bodies", "FASTSYNC_BODIES", "bool",
         "also compare a sha256 of every message present on both sides (fetches every body)"),
)

# The flags of each command, in the order --help lists them.
COMMAND_FLAGS: dict[str, tuple[Flag, ...]] = {
    "show": COMMON_FLAGS,
    "sync": COMMON_FLAGS + SYNC_FLAGS,
    "check": COMMON_FLAGS + CHECK_FLAGS,
}

# Every flag once (the folder flags serve sync and check).
ALL_FLAGS = tuple({flag.dest: flag for flags in COMMAND_FLAGS.values() for flag in flags}.values())


@dataclass(frozen=True)
class Options:
    """What the flags, the environment and the config file decide about a run.

    One field per `Flag` (same name); a command reads only the fields of its own flags,
    the others keep their defaults.
    """

    config: str = DEFAULT_CONFIG
    verbose: bool = False
    quiet: bool = False
    json: bool = False
    log_file: str | None = None
    log_format: str = "text"
    src_folder: str | None = None
    dst_folder: str | None = None
    workers: int = DEFAULT_WORKERS
    confirm: bool = False
    dry_run: bool = False
    down_bps: int = 0
    up_bps: int = 0
    max_connections: int = 0
    retries: int = WorkerSettings.retries
    full: bool = False
    state_dir: Path | None = None
    sync_flags: bool = False
    delete_dest: bool = False
    max_delete: DeleteCeiling = DeleteCeiling()
    force_expunge: bool = False
    max_transfer: int = 0
    bodies: bool = False

    @property
    def settings(self) -> WorkerSettings:
        return WorkerSettings(retries=self.retries)


def _from_env(flag: Flag, environ: Mapping[str, str]) -> Any:
    raw = environ.get(flag.env)
    if raw is None:
        return None
    if flag.kind == "bool":
        value = raw.strip().lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise UsageError(f"environment variable {flag.env}={raw!r}: expected 1/0, true/false, yes/no or on/off")
    if flag.choices and raw not in flag.choices:
        raise UsageError(f"environment variable {flag.env}={raw!r}: expected one of {', '.join(flag.choices)}")
    if flag.kind in ("int", "count"):
        try:
            return int(raw.strip())
        except ValueError:
            raise UsageError(f"environment variable {flag.env}={raw!r}: expected a whole number") from None
    return _parsed(flag, raw, f"environment variable {flag.env}")


def _parsed(flag: Flag, raw: str, where: str) -> Any:
    if flag.parse is None:
        return raw
    try:
        return flag.parse(raw)
    except ValueError as exc:
        raise UsageError(f"{where}: {exc}") from None


def given(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, Any]:
    """Flag > environment, for the flags of the parsed command; None where neither is set."""
    values: dict[str, Any] = {}
    for flag in ALL_FLAGS:
        if not hasattr(args, flag.dest):
            continue
        value = getattr(args, flag.dest)
        if value is None:
            value = _from_env(flag, environ)
        elif flag.parse is not None:
            value = _parsed(flag, value, flag.names[-1])
        if value is not None and flag.kind in ("int", "count"):
            minimum = 1 if flag.kind == "count" else 0
            if value < minimum:
                raise UsageError(f"{flag.names[-1]} / {flag.env}: expected a whole number >= {minimum}, got {value}")
        values[flag.dest] = value
    return values


def resolve(values: Mapping[str, Any], config: Config | None = None, flags: Sequence[Flag] = ALL_FLAGS) -> Options:
    """The options record: *values* (from `given`), else the config file, else the default.

    Only *flags* (a command's own) are taken; the config file's ``rate_limit`` backs the
    flags that name one of its keys.
    """
    chosen: dict[str, Any] = {}
    for flag in flags:
        value = values.get(flag.dest)
        if value is None and flag.rate_limit_key and config is not None:
            value = getattr(config.rate_limit, flag.rate_limit_key)
        if value is None:
            continue
        chosen[flag.dest] = Path(value) if flag.dest == "state_dir" else value
    return dataclasses.replace(Options(), **chosen)
