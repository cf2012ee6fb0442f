"""Command line: `build_parser()` (pure; the man page is generated from it) and `main(argv) -> int`.

Every flag has an environment variable; precedence is flag > environment > config file >
default.  `main` is the one place where exceptions become exit codes.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastsync import __version__
from fastsync.errors import Cancelled, ExitCode, FastsyncError, UsageError

PROG = "fastsync"
DEFAULT_CONFIG = "config.json"

EXIT_CODES_HELP = """\
exit codes:
  0    success: everything is copied (or nothing needed copying)
  1    partial: some messages or folders could not be copied (listed in the summary); run again
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


COMMON_FLAGS = (
    Flag(("-c", "--config"), "config", "FASTSYNC_CONFIG", "str", f"config file (default: {DEFAULT_CONFIG})", "PATH"),
    Flag(("-V", "--verbose"), "verbose", "FASTSYNC_VERBOSE", "bool", "more detail: capabilities, UIDs, folder creation"),
    Flag(("-q", "--quiet"), "quiet", "FASTSYNC_QUIET", "bool", "errors only; tables as tab-separated lines"),
)

SYNC_FLAGS = (
    Flag(("-s", "--src-folder"), "src_folder", "FASTSYNC_SOURCE_FOLDER", "str",
         "sync only this source folder (and its subfolders), overriding map", "FOLDER"),
    Flag(("-d", "--dest-folder"), "dst_folder", "FASTSYNC_DESTINATION_FOLDER", "str",
         "destination folder for --src-folder (default: same name)", "FOLDER"),
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
)

ALL_FLAGS = COMMON_FLAGS + SYNC_FLAGS
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
                type=int if flag.kind in ("int", "count") else str,
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
    from fastsync.config import load_config, warnings_for
    from fastsync.progress import Reporter

    reporter = Reporter()
    try:
        values = resolve(args, environ)
        reporter = Reporter(quiet=bool(values.get("quiet")), verbose=bool(values.get("verbose")))
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        config = load_config(values.get("config") or DEFAULT_CONFIG)
        for warning in warnings_for(config) if not reporter.quiet else ():
            reporter.warn(warning)
        if args.command == "show":
            from fastsync import show
            from fastsync.sync import Options

            show.run(config, Options(), reporter)
            return ExitCode.OK
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
        )
        summary = sync.run(config, options, reporter)
        reporter.summary(summary)
        return ExitCode.OK if summary.complete else ExitCode.PARTIAL
    except Cancelled as exc:
        reporter.stop_copy()
        print(exc.message, file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        reporter.stop_copy()
        print("Cancelled.", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except FastsyncError as exc:
        reporter.stop_copy()
        reporter.error(exc.message)
        return exc.exit_code


def entry_point() -> None:
    sys.exit(main())
