"""What a new user sees at a terminal: the plan, the prompt, progress and the summary, as a
pseudo-terminal of a given size shows them (`tests.terminal`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.harness.dovecot import Dovecot
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


@pytest.mark.parametrize("command", [["sync", "-n"], ["show"]])
def test_while_a_destination_that_never_greets_is_awaited_the_status_names_it(
    command: list[str], dovecot: Dovecot, accounts: AccountFactory, config_for: ConfigFor
) -> None:
    # Dovecot's implicit-TLS port reached without TLS: connected, and never a greeting.
    src, dst = accounts(2)
    silent = {"server": f"127.0.0.1:{dovecot.tls_port}", "tls": "none", "timeout_s": 3}
    screen = run_on_terminal([*command, "-c", config_for(src, dst, extra={"dst": silent})], columns=120)
    assert screen.returncode == 3, screen.text
    [error_line] = [line for line in screen.text.split("\n") if "error: " in line]
    shown_before = [part.strip() for part in error_line.split("error: ")[0].split("\r") if part.strip()]
    assert shown_before, screen.text
    # What stood on the screen while the run waited: the destination and the step.
    assert shown_before[-1] == (
        f"destination (127.0.0.1:{dovecot.tls_port}): connecting, then waiting for the server's greeting"
    ), screen.text
