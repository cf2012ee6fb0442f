"""A run's timeline from the WAN proxies' logs (`harness.wanproxy.WireLog`): per connection,
when it was accepted, when its first commands went out (plain connections only: TLS hides
them), and its bytes per 100 ms in each direction, as released to the receiver.

``python -m bench run ... --wan-log`` writes one per tool run, ``logs/USER.timeline.txt``
(bench/README.md, issue 31).  A row of the chart is one connection and direction; a cell
is 100 ms; its digit is the share of the per-connection rate the link carried then (``9``:
90% or more, ``.``: nothing, ``0``: under 10%), or of the busiest cell without a rate.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from bench.harness.wanproxy import Chunk, WireLog

BIN_S = 0.1

# The commands whose first time is shown: those on the way to the first copy.
# How many of a connection's first commands are listed, up to its first APPEND.
LEADING_COMMANDS = 12

MILESTONES = ("LOGIN", "AUTHENTICATE", "COMPRESS", "LIST", "EXAMINE", "UID FETCH", "FETCH", "APPEND", "LOGOUT")


def _bins(chunks: Sequence[Chunk], start_s: float) -> dict[int, int]:
    out: dict[int, int] = defaultdict(int)
    for c in chunks:
        out[int((c.sent_s - start_s) / BIN_S)] += c.size_bytes
    return out


def _row(bins: dict[int, int], width: int, full_bytes: float) -> str:
    cells = []
    for n in range(width):
        size = bins.get(n, 0)
        cells.append("." if not size else str(min(9, int(10 * size / full_bytes))) if full_bytes else "?")
    return "".join(cells)


def render(side: str, log: WireLog, start_s: float, end_s: float, rate_bytes_per_s: int) -> list[str]:
    """The lines of one proxy's connections (*side*: "src" or "dst") from *start_s* to *end_s*."""
    width = int((end_s - start_s) / BIN_S) + 1
    by_conn: dict[int, list[Chunk]] = defaultdict(list)
    for c in log.chunks:
        by_conn[c.conn].append(c)
    rows = []
    for conn, accepted in sorted(log.accepted_s.items(), key=lambda item: item[1]):
        chunks = by_conn.get(conn, [])
        down = [c for c in chunks if c.direction == "down"]
        up = [c for c in chunks if c.direction == "up"]
        first: dict[str, float] = {}
        sent: list[tuple[str, float]] = []
        for c in up:
            for name in c.commands:
                first.setdefault(name, c.sent_s - start_s)
                sent.append((name, c.sent_s - start_s))
        marks = ", ".join(f"{name} {first[name]:.2f}" for name in MILESTONES if name in first)
        # The commands on the way to the connection's first copy (issue 31's wire log).
        leading = sent[: next((n + 1 for n, (name, _t) in enumerate(sent) if name == "APPEND"), LEADING_COMMANDS)]
        last = max((c.sent_s for c in chunks), default=accepted) - start_s
        rows.append(
            f"{side} #{conn}: accepted {accepted - start_s:.2f} s, last byte {last:.2f} s, "
            f"down {sum(c.size_bytes for c in down) / 1e6:.2f} MB, up {sum(c.size_bytes for c in up) / 1e6:.2f} MB"
            + (f"; first {marks}" if marks else "")
        )
        if leading:
            rows.append("  sent " + ", ".join(f"{name} {t:.2f}" for name, t in leading[:LEADING_COMMANDS]))
        full = rate_bytes_per_s * BIN_S if rate_bytes_per_s else max([*_bins(chunks, start_s).values(), 0])
        rows.append(f"  down |{_row(_bins(down, start_s), width, full)}|")
        rows.append(f"  up   |{_row(_bins(up, start_s), width, full)}|")
    return rows


def busy_connections(log: WireLog, start_s: float, end_s: float, min_bytes: int) -> list[int]:
    """Per 100 ms cell, how many connections moved at least *min_bytes* in either direction."""
    width = int((end_s - start_s) / BIN_S) + 1
    per: dict[tuple[int, int], int] = defaultdict(int)
    for c in log.chunks:
        per[(c.conn, int((c.sent_s - start_s) / BIN_S))] += c.size_bytes
    counts = [0] * width
    for (_conn, cell), size in per.items():
        if 0 <= cell < width and size >= min_bytes:
            counts[cell] += 1
    return counts


def timeline(logs: dict[str, WireLog], start_s: float, end_s: float, rate_bytes_per_s: int) -> str:
    """The whole text: each side's connections, then how many were busy per 100 ms."""
    lines = [f"Run from 0 (monotonic {start_s:.3f}) to {end_s - start_s:.2f} s; one cell = {BIN_S * 1000:.0f} ms; "
             f"digit = tenths of {rate_bytes_per_s or 'the busiest cell'} bytes/s per direction.", ""]
    for side, log in logs.items():
        mine = log.between(start_s, end_s)
        lines += render(side, mine, start_s, end_s, rate_bytes_per_s)
        # Busy: a tenth of the rate or more in the cell (the odd command and reply are not).
        floor = int(rate_bytes_per_s * BIN_S / 10) if rate_bytes_per_s else 4096
        busy = busy_connections(mine, start_s, end_s, floor)
        lines.append(f"{side} busy |{''.join(str(min(n, 9)) for n in busy)}|")
        lines.append("")
    return "\n".join(lines) + "\n"
