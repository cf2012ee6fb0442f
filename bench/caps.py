"""``python -m bench caps``: how closely fastsync holds its bandwidth and connection caps.

Bytes are counted on the wire by a proxy in front of the server (bench/harness/tcpproxy.py), as
the server sees them: the achieved rate over the whole transfer and over the busiest 10 s
window, each divided by the cap; and the most connections open at once per side during a
``--procs 8 --max-connections 3`` run.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.harness.corpus import Message, seed_account
from bench.harness.dovecot import Dovecot
from bench.harness.tcpproxy import CountingProxy, Traffic

WINDOW_S = 10.0


def _corpus(total_bytes: int, size: int = 50_000) -> list[Message]:
    line = b"x" * 76 + b"\r\n"
    body = line * (size // len(line))
    return [
        Message("INBOX", f"Message-ID: <cap{n}@bench>\r\nSubject: {n}\r\n\r\n".encode() + body, (),
                dt.datetime(2021, 1, 1, tzinfo=dt.UTC))
        for n in range(total_bytes // size)
    ]


def _sync(root: Path, src: tuple[int, str], dst: tuple[int, str], *flags: str) -> None:
    def side(port: int, user: str) -> dict[str, object]:
        return {"server": f"127.0.0.1:{port}", "user": user, "pass": "pw", "tls": "none"}

    config = root / f"{dst[1]}.json"
    config.write_text(json.dumps({"src": side(*src), "dst": side(*dst)}))
    os.chmod(config, 0o600)
    subprocess.run(
        [sys.executable, "-m", "fastsync", "sync", "-c", str(config), "-y", "-q", *flags],
        check=True, stdin=subprocess.DEVNULL,
    )


def caps(cap_bytes_per_s: int, seconds: float, out: Path | None) -> int:
    corpus = _corpus(int(cap_bytes_per_s * seconds))
    rows = []
    with tempfile.TemporaryDirectory(prefix="fscaps-") as tmp:
        root = Path(tmp)
        users = {"src": "pw", "down": "pw", "up": "pw", "conns": "pw"}
        with Dovecot(root / "server", users) as server:
            seed_account(server.host, server.port, "src", "pw", corpus)
            for direction in ("down", "up"):
                with CountingProxy(server.port) as proxy:
                    via = (proxy.port, "src") if direction == "down" else (server.port, "src")
                    to = (server.port, direction) if direction == "down" else (proxy.port, direction)
                    _sync(root, via, to, "--procs", "4", f"--bps-{direction}", str(cap_bytes_per_s))
                chunks = proxy.traffic.to_client if direction == "down" else proxy.traffic.to_server
                span_s, total = Traffic.span(chunks)
                rows.append({
                    "direction": direction,
                    "cap_bytes_per_s": cap_bytes_per_s,
                    "bytes": total,
                    "seconds": round(span_s, 2),
                    "achieved_over_cap": round(total / span_s / cap_bytes_per_s, 3),
                    "busiest_10s_over_cap": round(Traffic.rate(chunks, WINDOW_S) / cap_bytes_per_s, 3),
                })
                print(json.dumps(rows[-1]), flush=True)
            with CountingProxy(server.port) as src_proxy, CountingProxy(server.port) as dst_proxy:
                _sync(root, (src_proxy.port, "src"), (dst_proxy.port, "conns"), "--procs", "8",
                      "--max-connections", "3")
            connections = {"src": src_proxy.peak_connections, "dst": dst_proxy.peak_connections, "cap": 3}
            print(json.dumps({"peak_connections": connections}), flush=True)
    lines = [
        "| direction | cap B/s | bytes | seconds | achieved / cap | busiest 10 s / cap |",
        "|---|---:|---:|---:|---:|---:|",
        *(
            f"| {r['direction']} | {r['cap_bytes_per_s']:,} | {r['bytes']:,} | {r['seconds']} | "
            f"{r['achieved_over_cap']} | {r['busiest_10s_over_cap']} |"
            for r in rows
        ),
        "",
        f"`--procs 8 --max-connections 3`: at most {connections['src']} source and {connections['dst']} "
        "destination connections open at once.",
    ]
    print("\n".join(lines))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "caps.json").write_text(json.dumps({"rates": rows, "peak_connections": connections}, indent=2))
        (out / "caps.md").write_text("\n".join(lines) + "\n")
    within = all(0.9 <= r["achieved_over_cap"] and r["busiest_10s_over_cap"] <= 1.05 for r in rows)  # type: ignore[operator]
    return 0 if within and max(connections["src"], connections["dst"]) <= 3 else 1
