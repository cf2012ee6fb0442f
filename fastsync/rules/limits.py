"""Bandwidth and connection caps shared by every process of a run.

Pure-logic layer (imports only `errors`): the protocol edge charges the buckets at the
socket and takes the slots; the engine creates them and gives back a dead worker's.

The token-bucket arithmetic (`refill_and_charge`) is pure and takes the clock as an
argument; `SharedBucket` keeps its two numbers in shared memory behind a process lock, so
the planner and all workers draw from one budget per direction.  The bucket may go into
debt: a caller charged beyond the available tokens sleeps for exactly the time the debt
takes to repay, so the long-run rate equals the cap and nobody busy-waits.

Burst: a full bucket holds `BURST_BYTES` (64 KiB, one metered chunk), so over any window
the bytes that cross the wire exceed ``cap * window`` by at most one burst per direction.
"""

from __future__ import annotations

import multiprocessing.context
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastsync.records.errors import Cancelled

BURST_BYTES = 64 * 1024


def refill_and_charge(
    tokens: float, last_s: float, now_s: float, rate_bytes_per_s: float, burst_bytes: float, size_bytes: int
) -> tuple[float, float, float]:
    """Charge *size_bytes* to a bucket; returns (tokens, last_s, wait_s).

    Tokens accrue at the rate up to the burst; the charge may take them below zero, and
    ``wait_s`` is the time until the balance is back at zero.
    """
    elapsed = max(0.0, now_s - last_s)
    tokens = min(burst_bytes, tokens + elapsed * rate_bytes_per_s) - size_bytes
    wait_s = -tokens / rate_bytes_per_s if tokens < 0 else 0.0
    return tokens, now_s, wait_s


class SharedBucket:
    """A token bucket in shared memory: ``charge`` blocks until the bytes may cross."""

    def __init__(
        self,
        ctx: multiprocessing.context.BaseContext,
        rate_bytes_per_s: int,
        burst_bytes: int = BURST_BYTES,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate_bytes_per_s = float(rate_bytes_per_s)
        self.burst_bytes = float(burst_bytes)
        self._clock = clock
        self._sleep = sleep
        # [tokens, last refill]; CLOCK_MONOTONIC is system-wide on Linux, so every process
        # reads the same time base.
        self._state: Any = ctx.RawArray("d", [float(burst_bytes), clock()])
        self._lock = ctx.Lock()

    def charge(self, size_bytes: int) -> None:
        with self._lock:
            tokens, last, wait_s = refill_and_charge(
                self._state[0], self._state[1], self._clock(), self.rate_bytes_per_s, self.burst_bytes, size_bytes
            )
            self._state[0], self._state[1] = tokens, last
        if wait_s > 0:
            self._sleep(wait_s)

    def __getstate__(self) -> dict[str, Any]:
        # The clock and sleep functions are module-level callables in production; they
        # travel by reference like the shared array and lock.
        return self.__dict__.copy()


# Slots held are counted per worker index modulo this, so that the parent can give back
# the slots of a worker that was killed before it could release them.
HOLDERS = 1024

# How often a process waiting for a connection slot asks whether to give up.
SLOT_POLL_S = 0.5


class ConnectionSlots:
    """At most N simultaneous connections to one side, across processes.

    Each process says which holder it is (`holder`: the worker index, -1 for the planner);
    a killed worker cannot release its slots, so the parent calls `release_all(index)`
    once the worker is gone, and the server closed its connections anyway.

    A worker waits for a slot only while `give_up` says no (the run is stopping, or the
    process that started it is gone): a wait nobody will end must not outlive the run.
    """

    def __init__(self, ctx: multiprocessing.context.BaseContext, count: int) -> None:
        self.count = count
        self.holder = -1
        self.give_up: Callable[[], bool] = _never
        self._semaphore = ctx.BoundedSemaphore(count)
        self._held: Any = ctx.Array("i", HOLDERS)

    def acquire(self) -> None:
        while not self._semaphore.acquire(timeout=SLOT_POLL_S):
            if self.give_up():
                raise Cancelled("stopped while waiting for a connection slot")
        with self._held.get_lock():
            self._held[self.holder % HOLDERS] += 1

    def release(self) -> None:
        with self._held.get_lock():
            self._held[self.holder % HOLDERS] -= 1
        self._semaphore.release()

    def release_all(self, holder: int) -> int:
        """Give back every slot a dead process held; returns how many."""
        with self._held.get_lock():
            count = self._held[holder % HOLDERS]
            self._held[holder % HOLDERS] = 0
        for _ in range(count):
            self._semaphore.release()
        return int(count)


@dataclass(frozen=True)
class Limits:
    """Everything a process needs to respect the caps; passed to each worker at start."""

    down: SharedBucket | None = None
    up: SharedBucket | None = None
    src_slots: ConnectionSlots | None = None
    dst_slots: ConnectionSlots | None = None

    def adopt(self, holder: int, give_up: Callable[[], bool]) -> None:
        """Called in a worker process: slots it takes are counted under its index, and it
        stops waiting for one when *give_up* says so."""
        for slots in (self.src_slots, self.dst_slots):
            if slots is not None:
                slots.holder = holder
                slots.give_up = give_up

    def release_all(self, holder: int) -> None:
        for slots in (self.src_slots, self.dst_slots):
            if slots is not None:
                slots.release_all(holder)

    @classmethod
    def create(
        cls, ctx: multiprocessing.context.BaseContext, down_bps: int, up_bps: int, max_connections: int
    ) -> Limits:
        return cls(
            down=SharedBucket(ctx, down_bps) if down_bps > 0 else None,
            up=SharedBucket(ctx, up_bps) if up_bps > 0 else None,
            src_slots=ConnectionSlots(ctx, max_connections) if max_connections > 0 else None,
            dst_slots=ConnectionSlots(ctx, max_connections) if max_connections > 0 else None,
        )


# How often a process waiting on a `StopFlag` looks at it.
STOP_POLL_S = 0.05


class StopFlag:
    """A run's stop signal, one byte shared by all its processes: set once, read by all.

    Not a multiprocessing Event: a process that ends (or is killed) while one of its
    threads waits on an Event stays counted as a waiter, and the next ``set()`` waits for
    that waiter's acknowledgement forever.  A flag that waiters poll has no waiters to count.
    """

    def __init__(self, ctx: multiprocessing.context.BaseContext) -> None:
        self._flag: Any = ctx.RawValue("b", 0)

    def set(self) -> None:
        self._flag.value = 1

    def is_set(self) -> bool:
        return bool(self._flag.value)

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until the flag is set or *timeout_s* passed; whether it is set."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self._flag.value:
            left = STOP_POLL_S if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(STOP_POLL_S, left))
        return True


def _never() -> bool:
    return False


def workers_allowed(requested: int, max_connections: int) -> int:
    """Workers that fit beside the planner's connection (which holds one slot per side);
    with a single connection per side, the one worker (see `planner_yields`)."""
    if max_connections <= 0:
        return requested
    return max(1, min(requested, max_connections - 1))


def planner_yields(workers: int, max_connections: int) -> bool:
    """Whether the planner must log out while the pool copies: its slot is the one the
    workers need (``--max-connections 1``: the planner and one worker, never at once)."""
    return 0 < max_connections < workers + 1


def capped_buffer_bytes(rate_bytes_per_s: float) -> int:
    """A capped connection's socket buffer: 1/16 s at the cap, between 64 KiB (smaller
    windows, with delayed ACKs, cost more throughput than the cap allows) and 1 MiB.

    The kernel doubles the value, and it is the most a connection can take in before the
    bucket acts: part of the burst a server sees at the start of a capped transfer.
    Without it, the kernel's automatic tuning lets a connection buffer megabytes.
    """
    return int(min(1024 * 1024, max(64 * 1024, rate_bytes_per_s / 16)))
