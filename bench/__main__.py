"""``python -m bench demo``, ``python -m bench run ...``, ``scale``, ``caps``, ``batch`` and ``watch``: see bench/README.md."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.harness.corpus import PROFILES

DEFAULT_TOOLS = "fastsync:4,fastsync:8,doveadm,mbsync,imapsync,offlineimap"
# bench.batch.DEFAULT_TOOLS, repeated here so that --help imports nothing of the servers' dependencies.
BATCH_TOOLS = ("fastsync-batch", "fastsync-batch:1", "fastsync-loop", "fastsync-parallel", "imapsync")

# Named settings of `run`: ``--preset NAME`` stands for these flags; flags written after it
# override them.  wan-tls: a remote migration as users run it, 50 ms round trip, 8 Mbit/s
# per connection, implicit TLS, fastsync against the two peers that keep up at that RTT.
PRESETS = {
    "wan-tls": ["--profile", "realistic", "--scale", "0.1", "--tls", "--wan-delay-ms", "25",
                "--wan-rate", "1000000", "--tools", "fastsync:8,doveadm,mbsync"],
}
# The same with both Dovecots announcing COMPRESS=DEFLATE (their imap_zlib plugin).
PRESETS["wan-tls-zlib"] = [*PRESETS["wan-tls"], "--imap-zlib"]


def expand_presets(argv: Sequence[str]) -> list[str]:
    """``--preset NAME`` followed by its flags, so that the flags after it win."""
    out: list[str] = []
    words = iter(argv)
    for word in words:
        if word == "--preset":
            name = next(words, "")
        elif word.startswith("--preset="):
            name = word.removeprefix("--preset=")
        else:
            out.append(word)
            continue
        # An unknown name stays for argparse to refuse, with the list of choices.
        out += ["--preset", name, *PRESETS.get(name, [])]
    return out


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m bench``; parsing starts no server."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="copy the realistic corpus with fastsync and verify it (< 1 min)")
    demo.add_argument("--scale", type=float, default=0.3, help="fraction of the 10,000 messages (default 0.3)")
    demo.add_argument("--procs", type=int, default=8, help="fastsync worker processes (default 8)")
    demo.add_argument("--seed", type=int, default=1)
    run = commands.add_parser("run", help="compare tools on one corpus; write JSON, Markdown and a chart")
    run.add_argument("--preset", choices=sorted(PRESETS),
                     help="named settings, as if their flags were written here: "
                          + "; ".join(f"{name} = {' '.join(flags)}" for name, flags in PRESETS.items()))
    run.add_argument("--profile", choices=PROFILES, default="realistic")
    run.add_argument("--tools", default=DEFAULT_TOOLS,
                     help=f"comma-separated: fastsync:N, doveadm, mbsync, imapsync, offlineimap (default {DEFAULT_TOOLS})")
    run.add_argument("--scale", type=float, default=1.0, help="multiplies the profile's message count")
    run.add_argument("--seed", type=int, default=1)
    run.add_argument("--repeat", type=int, default=1, help="rounds over all tools; medians are reported")
    run.add_argument("--wan-delay-ms", type=float, default=0.0, help="one-way delay added to every IMAP connection")
    run.add_argument("--wan-rate", type=int, default=0, help="bytes/s cap per connection and direction (0 = none)")
    run.add_argument("--tls", action="store_true", help="implicit TLS on both sides")
    # mdbox is the fastest here (bench/harness/dovecot.py MAIL_FORMAT); maildir the most common in production.
    run.add_argument("--storage", choices=("maildir", "mdbox"), default="mdbox",
                     help="mail storage of both servers (default mdbox; maildir is the most common in production)")
    run.add_argument("--fsync", action="store_true",
                     help="servers use mail_fsync = optimized (Dovecot's default) instead of never")
    run.add_argument("--imap-zlib", action="store_true",
                     help="load Dovecot's imap_zlib plugin on both servers: COMPRESS=DEFLATE (RFC 4978) announced")
    run.add_argument("--rerun", action="store_true", help="run each tool a second time: the cost of nothing to copy")
    run.add_argument("--wan-log", action="store_true",
                     help="the WAN proxies log every connection's chunks: logs/USER.timeline.txt per tool run")
    run.add_argument("--out", type=Path, required=True, help="directory for results.json/.md/.png and logs")
    grow = commands.add_parser("scale", help="plan and copy one folder at 25k, 50k and 100k messages")
    grow.add_argument("--sizes", default="25000,50000,100000", help="comma-separated message counts")
    grow.add_argument("--procs", type=int, default=4, help="fastsync worker processes (default 4)")
    grow.add_argument("--seed", type=int, default=1)
    grow.add_argument("--out", type=Path, default=None, help="directory for scale.json and scale.md")
    capped = commands.add_parser("caps", help="bandwidth and connection caps as the server sees them")
    capped.add_argument("--cap", type=int, default=2_000_000, help="bytes/s for --bps-down and --bps-up")
    capped.add_argument("--seconds", type=float, default=15.0, help="length of each capped transfer")
    capped.add_argument("--out", type=Path, default=None, help="directory for caps.json and caps.md")
    many = commands.add_parser("batch", help="many account pairs under one cap on connections per server")
    many.add_argument("--tools", default=",".join(BATCH_TOOLS),
                      help=f"comma-separated; fastsync-batch runs batch without --procs (its own choice), "
                           f"fastsync-batch:P with --procs P "
                           f"(default {','.join(BATCH_TOOLS)})")
    many.add_argument("--pairs", type=int, default=20, help="account pairs (default 20)")
    many.add_argument("--scale", type=float, default=0.1,
                      help="each source user's share of the realistic profile (default 0.1: 1,000 messages)")
    many.add_argument("--seed", type=int, default=1)
    many.add_argument("--cap", type=int, default=8, help="simultaneous connections per server, every tool (default 8)")
    many.add_argument("--procs", type=int, default=4, help="fastsync --procs of fastsync-loop and fastsync-parallel (default 4)")
    many.add_argument("--per-job-connections", type=int, default=2,
                      help="fastsync-parallel: --max-connections of each job; -j is cap // this (default 2)")
    many.add_argument("--repeat", type=int, default=1, help="rounds over all tools; ranges are reported")
    many.add_argument("--no-rerun", dest="rerun", action="store_false",
                      help="skip the second fastsync batch run with nothing to copy")
    many.add_argument("--out", type=Path, required=True, help="directory for results.json/.md and logs")
    follow = commands.add_parser("watch", help="lag of sync --watch behind the source, and its idle cost")
    follow.add_argument("--modes", default="notify,idle-poll",
                        help="comma-separated: notify (Dovecot as is), idle-poll (a source without NOTIFY)")
    follow.add_argument("--scale", type=float, default=0.05,
                        help="share of the realistic profile in the source account (default 0.05: 500 messages)")
    follow.add_argument("--poll", type=int, default=10, help="sync --poll SECONDS (default 10)")
    follow.add_argument("--repeat", type=int, default=1, help="rounds per mode; ranges are reported")
    follow.add_argument("--seed", type=int, default=1)
    follow.add_argument("--out", type=Path, default=None, help="directory for watch.json and watch.md")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(expand_presets(sys.argv[1:] if argv is None else argv))
    # Imported after parsing so that --help works without the servers' dependencies.
    from bench import run as bench_run

    if args.command == "demo":
        return bench_run.demo(args.scale, args.procs, args.seed)
    if args.command == "caps":
        from bench.caps import caps

        return caps(args.cap, args.seconds, args.out)
    if args.command == "scale":
        from bench.scale import scale

        return scale([int(n) for n in args.sizes.split(",")], args.procs, args.seed, args.out)
    if args.command == "batch":
        from bench.batch import batch

        return batch([t.strip() for t in args.tools.split(",") if t.strip()], args.out, pairs=args.pairs,
                     scale=args.scale, seed=args.seed, cap=args.cap, procs=args.procs,
                     per_job_connections=args.per_job_connections, repeat=args.repeat, rerun=args.rerun)
    if args.command == "watch":
        from bench.watch import watch

        return watch([m.strip() for m in args.modes.split(",") if m.strip()], args.out, scale=args.scale,
                     poll_s=args.poll, repeat=args.repeat, seed=args.seed)
    return bench_run.run(
        args.profile, [t.strip() for t in args.tools.split(",") if t.strip()], args.out, scale=args.scale,
        seed=args.seed, repeat=args.repeat, wan_delay_ms=args.wan_delay_ms, rate=args.wan_rate, tls=args.tls,
        rerun=args.rerun, storage=args.storage, fsync=args.fsync, imap_zlib=args.imap_zlib, wan_log=args.wan_log,
    )


if __name__ == "__main__":
    sys.exit(main())
