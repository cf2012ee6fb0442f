"""The report while a run goes on: samples of the bytes copied, for the throughput chart,
and a batch's page rewritten every few seconds (`render.REFRESH_S`).

Output layer.  `Sampling` wraps the reporter a sync talks to and notes, at each progress
report, the bytes copied so far; `LiveBatch` is a thread that samples a running batch's
summary and rewrites its report until stopped, then writes the final one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Self

from fastsync.records import secrets as secrets_rules
from fastsync.records.results import BatchSummary
from fastsync.report import render
from fastsync.report.document import of_batch

# At most this many samples are kept: older ones are thinned, one in two.
MAX_SAMPLES = 2000


def _keep(samples: list[tuple[float, int]], sample: tuple[float, int]) -> None:
    samples.append(sample)
    if len(samples) > MAX_SAMPLES:
        del samples[1:-1:2]


class Sampling:
    """A reporter that is *reporter*, and also counts the bytes each progress report adds."""

    def __init__(self, reporter: Any) -> None:
        self._reporter = reporter
        self.samples: list[tuple[float, int]] = []
        self._started = 0.0
        self._bytes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reporter, name)

    def start_copy(self, messages: int, size_bytes: int) -> None:
        if not self._started:
            self._started = time.monotonic()
            _keep(self.samples, (0.0, 0))
        self._reporter.start_copy(messages, size_bytes)

    def advance(self, folder: str, messages: int, size_bytes: int, folder_total: tuple[int, int] = (0, 0)) -> None:
        self._bytes += size_bytes
        _keep(self.samples, (round(time.monotonic() - (self._started or time.monotonic()), 3), self._bytes))
        self._reporter.advance(folder, messages, size_bytes, folder_total)


class LiveBatch:
    """``with LiveBatch(summary, directory, title, warn, secrets):`` keeps DIR's report
    current, masking whatever *secrets* returns."""

    def __init__(self, summary: BatchSummary, directory: str, title: str, warn: Callable[[str], None],
                 secrets: Callable[[], list[str]]) -> None:
        self.summary, self.directory, self.title, self.warn = summary, directory, title, warn
        self.secrets = secrets
        self.started = time.monotonic()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="fastsync-report")

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def write(self, running: bool) -> None:
        if running:
            self.summary.elapsed_s = time.monotonic() - self.started
        _keep(self.summary.samples, (round(time.monotonic() - self.started, 3), self.summary.progress_bytes))
        doc = of_batch(self.summary, self.title, running)
        render.write(secrets_rules.redact_values(doc, self.secrets()), self.directory)

    def _loop(self) -> None:
        while not self.stop.wait(render.REFRESH_S):
            try:
                self.write(running=True)
            except Exception as exc:  # noqa: BLE001 - a report that cannot be written must not stop the batch
                self.warn(f"--report {self.directory}: {exc}")
