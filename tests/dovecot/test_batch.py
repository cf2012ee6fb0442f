"""`fastsync batch` against a real Dovecot: many pairs, exact, under the per-server cap
counted at the server (a counting proxy in front of each side), a second run that copies
nothing, and a batch killed mid-way that a re-run finishes exactly."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from bench.harness.tcpproxy import CountingProxy
from tests.dovecot.accounts import Account, AccountFactory, snapshot
from tests.helpers import REPO_ROOT, cli_env, message, run_cli, wait_for

PAIRS = 20
FOLDERS = ("INBOX", "Sent", "Archive/2020")


def _seed(src: Account, index: int, per_folder: int) -> None:
    base = index * 1000
    src.seed([message(folder, base + f * 100 + n) for f, folder in enumerate(FOLDERS) for n in range(per_folder)])


def _files(tmp_path: Path, pairs: list[tuple[Account, Account]], src_port: int, dst_port: int,
           delimiter: str = ",") -> tuple[Path, Path]:
    servers = tmp_path / "servers.yaml"
    servers.write_text(yaml.safe_dump({
        "src": {"label": "old", "server": f"127.0.0.1:{src_port}", "tls": "none"},
        "dst": {"label": "new", "server": f"127.0.0.1:{dst_port}", "tls": "none"},
    }))
    csv = tmp_path / "pairs.csv"
    lines = [delimiter.join(["src_user", "src_pass", "dst_user", "dst_pass"])]
    lines += [delimiter.join([s.user, s.password, d.user, d.password]) for s, d in pairs]
    csv.write_text("\n".join(lines) + "\n")
    csv.chmod(0o600)
    return servers, csv


@pytest.fixture
def many(accounts: AccountFactory) -> list[tuple[Account, Account]]:
    users = accounts(2 * PAIRS)
    pairs = [(users[2 * i], users[2 * i + 1]) for i in range(PAIRS)]
    for index, (src, _dst) in enumerate(pairs):
        _seed(src, index, 40)
    return pairs


def _batch(servers: Path, csv: Path, state: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli("-c", servers, "batch", csv, "--state-dir", state, "--procs", "2", "--json", *extra)


def test_batch_is_exact_under_the_cap_and_a_second_run_skips(
    many: list[tuple[Account, Account]], tmp_path: Path,
) -> None:
    server = many[0][0].server
    with CountingProxy(server.port) as src_proxy, CountingProxy(server.port) as dst_proxy:
        servers, csv = _files(tmp_path, many, src_proxy.port, dst_proxy.port, delimiter=";")
        done = _batch(servers, csv, tmp_path / "state", "--max-connections-per-server", "6")
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        assert doc["summary"]["exact"] == PAIRS
        assert doc["summary"]["copied"] == PAIRS * 40 * len(FOLDERS)
        # Counted at the server: never more than the cap on either side, and pairs did overlap.
        assert src_proxy.peak_connections <= 6 and dst_proxy.peak_connections <= 6
        assert doc["summary"]["parallel"] == 2
        assert dst_proxy.peak_connections > 3
        for src, dst in many:
            assert snapshot(src) == snapshot(dst)
        for src, dst in many:
            assert src.password not in done.stdout + done.stderr
        again = _batch(servers, csv, tmp_path / "state", "--max-connections-per-server", "6")
        assert again.returncode == 0, again.stderr
        doc = json.loads(again.stdout)
        assert doc["summary"]["skipped"] == PAIRS and doc["summary"]["copied"] == 0
        accepted = dst_proxy.accepted
        forced = _batch(servers, csv, tmp_path / "state", "--again")
        assert forced.returncode == 0, forced.stderr
        doc = json.loads(forced.stdout)
        assert doc["summary"]["exact"] == PAIRS and doc["summary"]["copied"] == 0
        assert dst_proxy.accepted > accepted


def test_without_procs_the_cap_is_filled_with_pairs(accounts: AccountFactory, tmp_path: Path) -> None:
    users = accounts(12)
    pairs = [(users[2 * i], users[2 * i + 1]) for i in range(6)]
    for index, (src, _dst) in enumerate(pairs):
        _seed(src, index, 10)
    server = pairs[0][0].server
    with CountingProxy(server.port) as src_proxy, CountingProxy(server.port) as dst_proxy:
        servers, csv = _files(tmp_path, pairs, src_proxy.port, dst_proxy.port)
        done = run_cli("-c", servers, "batch", csv, "--state-dir", tmp_path / "state",
                       "--max-connections-per-server", "8")
        assert done.returncode == 0, done.stderr
        # 4 pairs of --procs 1 (2 connections per side each) instead of 1 pair of the default --procs 4.
        assert ("4 pairs at once, each with --procs 1 (2 connections per side) within "
                "--max-connections-per-server 8") in done.stdout
        assert "to fit the connection caps" not in done.stderr
        # (How much the pairs overlap depends on the machine's load: the cap is what must hold.)
        assert src_proxy.peak_connections <= 8 and dst_proxy.peak_connections <= 8
    for src, dst in pairs:
        assert snapshot(src) == snapshot(dst)


def test_a_killed_batch_restarted_ends_exact(many: list[tuple[Account, Account]], tmp_path: Path) -> None:
    server = many[0][0].server
    servers, csv = _files(tmp_path, many, server.port, server.port)
    state = tmp_path / "state"
    process = subprocess.Popen(
        [sys.executable, "-m", "fastsync", "-c", str(servers), "batch", str(csv), "--state-dir", str(state),
         "--procs", "2", "--parallel", "2", "-q"],
        cwd=REPO_ROOT, env=cli_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    # Kill the batch (the process alone, with -9) once some pair has copied into its destination.
    wait_for(lambda: any(_count(dst) for _src, dst in many[:4]), timeout_s=60, what="a first copy")
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    # Its pairs' processes see their batch gone and stop after the unit in hand.
    done = _batch(servers, csv, state, "--parallel", "4")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["summary"]["exact"] + doc["summary"]["skipped"] == PAIRS
    for src, dst in many:
        assert snapshot(src) == snapshot(dst)


def _count(account: Account) -> int:
    client = account.client()
    try:
        return int(client.folder_status("INBOX", ["MESSAGES"])[b"MESSAGES"])
    finally:
        client.logout()


def test_bad_lines_are_reported_before_anything_is_copied(accounts: AccountFactory, tmp_path: Path) -> None:
    src, dst = accounts(2)
    _seed(src, 0, 3)
    servers, csv = _files(tmp_path, [(src, dst)], src.server.port, dst.server.port)
    csv.write_text(csv.read_text() + f"{src.user},,{dst.user},x\n")
    done = _batch(servers, csv, tmp_path / "state")
    assert done.returncode == 2
    assert "pairs.csv: line 3: src: none is given" in done.stderr
    assert "Traceback" not in done.stderr and dst.password not in done.stderr
    assert _count(dst) == 0


@pytest.fixture
def dask_cluster(tmp_path: Path, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """A Dask scheduler and two workers (each under its nanny), as separate processes;
    indirect parameters add Dask config variables."""
    pytest.importorskip("distributed")
    bin_dir = Path(sys.executable).parent
    scheduler_file = tmp_path / "scheduler.json"
    env = {**cli_env(), "DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL": "15s", **getattr(request, "param", {})}
    common = {"cwd": REPO_ROOT, "env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL,
              "start_new_session": True}
    processes = [subprocess.Popen([str(bin_dir / "dask"), "scheduler", "--port", "0", "--no-dashboard",
                                   "--scheduler-file", str(scheduler_file)], **common)]  # type: ignore[call-overload]
    wait_for(lambda: scheduler_file.exists() and scheduler_file.read_text(), timeout_s=60, what="the scheduler")
    address = json.loads(scheduler_file.read_text())["address"]
    for _ in range(2):
        processes.append(subprocess.Popen(  # type: ignore[call-overload]
            [str(bin_dir / "dask"), "worker", address, "--nthreads", "2", "--no-dashboard"], **common))
    import distributed

    with distributed.Client(address, timeout=30) as client:
        client.wait_for_workers(2, timeout=60)
    try:
        yield address, processes[1:]
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_batch_on_a_dask_cluster_is_exact_under_the_cap_when_a_worker_dies(
    many: list[tuple[Account, Account]], tmp_path: Path, dask_cluster: tuple[str, list[subprocess.Popen[bytes]]],
) -> None:
    import psutil

    address, workers = dask_cluster
    server = many[0][0].server
    with CountingProxy(server.port) as src_proxy, CountingProxy(server.port) as dst_proxy:
        servers, csv = _files(tmp_path, many, src_proxy.port, dst_proxy.port)
        process = _spawn_on_cluster(servers, csv, tmp_path / "state", address)
        # Once a pair runs under the first worker and copies have begun, that worker loses its
        # whole process tree (nanny, worker, the pair's process and its workers), as with a lost machine.
        victim = psutil.Process(workers[0].pid)

        def running_pair() -> bool:
            pairs = []
            for child in victim.children(recursive=True):
                try:
                    pairs += ["fastsync.batch.child" in " ".join(child.cmdline())]
                except psutil.Error:
                    continue  # gone, or a zombie, since the listing
            return any(pairs) and any(_count(dst) > 0 for _src, dst in many)

        wait_for(running_pair, timeout_s=120, what="a pair running under the first worker")
        tree = [victim, *victim.children(recursive=True)]
        for member in tree:
            # A pair's worker may end between the listing and the kill.
            with contextlib.suppress(psutil.NoSuchProcess):
                member.kill()
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        doc = json.loads(out)
        assert doc["summary"]["exact"] == PAIRS
        assert src_proxy.peak_connections <= 6 and dst_proxy.peak_connections <= 6
    for src, dst in many:
        assert snapshot(src) == snapshot(dst)
    for src, _dst in many:
        assert src.password not in out + err


def _spawn_on_cluster(servers: Path, csv: Path, state: Path, address: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "fastsync", "-c", str(servers), "batch", str(csv), "--state-dir", str(state),
         "--procs", "2", "--max-connections-per-server", "6", "--cluster", address, "--plain-cluster", "--json", *extra],
        cwd=REPO_ROOT, env=cli_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )


OVERBOOKING = {
    # Leases that expire a second after they are taken, never refreshed, checked every 0.2 s:
    # the semaphores are over-booked while the pairs still run.
    "DASK_FASTSYNC__LEASE_TIMEOUT": "1s",
    "DASK_FASTSYNC__REFRESH_LEASES": "False",
    "DASK_DISTRIBUTED__SCHEDULER__LOCKS__LEASE_VALIDATION_INTERVAL": "200ms",
}


@pytest.mark.parametrize("dask_cluster", [OVERBOOKING], indirect=True)
def test_overbooked_leases_do_not_exceed_the_cap_at_the_server(
    many: list[tuple[Account, Account]], tmp_path: Path, dask_cluster: tuple[str, list[subprocess.Popen[bytes]]],
) -> None:
    import distributed

    address, _workers = dask_cluster
    server = many[0][0].server
    with CountingProxy(server.port) as src_proxy, CountingProxy(server.port) as dst_proxy:
        # Four 30 KB messages per pair and a download cap of 32 KB/s per pair (past the first
        # 64 KB burst) keep each pair copying for seconds, longer than the 1 s lease, however fast
        # the machine.
        for index, (src, _dst) in enumerate(many):
            src.seed([message("INBOX", index * 1000 + 900 + n, body="x" * 30_000) for n in range(4)])
        servers, csv = _files(tmp_path, many, src_proxy.port, dst_proxy.port)
        process = _spawn_on_cluster(servers, csv, tmp_path / "state", address, "--bps-down", "32K")
        # While pairs copy, the destination's semaphore shows fewer leases than the running
        # pairs hold: over-booked, as Dask's documentation warns.
        with distributed.Client(address, timeout=30) as client:
            name = f"fastsync-connections-127.0.0.1:{dst_proxy.port}"
            semaphore = distributed.Semaphore(max_leases=6, name=name, scheduler_rpc=client.scheduler,
                                              loop=client.loop)
            seen = []

            def overbooked() -> bool:
                assert process.poll() is None, f"the batch ended before leases expired: {seen[-5:]}"
                try:
                    leases = semaphore.get_value()
                except Exception:  # noqa: BLE001 - not registered yet: no task has taken a lease
                    return False
                seen.append((dst_proxy.open_connections, leases))
                return dst_proxy.open_connections >= 3 and leases < 3

            wait_for(overbooked, timeout_s=120, interval_s=0.1, what="leases expired under running pairs")
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        assert json.loads(out)["summary"]["exact"] == PAIRS
        assert src_proxy.peak_connections <= 6 and dst_proxy.peak_connections <= 6
    for src, dst in many:
        assert snapshot(src) == snapshot(dst)


def test_workers_of_a_killed_pair_process_stop_and_start_no_other_unit(
    accounts: AccountFactory, config_for: Callable[..., Path], tmp_path: Path,
) -> None:
    """A pair's process (here a sync) killed with -9: its workers finish the unit in hand
    and leave, and neither they nor the fork server outlive that."""
    import psutil

    from tests.helpers import spawn_sync

    src, dst = accounts(2)
    src.seed([message("INBOX", n, body="x" * 20_000) for n in range(600)])
    config = config_for(src, dst)
    # A bandwidth cap keeps the copy going long enough to kill it in the middle.
    process = spawn_sync(config, "--procs", "3", "--bps-down", "1M", "--state-dir", str(tmp_path / "state"))
    wait_for(lambda: _count(dst) > 0, timeout_s=60, what="a first copy")
    tree = psutil.Process(process.pid).children(recursive=True)
    assert tree
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    copied = _count(dst)
    wait_for(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in tree), timeout_s=20,
             what="the workers and the fork server to leave")
    # At most the units in hand landed after the kill (units are about 1 MB: 50 messages each).
    assert _count(dst) - copied <= 3 * 60
    assert _count(dst) < 600
