"""The process that runs one pair of a batch: ``python -m fastsync.batch.child``.

Entry layer, beside `cli.py`: `fastsync batch` (and a Dask task, see `cluster.py`) starts
one such process per account pair.  It reads the pair's job (its `Config` and `Options`,
passwords included) from stdin, never from its arguments or environment, calls the
engine's entry (`engine.run.run`) exactly as ``fastsync sync -y`` does, and writes one
JSON object per line on stdout for the batch (`batch.lines.LineReporter`), the last one the
pair's result.

A pair's own process is a fresh interpreter, not a child forked by multiprocessing, so
its worker pool starts even where the process running the batch is a daemonic process
(a Dask worker under a nanny refuses to start multiprocessing children).  stdin stays
open for the pair's whole run: when it reaches EOF, whoever started the pair is gone,
and the pair stops as on SIGTERM (workers finish the unit in hand, none starts another).

The entry point is the package's ``__main__``, not this module: a child that
multiprocessing starts (forkserver or spawn) imports its parent's main module again,
unless that is a package's ``__main__``; each of the pair's workers would otherwise import
this module and the command line under it before copying anything.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import BinaryIO

from fastsync.cli import configure_log, sigterm_stops
from fastsync.records.errors import Throttled, TooManyConnections, describe, exit_code_of
from fastsync.batch.parent import read_job
from fastsync.records.results import Summary


def _watch_lifeline(stream: BinaryIO) -> None:
    """SIGTERM to this process once *stream* reaches EOF: the batch that started it is gone."""

    fd = stream.fileno()

    def watch() -> None:
        # os.read, not the buffered stream: a daemon thread blocked inside a buffered read
        # holds its lock, which the interpreter's shutdown then waits for.
        while os.read(fd, 4096):
            pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True, name="fastsync-lifeline").start()


def main() -> int:
    from fastsync.engine import run as engine
    from fastsync.batch.lines import LineReporter

    stdin = sys.stdin.buffer
    job = read_job(stdin)
    if job is None:
        return 0  # a spare process the batch did not need
    config, options = job
    reporter = LineReporter(sys.stdout.buffer)
    with sigterm_stops():
        _watch_lifeline(stdin)
        handler = configure_log(options.log_file, options.log_format, [config.src.password, config.dst.password])
        try:
            # As ``fastsync sync -y`` would: a dry run when the batch is one (``batch -n``).
            mode = engine.Mode.DRY_RUN if options.dry_run else engine.Mode.SYNC
            summary = engine.run(engine.RunRequest(config, options, mode), reporter)
            assert isinstance(summary, Summary)
            code = summary.exit_code
            reporter.result(summary, code)
        except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - a defect too: said, with its own code
            code = int(exit_code_of(exc))
            reporter.failure(describe(exc), code, exc.side if isinstance(exc, TooManyConnections) else "",
                             exc.side if isinstance(exc, Throttled) else "")
        finally:
            if handler is not None:
                import logging

                logging.getLogger("fastsync").removeHandler(handler)
                handler.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
