"""Unit tests of the command line: flags, environment variables and their precedence."""

from __future__ import annotations

import pytest

from fastsync.cli import build_parser
from fastsync.settings.options import ALL_FLAGS
from fastsync.settings.options import given as resolve
from fastsync.records.errors import UsageError


def parse(*argv: str, env: dict[str, str] | None = None) -> dict[str, object]:
    return resolve(build_parser().parse_args(list(argv)), env or {})


@pytest.mark.parametrize(
    ("argv", "env", "key", "expected"),
    [
        (("sync",), {}, "workers", None),
        (("sync",), {"FASTSYNC_WORKERS": "6"}, "workers", 6),
        (("sync", "--procs", "3"), {"FASTSYNC_WORKERS": "6"}, "workers", 3),
        (("sync", "-w", "2"), {}, "workers", 2),
        (("sync", "--workers", "5"), {}, "workers", 5),
        (("sync",), {"FASTSYNC_CONFIRM": "yes"}, "confirm", True),
        (("sync",), {"FASTSYNC_CONFIRM": "0"}, "confirm", False),
        (("sync", "--confirm"), {"FASTSYNC_CONFIRM": "0"}, "confirm", True),
        (("show",), {"FASTSYNC_VERBOSE": "true"}, "verbose", True),
        (("show", "-q"), {}, "quiet", True),
        (("sync",), {"FASTSYNC_SOURCE_FOLDER": "INBOX"}, "src_folder", "INBOX"),
        (("sync", "-s", "Sent"), {"FASTSYNC_SOURCE_FOLDER": "INBOX"}, "src_folder", "Sent"),
        (("sync",), {"FASTSYNC_DESTINATION_FOLDER": "Old"}, "dst_folder", "Old"),
        (("sync",), {"FASTSYNC_BPS_DOWN": "1000"}, "down_bps", 1000),
        (("sync", "--bps-up", "7"), {"FASTSYNC_BPS_UP": "1000"}, "up_bps", 7),
        (("sync",), {"FASTSYNC_MAX_CONNECTIONS": "3"}, "max_connections", 3),
        (("sync", "-c", "a.yaml"), {"FASTSYNC_CONFIG": "b.json"}, "config", "a.yaml"),
        (("show",), {"FASTSYNC_CONFIG": "b.json"}, "config", "b.json"),
        (("sync", "-n"), {}, "dry_run", True),
        (("show",), {"FASTSYNC_JSON": "1"}, "json", True),
        (("check", "--json"), {"FASTSYNC_JSON": "0"}, "json", True),
        (("sync",), {"FASTSYNC_LOG_FILE": "run.log"}, "log_file", "run.log"),
        (("sync", "--log-format", "json"), {"FASTSYNC_LOG_FORMAT": "text"}, "log_format", "json"),
        (("sync",), {"FASTSYNC_SYNC_FLAGS": "on"}, "sync_flags", True),
        (("check",), {"FASTSYNC_BODIES": "yes"}, "bodies", True),
        (("check", "-s", "INBOX"), {}, "src_folder", "INBOX"),
        # imapsync-go's variables are aliases; the FASTSYNC_ one wins when both are set.
        (("sync",), {"IMAPSYNC_WORKERS": "7"}, "workers", 7),
        (("sync",), {"IMAPSYNC_WORKERS": "7", "FASTSYNC_WORKERS": "6"}, "workers", 6),
        (("sync", "-w", "2"), {"IMAPSYNC_WORKERS": "7"}, "workers", 2),
        (("show",), {"IMAPSYNC_CONFIG": "c.json"}, "config", "c.json"),
        (("show",), {"IMAPSYNC_CONFIG": "c.json", "FASTSYNC_CONFIG": "b.json"}, "config", "b.json"),
        (("sync",), {"IMAPSYNC_BPS_DOWN": "1000"}, "down_bps", 1000),
        (("sync",), {"IMAPSYNC_CONFIRM": "1"}, "confirm", True),
        (("sync",), {"IMAPSYNC_CONFIRM": "1", "FASTSYNC_CONFIRM": "0"}, "confirm", False),
        (("sync",), {"IMAPSYNC_SOURCE_FOLDER": "Sent"}, "src_folder", "Sent"),
        (("check",), {"IMAPSYNC_BODIES": "yes"}, "bodies", True),
        # -c before the command, as imapsync-go documents it; after it too; after wins.
        (("-c", "a.yaml", "show"), {}, "config", "a.yaml"),
        (("--config", "a.yaml", "sync", "-n"), {}, "config", "a.yaml"),
        (("-c", "a.yaml", "check", "-c", "b.yaml"), {}, "config", "b.yaml"),
        (("-c", "a.yaml", "show"), {"FASTSYNC_CONFIG": "b.json"}, "config", "a.yaml"),
        (("show",), {}, "config", None),
    ],
)
def test_flag_beats_env(argv: tuple[str, ...], env: dict[str, str], key: str, expected: object) -> None:
    assert parse(*argv, env=env)[key] == expected


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FASTSYNC_WORKERS": "many"}, "environment variable FASTSYNC_WORKERS='many': expected a whole number"),
        ({"FASTSYNC_WORKERS": "0"}, "--procs / FASTSYNC_WORKERS: expected a whole number >= 1, got 0"),
        ({"FASTSYNC_CONFIRM": "maybe"}, "environment variable FASTSYNC_CONFIRM='maybe': expected 1/0"),
        ({"FASTSYNC_BPS_DOWN": "-5"}, "environment variable FASTSYNC_BPS_DOWN='-5': expected a size such as 500k"),
        ({"FASTSYNC_LOG_FORMAT": "xml"}, "environment variable FASTSYNC_LOG_FORMAT='xml': expected one of text, json"),
        # The message names the variable that was read.
        ({"IMAPSYNC_WORKERS": "many"}, "environment variable IMAPSYNC_WORKERS='many': expected a whole number"),
        ({"IMAPSYNC_WORKERS": "0"}, "--procs / IMAPSYNC_WORKERS: expected a whole number >= 1, got 0"),
        ({"IMAPSYNC_CONFIRM": "maybe"}, "environment variable IMAPSYNC_CONFIRM='maybe': expected 1/0"),
        ({"IMAPSYNC_LOG_FORMAT": "xml", "FASTSYNC_LOG_FORMAT": "json"}, None),
        ({"IMAPSYNC_BPS_UP": "-1", "FASTSYNC_BPS_UP": "x"}, "environment variable FASTSYNC_BPS_UP='x'"),
    ],
)
def test_bad_env_values_are_usage_errors(env: dict[str, str], message: str | None) -> None:
    if message is None:  # the alias is not read when the FASTSYNC_ variable is set
        parse("sync", env=env)
        return
    with pytest.raises(UsageError) as caught:
        parse("sync", env=env)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize("spelling", ["--procs", "-w", "--workers"])
def test_a_bad_flag_value_names_the_flag_as_help_shows_it(spelling: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse("sync", spelling, "0", env={"IMAPSYNC_WORKERS": "3"})
    assert str(caught.value) == "--procs: expected a whole number >= 1, got 0"


@pytest.mark.parametrize(
    ("env", "suffix"),
    [("FASTSYNC_CONFIG", "CONFIG"), ("FASTSYNC_SOURCE_FOLDER", "SOURCE_FOLDER"), ("FASTSYNC_BPS_DOWN", "BPS_DOWN")],
)
def test_each_variable_has_the_imapsync_alias_of_the_same_suffix(env: str, suffix: str) -> None:
    flag = next(f for f in ALL_FLAGS if f.env == env)
    assert flag.alias == f"IMAPSYNC_{suffix}"
    assert flag.env_names == f"{env} (or IMAPSYNC_{suffix})"


def test_every_flag_names_its_env_var_in_the_help() -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    flat = " ".join(" ".join(commands[name].format_help() for name in commands).split())
    for flag in ALL_FLAGS:
        assert f"[env: {flag.env} (or {flag.alias})]" in flat
    assert len({f.env for f in ALL_FLAGS}) == len(ALL_FLAGS)
    assert all(f.env.startswith("FASTSYNC_") for f in ALL_FLAGS)


def test_the_global_config_flag_is_in_the_top_level_help() -> None:
    flat = " ".join(build_parser().format_help().split())
    assert "-c PATH, --config PATH" in flat
    assert "[env: FASTSYNC_CONFIG (or IMAPSYNC_CONFIG)]" in flat
