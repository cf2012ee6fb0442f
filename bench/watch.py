"""``python -m bench watch``: how far behind the source ``fastsync sync --watch`` keeps the destination.

Issue 16 ("a continuous mirror until cutover").  Two private Dovecot servers; the source
user holds the realistic corpus (``--scale``) and an empty folder ``Probe``.  fastsync
runs ``sync -y --watch`` against them, and once it listens a probe acts on the source and
watches the destination from a connection of its own (NOOP and a UID FETCH every
``PROBE_INTERVAL_S``), so every lag is measured from the source's APPEND or STORE to the
moment the destination shows it:

* ``inbox``: 20 messages APPENDed to INBOX, one every 0.5 s;
* ``flags``: ``\\Flagged`` set on 10 of them, one every 0.5 s;
* ``polled``: 3 messages APPENDed to ``Probe``, one every second (a polled folder when
  the source lacks NOTIFY: at most ``--poll`` + 5 s is the goal there);
* ``idle``: the CPU seconds of fastsync's whole process tree over 20 s with nothing
  happening;
* then Ctrl-C (SIGINT): fastsync's exit code, and ``fastsync check``'s on the pair.

Modes: ``notify`` (Dovecot as it is: NOTIFY, IDLE, CONDSTORE, QRESYNC) and ``idle-poll``
(a source announcing no NOTIFY, as Gmail or Office 365: IDLE on INBOX, the rest polled).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import imapclient
import psutil

from bench.harness.corpus import generate, seed_account
from bench.harness.dovecot import Dovecot
from bench.run import _private_file

MODES = ("notify", "idle-poll")
PROBE_INTERVAL_S = 0.05
# What a server without NOTIFY announces after login: Dovecot's list less NOTIFY.
NO_NOTIFY = ("IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT LITERAL+ NAMESPACE UIDPLUS LIST-EXTENDED "
             "LIST-STATUS MULTIAPPEND CONDSTORE QRESYNC SPECIAL-USE BINARY MOVE UNSELECT I18NLEVEL=1 ESEARCH")
PASSWORD = "watch-bench-pw"


@dataclass
class Round:
    mode: str
    messages: int
    first_sync_s: float = 0.0
    inbox_lag_s: list[float] = field(default_factory=list)
    flag_lag_s: list[float] = field(default_factory=list)
    polled_lag_s: list[float] = field(default_factory=list)
    missing: int = 0
    idle_cpu_s: float = 0.0
    exit_code: int | None = None
    check_exit_code: int | None = None


class Watcher(threading.Thread):
    """The destination as a user would see it: NOOP and a UID FETCH of what is new, every
    PROBE_INTERVAL_S; the first moment each Message-Id, and each Message-Id's \\Flagged, shows."""

    def __init__(self, server: Dovecot, user: str, folders: Sequence[str]) -> None:
        super().__init__(daemon=True)
        self.server, self.user, self.folders = server, user, folders
        self.seen: dict[bytes, float] = {}
        self.flagged: dict[bytes, float] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        clients = {}
        for folder in self.folders:
            client = imapclient.IMAPClient(self.server.host, self.server.port, ssl=False)
            client.login(self.user, PASSWORD)
            client.select_folder(folder, readonly=True)
            uidnext = client.folder_status(folder, [b"UIDNEXT"])[b"UIDNEXT"]
            clients[folder] = (client, uidnext)
        while not self.stopping.is_set():
            for client, first in clients.values():
                client.noop()
                uids = [uid for uid in client.search(["UID", f"{first}:*"]) if uid >= first]
                if not uids:
                    continue
                for data in client.fetch(uids, ["FLAGS", "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]).values():
                    key = data[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"].strip()
                    now = time.monotonic()
                    self.seen.setdefault(key, now)
                    if b"\\Flagged" in data[b"FLAGS"]:
                        self.flagged.setdefault(key, now)
            time.sleep(PROBE_INTERVAL_S)
        for client, _first in clients.values():
            client.logout()


def _message(n: int) -> tuple[bytes, bytes]:
    msgid = f"<probe-{n}-{time.time_ns()}@bench.example>".encode()
    body = (b"From: Probe <probe@bench.example>\r\nTo: user@bench.example\r\nSubject: probe " + str(n).encode()
            + b"\r\nMessage-ID: " + msgid + b"\r\n\r\nprobe message\r\n")
    return b"Message-ID: " + msgid, body


def _tree_cpu_s(pid: int) -> float:
    total = 0.0
    try:
        root = psutil.Process(pid)
        for process in [root, *root.children(recursive=True)]:
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                continue
    except psutil.Error:
        pass
    return total


def _config(work: Path, src: Dovecot, dst: Dovecot) -> Path:
    side = lambda label, server, user: {  # noqa: E731
        "label": label, "server": f"{server.host}:{server.port}", "user": user, "pass": PASSWORD, "tls": "none"}
    return _private_file(work / "fastsync.json", json.dumps({"src": side("source", src, "src"),
                                                             "dst": side("destination", dst, "dst")}))


def _wait(predicate: object, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def one_round(mode: str, root: Path, scale: float, poll_s: int, seed: int) -> Round:
    capability = NO_NOTIFY if mode == "idle-poll" else None
    users = {"src": PASSWORD, "dst": PASSWORD}
    with Dovecot(root / "src", users=users, imap_capability=capability) as src, \
            Dovecot(root / "dst", users=users) as dst:
        corpus = generate("realistic", seed=seed, scale=scale)
        seed_account(src.host, src.port, "src", PASSWORD, corpus)
        client = imapclient.IMAPClient(src.host, src.port, ssl=False)
        client.login("src", PASSWORD)
        client.create_folder("Probe")
        result = Round(mode, len(corpus))
        config = _config(root, src, dst)
        log = root / "watch.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FASTSYNC_", "IMAPSYNC_"))}
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-m", "fastsync", "sync", "-c", str(config), "-y", "--watch", "--poll", str(poll_s),
             "--state-dir", str(root / "state"), "--log-file", str(log), "--log-format", "json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            if not _wait(lambda: log.exists() and "watch listening" in log.read_text(), 300):
                raise RuntimeError(f"fastsync did not start watching: {process.poll()}")
            result.first_sync_s = time.monotonic() - started
            time.sleep(1.0)  # the pass that follows the listener's start
            watcher = Watcher(dst, "dst", ["INBOX", "Probe"])
            watcher.start()
            time.sleep(0.5)
            appended: dict[bytes, float] = {}
            for n in range(20):
                key, body = _message(n)
                client.append("INBOX", body)
                appended[key] = time.monotonic()
                time.sleep(0.5)
            _wait(lambda: all(k in watcher.seen for k in appended), 30)
            result.inbox_lag_s = [watcher.seen[k] - t for k, t in appended.items() if k in watcher.seen]
            client.select_folder("INBOX")
            flagged: dict[bytes, float] = {}
            for key in list(appended)[:10]:
                uids = client.search(["HEADER", "Message-ID", key.split(b" ", 1)[1].decode()])
                client.add_flags(uids, [b"\\Flagged"])
                flagged[key] = time.monotonic()
                time.sleep(0.5)
            _wait(lambda: all(k in watcher.flagged for k in flagged), 30)
            result.flag_lag_s = [watcher.flagged[k] - t for k, t in flagged.items() if k in watcher.flagged]
            polled: dict[bytes, float] = {}
            for n in range(3):
                key, body = _message(100 + n)
                client.append("Probe", body)
                polled[key] = time.monotonic()
                time.sleep(1.0)
            _wait(lambda: all(k in watcher.seen for k in polled), poll_s + 30)
            result.polled_lag_s = [watcher.seen[k] - t for k, t in polled.items() if k in watcher.seen]
            result.missing = (len(appended) - len(result.inbox_lag_s)) + (len(polled) - len(result.polled_lag_s))
            watcher.stopping.set()
            watcher.join(5)
            time.sleep(3.0)
            before = _tree_cpu_s(process.pid)
            time.sleep(20.0)
            result.idle_cpu_s = _tree_cpu_s(process.pid) - before
        finally:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGINT)
            out, err = process.communicate(timeout=120)
            result.exit_code = process.returncode
            (root / "watch.out").write_text(out + err)
            client.logout()
        check = subprocess.run([sys.executable, "-m", "fastsync", "check", "-c", str(config), "--state-dir",
                                str(root / "state")], capture_output=True, text=True, env=env)
        result.check_exit_code = check.returncode
        return result


def _range(values: Sequence[float], digits: int = 2) -> str:
    if not values:
        return "-"
    low, high = min(values), max(values)
    return f"{low:.{digits}f}" if round(low, digits) == round(high, digits) else f"{low:.{digits}f}-{high:.{digits}f}"


def markdown(rounds: Sequence[Round], poll_s: int) -> str:
    lines = [
        f"poll interval {poll_s} s; ranges over {len(rounds) // max(1, len({r.mode for r in rounds}))} rounds",
        "",
        "| mode | first sync s | INBOX lag median s | INBOX lag max s | flag lag median s | polled folder lag max s "
        "| idle CPU s / 20 s | missing | exit code | check exit code |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for mode in dict.fromkeys(r.mode for r in rounds):
        of = [r for r in rounds if r.mode == mode]
        lines.append(
            f"| {mode} | {_range([r.first_sync_s for r in of], 1)} "
            f"| {_range([statistics.median(r.inbox_lag_s) for r in of if r.inbox_lag_s])} "
            f"| {_range([max(r.inbox_lag_s) for r in of if r.inbox_lag_s])} "
            f"| {_range([statistics.median(r.flag_lag_s) for r in of if r.flag_lag_s])} "
            f"| {_range([max(r.polled_lag_s) for r in of if r.polled_lag_s])} "
            f"| {_range([r.idle_cpu_s for r in of])} | {sum(r.missing for r in of)} "
            f"| {', '.join(str(r.exit_code) for r in of)} | {', '.join(str(r.check_exit_code) for r in of)} |"
        )
    return "\n".join(lines) + "\n"


def watch(modes: Sequence[str], out: Path | None, *, scale: float, poll_s: int, repeat: int, seed: int) -> int:
    rounds = []
    for round_ in range(repeat):
        for mode in modes:
            with tempfile.TemporaryDirectory(prefix="fastsync-watch-") as tmp:
                result = one_round(mode, Path(tmp), scale, poll_s, seed + round_)
            rounds.append(result)
            print(f"round {round_ + 1} {mode}: first sync {result.first_sync_s:.1f} s, INBOX lag median "
                  f"{statistics.median(result.inbox_lag_s or [0]):.2f} s, flag lag median "
                  f"{statistics.median(result.flag_lag_s or [0]):.2f} s, polled max "
                  f"{max(result.polled_lag_s or [0]):.2f} s, idle CPU {result.idle_cpu_s:.2f} s, "
                  f"exit {result.exit_code}, check {result.check_exit_code}", flush=True)
    text = markdown(rounds, poll_s)
    print(text)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "watch.md").write_text(text)
        (out / "watch.json").write_text(json.dumps([asdict(r) for r in rounds], indent=2))
    ok = all(r.exit_code == 130 and r.check_exit_code == 0 and not r.missing for r in rounds)
    return 0 if ok else 1
