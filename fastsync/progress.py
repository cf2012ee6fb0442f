"""The only writer to the terminal: plan and folder tables, progress, prompts and summaries.

Output layer: reads the records of `results.py` (and `model.py`), imports nothing else of
fastsync.  `Reporter` implements the `results.Reporter` protocol the commands talk to.

Three modes: on a terminal, live rich progress bars; without one, a plain progress line now
and then (logs of overnight runs stay readable); with ``quiet``, errors only and plain
tab-separated tables for piping.  With ``json_output`` (--json) the human output is
dropped and stdout gets one JSON document at the end (`Reporter.document`), built by the
``*_document`` functions below from the same records as the human summary; warnings
and errors stay on stderr.
"""

from __future__ import annotations

import dataclasses
import io
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

import orjson

from fastsync.records import secrets as secrets_rules
from fastsync.terminal import columns, dropped, fitted, printable, write
from fastsync.records.results import (
    AccountInfo, BatchSummary, CheckSummary, FolderRow, Listing, Summary, utc_time,
)

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

# Shorter secrets are not searched for in what the reporter writes (see `Reporter._hidden`).
MIN_HIDDEN_CHARS = 4

# Seconds between plain progress lines when stdout is not a terminal.
PLAIN_INTERVAL_S = 10.0


def human_bytes(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


class Reporter:
    """Writes everything the user sees; workers never print, the parent calls this."""

    def __init__(
        self,
        quiet: bool = False,
        verbose: bool = False,
        out: TextIO | None = None,
        err: TextIO | None = None,
        interactive: bool | None = None,
        json_output: bool = False,
    ) -> None:
        self.quiet = quiet
        self.verbose = verbose
        self.json_output = json_output
        # With --json the JSON document is the only thing on stdout: human output goes to
        # a sink, which also makes the run non-interactive (no progress bars, no rich).
        self.document_out = out or sys.stdout
        self.out = io.StringIO() if json_output else self.document_out
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
        self._secrets: Callable[[], Iterable[str]] = tuple

    def hide(self, secrets: Callable[[], Iterable[str]]) -> None:
        """From now on, leave out of everything written whatever *secrets* returns (asked
        at each write: tokens fetched during the run count too), in every spelling."""
        self._secrets = secrets

    def _hidden(self) -> list[str]:
        # A secret of a few characters would mask them in every word of our own: server
        # text has had it masked at the protocol edge already (`imap.replies.redact`).
        return [s for s in self._secrets() if len(s) >= MIN_HIDDEN_CHARS]

    def _shown(self, text: object) -> str:
        """*text* as it may be written: secrets redacted, then control characters escaped."""
        return printable(secrets_rules.redact(str(text), self._hidden()))

    # -- messages ----------------------------------------------------------------------

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            # No emoji codes either: a folder named ":warning:" keeps its name.
            self._console = Console(file=self.out, highlight=False, soft_wrap=True, emoji=False)
        return self._console

    def _print(self, renderable: Any, **how: Any) -> None:
        """rich's print to stdout, with `_write`'s care."""
        try:
            self.console.print(renderable, **how)
        except (OSError, ValueError):
            dropped(self.out)

    def _line(self, stream: TextIO, text: str) -> None:
        # A message of several lines (a worker's traceback) keeps them, each line after the
        # first indented: no line of a message, whatever a server put in it, can pass for
        # a line of its own (a summary line, an error).
        text = "\n  ".join(self._shown(line) for line in text.split("\n"))
        if stream is self.out and self.interactive:
            self._print(text, markup=False)
            return
        write(stream, text + "\n")

    def info(self, text: str) -> None:
        if not self.quiet:
            self._line(self.out, text)

    def detail(self, text: str) -> None:
        if self.verbose and not self.quiet:
            self._line(self.out, text)

    def warn(self, text: str) -> None:
        self._line(self.err, f"warning: {text}")

    def cancelled(self, text: str) -> None:
        """The run was interrupted: stop the progress display and say so, as is."""
        self.stop_copy()
        self._line(self.err, text)

    def error(self, text: str) -> None:
        self._line(self.err, f"error: {text}")

    def trace(self, text: str) -> None:
        """A traceback, as it is (an internal error with -V)."""
        write(self.err, "".join(self._shown(line) + "\n" for line in text.splitlines()))

    # -- status while planning ---------------------------------------------------------

    def status(self, text: str) -> None:
        """A transient line (sizing an account, planning a folder): shown only on a terminal."""
        if self.quiet or not self.interactive:
            return
        write(self.err, fitted(self._shown(text), self._status_width()) + "\r")

    def clear_status(self) -> None:
        if not self.quiet and self.interactive:
            write(self.err, " " * self._status_width() + "\r")

    def _status_width(self) -> int:
        # One column short of the terminal's width: a character in the last column makes
        # some terminals wrap, and the line would scroll instead of being rewritten.
        return max(columns(self.err) - 1, 1)

    # -- tables ------------------------------------------------------------------------

    def table(self, title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        """A table: rich on a terminal, tab-separated plain text when quiet or piped.

        Piped, the title comes first ("# Plan"), then the header row, tab-separated as the
        rows are; quiet (-q), the rows alone."""
        if self.quiet or not self.interactive:
            lines = [] if self.quiet else [f"# {self._shown(title)}\n", "\t".join(headers) + "\n"]
            lines += ["\t".join(self._shown(c) for c in row) + "\n" for row in rows]
            write(self.out, "".join(lines))
            return
        from rich.table import Table
        from rich.text import Text

        # Cells as Text, not strings: a folder named ``Test.[some_group].box`` is a name,
        # not rich markup.
        table = Table(title=Text(self._shown(title)), title_justify="left")
        for index, header in enumerate(headers):
            # Never an ellipsis: a folder name is shown whole, folded onto more lines where
            # the terminal is narrow (the names a user confirms in the plan); numbers stay
            # on one line.
            numeric = bool(index) and _numeric(rows, index)
            table.add_column(header, justify="right" if numeric else "left", no_wrap=numeric,
                             overflow="fold", ratio=None if numeric else 1)
        for row in rows:
            table.add_row(*[Text(self._shown(c)) for c in row])
        self._print(table)

    def plan(self, rows: Sequence[FolderRow]) -> None:
        if self.quiet:
            return
        # The "to delete" column only with --delete-dest (rows then carry a count).
        deleting = any(row.to_delete is not None for row in rows)
        body = []
        for row in rows:
            cells: list[object] = [row.src, row.dst, row.messages, row.to_copy, human_bytes(row.to_copy_bytes)]
            without_id = "-" if row.without_id is None else row.without_id
            body.append([*cells, *([row.to_delete] if deleting else []), without_id, row.note])
        headers = ["source", "destination", "messages", "to copy", "bytes"]
        self.table("Plan", [*headers, *(["to delete"] if deleting else []), "no Message-Id", "note"], body)
        to_copy = sum(r.to_copy for r in rows)
        size = sum(r.to_copy_bytes for r in rows)
        self.info(f"{to_copy} messages ({human_bytes(size)}) to copy in {len(rows)} folders.")
        if deleting:
            self.info(f"{sum(r.to_delete or 0 for r in rows)} messages on the destination are not on the source.")

    def confirm(self, question: str) -> bool:
        """Ask y/N on the terminal; the caller makes sure stdin is one."""
        write(self.err, f"{self._shown(question)} [y/N] ")
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
            # Descriptions hold folder names: no markup, no emoji codes.
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._progress.start()
        self._overall = self._progress.add_task("all folders", total=size_bytes or 1)

    def more_to_copy(self, messages: int, size_bytes: int) -> None:
        """Grow the totals: folders planned while the copy runs."""
        self._total, self._total_bytes = self._total + messages, self._total_bytes + size_bytes
        if self._progress is not None and self._overall is not None:
            self._progress.update(self._overall, total=self._total_bytes or 1)

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
                task = self._progress.add_task(printable(folder), total=total)
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
            write(
                self.out,
                f"progress: {self._done}/{self._total} messages, "
                f"{human_bytes(self._done_bytes)}/{human_bytes(self._total_bytes)}, {rate:.1f} MB/s\n"
            )

    def stop_copy(self) -> None:
        if self._progress is not None:
            progress, self._progress = self._progress, None
            try:
                progress.stop()
            except (OSError, ValueError):
                dropped(self.out)

    # -- summary -----------------------------------------------------------------------

    def summary(self, s: Summary) -> None:
        for failure in s.failed:
            self.error(
                f"not copied: folder {failure.folder!r} UID {failure.uid} "
                f"{failure.message_id or '(no Message-Id)'} {human_bytes(failure.size_bytes)}: {failure.reason}"
            )
        for refused in s.folders_refused:
            self.error(
                f"folder {refused.folder!r} could not be created on the destination: {refused.reason}; "
                f"{refused.messages} messages not copied"
            )
        for text in s.errors:
            self.error(text)
        if self.quiet:
            return
        for skipped in s.skipped:
            self.detail(
                f"skipped: folder {skipped.folder!r} UID {skipped.uid} {human_bytes(skipped.size_bytes)} "
                f"({skipped.size_bytes} bytes): {skipped.reason}"
            )
        # Figures are appended at the end only: scripts parse this line by position.
        flags = f", {s.flags_updated} flags updated" if s.sync_flags else ""
        skips = f", {len(s.skipped)} skipped" if s.skipped or s.size_bounds else ""
        deleted = f", {s.deleted} deleted" if s.delete_dest else ""
        wire = f", {human_bytes(sum(s.wire[:2]))} on the wire for {human_bytes(sum(s.wire[2:]))}" * (s.wire[:2] != s.wire[2:])
        accepted = accepted_note(len(s.accepted) if s.complete else 0)
        self.info(
            f"{s.folders} folders, {s.copied} copied, {s.present} already present, "
            f"{len(s.failed)} failed, {human_bytes(s.copied_bytes)}, {s.elapsed_s:.1f} s, "
            f"{s.messages_per_s:.0f} messages/s, {s.mb_per_s:.1f} MB/s{flags}{skips}{deleted}{accepted}{wire}"
        )
        for line in ceiling_lines(s.ceilings):
            self.info(line)

    def check_report(self, s: CheckSummary, limit: int = 20) -> None:
        """check's table, the first *limit* differences of each folder, and a last line."""
        for text in s.errors:
            self.error(text)
        if self.quiet:
            return
        kinds = s.kinds
        rows = [
            [f.pair.src, f.pair.dst, f.src_messages, f.dst_messages, *(f.count(k) for k in kinds),
             "error" if f.error else "match" if f.matches else "differs"]
            for f in s.folders
        ]
        self.table("Check", ["source", "destination", "src messages", "dst messages", *kinds, "result"], rows)
        for f in s.folders:
            if f.unkept_flags:
                self.info(
                    f"note: destination folder {f.pair.dst!r} cannot keep {', '.join(f.unkept_flags)} "
                    "(PERMANENTFLAGS, or refused on APPEND); not compared"
                )
            for d in f.differences[:limit]:
                where = f"UID {d.src_uid}" if d.src_uid is not None else f"destination UID {d.dst_uid}"
                values = f": {d.src!r} on the source, {d.dst!r} on the destination" if d.src or d.dst else ""
                self.info(f"{d.kind}: folder {f.pair.src!r} {where} {d.identity}{values}")
            if len(f.differences) > limit:
                self.info(f"... and {len(f.differences) - limit} more in {f.pair.src!r} (--json lists all)")
        totals = ", ".join(f"{s.total(k)} {k}" for k in kinds)
        verdict = "everything matches" if s.matches else "the accounts differ"
        self.info(f"{len(s.folders)} folders checked, {totals}, {s.elapsed_s:.1f} s: {verdict}.")

    def show_report(self, listing: Listing) -> None:
        """show's two folder tables and the mapping."""
        for info in (listing.src, listing.dst):
            self._account_table(info)
        rows = [["map", p.src, p.dst, p.reason or "same name"] for p in listing.pairs]
        rows += [["skip", p.src, "-", p.reason] for p in listing.left_out]
        rows += [["excluded", p.src, "-", p.reason] for p in listing.excluded]
        self.table("Folder mapping used by sync", ["entry", "source", "destination", "why"], rows)

    def _account_table(self, info: AccountInfo) -> None:
        if self.verbose:
            self.detail(f"{info.label} ({info.server}) capabilities: {' '.join(info.capabilities)}")
        self.table(_account_title(info), _account_headers(self.verbose), _account_rows(info, self.verbose))

    # -- batch -------------------------------------------------------------------------

    def batch_progress(self, line: str, force: bool = False) -> None:
        """The batch's one progress line: in place on a terminal, else every 10 s."""
        if self.quiet:
            return
        if self.interactive:
            self.status(line)
            return
        now = time.monotonic()
        if force or now - self._plain_last >= PLAIN_INTERVAL_S:
            self._plain_last = now
            write(self.out, f"progress: {self._shown(line)}\n")

    def batch_report(self, s: BatchSummary) -> None:
        """The table of pairs, each pair's errors, and the batch's last line."""
        self.clear_status()
        for p in s.pairs:
            for text in p.errors:
                self.error(f"line {p.line} ({p.src_user} -> {p.dst_user}): {text}")
        if self.quiet:
            return
        if s.dry_run:
            self.batch_plan(s)
            return
        rows = [
            [p.line, p.src_user, p.dst_user, p.outcome, p.copied, p.present, p.failed, human_bytes(p.copied_bytes),
             f"{p.elapsed_s:.1f}", "" if p.exit_code is None else p.exit_code]
            for p in s.pairs
        ]
        self.table("Batch", ["line", "source user", "destination user", "outcome", "copied", "present", "failed",
                             "bytes", "seconds", "exit"], rows)
        rate = s.copied_bytes / 1e6 / s.elapsed_s if s.elapsed_s else 0.0
        skipped = f", {s.count('skipped')} skipped (finished before; --again redoes them)" if s.count("skipped") else ""
        skipped += accepted_note(sum(len(p.accepted) for p in s.pairs if p.outcome in ("exact", "skipped")))
        self.info(
            f"{len(s.pairs)} pairs: {s.count('exact')} exact{skipped}, {s.count('partial')} partial, "
            f"{s.count('failed')} failed, {s.count('interrupted') + s.count('not run')} not finished; "
            f"{s.copied} copied, {human_bytes(s.copied_bytes)}, {s.elapsed_s:.1f} s, {rate:.1f} MB/s"
        )
        for line in ceiling_lines(s.ceilings):
            self.info(line)

    def batch_plan(self, s: BatchSummary) -> None:
        """``batch -n``: what each pair would copy and delete, and that nothing was written."""
        rows = [
            [p.line, p.src_user, p.dst_user, p.outcome, p.planned, human_bytes(p.planned_bytes), p.delete_planned,
             p.present, "" if p.exit_code is None else p.exit_code]
            for p in s.pairs
        ]
        self.table("Batch plan", ["line", "source user", "destination user", "outcome", "to copy", "bytes",
                                  "to delete", "present", "exit"], rows)
        self.info(
            f"{len(s.pairs)} pairs: {s.count('planned')} planned, {s.count('partial')} partial, "
            f"{s.count('failed')} failed, {s.count('interrupted') + s.count('not run')} not finished; "
            f"{s.planned} to copy, {human_bytes(sum(p.planned_bytes for p in s.pairs))}, "
            f"{sum(p.delete_planned for p in s.pairs)} to delete"
        )
        self.info("Dry run: nothing was written.")

    # -- --json --------------------------------------------------------------------------

    def raw(self, text: str) -> None:
        write(self.document_out, text)  # --csv: fields made printable by the caller

    def document(self, doc: dict[str, Any]) -> None:
        """Write the run's one JSON document on stdout (only with --json)."""
        if not self.json_output:
            return
        doc = secrets_rules.redact_values(doc, self._hidden())
        write(self.document_out, orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")


def accepted_note(accepted: int) -> str:
    """The summary line's words for a run complete with refusals an operator accepted."""
    return f", complete with {accepted} accepted exceptions" if accepted else ""
def ceiling_lines(ceilings: dict[str, int]) -> list[str]:
    """What a sync (per side) or a batch (per server) says of the connection ceilings it met."""
    return [f"connection ceiling: {where} took {connections} connections at once (it refused more logins)"
            for where, connections in sorted(ceilings.items())]


def sync_document(s: Summary) -> dict[str, Any]:
    """sync's --json document: the plan's rows and every figure of the summary line."""
    return {
        "command": "sync",
        "dry_run": s.dry_run,
        "declined": s.declined,
        "folders": [
            {
                "src": r.src, "dst": r.dst, "messages": r.messages, "to_copy": r.to_copy,
                "to_copy_bytes": r.to_copy_bytes, "without_message_id": r.without_id, "note": r.note,
                "skipped": r.skipped, "outside_dates": r.outside_dates,
                **({} if r.to_delete is None else {"to_delete": r.to_delete}),
            }
            for r in s.rows
        ],
        "summary": {
            "folders": s.folders,
            "planned": s.planned,
            "planned_bytes": s.planned_bytes,
            "copied": s.copied,
            "present": s.present,
            "failed": len(s.failed),
            "skipped": len(s.skipped),
            "copied_bytes": s.copied_bytes,
            "wire_bytes": dict(zip(("down", "up", "imap_down", "imap_up"), s.wire, strict=True)),
            "vanished": s.vanished,
            "flags_planned": s.flags_planned,
            "flags_updated": s.flags_updated,
            "delete_planned": s.delete_planned,
            "deleted": s.deleted,
            "stopped_at_transfer_limit": s.transfer_limited,
            "connection_ceilings": dict(s.ceilings),
            "throttled": list(s.throttled),
            "elapsed_s": round(s.elapsed_s, 3),
            "copy_s": round(s.copy_s, 3),
            "prompt_s": round(s.prompt_s, 3),
            "messages_per_s": round(s.messages_per_s, 1),
            "mb_per_s": round(s.mb_per_s, 3),
        },
        "failed": [dataclasses.asdict(f) for f in s.failed],
        "accepted": [dataclasses.asdict(f) for f in s.accepted],
        "skipped": [dataclasses.asdict(skipped) for skipped in s.skipped],
        "folders_refused": [dataclasses.asdict(f) for f in s.folders_refused],
        "budgets": [dataclasses.asdict(b) for b in s.budgets],
        "parked": [{**dataclasses.asdict(p), "until": utc_time(p.until)} for p in s.parked],
        "resume_at": utc_time(s.resume_at) if s.resume_at else None,
        "budget_uses": s.budget_uses,
        "errors": list(s.errors),
        "complete": s.complete,
    }


def show_document(listing: Listing) -> dict[str, Any]:
    """show's --json document: both accounts' folders and the mapping."""

    left_out = {p.src: p.reason for p in listing.excluded}

    def account(info: AccountInfo, excluded: dict[str, str]) -> dict[str, Any]:
        folders = []
        for item in info.folders:
            st = item.status
            folders.append({
                "name": item.folder.name,
                "delimiter": item.folder.delimiter,
                "attributes": list(item.folder.attributes),
                "special_use": item.folder.special_use,
                "selectable": item.folder.selectable,
                "messages": st.messages if st else None,
                "size_bytes": st.size_bytes if st else None,
                "uidvalidity": st.uidvalidity if st else None,
                "uidnext": st.uidnext if st else None,
                "error": item.error,
                "excluded": excluded.get(item.folder.name, ""),
            })
        return {
            "label": info.label,
            "server": info.server,
            "user": info.user,
            "capabilities": list(info.capabilities),
            "namespace": {"prefix": info.namespace.prefix, "delimiter": info.namespace.delimiter,
                          "announced": info.namespace.announced},
            "folders": folders,
            "messages": info.messages,
            "size_bytes": info.size_bytes,
        }

    return {
        "command": "show",
        "src": account(listing.src, left_out),
        "dst": account(listing.dst, {}),
        "mapping": [{"src": p.src, "dst": p.dst, "reason": p.reason or "same name"} for p in listing.pairs],
        "left_out": [{"src": p.src, "reason": p.reason} for p in listing.left_out],
        # Folders --include / --exclude leave out: not in the mapping, never created.
        "excluded": [{"src": p.src, "reason": p.reason} for p in listing.excluded],
    }


def check_document(s: CheckSummary) -> dict[str, Any]:
    """check's --json document: per folder the counts and every difference."""
    kinds = s.kinds
    return {
        "command": "check",
        "bodies": s.bodies,
        "folders": [
            {
                "src": f.pair.src,
                "dst": f.pair.dst,
                "src_messages": f.src_messages,
                "dst_messages": f.dst_messages,
                "counts": {k: f.count(k) for k in kinds},
                "differences": [dataclasses.asdict(d) for d in f.differences],
                "unkept_flags": list(f.unkept_flags),
                "error": f.error,
                "matches": f.matches,
            }
            for f in s.folders
        ],
        "summary": {
            "folders": len(s.folders),
            **{k: s.total(k) for k in kinds},
            "errors": len(s.errors),
            "elapsed_s": round(s.elapsed_s, 3),
        },
        "errors": s.errors,
        "matches": s.matches,
    }


def _account_title(info: AccountInfo) -> str:
    """The title of show's table of one account."""
    ns = info.namespace
    how = "" if ns.announced else ", inferred"
    return (f"{info.label} ({info.server}, {info.user}): {len(info.folders)} folders, "
            f"{info.messages} messages, {human_bytes(info.size_bytes)}; "
            f"namespace prefix {ns.prefix!r}, delimiter {ns.delimiter!r}{how}")


def _account_headers(verbose: bool) -> list[str]:
    """The headers of show's table of one account (-v: more columns)."""
    headers = ["side", "folder", "messages", "size", "bytes", "special-use"]
    return headers + (["delimiter", "uidvalidity", "uidnext", "attributes"] if verbose else [])


def _account_rows(info: AccountInfo, verbose: bool) -> list[list[object]]:
    """show's rows for one account's folders (with -v, four more columns)."""
    rows = []
    for item in info.folders:
        status = item.status
        row: list[object] = [
            info.side,
            item.folder.name,
            status.messages if status else "-",
            human_bytes(status.size_bytes) if status else "-",
            status.size_bytes if status else "-",
            item.folder.special_use or "-",
        ]
        if verbose:
            row += [
                item.folder.delimiter or "NIL",
                status.uidvalidity if status else "-",
                status.uidnext if status else "-",
                " ".join(item.folder.attributes) or "-",
            ]
        if item.error:
            row[2] = f"error: {item.error}"
        rows.append(row)
    return rows


def _numeric(rows: Sequence[Sequence[object]], index: int) -> bool:
    return all(isinstance(r[index], int | float) for r in rows if index < len(r))


def batch_document(s: BatchSummary) -> dict[str, Any]:
    """batch's --json document: every pair's figures and the batch's totals."""
    return {
        "command": "batch",
        "dry_run": s.dry_run,
        "pairs": [dataclasses.asdict(p) for p in s.pairs],
        "summary": {
            "pairs": len(s.pairs),
            **{o: s.count(o) for o in ("exact", "skipped", "partial", "failed", "interrupted", "not run", "planned")},
            "planned": s.planned,
            "delete_planned": sum(p.delete_planned for p in s.pairs),
            "copied": s.copied,
            "copied_bytes": s.copied_bytes,
            "elapsed_s": round(s.elapsed_s, 3),
            "messages_per_s": round(s.copied / s.elapsed_s, 1) if s.elapsed_s else 0.0,
            "mb_per_s": round(s.copied_bytes / 1e6 / s.elapsed_s, 3) if s.elapsed_s else 0.0,
            "parallel": s.parallel,
            "procs": s.procs,
            "max_connections_per_server": s.max_connections_per_server,
            "connection_ceilings": dict(s.ceilings),
        },
    }
