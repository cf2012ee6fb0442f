"""Credentials: password sources, OAuth2 access tokens and their cache, and the SASL
exchange that carries a token.

Settings layer: imports only `errors`.  ``config.py`` resolves each side's password
through `resolve_password` once the whole file has been checked; the protocol edge gets
a token for each connection it opens from `tokens.access_token` (which runs the side's
``oauth2_token_cmd`` through `run_secret_cmd`, or asks the side's identity provider)
and logs in with a `BearerExchange`.
Password sources know nothing of the config file's layout: they get plain values and
raise `CredentialError` with the problem alone; the caller adds the file name and field
path.  An account is anything shaped like `config.Account` (`TokenAccount`), so this
module does not import the config it serves.

Nothing here ever puts a secret in a message: not the password, not the output of a
command, not the text of a command (which may embed one).  A ``pass_cmd`` runs without
the variables named by ``pass_env``, and `forget_env_passwords` removes those variables
from the process environment once read, so that no child process inherits them.
"""

from __future__ import annotations

import ctypes
import json
import os
import selectors
import stat
import subprocess
import time
from collections.abc import Collection, Iterable, Mapping
from typing import IO, Protocol


__all__ = [
    "PASS_CMD_TIMEOUT_S",
    "CredentialError",
    "SecretCommandError",
    "environ_without",
    "file_exposure",
    "forget_env_passwords",
    "readable_file_problem",
    "resolve_password",
    "resolve_path",
    "run_secret_cmd",
    "SECRET_LINE_MAX_BYTES",
    "TokenAccount",
    "BearerExchange",
    "bearer_mechanism",
    "remember_secret",
    "known_secrets",
]

PASS_CMD_TIMEOUT_S = 60.0

# The longest line a pass_file or a secret command may give: far more than any password or
# access token (a JWT of Microsoft 365 is 2-4 KB); what lies beyond is never read.
SECRET_LINE_MAX_BYTES = 1 << 16


class CredentialError(Exception):
    """A password source gave no password; ``problem`` says why, without the secret."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


class SecretCommandError(CredentialError):
    """A ``pass_cmd`` or ``oauth2_token_cmd`` gave no secret; ``problem`` says why.

    ``problem`` never contains the command (it may embed a secret) nor its output.
    """


def resolve_password(
    key: str,
    value: str,
    shown: str,
    base_dir: str,
    environ: Mapping[str, str],
    child_env: Mapping[str, str] | None = None,
) -> str:
    """The password that the source ``key`` (``pass``, ``pass_env``, ...) with ``value`` names.

    ``shown`` is how messages name ``value`` (the caller's quoting of a ``pass_file``
    path); ``base_dir`` anchors a relative ``pass_file`` and is where a ``pass_cmd`` runs,
    with ``child_env`` as its environment.  Raises :class:`CredentialError`.
    """
    if key == "pass":
        return value
    if key == "pass_env":
        return _env_password(value, environ)
    if key == "pass_file":
        return _read_pass_file(base_dir, value, shown)
    if key == "pass_cmd":
        return run_secret_cmd(value, base_dir, "the password", child_env)
    raise ValueError(f"not a password source: {key}")


def _env_password(variable: str, environ: Mapping[str, str]) -> str:
    if variable not in environ:
        raise CredentialError(
            f"environment variable {variable} is not set; expected it to hold the password"
        )
    if not environ[variable]:
        raise CredentialError(
            f"environment variable {variable} is empty; expected it to hold the password"
        )
    return environ[variable]


def environ_without(variables: Iterable[str]) -> dict[str, str] | None:
    """This process's environment minus ``variables``, for a ``pass_cmd``; None if none to drop.

    A ``pass_cmd`` must not inherit the other side's ``pass_env`` password.
    """
    hidden = set(variables)
    if not hidden:
        return None
    return {k: v for k, v in os.environ.items() if k not in hidden}


def forget_env_passwords(variables: Iterable[str]) -> None:
    """Remove the ``pass_env`` ``variables`` from ``os.environ`` once their passwords are read.

    Workers, the multiprocessing forkserver and token commands then never inherit them.
    Removing a variable does not erase its text: the environment a process was started
    with stays in its memory, where ``/proc/PID/environ`` (and ``ps e``) still show it, so
    the value is overwritten there first.
    """
    for variable in variables:
        if variable in os.environ:
            _erase_c_value(variable)
        os.environ.pop(variable, None)


def _erase_c_value(variable: str) -> None:
    """Overwrite with NUL bytes the value of *variable* where the C library keeps it."""
    try:
        libc = ctypes.CDLL(None)
        getenv = libc.getenv
    except (OSError, AttributeError):
        return
    getenv.restype = ctypes.c_void_p
    getenv.argtypes = [ctypes.c_char_p]
    address = getenv(os.fsencode(variable))
    if address:
        ctypes.memset(address, 0, len(ctypes.string_at(address)))


def resolve_path(base_dir: str, value: str) -> str:
    """``value`` (``~`` expanded) as an absolute path, relative ones taken from ``base_dir``."""
    return os.path.abspath(os.path.join(base_dir, os.path.expanduser(value)))


def readable_file_problem(full: str, shown: str) -> str | None:
    """Why ``full`` cannot be read as a regular file, or None when it can; ``shown`` names it."""
    if "\0" in full:
        return f"{shown} is not a file name (it holds a NUL character)"
    try:
        info = os.stat(full)
    except OSError as exc:
        return f"cannot read {shown}: {exc.strerror or 'error'}"
    # Opening a FIFO or a device could block forever or read without end.
    if not stat.S_ISREG(info.st_mode):
        return f"{shown} is not a regular file"
    try:
        with open(full, "rb"):
            pass
    except OSError as exc:
        return f"cannot read {shown}: {exc.strerror or 'error'}"
    return None


def file_exposure(path: str) -> str:
    """Who besides the owner can read ``path``: 'others', 'its group', ... or ''."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return ""
    group, others = bool(mode & stat.S_IRGRP), bool(mode & stat.S_IROTH)
    if group and others:
        return "its group and others"
    return "others" if others else "its group" if group else ""


def _read_pass_file(base_dir: str, value: str, shown: str) -> str:
    expected = (
        "a readable file whose first line is the password, relative to the config file's folder"
    )
    full = resolve_path(base_dir, value)
    problem = readable_file_problem(full, shown)
    if problem:
        raise CredentialError(f"{problem}; expected {expected}")
    try:
        with open(full, "rb") as handle:
            first = handle.readline(SECRET_LINE_MAX_BYTES)
    except OSError as exc:
        raise CredentialError(
            f"cannot read {shown}: {exc.strerror or 'error'}; expected {expected}"
        ) from None
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CredentialError(f"{shown} is not UTF-8 text; expected {expected}") from None
    password = _strip_newline(text)
    if not password:
        raise CredentialError(f"the first line of {shown} is empty; expected {expected}")
    return password


def _strip_newline(text: str) -> str:
    if text.endswith("\n"):
        text = text[:-1]
        text = text.removesuffix("\r")
    return text


def run_secret_cmd(
    command: str, workdir: str | None, what: str, env: Mapping[str, str] | None = None
) -> str:
    """Run a shell ``command`` that prints ``what`` (a password, a token) and return that line.

    The command runs in ``workdir`` (the config file's folder) with ``env`` (default: this
    process's environment), stdin closed and stderr inherited, so the user sees the
    command's own complaints on the terminal.  At most `SECRET_LINE_MAX_BYTES` of its
    output are read, as of a ``pass_file``: a command that prints without end (``yes``)
    is stopped, not read into memory.  Raises :class:`SecretCommandError`.
    """
    expected = f"expected a command that prints {what} and exits with status 0"
    try:
        process = subprocess.Popen(
            command,
            shell=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            cwd=workdir if workdir and os.path.isdir(workdir) else None,
            env=env,
        )
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise SecretCommandError(f"command could not be run: {reason}; {expected}") from None
    deadline = time.monotonic() + PASS_CMD_TIMEOUT_S
    assert process.stdout is not None
    try:
        output = _read_capped(process.stdout, SECRET_LINE_MAX_BYTES + 1, deadline)
        if output is not None and len(output) <= SECRET_LINE_MAX_BYTES:
            process.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        output = None
    finally:
        process.stdout.close()
        if process.poll() is None:
            # Too much output, or too slow: stopped (its own children see a closed pipe).
            process.kill()
            process.wait()
    if output is None:
        raise SecretCommandError(f"command did not finish within {PASS_CMD_TIMEOUT_S:g} s; {expected}")
    if len(output) > SECRET_LINE_MAX_BYTES:
        first, newline, _rest = output.partition(b"\n")
        if newline:
            raise SecretCommandError(
                f"command printed more than one line; expected only {what} (e.g. pipe it through head -n 1)"
            )
        raise SecretCommandError(
            f"command printed more than {SECRET_LINE_MAX_BYTES} bytes without a line end; expected only {what}"
        )
    return _secret_line(output, process.returncode, what, expected)


def _read_capped(stream: IO[bytes], limit_bytes: int, deadline: float) -> bytes | None:
    """Up to *limit_bytes* of *stream*, until its end; None when *deadline* passes first."""
    out = bytearray()
    fd = stream.fileno()
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while len(out) < limit_bytes:
            left_s = deadline - time.monotonic()
            if left_s <= 0 or not selector.select(left_s):
                return None
            part = os.read(fd, min(65536, limit_bytes - len(out)))
            if not part:
                break
            out += part
    return bytes(out)


def _secret_line(output: bytes, returncode: int, what: str, expected: str) -> str:
    """The one line a finished secret command printed, or why there is none."""
    if returncode < 0:
        raise SecretCommandError(f"command was killed by signal {-returncode}; {expected}")
    if returncode != 0:
        raise SecretCommandError(f"command failed with exit status {returncode}; {expected}")
    try:
        text = output.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretCommandError(
            f"command printed something that is not UTF-8 text; {expected}"
        ) from None
    secret = _strip_newline(text)
    if not secret:
        raise SecretCommandError(f"command printed nothing; {expected}")
    if "\n" in secret or "\r" in secret:
        raise SecretCommandError(
            f"command printed more than one line; expected only {what} (e.g. pipe it through head -n 1)"
        )
    return secret


class TokenAccount(Protocol):
    """What a token and a SASL exchange need of a side (`config.Account` has it all)."""

    @property
    def side(self) -> str: ...

    @property
    def label(self) -> str: ...

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def where(self) -> str: ...

    @property
    def user(self) -> str: ...

    @property
    def oauth2_token_cmd(self) -> str | None: ...

    @property
    def workdir(self) -> str | None: ...

    @property
    def server(self) -> str: ...


# Every access token this process has fetched (and any other secret handed to
# `remember_secret`): the --log-file formatter redacts them as a second line of defence,
# whatever an event carries.  Tokens are short-lived, but one in a log file is still a key.
_secrets: set[str] = set()


def remember_secret(value: str) -> None:
    """Have the log redact *value* from now on (see `known_secrets`)."""
    if value:
        _secrets.add(value)


def known_secrets() -> frozenset[str]:
    """The secrets this process has seen so far: tokens, and what `remember_secret` got."""
    return frozenset(_secrets)


class BearerExchange:
    """The client side of one OAUTHBEARER (RFC 7628) or XOAUTH2 exchange, for sasl_login.

    The first (empty) challenge is answered with the client response carrying the token.
    A server that refuses the token first sends a challenge with a JSON error (RFC 7628
    section 3.2.2), which must be answered with a dummy response (a lone 0x01 for
    OAUTHBEARER, section 3.2.3; an empty one for XOAUTH2) before the tagged NO.  The JSON
    ``status`` is kept for the error message.
    """

    def __init__(self, mechanism: str, account: TokenAccount, token: str) -> None:
        if mechanism == "OAUTHBEARER":
            # gs2-header "n,a=<authzid>," (RFC 5801 section 4: "," and "=" escaped), then
            # kvpairs separated by 0x01; host and port as in RFC 7628 section 4.1.
            authzid = account.user.replace("=", "=3D").replace(",", "=2C")
            self.first = (
                f"n,a={authzid},\x01host={account.host}\x01port={account.port}"
                f"\x01auth=Bearer {token}\x01\x01"
            ).encode()
            self.dummy = b"\x01"
        else:
            # Google's XOAUTH2 (also Microsoft 365): user=...^Aauth=Bearer ...^A^A
            self.first = f"user={account.user}\x01auth=Bearer {token}\x01\x01".encode()
            self.dummy = b""
        self.sent = False
        self.status = ""

    def __call__(self, challenge: bytes) -> bytes:
        if not self.sent:
            self.sent = True
            return self.first
        try:
            error = json.loads(challenge)
        except ValueError:
            error = None
        if isinstance(error, dict):
            self.status = str(error.get("status", ""))
        return self.dummy


def bearer_mechanism(mechanisms: Collection[str]) -> str | None:
    """The SASL mechanism for a bearer token, among those the server offers (upper case):
    OAUTHBEARER (RFC 7628, the standard) when offered, else XOAUTH2 (Google's original,
    the only one Microsoft 365 offers)."""
    for mechanism in ("OAUTHBEARER", "XOAUTH2"):
        if mechanism in mechanisms:
            return mechanism
    return None

