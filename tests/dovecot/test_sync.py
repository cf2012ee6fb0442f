"""`fastsync sync` against real Dovecot servers: fidelity, idempotence, interruption."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from bench.harness.corpus import generate
from bench.harness.dovecot import Dovecot
from tests.dovecot.accounts import AccountFactory, ConfigFor, message_count, snapshot
from tests.helpers import message, run_cli, spawn_sync, summary_line, wait_for


def test_sync_copies_everything_byte_for_byte_and_rerun_copies_nothing(
    accounts: AccountFactory, config_for: ConfigFor
) -> None:
    src, dst = accounts(2)
    src.seed(generate("tiny", seed=3))
    config = config_for(src, dst)

    first = run_cli("sync", "-c", config, "-y", "--procs", "4")
    assert first.returncode == 0, first.stderr
    assert snapshot(dst) == snapshot(src)

    second = run_cli("sync", "-c", config, "-y")
    assert second.returncode == 0, second.stderr
    assert summary_line(second.stdout).split(", ")[1] == "0 copied"
    assert snapshot(dst) == snapshot(src)


@pytest.mark.parametrize("direction", ["slash-to-dot", "dot-to-slash"])
def test_sync_translates_hierarchy_separators(
    direction: str, dovecot: Dovecot, dovecot_dot: Dovecot, accounts: AccountFactory, config_for: ConfigFor
) -> None:
    servers = (dovecot, dovecot_dot) if direction == "slash-to-dot" else (dovecot_dot, dovecot)
    [src] = accounts(1, server=servers[0])
    [dst] = accounts(1, server=servers[1])
    messages = [
        message("Test/[some_group]/box", 1),
        message("Projets/Café & [data]", 2, body="Übergröße, 8-bit body: ça marche.\r\n"),
        message("Notes perso", 3, flags=("\\Seen", "$Label1")),
        message("INBOX/sub", 4),
        message("INBOX", 5, flags=("\\Flagged", "\\Answered", "\\Draft")),
    ]
    src.seed(messages)
    result = run_cli("sync", "-c", config_for(src, dst), "-y")
    assert result.returncode == 0, result.stderr
    # Compare with "/" on both sides: the destination's names are the source's, translated.
    assert snapshot(dst) == snapshot(src)
    client = dst.client()
    try:
        names = {name for _flags, _delimiter, name in client.list_folders()}
    finally:
        client.logout()
    sep = servers[1].separator
    assert f"Test{sep}[some_group]{sep}box" in names
    assert f"Projets{sep}Café & [data]" in names


def test_duplicates_and_messages_without_message_id_are_copied_once(
    accounts: AccountFactory, config_for: ConfigFor
) -> None:
    src, dst = accounts(2)
    same = message("INBOX", 1)
    src.seed([same, same, message("INBOX", 2, message_id=None), message("INBOX", 3, message_id=None), message("INBOX", 4)])
    # The destination already holds one of the two copies and one message without Message-Id.
    dst.seed([same, message("INBOX", 2, message_id=None)])
    config = config_for(src, dst)

    result = run_cli("sync", "-c", config, "-y")
    assert result.returncode == 0, result.stderr
    assert "3 copied, 2 already present" in summary_line(result.stdout)
    assert snapshot(dst) == snapshot(src)
    assert sum(snapshot(dst)["INBOX"].values()) == 5

    rerun = run_cli("sync", "-c", config, "-y")
    assert "0 copied, 5 already present" in summary_line(rerun.stdout)


def test_dry_run_writes_nothing(accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst = accounts(2)
    src.seed([message("INBOX", 1), message("Archive/2019", 2)])
    result = run_cli("sync", "-c", config_for(src, dst), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "Dry run: nothing was written." in result.stdout
    assert "Archive/2019\tArchive/2019\t1\t1\t" in result.stdout
    assert snapshot(dst) == {"INBOX": {}}


def test_without_a_terminal_and_without_yes_nothing_is_copied(accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst = accounts(2)
    src.seed([message("INBOX", 1)])
    result = run_cli("sync", "-c", config_for(src, dst))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: no terminal to ask for confirmation; pass -y/--yes (or set FASTSYNC_CONFIRM=1) to copy"
    )
    assert snapshot(dst) == {"INBOX": {}}
    confirmed = run_cli("sync", "-c", config_for(src, dst), env={"FASTSYNC_CONFIRM": "1"})
    assert confirmed.returncode == 0, confirmed.stderr
    assert snapshot(dst) == snapshot(src)


def test_map_and_command_line_pairs(accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst = accounts(2)
    src.seed([message("Old", 1), message("Old/a", 2), message("Old/a/b", 3), message("Other", 4)])
    mapped = config_for(src, dst, extra={"map": [{"src": "Old", "dst": "Archive/2019"}]})
    result = run_cli("sync", "-c", mapped, "-y")
    assert result.returncode == 0, result.stderr
    got = snapshot(dst)
    assert {k for k, v in got.items() if v} == {"Archive/2019", "Archive/2019/a", "Archive/2019/a/b"}
    assert got["Archive/2019/a/b"] == snapshot(src)["Old/a/b"]
    assert "Other" not in got

    only = run_cli("sync", "-c", mapped, "-y", "-s", "Other", "-d", "Elsewhere")
    assert only.returncode == 0, only.stderr
    assert snapshot(dst)["Elsewhere"] == snapshot(src)["Other"]

    unknown = run_cli("sync", "-c", mapped, "-y", "-s", "Nope")
    assert unknown.returncode == 2
    assert "source folder 'Nope' (command line) does not exist" in unknown.stderr
    # A name that differs in letter case, or the start of a longer one, draws a suggestion.
    for typed, meant in (("other", "'Other'"), ("Ot", "'Other'")):
        close = run_cli("sync", "-c", mapped, "-y", "-s", typed)
        assert close.returncode == 2
        assert close.stderr.splitlines()[-1] == (
            f"error: source folder {typed!r} (command line) does not exist (did you mean {meant}?); "
            "`fastsync show` lists the folders"
        )


def test_special_use_folders_are_paired_by_role(accounts: AccountFactory, config_for: ConfigFor) -> None:
    # The test server gives "Sent Items" and "Sent" the \Sent role (bench/harness/dovecot.py).
    src, dst = accounts(2)
    src.seed([message("Sent Items", 1)])
    dst.seed([message("Sent", 2)])
    result = run_cli("sync", "-c", config_for(src, dst), "-y")
    assert result.returncode == 0, result.stderr
    assert "Sent Items\tSent\t1\t1\t" in result.stdout
    assert "special-use \\Sent" in result.stdout
    got = snapshot(dst)
    assert "Sent Items" not in got
    assert sum(got["Sent"].values()) == 2


@pytest.mark.slow
def test_thousands_of_messages_over_four_workers(accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst = accounts(2)
    corpus = [m for m in generate("small", seed=5, scale=0.2)]
    assert len(corpus) >= 3000
    src.seed(corpus)
    config = config_for(src, dst)
    result = run_cli("sync", "-c", config, "-y", "--procs", "4")
    assert result.returncode == 0, result.stderr
    assert f"{len(corpus)} copied" in summary_line(result.stdout)
    assert snapshot(dst) == snapshot(src)


def _alive(processes: list[psutil.Process]) -> list[int]:
    return [p.pid for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["sigint", "sigkill"])
def test_interrupted_run_then_rerun_ends_exact(how: str, accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst = accounts(2)
    src.seed(generate("realistic", seed=7, scale=0.15))
    config = config_for(src, dst)
    process = spawn_sync(config, "--procs", "4")
    wait_for(lambda: message_count(dst) > 0, timeout_s=60, what="the sync to start copying")
    tree = psutil.Process(process.pid).children(recursive=True)
    if how == "sigint":
        # Ctrl-C on a terminal signals the whole foreground process group.
        os.killpg(process.pid, signal.SIGINT)
        started = time.monotonic()
        _out, err = process.communicate(timeout=30)
        assert process.returncode == 130
        assert err.strip().splitlines()[-1] == "Cancelled."
        assert time.monotonic() - started < 10
    else:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate(timeout=30)
    # No worker or forkserver is left behind.
    wait_for(lambda: not _alive(tree), timeout_s=10, interval_s=0.1, what="the workers and the forkserver to exit")
    assert snapshot(dst) != snapshot(src)

    rerun = run_cli("sync", "-c", config, "-y", "--procs", "4")
    assert rerun.returncode == 0, rerun.stderr
    assert snapshot(dst) == snapshot(src)
