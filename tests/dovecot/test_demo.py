"""The README's first command, `bench/demo` (`python -m bench demo`): a new user sees
fastsync's own plan, progress and summary, then the verification and the speed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT, cli_env
from tests.terminal import run_on_terminal

pytestmark = pytest.mark.dovecot

DEMO = ["demo", "--scale", "0.01", "--procs", "2"]


def test_the_demo_shows_fastsyncs_own_output_then_the_verification() -> None:
    result = subprocess.run([sys.executable, "-m", "bench", *DEMO], capture_output=True, text=True, env=cli_env(),
                            cwd=REPO_ROOT, timeout=600, stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    # fastsync's plan (piped: its title, header row, a row per folder), then its summary line.
    plan = lines.index("# Plan")
    assert lines[plan + 1].startswith("source\tdestination\tmessages\tto copy")
    assert any(line.startswith("INBOX\tINBOX\t") for line in lines[plan:])
    [summary] = [line for line in lines if " copied, " in line and line.endswith("MB/s")]
    assert summary.startswith("14 folders, 100 copied, 0 already present, 0 failed, ")
    assert lines.index(summary) > plan
    # Then what the demo measured from outside.
    assert "verification passed: ok (100 messages)" in lines
    assert lines.index("verification passed: ok (100 messages)") > lines.index(summary)
    assert any(line.startswith("messages/s ") for line in lines) and "exit code    0" in lines
    assert "source-pw" not in result.stdout + result.stderr


def test_on_a_terminal_the_demo_shows_the_plan_table_and_progress_bars() -> None:
    screen = run_on_terminal(DEMO, module="bench", columns=100, timeout_s=600)
    assert screen.returncode == 0, screen.text
    text = screen.text
    # rich's table and progress display: what fastsync shows on a terminal.
    assert "Plan" in text and "┃ source" in text
    assert "all folders" in text
    assert "100 messages (" in text and "to copy in 14 folders." in text
    assert "14 folders, 100 copied, 0 already present, 0 failed" in text
    assert "verification passed: ok (100 messages)" in text
