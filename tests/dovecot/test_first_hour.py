"""What a new user sees at a terminal: the plan, the prompt, progress and the summary, as a
pseudo-terminal of a given size shows them (`tests.terminal`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.dovecot.accounts import AccountFactory, ConfigFor
from tests.helpers import message
from tests.terminal import run_on_terminal

pytestmark = pytest.mark.dovecot

PROMPT = "[y/N]"


def test_the_summary_leaves_out_the_wait_at_the_prompt(
    accounts: AccountFactory, config_for: ConfigFor, tmp_path: Path
) -> None:
    src, dst = accounts(2)
    src.seed([message("INBOX", n) for n in range(3)])
    log = tmp_path / "run.log"
    waited_s = 4.0
    screen = run_on_terminal(["sync", "-c", config_for(src, dst), "--procs", "2", "--log-file", log,
                              "--log-format", "json"], answer=(PROMPT, "y", waited_s))
    assert screen.returncode == 0, screen.text
    assert screen.answered_at is not None
    totals = [json.loads(line) for line in log.read_text().splitlines()][-1]["totals"]
    assert totals["copied"] == 3
    # The user took at least `waited_s` to answer: that is not the run's time.
    assert totals["prompt_s"] >= waited_s
    assert totals["elapsed_s"] <= screen.seconds - waited_s
    assert totals["copy_s"] <= totals["elapsed_s"]
    [line] = [line for line in screen.lines if " copied, " in line]
    assert f", {totals['elapsed_s']:.1f} s, " in line
