"""Every option of the command line, its environment variable, and the one record commands take.

Settings layer: imports `errors`, `model`, `values` and `config`.  An option is declared
once, as a `Flag` in the tables below, and has a field of the same name in `Options`;
`resolve` applies the precedence flag > environment > config file > default in one place.
Each variable ``FASTSYNC_X`` has the alias ``IMAPSYNC_X`` (imapsync-go's name for it, so an
environment written for imapsync-go keeps working); ``FASTSYNC_X`` wins when both are set.
`cli.py` builds the parser from the same tables, and the man page is generated from that
parser.  Sizes, ages and regular expressions are parsed by `values.py`, as the config
file's are, so a flag and its config key accept the same text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastsync.settings import values as value_rules
from fastsync.settings.config import Config
from fastsync.records.errors import UsageError
from fastsync.records.model import WorkerSettings

if TYPE_CHECKING:
    # The parser is the command line's (cli.py); this module only reads its namespace, and
    # the worker processes, which import this module, have no use for argparse's code.
    import argparse

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
    that key's path in `Config` (``rate_limit.down_bps``, ``exclude``).

    ``kind``: "bool" (a switch), "int" (>= 0), "count" (>= 1), "str", "size" (bytes:
    ``2M``, ``500k``, see `values.parse_size`), "age" (whole days: ``30d``, ``12w``, ``2y``)
    or "list" (a regular expression; the flag may be repeated, and its environment
    variable holds one per line, since a regular expression may contain a comma).  A flag
    with ``parse`` takes its value through it; a ValueError's text becomes a one-line error
    naming the flag or the variable.
    """

    names: tuple[str, ...]
    dest: str
    env: str
    kind: str
    help: str
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    config_key: str = ""
    parse: Callable[[str], Any] | None = None
    # imapsync's own name for the variable, where it differs from IMAPSYNC_ + suffix.
    env_alias: str = ""

    @property
    def shown(self) -> str:
        """The name messages give the option: its first long name, the one --help and the
        man page lead with (``--procs``, not its alias ``--workers``)."""
        return next(name for name in self.names if name.startswith("--"))

    @property
    def alias(self) -> str:
        """imapsync-go's variable for this option: ``IMAPSYNC_`` + the suffix of `env`
        (or `env_alias`: ``IMAPSYNC_AUTHUSER1`` after imapsync's ``--authuser1``)."""
        return self.env_alias or ALIAS_PREFIX + self.env.removeprefix(ENV_PREFIX)

    @property
    def env_names(self) -> str:
        """Both variables as --help, the man page and the README name them."""
        return f"{self.env} (or {self.alias})"


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


CONFIG_FLAG = Flag(("-c", "--config"), "config", "FASTSYNC_CONFIG", "str", f"config file (default: {DEFAULT_CONFIG})",
                   "PATH")

# Flags also accepted before the command (`fastsync -c config.yaml show`, as imapsync-go
# documents it); given on both sides of the command, the one after it wins.
GLOBAL_FLAGS = (CONFIG_FLAG,)

# Per-side config keys that a flag or a variable may set too (flag > environment > file):
# `account_keys` adds them to the config file's sides before the file is checked, so they
# obey the file's rules.  The imapsync names are its --authuser1/--authuser2.
ACCOUNT_FLAGS = (
    Flag(("--src-auth-user", "--authuser1"), "src_auth_user", "FASTSYNC_SOURCE_AUTH_USER", "str",
         "log in to the source mailbox (src.user) as this administrator, with SASL PLAIN (RFC 4616); "
         "the source's password source (src.pass...) then gives the administrator's password (config: "
         "src.auth_user)", "ADMIN", config_key="src.auth_user", env_alias="IMAPSYNC_AUTHUSER1"),
    Flag(("--dest-auth-user", "--authuser2"), "dst_auth_user", "FASTSYNC_DESTINATION_AUTH_USER", "str",
         "log in to the destination mailbox (dst.user) as this administrator, as --src-auth-user does "
         "(config: dst.auth_user)", "ADMIN", config_key="dst.auth_user", env_alias="IMAPSYNC_AUTHUSER2"),
) + (
    # COMPRESS=DEFLATE (RFC 4978), per side.
    Flag(("--src-compress",), "src_compress", "FASTSYNC_SOURCE_COMPRESS", "str",
         "auto: deflate the source connections (COMPRESS=DEFLATE, RFC 4978, inside TLS) when the server "
         "announces it; no: never (config: src.compress; default auto)", "MODE", choices=("auto", "no"),
         config_key="src.compress"),
    Flag(("--dest-compress",), "dst_compress", "FASTSYNC_DESTINATION_COMPRESS", "str",
         "the same for the destination connections (config: dst.compress; default auto)", "MODE",
         choices=("auto", "no"), config_key="dst.compress"),
)

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
) + ACCOUNT_FLAGS

FOLDER_FLAGS = (
    Flag(("-s", "--src-folder"), "src_folder", "FASTSYNC_SOURCE_FOLDER", "str",
         "only this source folder (and its subfolders), overriding map", "FOLDER"),
    Flag(("-d", "--dest-folder"), "dst_folder", "FASTSYNC_DESTINATION_FOLDER", "str",
         "destination folder for --src-folder (default: same name); only with --src-folder", "FOLDER"),
)

STATE_FLAGS = (
    Flag(("--state-dir",), "state_dir", "FASTSYNC_STATE_DIR", "str",
         "where the state cache, the ledger of copies and the destination's lock live "
         "(default: $XDG_CACHE_HOME/fastsync or ~/.cache/fastsync)", "PATH"),
)

# Which source folders a run takes (show marks the others): Python regular expressions
# searched (re.search) in the source folder's name as show prints it, as imapsync does.
FILTER_FLAGS = (
    Flag(("--include",), "include", "FASTSYNC_INCLUDE", "list",
         "only the source folders whose name matches this Python regular expression (re.search on the name "
         "as show prints it); repeatable: a folder matching any is taken; replaces the config's include "
         "(environment: one expression per line)", "REGEX", config_key="include"),
    Flag(("--exclude",), "exclude", "FASTSYNC_EXCLUDE", "list",
         "leave out the source folders whose name matches this regular expression (after --include): "
         "neither created nor counted; repeatable; replaces the config's exclude "
         "(environment: one expression per line)", "REGEX", config_key="exclude"),
)

# Which messages of those folders a run takes: by internal date, selected by the server
# (UID SEARCH SINCE / BEFORE, RFC 3501 section 6.4.4, which compares dates, not times),
# and by size (RFC822.SIZE, known from planning).
MESSAGE_FLAGS = (
    Flag(("--max-age",), "max_age_days", "FASTSYNC_MAX_AGE", "age",
         "only messages whose internal date is on or after the day AGE ago: 30d, 12w, 2y (a bare number is "
         "days; IMAP compares days, not times: UID SEARCH SINCE)", "AGE"),
    Flag(("--min-age",), "min_age_days", "FASTSYNC_MIN_AGE", "age",
         "only messages whose internal date is before the day AGE ago (UID SEARCH BEFORE); "
         "--max-age N and --min-age N split a folder in two", "AGE"),
    Flag(("--max-size",), "max_size_bytes", "FASTSYNC_MAX_SIZE", "size",
         "skip messages larger than SIZE: 500k, 25M, 1G (k, M, G: powers of 1000; Ki, Mi, Gi: of 1024; "
         "a bare number is bytes; 0 = no limit); sync counts them as skipped, not failed", "SIZE"),
    Flag(("--min-size",), "min_size_bytes", "FASTSYNC_MIN_SIZE", "size",
         "skip messages smaller than SIZE (same units as --max-size)", "SIZE"),
)

# Budgets per account and rolling window (`rules/budget.py`): bytes of messages read from
# the source / written to the destination, remembered between runs in the state directory.
BUDGET_FLAGS = (
    Flag(("--src-daily-limit",), "src_daily_limit", "FASTSYNC_SRC_DAILY_LIMIT", "str",
         "bytes of messages read from the source account per window (--limit-window): 2500M, 1G; none or 0 = "
         "no limit (default: 2500M for Gmail, else none)", "SIZE", config_key="rate_limit.src_daily_limit",
         parse=value_rules.parse_daily_limit),
    Flag(("--dst-daily-limit",), "dst_daily_limit", "FASTSYNC_DST_DAILY_LIMIT", "str",
         "bytes of messages written to the destination account per window: 500M; none or 0 = no limit "
         "(default: 500M for Gmail, else none)", "SIZE", config_key="rate_limit.dst_daily_limit",
         parse=value_rules.parse_daily_limit),
    Flag(("--limit-window",), "limit_window", "FASTSYNC_LIMIT_WINDOW", "str",
         "the rolling window of the daily limits: 24h (default), 90m, 10s, 1d", "DURATION",
         config_key="rate_limit.limit_window", parse=value_rules.parse_window_s),
    Flag(("--until-done",), "until_done", "FASTSYNC_UNTIL_DONE", "bool",
         "when a daily limit is spent, or the server says the account is over its limits or throttled, wait "
         "(the account parked, the time it resumes shown) and go on until everything is copied, instead of "
         "ending with exit code 1"),
)

SYNC_FLAGS = FOLDER_FLAGS + FILTER_FLAGS + MESSAGE_FLAGS + (
    Flag(("--procs", "-w", "--workers"), "workers", "FASTSYNC_WORKERS", "count",
         f"worker processes copying in parallel (default: {DEFAULT_WORKERS})", "N"),
    Flag(("-y", "--yes", "--confirm"), "confirm", "FASTSYNC_CONFIRM", "bool", "copy without asking"),
    Flag(("-n", "--dry-run"), "dry_run", "FASTSYNC_DRY_RUN", "bool", "print the plan and stop; write nothing"),
    Flag(("--bps-down",), "down_bps", "FASTSYNC_BPS_DOWN", "size",
         "cap on bytes/s read from the source, all processes together: 2M, 500k, or bytes (0 = unlimited)", "N",
         config_key="rate_limit.down_bps"),
    Flag(("--bps-up",), "up_bps", "FASTSYNC_BPS_UP", "size",
         "cap on bytes/s written to the destination: 2M, 500k, or bytes (0 = unlimited)", "N",
         config_key="rate_limit.up_bps"),
    Flag(("--max-connections",), "max_connections", "FASTSYNC_MAX_CONNECTIONS", "int",
         "simultaneous connections per side, planner included (0 = unlimited); with 1, the planner logs out "
         "while the one worker copies", "N",
         config_key="rate_limit.max_connections"),
    Flag(("--retries",), "retries", "FASTSYNC_RETRIES", "int",
         "reconnections per worker after a lost connection, with backoff of 1 s doubling to 60 s (default: 5)", "N"),
    Flag(("--full",), "full", "FASTSYNC_FULL", "bool",
         "diff every folder pair, even those the state cache knows unchanged"),
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
    Flag(("--max-transfer",), "max_transfer", "FASTSYNC_MAX_TRANSFER", "size",
         "stop once this many bytes were copied (500M, 2.4G; k, M, G: powers of 1000): units in hand finish, "
         "exit code 1; run again to go on", "SIZE"),
    Flag(("--copy-while-planning",), "copy_while_planning", "FASTSYNC_COPY_WHILE_PLANNING", "bool",
         "with -y: start copying the folders already planned while later ones are still read (for "
         "accounts whose survey takes long: many folders, a distant server); off by default, as it "
         "measured slower where planning is quick"),
) + BUDGET_FLAGS + STATE_FLAGS


CHECK_FLAGS = FOLDER_FLAGS + FILTER_FLAGS + MESSAGE_FLAGS + STATE_FLAGS + (
    Flag(("--bodies",), "bodies", "FASTSYNC_BODIES", "bool",
         "also compare a sha256 of every message present on both sides (fetches every body)"),
)

# `batch`: many account pairs, each synced as `sync -y` would (so every sync flag applies).
BATCH_FLAGS = (
    Flag(("--parallel",), "parallel", "FASTSYNC_PARALLEL", "int",
         "account pairs synced at once (default: at most 4, and as many as --max-connections-per-server "
         "holds); under that cap without --procs, each pair gets the workers that fit in its share, and with "
         "--procs, as many pairs of --procs workers run at once as the cap holds", "N"),
    Flag(("--max-connections-per-server",), "max_connections_per_server", "FASTSYNC_MAX_CONNECTIONS_PER_SERVER",
         "int", "simultaneous connections to each server (host:port), all pairs together and a login in progress "
         "included; source and destination on one host:port share it (0 = unlimited)", "N"),
    Flag(("--cluster",), "cluster", "FASTSYNC_CLUSTER", "str",
         "run each pair as a task on the Dask cluster whose scheduler is at ADDRESS (tls://host:8786); "
         "needs the cluster extra: pip install '.[cluster]' in fastsync's checkout; each pair's passwords travel to the "
         "scheduler and stay in its memory, so the address must be tls:// unless --plain-cluster", "ADDRESS"),
    Flag(("--plain-cluster",), "plain_cluster", "FASTSYNC_PLAIN_CLUSTER", "bool",
         "accept a --cluster address without TLS (tcp://): every pair's passwords then cross the network "
         "unencrypted to the scheduler and its workers"),
    Flag(("--again",), "again", "FASTSYNC_AGAIN", "bool",
         "sync again the pairs the journal says finished exactly (they are skipped otherwise)"),
)

# `sync --watch`: after the sync, keep the destination in step with the source until stopped.
WATCH_FLAGS = (
    Flag(("--watch",), "watch", "FASTSYNC_WATCH", "bool",
         "after the sync, keep running and copy what changes on the source (new messages, flag changes, "
         "with --delete-dest its expunges) within seconds, until Ctrl-C or SIGTERM; implies --sync-flags"),
    Flag(("--poll",), "poll_s", "FASTSYNC_POLL", "count",
         "with --watch: seconds between two looks at the folders that IDLE does not watch (default: 30)",
         "SECONDS"),
)

# What a migration manager reads: refused messages tried again or accepted, the report
# page, a command told when the run ends.
REPORT_FLAG = Flag(("--report",), "report_dir", "FASTSYNC_REPORT", "str",
                   "write report.html, report.csv and report.json into DIR (created if missing) when the run "
                   "ends; a batch rewrites them every few seconds while it runs", "DIR")
REFUSED_FLAGS = (
    Flag(("--retry-refused",), "retry_refused", "FASTSYNC_RETRY_REFUSED", "int",
         "times a later run sends again a message the destination refused (default: 3); after that it is "
         "listed as refused without being sent (fastsync accept accepts it)", "N"),
    Flag(("--notify",), "notify", "FASTSYNC_NOTIFY", "str",
         "when the run ends, run CMD (split as a shell would, but run without a shell) with the summary "
         "as a JSON document on its standard input; its failure is logged, the exit code stays the run's",
         "CMD"),
    REPORT_FLAG,
)
# `accept` and `report`: read what a sync or a batch recorded in the state directory; they
# log in nowhere, log nothing and print a line or two.
RECORDS_COMMON = tuple(f for f in COMMON_FLAGS if f.dest in ("config", "verbose", "quiet"))
RECORDS_FLAGS = (
    Flag(("--all",), "all_pairs", "FASTSYNC_ALL", "bool", "accept: every pair of the batch"),
    Flag(("--pair",), "pair", "FASTSYNC_PAIR", "str", "accept: only the pair whose source user is USER", "USER"),
    Flag(("--folder",), "folder", "FASTSYNC_FOLDER", "str", "accept: only the refusals of this source folder",
         "NAME"),
)
# `preflight`: what would stop each pair, found without copying.
PREFLIGHT_FLAGS = (
    Flag(("--max-connections",), "max_connections", "FASTSYNC_MAX_CONNECTIONS", "int",
         "with --probe: open at most N connections per side (default: 16)", "N",
         config_key="rate_limit.max_connections"),
    Flag(("--bps-down",), "down_bps", "FASTSYNC_BPS_DOWN", "size",
         "the cap on bytes/s read from the source that the estimate assumes (as sync takes it)", "N",
         config_key="rate_limit.down_bps"),
    Flag(("--bps-up",), "up_bps", "FASTSYNC_BPS_UP", "size",
         "the cap on bytes/s written to the destination that the estimate assumes", "N",
         config_key="rate_limit.up_bps"),
    Flag(("--probe",), "probe", "FASTSYNC_PROBE", "bool",
         "also find each server's connection ceiling: log in again and again (up to --max-connections) "
         "until a login is refused, then log out of them all"),
    Flag(("--csv",), "csv", "FASTSYNC_CSV", "bool",
         "print the table as CSV (a header line, one line per pair) on stdout, and nothing else"),
)

# The flags of each command, in the order --help lists them.
COMMAND_FLAGS: dict[str, tuple[Flag, ...]] = {
    "show": COMMON_FLAGS + FILTER_FLAGS,
    "sync": COMMON_FLAGS + SYNC_FLAGS + WATCH_FLAGS + REFUSED_FLAGS,
    "check": COMMON_FLAGS + CHECK_FLAGS + (REPORT_FLAG,),
    "batch": COMMON_FLAGS + SYNC_FLAGS + BATCH_FLAGS + REFUSED_FLAGS,
    "accept": RECORDS_COMMON + STATE_FLAGS + RECORDS_FLAGS,
    "report": RECORDS_COMMON + STATE_FLAGS + (REPORT_FLAG,),
    "preflight": (COMMON_FLAGS + FOLDER_FLAGS + FILTER_FLAGS + MESSAGE_FLAGS + PREFLIGHT_FLAGS + BUDGET_FLAGS[:3]
                  + STATE_FLAGS),
}

# Every flag once (the folder flags serve sync and check).
ALL_FLAGS = tuple({flag.dest: flag for flags in COMMAND_FLAGS.values() for flag in flags}.values())


@dataclass(frozen=True)
class Options:
    """What the flags, the environment and the config file decide about a run.

    One field per `Flag` (same name); a command reads only the fields of its own flags,
    the others keep their defaults.  ``explicit`` names the fields that a flag or an
    environment variable set, so that a command may choose a value of its own where the
    user chose none (batch fits ``--procs`` to its connection cap).  A loaded config file
    holds every key, defaults filled in, so a config-backed field tells nothing of the
    kind; ``--procs`` and ``--parallel`` have no config key.
    """

    config: str = DEFAULT_CONFIG
    verbose: bool = False
    quiet: bool = False
    json: bool = False
    log_file: str | None = None
    log_format: str = "text"
    src_auth_user: str | None = None
    dst_auth_user: str | None = None
    src_compress: str | None = None
    dst_compress: str | None = None
    src_folder: str | None = None
    dst_folder: str | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    max_age_days: int | None = None
    min_age_days: int | None = None
    max_size_bytes: int = 0
    min_size_bytes: int = 0
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
    copy_while_planning: bool = False
    max_transfer: int = 0
    src_daily_limit: int | None = None
    dst_daily_limit: int | None = None
    limit_window: float = value_rules.DAY_S
    until_done: bool = False
    # Not a flag: the budgets' uses a batch keeps in its journal and hands to each pair
    # (by `engine/budgets.book_name`), so that a pair run on another machine counts them.
    carried_uses: tuple[tuple[str, tuple[tuple[float, int], ...]], ...] = ()
    # Not a flag: a batch's pair with --until-done ends when a budget is spent (with the
    # time it may go on) instead of waiting, so that the batch runs other pairs meanwhile.
    hand_back_waits: bool = False
    bodies: bool = False
    parallel: int = 0
    max_connections_per_server: int = 0
    cluster: str | None = None
    plain_cluster: bool = False
    again: bool = False
    watch: bool = False
    poll_s: int = 30
    retry_refused: int = 3
    notify: str | None = None
    report_dir: str | None = None
    all_pairs: bool = False
    pair: str | None = None
    folder: str | None = None
    probe: bool = False
    csv: bool = False
    explicit: frozenset[str] = frozenset()

    @property
    def settings(self) -> WorkerSettings:
        return WorkerSettings(retries=self.retries)


# The largest whole number a flag takes: more connections, processes, retries or seconds
# than any run uses (a semaphore holds at most 2**31 - 1).
MAX_WHOLE = 1_000_000


def _from_env(flag: Flag, environ: Mapping[str, str]) -> tuple[Any, str]:
    """The flag's value from the environment and the variable it came from: ``FASTSYNC_X``,
    else its alias ``IMAPSYNC_X``; (None, "") when neither is set."""
    name = next((n for n in (flag.env, flag.alias) if n in environ), "")
    if not name:
        return None, ""
    raw = environ[name]
    where = f"environment variable {name}={raw!r}"
    if flag.kind == "bool":
        value = raw.strip().lower()
        if value in _TRUE:
            return True, name
        if value in _FALSE:
            return False, name
        raise UsageError(f"{where}: expected 1/0, true/false, yes/no or on/off")
    if flag.choices and raw not in flag.choices:
        raise UsageError(f"{where}: expected one of {', '.join(flag.choices)}")
    if flag.kind in ("int", "count"):
        try:
            return int(raw.strip()), name
        except ValueError:
            raise UsageError(f"{where}: expected a whole number") from None
    if flag.kind == "list":
        # One regular expression per line: a comma may be part of one.
        return _patterns([line for line in raw.splitlines() if line.strip()], f"environment variable {name}"), name
    return _parsed(flag, raw, where), name


def _parsed(flag: Flag, raw: str, where: str) -> Any:
    """A size or an age as `values` reads it, or *raw* itself for the other kinds."""
    parse = flag.parse or {"size": value_rules.parse_size, "age": value_rules.parse_age_days}.get(flag.kind)
    if parse is None:
        return raw
    try:
        return parse(raw)
    except ValueError as exc:
        raise UsageError(f"{where}: {exc}") from None


def _patterns(patterns: Sequence[str], where: str) -> tuple[str, ...]:
    for pattern in patterns:
        problem = value_rules.regex_problem(pattern)
        if problem:
            raise UsageError(f"{where}: {pattern!r} is not a valid regular expression: {problem}")
    return tuple(patterns)


def given(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, Any]:
    """Flag > environment, for the flags of the parsed command; None where neither is set."""
    values: dict[str, Any] = {}
    for flag in ALL_FLAGS:
        if not hasattr(args, flag.dest):
            continue
        value, source = getattr(args, flag.dest), flag.shown
        if value is None:
            value, variable = _from_env(flag, environ)
            source = f"{source} / {variable}"
        elif flag.kind == "list":
            value = _patterns(value, flag.shown)
        else:
            value = _parsed(flag, value, f"{flag.shown} {value!r}")
        if flag in ACCOUNT_FLAGS and value is not None and not value.strip():
            raise UsageError(f"{source}: empty; expected a login name (leave it out for none)")
        if value is not None and flag.kind in ("int", "count"):
            minimum = 1 if flag.kind == "count" else 0
            if value < minimum:
                raise UsageError(f"{source}: expected a whole number >= {minimum}, got {value}")
            if value > MAX_WHOLE:
                raise UsageError(f"{source}: expected a whole number from {minimum} to {MAX_WHOLE}, got {value}")
        values[flag.dest] = value
    return values


def account_keys(values: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """The per-side config keys that *values* (from `given`) set: ``{"src": {"auth_user": ...}}``,
    for `config.load_config` to check as if the file held them."""
    sides: dict[str, dict[str, str]] = {}
    for flag in ACCOUNT_FLAGS:
        if values.get(flag.dest) is not None:
            side, key = flag.config_key.split(".")
            sides.setdefault(side, {})[key] = values[flag.dest]
    return sides


def resolve(values: Mapping[str, Any], config: Config | None = None, flags: Sequence[Flag] = ALL_FLAGS) -> Options:
    """The options record: *values* (from `given`), else the config file, else the default.

    Only *flags* (a command's own) are taken; a flag with a ``config_key`` is backed by
    that field of the config file (``rate_limit.down_bps``, ``exclude``).
    """
    chosen: dict[str, Any] = {}
    for flag in flags:
        value = values.get(flag.dest)
        if value is None and flag.config_key and config is not None:
            value = config_value(config, flag.config_key)
        if value is None:
            continue
        chosen[flag.dest] = Path(value) if flag.dest == "state_dir" else value
    explicit = frozenset(dest for dest in chosen if values.get(dest) is not None)
    options = dataclasses.replace(Options(), **chosen, explicit=explicit)
    _check_bounds(options)
    _check_folders(options)
    if options.watch:
        if options.dry_run:
            raise UsageError("--watch copies what changes and --dry-run copies nothing; use one of them")
        # A mirror keeps flags in step too: a message read or flagged at the source is
        # read or flagged on the destination.
        options = dataclasses.replace(options, sync_flags=True)
    return options


def config_value(config: Config, key: str) -> Any:
    """The value of the config field at the dotted path *key* (``rate_limit.up_bps``)."""
    value: Any = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _check_folders(options: Options) -> None:
    """-d names where the folder of -s goes: alone it would have to guess the source folder
    (it once took the same name, copying a folder the user never named)."""
    if options.dst_folder is not None and options.src_folder is None:
        raise UsageError(
            f"-d/--dest-folder {options.dst_folder!r} without -s/--src-folder: name the source folder too "
            f"(-s FOLDER -d {options.dst_folder!r}; -s alone keeps the folder's name)"
        )


def _check_bounds(options: Options) -> None:
    """Bounds that leave nothing to take are a mistake, not an empty run; a count no
    machine has is a typing mistake, not "unlimited"."""
    if options.max_connections > MAX_WHOLE:
        raise UsageError(
            f"--max-connections / rate_limit.max_connections: {options.max_connections} is more than "
            f"{MAX_WHOLE}; give a number of connections per side (0 = unlimited)"
        )
    max_age, min_age = options.max_age_days, options.min_age_days
    if max_age is not None and min_age is not None and max_age <= min_age:
        raise UsageError(
            f"--max-age {max_age} days and --min-age {min_age} days leave no message; "
            "--max-age must be more days than --min-age"
        )
    if options.max_size_bytes and options.min_size_bytes > options.max_size_bytes:
        raise UsageError(
            f"--min-size {options.min_size_bytes} bytes is above --max-size {options.max_size_bytes} bytes; "
            "no message fits"
        )
