"""Bandwidth and connection caps, measured on the wire between fastsync and a real Dovecot."""

from __future__ import annotations

import datetime as dt
import random
import subprocess

import pytest
from bench.harness.tcpproxy import CountingProxy, Traffic

from bench.harness.corpus import Message
from tests.dovecot.accounts import Account, AccountFactory, ConfigFor, snapshot
from tests.helpers import capped_rate_allowance, run_cli, summary_line

UTC = dt.UTC


def corpus(count: int, size_bytes: int, seed: int = 1) -> list[Message]:
    rng = random.Random(seed)
    out = []
    for n in range(count):
        filler = "".join(rng.choice("abcdefghij ") for _ in range(size_bytes))
        lines = "\r\n".join(filler[i : i + 76] for i in range(0, len(filler), 76))
        body = f"Message-ID: <cap{n}@x>\r\nSubject: {n}\r\n\r\n{lines}\r\n".encode()
        out.append(Message("INBOX", body, ("\\Seen",), dt.datetime(2021, 5, 1, tzinfo=UTC)))
    return out


def _via(proxy: CountingProxy, account: Account) -> dict[str, str]:
    return {"server": f"127.0.0.1:{proxy.port}"}


@pytest.mark.slow
@pytest.mark.parametrize("direction", ["down", "up"])
def test_bandwidth_cap_holds_on_the_wire(
    direction: str, accounts: AccountFactory, config_for: ConfigFor
) -> None:
    src, dst = accounts(2)
    cap = 250_000
    src.seed(corpus(60, 50_000))
    target = src if direction == "down" else dst
    with CountingProxy(target.server.port) as proxy:
        side = "src" if direction == "down" else "dst"
        config = config_for(src, dst, extra={side: _via(proxy, target)})
        flag = "--bps-down" if direction == "down" else "--bps-up"
        result = run_cli("sync", "-c", config, "-y", "--procs", "4", flag, str(cap))
    assert result.returncode == 0, result.stderr
    assert snapshot(dst) == snapshot(src)
    chunks = proxy.traffic.to_client if direction == "down" else proxy.traffic.to_server
    seconds, total = Traffic.span(chunks)
    # About 12 s at the cap; the proxy sees bytes as it hands them to the kernel, so what
    # the kernel buffers at either end can shorten the span it sees (9.4 s once on a loaded
    # machine): a window of 8 s keeps the check below meaningful, and a cap not applied,
    # or applied at twice its rate, still fails here.
    window_s = 8.0
    assert total > 3_000_000 and seconds >= window_s
    # Over any window: within the cap plus one burst and what the kernel buffers per
    # connection (planner and 4 workers) before the bucket acts.
    assert Traffic.rate(chunks, window_s) <= capped_rate_allowance(cap, 5, window_s)
    # And the cap is used: at least 80 % of it over the whole transfer (a shared CI machine
    # under load has been measured at 88 %; the bench measures the real figure).
    assert total / seconds >= 0.8 * cap


@pytest.mark.slow
def test_max_connections_holds_at_the_server(accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst = accounts(2)
    src.seed(corpus(600, 3_000))
    with CountingProxy(src.server.port) as src_proxy, CountingProxy(dst.server.port) as dst_proxy:
        config = config_for(src, dst, extra={"src": _via(src_proxy, src), "dst": _via(dst_proxy, dst)})
        result = run_cli("sync", "-c", config, "-y", "--procs", "8", "--max-connections", "3")
    assert result.returncode == 0, result.stderr
    assert "--procs 8 lowered to 2" in result.stderr
    assert "600 copied" in summary_line(result.stdout)
    assert src_proxy.peak_connections == 3
    assert dst_proxy.peak_connections == 3
    assert snapshot(dst) == snapshot(src)


@pytest.mark.parametrize("connections", [1, 2])
def test_one_or_two_connections_per_side_complete(
    connections: int, accounts: AccountFactory, config_for: ConfigFor
) -> None:
    # With 1, the planner's connection would hold the only slot the worker needs: the
    # planner logs out while the worker copies.  With 2, planner and worker side by side.
    src, dst = accounts(2)
    src.seed(corpus(200, 3_000) + [Message("Archive", m.body.replace(b"<cap", b"<arch"), m.flags, m.internaldate)
                                   for m in corpus(100, 2_000, seed=2)])
    with CountingProxy(src.server.port) as src_proxy, CountingProxy(dst.server.port) as dst_proxy:
        config = config_for(src, dst, extra={"src": _via(src_proxy, src), "dst": _via(dst_proxy, dst)})
        try:
            result = run_cli("sync", "-c", config, "-y", "--procs", "4", "--max-connections", str(connections),
                             timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail(f"--max-connections {connections} did not finish within 120 s")
    assert result.returncode == 0, result.stderr
    assert "--procs 4 lowered to 1" in result.stderr
    assert "300 copied" in summary_line(result.stdout)
    assert 1 <= src_proxy.peak_connections <= connections
    assert 1 <= dst_proxy.peak_connections <= connections
    assert snapshot(dst) == snapshot(src)
