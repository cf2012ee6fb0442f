"""Secrets read with a limit, and access tokens reused until they are due."""

from __future__ import annotations

import base64
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastsync.settings import credentials, tokens

from fastsync.settings.credentials import SECRET_LINE_MAX_BYTES, SecretCommandError, run_secret_cmd


def _child_peak_kb(code: str) -> int:
    """The peak memory of a Python child running *code* (which runs a secret command)."""
    script = (
        "import resource\n" + code + "\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        # `yes` prints without end: stopped at the limit, not read into memory.
        ("yes", "command printed more than one line"),
        ("head -c 300000000 /dev/zero | tr '\\0' x", f"command printed more than {SECRET_LINE_MAX_BYTES} bytes"),
        ("printf 'hunter2\\nx\\n'", "command printed more than one line"),
        ("printf 'x%.0s' $(seq 70000)", f"command printed more than {SECRET_LINE_MAX_BYTES} bytes"),
    ],
)
def test_secret_command_output_is_read_with_a_limit(command: str, expected: str) -> None:
    started = time.monotonic()
    with pytest.raises(SecretCommandError) as caught:
        run_secret_cmd(command, None, "the password")
    assert caught.value.problem.startswith(expected)
    assert time.monotonic() - started < credentials.PASS_CMD_TIMEOUT_S


def test_endless_secret_command_does_not_grow_memory() -> None:
    base = _child_peak_kb("import fastsync.settings.credentials")
    code = (
        "from fastsync.settings.credentials import run_secret_cmd, SecretCommandError\n"
        "try:\n    run_secret_cmd('yes', None, 'the password')\nexcept SecretCommandError:\n    pass"
    )
    # Unbounded, `yes` fills hundreds of MB within the 60 s timeout.
    assert _child_peak_kb(code) < base + 20_000


@pytest.mark.parametrize(
    ("command", "secret"),
    [("echo hunter2", "hunter2"), ("printf 'p w\\r\\n'", "p w"), ("printf 'x%.0s' $(seq 65536)", "x" * 65536)],
)
def test_secret_command_one_line(command: str, secret: str) -> None:
    assert run_secret_cmd(command, None, "the password") == secret


def _jwt(claims: object) -> str:
    def part(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2ln"


NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("ya29.opaque-token", NOW + tokens.TOKEN_REUSE_S),
        (_jwt({"exp": NOW + 3600}), NOW + tokens.TOKEN_REUSE_S),
        (_jwt({"exp": NOW + 600}), NOW + 600 - tokens.TOKEN_RENEW_BEFORE_S),
        # A short-lived token is renewed half-way through its life, not at every login.
        (_jwt({"exp": NOW + 60}), NOW + 30),
        (_jwt({"exp": NOW - 60}), NOW),
        (_jwt({"exp": "soon"}), NOW + tokens.TOKEN_REUSE_S),
        (_jwt({"exp": True}), NOW + tokens.TOKEN_REUSE_S),
        (_jwt([1, 2]), NOW + tokens.TOKEN_REUSE_S),
        ("a.!!!.b", NOW + tokens.TOKEN_REUSE_S),
    ],
)
def test_token_expiry(token: str, expected: float) -> None:
    assert tokens.token_expiry(token, NOW) == expected


def test_pass_env_password_leaves_the_process_environment(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        'src: {server: "127.0.0.1:1", user: a, pass_env: FASTSYNC_TEST_PW}\n'
        'dst: {server: "127.0.0.1:2", user: b, pass: x}\n'
    )
    script = (
        "import os, sys\n"
        "from fastsync.settings.config import load_config\n"
        "assert load_config(sys.argv[1]).src.password == 'Sekr3t-pw-value'\n"
        "assert 'FASTSYNC_TEST_PW' not in os.environ\n"
        "sys.stdout.buffer.write(open('/proc/self/environ', 'rb').read())\n"
    )
    env = {**os.environ, "FASTSYNC_TEST_PW": "Sekr3t-pw-value"}
    done = subprocess.run([sys.executable, "-c", script, str(config)], capture_output=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    # What ps e and /proc/PID/environ show of the process: the value is gone.
    assert b"Sekr3t-pw-value" not in done.stdout
    assert b"PATH=" in done.stdout
