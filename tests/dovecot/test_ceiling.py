"""Connection ceilings: a server that takes fewer connections than fastsync may open (a
proxy that counts them as it accepts, greeting the fifth with BYE as Gmail does, or hanging
up at its login as mox does; Dovecot's mail_max_userip_connections, whose count logins at
the same instant may pass together) makes a sync go on with the connections it took, a
batch hold fewer there, and `preflight --probe` find the ceiling; each is reported."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bench.harness.dovecot import Dovecot
from bench.harness.tcpproxy import CountingProxy
from tests.dovecot.accounts import Account, AccountFactory, snapshot
from tests.helpers import message, run_cli, wait_for

FOLDERS = ("INBOX", "Sent", "Archive")


def _files(tmp_path: Path, pairs: list[tuple[Account, Account]], src_port: int, dst_port: int) -> tuple[Path, Path]:
    servers = tmp_path / "servers.yaml"
    servers.write_text(yaml.safe_dump({
        "src": {"label": "old", "server": f"127.0.0.1:{src_port}", "tls": "none"},
        "dst": {"label": "new", "server": f"127.0.0.1:{dst_port}", "tls": "none"},
    }))
    csv = tmp_path / "pairs.csv"
    lines = ["src_user,src_pass,dst_user,dst_pass"] + [f"{s.user},{s.password},{d.user},{d.password}" for s, d in pairs]
    csv.write_text("\n".join(lines) + "\n")
    csv.chmod(0o600)
    return servers, csv


def test_batch_finds_a_servers_ceiling_of_four_and_ends_exact(accounts: AccountFactory, tmp_path: Path) -> None:
    users = accounts(12)
    pairs = [(users[2 * i], users[2 * i + 1]) for i in range(6)]
    for index, (src, _dst) in enumerate(pairs):
        src.seed([message(folder, index * 1000 + f * 100 + n) for f, folder in enumerate(FOLDERS) for n in range(15)])
    server = pairs[0][0].server
    with CountingProxy(server.port) as src_proxy, CountingProxy(server.port, max_open=4) as dst_proxy:
        servers, csv = _files(tmp_path, pairs, src_proxy.port, dst_proxy.port)
        log = tmp_path / "batch.log"
        done = run_cli("-c", servers, "batch", csv, "--state-dir", tmp_path / "state",
                       "--max-connections-per-server", "8", "--json", "--log-file", log, timeout=240)
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        assert doc["summary"]["exact"] == len(pairs)
        # The ceiling is counted in the pairs' connection budgets (two per pair here): at
        # least the four the server takes, less than the eight it refused.
        ceilings = doc["summary"]["connection_ceilings"]
        assert list(ceilings) == [f"127.0.0.1:{dst_proxy.port}"]
        assert 4 <= ceilings[f"127.0.0.1:{dst_proxy.port}"] < 8
        assert f"connection ceiling: 127.0.0.1:{dst_proxy.port} took" not in done.stdout  # --json: one document
        # Refusals are few: the batch lowers its count instead of trying again and again
        # (before, 946 refused logins in 300 s and no pair done).
        assert dst_proxy.turned_away < 40, dst_proxy.turned_away
        assert f"connection ceiling found server='127.0.0.1:{dst_proxy.port}'" in log.read_text()
    for src, dst in pairs:
        assert snapshot(src) == snapshot(dst)


@pytest.fixture(scope="module")
def dovecot_four(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dovecot]:
    """A Dovecot that takes four connections per user and IP (mail_max_userip_connections)."""
    users = {f"c{n}": f"pw-c{n}" for n in range(6)}
    with Dovecot(tmp_path_factory.mktemp("dovecot-four"), users, max_userip_connections=4) as server:
        yield server


def _seeded_pair(server: Dovecot, first: int) -> tuple[Account, Account]:
    src, dst = (Account(server, f"c{n}", f"pw-c{n}") for n in (first, first + 1))
    # Twenty folders of 300 KB: enough units for eight workers, and a copy long enough
    # that the workers are all there at once.
    src.seed([message(f"F{f}", f * 100 + n, body="x" * 30_000) for f in range(20) for n in range(10)])
    return src, dst


def _sync_config(tmp_path: Path, src: Account, dst: Account, dst_port: int) -> Path:
    config = tmp_path / "sync.yaml"
    config.write_text(yaml.safe_dump({
        "src": {"server": src.address, "user": src.user, "pass": src.password, "tls": "none"},
        "dst": {"server": f"127.0.0.1:{dst_port}", "user": dst.user, "pass": dst.password, "tls": "none"},
    }))
    return config


def test_a_sync_goes_on_with_the_four_connections_a_server_takes(accounts: AccountFactory, tmp_path: Path) -> None:
    src, dst = accounts(2)
    src.seed([message(f"F{f}", f * 100 + n, body="x" * 30_000) for f in range(20) for n in range(10)])
    # Counted by the proxy as it accepts: exactly four at once, the fifth greeted with BYE.
    with CountingProxy(dst.server.port, max_open=4) as proxy:
        config = _sync_config(tmp_path, src, dst, proxy.port)
        done = run_cli("sync", "-c", config, "-y", "--procs", "8", "--json", "--state-dir", tmp_path / "state")
    assert done.returncode == 0, done.stderr
    # The planner's connection and the three workers that logged in.
    assert json.loads(done.stdout)["summary"]["connection_ceilings"] == {"dst": 4}, done.stderr
    assert "continuing with 3 workers" in done.stderr, done.stderr
    assert proxy.turned_away == 5
    assert snapshot(src) == snapshot(dst)


def test_a_sync_goes_on_under_dovecots_connection_limit(dovecot_four: Dovecot, tmp_path: Path) -> None:
    src, dst = _seeded_pair(dovecot_four, 0)
    done = run_cli("sync", "-c", _sync_config(tmp_path, src, dst, dovecot_four.port), "-y", "--procs", "8",
                   "--json", "--state-dir", tmp_path / "state")
    assert done.returncode == 0, done.stderr
    # Dovecot refuses the logins past mail_max_userip_connections=4 that it has counted,
    # but logins at the same instant may pass its count together (or none may come at
    # once): whatever it refused, the sync ends exact, and a ceiling found is what it took
    # at once, at least four, fewer than the nine asked for.
    ceilings = json.loads(done.stdout)["summary"]["connection_ceilings"]
    assert all(4 <= found < 9 for found in ceilings.values()), (ceilings, done.stderr)
    assert snapshot(src) == snapshot(dst)


def test_a_batch_pair_reports_the_ceiling_of_its_account(accounts: AccountFactory, tmp_path: Path) -> None:
    src, dst = accounts(2)
    src.seed([message(f"F{f}", f * 100 + n, body="x" * 30_000) for f in range(20) for n in range(10)])
    with CountingProxy(dst.server.port, max_open=4) as proxy:
        servers, csv = _files(tmp_path, [(src, dst)], src.server.port, proxy.port)
        done = run_cli("-c", servers, "batch", csv, "--state-dir", tmp_path / "state", "--procs", "8", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["summary"]["exact"] == 1
    # The pair went on with the planner's connection and three workers, and said so.
    assert doc["pairs"][0]["ceilings"] == {"dst": 4}, done.stderr
    assert snapshot(src) == snapshot(dst)


def test_preflight_probe_finds_four_and_closes_them(accounts: AccountFactory, tmp_path: Path) -> None:
    src, dst = accounts(2)
    src.seed([message("INBOX", 1)])
    with CountingProxy(src.server.port, max_open=4) as src_proxy, \
            CountingProxy(dst.server.port, max_open=4, hang_up_at_login=True) as dst_proxy:
        config = tmp_path / "probe.yaml"
        config.write_text(yaml.safe_dump({
            "src": {"server": f"127.0.0.1:{src_proxy.port}", "user": src.user, "pass": src.password, "tls": "none"},
            "dst": {"server": f"127.0.0.1:{dst_proxy.port}", "user": dst.user, "pass": dst.password, "tls": "none"},
        }))
        done = run_cli("preflight", "-c", config, "--probe", "--max-connections", "8", "--json")
        assert done.returncode == 0, done.stderr
        [pair] = json.loads(done.stdout)["pairs"]
        # The fifth greeted with BYE on the source, hung up at login on the destination.
        assert pair["ceilings"] == {"src": 4, "dst": 4}
        # Every probe connection was closed again.
        wait_for(lambda: src_proxy.open_connections == dst_proxy.open_connections == 0, timeout_s=10)
        assert (src_proxy.turned_away, dst_proxy.turned_away) == (1, 1)
        # Up to the maximum only: a server that takes more is reported as such.
        done = run_cli("preflight", "-c", config, "--probe", "--max-connections", "3", "--json")
        assert json.loads(done.stdout)["pairs"][0]["ceilings"] == {"src": None, "dst": None}
    assert [f for _flags, _delim, f in dst.client().list_folders()] == ["INBOX"]


def test_a_server_that_hangs_up_at_login_past_four_is_a_ceiling(
    accounts: AccountFactory, tmp_path: Path,
) -> None:
    src, dst = accounts(2)
    src.seed([message(f"F{f}", f * 100 + n, body="x" * 30_000) for f in range(8) for n in range(10)])
    with CountingProxy(dst.server.port, max_open=4, hang_up_at_login=True) as proxy:
        config = _sync_config(tmp_path, src, dst, proxy.port)
        done = run_cli("sync", "-c", config, "-y", "--procs", "6", "--json", "--state-dir", tmp_path / "state")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["summary"]["connection_ceilings"] == {"dst": 4}
        assert "server hung up at login" in done.stderr
    assert snapshot(src) == snapshot(dst)
