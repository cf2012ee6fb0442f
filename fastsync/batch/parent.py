"""One account pair of a batch, run in a process of its own (``python -m fastsync.batch.child``).

Engine layer.  `PairProcess` starts the pair's process, hands it the job over stdin (the
passwords never appear in its arguments or environment), keeps stdin open as the pair's
lifeline (a pair whose batch is gone stops, see `child.py`), and turns the JSON lines the
pair writes (`batch.lines.LineReporter`) into calls of the batch's callbacks: warnings,
the plan's size, copy progress, and at the end the pair's `PairResult`.

The pair runs in a session of its own, so a Ctrl-C at the terminal reaches the batch
alone, which then stops every pair once, with SIGTERM (`stop`): each finishes the unit in
hand, as a sync does.
"""

from __future__ import annotations

import collections
import pickle
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import orjson

from fastsync.settings.config import Config
from fastsync.records.errors import ExitCode
from fastsync.settings.options import Options
from fastsync.records.results import PairResult

# The pair's last lines of stderr kept for a pair that died without a result.
STDERR_LINES = 5


@dataclass
class Callbacks:
    """What the batch hears of a running pair."""

    warn: Callable[[str], None]
    planned: Callable[[int, int], None]
    advanced: Callable[[int, int], None]


def write_job(stream: IO[bytes], job: Any) -> None:
    """Send *job* to a pair's process (the counterpart of `read_job`)."""
    data = pickle.dumps(job)
    stream.write(struct.pack(">Q", len(data)) + data)
    stream.flush()


def read_job(stream: IO[bytes]) -> Any:
    """The job `write_job` sent, or None when the stream ends first (a spare never used)."""
    header = stream.read(8)
    if len(header) < 8:
        return None
    (size,) = struct.unpack(">Q", header)
    return pickle.loads(stream.read(size))


def spawn() -> subprocess.Popen[bytes]:
    """A pair's process, before its pair is known: it imports the sync (a few tenths of a
    second of start-up) and waits for its job, so a batch can have one ready when a pair
    starts (`PairProcess` takes it); one never given a job ends when its stdin closes."""
    return subprocess.Popen(
        [sys.executable, "-m", "fastsync.batch.child"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )


def discard(process: subprocess.Popen[bytes]) -> None:
    """End a spare pair process that got no job, and reap it: killed, as it holds nothing
    yet (no job, no connection, no worker) and may still be importing."""
    process.kill()
    process.wait()
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            stream.close()


class PairProcess:
    """``PairProcess(result, config, options, callbacks).wait()`` runs one pair to its end,
    in *process* (from `spawn`) when given, else in a process started now."""

    def __init__(self, result: PairResult, config: Config, options: Options, callbacks: Callbacks,
                 process: subprocess.Popen[bytes] | None = None) -> None:
        self.result = result
        self.callbacks = callbacks
        self.started = time.monotonic()
        self.process = process or spawn()
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        threading.Thread(target=self._read_stderr, daemon=True).start()
        assert self.process.stdin is not None
        try:
            write_job(self.process.stdin, (config, options))
        except OSError:
            pass  # the process died at once: wait() says how

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            self._stderr.append(raw.decode("utf-8", "replace").rstrip())

    def stop(self) -> None:
        """Ask the pair to stop as a sync stops on SIGTERM (once; it finishes the unit in hand)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self) -> PairResult:
        """Follow the pair's reports until it ends; its result, whatever way it ended."""
        assert self.process.stdout is not None
        final: dict[str, Any] | None = None
        for raw in self.process.stdout:
            try:
                message = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            kind = message.get("kind")
            if kind == "warn":
                self.callbacks.warn(message["text"])
            elif kind == "plan":
                self.callbacks.planned(message["messages"], message["bytes"])
            elif kind == "advance":
                self.callbacks.advanced(message["messages"], message["bytes"])
            elif kind == "result":
                # The last word: the pair's fork server may hold stdout open a little longer.
                final = message
                break
        code = self.process.wait()
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.result.elapsed_s = time.monotonic() - self.started
        return self._fill(final, code)

    def _fill(self, final: dict[str, Any] | None, code: int) -> PairResult:
        result = self.result
        if final is None:
            last = next((line for line in reversed(self._stderr) if line), "")
            result.outcome, result.exit_code = "failed", code if code > 0 else int(ExitCode.INTERNAL)
            result.errors.append(f"the pair's process ended without a result (exit code {code}){': ' + last if last else ''}")
            return result
        result.exit_code = int(final["exit_code"])
        doc = final.get("summary")
        if doc is not None:
            figures = doc["summary"]
            result.copied, result.present = figures["copied"], figures["present"]
            result.failed, result.copied_bytes = figures["failed"], figures["copied_bytes"]
            result.planned, result.planned_bytes = figures["planned"], figures["planned_bytes"]
            result.delete_planned = figures["delete_planned"]
            result.parked, result.resume_at = doc.get("parked", []), doc.get("resume_at")
            result.budget_uses = doc.get("budget_uses", {})
            result.errors.extend(doc["errors"])
            result.errors.extend(
                f"not copied: folder {f['folder']!r} UID {f['uid']}: {f['reason']}" for f in doc["failed"]
            )
            result.refused, result.accepted = list(doc["failed"]), list(doc.get("accepted", []))
            result.skipped = figures["skipped"]
            result.skip_rules = sorted({s["reason"] for s in doc["skipped"]})
            result.ceilings = dict(figures.get("connection_ceilings", {}))
            result.throttled = list(figures.get("throttled", []))
        if final.get("error"):
            result.errors.append(final["error"])
        if final.get("refused"):
            result.ceilings = {final["refused"]: 0}
        if final.get("throttled"):
            result.throttled = [final["throttled"]]
        if result.exit_code == ExitCode.OK:
            result.outcome = "planned" if doc is not None and doc.get("dry_run") else "exact"
        elif result.exit_code in (ExitCode.INTERRUPTED, ExitCode.TERMINATED, ExitCode.HANGUP):
            result.outcome = "interrupted"
        elif doc is not None and result.exit_code == ExitCode.PARTIAL:
            result.outcome = "partial"
        else:
            result.outcome = "failed"
        return result
