"""The reporter of a batch's pair process (`LineReporter`): what the pair does, one JSON
object per line on its stdout, which the batch's side (`batch.parent`) turns into calls of
its callbacks.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from fastsync.progress import sync_document
from fastsync.records.results import FolderRow, Summary

# Seconds between two progress lines of a pair's process (`LineReporter`).
LINE_INTERVAL_S = 0.3


class LineReporter:
    """The reporter of a batch's pair process: one JSON object per line to the batch.

    Implements the `results.Reporter` protocol; copy progress is summed and sent at most
    every `LINE_INTERVAL_S`, warnings as they come, the result last (`result`, `failure`).
    """

    verbose = False
    quiet = False

    def __init__(self, out: Any) -> None:
        self.out = out
        self._messages = self._bytes = 0
        self._last = 0.0

    def _send(self, **fields: Any) -> None:
        self.out.write(orjson.dumps(fields) + b"\n")
        self.out.flush()

    def info(self, text: str) -> None:
        pass

    def detail(self, text: str) -> None:
        pass

    def warn(self, text: str) -> None:
        self._send(kind="warn", text=text)

    def status(self, text: str) -> None:
        pass

    def clear_status(self) -> None:
        pass

    def plan(self, rows: list[FolderRow]) -> None:
        self._send(kind="plan", messages=sum(r.to_copy for r in rows), bytes=sum(r.to_copy_bytes for r in rows))

    def confirm(self, question: str) -> bool:
        return True

    def start_copy(self, messages: int, size_bytes: int) -> None:
        self._last = time.monotonic()

    def more_to_copy(self, messages: int, size_bytes: int) -> None:
        pass

    def advance(self, folder: str, messages: int, size_bytes: int, folder_total: tuple[int, int] = (0, 0)) -> None:
        self._messages += messages
        self._bytes += size_bytes
        now = time.monotonic()
        if now - self._last >= LINE_INTERVAL_S:
            self.stop_copy()
            self._last = now

    def stop_copy(self) -> None:
        if self._messages or self._bytes:
            self._send(kind="advance", messages=self._messages, bytes=self._bytes)
            self._messages = self._bytes = 0

    def batch_progress(self, line: str, force: bool = False) -> None:
        pass

    def result(self, summary: Summary, exit_code: int) -> None:
        self.stop_copy()
        self._send(kind="result", summary=sync_document(summary), exit_code=exit_code)

    def failure(self, message: str, exit_code: int, refused_side: str = "", throttled_side: str = "") -> None:
        """The pair failed with *message*; *refused_side*: the side whose server refused a login for
        the connections open (`TooManyConnections`), which the batch tries again with fewer;
        *throttled_side*: one whose server throttled it (the batch holds fewer there too)."""
        self.stop_copy()
        self._send(kind="result", summary=None, error=message, exit_code=exit_code, refused=refused_side,
                   throttled=throttled_side)
