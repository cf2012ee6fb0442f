"""The only writer to the terminal: plan and folder tables, progress, prompts and summaries.

Three modes: on a terminal, live rich progress bars; without one, a plain progress line now
and then (logs of overnight runs stay readable); with ``quiet``, errors only and plain
tab-separated tables for piping.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

from fastsync.model import Failure

# Seconds between plain progress lines when stdout is not a terminal.
PLAIN_INTERVAL_S = 10.0


def human_bytes(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


@dataclass
class FolderRow:
    """One line of a folder table (show) or plan (sync)."""

    src: str
    dst: str
    messages: int
    size_bytes: int
    to_copy: int = 0
    to_copy_bytes: int = 0
    without_id: int = 0
    note: str = ""


@dataclass
class Summary:
    """What a sync did; every figure of the human summary (and of --json)."""

    folders: int = 0
    planned: int = 0
    planned_bytes: int = 0
    copied: int = 0
    copied_bytes: int = 0
    present: int = 0
    vanished: int = 0
    failed: list[Failure] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    copy_s: float = 0.0
    dry_run: bool = False
    declined: bool = False
    copied_by_folder: dict[str, int] = field(default_factory=dict)
    incomplete: set[str] = field(default_factory=set)

    @property
    def messages_per_s(self) -> float:
        return self.copied / self.copy_s if self.copy_s > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.copied_bytes / 1e6 / self.copy_s if self.copy_s > 0 else 0.0

    @property
    def complete(self) -> bool:
        return not self.failed and not self.errors


class Reporter:
    """Writes everything the user sees; workers never print, the parent calls this."""

    def __init__(
        self,
        quiet: bool = False,
        verbose: bool = False,
        out: TextIO | None = None,
        err: TextIO | None = None,
        interactive: bool | None = None,
    ) -> None:
        self.quiet = quiet
        self.verbose = verbose
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.interactive = self.out.isatty() if interactive is None else interactive
        # rich is imported only for a terminal: a re-run with nothing to do, or output to a
        # pipe, does not pay for it (it is a third of fastsync's start-up time).
        self._console: Console | None = None
        self._progress: Progress | None = None
        self._overall: TaskID | None = None
        self._folder_tasks: dict[str, TaskID] = {}
        self._folder_done: dict[str, int] = {}
        self._plain_last = 0.0
        self._done = 0
        self._done_bytes = 0
        self._total = 0
        self._total_bytes = 0
        self._started = 0.0

    # -- messages ----------------------------------------------------------------------

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(file=self.out, highlight=False, soft_wrap=True)
        return self._console

    def _line(self, stream: TextIO, text: str) -> None:
        if stream is self.out and self.interactive:
            self.console.print(text, markup=False)
            return
        stream.write(text + "\n")
        stream.flush()

    def info(self, text: str) -> None:
        if not self.quiet:
            self._line(self.out, text)

    def detail(self, text: str) -> None:
        if self.verbose and not self.quiet:
            self._line(self.out, text)

    def warn(self, text: str) -> None:
        self._line(self.err, f"warning: {text}")

    def error(self, text: str) -> None:
        self._line(self.err, f"error: {text}")

    # -- status while planning ---------------------------------------------------------

    def status(self, text: str) -> None:
        """A transient line (sizing an account, planning a folder): shown only on a terminal."""
        if self.quiet or not self.interactive:
            return
        self.err.write(f"{text[:79]:79}\r")
        self.err.flush()

    def clear_status(self) -> None:
        if not self.quiet and self.interactive:
            self.err.write(" " * 79 + "\r")
            self.err.flush()

    # -- tables ------------------------------------------------------------------------

    def table(self, title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        """A table: rich on a terminal, tab-separated plain text when quiet or piped."""
        if self.quiet or not self.interactive:
            if not self.quiet:
                self.out.write(f"# {title}\n")
            for row in rows:
                self.out.write("\t".join(str(c) for c in row) + "\n")
            self.out.flush()
            return
        from rich.table import Table

        table = Table(title=title, title_justify="left")
        for index, header in enumerate(headers):
            table.add_column(header, justify="right" if index and _numeric(rows, index) else "left")
        for row in rows:
            table.add_row(*[str(c) for c in row])
        self.console.print(table)

    def plan(self, rows: Sequence[FolderRow]) -> None:
        if self.quiet:
            return
        body = []
        for row in rows:
            body.append(
                [row.src, row.dst, row.messages, row.to_copy, human_bytes(row.to_copy_bytes), row.without_id, row.note]
            )
        self.table(
            "Plan", ["source", "destination", "messages", "to copy", "bytes", "no Message-Id", "note"], body
        )
        to_copy = sum(r.to_copy for r in rows)
        size = sum(r.to_copy_bytes for r in rows)
        self.info(f"{to_copy} messages ({human_bytes(size)}) to copy in {len(rows)} folders.")

    def confirm(self, question: str) -> bool:
        """Ask y/N on the terminal; the caller makes sure stdin is one."""
        self.err.write(f"{question} [y/N] ")
        self.err.flush()
        answer = sys.stdin.readline().strip().lower()
        return answer in ("y", "yes")

    # -- copy progress -----------------------------------------------------------------

    def start_copy(self, messages: int, size_bytes: int) -> None:
        self._total, self._total_bytes = messages, size_bytes
        self._started = self._plain_last = time.monotonic()
        if self.quiet or not self.interactive:
            return
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._progress.start()
        self._overall = self._progress.add_task("all folders", total=size_bytes or 1)

    def advance(self, folder: str, messages: int, size_bytes: int, folder_total: tuple[int, int] = (0, 0)) -> None:
        self._done += messages
        self._done_bytes += size_bytes
        if self._progress is not None and self._overall is not None:
            self._progress.update(
                self._overall, advance=size_bytes, description=f"all folders {self._done}/{self._total} msgs"
            )
            total = folder_total[1]
            task = self._folder_tasks.get(folder)
            if task is None and total:
                task = self._progress.add_task(folder, total=total)
                self._folder_tasks[folder] = task
                self._folder_done[folder] = 0
            if task is not None:
                self._progress.update(task, advance=size_bytes)
                self._folder_done[folder] += size_bytes
                if self._folder_done[folder] >= total:
                    # A finished folder leaves the display; the overall bar stays.
                    self._progress.remove_task(task)
                    del self._folder_tasks[folder]
            return
        now = time.monotonic()
        if not self.quiet and now - self._plain_last >= PLAIN_INTERVAL_S:
            self._plain_last = now
            rate = self._done_bytes / 1e6 / max(now - self._started, 1e-9)
            self.out.write(
                f"progress: {self._done}/{self._total} messages, "
                f"{human_bytes(self._done_bytes)}/{human_bytes(self._total_bytes)}, {rate:.1f} MB/s\n"
            )
            self.out.flush()

    def stop_copy(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    # -- summary -----------------------------------------------------------------------

    def summary(self, s: Summary) -> None:
        for failure in s.failed:
            self.error(
                f"not copied: folder {failure.folder!r} UID {failure.uid} "
                f"{failure.message_id or '(no Message-Id)'} {human_bytes(failure.size_bytes)}: {failure.reason}"
            )
        for text in s.errors:
            self.error(text)
        if self.quiet:
            return
        self.info(
            f"{s.folders} folders, {s.copied} copied, {s.present} already present, "
            f"{len(s.failed)} failed, {human_bytes(s.copied_bytes)}, {s.elapsed_s:.1f} s, "
            f"{s.messages_per_s:.0f} messages/s, {s.mb_per_s:.1f} MB/s"
        )


def _numeric(rows: Sequence[Sequence[object]], index: int) -> bool:
    return all(isinstance(r[index], int | float) for r in rows if index < len(r))
