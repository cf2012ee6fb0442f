"""How fastsync starts its worker processes: the start method, and a fork server started early.

Engine layer, with no fastsync import of its own, so that the command line can start the
fork server before it imports the sync (`warm_up`): the server's interpreter and imports
(about 0.1 s of CPU) then run beside the parent's imports, logins and listing of both
accounts, and workers can start while the run plans (`pool.Standby`).  Not before the
config is read: reading it takes the ``pass_env`` passwords out of the environment, which
the server and every worker would otherwise inherit.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import threading

# forkserver: workers fork from a small server process that has imported the pool (and
# imapclient) once, so a worker starts in milliseconds, yet inherits none of the parent's
# threads (the progress display) or sockets (the planner's connections) as plain fork would.
START_METHOD = "forkserver"

# What the fork server imports before it forks the first worker: the worker's code, and
# what every worker would otherwise import for itself once forked: ctypes and the shared
# heap to unpickle the rate buckets (`limits`), the IDNA codec that resolving a server's
# name loads, the thread pool that logs in to both sides at once (`imap.pair`), and the
# fork server's Popen class, named in the process object each worker unpickles.  About
# 5 ms of CPU per worker, paid once here instead.
PRELOAD = [
    "fastsync.engine.pool",
    "multiprocessing.sharedctypes",
    "encodings.idna",
    "concurrent.futures.thread",
    "multiprocessing.popen_forkserver",
]


def context() -> multiprocessing.context.BaseContext:
    ctx = multiprocessing.get_context(START_METHOD)
    if START_METHOD == "forkserver":
        ctx.set_forkserver_preload(PRELOAD)
    return ctx


def warm_up() -> None:
    """Start the fork server now, in the background, so that it is ready when the first
    worker is wanted.  Safe to call again: the server starts once."""
    if START_METHOD == "forkserver":
        context()  # its preload list, which the server reads as it starts
        threading.Thread(target=multiprocessing.forkserver.ensure_running, daemon=True).start()
