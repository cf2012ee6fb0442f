"""What the CLI does before it connects: `--version` opens no connection, a bad config file is one
line and exit code 2 (`fastsync show` against real servers: tests/dovecot/test_show.py)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from fastsync import __version__
from tests.helpers import REPO_ROOT, cli_env, run_cli


# Run before the code under test: every outgoing connection or name lookup is written to
# the file named by $NET_ATTEMPTS, then refused.
NO_NETWORK = """\
import os, socket

def _refuse(*args, **kwargs):
    with open(os.environ["NET_ATTEMPTS"], "a") as log:
        log.write(repr(args[1:] if args and isinstance(args[0], socket.socket) else args) + "\\n")
    raise OSError("network blocked by the test")

socket.socket.connect = socket.socket.connect_ex = _refuse
socket.create_connection = socket.getaddrinfo = _refuse
"""


def run_without_network(code: str, attempts: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    attempts.write_text("")
    return subprocess.run(
        [sys.executable, "-c", NO_NETWORK + code],
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
        env=cli_env({"NET_ATTEMPTS": str(attempts), **(env or {})}),
    )


def test_version_makes_no_network_call(tmp_path: Path) -> None:
    attempts = tmp_path / "attempts"
    # The block works: connecting to a port that is listening fails, both ways, and is recorded.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        socket.create_connection(("127.0.0.1", port), timeout=5).close()  # reachable without the block
        probe = run_without_network(
            "import socket\n"
            "try:\n"
            f"    socket.socket().connect(('127.0.0.1', {port}))\n"
            "except OSError as exc:\n"
            "    print(exc)\n"
            f"socket.create_connection(('127.0.0.1', {port}), timeout=5)\n",
            attempts,
        )
    assert probe.returncode == 1
    assert probe.stdout == "network blocked by the test\n"
    assert probe.stderr.splitlines()[-1] == "OSError: network blocked by the test"
    assert attempts.read_text() == f"(('127.0.0.1', {port}),)\n" * 2

    code = "import runpy, sys; sys.argv = ['fastsync', '--version']; runpy.run_module('fastsync', run_name='__main__')"
    result = run_without_network(code, attempts, env={"FASTSYNC_CONFIG": "/nonexistent.json"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("fastsync ")
    assert result.stdout == f"fastsync {__version__}\n"
    assert result.stderr == ""
    assert attempts.read_text() == ""


def test_config_errors_exit_2_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text("src:\n  server: imap.example.com\n")
    result = run_cli("show", "-c", bad)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    missing = run_cli("sync", env={"FASTSYNC_CONFIG": str(tmp_path / "none.json")})
    assert missing.returncode == 2
    assert "none.json: cannot read" in missing.stderr
