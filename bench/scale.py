"""``python -m bench scale``: one folder growing to 100,000 messages, planned and copied at each size.

At each size (25k, 50k, 100k by default) the same source folder is planned alone (``sync
--dry-run`` into an empty destination: the planner's time and peak RSS) and copied whole
into a fresh destination user (messages/s).  Planning should grow linearly with the count
and the copy rate should not fall as the folder grows.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench.harness.corpus import generate, seed_account
from bench.harness.dovecot import Dovecot
from bench.run import SRC_PASSWORD, SRC_USER, Side, fastsync_invocation, measure
from bench.harness.verify import Endpoint, compare


def _by_process(peaks: object) -> str:
    """fastsync's run process / the fork server and the resource tracker / a worker."""
    assert isinstance(peaks, dict)
    return " / ".join(str(peaks.get(depth, "-")) for depth in ("parent", "child", "grandchild"))


def scale(sizes: Sequence[int], procs: int, seed: int, out: Path | None) -> int:
    sizes = sorted(sizes)
    corpus = generate("scale", seed, scale=sizes[-1] / 100_000)
    rows = []
    with tempfile.TemporaryDirectory(prefix="fsscale-") as tmp:
        root = Path(tmp)
        users = {f"plan{n}": "pw" for n in sizes} | {f"copy{n}": "pw" for n in sizes}
        with Dovecot(root / "src", {SRC_USER: SRC_PASSWORD}) as src_server, Dovecot(root / "dst", users) as dst_server:
            src = Side(src_server.host, src_server.port, SRC_USER, SRC_PASSWORD, False, None)
            seeded = 0
            for size in sizes:
                seed_account(src_server.host, src_server.port, SRC_USER, SRC_PASSWORD, corpus[seeded:size])
                seeded = size
                runs = {}
                for kind in ("plan", "copy"):
                    work = root / f"{kind}{size}"
                    work.mkdir()
                    dst = Side(dst_server.host, dst_server.port, f"{kind}{size}", "pw", False, None)
                    invocation = fastsync_invocation(work, src, dst, procs)
                    if kind == "plan":
                        invocation.argv.append("--dry-run")
                    runs[kind] = measure(kind, 1, invocation, work / "log", [SRC_PASSWORD, "pw"])
                report = compare(
                    Endpoint(src_server.host, src_server.port, SRC_USER, SRC_PASSWORD, False, None).client,
                    Endpoint(dst_server.host, dst_server.port, f"copy{size}", "pw", False, None).client,
                )
                rows.append(
                    {
                        "messages": size,
                        "plan_wall_s": round(runs["plan"].wall_s, 3),
                        "plan_peak_rss_mb": round(runs["plan"].peak_rss_process / 1e6, 1),
                        "copy_wall_s": round(runs["copy"].wall_s, 3),
                        "copy_messages_per_s": round(size / runs["copy"].wall_s),
                        "copy_peak_rss_tree_mb": round(runs["copy"].peak_rss_tree / 1e6, 1),
                        "copy_peak_pss_tree_mb": round(runs["copy"].peak_pss_tree / 1e6, 1),
                        "copy_peak_rss_by_process_mb": {
                            depth: round(rss / 1e6, 1) for depth, rss in runs["copy"].peak_rss_by_depth.items()
                        },
                        "verification": report.summary(),
                        "exit_codes": [runs["plan"].exit_code, runs["copy"].exit_code],
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    table = [
        f"| messages | plan s | plan s per 10k | plan peak RSS MB | copy s | copy msg/s | copy peak RSS tree MB |"
        f" copy peak PSS tree MB | copy peak RSS MB: parent / its children / theirs (largest) | verification |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in rows:
        per_10k = row["plan_wall_s"] / row["messages"] * 10_000  # type: ignore[operator]
        table.append(
            f"| {row['messages']:,} | {row['plan_wall_s']} | {per_10k:.3f} | {row['plan_peak_rss_mb']} | "
            f"{row['copy_wall_s']} | {row['copy_messages_per_s']} | {row['copy_peak_rss_tree_mb']} | "
            f"{row['copy_peak_pss_tree_mb']} | {_by_process(row['copy_peak_rss_by_process_mb'])} | {row['verification']} |"
        )
    print("\n".join(table))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "scale.json").write_text(json.dumps(rows, indent=2))
        (out / "scale.md").write_text("\n".join(table) + "\n")
    ok = all(row["exit_codes"] == [0, 0] and str(row["verification"]).startswith("ok") for row in rows)
    return 0 if ok else 1
