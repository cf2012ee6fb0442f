"""Unit tests of option resolution: flag > environment > config file > default, in one place."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from fastsync.cli import build_parser
from fastsync.settings.config import parse_config
from fastsync.settings.options import ALL_FLAGS, COMMAND_FLAGS, Options, config_value, given, resolve

CONFIG = {
    "src": {"server": "a.example:143", "user": "a", "pass": "pa", "tls": "none"},
    "dst": {"server": "b.example:143", "user": "b", "pass": "pb", "tls": "none"},
    "rate_limit": {"down_bps": 5000, "up_bps": 6000, "max_connections": 3},
}


def options(*argv: str, env: dict[str, str] | None = None, rate_limit: bool = True) -> Options:
    data = dict(CONFIG) if rate_limit else {k: v for k, v in CONFIG.items() if k != "rate_limit"}
    config = parse_config(data, "fastsync.json", environ={})
    args = build_parser().parse_args(list(argv))
    return resolve(given(args, env or {}), config, COMMAND_FLAGS[args.command])


@pytest.mark.parametrize(
    ("argv", "env", "field", "expected"),
    [
        # flag > env > config file > default
        (("sync", "--bps-down", "7"), {"FASTSYNC_BPS_DOWN": "8"}, "down_bps", 7),
        (("sync",), {"FASTSYNC_BPS_DOWN": "8"}, "down_bps", 8),
        (("sync",), {}, "down_bps", 5000),
        (("sync",), {}, "up_bps", 6000),
        (("sync",), {}, "max_connections", 3),
        (("sync", "--max-connections", "0"), {}, "max_connections", 0),
        (("sync",), {}, "workers", 4),
        (("sync",), {}, "retries", 5),
        (("sync", "--retries", "0"), {}, "retries", 0),
        (("sync", "--state-dir", "/var/cache/x"), {}, "state_dir", Path("/var/cache/x")),
        (("sync",), {"FASTSYNC_CONFIRM": "no"}, "confirm", False),
        # A command takes only its own flags: check and show do not read the copy caps.
        (("check",), {"FASTSYNC_BPS_DOWN": "8"}, "down_bps", 0),
        (("show",), {"FASTSYNC_WORKERS": "9"}, "workers", 4),
        (("check", "--bodies"), {}, "bodies", True),
        (("show",), {"FASTSYNC_SOURCE_FOLDER": "INBOX"}, "src_folder", None),
    ],
)
def test_precedence(argv: tuple[str, ...], env: dict[str, str], field: str, expected: object) -> None:
    assert getattr(options(*argv, env=env), field) == expected


@pytest.mark.parametrize(
    ("argv", "env", "rate_limit", "field", "explicit"),
    [
        (("sync", "--procs", "4"), {}, True, "workers", True),
        (("sync",), {"FASTSYNC_WORKERS": "4"}, True, "workers", True),
        (("sync",), {"IMAPSYNC_WORKERS": "2"}, True, "workers", True),
        (("sync",), {}, True, "workers", False),
        (("sync", "--max-connections", "0"), {}, True, "max_connections", True),
        # The config file holds every key, defaults filled in: its values are not counted.
        (("sync",), {}, True, "max_connections", False),
        (("batch", "pairs.csv", "--parallel", "2"), {}, True, "parallel", True),
        (("batch", "pairs.csv"), {}, True, "parallel", False),
    ],
)
def test_options_record_what_was_given(argv: tuple[str, ...], env: dict[str, str], rate_limit: bool, field: str,
                                       explicit: bool) -> None:
    """A value equal to the default, given by a flag or a variable, is given all the same."""
    assert (field in options(*argv, env=env, rate_limit=rate_limit).explicit) == explicit


def test_without_a_rate_limit_block_the_defaults_hold() -> None:
    got = options("sync", rate_limit=False)
    assert (got.down_bps, got.up_bps, got.max_connections) == (0, 0, 0)


def test_every_flag_has_an_options_field_and_every_field_a_flag() -> None:
    # carried_uses: what a batch hands each pair from its journal, not an option.
    fields = {f.name for f in dataclasses.fields(Options)} - {"explicit", "carried_uses", "hand_back_waits"}
    assert {flag.dest for flag in ALL_FLAGS} == fields


def test_flags_that_name_a_config_key_name_a_real_one() -> None:
    config = parse_config(CONFIG, "fastsync.json", environ={})
    keyed = [flag for flag in ALL_FLAGS if flag.config_key]
    assert {flag.config_key for flag in keyed} == {
        "rate_limit.down_bps", "rate_limit.up_bps", "rate_limit.max_connections", "include", "exclude",
        "src.auth_user", "dst.auth_user",
        "rate_limit.src_daily_limit", "rate_limit.dst_daily_limit", "rate_limit.limit_window",
        "src.compress", "dst.compress",
    }
    for flag in keyed:
        config_value(config, flag.config_key)


@pytest.mark.parametrize(("argv", "env", "problem"), [
    (("sync", "--max-connections", "2147483648"), {}, "--max-connections: expected a whole number from 0 to 1000000"),
    (("sync",), {"FASTSYNC_MAX_CONNECTIONS": "99999999999999999999"}, "FASTSYNC_MAX_CONNECTIONS: expected a whole"),
    (("sync", "--procs", "4294967296"), {}, "expected a whole number from 1 to 1000000, got 4294967296"),
    (("batch", "p.csv", "--max-connections-per-server", "2147483648"), {}, "expected a whole number from 0 to"),
])
def test_counts_no_machine_has_are_refused(argv: tuple[str, ...], env: dict[str, str], problem: str) -> None:
    from fastsync.records.errors import UsageError

    with pytest.raises(UsageError) as caught:
        options(*argv, env=env)
    assert problem in caught.value.message


def test_a_config_file_connection_count_no_machine_has_is_refused() -> None:
    from fastsync.records.errors import UsageError

    data = {**CONFIG, "rate_limit": {"max_connections": 2**31}}
    config = parse_config(data, "fastsync.json", environ={})
    args = build_parser().parse_args(["sync"])
    with pytest.raises(UsageError) as caught:
        resolve(given(args, {}), config, COMMAND_FLAGS["sync"])
    assert "rate_limit.max_connections: 2147483648 is more than 1000000" in caught.value.message


@pytest.mark.parametrize(("argv", "env"), [
    (("sync", "-d", "Archive"), {}),
    (("sync", "--dest-folder", "Archive", "-n"), {}),
    (("check", "-d", "Archive"), {}),
    (("sync",), {"FASTSYNC_DESTINATION_FOLDER": "Archive"}),
    (("sync",), {"IMAPSYNC_DESTINATION_FOLDER": "Archive"}),
])
def test_a_destination_folder_without_a_source_folder_is_refused(argv: tuple[str, ...], env: dict[str, str]) -> None:
    from fastsync.records.errors import ExitCode, UsageError, exit_code_of

    with pytest.raises(UsageError) as caught:
        options(*argv, env=env)
    assert caught.value.message == (
        "-d/--dest-folder 'Archive' without -s/--src-folder: name the source folder too "
        "(-s FOLDER -d 'Archive'; -s alone keeps the folder's name)"
    )
    assert exit_code_of(caught.value) == ExitCode.USAGE


@pytest.mark.parametrize(("argv", "src", "dst"), [
    (("sync", "-s", "Old", "-d", "Archive"), "Old", "Archive"),
    (("sync", "-s", "Old"), "Old", None),
    (("sync",), None, None),
])
def test_source_folder_with_or_without_a_destination_folder(argv: tuple[str, ...], src: str | None,
                                                             dst: str | None) -> None:
    chosen = options(*argv)
    assert (chosen.src_folder, chosen.dst_folder) == (src, dst)
