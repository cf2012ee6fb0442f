"""`fastsync preflight` against real Dovecots: a destination with Dovecot's quota plugin
(GETQUOTAROOT, RFC 9208) and an announced APPENDLIMIT, a source folder name the
destination refuses, logins that fail, and a batch's pairs file; nothing is ever written."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bench.harness.dovecot import Dovecot
from tests.dovecot.accounts import Account, AccountFactory, ConfigFor, snapshot
from tests.helpers import message, run_cli

# The destination's limits: 1 MiB of storage per user, messages of at most 60,000 bytes
# (quota_max_mail_size refuses bigger ones; Dovecot 2.3 does not announce it, so
# imap_capability adds the APPENDLIMIT a server with that limit would announce).
LIMIT_BYTES = 60_000


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dovecot]:
    users = {f"q{n}": f"pw-q{n}" for n in range(8)}
    with Dovecot(tmp_path_factory.mktemp("dovecot-quota"), users, quota_storage="1M",
                 quota_max_mail_size=str(LIMIT_BYTES), imap_capability=f"+APPENDLIMIT={LIMIT_BYTES}") as server:
        yield server


def _sized(folder: str, n: int, size: int) -> object:
    return message(folder, n, body=("x" * 76 + "\r\n") * (size // 78))


def _preflight(config: Path, *extra: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    done = run_cli("preflight", "-c", config, "--json", *extra)
    assert "Traceback" not in done.stderr
    return done.returncode, json.loads(done.stdout)


def test_a_pair_that_fits_is_ready_and_nothing_is_written(
    accounts: AccountFactory, config_for: ConfigFor, limited: Dovecot,
) -> None:
    [src] = accounts(1)
    dst = Account(limited, "q0", "pw-q0")
    src.seed([_sized("INBOX", n, 5_000) for n in range(10)] + [_sized("Archive", 20, 5_000)])
    before = snapshot(src), snapshot(dst)
    code, doc = _preflight(config_for(src, dst))
    assert code == 0, doc
    [pair] = doc["pairs"]
    assert pair["src_login"] == pair["dst_login"] == "ok"
    assert pair["messages"] == 11 and 55_000 <= pair["size_bytes"] < 60_000
    assert pair["quota_limit_bytes"] == 1024 * 1024 and pair["quota_used_bytes"] == 0
    assert pair["size_limit_bytes"] == LIMIT_BYTES and pair["too_large"] == 0
    assert pair["can_complete"] and pair["problems"] == [] and pair["estimate_s"] > 0
    # Read-only on both sides: no folder created on the destination, nothing changed.
    assert (snapshot(src), snapshot(dst)) == before
    assert [f for _flags, _delim, f in dst.client().list_folders()] == ["INBOX"]


def test_the_estimate_waits_out_a_daily_limit(
    accounts: AccountFactory, config_for: ConfigFor, limited: Dovecot,
) -> None:
    """About 57 KB to copy under a budget of 20 KB per hour: two windows waited before the
    last part, as sync --until-done would; without the budget, seconds."""
    [src] = accounts(1)
    dst = Account(limited, "q6", "pw-q6")
    src.seed([_sized("INBOX", n, 5_000) for n in range(11)])
    code, doc = _preflight(config_for(src, dst))
    assert code == 0 and doc["pairs"][0]["estimate_s"] < 600, doc
    code, doc = _preflight(config_for(src, dst), "--dst-daily-limit", "20000", "--limit-window", "1h")
    assert code == 0, doc
    assert 2 * 3600 <= doc["pairs"][0]["estimate_s"] < 3 * 3600, doc


def test_the_estimate_counts_what_the_window_already_holds(
    accounts: AccountFactory, config_for: ConfigFor, limited: Dovecot, tmp_path: Path,
) -> None:
    """A sync under 20 KB per hour copied 15 KB a moment ago: the 35 KB left wait for it to
    leave the window (about 2 hours), where a state directory without that use says 1 hour."""
    [src] = accounts(1)
    dst = Account(limited, "q7", "pw-q7")
    config = config_for(src, dst)
    budget = ("--dst-daily-limit", "20000", "--limit-window", "1h")
    state = tmp_path / "state"
    src.seed([_sized("INBOX", n, 5_000) for n in range(3)])
    first = run_cli("sync", "-c", config, "-y", "--state-dir", state, *budget)
    assert first.returncode == 0, first.stderr
    src.seed([_sized("INBOX", n, 5_000) for n in range(3, 10)])
    code, doc = _preflight(config, "--state-dir", tmp_path / "elsewhere", *budget)
    assert code == 0 and 3600 <= doc["pairs"][0]["estimate_s"] < 2 * 3600, doc
    code, doc = _preflight(config, "--state-dir", state, *budget)
    assert code == 0 and 2 * 3600 - 60 <= doc["pairs"][0]["estimate_s"] < 3 * 3600, doc
    assert not (tmp_path / "elsewhere").exists()  # preflight wrote nothing there


def test_a_pair_over_the_destinations_quota_is_reported(
    accounts: AccountFactory, config_for: ConfigFor, limited: Dovecot,
) -> None:
    [src] = accounts(1)
    dst = Account(limited, "q1", "pw-q1")
    src.seed([_sized("INBOX", n, 50_000) for n in range(25)])
    code, doc = _preflight(config_for(src, dst))
    assert code == 1
    [pair] = doc["pairs"]
    assert pair["size_bytes"] > 1024 * 1024 and not pair["can_complete"]
    assert any("quota" in problem for problem in pair["problems"]), pair["problems"]
    # The table and the reason, without --json.
    plain = run_cli("preflight", "-c", config_for(src, dst))
    assert plain.returncode == 1
    assert "error: the destination's quota has 1048576 bytes free for" in plain.stderr
    assert "1 pairs: 0 ready, 1 not" in plain.stdout


def test_messages_over_the_appendlimit_are_reported(
    accounts: AccountFactory, config_for: ConfigFor, limited: Dovecot,
) -> None:
    [src] = accounts(1)
    dst = Account(limited, "q2", "pw-q2")
    src.seed([_sized("INBOX", 1, 5_000), _sized("INBOX", 2, 90_000), _sized("Sent", 3, 70_000)])
    code, doc = _preflight(config_for(src, dst))
    assert code == 1
    [pair] = doc["pairs"]
    assert pair["too_large"] == 2 and 90_000 <= pair["too_large_bytes"] < 100_000
    assert pair["messages"] == 1
    assert any("larger than the destination takes (60000 bytes" in p for p in pair["problems"])


def test_a_folder_name_the_destination_refuses_and_a_refused_login(
    accounts: AccountFactory, config_for: ConfigFor, dovecot_lax: Dovecot,
) -> None:
    [src] = accounts(1, server=dovecot_lax)
    [dst] = accounts(1)
    src.seed([message("INBOX", 1), message("~old", 2)])
    code, doc = _preflight(config_for(src, dst))
    assert code == 1
    [pair] = doc["pairs"]
    assert pair["folders_refused"] == ["~old"]
    assert pair["messages"] == 1
    wrong = Account(dst.server, dst.user, "not-the-password")
    code, doc = _preflight(config_for(src, wrong))
    assert code == 1
    [pair] = doc["pairs"]
    assert pair["src_login"] == "ok" and "refused" in pair["dst_login"]
    assert wrong.password not in json.dumps(doc)


def test_the_pairs_of_a_batch_as_csv(accounts: AccountFactory, limited: Dovecot, tmp_path: Path) -> None:
    src_a, src_b = accounts(2)
    src_a.seed([message("INBOX", 1)])
    src_b.seed([_sized("INBOX", n, 50_000) for n in range(25)])
    dst_a, dst_b = Account(limited, "q3", "pw-q3"), Account(limited, "q4", "pw-q4")
    servers = tmp_path / "servers.yaml"
    servers.write_text(yaml.safe_dump({
        "src": {"server": src_a.address, "tls": "none"}, "dst": {"server": dst_a.address, "tls": "none"},
    }))
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("src_user,src_pass,dst_user,dst_pass\n" + "".join(
        f"{s.user},{s.password},{d.user},{d.password}\n" for s, d in ((src_a, dst_a), (src_b, dst_b))))
    pairs.chmod(0o600)
    done = run_cli("-c", servers, "preflight", pairs, "--csv")
    assert done.returncode == 1, done.stderr
    rows = list(csv.reader(io.StringIO(done.stdout)))
    assert rows[0][:3] == ["line", "source user", "destination user"]
    assert [(r[0], r[1], r[-1]) for r in rows[1:]] == [("2", src_a.user, "yes"), ("3", src_b.user, "no")]
    assert f"line 3 ({src_b.user} -> {dst_b.user}): the destination's quota" in done.stderr
