"""Copy while planning: with -y --copy-while-planning, the pool copies the folders already
planned while the planner still surveys the others (`syncpass.CopyWhilePlanning`).

A proxy in front of the source holds the planner's EXAMINE of a later folder until an
APPEND into the first folder reaches the destination (or a timeout, which is what the
code that plans everything first meets): the order the proxies saw proves the overlap.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading

import pytest

from bench.harness.replyproxy import EditingProxy
from fastsync.records.errors import ExitCode
from tests.dovecot.accounts import Account, AccountFactory, ConfigFor, message_count, snapshot
from tests.helpers import message, run_cli, spawn_sync, summary_line, wait_for

# Longest the source proxy holds the later folder's survey (the code before this feature
# never sends an APPEND while planning, and would wait this long).
HOLD_S = 15.0


# Alpha: the cheapest folder with mail to copy, whose 401 messages make two units (400 a
# unit, `plan.UNIT_MAX_MESSAGES`): enough for the one worker, so it is surveyed first,
# alone (`rules.surveyorder`); Beta, larger, is surveyed after it.
ALPHA, BETA = 401, 450


def _alpha_and_beta(src: Account) -> None:
    src.seed([message("Alpha", n) for n in range(1, ALPHA + 1)] + [message("Beta", n) for n in range(1000, 1000 + BETA)])


class Hold:
    """Holds the first EXAMINE of *later* on the source until an APPEND into *first*
    passes on the destination (or `HOLD_S`, or `release`); records what came first."""

    def __init__(self, first: bytes, later: bytes, until: threading.Event | None = None,
                 hold_s: float = HOLD_S) -> None:
        self.first, self.later, self.hold_s = first, later, hold_s
        self.appended = threading.Event()
        # What ends the hold (default: the APPEND into *first*).
        self.until = until or self.appended
        self.order: list[str] = []
        self.held = False

    def src_up(self, line: bytes) -> bytes:
        if not self.held and line.split(b" ")[1:2] == [b"EXAMINE"] and self.later in line:
            self.held = True
            self.until.wait(self.hold_s)
            self.order.append("survey of the later folder")
        return line

    def dst_up(self, line: bytes) -> bytes:
        if b" APPEND " in line and self.first in line and not self.appended.is_set():
            self.order.append("APPEND into the first folder")
            self.appended.set()
        return line

    def release(self) -> None:
        self.until.set()


@pytest.mark.parametrize(("flags", "hold_s", "order"), [
    # Asked for: an APPEND into Alpha ends the hold on Beta's survey.
    (("--copy-while-planning",), HOLD_S, ["APPEND into the first folder", "survey of the later folder"]),
    # Not asked for (the default, which measured faster where planning is quick): the
    # whole plan comes first, so Beta's survey waits out its hold (3 s) before any APPEND.
    ((), 3.0, ["survey of the later folder", "APPEND into the first folder"]),
])
def test_the_first_folder_is_copied_while_a_later_one_is_still_surveyed_only_when_asked(
    accounts: AccountFactory, config_for: ConfigFor, flags: tuple[str, ...], hold_s: float, order: list[str]
) -> None:
    src, dst = accounts(2)
    _alpha_and_beta(src)
    hold = Hold(b"Alpha", b"Beta", hold_s=hold_s)
    with EditingProxy(src.server.port, up=hold.src_up) as src_proxy, \
            EditingProxy(dst.server.port, up=hold.dst_up) as dst_proxy:
        config = config_for(src, dst, extra={"src": {"server": f"127.0.0.1:{src_proxy.port}"},
                                             "dst": {"server": f"127.0.0.1:{dst_proxy.port}"}})
        result = run_cli("sync", "-c", config, "-y", *flags, "--procs", "1")
        hold.release()
    assert result.returncode == 0, result.stderr
    assert hold.order == order, hold.order
    assert f"{ALPHA + BETA} copied" in summary_line(result.stdout), result.stdout
    assert snapshot(dst) == snapshot(src)


def test_many_folders_are_copied_exactly_and_a_rerun_copies_nothing(
    accounts: AccountFactory, config_for: ConfigFor
) -> None:
    src, dst = accounts(2)
    # Folders of different sizes (so several survey groups), one nested, one already in
    # step on the destination, one empty.
    messages = [message(f"F{k}", 100 * k + n) for k in range(1, 9) for n in range(k * k)]
    messages += [message("Nested/Deep", 900 + n) for n in range(5)]
    same = [message("Same", 950 + n) for n in range(4)]
    src.seed(messages + same)
    dst.seed(same)
    client = src.client()
    client.create_folder("Empty")
    client.logout()
    config = config_for(src, dst)
    result = run_cli("sync", "-c", config, "-y", "--copy-while-planning", "--procs", "3", "--json")
    assert result.returncode == 0, result.stderr
    assert snapshot(dst) == snapshot(src)
    rerun = run_cli("sync", "-c", config, "-y", "--procs", "3", "--full")
    assert rerun.returncode == 0, rerun.stderr
    assert f"0 copied, {len(messages) + len(same)} already present" in summary_line(rerun.stdout), rerun.stdout
    check = run_cli("check", "-c", config)
    assert check.returncode == 0, check.stdout + check.stderr


def test_sigterm_while_planning_and_copying_stops_cleanly(
    accounts: AccountFactory, config_for: ConfigFor
) -> None:
    src, dst = accounts(2)
    _alpha_and_beta(src)
    # The survey of Beta is held until the test releases it: the run is stopped while
    # Alpha is copied and Beta still planned.
    hold = Hold(b"Alpha", b"Beta", until=threading.Event())
    with EditingProxy(src.server.port, up=hold.src_up) as src_proxy, \
            EditingProxy(dst.server.port, up=hold.dst_up) as dst_proxy:
        config = config_for(src, dst, extra={"src": {"server": f"127.0.0.1:{src_proxy.port}"},
                                             "dst": {"server": f"127.0.0.1:{dst_proxy.port}"}})
        process = spawn_sync(config, "--copy-while-planning", "--procs", "1", "--json")
        wait_for(lambda: message_count(dst) > 0, timeout_s=HOLD_S, what="Alpha's first unit to land")
        assert hold.held and not hold.order[1:], hold.order
        os.kill(process.pid, signal.SIGTERM)
        out, err = process.communicate(timeout=60)
        hold.release()
    assert process.returncode == ExitCode.TERMINATED == 143, err
    assert err.strip().splitlines()[-1] == "Stopped by SIGTERM.", err
    assert "Traceback" not in err, err
    document = json.loads(out)
    copied = document["summary"]["copied"]
    assert 0 < copied == message_count(dst) <= ALPHA, out
    # Beta, never surveyed, is still listed: stopped before its plan, nothing of it counted.
    rows = {row["src"]: row for row in document["folders"]}
    assert set(rows) == {"INBOX", "Alpha", "Beta"}, rows
    assert rows["Beta"]["note"] == "not planned: the run stopped first" and rows["Beta"]["to_copy"] == 0
    unplanned = [src for src, row in rows.items() if row["note"] == "not planned: the run stopped first"]
    assert "Alpha" not in unplanned
    assert f"{len(unplanned)} folders not planned because the run stopped early; run again" in document["errors"]
    rerun = run_cli("sync", "-c", config_for(src, dst), "-y")
    assert rerun.returncode == 0, rerun.stderr
    assert snapshot(dst) == snapshot(src)
