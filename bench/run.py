"""Benchmark fastsync against other IMAP-to-IMAP copiers on one machine, and the README's demo.

``demo``: two private Dovecot servers (source separator "/", destination "." so folder
names are translated), the realistic corpus at a small scale, one ``fastsync sync --procs 8``
and a full verification.  ``run``: the same corpus copied by each tool in turn into a
fresh destination user, measuring the whole process tree of the tool (wall time, CPU,
peak RSS) and the whole machine's CPU (the servers share its cores), then verifying what
each tool lost or changed.  See bench/README.md for the commands and measured figures.

Every tool gets its passwords from a file readable only by us, never from its command
line (anyone on the machine can read command lines); the run checks that this held.
"""

from __future__ import annotations

import compileall
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil

from bench.harness.corpus import Message, generate, seed_account
from bench.harness.dovecot import MAIL_FORMAT, Dovecot
from bench.harness.verify import Endpoint, Report, compare
from bench.harness.wanproxy import WanProxy, WireLog, measure_rtt
from bench.timeline import timeline

TOOLS = ("fastsync", "doveadm", "mbsync", "imapsync", "offlineimap")

# How often the process tree is sampled for RSS and CPU.
SAMPLE_S = 0.05

# A tool that has not finished by then is killed and reported as failed.
TOOL_TIMEOUT_S = 3600.0

SRC_USER, SRC_PASSWORD = "source", "source-pw"


@dataclass(frozen=True)
class Side:
    """An account as a tool reaches it (possibly through a WAN proxy)."""

    host: str
    port: int
    user: str
    password: str
    tls: bool
    ca_file: str | None


@dataclass(frozen=True)
class Invocation:
    """A prepared tool run: its command, and what it needs around it."""

    argv: list[str]
    note: str = ""
    env: dict[str, str] | None = None


@dataclass
class Measurement:
    """One run of one tool; times in seconds, memory in bytes."""

    tool: str
    round: int
    exit_code: int
    wall_s: float
    cpu_s: float
    system_cpu_s: float
    peak_rss_tree: int
    peak_rss_process: int
    processes: int
    password_in_argv: bool
    verification: dict[str, object] = field(default_factory=dict)
    rerun_wall_s: float | None = None
    rerun_exit_code: int | None = None
    note: str = ""
    # CPU the source and destination servers spent during the run (`Dovecot.cpu_s`).
    src_server_cpu_s: float = 0.0
    dst_server_cpu_s: float = 0.0
    # Largest sum of PSS over the tree (shared pages split among the processes sharing
    # them, so forked workers' common pages count once): 0 where it cannot be read.
    peak_pss_tree: int = 0
    # Peak RSS of the tool's own process ("parent"), of the processes it started
    # ("child": for fastsync the fork server and multiprocessing's resource tracker) and of
    # their children ("grandchild": fastsync's workers), the largest of each kind.
    peak_rss_by_depth: dict[str, int] = field(default_factory=dict)
    # fastsync: seconds from its first and from its last worker's login to its first APPEND
    # (`first_append_after_logins`); None for the other tools.
    first_append_after_logins_s: tuple[float, float] | None = None


# ---------------------------------------------------------------------------- measuring


def _busy_cpu_s() -> float:
    """CPU seconds the whole machine spent busy since boot (guest time is inside user time)."""
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + t.irq + t.softirq + t.steal)


class _TreeSampler(threading.Thread):
    """Samples a process and all its descendants: summed RSS, CPU per PID, command lines."""

    def __init__(self, pid: int, secrets: Sequence[str]) -> None:
        super().__init__(name="tree-sampler", daemon=True)
        self.root = psutil.Process(pid)
        self.secrets = [s for s in secrets if s]
        self.done = threading.Event()
        self.cpu_by_pid: dict[int, float] = {}
        self.peak_tree = 0
        self.peak_process = 0
        self.peak_pss_tree = 0
        self.peak_by_depth: dict[str, int] = {}
        self.password_in_argv = False

    def run(self) -> None:
        while not self.done.is_set():
            self.sample()
            self.done.wait(SAMPLE_S)

    def sample(self) -> None:
        try:
            children = {p.pid for p in self.root.children()}
            processes = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        total = pss = 0
        for process in processes:
            try:
                with process.oneshot():
                    rss = process.memory_info().rss
                    depth = ("parent" if process.pid == self.root.pid else "child" if process.pid in children
                             else "grandchild")
                    self.peak_by_depth[depth] = max(self.peak_by_depth.get(depth, 0), rss)
                    pss += _pss(process)
                    cpu = process.cpu_times()
                    if process.pid not in self.cpu_by_pid and self.secrets:
                        argv = " ".join(process.cmdline())
                        self.password_in_argv |= any(secret in argv for secret in self.secrets)
            except psutil.Error:  # exited between listing and reading
                continue
            total += rss
            self.peak_process = max(self.peak_process, rss)
            self.cpu_by_pid[process.pid] = cpu.user + cpu.system
        self.peak_tree = max(self.peak_tree, total)
        self.peak_pss_tree = max(self.peak_pss_tree, pss)


def _pss(process: psutil.Process) -> int:
    """The process's proportional set size (Linux), 0 where it cannot be read."""
    try:
        return int(getattr(process.memory_full_info(), "pss", 0))
    except (psutil.AccessDenied, psutil.ZombieProcess):
        return 0


def measure(
    tool: str, round_: int, invocation: Invocation, log: Path, secrets: Sequence[str], stdout: Path | None = None,
    shown: bool = False,
) -> Measurement:
    """Run the tool, sampling its process tree, and return what it cost.

    Its output goes to ``log``; with ``stdout``, standard output goes to that file instead
    (a tool's JSON document), standard error still to the log.  With ``shown`` (the demo),
    the tool writes to this process's own standard output and error, a terminal if it is
    one: what a user running it would see.
    """
    busy_before = _busy_cpu_s()
    started = time.perf_counter()
    with open(log, "ab") as out, ExitStack() as files:
        out.write(f"$ {' '.join(invocation.argv)}\n".encode())
        out.flush()
        document = files.enter_context(open(stdout, "wb")) if stdout is not None else None
        sys.stdout.flush()
        process = subprocess.Popen(
            invocation.argv, stdin=subprocess.DEVNULL, stdout=None if shown else document or out,
            stderr=None if shown else out if document else subprocess.STDOUT,
            env={**os.environ, **(invocation.env or {})},
        )
        sampler = _TreeSampler(process.pid, secrets)
        sampler.start()
        timer = threading.Timer(TOOL_TIMEOUT_S, process.kill)
        timer.start()
        # wait4 rather than Popen.wait: its rusage covers every descendant that was reaped
        # down the tree, including those too short-lived for the sampler to see.
        _pid, status, rusage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        timer.cancel()
        process.returncode = os.waitstatus_to_exitcode(status)
        sampler.done.set()
        sampler.join()
    # The sampler misses the last few ms of each process; rusage misses descendants that
    # were re-parented (daemons); the larger of the two is the closer to the truth.
    cpu = max(sum(sampler.cpu_by_pid.values()), rusage.ru_utime + rusage.ru_stime)
    return Measurement(
        tool=tool, round=round_, exit_code=process.returncode, wall_s=wall, cpu_s=cpu,
        system_cpu_s=_busy_cpu_s() - busy_before, peak_rss_tree=sampler.peak_tree,
        peak_rss_process=sampler.peak_process, processes=len(sampler.cpu_by_pid), peak_pss_tree=sampler.peak_pss_tree,
        password_in_argv=sampler.password_in_argv, note=invocation.note, peak_rss_by_depth=sampler.peak_by_depth,
    )


# ---------------------------------------------------------------------------- tools


def _private_file(path: Path, text: str) -> Path:
    """Write a file only we can read: configs that hold passwords."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def parse_tool(spec: str) -> tuple[str, int]:
    """``fastsync:8`` -> ("fastsync", 8); other tools take no number (0)."""
    name, _, procs = spec.partition(":")
    if name not in TOOLS:
        raise ValueError(f"unknown tool {name!r}; choose from {', '.join(TOOLS)}")
    if name == "fastsync":
        return name, int(procs or 4)
    if procs:
        raise ValueError(f"{name} takes no ':N'")
    return name, 0


def installed(name: str) -> str | None:
    """None when the tool can run here, else why not."""
    executable = {"fastsync": None, "offlineimap": "offlineimap"}.get(name, name)
    if executable is None or shutil.which(executable):
        return None
    hints = {
        "mbsync": "Debian: apt-get install isync",
        "offlineimap": "Debian: apt-get install offlineimap3",
        "doveadm": "Debian: apt-get install dovecot-core",
        "imapsync": "not packaged by Debian; needs the imapsync script on PATH",
    }
    return f"{executable} not installed ({hints[name]})"


def byte_compile_fastsync() -> None:
    """Byte-compile fastsync's modules, so that it is measured as installed: pip writes the
    .pyc files at install time, whereas a checkout run with PYTHONDONTWRITEBYTECODE set
    compiles every module again in each of its processes, on every run."""
    import fastsync

    compileall.compile_dir(Path(fastsync.__file__).parent, quiet=1)


def fastsync_invocation(workdir: Path, src: Side, dst: Side, procs: int, quiet: bool = True) -> Invocation:
    def side(label: str, s: Side) -> dict[str, object]:
        out: dict[str, object] = {"label": label, "server": f"{s.host}:{s.port}", "user": s.user, "pass": s.password,
                                  "tls": "implicit" if s.tls else "none"}
        if s.ca_file:
            out["ca_file"] = s.ca_file
        return out

    config = _private_file(workdir / "fastsync.json",
                           json.dumps({"src": side("source", src), "dst": side("destination", dst)}, indent=2))
    # The JSON log says when the workers logged in and sent their first APPEND (`first_append_after_logins`).
    return Invocation([sys.executable, "-m", "fastsync", "sync", "-c", str(config), "-y", *(["-q"] if quiet else []),
                       "--procs", str(procs), "--log-file", str(workdir / LOG_NAME), "--log-format", "json"])


# fastsync's --log-file in its work directory.
LOG_NAME = "fastsync-log.jsonl"


def first_append_after_logins(log: Path) -> tuple[float, float] | None:
    """Seconds from the first and from the last worker's login (both sides) to the run's
    first APPEND, from fastsync's JSON log (the "unit copied" events carry each worker's
    `logged_in_at` and `first_append_at` once); None when the log does not say."""
    logins: list[float] = []
    appends: list[float] = []
    try:
        lines = log.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == "run finished":
            break  # the rerun appends to the same log
        if record.get("logged_in_at"):
            logins.append(float(record["logged_in_at"]))
        if record.get("first_append_at"):
            appends.append(float(record["first_append_at"]))
    if not logins or not appends:
        return None
    return min(appends) - min(logins), min(appends) - max(logins)


def doveadm_invocation(workdir: Path, src: Side, dst_server: Dovecot, dst_user: str) -> Invocation:
    # dsync runs on the destination server and writes to its storage directly; only the
    # source is reached over IMAP (imapc).  The settings, password included, go in a
    # private config that includes the server's, instead of -o on the command line.
    settings = [
        f"!include {dst_server.config_path}",
        f"imapc_host = {src.host}",
        f"imapc_port = {src.port}",
        f"imapc_user = {src.user}",
        f"imapc_password = {src.password}",
        "imapc_features = rfc822.size fetch-headers",
        # Without it imapc fetches one message at a time and waits a round trip for each
        # (55 s instead of ~5 s at 50 ms RTT); 20 requests in flight is doveadm at its best.
        "mail_prefetch_count = 20",
        f"imapc_ssl = {'imaps' if src.tls else 'no'}",
    ]
    if src.ca_file:
        # A path, not "<file" contents as the server-side ssl_* settings take: with the
        # contents, imapc fails "Can't load CA certs" and doveadm then crashes (SIGSEGV).
        # imapc verifies the certificate and the host name (imapc_ssl_verify = yes).
        settings.append(f"ssl_client_ca_file = {src.ca_file}")
    config = _private_file(workdir / "doveadm.conf", "\n".join(settings) + "\n")
    return Invocation(["doveadm", "-c", str(config), "backup", "-R", "-u", dst_user, "imapc:"],
                      note="runs on the destination server: writes its storage directly, IMAP only to the source")


def mbsync_invocation(workdir: Path, src: Side, dst: Side) -> Invocation:
    def account(name: str, s: Side) -> str:
        tls = f"SSLType IMAPS\nCertificateFile {s.ca_file}\n" if s.tls else "SSLType None\n"
        # mbsync matches the certificate against DNS names only, not IP addresses; the test
        # certificates name "localhost" too.
        host = "localhost" if s.tls and s.host == "127.0.0.1" else s.host
        return (f"IMAPAccount {name}\nHost {host}\nPort {s.port}\nUser {s.user}\nPass \"{s.password}\"\n"
                f"{tls}AuthMechs LOGIN\n\nIMAPStore {name}\nAccount {name}\n\n")

    state = workdir / "mbsync-state"
    state.mkdir(exist_ok=True)
    config = _private_file(workdir / "mbsyncrc", account("far", src) + account("near", dst) + (
        "Channel bench\nFar :far:\nNear :near:\nPatterns *\nCreate Near\nSync Pull\n"
        "Expunge None\nRemove None\n"
        # Without it mbsync gives every copy the time of the copy as its internal date.
        "CopyArrivalDate yes\n"
        f"SyncState {state}/\n"
    ))
    return Invocation(["mbsync", "-c", str(config), "-q", "bench"])


def offlineimap_invocation(workdir: Path, src: Side, dst: Side) -> Invocation:
    # One connection per folder thread, up to this many per side (offlineimap's parallelism).
    connections = 4

    def repository(name: str, s: Side, readonly: bool) -> str:
        tls = f"ssl = yes\nsslcacertfile = {s.ca_file}\n" if s.tls else "ssl = no\nstarttls = no\n"
        return (f"[Repository {name}]\ntype = IMAP\nremotehost = {s.host}\nremoteport = {s.port}\n"
                f"remoteuser = {s.user}\nremotepass = {s.password}\n{tls}maxconnections = {connections}\n"
                f"readonly = {readonly}\ncreatefolders = {not readonly}\n\n")

    config = _private_file(workdir / "offlineimaprc", (
        f"[general]\naccounts = bench\nmetadata = {workdir / 'offlineimap-state'}\nui = Quiet\n\n"
        "[Account bench]\nlocalrepository = near\nremoterepository = far\n\n"
        + repository("far", src, True) + repository("near", dst, False)
    ))
    return Invocation(["offlineimap", "-c", str(config), "-o", "-u", "Quiet"],
                      note=f"maxconnections = {connections} per side")


def imapsync_invocation(workdir: Path, src: Side, dst: Side) -> Invocation:
    args = ["imapsync", "--noreleasecheck", "--nolog", "--nofoldersizes"]
    for n, s in (("1", src), ("2", dst)):
        secret = _private_file(workdir / f"imapsync-pass{n}", s.password)
        args += [f"--host{n}", s.host, f"--port{n}", str(s.port), f"--user{n}", s.user, f"--passfile{n}", str(secret)]
        if s.tls:
            args += [f"--ssl{n}"]
    return Invocation(args)


# ---------------------------------------------------------------------------- the session


@dataclass
class Bench:
    """Two private Dovecot servers, the seeded source account and where the tools reach them."""

    src_server: Dovecot
    dst_server: Dovecot
    messages: int
    size_bytes: int
    src: Side
    dst_address: tuple[str, int]
    tls: bool
    # The WAN proxies' logs, by side, with --wan-log (`harness.wanproxy.WireLog`).
    wire_logs: dict[str, WireLog] = field(default_factory=dict)
    rate_bytes_per_s: int = 0

    def dst_side(self, user: str) -> Side:
        return Side(self.dst_address[0], self.dst_address[1], user, self.dst_server.users[user], self.tls,
                    str(self.dst_server.ca_file) if self.tls else None)

    def invocation(self, tool: str, procs: int, workdir: Path, dst_user: str) -> Invocation:
        dst = self.dst_side(dst_user)
        if tool == "fastsync":
            return fastsync_invocation(workdir, self.src, dst, procs)
        if tool == "doveadm":
            return doveadm_invocation(workdir, self.src, self.dst_server, dst_user)
        if tool == "mbsync":
            return mbsync_invocation(workdir, self.src, dst)
        if tool == "offlineimap":
            return offlineimap_invocation(workdir, self.src, dst)
        return imapsync_invocation(workdir, self.src, dst)

    def verify(self, dst_user: str) -> Report:
        # Directly, not through the WAN proxy: verification is not what is measured.
        def endpoint(server: Dovecot, user: str) -> Endpoint:
            port = server.tls_port if self.tls and server.tls_port else server.port
            return Endpoint(server.host, port, user, server.users[user], self.tls,
                            str(server.ca_file) if self.tls else None)

        return compare(endpoint(self.src_server, SRC_USER).client, endpoint(self.dst_server, dst_user).client)


@contextmanager
def bench_session(
    root: Path, corpus: Sequence[Message], dst_users: Sequence[str], *, tls: bool, delay_s: float, rate: int,
    storage: str = MAIL_FORMAT, fsync: bool = False, imap_zlib: bool = False, wan_log: bool = False,
) -> Iterator[Bench]:
    """Start both servers (destination users made up front: no passwd reload wait), seed the source.

    ``storage`` and ``fsync`` apply to both servers: every tool reads and writes the same
    kind of store (doveadm writes the destination's directly).
    """
    with ExitStack() as stack:
        # chroot=False on both (the same for every tool): doveadm runs against the destination's
        # store, and a chrooted doveadm cannot load Dovecot's TLS module for its imapc source.
        src_server = stack.enter_context(Dovecot(root / "src", {SRC_USER: SRC_PASSWORD}, separator="/", starttls=tls,
                                                 mail_format=storage, fsync=fsync, chroot=False,
                                                 imap_zlib=imap_zlib))
        dst_server = stack.enter_context(
            Dovecot(root / "dst", {u: f"{u}-pw" for u in dst_users}, separator=".", starttls=tls,
                    mail_format=storage, fsync=fsync, chroot=False, imap_zlib=imap_zlib)
        )
        seed_account(src_server.host, src_server.port, SRC_USER, SRC_PASSWORD, corpus, separator="/")
        src_port = src_server.tls_port if tls and src_server.tls_port else src_server.port
        dst_port = dst_server.tls_port if tls and dst_server.tls_port else dst_server.port
        logs = {"src": WireLog(), "dst": WireLog()} if wan_log and (delay_s or rate) else {}
        if delay_s or rate:
            src_port = stack.enter_context(WanProxy(src_server.host, src_port, delay_s, rate, logs.get("src"))).port
            dst_port = stack.enter_context(WanProxy(dst_server.host, dst_port, delay_s, rate, logs.get("dst"))).port
        src = Side(src_server.host, src_port, SRC_USER, SRC_PASSWORD, tls,
                   str(src_server.ca_file) if tls else None)
        yield Bench(src_server, dst_server, len(corpus), sum(len(m.body) for m in corpus), src,
                    (dst_server.host, dst_port), tls, logs, rate)


def scratch_dir(prefix: str) -> Path:
    """A fresh temporary directory that the servers' unprivileged mail processes may enter
    (mkdtemp makes it 0700): they run unchrooted, see `bench_session`.  Nothing in it is
    listable by others; the passwords are in 0600 files."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(root, 0o711)
    return root


def _user_for(spec: str, round_: int) -> str:
    return f"{spec.replace(':', '')}-r{round_}"


def run_tool(bench: Bench, spec: str, round_: int, workdir: Path, logs: Path, rerun: bool) -> Measurement:
    name, procs = parse_tool(spec)
    user = _user_for(spec, round_)
    tool_dir = workdir / user
    tool_dir.mkdir(parents=True)
    invocation = bench.invocation(name, procs, tool_dir, user)
    secrets = [bench.src.password, bench.dst_server.users[user]]
    log = logs / f"{user}.log"
    servers = bench.src_server.cpu_s(), bench.dst_server.cpu_s()
    started_s = time.monotonic()
    result = measure(spec, round_, invocation, log, secrets)
    if bench.wire_logs:
        ended_s = time.monotonic()
        (logs / f"{user}.timeline.txt").write_text(timeline(bench.wire_logs, started_s, ended_s, bench.rate_bytes_per_s))
        # The chunks themselves, times from the tool's start, for a closer look.
        (logs / f"{user}.wire.json").write_text(json.dumps({
            side: [[c.conn, c.direction, c.size_bytes, round(c.read_s - started_s, 4), round(c.sent_s - started_s, 4),
                    list(c.commands)] for c in log.between(started_s, ended_s).chunks]
            for side, log in bench.wire_logs.items()}))
    if name == "fastsync":
        result.first_append_after_logins_s = first_append_after_logins(tool_dir / LOG_NAME)
        with suppress(OSError):
            shutil.copyfile(tool_dir / LOG_NAME, logs / f"{user}.jsonl")
    result.src_server_cpu_s = bench.src_server.cpu_s() - servers[0]
    result.dst_server_cpu_s = bench.dst_server.cpu_s() - servers[1]
    report = bench.verify(user)
    result.verification = report.to_dict()
    if not report.ok:
        with open(log, "a", encoding="utf-8") as out:
            out.write("\nverification:\n" + report.describe() + "\n")
    if rerun and result.exit_code == 0:
        again = measure(spec, round_, invocation, log, secrets)
        result.rerun_wall_s, result.rerun_exit_code = again.wall_s, again.exit_code
    return result


# ---------------------------------------------------------------------------- reporting


def _mb(n: float) -> float:
    return n / 1e6


def summarise(runs: Sequence[Measurement], messages: int, size_bytes: int) -> list[dict[str, object]]:
    """One row per tool: medians over rounds (peak RSS: the largest), verification of every round."""
    rows: list[dict[str, object]] = []
    for tool in dict.fromkeys(r.tool for r in runs):
        mine = [r for r in runs if r.tool == tool]
        wall = statistics.median(r.wall_s for r in mine)
        cpu = statistics.median(r.cpu_s for r in mine)
        failed = [r for r in mine if not r.verification.get("ok")]
        reruns = [r.rerun_wall_s for r in mine if r.rerun_wall_s is not None]
        rows.append({
            "tool": tool,
            "rounds": len(mine),
            "exit_codes": sorted({r.exit_code for r in mine}),
            "wall_s": wall,
            "wall_s_min": min(r.wall_s for r in mine),
            "wall_s_max": max(r.wall_s for r in mine),
            "messages_per_s": messages / wall,
            "mb_per_s": _mb(size_bytes) / wall,
            "cpu_s": cpu,
            "cpu_s_per_10k_messages": cpu * 10_000 / messages if messages else 0.0,
            "cpu_s_per_gb": cpu * 1e9 / size_bytes if size_bytes else 0.0,
            "peak_pss_tree_mb": _mb(max(r.peak_pss_tree for r in mine)),
            "system_cpu_s": statistics.median(r.system_cpu_s for r in mine),
            "src_server_cpu_s": statistics.median(r.src_server_cpu_s for r in mine),
            "dst_server_cpu_s": statistics.median(r.dst_server_cpu_s for r in mine),
            "peak_rss_tree_mb": _mb(max(r.peak_rss_tree for r in mine)),
            "peak_rss_process_mb": _mb(max(r.peak_rss_process for r in mine)),
            "processes": max(r.processes for r in mine),
            "password_in_argv": any(r.password_in_argv for r in mine),
            "rerun_wall_s": statistics.median(reruns) if reruns else None,
            "verified": not failed,
            "verification": str((failed or mine)[0].verification.get("summary", "")),
            "note": mine[0].note,
            "first_append_after_logins_s": [r.first_append_after_logins_s for r in mine
                                            if r.first_append_after_logins_s is not None],
        })
    return rows


# Round trips before a connection can carry mail: TCP's handshake, CAPABILITY, AUTHENTICATE
# PLAIN with its continuation (two), and TLS 1.3's handshake where on.
LOGIN_ROUND_TRIPS = 4
TLS_ROUND_TRIPS = 1

# Connections each tool copies over per side (offlineimap: maxconnections above).
CONNECTIONS = {"doveadm": 1, "mbsync": 1, "imapsync": 1, "offlineimap": 4}


def connections_of(spec: str) -> int:
    """How many connections *spec* moves messages over, per side (fastsync:P: its P workers)."""
    name, procs = parse_tool(spec)
    return procs if name == "fastsync" else CONNECTIONS.get(name, 1)


def link_floor_s(size_bytes: int, connections: int, meta: dict[str, object]) -> float:
    """The time the links alone need: the bytes over *connections* at the per-connection rate
    (each direction is a link of its own, so both run at once), plus one login's round
    trips.  Without a rate cap only the round trips count."""
    rate = float(meta.get("rate_bytes_per_s") or 0)  # type: ignore[arg-type]
    rtt_s = 2 * float(meta.get("wan_delay_ms") or 0) / 1000  # type: ignore[arg-type]
    trips = LOGIN_ROUND_TRIPS + (TLS_ROUND_TRIPS if meta.get("tls") else 0)
    return (size_bytes / (connections * rate) if rate else 0.0) + trips * rtt_s


# Round trips on the way to a message's last byte stored, beyond a login's: the FETCH that
# asks for its body, and the way of its last byte to the destination with the APPEND's reply.
FIRST_BYTE_ROUND_TRIPS = 2


def physical_floor_s(size_bytes: int, largest_bytes: int, connections: int, meta: dict[str, object]) -> float:
    """`link_floor_s`, or longer: one message is one literal on one connection (RFC 3501
    section 6.3.11), so no copy ends before the largest message has crossed one link at
    the per-connection rate (its download and upload overlap when streamed), after a
    login's round trips and `FIRST_BYTE_ROUND_TRIPS`.  *largest_bytes* as on the wire."""
    rate = float(meta.get("rate_bytes_per_s") or 0)  # type: ignore[arg-type]
    rtt_s = 2 * float(meta.get("wan_delay_ms") or 0) / 1000  # type: ignore[arg-type]
    trips = LOGIN_ROUND_TRIPS + (TLS_ROUND_TRIPS if meta.get("tls") else 0) + FIRST_BYTE_ROUND_TRIPS
    one = (largest_bytes / rate if rate else 0.0) + trips * rtt_s
    return max(link_floor_s(size_bytes, connections, meta), one)


def _wire_bytes(tool: str, meta: dict[str, object]) -> int:
    """The corpus bytes *tool* moves over its links: with the servers' imap_zlib, fastsync
    compresses (COMPRESS=DEFLATE), so its floor is the corpus's deflated size."""
    size = int(meta.get("bytes") or 0)  # type: ignore[call-overload]
    if meta.get("imap_zlib") and tool.startswith("fastsync"):
        return int(size * float(meta.get("deflate_ratio") or 1))  # type: ignore[arg-type]
    return size


def _largest_wire_bytes(tool: str, meta: dict[str, object]) -> int:
    """The corpus's largest message as *tool* moves it (deflated, as `_wire_bytes`)."""
    compressed = meta.get("imap_zlib") and tool.startswith("fastsync")
    return int(str(meta.get("largest_deflated_bytes" if compressed else "largest_bytes") or 0))


def deflated_bytes(body: bytes) -> int:
    """One message's size deflated as `deflate_ratio` counts it."""
    stream = zlib.compressobj(6, zlib.DEFLATED, -15)
    return len(stream.compress(body)) + len(stream.flush(zlib.Z_SYNC_FLUSH))


def deflate_ratio(bodies: Sequence[bytes]) -> float:
    """Compressed size over size of the bodies as one COMPRESS=DEFLATE stream would carry
    them (RFC 4978: raw deflate, a sync flush after each message): what the corpus itself
    makes of compression (generated text compresses far better than real mail)."""
    stream = zlib.compressobj(6, zlib.DEFLATED, -15)
    size = sum(len(b) for b in bodies)
    packed = sum(len(stream.compress(b)) + len(stream.flush(zlib.Z_SYNC_FLUSH)) for b in bodies)
    return packed / size if size else 1.0


def _fsync_setting(fsync: bool) -> str:
    """The servers' mail_fsync value, as bench/harness/dovecot.py writes it."""
    return "optimized" if fsync else "never"


def _ratio(value: float, reference: float | None) -> str:
    return f"{reference / value:.2f}" if reference and value else "-"


def markdown(meta: dict[str, object], rows: Sequence[dict[str, object]], skipped: dict[str, str]) -> str:
    """The results table; speed ratios are the reference's wall time over the tool's (2.0 = twice as fast)."""
    by_tool = {str(r["tool"]): r for r in rows}
    doveadm = by_tool.get("doveadm")
    fastsync = next((r for r in rows if str(r["tool"]).startswith("fastsync")), None)
    doveadm_wall = float(doveadm["wall_s"]) if doveadm else None  # type: ignore[arg-type]
    fastsync_wall = float(fastsync["wall_s"]) if fastsync else None  # type: ignore[arg-type]
    lines = [
        (f"Profile {meta['profile']} x{meta['scale']}: {meta['messages']} messages, {meta['mb']:.1f} MB; "
         f"WAN delay {meta['wan_delay_ms']} ms each way; TLS {'on' if meta['tls'] else 'off'}; "
         f"storage {meta.get('storage', MAIL_FORMAT)}, mail_fsync {meta.get('mail_fsync', 'never')}; "
         f"imap_zlib {'on' if meta.get('imap_zlib') else 'off'}; {meta['rounds']} round(s), medians."),
        "",
        (f"link s: the bytes over the tool's connections at {meta.get('rate_bytes_per_s') or 'no'} bytes/s each "
         f"plus a login's round trips (issue 31's floor); physical s: that, or the largest message "
         f"({int(str(meta.get('largest_bytes') or 0)) / 1e6:.2f} MB) over one connection plus the round trips "
         f"before and after it, whichever is longer (one message is one literal on one connection); the corpus "
         f"deflates to {float(str(meta.get('deflate_ratio') or 1)):.2f} of its "
         "size (COMPRESS=DEFLATE's floor would be that much lower; generated text compresses far better than "
         "real mail).  CPU and PSS are the tool's process tree."
         + ("  Servers with imap_zlib: fastsync's link s is over the deflated size." if meta.get("imap_zlib") else "")),
        "",
        (f"| tool | wall s | msg/s | MB/s | speed vs doveadm | speed vs {fastsync['tool'] if fastsync else 'fastsync'} "
         "| link s | wall / link | physical s | wall / physical "
         "| tool CPU s | CPU s per 10k msg | CPU s per GB | system CPU s | source server CPU s "
         "| destination server CPU s | peak RSS tree MB | peak PSS tree MB | rerun s | verification |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        wall = float(r["wall_s"])  # type: ignore[arg-type]
        rerun = f"{r['rerun_wall_s']:.2f}" if r["rerun_wall_s"] is not None else "-"
        status = str(r["verification"]) + ("" if r["exit_codes"] == [0] else f" (exit {r['exit_codes']})")
        tool, connections = str(r["tool"]), connections_of(str(r["tool"]))
        link = link_floor_s(_wire_bytes(tool, meta), connections, meta)
        physical = physical_floor_s(_wire_bytes(tool, meta), _largest_wire_bytes(tool, meta), connections, meta)
        lines.append(
            f"| {r['tool']} | {wall:.2f} | {r['messages_per_s']:.0f} | {r['mb_per_s']:.1f} "
            f"| {_ratio(wall, doveadm_wall)} | {_ratio(wall, fastsync_wall)} | {link:.2f} | {f'{wall / link:.2f}x' if link else '-'} "
            f"| {physical:.2f} | {f'{wall / physical:.2f}x' if physical else '-'} "
            f"| {r['cpu_s']:.1f} | {r.get('cpu_s_per_10k_messages', 0):.1f} | {r.get('cpu_s_per_gb', 0):.1f} "
            f"| {r['system_cpu_s']:.1f} | {r['src_server_cpu_s']:.1f} | {r['dst_server_cpu_s']:.1f} "
            f"| {r['peak_rss_tree_mb']:.0f} | {r.get('peak_pss_tree_mb', 0):.0f} | {rerun} | {status} |"
        )
    for tool, reason in skipped.items():
        lines.append(f"| {tool} | skipped: {reason} ||||||||||||||||||||")
    notes = [f"- {r['tool']}: {r['note']}" for r in rows if r["note"]]
    notes += [f"- {r['tool']}: first APPEND " + ", ".join(f"{first:.2f} s" for first, _last in times)
              + " after the first worker's login (" + ", ".join(f"{last:.2f} s" for _first, last in times)
              + " after the last's), by round" for r in rows if (times := r.get("first_append_after_logins_s"))]
    notes += [f"- {r['tool']}: password visible in a command line" for r in rows if r["password_in_argv"]]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def chart(path: Path, rows: Sequence[dict[str, object]]) -> bool:
    """A bar chart of messages/s and CPU seconds; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    tools = [str(r["tool"]) for r in rows]
    figure, (speed, cpu) = plt.subplots(1, 2, figsize=(11, 4))
    speed.bar(tools, [float(r["messages_per_s"]) for r in rows], color="tab:blue")  # type: ignore[arg-type]
    speed.set_title("messages per second (higher is better)")
    cpu.bar(tools, [float(r["cpu_s"]) for r in rows], color="tab:orange", label="tool tree")  # type: ignore[arg-type]
    cpu.bar(tools, [float(r["system_cpu_s"]) for r in rows], color="none", edgecolor="black",  # type: ignore[arg-type]
            label="whole machine")
    cpu.set_title("CPU seconds (lower is better)")
    cpu.legend()
    for axis in (speed, cpu):
        axis.tick_params(axis="x", rotation=30)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def _versions() -> dict[str, str]:
    commands = {"dovecot": ["dovecot", "--version"], "mbsync": ["mbsync", "--version"],
                "offlineimap": ["offlineimap", "--version"]}
    out = {}
    for name, argv in commands.items():
        if shutil.which(argv[0]):
            result = subprocess.run(argv, capture_output=True, text=True, check=False)
            out[name] = (result.stdout.strip() or result.stderr.strip() or "?").splitlines()[0]
    from fastsync import __version__

    out["fastsync"] = __version__
    return out


# ---------------------------------------------------------------------------- commands


def run(
    profile: str, tools: Sequence[str], out: Path, *, scale: float, seed: int, repeat: int, wan_delay_ms: float,
    rate: int, tls: bool, rerun: bool, storage: str = MAIL_FORMAT, fsync: bool = False, imap_zlib: bool = False,
    wan_log: bool = False,
) -> int:
    """The comparison; writes results.json, results.md (and results.png) under ``out``."""
    runnable, skipped = [], {}
    for spec in tools:
        name, _ = parse_tool(spec)
        reason = installed(name)
        if reason:
            skipped[spec] = reason
            print(f"skipping {spec}: {reason}")
        else:
            runnable.append(spec)
    byte_compile_fastsync()
    corpus = generate(profile, seed=seed, scale=scale)
    size = sum(len(m.body) for m in corpus)
    print(f"corpus {profile} x{scale}: {len(corpus)} messages, {_mb(size):.1f} MB; "
          f"servers: {storage}, mail_fsync {_fsync_setting(fsync)}" + (", imap_zlib (COMPRESS=DEFLATE)" if imap_zlib else ""))
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    users = [_user_for(spec, n) for n in range(1, repeat + 1) for spec in runnable]
    runs: list[Measurement] = []
    root = scratch_dir("fsbench-")
    try:
        with bench_session(root / "servers", corpus, users, tls=tls, delay_s=wan_delay_ms / 1000, rate=rate,
                           storage=storage, fsync=fsync, imap_zlib=imap_zlib, wan_log=wan_log) as bench:
            # On a TLS port the server speaks only after the handshake: no greeting to time.
            rtt = None if tls else measure_rtt(bench.src.host, bench.src.port)
            if rtt is not None:
                print(f"connect + greeting through the source address: {rtt * 1000:.1f} ms")
            for round_ in range(1, repeat + 1):
                # Rounds go over all tools in turn, so drift (disk writeback, caches) is shared.
                for spec in runnable:
                    result = run_tool(bench, spec, round_, root / "work", logs, rerun)
                    runs.append(result)
                    print(f"round {round_} {spec}: exit {result.exit_code}, {result.wall_s:.2f} s, "
                          f"CPU {result.cpu_s:.1f} s, machine CPU {result.system_cpu_s:.1f} s, "
                          f"peak RSS {_mb(result.peak_rss_tree):.0f} MB, "
                          f"verification: {result.verification['summary']}"
                          + (", first APPEND {:.2f} s after the first worker's login, {:.2f} s after the last's".format(
                              *result.first_append_after_logins_s) if result.first_append_after_logins_s else "")
                          + (f", rerun {result.rerun_wall_s:.2f} s" if result.rerun_wall_s is not None else ""))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    meta: dict[str, object] = {
        "profile": profile, "scale": scale, "seed": seed, "messages": len(corpus), "mb": _mb(size),
        "wan_delay_ms": wan_delay_ms, "rate_bytes_per_s": rate, "tls": tls, "rounds": repeat,
        "storage": storage, "mail_fsync": _fsync_setting(fsync), "bytes": size, "imap_zlib": imap_zlib,
        "deflate_ratio": round(deflate_ratio([m.body for m in corpus]), 3),
        "largest_bytes": max((len(m.body) for m in corpus), default=0),
        "largest_deflated_bytes": max((deflated_bytes(m.body) for m in corpus), default=0),
        "connect_greeting_ms": round(rtt * 1000, 1) if rtt is not None else None, "cpus": psutil.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "versions": _versions(),
    }
    rows = summarise(runs, len(corpus), size)
    (out / "results.json").write_text(json.dumps(
        {"meta": meta, "summary": rows, "skipped": skipped, "runs": [asdict(r) for r in runs]}, indent=2) + "\n")
    table = markdown(meta, rows, skipped)
    (out / "results.md").write_text(table)
    print()
    print(table)
    if chart(out / "results.png", rows):
        print(f"chart: {out / 'results.png'}")
    print(f"results: {out}")
    return 0 if all(r.verification.get("ok") and r.exit_code == 0 for r in runs) else 1


def demo(scale: float, procs: int, seed: int) -> int:
    """The README's main job, end to end, in well under a minute: fastsync's own output (its
    plan, progress bars on a terminal, its summary line), then the verification and the
    speed as measured from outside."""
    byte_compile_fastsync()
    corpus = generate("realistic", seed=seed, scale=scale)
    size = sum(len(m.body) for m in corpus)
    spec = f"fastsync:{procs}"
    user = _user_for(spec, 1)
    root = scratch_dir("fsdemo-")
    try:
        print(f"starting two Dovecot servers (source separator '/', destination '.') under {root}")
        with bench_session(root / "servers", corpus, [user], tls=False, delay_s=0, rate=0) as bench:
            print(f"seeded {len(corpus)} messages, {_mb(size):.1f} MB; both servers listen on 127.0.0.1 without "
                  "TLS, which fastsync warns about")
            workdir = root / "work" / user
            workdir.mkdir(parents=True)
            invocation = fastsync_invocation(workdir, bench.src, bench.dst_side(user), procs, quiet=False)
            # The command as a user would type it; the config file holds both accounts.
            print(f"\n$ fastsync sync -c {workdir / 'fastsync.json'} -y --procs {procs}", flush=True)
            result = measure(spec, 1, invocation, root / f"{user}.log", [bench.src.password,
                             bench.dst_server.users[user]], shown=True)
            report = bench.verify(user)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print()
    print(f"verification {'passed' if report.ok else 'FAILED'}: {report.summary()}")
    print(f"messages     {len(corpus)}")
    print(f"MB           {_mb(size):.1f}")
    print(f"wall s       {result.wall_s:.2f} (the whole fastsync process, start-up included)")
    print(f"messages/s   {len(corpus) / result.wall_s:.0f}")
    print(f"MB/s         {_mb(size) / result.wall_s:.1f}")
    print(f"CPU s        {result.cpu_s:.1f} (fastsync and its workers), peak RSS {_mb(result.peak_rss_tree):.0f} MB")
    print(f"exit code    {result.exit_code}")
    if result.exit_code != 0 or not report.ok:
        if not report.ok:
            print(report.describe())
        return 1
    return 0
