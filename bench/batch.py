"""``python -m bench batch``: many account pairs copied under one cap on connections per server.

Issue 15 ("many accounts"): a site migrating a few dozen mailboxes from one server to
another has a CSV of pairs and a limit on what each server tolerates at once.  This
compares ``fastsync batch`` with what such a site scripts today, every tool held to the
same cap of N simultaneous TCP connections per server (host:port):

* ``fastsync-batch``: ``fastsync -c servers.yaml batch pairs.csv --max-connections-per-server N``.
* ``fastsync-loop``: a ``while read`` loop of ``fastsync sync -y``, one pair after
  another, each with ``--max-connections N``.
* ``fastsync-parallel``: GNU parallel running one ``fastsync sync`` per pair, ``-j J``
  jobs of ``--max-connections M`` each, J x M <= N.
* ``imapsync``: GNU parallel running one imapsync per pair (its FAQ.Massive and
  examples/sync_parallel_unix.sh), ``-j N``: imapsync holds one connection per side.

Two private Dovecot servers (source separator "/", destination ".": names are
translated), each behind a `CountingProxy` through which every tool connects, so the
peak of simultaneous connections is counted where the server would count it.  Each
source user holds the realistic corpus (its own seed); each tool and round copies into
destination users of its own, which are verified pair by pair with bench/harness/verify.py and
then removed from disk.  The loops live in bench/batch.sh; passwords reach every tool
through files, never a command line (`bench.run.measure` checks that).
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil

from bench.harness.corpus import generate, seed_account
from bench.harness.dovecot import Dovecot
from bench.run import Invocation, _private_file, _versions, measure
from bench.harness.tcpproxy import CountingProxy
from bench.harness.verify import Endpoint, compare

TOOLS = ("fastsync-batch", "fastsync-loop", "fastsync-parallel", "imapsync")
# fastsync-batch runs batch without --procs: it chooses how many pairs run at once and each
# pair's workers from the cap.  fastsync-batch:P gives it --procs P: with 4, a pair takes 5
# connections per side and only one fits under a cap of 8; with 1, a pair takes 2 and four
# run at once, as fastsync-parallel's jobs do.
DEFAULT_TOOLS = ("fastsync-batch", "fastsync-batch:4", "fastsync-batch:1", "fastsync-loop", "fastsync-parallel",
                 "imapsync")

SCRIPT = Path(__file__).resolve().parent / "batch.sh"

# imapsync as bench/run.py runs it: no release check over the network, no log files, no
# folder sizes (two extra passes over every folder that the other tools do not make).
IMAPSYNC_ARGS = ("--noreleasecheck", "--nolog", "--nofoldersizes")

# Second runs with nothing to copy, per tool: (name, extra arguments).
RERUNS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "fastsync-batch": (("rerun", ()), ("again", ("--again",))),
    "fastsync-loop": (("rerun", ()),),
}

# Pairs verified at once: each comparison reads both accounts over two connections.
VERIFY_THREADS = 2


@dataclass(frozen=True)
class Pair:
    """One line of pairs.csv (``line`` counts the header as line 1, as fastsync batch does)."""

    line: int
    src_user: str
    src_pass: str
    dst_user: str
    dst_pass: str


@dataclass
class BatchRound:
    """One tool copying every pair once; times in seconds, memory in bytes."""

    tool: str
    round: int
    exit_code: int
    wall_s: float
    cpu_s: float
    peak_rss_tree: int
    processes: int
    peak_src_connections: int
    peak_dst_connections: int
    password_in_argv: bool
    pairs: int
    pairs_exact: int
    verification: str
    # fastsync batch's own view of the pairs (its --json outcomes), when it gives one.
    outcomes: dict[str, int] = field(default_factory=dict)
    # fastsync batch run again with nothing to copy: as is (the journal skips the pairs
    # that finished exactly), and with --again (every pair surveyed again).
    rerun_wall_s: float | None = None
    rerun_exit_code: int | None = None
    rerun_outcomes: dict[str, int] = field(default_factory=dict)
    again_wall_s: float | None = None
    again_exit_code: int | None = None
    again_outcomes: dict[str, int] = field(default_factory=dict)
    note: str = ""


# ---------------------------------------------------------------------------- the tools


def fastsync_batch_available() -> bool:
    """Whether this checkout's fastsync has the ``batch`` command (it is being built on main)."""
    result = subprocess.run([sys.executable, "-m", "fastsync", "batch", "--help"], capture_output=True,
                            stdin=subprocess.DEVNULL, check=False)
    return result.returncode == 0


def parse_tool(spec: str) -> tuple[str, int | None]:
    """``fastsync-batch:1`` -> ("fastsync-batch", 1); other tools take no number (None)."""
    name, _, procs = spec.partition(":")
    if name not in TOOLS:
        raise ValueError(f"unknown tool {name!r}; choose from {', '.join(TOOLS)}")
    if procs and name != "fastsync-batch":
        raise ValueError(f"{name} takes no ':N' (--procs applies to it)")
    return name, int(procs) if procs else None


def installed(spec: str) -> str | None:
    """None when the tool can run here, else why not."""
    tool, _procs = parse_tool(spec)
    if tool == "fastsync-batch" and not fastsync_batch_available():
        return "this fastsync has no batch command yet (python -m fastsync batch --help fails)"
    if tool in ("fastsync-parallel", "imapsync") and shutil.which("parallel") is None:
        return "GNU parallel not installed (Debian: apt-get install parallel)"
    if tool == "imapsync" and shutil.which("imapsync") is None:
        return "imapsync not installed (not packaged by Debian; needs the imapsync script on PATH)"
    return None


def split_cap(cap: int, per_job_connections: int) -> tuple[int, int]:
    """(jobs, connections per job) for GNU parallel: as many jobs as the cap holds, J x M <= N."""
    per_job = max(1, min(per_job_connections, cap))
    return max(1, cap // per_job), per_job


def loop_procs(procs: int, connections: int) -> int:
    """Workers of one ``fastsync sync --max-connections M``: the planner takes one of the M
    (fastsync would lower --procs itself, with a notice on every run)."""
    return max(1, min(procs, connections - 1))


@dataclass(frozen=True)
class Servers:
    """Where the tools reach both servers: the proxies' ports, never the servers' own."""

    src: tuple[str, int]
    dst: tuple[str, int]


def _write_pairs(path: Path, pairs: Sequence[Pair]) -> Path:
    rows = ["src_user,src_pass,dst_user,dst_pass"]
    rows += [f"{p.src_user},{p.src_pass},{p.dst_user},{p.dst_pass}" for p in pairs]
    return _private_file(path, "\n".join(rows) + "\n")


def invocation(spec: str, workdir: Path, csv: Path, servers: Servers, cap: int, procs: int,
               per_job_connections: int) -> Invocation:
    """The command of one tool over the whole CSV, under ``cap`` connections per server."""
    tool, own_procs = parse_tool(spec)
    env = {"BENCH_SRC_HOST": servers.src[0], "BENCH_SRC_PORT": str(servers.src[1]),
           "BENCH_DST_HOST": servers.dst[0], "BENCH_DST_PORT": str(servers.dst[1]), "BENCH_PYTHON": sys.executable}
    if tool == "fastsync-batch":
        # An ordinary config without user and password: those come from the CSV.
        config = _private_file(workdir / "servers.yaml", "".join(
            f"{side}:\n  label: {label}\n  server: \"{host}:{port}\"\n  tls: none\n"
            for side, label, (host, port) in (("src", "source", servers.src), ("dst", "destination", servers.dst))
        ))
        # Without :P, batch's own choice of pairs at once and workers per pair.
        procs_args = ["--procs", str(own_procs)] if own_procs else []
        return Invocation([sys.executable, "-m", "fastsync", "-c", str(config), "batch", str(csv),
                           "--max-connections-per-server", str(cap), *procs_args,
                           "--state-dir", str(workdir / "state"), "--json"],
                          note=" ".join(["--max-connections-per-server", str(cap), *procs_args]))
    if tool == "fastsync-loop":
        args = ["--max-connections", str(cap), "--procs", str(loop_procs(procs, cap))]
        return Invocation(["bash", str(SCRIPT), "loop", "fastsync", str(csv), str(workdir), *args], env=env,
                          note="one pair after another: " + " ".join(args))
    lines = len(csv.read_text().splitlines())
    if tool == "fastsync-parallel":
        jobs, per_job = split_cap(cap, per_job_connections)
        args = ["--max-connections", str(per_job), "--procs", str(loop_procs(procs, per_job))]
        tail = ["fastsync", str(csv), "{}", str(workdir), *args]
    else:
        # imapsync keeps one connection to each server for the whole account.
        jobs, args = cap, list(IMAPSYNC_ARGS)
        tail = ["imapsync", str(csv), "{}", str(workdir), *args]
    # Line numbers go to parallel, not the lines: those hold the passwords.
    return Invocation(["parallel", "--will-cite", "-j", str(jobs), "bash", str(SCRIPT), "line", *tail,
                       ":::", *(str(n) for n in range(2, lines + 1))], env=env,
                      note=f"GNU parallel -j {jobs}: " + " ".join(args))


# ---------------------------------------------------------------------------- the session


@dataclass
class Fleet:
    """Both servers, their proxies, and the seeded source users."""

    src_server: Dovecot
    dst_server: Dovecot
    src_proxy: CountingProxy
    dst_proxy: CountingProxy
    src_users: list[str]
    messages: int
    size_bytes: int

    @property
    def servers(self) -> Servers:
        return Servers((self.src_server.host, self.src_proxy.port), (self.dst_server.host, self.dst_proxy.port))

    def pairs_for(self, dst_users: Sequence[str]) -> list[Pair]:
        return [Pair(n + 2, src, self.src_server.users[src], dst, self.dst_server.users[dst])
                for n, (src, dst) in enumerate(zip(self.src_users, dst_users, strict=True))]

    def verify(self, pair: Pair) -> tuple[bool, str]:
        # Directly, not through the proxies: verification is not what is measured.
        def endpoint(server: Dovecot, user: str) -> Endpoint:
            return Endpoint(server.host, server.port, user, server.users[user])

        report = compare(endpoint(self.src_server, pair.src_user).client,
                         endpoint(self.dst_server, pair.dst_user).client)
        return report.ok, report.summary() if report.ok else report.describe()

    def discard(self, users: Sequence[str]) -> None:
        """Remove destination users' mail from disk: 20 pairs x tools x rounds would fill it."""
        for user in users:
            shutil.rmtree(self.dst_server.mail_root / user, ignore_errors=True)


def _password() -> str:
    # Random, so that a password found in a command line is one and not a coincidence.
    return "pw-" + secrets.token_hex(8)


def dst_users_for(spec: str, round_: int, pairs: int) -> list[str]:
    # Dovecot's passwd-file takes no ":" in a name.
    return [f"{spec.replace(':', '-p')}-r{round_}-{n:02d}" for n in range(1, pairs + 1)]


@contextmanager
def fleet_session(root: Path, pairs: int, scale: float, seed: int, dst_users: Sequence[str]) -> Iterator[Fleet]:
    """Start both servers with every user made up front (no passwd reload wait), seed the sources."""
    src_users = {f"src{n:02d}": _password() for n in range(1, pairs + 1)}
    with ExitStack() as stack:
        src_server = stack.enter_context(Dovecot(root / "src", src_users, separator="/"))
        dst_server = stack.enter_context(Dovecot(root / "dst", {u: _password() for u in dst_users}, separator="."))

        def seed_user(n_user: tuple[int, str]) -> tuple[int, int]:
            # A corpus per user, generated and dropped in the thread: 20 of them at once
            # would hold 800 MB.
            n, user = n_user
            corpus = generate("realistic", seed=seed_base + n, scale=scale)
            seed_account(src_server.host, src_server.port, user, src_users[user], corpus, separator="/")
            return len(corpus), sum(len(m.body) for m in corpus)

        seed_base = seed * 1000
        with ThreadPoolExecutor(max_workers=2) as pool:
            seeded = list(pool.map(seed_user, enumerate(src_users)))
        src_proxy = stack.enter_context(CountingProxy(src_server.port))
        dst_proxy = stack.enter_context(CountingProxy(dst_server.port))
        yield Fleet(src_server, dst_server, src_proxy, dst_proxy, list(src_users),
                    sum(m for m, _ in seeded), sum(b for _, b in seeded))


def _outcomes(document: Path) -> tuple[dict[str, int], str]:
    """fastsync batch's count of pairs per outcome, from its --json document, and the pairs it
    ran at once; a note when the document is unreadable."""
    try:
        data = json.loads(document.read_text())
        outcomes = dict(Counter(str(p.get("outcome")) for p in data["pairs"]))
        parallel, procs = data["summary"].get("parallel"), data["summary"].get("procs")
        note = f"{parallel} pairs at once" + (f", --procs {procs} each" if procs else "") if parallel else ""
        return outcomes, note
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        return {}, f"no --json document read ({type(error).__name__})"


def run_tool(fleet: Fleet, spec: str, round_: int, work: Path, logs: Path, *, cap: int, procs: int,
             per_job_connections: int, rerun: bool) -> BatchRound:
    tool, _procs = parse_tool(spec)
    dst_users = dst_users_for(spec, round_, len(fleet.src_users))
    pairs = fleet.pairs_for(dst_users)
    workdir = work / dst_users[0].rsplit("-", 1)[0]
    workdir.mkdir(parents=True)
    csv = _write_pairs(workdir / "pairs.csv", pairs)
    command = invocation(spec, workdir, csv, fleet.servers, cap, procs, per_job_connections)
    secret_values = [p.src_pass for p in pairs] + [p.dst_pass for p in pairs]
    log = logs / f"{workdir.name}.log"
    document = workdir / "batch.json" if tool == "fastsync-batch" else None
    for proxy in (fleet.src_proxy, fleet.dst_proxy):
        proxy.reset_peak()
    measured = measure(spec, round_, command, log, secret_values, stdout=document)
    peaks = fleet.src_proxy.peak_connections, fleet.dst_proxy.peak_connections
    with ThreadPoolExecutor(max_workers=VERIFY_THREADS) as pool:
        checked = list(pool.map(fleet.verify, pairs))
    failed = [(pair, text) for pair, (ok, text) in zip(pairs, checked, strict=True) if not ok]
    if failed:
        with open(log, "a", encoding="utf-8") as out:
            out.writelines(f"\nverification of line {pair.line} ({pair.src_user} -> {pair.dst_user}):\n{text}\n"
                           for pair, text in failed)
    if document is not None and document.exists():
        shutil.copy(document, logs / f"{workdir.name}.json")  # per pair figures, for a closer look
    outcomes, note = _outcomes(document) if document else ({}, "")
    result = BatchRound(
        tool=spec, round=round_, exit_code=measured.exit_code, wall_s=measured.wall_s, cpu_s=measured.cpu_s,
        peak_rss_tree=measured.peak_rss_tree, processes=measured.processes, peak_src_connections=peaks[0],
        peak_dst_connections=peaks[1], password_in_argv=measured.password_in_argv, pairs=len(pairs),
        pairs_exact=len(pairs) - len(failed),
        verification="ok" if not failed else f"{len(failed)} of {len(pairs)} pairs differ; first: "
                                             + failed[0][1].splitlines()[0],
        outcomes=outcomes, note="; ".join(n for n in (command.note, note) if n),
    )
    if rerun:
        # Nothing left to copy: what a second pass over the CSV costs; for fastsync batch as
        # is (its journal skips the pairs done) and with --again (every pair surveyed again,
        # as the loop's second pass does).
        for name, extra in RERUNS.get(tool, ()):
            again_document = workdir / f"batch-{name}.json"
            run_command = dataclasses.replace(command, argv=[*command.argv, *extra])
            again = measure(spec, round_, run_command, log, secret_values,
                            stdout=again_document if document else None)
            setattr(result, f"{name}_wall_s", again.wall_s)
            setattr(result, f"{name}_exit_code", again.exit_code)
            setattr(result, f"{name}_outcomes", _outcomes(again_document)[0])
            if again_document.exists():
                shutil.copy(again_document, logs / f"{workdir.name}-{name}.json")
            result.password_in_argv |= again.password_in_argv
    fleet.discard(dst_users)
    return result


# ---------------------------------------------------------------------------- reporting


def _range(values: Sequence[float], digits: int) -> str:
    """``min-max`` over rounds (one value when they agree at that precision)."""
    low, high = f"{min(values):.{digits}f}", f"{max(values):.{digits}f}"
    return low if low == high else f"{low}-{high}"


def summarise(rounds: Sequence[BatchRound], messages: int, size_bytes: int) -> list[dict[str, object]]:
    """One row per tool: the range over rounds (not the best), every round's verification."""
    rows: list[dict[str, object]] = []
    for tool in dict.fromkeys(r.tool for r in rounds):
        mine = [r for r in rounds if r.tool == tool]
        walls = [r.wall_s for r in mine]
        reruns = [r.rerun_wall_s for r in mine if r.rerun_wall_s is not None]
        agains = [r.again_wall_s for r in mine if r.again_wall_s is not None]
        rows.append({
            "tool": tool,
            "rounds": len(mine),
            "exit_codes": sorted({r.exit_code for r in mine}),
            "wall_s_min": min(walls),
            "wall_s_max": max(walls),
            "messages_per_s_min": messages / max(walls),
            "messages_per_s_max": messages / min(walls),
            "mb_per_s_min": size_bytes / 1e6 / max(walls),
            "mb_per_s_max": size_bytes / 1e6 / min(walls),
            "peak_src_connections": [min(r.peak_src_connections for r in mine),
                                     max(r.peak_src_connections for r in mine)],
            "peak_dst_connections": [min(r.peak_dst_connections for r in mine),
                                     max(r.peak_dst_connections for r in mine)],
            "peak_rss_tree_mb": [min(r.peak_rss_tree for r in mine) / 1e6, max(r.peak_rss_tree for r in mine) / 1e6],
            "cpu_s": [min(r.cpu_s for r in mine), max(r.cpu_s for r in mine)],
            "pairs": mine[0].pairs,
            "pairs_exact_min": min(r.pairs_exact for r in mine),
            "verified": all(r.pairs_exact == r.pairs for r in mine),
            "verification": next((r.verification for r in mine if r.pairs_exact != r.pairs), "ok"),
            "password_in_argv": any(r.password_in_argv for r in mine),
            "rerun_wall_s": [min(reruns), max(reruns)] if reruns else None,
            "rerun_exit_codes": sorted({r.rerun_exit_code for r in mine if r.rerun_exit_code is not None}),
            "rerun_outcomes": mine[0].rerun_outcomes,
            "again_wall_s": [min(agains), max(agains)] if agains else None,
            "again_exit_codes": sorted({r.again_exit_code for r in mine if r.again_exit_code is not None}),
            "again_outcomes": mine[0].again_outcomes,
            "note": mine[0].note,
        })
    return rows


def _pair_range(values: object, digits: int = 0) -> str:
    """A row's [min, max] (as summarise() stores it) as ``min-max``."""
    low, high = values  # type: ignore[misc]
    return _range([float(low), float(high)], digits)  # type: ignore[has-type]


def _peak(row: dict[str, object]) -> int:
    """The most connections a tool held at once on either server, over its rounds."""
    peaks = [*row["peak_src_connections"], *row["peak_dst_connections"]]  # type: ignore[misc]
    return max(int(n) for n in peaks)


def _outcome_text(outcomes: object) -> str:
    """{"skipped": 20} -> "20 skipped" (exit codes are in results.json)."""
    return ", ".join(f"{n} {name}" for name, n in sorted(outcomes.items())) or "-"  # type: ignore[attr-defined]


def markdown(meta: dict[str, object], rows: Sequence[dict[str, object]], skipped: dict[str, str]) -> str:
    """The results table: ranges over rounds (min-max), peak connections as the proxies counted them."""
    lines = [
        (f"{meta['pairs']} pairs, realistic x{meta['scale']} each: {meta['messages']} messages, "
         f"{meta['mb']:.1f} MB in all; cap {meta['cap']} connections per server; "
         f"{meta['rounds']} round(s), min-max over rounds."),
        "",
        ("| tool | wall s | msg/s | MB/s | peak conns src | peak conns dst | peak RSS tree MB | tool CPU s "
         "| pairs exact | verification |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        status = str(r["verification"]) + ("" if r["exit_codes"] == [0] else f" (exit {r['exit_codes']})")
        lines.append(
            f"| {r['tool']} | {_pair_range((r['wall_s_min'], r['wall_s_max']), 2)} "
            f"| {_pair_range((r['messages_per_s_min'], r['messages_per_s_max']))} "
            f"| {_pair_range((r['mb_per_s_min'], r['mb_per_s_max']), 1)} "
            f"| {_pair_range(r['peak_src_connections'])} | {_pair_range(r['peak_dst_connections'])} "
            f"| {_pair_range(r['peak_rss_tree_mb'])} | {_pair_range(r['cpu_s'], 1)} "
            f"| {r['pairs_exact_min']}/{r['pairs']} | {status} |"
        )
    for tool, reason in skipped.items():
        lines.append(f"| {tool} | skipped: {reason} |||||||||")
    reruns = [r for r in rows if r["rerun_wall_s"] is not None]
    if reruns:
        lines += ["", "| re-run with nothing to copy | as is: wall s | outcomes | --again: wall s | outcomes |",
                  "|---|---:|---|---:|---|"]
        lines += [
            f"| {r['tool']} | {_pair_range(r['rerun_wall_s'], 2)} | {_outcome_text(r['rerun_outcomes'])} "
            f"| {_pair_range(r['again_wall_s'], 2) if r['again_wall_s'] else '-'} "
            f"| {_outcome_text(r['again_outcomes'])} |"
            for r in reruns
        ]
    notes = [f"- {r['tool']}: {r['note']}" for r in rows if r["note"]]
    notes += [f"- {r['tool']}: password visible in a command line" for r in rows if r["password_in_argv"]]
    notes += [f"- {r['tool']}: more than {meta['cap']} connections at once on a server" for r in rows
              if _peak(r) > int(meta["cap"])]  # type: ignore[call-overload]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def _peer_versions() -> dict[str, str]:
    out = {}
    for name in ("imapsync", "parallel"):
        if shutil.which(name):
            result = subprocess.run([name, "--version"], capture_output=True, text=True, check=False,
                                    stdin=subprocess.DEVNULL)
            out[name] = (result.stdout.strip() or result.stderr.strip() or "?").splitlines()[0]
    return out


# ---------------------------------------------------------------------------- the command


def batch(
    tools: Sequence[str], out: Path, *, pairs: int = 20, scale: float = 0.1, seed: int = 1, cap: int = 8,
    procs: int = 4, per_job_connections: int = 2, repeat: int = 1, rerun: bool = True,
) -> int:
    """The comparison; writes results.json and results.md (and logs/) under ``out``.  0 when every
    tool ran, verified exact on every pair and held the cap."""
    if cap < 1 or pairs < 1 or repeat < 1:
        raise ValueError("--cap, --pairs and --repeat must be at least 1")
    runnable, skipped = [], {}
    for tool in tools:
        reason = installed(tool)
        if reason:
            skipped[tool] = reason
            print(f"skipping {tool}: {reason}")
        else:
            runnable.append(tool)
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    dst_users = [u for n in range(1, repeat + 1) for tool in runnable for u in dst_users_for(tool, n, pairs)]
    rounds: list[BatchRound] = []
    root = Path(tempfile.mkdtemp(prefix="fsbatch-"))
    try:
        with fleet_session(root / "servers", pairs, scale, seed, dst_users) as fleet:
            print(f"{pairs} source users seeded: {fleet.messages} messages, {fleet.size_bytes / 1e6:.1f} MB; "
                  f"cap {cap} connections per server")
            for round_ in range(1, repeat + 1):
                # Rounds go over all tools in turn, so drift (disk writeback, caches) is shared.
                for tool in runnable:
                    result = run_tool(fleet, tool, round_, root / "work", logs, cap=cap, procs=procs,
                                      per_job_connections=per_job_connections, rerun=rerun)
                    rounds.append(result)
                    print(f"round {round_} {tool}: exit {result.exit_code}, {result.wall_s:.2f} s, "
                          f"{fleet.messages / result.wall_s:.0f} msg/s, peak connections "
                          f"{result.peak_src_connections}/{result.peak_dst_connections}, "
                          f"peak RSS {result.peak_rss_tree / 1e6:.0f} MB, pairs exact "
                          f"{result.pairs_exact}/{result.pairs}"
                          + (f", rerun {result.rerun_wall_s:.2f} s" if result.rerun_wall_s is not None else ""),
                          flush=True)
            messages, size_bytes = fleet.messages, fleet.size_bytes
    finally:
        shutil.rmtree(root, ignore_errors=True)
    meta: dict[str, object] = {
        "pairs": pairs, "profile": "realistic", "scale": scale, "seed": seed, "messages": messages,
        "mb": size_bytes / 1e6, "cap": cap, "procs": procs, "per_job_connections": per_job_connections,
        "rounds": repeat, "cpus": psutil.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "versions": {**_versions(), **_peer_versions()},
    }
    rows = summarise(rounds, messages, size_bytes)
    (out / "results.json").write_text(json.dumps(
        {"meta": meta, "summary": rows, "skipped": skipped, "runs": [asdict(r) for r in rounds]}, indent=2) + "\n")
    table = markdown(meta, rows, skipped)
    (out / "results.md").write_text(table)
    print()
    print(table)
    print(f"results: {out}")
    held = all(max(r.peak_src_connections, r.peak_dst_connections) <= cap for r in rounds)
    exact = all(r.exit_code == 0 and r.pairs_exact == r.pairs and not r.password_in_argv for r in rounds)
    return 0 if held and exact else 1

