"""Errors as types: every fastsync error pickles with its fields (a worker's last word
crosses a pipe), and one function maps any exception to the exit code (pure logic)."""

from __future__ import annotations

import inspect
import pickle

import pytest

from fastsync.records import errors
from fastsync.records.errors import (
    AuthError, BudgetTooSmall, Cancelled, ConfigError, ConnectError, ConnectionLost, DestinationFull, ExitCode,
    FastsyncError, FolderError, FolderMissing, HungUp, Locked, MalformedResponse, MessageError, OverLimit,
    StateError, TLSError, TooManyConnections, Terminated, Throttled, UsageError, describe, exit_code_of,
)
from fastsync.records.model import Retrying, WorkerExit

# One of each class, with a side and every field of its own set to something other than
# its default, and the exit code `cli.main` returns for it.
EXAMPLES: list[tuple[FastsyncError, ExitCode]] = [
    (FastsyncError("something failed", side="src"), ExitCode.PARTIAL),
    (ConfigError("fastsync.yaml: src.server: missing"), ExitCode.USAGE),
    (UsageError("--procs: expected a whole number"), ExitCode.USAGE),
    (ConnectError("source (h:1): connection refused", side="src"), ExitCode.CONNECTION),
    (TLSError("destination (h:2): certificate has expired", side="dst"), ExitCode.CONNECTION),
    (AuthError("destination (h:2): login as 'b' refused", side="dst"), ExitCode.AUTH),
    (ConnectionLost("source (h:1): connection closed by the server", side="src"), ExitCode.CONNECTION),
    (MalformedResponse("source (h:1): malformed FETCH response", side="src"), ExitCode.CONNECTION),
    (Throttled("destination (h:2): server is throttling", 12.5, side="dst", refused=True), ExitCode.CONNECTION),
    (OverLimit("destination (h:2): [OVERQUOTA] Account exceeded command or bandwidth limits", 3.0, side="dst",
               refused=True), ExitCode.CONNECTION),
    (BudgetTooSmall("destination (h:2): the daily limit of 200,000 bytes cannot hold 300,000 bytes", side="dst"),
     ExitCode.USAGE),
    (Throttled("destination (h:2): server is throttling", 12.5, side="dst"), ExitCode.CONNECTION),
    (TooManyConnections("destination (h:2): server refuses more connections", side="dst"), ExitCode.CONNECTION),
    (DestinationFull("destination (h:2): 'INBOX': APPEND refused: NO [OVERQUOTA]", side="dst"), ExitCode.PARTIAL),
    (FolderError("source (h:1): cannot open folder 'Old'", side="src"), ExitCode.PARTIAL),
    (MessageError("destination (h:2): 'INBOX': APPEND refused: NO [TOOBIG]", "TOOBIG", side="dst"),
     ExitCode.PARTIAL),
    (FolderMissing("destination (h:2): 'Archive': APPEND refused: NO [TRYCREATE]", "TRYCREATE", side="dst"),
     ExitCode.PARTIAL),
    (Cancelled("Cancelled."), ExitCode.INTERRUPTED),
    (Terminated("Stopped by SIGTERM."), ExitCode.TERMINATED),
    (HungUp("Stopped by SIGHUP (the terminal closed)."), ExitCode.HANGUP),
    (StateError("batch journal /s/batches/x.sqlite: cannot be read or written: the disk is full"), ExitCode.STATE),
    (Locked("another fastsync sync (PID 7) is copying to destination (h:2)", side="dst"), ExitCode.LOCKED),
]


def test_every_class_has_an_example() -> None:
    """A new error class must join the table, so that its pickling and exit code are tested."""
    classes = {c for _name, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, FastsyncError)}
    assert classes == {type(error) for error, _code in EXAMPLES}


@pytest.mark.parametrize(("error", "code"), EXAMPLES, ids=lambda e: type(e).__name__)
def test_an_error_pickles_with_every_field(error: FastsyncError, code: ExitCode) -> None:
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error)
    assert vars(again) == vars(error)
    assert (again.message, again.side, str(again), again.args) == (error.message, error.side, str(error), error.args)


def test_the_fields_of_a_subclass_survive_the_trip() -> None:
    throttled = pickle.loads(pickle.dumps(Throttled("slow down", 12.5, side="dst")))
    assert (throttled.wait_s, throttled.side) == (12.5, "dst")
    missing = pickle.loads(pickle.dumps(FolderMissing("no folder", "TRYCREATE", side="dst")))
    assert (missing.code, missing.side) == ("TRYCREATE", "dst")


def test_a_config_error_has_no_side() -> None:
    assert ConfigError("fastsync.yaml: src.server: missing").side == ""


@pytest.mark.parametrize(("error", "code"), EXAMPLES, ids=lambda e: type(e).__name__)
def test_a_fastsync_error_has_its_exit_code(error: FastsyncError, code: ExitCode) -> None:
    assert exit_code_of(error) is code
    assert describe(error) == error.message


@pytest.mark.parametrize(
    ("exc", "code", "line"),
    [
        (KeyboardInterrupt(), ExitCode.INTERRUPTED, "Cancelled."),
        (KeyError("folder-index"), ExitCode.INTERNAL, "internal error: KeyError: 'folder-index'; please report it"),
        (ValueError("bad"), ExitCode.INTERNAL, "internal error: ValueError: bad; please report it"),
        (OSError(5, "I/O error"), ExitCode.INTERNAL, "internal error: OSError: [Errno 5] I/O error; please report it"),
    ],
)
def test_any_other_exception_has_an_exit_code_too(exc: BaseException, code: ExitCode, line: str) -> None:
    assert exit_code_of(exc) is code
    assert describe(exc) == line


@pytest.mark.parametrize(("error", "code"), EXAMPLES, ids=lambda e: type(e).__name__)
def test_a_worker_exit_crosses_a_pipe_with_its_exception(error: FastsyncError, code: ExitCode) -> None:
    exit = pickle.loads(pickle.dumps(WorkerExit(3, error)))
    assert type(exit.error) is type(error) and vars(exit.error) == vars(error)
    assert (exit.worker, exit.message, exit.side, exit.exit_code) == (3, error.message, error.side, code)


def test_a_defect_crosses_as_its_traceback() -> None:
    trace = 'Traceback (most recent call last):\n  File "x.py", line 1\nKeyError: 1\n'
    exit = pickle.loads(pickle.dumps(WorkerExit(2, None, trace)))
    assert (exit.message, exit.side, exit.exit_code) == (trace.strip(), "", ExitCode.INTERNAL)


def test_a_retry_report_carries_its_side() -> None:
    report = pickle.loads(pickle.dumps(Retrying(1, ConnectionLost("source (h:1): reset", side="src"), 2.5, 1)))
    assert (report.error.side, report.error.message, report.wait_s) == ("src", "source (h:1): reset", 2.5)
