"""Failures by the scope they ruin, and the exit codes they map to.

Records layer: imports nothing of fastsync; every module may raise these.

A failure ruins one message, one folder, one account (a side's connection or login) or
the whole run (bad configuration).  Each class knows its exit code and whether trying again
can help; `cli.main` is the one place where an exception becomes an exit code.

Every exception passes all its fields to ``super().__init__`` positionally so that it
pickles across process boundaries unchanged.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Stable exit codes, documented in README.md and the man page."""

    OK = 0
    PARTIAL = 1
    USAGE = 2
    CONNECTION = 3
    AUTH = 4
    # sysexits.h EX_SOFTWARE: an unexpected exception, a defect of fastsync itself.
    INTERNAL = 70
    # sysexits.h EX_TEMPFAIL: another run is copying to the same destination; try later.
    LOCKED = 75
    INTERRUPTED = 130
    # 128 + SIGTERM, as a shell reports a process that SIGTERM ended.
    TERMINATED = 143


class FastsyncError(Exception):
    """Base class: a failure with a one-line, user-facing message."""

    exit_code: ExitCode = ExitCode.PARTIAL
    retryable = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


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

    ``wait_s`` is the server's suggested pause, 0 when it gave none.
    """

    def __init__(self, message: str, wait_s: float = 0.0) -> None:
        super().__init__(message)
        self.message = message
        self.wait_s = wait_s

    def __reduce__(self) -> tuple[type, tuple[str, float]]:
        return (type(self), (self.message, self.wait_s))


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

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return (type(self), (self.message, self.code))


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


class Locked(FastsyncError):
    """Another run holds the lock of the destination account: two runs copying at once
    would both copy every missing message."""

    exit_code = ExitCode.LOCKED
