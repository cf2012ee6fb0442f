"""Command line: `build_parser()` (pure; the man page is generated from it) and `main(argv) -> int`.

Every flag has an environment variable; precedence is flag > environment > config file >
default.  `main` is the one place where exceptions become exit codes, and the only place
that configures logging: ``--log-file`` attaches a handler to the "fastsync" logger, which
the parent process alone writes (workers report through the results queue and the
parent logs their events, so lines never interleave).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastsync import __version__
from fastsync.errors import Cancelled, ExitCode, FastsyncError, UsageError

if TYPE_CHECKING:
    from fastsync.config import Config
    from fastsync.progress import Reporter

PROG = "fastsync"
DEFAULT_CONFIG = "config.json"

EXIT_CODES_HELP = """\
exit codes:
  0    success: everything is copied (or nothing needed copying); check: the accounts match
  1    partial: some messages or folders could not be copied (listed in the summary); run again;
       check: the accounts differ (or a folder could not be read)
  2    usage or configuration error (bad flag, bad config file, unknown folder, no terminal to confirm)
  3    connection error: a server could not be reached or TLS failed
  4    authentication error: a server refused the login
  130  interrupted (Ctrl-C)
"""

CONFIG_HELP = """\
config file (JSON or YAML, chosen by extension; the keys of imapsync-go):
  src / dst:   label, server (host:port), user, and one of pass, pass_env (variable name),
               pass_file (path), pass_cmd (shell command printing the password),
               oauth2_token_cmd (shell command printing an OAuth2 access token);
               optional tls (implicit | starttls | none; default implicit on port 993,
               starttls otherwise), ca_file, timeout_s (default 60)
  map:         list of {src, dst}: only these folders (and their subfolders) are synced
  rate_limit:  down_bps, up_bps, max_connections (0 = unlimited)
"""


@dataclass(frozen=True)
class Flag:
    """An option with its environment variable; `kind` decides how the variable is read."""

    names: tuple[str, ...]
    dest: str
    env: str
    kind: str
    help: str
    metavar: str | None = None
    choices: tuple[str, ...] = ()


COMMON_FLAGS = (
    Flag(("-c", "--config"), "config", "FASTSYNC_CONFIG", "str", f"config file (default: {DEFAULT_CONFIG})", "PATH"),
    Flag(("-V", "--verbose"), "verbose", "FASTSYNC_VERBOSE", "bool", "more detail: capabilities, UIDs, folder creation"),
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
         "worker processes copying in parallel (default: 4)", "N"),
    Flag(("-y", "--yes", "--confirm"), "confirm", "FASTSYNC_CONFIRM", "bool", "copy without asking"),
    Flag(("-n", "--dry-run"), "dry_run", "FASTSYNC_DRY_RUN", "bool", "print the plan and stop; write nothing"),
    Flag(("--bps-down",), "down_bps", "FASTSYNC_BPS_DOWN", "int",
         "cap on bytes/s read from the source, all processes together (0 = unlimited)", "N"),
    Flag(("--bps-up",), "up_bps", "FASTSYNC_BPS_UP", "int",
         "cap on bytes/s written to the destination (0 = unlimited)", "N"),
    Flag(("--max-connections",), "max_connections", "FASTSYNC_MAX_CONNECTIONS", "int",
         "simultaneous connections per side, planner included (0 = unlimited)", "N"),
    Flag(("--retries",), "retries", "FASTSYNC_RETRIES", "int",
         "reconnections per worker after a lost connection, with backoff of 1 s doubling to 60 s (default: 5)", "N"),
    Flag(("--full",), "full", "FASTSYNC_FULL", "bool",
         "diff every folder pair, even those the state cache knows unchanged"),
    Flag(("--state-dir",), "state_dir", "FASTSYNC_STATE_DIR", "str",
         "where the state cache lives (default: $XDG_CACHE_HOME/fastsync or ~/.cache/fastsync)", "PATH"),
    Flag(("--sync-flags",), "sync_flags", "FASTSYNC_SYNC_FLAGS", "bool",
         "also set the flags of messages already on both sides to the source's (STORE on the destination only)"),
)

CHECK_FLAGS = FOLDER_FLAGS + (
    Flag(("--bodies",), "bodies", "FASTSYNC_BODIES", "bool",
         "also compare a sha256 of every message present on both sides (fetches every body)"),
)

# Every flag once (the folder flags serve sync and check).
ALL_FLAGS = COMMON_FLAGS + SYNC_FLAGS + CHECK_FLAGS[len(FOLDER_FLAGS):]
DEFAULT_WORKERS = 4

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _add_flags(parser: argparse.ArgumentParser, flags: Sequence[Flag]) -> None:
    for flag in flags:
        help_text = f"{flag.help} [env: {flag.env}]"
        if flag.kind == "bool":
            parser.add_argument(*flag.names, dest=flag.dest, action="store_true", default=None, help=help_text)
        else:
            parser.add_argument(
                *flag.names, dest=flag.dest, default=None, help=help_text, metavar=flag.metavar,
                type=int if flag.kind in ("int", "count") else str, choices=flag.choices or None,
            )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Mirror folders from one IMAP account to another, fast, losing nothing.",
        epilog=EXIT_CODES_HELP + "\n" + CONFIG_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    show = commands.add_parser(
        "show",
        help="list the folders of both accounts and the folder mapping sync would use",
        description="List the folders of both accounts (messages, size, special-use) and the mapping "
        "sync would use. Read-only on both sides.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_flags(show, COMMON_FLAGS)
    sync = commands.add_parser(
        "sync",
        help="copy the messages missing on the destination",
        description="Plan (diff message identities per folder), show the plan, then copy what is missing "
        "with a pool of worker processes. Never modifies the source; safe to re-run.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_flags(sync, COMMON_FLAGS + SYNC_FLAGS)
    check = commands.add_parser(
        "check",
        help="compare source and destination without copying; exit 1 when they differ",
        description="For every folder pair sync would use, compare the two sides: message counts, messages "
        "missing on the destination or extra on it (matched by Message-Id, as sync matches them), and flags "
        "or internal dates that differ; with --bodies, the content too. Read-only on both sides (EXAMINE, "
        "BODY.PEEK). Run it before switching MX records.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_flags(check, COMMON_FLAGS + CHECK_FLAGS)
    return parser


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
    return raw


def resolve(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, Any]:
    """Flag > environment; the config file and defaults are applied by the caller."""
    values: dict[str, Any] = {}
    for flag in ALL_FLAGS:
        if not hasattr(args, flag.dest):
            continue
        value = getattr(args, flag.dest)
        if value is None:
            value = _from_env(flag, environ)
        if value is not None and flag.kind in ("int", "count"):
            minimum = 1 if flag.kind == "count" else 0
            if value < minimum:
                raise UsageError(f"{flag.names[-1]} / {flag.env}: expected a whole number >= {minimum}, got {value}")
        values[flag.dest] = value
    return values


def _pick(value: Any, config_value: Any) -> Any:
    return config_value if value is None else value


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    parser = build_parser()
    args = parser.parse_args(argv)
    # Imported here so that `--version` and the man-page generator stay light.
    from fastsync.config import load_config
    from fastsync.progress import Reporter

    reporter = Reporter()
    log_handler: logging.Handler | None = None
    try:
        values = resolve(args, environ)
        reporter = Reporter(
            quiet=bool(values.get("quiet")), verbose=bool(values.get("verbose")), json_output=bool(values.get("json"))
        )
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        # Events are for --log-file only: the terminal is progress.py's, even for an
        # error that stops the run before the log file is open.
        # A NullHandler keeps logging's last-resort handler from printing error events.
        events = logging.getLogger("fastsync")
        events.propagate = False
        if not any(isinstance(h, logging.NullHandler) for h in events.handlers):
            events.addHandler(logging.NullHandler())
        config = load_config(values.get("config") or DEFAULT_CONFIG)
        log_handler = _configure_log(values.get("log_file"), values.get("log_format") or "text", config)
        code = _run(args.command, values, config, reporter)
        _log_end(args.command, code)
        return code
    except Cancelled as exc:
        reporter.cancelled(exc.message)
        return _failed(reporter, args.command, exc.message, exc.exit_code)
    except KeyboardInterrupt:
        reporter.cancelled("Cancelled.")
        return _failed(reporter, args.command, "Cancelled.", ExitCode.INTERRUPTED)
    except FastsyncError as exc:
        reporter.stop_copy()
        reporter.error(exc.message)
        return _failed(reporter, args.command, exc.message, exc.exit_code)
    finally:
        if log_handler is not None:
            logging.getLogger("fastsync").removeHandler(log_handler)
            log_handler.close()


def _failed(reporter: Reporter, command: str, message: str, code: int) -> int:
    """A run that stopped early: its --json document and log line say why, with the exit code."""
    reporter.document({"command": command, "error": message, "exit_code": int(code)})
    _log_end(command, code, message)
    return code


def _log_end(command: str, code: int, error: str = "") -> None:
    from fastsync.progress import event

    event("run finished", level=logging.ERROR if error else logging.INFO, command=command,
          exit_code=int(code), error=error)


def _run(command: str, values: dict[str, Any], config: Config, reporter: Reporter) -> int:
    """Run one command; returns its exit code (failures raise)."""
    from fastsync.config import warnings_for
    from fastsync.progress import check_document, show_document, sync_document

    for warning in warnings_for(config) if not reporter.quiet else ():
        reporter.warn(warning)
    if command == "show":
        from fastsync import show
        from fastsync.sync import Options

        src, dst, pairs = show.run(config, Options(), reporter)
        reporter.document({**show_document(src, dst, pairs), "exit_code": int(ExitCode.OK)})
        return ExitCode.OK
    if command == "check":
        from fastsync import check
        from fastsync.sync import Options

        result = check.run(
            config,
            Options(src_folder=values.get("src_folder"), dst_folder=values.get("dst_folder")),
            reporter,
            bodies=bool(values.get("bodies")),
        )
        reporter.check_report(result)
        # As with diff(1) and cmp(1), 1 means "they differ": a script tests one code.
        code = ExitCode.OK if result.matches else ExitCode.PARTIAL
        reporter.document({**check_document(result), "exit_code": int(code)})
        return code
    from fastsync import sync

    limits = config.rate_limit
    options = sync.Options(
        workers=values.get("workers") or DEFAULT_WORKERS,
        src_folder=values.get("src_folder"),
        dst_folder=values.get("dst_folder"),
        confirm=bool(values.get("confirm")),
        dry_run=bool(values.get("dry_run")),
        down_bps=_pick(values.get("down_bps"), limits.down_bps),
        up_bps=_pick(values.get("up_bps"), limits.up_bps),
        max_connections=_pick(values.get("max_connections"), limits.max_connections),
        retries=_pick(values.get("retries"), sync.Options.retries),
        full=bool(values.get("full")),
        state_dir=Path(values["state_dir"]) if values.get("state_dir") else None,
        sync_flags=bool(values.get("sync_flags")),
    )
    summary = sync.run(config, options, reporter)
    reporter.summary(summary)
    code = ExitCode.OK if summary.complete else ExitCode.PARTIAL
    reporter.document({**sync_document(summary, reporter.plan_rows), "exit_code": int(code)})
    return code


class _TextFormatter(logging.Formatter):
    """``time level event side=... folder=... uid=... key=value...``: one line per event."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        data: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "event": getattr(record, "event", record.getMessage()),
            "side": getattr(record, "side", ""),
            "folder": getattr(record, "folder", ""),
            "uid": getattr(record, "uid", None),
        }
        data.update(getattr(record, "fields", {}))
        return data

    def redact(self, text: str) -> str:
        # Server text was redacted in session.py already; this is the second line of
        # defence: no secret of this run reaches the file, whatever an event carries.
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def format(self, record: logging.LogRecord) -> str:
        data = self.fields(record)
        head = f"{data.pop('time')} {data.pop('level').upper()} {data.pop('event')}"
        parts = [f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}"
                 for key, value in data.items() if value not in ("", None, [])]
        return self.redact(" ".join([head, *parts]))


class _JSONFormatter(_TextFormatter):
    """One JSON object per line, with the same keys as the text format."""

    def format(self, record: logging.LogRecord) -> str:
        import orjson

        return self.redact(orjson.dumps(self.fields(record), default=str).decode())


def _configure_log(path: str | None, log_format: str, config: Config) -> logging.Handler | None:
    """Attach the --log-file handler to the "fastsync" logger (None without --log-file).

    The file is opened in append mode, so successive runs keep one history.  Events never
    propagate to the root logger (see `main`): without --log-file they go nowhere.
    """
    logger = logging.getLogger("fastsync")
    if not path:
        return None
    try:
        handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--log-file {path}: cannot open: {exc.strerror}") from None
    secrets = [config.src.password, config.dst.password]
    handler.setFormatter(_JSONFormatter(secrets) if log_format == "json" else _TextFormatter(secrets))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return handler


def entry_point() -> None:
    sys.exit(main())
