"""Unit tests of the values users type: sizes, ages and regular expressions (fastsync/settings/values.py),
and of the flags, variables and config keys that read them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastsync.cli import build_parser
from fastsync.settings.config import load_config, parse_config
from fastsync.records.errors import ConfigError, UsageError
from fastsync.settings.options import COMMAND_FLAGS, Options, given, resolve
from fastsync.settings.values import AGE_EXPECTED, SIZE_EXPECTED, parse_age_days, parse_size, regex_problem

CONFIG = {
    "src": {"server": "a.example:143", "user": "a", "pass": "pa", "tls": "none"},
    "dst": {"server": "b.example:143", "user": "b", "pass": "pb", "tls": "none"},
}


@pytest.mark.parametrize(
    ("text", "size_bytes"),
    [
        ("0", 0),
        ("300", 300),
        ("500k", 500_000),
        ("500K", 500_000),
        ("500kB", 500_000),
        ("25M", 25_000_000),
        ("25m", 25_000_000),
        ("1G", 1_000_000_000),
        ("2T", 2_000_000_000_000),
        ("1Ki", 1024),
        ("500Ki", 512_000),
        ("1MiB", 1_048_576),
        ("1gi", 1_073_741_824),
        ("1.5M", 1_500_000),
        ("0.5Ki", 512),
        ("2 M", 2_000_000),
        (" 2M ", 2_000_000),
        ("7B", 7),
    ],
)
def test_parse_size(text: str, size_bytes: int) -> None:
    assert parse_size(text) == size_bytes


@pytest.mark.parametrize("text", ["", "M", "2X", "-5", "1.5", "2MM", "2 Mo", "1e6", "2Mi5", "k5", "0x10", "2Bi"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_size(text)
    assert str(caught.value) == SIZE_EXPECTED


@pytest.mark.parametrize(
    ("text", "days"),
    [("0", 0), ("30", 30), ("30d", 30), ("30D", 30), ("12w", 84), ("2y", 730), (" 7d ", 7), ("1 w", 7)],
)
def test_parse_age_days(text: str, days: int) -> None:
    assert parse_age_days(text) == days


@pytest.mark.parametrize("text", ["", "d", "12h", "30m", "1.5d", "-3d", "3dd", "2y3d"])
def test_parse_age_refuses(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_age_days(text)
    assert str(caught.value) == AGE_EXPECTED


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("^Trash$", ""),
        ("Sent|Drafts", ""),
        ("a{1,2},b", ""),
        ("(", "missing ), unterminated subpattern at position 0"),
        ("[a", "unterminated character set at position 0"),
        ("*x", "nothing to repeat at position 0"),
    ],
)
def test_regex_problem(pattern: str, problem: str) -> None:
    assert regex_problem(pattern) == problem


# --------------------------------------------------------------------------- flags and variables


def options(*argv: str, env: dict[str, str] | None = None, config: dict[str, object] | None = None) -> Options:
    parsed = parse_config({**CONFIG, **(config or {})}, "fastsync.json", environ={})
    args = build_parser().parse_args(list(argv))
    return resolve(given(args, env or {}), parsed, COMMAND_FLAGS[args.command])


@pytest.mark.parametrize(
    ("argv", "env", "config", "field", "expected"),
    [
        (("sync", "--bps-down", "2M"), {}, {}, "down_bps", 2_000_000),
        (("sync", "--bps-up", "500k"), {}, {}, "up_bps", 500_000),
        (("sync",), {"FASTSYNC_BPS_UP": "1Mi"}, {}, "up_bps", 1_048_576),
        (("sync",), {}, {"rate_limit": {"down_bps": "2M"}}, "down_bps", 2_000_000),
        (("sync", "--bps-down", "3M"), {"FASTSYNC_BPS_DOWN": "4M"}, {"rate_limit": {"down_bps": "2M"}},
         "down_bps", 3_000_000),
        (("sync", "--max-size", "25M"), {}, {}, "max_size_bytes", 25_000_000),
        (("check",), {"FASTSYNC_MIN_SIZE": "1k"}, {}, "min_size_bytes", 1000),
        (("sync",), {}, {}, "max_size_bytes", 0),
        (("sync", "--max-age", "2y"), {}, {}, "max_age_days", 730),
        (("check", "--min-age", "30"), {}, {}, "min_age_days", 30),
        (("sync",), {"FASTSYNC_MAX_AGE": "12w"}, {}, "max_age_days", 84),
        (("sync",), {}, {}, "max_age_days", None),
        # Repeatable; the flag replaces the config's list; the variable holds one per line.
        (("sync", "--exclude", "^Trash$", "--exclude", "Junk|Spam"), {}, {}, "exclude", ("^Trash$", "Junk|Spam")),
        (("show", "--include", "^INBOX"), {}, {"include": ["^Sent"]}, "include", ("^INBOX",)),
        (("show",), {}, {"include": ["^Sent", "^Archive"]}, "include", ("^Sent", "^Archive")),
        (("check",), {}, {"exclude": "^Trash$"}, "exclude", ("^Trash$",)),
        (("sync",), {"FASTSYNC_EXCLUDE": "^Trash$\na{1,2},b\n\n"}, {}, "exclude", ("^Trash$", "a{1,2},b")),
        (("sync", "--exclude", "x"), {"FASTSYNC_EXCLUDE": "y"}, {"exclude": ["z"]}, "exclude", ("x",)),
        (("sync",), {"FASTSYNC_EXCLUDE": "y"}, {"exclude": ["z"]}, "exclude", ("y",)),
        (("sync",), {}, {}, "include", ()),
        # show takes the folder filters but not the message ones.
        (("show",), {"FASTSYNC_MAX_AGE": "3"}, {}, "max_age_days", None),
    ],
)
def test_new_options_resolve(
    argv: tuple[str, ...], env: dict[str, str], config: dict[str, object], field: str, expected: object
) -> None:
    assert getattr(options(*argv, env=env, config=config), field) == expected


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (("sync", "--bps-down", "2X"), {}, f"--bps-down '2X': {SIZE_EXPECTED}"),
        (("sync", "--max-size", "-1"), {}, f"--max-size '-1': {SIZE_EXPECTED}"),
        (("sync",), {"FASTSYNC_MAX_SIZE": "big"}, f"environment variable FASTSYNC_MAX_SIZE='big': {SIZE_EXPECTED}"),
        (("sync", "--max-age", "12h"), {}, f"--max-age '12h': {AGE_EXPECTED}"),
        (("check",), {"FASTSYNC_MIN_AGE": "soon"}, f"environment variable FASTSYNC_MIN_AGE='soon': {AGE_EXPECTED}"),
        (("show", "--exclude", "("), {},
         "--exclude: '(' is not a valid regular expression: missing ), unterminated subpattern at position 0"),
        (("sync",), {"FASTSYNC_INCLUDE": "^INBOX\n[a"},
         ("environment variable FASTSYNC_INCLUDE: '[a' is not a valid regular expression: "
          "unterminated character set at position 0")),
        (("sync", "--max-age", "10d", "--min-age", "30d"), {},
         "--max-age 10 days and --min-age 30 days leave no message; --max-age must be more days than --min-age"),
        (("sync", "--max-age", "7", "--min-age", "7"), {},
         "--max-age 7 days and --min-age 7 days leave no message; --max-age must be more days than --min-age"),
        (("check", "--max-size", "1k", "--min-size", "2k"), {},
         "--min-size 2000 bytes is above --max-size 1000 bytes; no message fits"),
    ],
)
def test_bad_values_are_one_line_usage_errors(argv: tuple[str, ...], env: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError) as caught:
        options(*argv, env=env)
    assert str(caught.value) == message
    assert "\n" not in str(caught.value)


# --------------------------------------------------------------------------- the config file


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"exclude": ["^Trash$", "("]},
         'exclude[1] (line 16): "(" is not a valid regular expression: missing ), unterminated subpattern at position 0'),
        ({"include": "[a"},
         'include (line 14): "[a" is not a valid regular expression: unterminated character set at position 0'),
        ({"include": {"a": 1}},
         'include (line 14): expected a list of regular expressions, e.g. ["^Trash$"], got a mapping'),
        ({"exclude": [3]}, "exclude[0] (line 15): expected a regular expression, got 3; put it in quotes"),
        ({"rate_limit": {"up_bps": "2X"}},
         ('rate_limit.up_bps (line 15): expected a whole number of bytes per second >= 0 or a size such as 2M or '
          '500k (k, M, G: powers of 1000; Ki, Mi, Gi: of 1024), got "2X"')),
    ],
)
def test_config_errors_name_file_field_and_line(tmp_path: Path, extra: dict[str, object], message: str) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({**CONFIG, **extra}, indent=2))
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert str(caught.value) == f"{path}: {message}"


def test_config_sizes_and_patterns(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "src: {server: 'a:143', user: a, pass: pa, tls: none}\n"
        "dst: {server: 'b:143', user: b, pass: pb, tls: none}\n"
        "exclude:\n  - ^Trash$\n  - 'Junk|Spam'\n"
        "rate_limit:\n  down_bps: 2M\n  up_bps: 500Ki\n  max_connections: 4\n"
    )
    config = load_config(path, environ={})
    assert config.exclude == ("^Trash$", "Junk|Spam")
    assert config.include == ()
    assert (config.rate_limit.down_bps, config.rate_limit.up_bps, config.rate_limit.max_connections) == (
        2_000_000, 512_000, 4,
    )
