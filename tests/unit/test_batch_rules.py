"""Unit tests of batch's pure rules: the pairs file, the connection budget, the journal."""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fastsync.batch.cluster import check_address
from fastsync.batch.inputs import load_batch
from fastsync.batch.scheduler import Allocation, allocate, budget
from fastsync.records.errors import ConfigError, UsageError
from fastsync.batch.journal import Entry, Journal
from fastsync.settings.options import Options
from fastsync.batch.parent import read_job, spawn, write_job


def _servers(tmp_path: Path, **side: object) -> Path:
    path = tmp_path / "servers.yaml"
    path.write_text(yaml.safe_dump({
        "src": {"server": "old.example:143", "tls": "starttls", **side},
        "dst": {"server": "new.example:993"},
    }))
    return path


def _pairs(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pairs.csv"
    path.write_text(text)
    return path


def test_pairs_complete_the_servers_file(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("from-file\n")
    batch = load_batch(str(_servers(tmp_path)), str(_pairs(tmp_path, (
        "# migration of example\nsrc_user;src_pass;src_pass_file;dst_user;dst_pass\n\n"
        "a@old;p1;;a@new;p2\nb@old;;pw;b@new;\"p;3\"\n"
    ))))
    assert [p.line for p in batch.pairs] == [4, 5]
    first, second = (p.config for p in batch.pairs)
    assert (first.src.user, first.src.password, first.dst.password) == ("a@old", "p1", "p2")
    assert (second.src.password, second.dst.password) == ("from-file", "p;3")
    assert first.src.server == "old.example:143" and first.dst.tls == "implicit"
    assert sorted(batch.secrets) == sorted(["p1", "p2", "from-file", "p;3"])


@pytest.mark.parametrize(("text", "problem"), [
    ("src_user,src_pass,dst_user,dst_pass\na,,b,x\n", "pairs.csv: line 2: src: none is given"),
    ("src_user,src_pass,dst_user,dst_pass\na,1,,x\n", "pairs.csv: line 2: dst_user is empty"),
    ("src_user,src_pass,dst_user,dst_pass\na,1,b\n", "pairs.csv: line 2: 3 fields where the header has 4"),
    ("src_user,src_password,dst_user,dst_pass\n", "pairs.csv: line 1: unknown column 'src_password'"),
    ("src_usr,src_pass,dst_user,dst_pass\n",
     "pairs.csv: line 1: unknown column 'src_usr'; did you mean 'src_user'? expected src_user,"),
    ("src_user,src_pass,dst_user,dst_passwd\n", "unknown column 'dst_passwd'; did you mean 'dst_pass'? expected"),
    ("src_user,src_pass,dst_user,dst_pass,colour\n", "unknown column 'colour'; expected src_user,"),
    ("src_user,src_pass,dst_pass\n", "pairs.csv: line 1: no dst_user column"),
    ("src_user,src_pass,dst_user,dst_pass\n", "pairs.csv: no account pairs"),
    ("", "pairs.csv: empty"),
])
def test_bad_pairs_files_name_the_line(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_batch(str(_servers(tmp_path)), str(_pairs(tmp_path, text)))
    assert problem in caught.value.message
    assert "secret" not in caught.value.message


@pytest.mark.parametrize(("raw", "expected"), [
    # Excel's "CSV UTF-8" starts the file with a byte order mark.
    (b"\xef\xbb\xbfsrc_user,src_pass,dst_user,dst_pass\r\na,p1,b,p2\r\n", ("a", "p1", "b", "p2")),
    # A password's own spaces belong to it; the user names around it are trimmed.
    (b"src_user,src_pass,dst_user,dst_pass\n a , p1 ,b,\t p2\n", ("a", " p1 ", "b", "\t p2")),
    (b'src_user;src_pass;dst_user;dst_pass\na;" quoted ";b;"x""y"\n', ("a", " quoted ", "b", 'x"y')),
])
def test_pairs_values_as_written(tmp_path: Path, raw: bytes, expected: tuple[str, ...]) -> None:
    (tmp_path / "pairs.csv").write_bytes(raw)
    config = load_batch(str(_servers(tmp_path)), str(tmp_path / "pairs.csv")).pairs[0].config
    assert (config.src.user, config.src.password, config.dst.user, config.dst.password) == expected


def test_a_quoted_line_break_keeps_the_line_numbers(tmp_path: Path) -> None:
    batch = load_batch(str(_servers(tmp_path)), str(_pairs(tmp_path, (
        'src_user,src_pass,dst_user,dst_pass\na,"two\nlines",b,p\n\n# next\nc,p3,d,p4\n'
    ))))
    assert [p.line for p in batch.pairs] == [2, 6]
    assert batch.pairs[0].config.src.password == "two\nlines"
    with pytest.raises(ConfigError) as caught:
        load_batch(str(_servers(tmp_path)), str(_pairs(tmp_path, (
            'src_user,src_pass,dst_user,dst_pass\na,"x\ny",b,p\nc,p3\n'
        ))))
    assert "pairs.csv: line 4: 2 fields where the header has 4" in caught.value.message


@pytest.mark.parametrize(("text", "problem"), [
    ("src_user,src_pass,dst_user,dst_pass,src_pass\na,1,b,2,3\n", "line 1: column 'src_pass' is named twice"),
    ("src_user,src_pass,dst_user,DST_USER,dst_pass\na,1,b,c,2\n", "line 1: column 'dst_user' is named twice"),
    ('src_user,src_pass,dst_user,dst_pass\na,"never closed,b,2\n', "line 2: a quoted value is not closed"),
])
def test_ambiguous_pairs_files_are_refused(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_batch(str(_servers(tmp_path)), str(_pairs(tmp_path, text)))
    assert problem in caught.value.message


def test_the_servers_file_holds_no_user(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_batch(str(_servers(tmp_path, user="x")), str(_pairs(tmp_path, "src_user,src_pass,dst_user,dst_pass\n")))
    assert "src.user: a batch takes users and passwords from the pairs file" in caught.value.message


@pytest.mark.parametrize(("workers", "max_connections", "cap", "same", "expected"), [
    (4, 0, 0, False, 5),
    (4, 3, 0, False, 3),
    (4, 0, 4, False, 4),
    (4, 0, 4, True, 2),
    (1, 0, 2, True, 1),
    (8, 0, 20, False, 9),
])
def test_budget_per_side(workers: int, max_connections: int, cap: int, same: bool, expected: int) -> None:
    options = dataclasses.replace(Options(), workers=workers, max_connections=max_connections,
                                  max_connections_per_server=cap)
    assert budget(options, same) == expected


def test_one_connection_per_server_cannot_serve_both_sides() -> None:
    with pytest.raises(UsageError):
        budget(dataclasses.replace(Options(), max_connections_per_server=1), True)


def _options(*given: str, **values: object) -> Options:
    """Options as `resolve` makes them: *values* set, and the fields in *given* given by the user."""
    return dataclasses.replace(Options(), **values, explicit=frozenset(given))


@pytest.mark.parametrize(("options", "same", "pairs", "expected"), [
    # Neither --procs nor --parallel: pairs first (at most 4 and the pairs to do), then workers.
    (_options(max_connections_per_server=8), False, 20, Allocation(4, 2, 1, fitted=True)),
    (_options(max_connections_per_server=8), True, 20, Allocation(4, 1, 1, fitted=True)),
    (_options(max_connections_per_server=8), False, 2, Allocation(2, 4, 3, fitted=True)),
    (_options(max_connections_per_server=8), False, 1, Allocation(1, 5, 4, fitted=True)),
    (_options(max_connections_per_server=20), False, 20, Allocation(4, 5, 4, fitted=True)),
    (_options(max_connections_per_server=12), False, 20, Allocation(4, 3, 2, fitted=True)),
    (_options(max_connections_per_server=3), False, 20, Allocation(3, 1, 1, fitted=True)),
    (_options(max_connections_per_server=3), True, 20, Allocation(1, 1, 1, fitted=True)),
    (_options(max_connections_per_server=8), False, 0, Allocation(1, 5, 4, fitted=True)),
    # --max-connections still bounds each pair.
    (_options("max_connections", max_connections_per_server=20, max_connections=2), False, 20,
     Allocation(4, 2, 1, fitted=True)),
    # No cap: as before, 4 pairs of --procs 4.
    (_options(), False, 20, Allocation(4, 5, 4)),
    # --procs given (flag, variable or config): honoured, pairs fit around it.
    (_options("workers", workers=4, max_connections_per_server=8), False, 20, Allocation(1, 5, 4)),
    (_options("workers", workers=1, max_connections_per_server=8), False, 20, Allocation(4, 2, 1)),
    (_options("workers", workers=4, max_connections_per_server=4), False, 20, Allocation(1, 4, 3)),
    # --parallel given without --procs: that many pairs, each with the workers that fit.
    (_options("parallel", parallel=2, max_connections_per_server=8), False, 20, Allocation(2, 4, 3, fitted=True)),
    (_options("parallel", parallel=4, max_connections_per_server=8), False, 20, Allocation(4, 2, 1, fitted=True)),
    (_options("parallel", parallel=16, max_connections_per_server=8), False, 20, Allocation(8, 1, 1, fitted=True)),
    # Both given: honoured, within the caps.
    (_options("parallel", "workers", parallel=2, workers=4, max_connections_per_server=8), False, 20,
     Allocation(2, 5, 4)),
    # --parallel without a cap: as given, each pair with its --procs.
    (_options("parallel", parallel=2), False, 20, Allocation(2, 5, 4)),
])
def test_allocation_under_the_cap(options: Options, same: bool, pairs: int, expected: Allocation) -> None:
    assert allocate(options, same, pairs) == expected


def test_allocation_with_too_small_a_cap_is_refused() -> None:
    with pytest.raises(UsageError):
        allocate(_options(max_connections_per_server=1), True, 4)


def test_the_journal_keeps_outcomes_and_no_line_text(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path, "/batches/pairs.csv")
    journal.started("k1", 2, "a", "b")
    assert journal.get("k1") is not None and journal.get("k1").outcome == "running"  # type: ignore[union-attr]
    journal.finished("k1", Entry("exact", 5, 1, 0, 500, 1.5, 0, None))
    journal.close()
    again = Journal.open(tmp_path, "/batches/pairs.csv")
    entry = again.get("k1")
    assert entry is not None and (entry.outcome, entry.copied, entry.exit_code) == ("exact", 5, 0)
    assert again.get("k2") is None
    again.close()


def test_the_journal_key_is_derived_from_no_secret(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("from-file\n")
    batch = load_batch(str(_servers(tmp_path)), str(_pairs(tmp_path, (
        "src_user,src_pass,src_pass_file,dst_user,dst_pass,dst_oauth2_token_cmd\n"
        "a,Hunter2-a,,b,Hunter2-b,\n"
        "a,Other-pw,,b,,print-token --secret S3cr3t\n"
        "a,,pw,b,Hunter2-b,\n"
        "c,Hunter2-a,,b,Hunter2-b,\n"
    ))))
    keys = [pair.key("context") for pair in batch.pairs]
    # The same two accounts whatever their credentials; another account, another key.
    assert keys[0] == keys[1] == keys[2] != keys[3]
    assert keys[0] != batch.pairs[0].key("other options")
    journal = Journal.open(tmp_path, "/batches/pairs.csv")
    journal.started(keys[0], 2, "a", "b")
    journal.close()
    raw = b"".join(p.read_bytes() for p in (tmp_path / "batches").iterdir())
    assert b"salt" not in raw and b"Hunter2" not in raw


def test_a_journal_with_a_key_beside_its_hashes_loses_both(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path, "/batches/pairs.csv")
    journal.started("old-keyed-hash", 2, "a", "b")
    with journal._db:
        journal._db.execute("INSERT INTO meta VALUES ('salt', ?)", (b"k" * 32,))
    journal.close()
    again = Journal.open(tmp_path, "/batches/pairs.csv")
    assert again.get("old-keyed-hash") is None
    assert again._db.execute("SELECT count(*) FROM meta").fetchone() == (0,)
    again.close()


def test_a_job_crosses_the_pipe_and_an_empty_pipe_is_no_job() -> None:
    stream = io.BytesIO()
    write_job(stream, ("config", "options"))
    stream.seek(0)
    assert read_job(stream) == ("config", "options")
    assert read_job(io.BytesIO(b"")) is None


def test_a_spare_pair_process_given_no_job_ends_quietly() -> None:
    process = spawn()
    assert process.stdin is not None and process.stderr is not None
    process.stdin.close()
    assert process.wait(timeout=60) == 0
    assert process.stderr.read() == b""
    process.stderr.close()
    assert process.stdout is not None
    process.stdout.close()


@pytest.mark.parametrize(
    ("address", "plain", "refused"),
    [
        ("tcp://scheduler:8786", False, True),
        ("scheduler:8786", False, True),
        ("TCP://scheduler:8786", False, True),
        ("ws://scheduler:8786", False, True),
        ("tcp://scheduler:8786", True, False),
        ("tls://scheduler:8786", False, False),
        ("wss://scheduler:8786", False, False),
        ("inproc://10.0.0.1/1/1", False, False),
    ],
)
def test_a_cluster_without_tls_is_refused_unless_accepted(address: str, plain: bool, refused: bool) -> None:
    if refused:
        with pytest.raises(UsageError) as caught:
            check_address(address, plain)
        assert caught.value.message.startswith(f"--cluster {address}: ")
        assert "use a tls:// address" in caught.value.message and "--plain-cluster" in caught.value.message
    else:
        check_address(address, plain)


def test_batch_on_a_plain_cluster_is_refused_before_anything_runs(tmp_path: Path) -> None:
    servers, pairs = _servers(tmp_path), _pairs(tmp_path, "src_user,src_pass,dst_user,dst_pass\na,Hunter2,b,pw2\n")
    done = subprocess.run(
        [sys.executable, "-m", "fastsync", "-c", str(servers), "batch", str(pairs), "--state-dir",
         str(tmp_path / "state"), "--cluster", "tcp://127.0.0.1:9"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines()[-1].startswith("error: --cluster tcp://127.0.0.1:9: tcp:// is not encrypted")
    assert "Hunter2" not in done.stdout + done.stderr
