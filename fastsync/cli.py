"""Command line: `build_parser()` (pure; the man page is generated from it) and `main(argv) -> int`.

Entry layer: imports everything.  The options themselves are declared in `options.py`
(flag, environment variable, config key); `main` resolves them, runs one command, hands
its result to the reporter, and is the one place where exceptions become exit codes,
with a last arm for the unexpected.  It is also the only place that configures logging:
``--log-file`` attaches a handler to the "fastsync" logger, which the parent process
alone writes (workers report over their pipes and the parent logs their events, so
lines never interleave).  And it turns SIGTERM into `Terminated`, raised in the main
thread where Ctrl-C raises KeyboardInterrupt, so that both stop a run the same way.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any, cast

from fastsync import __version__
from fastsync.engine import processes
from fastsync.records.errors import (
    Cancelled, ExitCode, FastsyncError, HungUp, Terminated, UsageError, describe, exit_code_of,
)
from fastsync.records import secrets as secrets_rules
from fastsync.settings.options import COMMAND_FLAGS, DEFAULT_CONFIG, GLOBAL_FLAGS, Flag

if TYPE_CHECKING:
    import subprocess

    from fastsync.batch.inputs import Batch
    from fastsync.settings.config import Config
    from fastsync.settings.options import Options
    from fastsync.progress import Reporter

PROG = "fastsync"

EXIT_CODES_HELP = """\
exit codes:
  0    success: everything is copied (or nothing needed copying); check: the accounts match
  1    partial: some messages or folders could not be copied (listed in the summary), --max-transfer
       or a spent daily limit stopped the copy (without --until-done), or deletions exceeded
       --max-delete; run again;
       check: the accounts differ (or a folder could not be read); show: a folder could not be read
  2    usage or configuration error (bad flag, bad config file, unknown folder, no terminal to confirm)
  3    connection error: a server could not be reached or TLS failed
  4    authentication error: a server refused the login
  70   internal error: a defect of fastsync (-V or --log-file shows the traceback); please report it
  74   a file of fastsync's own (state directory, batch journal) cannot be read or written:
       the disk is full or read-only, or the file is damaged; the message names it
  75   sync: another sync is copying to the same destination account; wait for it or stop it
  129  stopped by SIGHUP (the terminal closed): as SIGTERM
  130  interrupted (Ctrl-C)
  143  stopped by SIGTERM (kill, docker stop, systemd): as Ctrl-C, workers finish the unit in hand
"""

CONFIG_HELP = """\
config file (JSON or YAML, chosen by extension; the keys of imapsync-go):
  src / dst:   label, server (host:port), user, and one of pass, pass_env (variable name),
               pass_file (path), pass_cmd (shell command printing the password),
               oauth2_token_cmd (shell command printing an OAuth2 access token),
               oauth2 (an administrator identity: {google_service_account: key.json}
               or {microsoft: {tenant, client_id, client_secret_cmd | ...}});
               optional tls (implicit | starttls | none; default implicit on port 993,
               starttls otherwise), ca_file, timeout_s (default 60)
  map:         list of {src, dst}: only these folders (and their subfolders) are synced
  include, exclude: lists of regular expressions, as --include and --exclude
  rate_limit:  down_bps, up_bps (bytes/s: 2M, 500k), max_connections (0 = unlimited)
"""

COMMANDS = {
    "show": (
        "list the folders of both accounts and the folder mapping sync would use",
        ("List the folders of both accounts (messages, size, special-use) and the mapping sync would use. "
         "Read-only on both sides."),
    ),
    "sync": (
        "copy the messages missing on the destination",
        ("Plan (diff message identities per folder), show the plan, then copy what is missing with a pool "
         "of worker processes. Never modifies the source; safe to re-run."),
    ),
    "check": (
        "compare source and destination without copying; exit 1 when they differ",
        ("For every folder pair sync would use, compare the two sides: message counts, messages missing on "
         "the destination or extra on it (matched by Message-Id, as sync matches them), and flags or internal "
         "dates that differ; with --bodies, the content too. Changes nothing on either side (BODY.PEEK). "
         "Run it before switching MX records."),
    ),
    "batch": (
        "sync many account pairs listed in a CSV file, with per-server connection caps",
        ("Sync every account pair of PAIRS (a CSV file: src_user,src_pass,dst_user,dst_pass) as `sync -y` "
         "would, several at once, the servers and their settings coming from the config file. A journal in "
         "the state directory records each pair's outcome: a second run skips the pairs that finished "
         "exactly and redoes the others."),
    ),
    "accept": (
        "accept the messages the destination refused, so that the run counts as complete",
        ("Mark the refusals recorded so far (the messages a destination refused, see --retry-refused) as "
         "accepted: a sync, or with PAIRS the pairs of a batch (--all, or --pair USER), then counts as "
         "complete with accepted exceptions (exit code 0), and those messages are not sent again. A refusal "
         "seen after the accept is not covered. Reads and writes the state directory only."),
    ),
    "report": (
        "write the report of the last sync, or with PAIRS of the batch, again (--report DIR)",
        ("Render report.html, report.csv and report.json into the --report directory again from what the "
         "state directory holds: the last sync of the config's accounts, or with PAIRS the batch journal. "
         "Connects to no server."),
    ),
    "preflight": (
        "say, for each account pair, whether a sync can complete, without copying anything",
        ("For the config's account pair, or for every pair of PAIRS (a CSV file, as batch reads it, with the "
         "servers in the config file): log in on both sides, count the messages and bytes sync would copy, "
         "compare them with the destination's quota (GETQUOTAROOT), find the messages larger than the "
         "destination takes (APPENDLIMIT or the provider's documented limit) and the source folders whose "
         "names the destination would refuse, with --probe the connections each server takes, and estimate "
         "the copy's duration. Writes nothing to either side. Exit 0 when every pair can complete, 1 when "
         "some cannot (each reason is printed)."),
    ),
}

# The commands that read and write only what earlier runs recorded in the state directory.
RECORD_COMMANDS = ("accept", "report")


def _add_flags(parser: argparse.ArgumentParser, flags: Sequence[Flag], note: str = "", after: bool = False) -> None:
    """Add *flags* to *parser*.  *after*: a command's own parser, where a flag that is also
    global (`GLOBAL_FLAGS`) sets its value only when given, so that one given before the
    command is not overwritten by the command's default."""
    for flag in flags:
        help_text = f"{flag.help}{note} [env: {flag.env_names}]"
        default = argparse.SUPPRESS if after and flag in GLOBAL_FLAGS else None
        if flag.kind == "bool":
            parser.add_argument(*flag.names, dest=flag.dest, action="store_true", default=default, help=help_text)
        elif flag.kind == "list":
            parser.add_argument(
                *flag.names, dest=flag.dest, action="append", default=default, help=help_text, metavar=flag.metavar
            )
        else:
            parser.add_argument(
                *flag.names, dest=flag.dest, default=default, help=help_text, metavar=flag.metavar,
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
    _add_flags(parser, GLOBAL_FLAGS, note="; also accepted after the command, where it wins")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (summary, description) in COMMANDS.items():
        command = commands.add_parser(
            name, help=summary, description=description, epilog=EXIT_CODES_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if name == "batch":
            command.add_argument("pairs", metavar="PAIRS",
                                 help="CSV file of account pairs: a header line, then one pair per line")
        if name in RECORD_COMMANDS:
            command.add_argument("pairs", metavar="PAIRS", nargs="?",
                                 help="the batch's CSV file of account pairs (without it: the config's sync)")
        if name == "preflight":
            command.add_argument("pairs", metavar="PAIRS", nargs="?", default=None,
                                 help="CSV file of account pairs, as batch reads it (default: the config's one pair)")
        _add_flags(command, COMMAND_FLAGS[name], after=True)
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    standard_streams()
    with sigterm_stops():
        return _main(argv, environ)


def standard_streams() -> None:
    """Open /dev/null on each standard stream that was closed at start (``2>&-``).

    Otherwise the first file or socket fastsync opens takes that number: a connection
    becomes "standard error", and whatever is written there (a warning, a worker's last
    words) goes to the server in the middle of the protocol.  Python has also set
    ``sys.stderr`` to None, which the reporter could not write to.
    """
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            opened = os.open(os.devnull, os.O_RDONLY if fd == 0 else os.O_WRONLY)
            if opened != fd:
                os.dup2(opened, fd)
                os.close(opened)
            if getattr(sys, name) is None:
                setattr(sys, name, open(fd, "r" if fd == 0 else "w", encoding="utf-8", closefd=False))


@contextmanager
def sigterm_stops() -> Iterator[None]:
    """While inside: SIGTERM raises `Terminated` in the main thread, as Ctrl-C raises
    KeyboardInterrupt, so that `kill`, `docker stop` or systemd stop a run as Ctrl-C does
    (workers finish the unit in hand, summary, state, exit 143) instead of ending this
    process at once and leaving its workers copying.  Ending at once also skipped the
    finalizers that unlink the run's named semaphores (the caps, the stop event), so
    multiprocessing's resource tracker warned of "leaked semaphore objects"; a normal exit
    runs them.  Without a handler, SIGTERM would not even stop fastsync when it runs as
    PID 1 in a container.

    SIGHUP (the terminal closed, an ssh session dropped) stops the run the same way, as
    `HungUp`: by default it would end this process at once, as SIGTERM would.

    The first of them raises; later ones are ignored, so that they cannot cut short the
    stop they asked for (SIGKILL stops at once).  Outside the main thread (an embedding
    program) signals are not ours to handle.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _frame: FrameType | None) -> None:
        for ignored in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(ignored, signal.SIG_IGN)
        if signum == signal.SIGHUP:
            raise HungUp("Stopped by SIGHUP (the terminal closed).")
        raise Terminated("Stopped by SIGTERM.")

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _main(argv: Sequence[str] | None, environ: Mapping[str, str] | None) -> int:
    environ = os.environ if environ is None else environ
    parser = build_parser()
    args = parser.parse_args(argv)
    # Imported here so that `--version` and the man-page generator stay light.
    from fastsync.settings import options as option_rules
    from fastsync.settings.config import load_config
    from fastsync.progress import Reporter

    reporter = Reporter()
    log_handler: logging.Handler | None = None
    verbose = False
    try:
        _events_to_log_only()
        values = option_rules.given(args, environ)
        verbose = bool(values.get("verbose"))
        reporter = Reporter(quiet=bool(values.get("quiet")), verbose=verbose,
                            json_output=bool(values.get("json") or values.get("csv")))
        config_path = values.get("config") or DEFAULT_CONFIG
        if args.command in (*RECORD_COMMANDS, "preflight"):
            return _records(args.command, args.pairs, values, config_path, reporter)
        if args.command == "batch":
            from fastsync.batch import parent as pairrun
            from fastsync.batch.inputs import load_batch

            # The first pair's process starts now: its interpreter and imports overlap the
            # reading of both files and of the journal (a cluster runs pairs elsewhere).
            spare = None if values.get("cluster") else pairrun.spawn()
            try:
                batch = load_batch(config_path, args.pairs, sides=option_rules.account_keys(values))
                reporter.hide(_secrets_of(batch.secrets))
                options = option_rules.resolve(values, batch.template, COMMAND_FLAGS[args.command])
                log_handler = _open_log(options, batch.secrets, Started(args.command, argv, _batch_inputs(batch)))
            except BaseException:
                if spare is not None:
                    pairrun.discard(spare)
                raise
            code, stopped, totals = _run_batch(batch, options, reporter, spare)
            _log_end(args.command, code, stopped, totals=totals)
            return code
        config = load_config(config_path, sides=option_rules.account_keys(values))
        reporter.hide(_secrets_of([config.src.password, config.dst.password]))
        if args.command == "sync" and not values.get("dry_run"):
            # Before the sync's imports (see `processes`), and after the config: reading it
            # took the pass_env passwords out of the environment the server inherits.
            processes.warm_up()
        options = option_rules.resolve(values, config, COMMAND_FLAGS[args.command])
        log_handler = _open_log(options, [config.src.password, config.dst.password],
                                Started(args.command, argv, _accounts(config)))
        code, stopped, totals = _run(args.command, options, config, reporter)
        # Ctrl-C or SIGTERM is how a watch ends: its log says so, not that it failed.
        _log_end(args.command, code, "" if options.watch else stopped, totals=totals, stopped=stopped)
        return code
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - the last arm takes a defect too
        # The one place where an exception becomes an exit code (`errors.exit_code_of`).
        code, message = exit_code_of(exc), describe(exc)
        if isinstance(exc, (Cancelled, KeyboardInterrupt)):
            reporter.cancelled(message)
            return _failed(reporter, args.command, message, code)
        reporter.stop_copy()
        if isinstance(exc, FastsyncError):
            reporter.error(message)
            return _failed(reporter, args.command, message, code)
        # A defect, not a condition fastsync knows: one line, the traceback where asked
        # for (-V, the log file), and a code of its own (INTERNAL) so that scripts never
        # take it for "partial, run again".
        trace = traceback.format_exc()
        reporter.error(message + ("" if verbose else " (-V shows the traceback)"))
        if verbose:
            reporter.trace(trace)
        return _failed(reporter, args.command, message, code, trace)
    finally:
        if log_handler is not None:
            logging.getLogger("fastsync").removeHandler(log_handler)
            log_handler.close()


def _events_to_log_only() -> None:
    """Events are for --log-file only: the terminal is progress.py's, even for an error
    that stops the run before the log file is open (a bad flag value or variable, too).
    A NullHandler keeps logging's last-resort handler from printing error events."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    events = logging.getLogger("fastsync")
    events.propagate = False
    if not any(isinstance(h, logging.NullHandler) for h in events.handlers):
        events.addHandler(logging.NullHandler())


def _secrets_of(passwords: Sequence[str]) -> Callable[[], Iterable[str]]:
    """The run's secrets as the reporter asks for them: its passwords, and the tokens
    fetched so far."""
    from fastsync.settings import credentials

    fixed = [p for p in passwords if p]
    return lambda: [*fixed, *credentials.known_secrets()]


def _failed(reporter: Reporter, command: str, message: str, code: int, trace: str = "") -> int:
    """A run that stopped early: its --json document and log line say why, with the exit code."""
    reporter.document({"command": command, "error": message, "exit_code": int(code)})
    _log_end(command, code, message, trace)
    return code


def _log_end(command: str, code: int, error: str = "", trace: str = "", *,
             totals: Mapping[str, Any] | None = None, stopped: str = "") -> None:
    """The log's last record of a run: its exit code, why it stopped (*error*: a failure,
    logged as an error; *stopped*: the Ctrl-C or SIGTERM that ends a watch), and the
    figures of its summary (*totals*)."""
    from fastsync.records.events import event

    event("run finished", level=logging.ERROR if error else logging.INFO, command=command,
          exit_code=int(code), error=error, stopped="" if error else stopped, traceback=trace,
          totals=dict(totals or {}))


@dataclasses.dataclass(frozen=True)
class Started:
    """What the log's first record says of a run: the command, its arguments and the accounts
    or inputs (labels, users, servers: never a password)."""

    command: str
    argv: Sequence[str] | None
    inputs: Mapping[str, Any]


def _open_log(options: Options, secrets: Sequence[str], started: Started) -> logging.Handler | None:
    """Attach the --log-file handler (`configure_log`) and write the run's first record:
    the command, the accounts, and every option that differs from its default."""
    handler = configure_log(options.log_file, options.log_format, secrets)
    from fastsync.records.events import event
    from fastsync.settings.options import Options as Defaults

    defaults = Defaults()
    chosen = {
        f.name: _loggable(getattr(options, f.name)) for f in dataclasses.fields(options)
        if f.name != "explicit" and getattr(options, f.name) != getattr(defaults, f.name)
    }
    argv = list(sys.argv[1:] if started.argv is None else started.argv)
    event("run started", command=started.command, argv=argv, version=__version__, pid=os.getpid(),
          **started.inputs, options=chosen)
    return handler


def _loggable(value: Any) -> Any:
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, tuple | list):
        return [_loggable(v) for v in value]
    return str(value)


def _accounts(config: Config) -> dict[str, Any]:
    # The administrator who opens the mailbox, where one does (never a password).
    return {side: {"label": account.label, "user": account.user, "server": account.server,
                   **({"auth_user": account.auth_user} if account.auth_user else {})}
            for side, account in (("src", config.src), ("dst", config.dst))}


def _batch_inputs(batch: Batch) -> dict[str, Any]:
    return {"servers_file": batch.servers_path, "pairs_file": batch.pairs_path, "pairs": len(batch.pairs),
            "src": {"server": batch.template.src.server}, "dst": {"server": batch.template.dst.server}}


def _run(command: str, options: Options, config: Config, reporter: Reporter) -> tuple[int, str, dict[str, Any]]:
    """Run one command and show its result; returns its exit code, for a sync that
    Ctrl-C or SIGTERM stopped what it said (other failures raise), and the figures of its
    summary (as its --json document has them)."""
    from fastsync import progress
    from fastsync.settings.config import warnings_for

    for warning in warnings_for(config) if not reporter.quiet else ():
        reporter.warn(warning)
    if command == "show":
        from fastsync.commands import show

        listing = show.run(config, options, reporter)
        reporter.show_report(listing)
        unread = [item for info in (listing.src, listing.dst) for item in info.folders if item.error]
        for item in unread:
            # The error names the side, its server and the folder (`Session.folder_error`).
            reporter.error(f"{item.error}; its counts are not in the listing")
        code = ExitCode.PARTIAL if unread else ExitCode.OK
        reporter.document({**progress.show_document(listing), "exit_code": int(code)})
        return code, "", {
            "src_folders": len(listing.src.folders), "src_messages": listing.src.messages,
            "dst_folders": len(listing.dst.folders), "dst_messages": listing.dst.messages,
            "mapped": len(listing.pairs), "excluded": len(listing.excluded),
        }
    from fastsync.report import document as report_document

    secrets = [config.src.password, config.dst.password]
    title = f"{config.src.user}@{config.src.server} -> {config.dst.user}@{config.dst.server}"
    if command == "check":
        from fastsync.commands import check

        result = check.run(config, options, reporter)
        reporter.check_report(result)
        # As with diff(1) and cmp(1), 1 means "they differ": a script tests one code.
        code = ExitCode.OK if result.matches else ExitCode.PARTIAL
        checked = progress.check_document(result)
        reporter.document({**checked, "exit_code": int(code)})
        _report(options, report_document.of_check(result, title), secrets, reporter)
        return code, "", {**checked["summary"], "matches": result.matches}
    from fastsync.commands import sync
    from fastsync.report.live import Sampling

    sampling = Sampling(reporter)
    summary = sync.run(config, options, cast("Reporter", sampling))
    summary.samples = sampling.samples
    reporter.summary(summary)
    synced = progress.sync_document(summary)
    totals = {**synced["summary"], "complete": summary.complete, "declined": summary.declined,
              "dry_run": summary.dry_run}
    doc = {**synced, "exit_code": summary.exit_code}
    if summary.cancelled:
        # Stopped by Ctrl-C or SIGTERM: the summary of what was done, then why it ended.
        reporter.cancelled(summary.cancelled)
        doc["error"] = summary.cancelled
    reporter.document(doc)
    if not summary.dry_run:
        try:
            sync.keep_report(config, options, report_document.of_sync(summary, title))
        except FastsyncError as exc:
            # Only `fastsync report` needs it later: the sync's own result stands.
            reporter.warn(describe(exc))
    _report(options, report_document.of_sync(summary, title), secrets, reporter)
    _notify(options, doc, secrets, reporter)
    return summary.exit_code, summary.cancelled, totals


def _run_batch(batch: Batch, options: Options, reporter: Reporter,
               spare: subprocess.Popen[bytes] | None) -> tuple[int, str, dict[str, Any]]:
    """Run `fastsync batch` (which takes over *spare*, see `pairrun.spawn`) and show its
    result; returns its exit code, when Ctrl-C or SIGTERM stopped it what it said, and
    the batch's figures."""
    from fastsync import progress
    from fastsync.commands import batch as batch_command

    from fastsync.records.results import BatchSummary
    from fastsync.report import document as report_document
    from fastsync.report.live import LiveBatch

    for warning in batch_command.warnings_for(batch) if not reporter.quiet else ():
        reporter.warn(warning)
    outcome = BatchSummary()
    if options.report_dir and not options.dry_run:
        live = LiveBatch(outcome, options.report_dir, batch.pairs_path, reporter.warn, _masked(batch.secrets))
        try:
            # A report directory that cannot be written stops the batch before it starts.
            live.write(running=True)
        except BaseException:
            if spare is not None:
                from fastsync.batch import parent as pairrun

                pairrun.discard(spare)
            raise
        with live:
            batch_command.run(batch, options, reporter, spare, outcome)
        live.write(running=False)
    else:
        batch_command.run(batch, options, reporter, spare, outcome)
    reporter.batch_report(outcome)
    if outcome.cancelled:
        reporter.cancelled(outcome.cancelled)
    document = progress.batch_document(outcome)
    doc = {**document, "exit_code": outcome.exit_code}
    reporter.document(doc)
    if options.report_dir and options.dry_run:
        _report(options, report_document.of_batch(outcome, batch.pairs_path), batch.secrets, reporter)
    _notify(options, doc, batch.secrets, reporter)
    return outcome.exit_code, outcome.cancelled, document["summary"]


def _report(options: Options, doc: dict[str, Any], secrets: Sequence[str], reporter: Reporter) -> None:
    """--report DIR: the three files of *doc*, every secret of the run masked."""
    if not options.report_dir:
        return
    from fastsync.report import render

    render.write(secrets_rules.redact_values(doc, _masked(secrets)()), options.report_dir)
    reporter.detail(f"report written to {options.report_dir}")


def _masked(secrets: Sequence[str]) -> Callable[[], list[str]]:
    """The secrets to mask in a report or a notification, as the reporter masks them: the
    passwords and the tokens fetched so far, not those too short to tell from our words."""
    from fastsync.progress import MIN_HIDDEN_CHARS
    from fastsync.settings import credentials

    return lambda: [s for s in [*secrets, *credentials.known_secrets()] if len(s) >= MIN_HIDDEN_CHARS]


def _notify(options: Options, doc: dict[str, Any], secrets: Sequence[str], reporter: Reporter) -> None:
    """--notify CMD: told of the run's end with its --json document; a failure is only said."""
    if not options.notify:
        return
    from fastsync.report.notify import notify

    notify(options.notify, doc, _masked(secrets)(), reporter.warn)


def _records(command: str, pairs: str | None, values: Mapping[str, Any], config_path: str,
             reporter: Reporter) -> int:
    """``fastsync accept`` and ``fastsync report``: what earlier runs recorded, no server (and
    ``fastsync preflight``, which reads its inputs as they do)."""
    from fastsync.settings import options as option_rules

    if command == "preflight":
        return _run_preflight(pairs, values, config_path, reporter)

    options = option_rules.resolve(values, None, COMMAND_FLAGS[command])
    if command == "accept":
        from fastsync.commands import accept

        for line in accept.run(config_path, pairs, options):
            reporter.info(line)
        return ExitCode.OK
    from fastsync.commands import report

    doc, secrets = report.run(config_path, pairs, options)
    _report(options, doc, secrets, reporter)
    reporter.info(f"report written to {options.report_dir}: {doc['verdict']}")
    return ExitCode.OK


def _run_preflight(pairs_path: str | None, values: Mapping[str, Any], config_path: str, reporter: Reporter) -> int:
    """Run `fastsync preflight` on the config's pair or on every pair of *pairs_path*, and show it."""
    from fastsync import preflight_output as progress
    from fastsync.commands import preflight
    from fastsync.settings import options as option_rules
    from fastsync.settings.config import load_config

    if pairs_path:
        from fastsync.batch.inputs import load_batch

        batch = load_batch(config_path, pairs_path)
        template, pairs, secrets = batch.template, [(p.line, p.config) for p in batch.pairs], batch.secrets
    else:
        template = load_config(config_path)
        pairs, secrets = [(0, template)], [template.src.password, template.dst.password]
    reporter.hide(_secrets_of(secrets))
    options = option_rules.resolve(values, template, COMMAND_FLAGS["preflight"])
    handler = configure_log(options.log_file, options.log_format, secrets)
    try:
        outcome = preflight.run(pairs, options, reporter)
        progress.preflight_report(reporter, outcome)
        if options.csv:
            progress.preflight_csv(reporter, outcome)
        else:
            reporter.document({**progress.preflight_document(outcome), "exit_code": outcome.exit_code})
        _log_end("preflight", outcome.exit_code)
        return outcome.exit_code
    finally:
        if handler is not None:
            logging.getLogger("fastsync").removeHandler(handler)
            handler.close()


class _TextFormatter(logging.Formatter):
    """``time level event side=... folder=... uid=... key=value...``: one line per event.

    Server text was redacted at the protocol edge already; this is the second line of
    defence: no secret of this run reaches the file, whatever an event carries.  Values
    are redacted before they are rendered, and the rendered line once more, each time in
    every spelling a secret may have taken on its way (quoted, escaped, base64: see
    `records.secrets`).  *more* is asked for further secrets at each record: the
    OAuth2 tokens fetched since the run began (`credentials.known_secrets`).
    """

    def __init__(self, secrets: Sequence[str], more: Callable[[], Iterable[str]] = tuple) -> None:
        super().__init__()
        self.fixed = [s for s in secrets if s]
        self.more = more

    def secrets(self) -> list[str]:
        # Longest first, so that a secret containing another is replaced whole.
        return sorted({*self.fixed, *(s for s in self.more() if s)}, key=len, reverse=True)

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
        return cast(dict[str, Any], _redact(data, self.secrets()))

    def redact(self, text: str) -> str:
        return secrets_rules.redact(text, self.secrets())

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


def _redact(value: Any, secrets: Sequence[str]) -> Any:
    """*value* with every secret replaced by ``***`` in each string it holds, keys too;
    anything but a plain number is rendered as text first, as the formatters would."""
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, dict):
        return {_redact(str(k), secrets): _redact(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact(v, secrets) for v in value]
    return secrets_rules.redact(value if isinstance(value, str) else str(value), secrets)


def log_formatter(
    log_format: str, secrets: Sequence[str], more: Callable[[], Iterable[str]] = tuple
) -> logging.Formatter:
    """The --log-file formatter for *log_format* ("text" or "json"), redacting *secrets*
    and whatever *more* returns at each record."""
    cls = _JSONFormatter if log_format == "json" else _TextFormatter
    return cls(secrets, more)


def configure_log(path: str | None, log_format: str, secrets: Sequence[str]) -> logging.Handler | None:
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
    from fastsync.settings import credentials

    handler.setFormatter(log_formatter(log_format, secrets, credentials.known_secrets))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return handler


def entry_point() -> None:
    sys.exit(main())
