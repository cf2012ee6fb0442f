"""Every option of the command line, its environment variable, and the one record commands take.

Settings layer: imports `errors`, `model` and `config`.  An option is declared once, as a
`Flag` in the tables below, and has a field of the same name in `Options`; `resolve`
applies the precedence flag > environment > config file > default in one place.  Each
variable ``FASTSYNC_X`` has the alias ``IMAPSYNC_X`` (imapsync-go's name for it, so an
environment written for imapsync-go keeps working); ``FASTSYNC_X`` wins when both are set.  `cli.py`
builds the parser from the same tables, and the man page is generated from that parser.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastsync.config import Config
from fastsync.errors import UsageError
from fastsync.model import WorkerSettings

DEFAULT_CONFIG = "config.json"

ENV_PREFIX = "FASTSYNC_"
# imapsync-go reads the same settings from IMAPSYNC_<same suffix>.
ALIAS_PREFIX = "IMAPSYNC_"
DEFAULT_WORKERS = 4

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Flag:
    """An option: its names, environment variable, type and, where a config key backs it,
    that key under ``rate_limit``.

    ``kind``: "bool" (a switch), "int" (>= 0), "count" (>= 1) or "str".
    """

    names: tuple[str, ...]
    dest: str
    env: str
    kind: str
    help: str
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    rate_limit_key: str = ""

    @property
    def alias(self) -> str:
        """imapsync-go's variable for this option: ``IMAPSYNC_`` + the suffix of `env`."""
        return ALIAS_PREFIX + self.env.removeprefix(ENV_PREFIX)

    @property
    def env_names(self) -> str:
        """Both variables as --help, the man page and the README name them."""
        return f"{self.env} (or {self.alias})"


CONFIG_FLAG = Flag(("-c", "--config"), "config", "FASTSYNC_CONFIG", "str", f"config file (default: {DEFAULT_CONFIG})",
                   "PATH")

# Flags also accepted before the command (`fastsync -c config.yaml show`, as imapsync-go
# documents it); given on both sides of the command, the one after it wins.
GLOBAL_FLAGS = (CONFIG_FLAG,)

COMMON_FLAGS = (
    CONFIG_FLAG,
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
         "simultaneous connections per side, planner included (0 = unlimited); with 1, the planner logs out "
         "while the one worker copies", "N",
         rate_limit_key="max_connections"),
    Flag(("--retries",), "retries", "FASTSYNC_RETRIES", "int",
         "reconnections per worker after a lost connection, with backoff of 1 s doubling to 60 s (default: 5)", "N"),
    Flag(("--full",), "full", "FASTSYNC_FULL", "bool",
         "diff every folder pair, even those the state cache knows unchanged"),
    Flag(("--state-dir",), "state_dir", "FASTSYNC_STATE_DIR", "str",
         "where the state cache and the destination's lock live (default: $XDG_CACHE_HOME/fastsync or "
         "~/.cache/fastsync)", "PATH"),
    Flag(("--sync-flags",), "sync_flags", "FASTSYNC_SYNC_FLAGS", "bool",
         "also set the flags of messages already on both sides to the source's (STORE on the destination only)"),
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
    bodies: bool = False

    @property
    def settings(self) -> WorkerSettings:
        return WorkerSettings(retries=self.retries)


def _from_env(flag: Flag, environ: Mapping[str, str]) -> tuple[Any, str]:
    """The flag's value from the environment and the variable it came from: ``FASTSYNC_X``,
    else its alias ``IMAPSYNC_X``; (None, "") when neither is set."""
    name = next((n for n in (flag.env, flag.alias) if n in environ), "")
    if not name:
        return None, ""
    raw = environ[name]
    if flag.kind == "bool":
        value = raw.strip().lower()
        if value in _TRUE:
            return True, name
        if value in _FALSE:
            return False, name
        raise UsageError(f"environment variable {name}={raw!r}: expected 1/0, true/false, yes/no or on/off")
    if flag.choices and raw not in flag.choices:
        raise UsageError(f"environment variable {name}={raw!r}: expected one of {', '.join(flag.choices)}")
    if flag.kind in ("int", "count"):
        try:
            return int(raw.strip()), name
        except ValueError:
            raise UsageError(f"environment variable {name}={raw!r}: expected a whole number") from None
    return raw, name


def given(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, Any]:
    """Flag > environment, for the flags of the parsed command; None where neither is set."""
    values: dict[str, Any] = {}
    for flag in ALL_FLAGS:
        if not hasattr(args, flag.dest):
            continue
        value, source = getattr(args, flag.dest), flag.names[-1]
        if value is None:
            value, variable = _from_env(flag, environ)
            source = f"{source} / {variable}"
        if value is not None and flag.kind in ("int", "count"):
            minimum = 1 if flag.kind == "count" else 0
            if value < minimum:
                raise UsageError(f"{source}: expected a whole number >= {minimum}, got {value}")
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
