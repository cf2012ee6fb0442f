"""Tests of the harness itself that need no server: the private Dovecot's generated settings,
the corpus, and the benchmark's parsers, presets and cap sharing.

tests/dovecot/test_harness.py checks the rest (the server, the seeder) against a real Dovecot.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import pytest

from bench.__main__ import build_parser
from bench import run
from bench.batch import split_cap
from bench.harness.corpus import PROFILES, Message, folders_of, generate
from bench.harness.dovecot import Dovecot
from bench.run import Side, doveadm_invocation, markdown


@pytest.mark.parametrize(
    ("separator", "prefix"), [("/", "INBOX."), (".", "INBOX/"), (".", "Mail."), ("/", "INBOX/")]
)
def test_namespace_prefix_is_inbox_dot_with_dot_only(tmp_path: Path, separator: str, prefix: str) -> None:
    with pytest.raises(ValueError, match="namespace_prefix"):
        Dovecot(tmp_path, {}, separator=separator, namespace_prefix=prefix)


# --------------------------------------------------------------------------- corpus and seeding


def test_generate_is_deterministic() -> None:
    assert generate("tiny", seed=3) == generate("tiny", seed=3)
    assert generate("tiny", seed=3) != generate("tiny", seed=4)
    assert len(generate("small", scale=0.01)) == 200
    with pytest.raises(ValueError):
        generate("nope")
    assert set(PROFILES) == {"tiny", "small", "realistic", "large", "huge", "scale"}


def _headers(message: Message) -> bytes:
    return message.body.split(b"\r\n\r\n", 1)[0]


def test_tiny_profile_shape() -> None:
    messages = generate("tiny")
    counts = Counter(m.folder for m in messages)
    assert counts == {"INBOX": 152, "Projets/Café & [data]": 92, "Archive/Été 2020": 62}
    assert folders_of(messages) == ["INBOX", "Projets", "Projets/Café & [data]", "Archive", "Archive/Été 2020"]
    for message in messages:
        assert message.internaldate.tzinfo is not None and message.internaldate.microsecond == 0
        assert b"\r\n\r\n" in message.body
        assert b"\n" not in message.body.replace(b"\r\n", b""), "bare LF"
        assert b"\r" not in message.body.replace(b"\r\n", b""), "bare CR"
        assert max(len(line) for line in message.body.split(b"\r\n")) <= 998  # RFC 5322 2.1.1
    without_id = [m for m in messages if b"\r\nMessage-ID:" not in _headers(m)]
    assert len(without_id) >= 6
    assert any(not m.body.isascii() for m in messages)
    for folder in counts:
        ids = Counter(
            line for m in messages if m.folder == folder
            for line in _headers(m).split(b"\r\n") if line.startswith(b"Message-ID:")
        )
        assert sorted(ids.values())[-2:] == [2, 2], f"{folder}: one exact copy and one reused Message-Id"


def test_realistic_profile_shape() -> None:
    messages = generate("realistic", seed=7, scale=0.3)
    assert len(messages) == 3000
    sizes = sorted(len(m.body) for m in messages)
    assert 8_000 < sizes[len(sizes) // 2] < 18_000  # median ~12 KB
    assert sizes[-1] > 1_000_000  # multi-MB tail
    folders = {m.folder for m in messages}
    assert {"INBOX", "Sent", "Archive/2019", "Archive/2020", "Projets/Café & [data]"} <= folders
    missing = sum(1 for m in messages if b"\r\nMessage-ID:" not in _headers(m)) / len(messages)
    assert 0.015 < missing < 0.04
    keywords = sum(1 for m in messages if any(not f.startswith("\\") for f in m.flags)) / len(messages)
    assert 0.01 < keywords < 0.04
    assert any(not _headers(m).isascii() for m in messages)  # RFC 6532 raw UTF-8 headers
    years = {m.internaldate.year for m in messages}
    assert len(years) >= 5


def test_generation_speed() -> None:
    started = time.monotonic()
    messages = generate("realistic", scale=0.5)
    assert len(messages) == 5000
    assert time.monotonic() - started < 10


# ---------------------------------------------------------------- benchmark settings (no server started)


@pytest.mark.parametrize(("fsync", "expected"), [(True, "optimized"), (False, "never")])
@pytest.mark.parametrize("mail_format", ["maildir", "mdbox"])
def test_fsync_setting_in_generated_config(tmp_path: Path, mail_format: str, fsync: bool, expected: str) -> None:
    server = Dovecot(tmp_path / "dc", {"x": "y"}, starttls=False, mail_format=mail_format, fsync=fsync)
    settings = [line.strip() for line in server._config().splitlines()]
    assert [s for s in settings if s.startswith("mail_fsync")] == [f"mail_fsync = {expected}"]
    assert any(s.startswith(f"mail_location = {mail_format}:") for s in settings)


def test_fsync_is_off_by_default(tmp_path: Path) -> None:
    # The tests' servers stay fast: fsync only when a benchmark asks for it.
    assert "mail_fsync = never" in Dovecot(tmp_path / "dc", {"x": "y"}, starttls=False)._config().splitlines()


def test_doveadm_runs_with_prefetch(tmp_path: Path) -> None:
    dst = Dovecot(tmp_path / "dst", {"d": "d-pw"}, starttls=False)
    src = Side("127.0.0.1", 1143, "source", "source-pw", False, None)
    invocation = doveadm_invocation(tmp_path, src, dst, "d")
    config = Path(invocation.argv[invocation.argv.index("-c") + 1])
    settings = config.read_text().splitlines()
    assert "mail_prefetch_count = 20" in settings
    assert "imapc_features = rfc822.size fetch-headers" in settings
    assert "source-pw" not in " ".join(invocation.argv)


def test_doveadm_over_tls_names_the_ca_by_path(tmp_path: Path) -> None:
    # imapc's ssl_client_ca_file is a path: "<file" (contents) makes it fail and doveadm crash.
    dst = Dovecot(tmp_path / "dst", {"d": "d-pw"}, starttls=False)
    src = Side("127.0.0.1", 1993, "source", "source-pw", True, "/some/ca.pem")
    invocation = doveadm_invocation(tmp_path, src, dst, "d")
    settings = Path(invocation.argv[invocation.argv.index("-c") + 1]).read_text().splitlines()
    assert "imapc_ssl = imaps" in settings
    assert "ssl_client_ca_file = /some/ca.pem" in settings


@pytest.mark.skipif(os.geteuid() != 0, reason="the chroot is used only when Dovecot runs as root")
@pytest.mark.parametrize(("chroot", "expected"), [(True, "/./%u"), (False, "/mail/%u")])
def test_chroot_setting_in_generated_config(tmp_path: Path, chroot: bool, expected: str) -> None:
    server = Dovecot(tmp_path / "dc", {"x": "y"}, starttls=False, chroot=chroot)
    config = server._config()
    home = next(line for line in config.splitlines() if "home=" in line)
    assert home.endswith(expected)
    assert ("valid_chroot_dirs" in config) == chroot


@pytest.mark.parametrize(
    ("argv", "storage", "fsync"),
    [
        (["--storage", "maildir", "--fsync"], "maildir", True),
        (["--storage", "mdbox"], "mdbox", False),
        ([], "mdbox", False),
    ],
)
def test_run_parser_storage_and_fsync(argv: list[str], storage: str, fsync: bool) -> None:
    args = build_parser().parse_args(["run", "--out", "/nonexistent", *argv])
    assert (args.storage, args.fsync) == (storage, fsync)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], (0.1, True, 25.0, 1_000_000, "fastsync:8,doveadm,mbsync", 1)),
        (["--repeat", "3", "--tools", "fastsync:4"], (0.1, True, 25.0, 1_000_000, "fastsync:4", 3)),
    ],
)
def test_wan_tls_preset_and_the_flags_after_it(argv: list[str], expected: tuple[object, ...]) -> None:
    from bench.__main__ import expand_presets

    args = build_parser().parse_args(expand_presets(["run", "--preset", "wan-tls", *argv, "--out", "/nonexistent"]))
    assert (args.scale, args.tls, args.wan_delay_ms, args.wan_rate, args.tools, args.repeat) == expected
    assert args.profile == "realistic"


def test_unknown_preset_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.__main__ import expand_presets

    with pytest.raises(SystemExit):
        build_parser().parse_args(expand_presets(["run", "--preset=lan", "--out", "/nonexistent"]))
    assert "--preset" in capsys.readouterr().err


def test_run_parser_refuses_other_storage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--out", "/nonexistent", "--storage", "sdbox"])
    assert "--storage" in capsys.readouterr().err


def test_results_header_names_storage_and_fsync() -> None:
    meta: dict[str, object] = {"profile": "realistic", "scale": 0.3, "messages": 3000, "mb": 120.0,
                               "wan_delay_ms": 0.0, "tls": False, "rounds": 1, "storage": "maildir",
                               "mail_fsync": "optimized"}
    header = markdown(meta, [], {}).splitlines()[0]
    assert "storage maildir, mail_fsync optimized" in header


# ---------------------------------------------------------------- python -m bench batch


@pytest.mark.parametrize(
    ("cap", "per_job", "expected"), [(8, 2, (4, 2)), (8, 3, (2, 3)), (1, 2, (1, 1)), (5, 1, (5, 1))]
)
def test_parallel_jobs_hold_the_cap(cap: int, per_job: int, expected: tuple[int, int]) -> None:
    jobs, connections = split_cap(cap, per_job)
    assert (jobs, connections) == expected and jobs * connections <= cap


@pytest.mark.parametrize(
    ("size_bytes", "spec", "meta", "expected"),
    [
        # wan-tls: 27 MB over 8 connections of 1 MB/s, 50 ms round trip, a TLS login of 5 round trips.
        (27_000_000, "fastsync:8", {"rate_bytes_per_s": 1_000_000, "wan_delay_ms": 25, "tls": True}, 3.375 + 0.25),
        # doveadm reaches the source over one connection.
        (27_000_000, "doveadm", {"rate_bytes_per_s": 1_000_000, "wan_delay_ms": 25, "tls": False}, 27 + 0.2),
        # No cap: only the login's round trips.
        (27_000_000, "fastsync:4", {"rate_bytes_per_s": 0, "wan_delay_ms": 25, "tls": False}, 0.2),
        # Loopback: nothing.
        (27_000_000, "mbsync", {"rate_bytes_per_s": 0, "wan_delay_ms": 0, "tls": True}, 0.0),
    ],
)
def test_link_floor(size_bytes: int, spec: str, meta: dict[str, object], expected: float) -> None:
    assert run.link_floor_s(size_bytes, run.connections_of(spec), meta) == pytest.approx(expected)


def test_deflate_ratio_is_that_of_one_raw_deflate_stream() -> None:
    bodies = [b"Subject: same\r\n\r\n" + b"text " * 200, b"Subject: same\r\n\r\n" + b"text " * 200, b""]
    ratio = run.deflate_ratio(bodies)
    assert 0 < ratio < 0.1
    # Random bytes do not compress: the ratio says so, a little over 1.
    assert 1.0 <= run.deflate_ratio([os.urandom(50_000)]) < 1.01
    assert run.deflate_ratio([]) == 1.0


def test_results_table_on_loopback_has_no_link_ratio() -> None:
    """On loopback the link costs nothing: the ratio column says so instead of dividing by 0."""
    meta = {"profile": "small", "scale": 1.0, "messages": 10, "mb": 1.0, "wan_delay_ms": 0, "tls": False,
            "rounds": 1, "bytes": 1_000_000, "deflate_ratio": 0.4}
    row = {"tool": "fastsync:8", "wall_s": 1.0, "messages_per_s": 10.0, "mb_per_s": 1.0, "cpu_s": 0.5,
           "cpu_s_per_10k_messages": 500.0, "cpu_s_per_gb": 500.0, "system_cpu_s": 1.0, "src_server_cpu_s": 0.1,
           "dst_server_cpu_s": 0.1, "peak_rss_tree_mb": 100.0, "peak_pss_tree_mb": 60.0, "rerun_wall_s": None,
           "verification": "ok", "exit_codes": [0], "note": "", "password_in_argv": False}
    line = next(x for x in markdown(meta, [row], {}).splitlines() if x.startswith("| fastsync:8"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[6:10] == ["0.00", "-", "0.00", "-"]
    assert cells[17] == "60"


def test_physical_floor_is_the_largest_message_on_one_link() -> None:
    # wan-tls: 40.3 MB over 8 connections of 1 MB/s is 5.29 s with a login's round trips;
    # its largest message, 5.82 MB, alone takes longer on the one connection it crosses.
    meta: dict[str, object] = {"rate_bytes_per_s": 1_000_000, "wan_delay_ms": 25, "tls": True}
    link = run.link_floor_s(40_300_000, 8, meta)
    assert link == pytest.approx(40.3 / 8 + 5 * 0.05)
    physical = run.physical_floor_s(40_300_000, 5_817_096, 8, meta)
    assert physical == pytest.approx(5.817096 + 7 * 0.05)
    # A corpus of small messages: the floor stands.
    assert run.physical_floor_s(40_300_000, 100_000, 8, meta) == link
    assert run.deflated_bytes(b"a" * 100_000) < 1_000


def test_results_table_shows_both_floors() -> None:
    meta: dict[str, object] = {
        "profile": "realistic", "scale": 0.1, "messages": 1000, "mb": 40.3, "wan_delay_ms": 25, "tls": True,
        "rounds": 1, "rate_bytes_per_s": 1_000_000, "bytes": 40_300_000, "largest_bytes": 5_817_096,
        "largest_deflated_bytes": 4_408_878, "deflate_ratio": 0.56,
    }
    row: dict[str, object] = {
        "tool": "fastsync:8", "wall_s": 7.5, "messages_per_s": 133, "mb_per_s": 5.4, "rerun_wall_s": None,
        "verification": "ok", "exit_codes": [0], "cpu_s": 1.0, "system_cpu_s": 5.0, "src_server_cpu_s": 0.5,
        "dst_server_cpu_s": 0.5, "peak_rss_tree_mb": 300, "note": "", "password_in_argv": False,
    }
    line = markdown(meta, [row], {}).splitlines()[-1]
    assert "| 5.29 | 1.42x | 6.17 | 1.22x |" in line, line
    zlib_line = markdown({**meta, "imap_zlib": True}, [row], {}).splitlines()[-1]
    # With COMPRESS the largest message's own deflated size makes its floor.
    assert "| 3.07 | 2.44x | 4.76 | 1.58x |" in zlib_line, zlib_line


def test_wire_log_names_commands_not_their_arguments() -> None:
    from bench.harness.wanproxy import commands_in

    assert commands_in(b"a1 LOGIN user secret-pw\r\na2 CAPABILITY\r\n") == ("LOGIN", "CAPABILITY")
    assert commands_in(b"A7 UID FETCH 1:5 (BODY.PEEK[])\r\nA8 APPEND INBOX {3+}\r\n") == ("UID FETCH", "APPEND")
    assert commands_in(b"\x16\x03\x01 random TLS bytes") == ()


def test_timeline_draws_each_connection_per_100_ms() -> None:
    from bench.harness.wanproxy import Chunk, WireLog
    from bench.timeline import timeline

    log = WireLog({1: 100.0}, [
        Chunk(1, "up", 40, 100.05, 100.05, ("LOGIN",)),
        *(Chunk(1, "down", 50_000, 100.0 + t / 10, 100.0 + t / 10 + 0.01) for t in range(2, 5)),
        Chunk(1, "up", 100_000, 100.61, 100.62, ("APPEND",)),
    ])
    text = timeline({"src": log}, 100.0, 100.8, 1_000_000)
    assert "src #1: accepted 0.00 s, last byte 0.62 s, down 0.15 MB, up 0.10 MB; first LOGIN 0.05, APPEND 0.62" in text
    assert "  down |..555...|" in text
    assert "  up   |0.....9.|" in text
    assert "src busy |00111010|" in text
    assert "secret" not in text
