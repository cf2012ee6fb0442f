"""Failures by the scope they ruin, and the exit codes they map to.

Records layer: imports nothing of fastsync; every module may raise these.

A failure ruins one message, one folder, one account (a side's connection or login) or
the whole run (bad configuration).  Each class knows its exit code and whether trying again
can help, and each error knows its ``side``: "src" or "dst", set where it is raised (the
protocol edge knows its account), or "" when no side applies (a bad flag, the config file).
`exit_code_of` is the one map from an exception to an exit code (`cli.main` and the batch's
pair process both end with it) and `describe` the one line it says.

Errors cross process boundaries (a worker's last word is its exception, see
`model.WorkerExit`): every one pickles with all its fields, whatever its constructor takes
(`FastsyncError.__reduce__`).  Callers route on the type and the fields, never on the text.
"""

from __future__ import annotations

import enum
from typing import Any


class ExitCode(enum.IntEnum):
    """Stable exit codes, documented in README.md and the man page."""

    OK = 0
    PARTIAL = 1
    USAGE = 2
    CONNECTION = 3
    AUTH = 4
    # sysexits.h EX_SOFTWARE: an unexpected exception, a defect of fastsync itself.
    INTERNAL = 70
    # sysexits.h EX_IOERR: a file of fastsync's own (state directory, journal) cannot be
    # read or written: a full or read-only disk, a damaged file.  The message names it.
    STATE = 74
    # sysexits.h EX_TEMPFAIL: another run is copying to the same destination; try later.
    LOCKED = 75
    # 128 + SIGHUP: the terminal closed (or the session ended) while the run went on.
    HANGUP = 129
    INTERRUPTED = 130
    # 128 + SIGTERM, as a shell reports a process that SIGTERM ended.
    TERMINATED = 143


class FastsyncError(Exception):
    """Base class: a failure with a one-line, user-facing message, and the side it is about
    ("src", "dst", or "" when no side applies)."""

    exit_code: ExitCode = ExitCode.PARTIAL
    retryable = False

    def __init__(self, message: str, *, side: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.side = side

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        # Every field is in __dict__ (message, side, a subclass's own), restored as they
        # were without calling __init__, so that a subclass's signature cannot break it.
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


def _rebuild(cls: type[FastsyncError], args: tuple[Any, ...], fields: dict[str, Any]) -> FastsyncError:
    """Unpickle a `FastsyncError`: the class, its args and every field as they were."""
    exc = cls.__new__(cls, *args)
    exc.args = args
    exc.__dict__.update(fields)
    return exc


class ConfigError(FastsyncError):
    """The configuration file, an environment variable or a flag is invalid."""

    exit_code = ExitCode.USAGE


class UsageError(FastsyncError):
    """The command line asks for something that cannot be done as asked."""

    exit_code = ExitCode.USAGE


class ConnectError(FastsyncError):
    """A side's server could not be reached or spoke in a way we cannot use."""

    exit_code = ExitCode.CONNECTION
    retryable = True


class TLSError(ConnectError):
    """TLS could not be established or verified; retrying will not help."""

    retryable = False


class AuthError(FastsyncError):
    """The server refused the login; retrying will not help."""

    exit_code = ExitCode.AUTH


class ConnectionLost(ConnectError):
    """An established connection broke (reset, BYE, timeout); the session is unusable."""


class MalformedResponse(ConnectionLost):
    """The server sent data the parser cannot read; the connection is out of step."""


class Throttled(ConnectionLost):
    """The server asked us to slow down (Office 365 "Request is throttled", Gmail
    [THROTTLED], [UNAVAILABLE], "Too many simultaneous connections").

    ``wait_s`` is the server's suggested pause, 0 when it gave none; ``refused``: the
    server answered the command with a tagged NO (it stored nothing of an APPEND), as
    opposed to a connection it closed.
    """

    def __init__(self, message: str, wait_s: float = 0.0, *, side: str = "", refused: bool = False) -> None:
        super().__init__(message, side=side)
        self.wait_s = wait_s
        self.refused = refused


class OverLimit(Throttled):
    """The server says the account has used up what it may move for now (Gmail's
    ``[OVERQUOTA] Account exceeded command or bandwidth limits``): not a full mailbox,
    a budget spent; it is lifted as the provider's window moves on."""


class BudgetTooSmall(ConfigError):
    """A daily limit cannot hold the largest message to copy: that message would never fit."""


class TooManyConnections(Throttled):
    """The server refused a login because the account (or this client) has as many
    connections open as it allows: Dovecot's "Maximum number of connections from user+IP
    exceeded", Gmail's "Too many simultaneous connections", a server that hangs up at
    login (mox past 30).  Fewer connections work; the same number will not.  ``side``
    says which server."""


class DestinationFull(FastsyncError):
    """The destination refused a message for lack of space (``[OVERQUOTA]``, RFC 9208
    section 4.3): once a single message does not fit, every further APPEND would fail too."""


class FolderError(FastsyncError):
    """One folder cannot be synced (cannot be selected, created, listed)."""


class MessageError(FastsyncError):
    """The destination refused one message (or a batch); the rest of the run goes on.

    ``code`` is the IMAP response code when the server gave one (``TOOBIG``, ``OVERQUOTA``,
    ``TRYCREATE``...), else an empty string.
    """

    def __init__(self, message: str, code: str = "", *, side: str = "") -> None:
        super().__init__(message, side=side)
        self.code = code


class FolderMissing(MessageError):
    """An APPEND was refused because the folder does not exist (``[TRYCREATE]``, RFC 3501
    section 6.3.11): creating it and appending again may succeed."""


class Cancelled(FastsyncError):
    """The user interrupted the run (Ctrl-C) or declined the plan."""

    exit_code = ExitCode.INTERRUPTED


class Terminated(Cancelled):
    """SIGTERM asked the run to stop (kill, docker stop, systemd, a batch scheduler): it
    stops as Ctrl-C stops it, with an exit code of its own."""

    exit_code = ExitCode.TERMINATED


class HungUp(Terminated):
    """SIGHUP: the terminal that started the run closed (an ssh session dropped, a window
    closed).  The run stops as SIGTERM stops it, with the code a shell gives SIGHUP."""

    exit_code = ExitCode.HANGUP


class StateError(FastsyncError):
    """A file fastsync keeps between runs cannot be read or written (the disk is full or
    read-only, the file is damaged); the message names the file and what to do."""

    exit_code = ExitCode.STATE


class Locked(FastsyncError):
    """Another run holds the lock of the destination account: two runs copying at once
    would both copy every missing message."""

    exit_code = ExitCode.LOCKED


def exit_code_of(exc: BaseException) -> ExitCode:
    """The exit code of a run that *exc* ended: a fastsync error's own, Ctrl-C's
    (`KeyboardInterrupt`, which no handler turned into `Cancelled`) INTERRUPTED, and
    anything else INTERNAL: a defect of fastsync, which scripts must never take for
    "partial, run again"."""
    if isinstance(exc, FastsyncError):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    return ExitCode.INTERNAL


def describe(exc: BaseException) -> str:
    """The one line a run that *exc* ended says (without the traceback of a defect)."""
    if isinstance(exc, FastsyncError):
        return exc.message
    if isinstance(exc, KeyboardInterrupt):
        return "Cancelled."
    return f"internal error: {type(exc).__name__}: {exc}; please report it"
