"""How fastsync starts its worker processes (the start method, and a fork server started
early), how a worker tells that its run is gone (`ParentWatch`), and how its C allocator
gives memory back (`thrifty_malloc`).

Engine layer, with no fastsync import of its own, so that the command line can start the
fork server before it imports the sync (`warm_up`): the server's interpreter and imports
(about 0.1 s of CPU) then run beside the parent's imports, logins and listing of both
accounts, and workers can start while the run plans (`pool.Standby`).  Not before the
config is read: reading it takes the ``pass_env`` passwords out of the environment, which
the server and every worker would otherwise inherit.
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import os
import select
import threading
from collections.abc import Callable
from typing import Any

# forkserver: workers fork from a small server process that has imported the pool (and
# imapclient) once, so a worker starts in milliseconds, yet inherits none of the parent's
# threads (the progress display) or sockets (the planner's connections) as plain fork would.
START_METHOD = "forkserver"

# How often a worker's watch looks whether its run is gone (`ParentWatch`).
POLL_S = 0.2
# How often a worker's fetch ahead looks for its next unit on its pipe (`next_sent`).
UPCOMING_POLL_S = 0.01

# glibc's malloc.h: mallopt's parameters.
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
# Blocks at least this large get pages of their own (mmap), returned to the system when
# freed: a worker's message bodies and their buffers.  Setting it also ends glibc's
# dynamic threshold, which after the first large block freed (up to 32 MiB) serves later
# ones from the heap, where freed pages may stay resident between units.
MMAP_THRESHOLD_BYTES = 128 * 1024

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


class ParentWatch:
    """Whether a worker's run is gone, for every thread of the worker (call the instance).
    The test (`parent_watch`: a pidfd's ``select.poll`` object, or psutil) has one owner,
    `run`'s thread: a poll object polled by two threads at once raises ``RuntimeError:
    concurrent poll() invocation``.  The other threads read the event the owner sets."""

    def __init__(self, ended: Callable[[], bool]) -> None:
        self.ended, self.gone = ended, threading.Event()

    def __call__(self) -> bool:
        return self.gone.is_set()

    def run(self, leaving: threading.Event, stop: Any) -> None:
        """A run killed with -9: every worker stops after the unit in hand, one waiting to
        reconnect or for a slot stops waiting (`stop` is the run's).  Sleeps on an event of
        its own process (*leaving*), never as a waiter of the run's (*stop*, a `limits.StopFlag`)."""
        while not self.ended():
            if leaving.wait(POLL_S):
                return
        self.gone.set()
        stop.set()


def parent_watch(parent: Any) -> Callable[[], bool]:
    """A test of whether the process that started this worker is gone.

    On Linux a pidfd (`os.pidfd_open`, kernel 5.3) names the process itself, not its PID,
    and polls readable once it has ended, zombie or reaped: no PID reuse to tell apart, and
    no psutil to import in every worker (17 ms of CPU each, measured on this project's
    machine).  Elsewhere, psutil.
    """
    if parent is None or parent.pid is None:
        return lambda: False
    try:
        pidfd = os.pidfd_open(parent.pid)
    except ProcessLookupError:
        return lambda: True
    except (AttributeError, OSError):
        return _parent_watch_psutil(parent.pid)
    ended = select.poll()
    ended.register(pidfd, select.POLLIN)
    return lambda: bool(ended.poll(0))


def _parent_watch_psutil(pid: int) -> Callable[[], bool]:
    import psutil

    try:
        process = psutil.Process(pid)
    except psutil.Error:
        return lambda: True

    def gone() -> bool:
        # is_running() tells a reused PID by the process's start time counted from boot
        # (psutil >= 7 on Linux).  Not create_time(): that adds the boot time, which moves
        # whenever the system clock is stepped (NTP, a VM's clock catching up), and a
        # worker that took its run for dead on such a step stopped copying.
        try:
            return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
        except psutil.Error:
            return True

    return gone


def thrifty_malloc() -> None:
    """Have this process's C allocator (glibc) keep less memory it no longer uses: one
    arena for all threads, and large blocks returned as they are freed.

    A worker has threads (the fetch ahead, logging in to both sides at once), and glibc
    gives each thread that allocates an arena of its own, whose freed pages are rarely
    given back: bodies fetched ahead in one thread and freed by another stayed resident.
    One arena costs nothing measurable under the GIL, which serialises nearly all of a
    worker's allocations anyway.  Measured on `wan-tls` (``--procs 8``): about 1.3 MB less
    RSS per busy worker.  Elsewhere than glibc (no ``mallopt``), nothing changes.
    """
    import ctypes  # a worker has it already (the shared rate buckets); the parent need not

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_ARENA_MAX, 1)
    mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def next_sent(channel: Any, sent: collections.deque[Any], settling: threading.Event) -> Any:
    """The next thing the parent sends on a worker's *channel*, read from the pipe into
    *sent* as it comes until *settling* is set; None when nothing came by then."""
    with contextlib.suppress(EOFError, OSError):
        while not sent and not settling.is_set():
            if channel.poll(UPCOMING_POLL_S):
                sent.append(channel.recv())
    return sent[0] if sent else None
