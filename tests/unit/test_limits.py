"""Unit tests of the shared bandwidth buckets and connection slots: a fake clock, and real processes."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from typing import Any

import pytest

from fastsync.records.errors import Cancelled
from fastsync.rules.limits import (
    BURST_BYTES,
    HOLDERS,
    ConnectionSlots,
    Limits,
    SharedBucket,
    StopFlag,
    planner_yields,
    refill_and_charge,
    workers_allowed,
)


def test_refill_caps_at_burst_and_debt_sets_the_wait() -> None:
    tokens, last, wait = refill_and_charge(0.0, 0.0, 100.0, rate_bytes_per_s=10.0, burst_bytes=50.0, size_bytes=20)
    assert (tokens, last, wait) == (30.0, 100.0, 0.0)
    tokens, last, wait = refill_and_charge(tokens, last, 100.0, 10.0, 50.0, 60)
    assert tokens == -30.0 and wait == 3.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.mark.parametrize("chunk", [1000, BURST_BYTES, 300_000])
def test_long_run_rate_equals_the_cap(chunk: int) -> None:
    clock = FakeClock()
    bucket = SharedBucket(multiprocessing.get_context("fork"), 100_000, clock=clock, sleep=clock.sleep)
    total = 0
    while total < 5_000_000:
        bucket.charge(chunk)
        total += chunk
    # At most one burst ahead of the cap, never behind it by more than one chunk.
    assert total <= 100_000 * clock.now + BURST_BYTES + chunk
    assert total >= 100_000 * clock.now


def _drain(bucket: SharedBucket, size: int, count: int) -> None:
    for _ in range(count):
        bucket.charge(size)


def test_processes_share_one_bucket() -> None:
    ctx = multiprocessing.get_context("fork")
    rate = 2_000_000
    bucket = SharedBucket(ctx, rate)
    started = time.monotonic()
    workers = [ctx.Process(target=_drain, args=(bucket, 50_000, 20)) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.monotonic() - started
    # 4 x 20 x 50 kB = 4 MB at 2 MB/s shared: about 2 s, however many processes draw.
    assert elapsed >= (4_000_000 - BURST_BYTES) / rate * 0.98


def test_connection_slots_block_at_the_cap() -> None:
    ctx = multiprocessing.get_context("fork")
    slots = ConnectionSlots(ctx, 2)
    slots.acquire()
    slots.acquire()
    assert not slots._semaphore.acquire(timeout=0.05)
    slots.release()
    assert slots._semaphore.acquire(timeout=0.05)


def _hold_a_slot(slots: ConnectionSlots, meeting: Any, active: Any, peak: Any, finished: Any) -> None:
    """One worker's connection: take a slot, count the holders, wait for a full house, give it back."""
    slots.acquire()
    with active.get_lock():
        active.value += 1
        peak.value = max(peak.value, active.value)
    # Passes only once `cap` holders are here together: proves the cap is reachable, and the
    # holders stay long enough for a slot too many to show in the count.
    meeting.wait(timeout=20)
    time.sleep(0.05)
    with active.get_lock():
        active.value -= 1
    slots.release()
    with finished.get_lock():
        finished.value += 1


@pytest.mark.parametrize(("cap", "processes"), [(2, 6), (3, 9)])
def test_connection_slots_cap_across_processes(cap: int, processes: int) -> None:
    # The start method of fastsync's workers: nothing is shared by inheriting memory.
    ctx = multiprocessing.get_context("forkserver")
    slots = ConnectionSlots(ctx, cap)
    meeting = ctx.Barrier(cap)
    active, peak, finished = ctx.Value("i", 0), ctx.Value("i", 0), ctx.Value("i", 0)
    workers = [ctx.Process(target=_hold_a_slot, args=(slots, meeting, active, peak, finished)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [w.exitcode for w in workers] == [0] * processes
    assert finished.value == processes
    assert peak.value == cap
    assert active.value == 0
    # Every slot was given back, and counted under the default holder only.
    assert slots._held[-1 % HOLDERS] == 0 and sum(slots._held) == 0
    for _ in range(cap):
        assert slots._semaphore.acquire(timeout=1)
    assert not slots._semaphore.acquire(timeout=0.05)


@pytest.mark.parametrize(
    ("requested", "max_connections", "expected"),
    [(8, 0, 8), (8, 3, 2), (2, 10, 2), (4, 1, 1), (4, 2, 1)],
)
def test_workers_allowed_leaves_a_slot_for_the_planner(requested: int, max_connections: int, expected: int) -> None:
    assert workers_allowed(requested, max_connections) == expected


@pytest.mark.parametrize(
    ("workers", "max_connections", "expected"),
    # Only when the planner's slot is the one the worker needs; unlimited never.
    [(1, 1, True), (1, 2, False), (2, 3, False), (4, 0, False), (1, 0, False)],
)
def test_the_planner_yields_its_slot_only_when_no_worker_would_fit(
    workers: int, max_connections: int, expected: bool
) -> None:
    assert planner_yields(workers, max_connections) is expected


def test_a_process_waiting_for_a_slot_gives_up_when_told() -> None:
    ctx = multiprocessing.get_context("fork")
    limits = Limits.create(ctx, 0, 0, 1)
    assert limits.src_slots is not None
    limits.src_slots.acquire()  # the only slot, held by someone else
    stopping = {"now": False}
    limits.adopt(3, give_up=lambda: stopping["now"])
    started = time.monotonic()
    stopping["now"] = True
    with pytest.raises(Cancelled):
        limits.src_slots.acquire()
    assert time.monotonic() - started < 2
    # Nothing was taken under the waiting holder's name.
    assert limits.src_slots.release_all(3) == 0


def _take_and_die(slots: ConnectionSlots) -> None:
    slots.holder = 5
    slots.acquire()
    os._exit(9)


def test_slots_of_a_killed_worker_are_given_back() -> None:
    ctx = multiprocessing.get_context("fork")
    slots = ConnectionSlots(ctx, 1)
    worker = ctx.Process(target=_take_and_die, args=(slots,))
    worker.start()
    worker.join()
    assert not slots._semaphore.acquire(timeout=0.05)
    assert slots.release_all(5) == 1
    assert slots.release_all(5) == 0
    slots.acquire()
    slots.release()


def _wait_forever(flag: StopFlag, ready: Any) -> None:
    ready.set()
    flag.wait()


def test_a_stop_flag_is_set_at_once_after_a_waiter_died_waiting() -> None:
    """A process killed while it waits must not hold up the next set(): a multiprocessing
    Event would wait for that waiter forever (this once hung a run whose worker left
    mid-wait, over quota)."""
    ctx = multiprocessing.get_context("forkserver")
    flag, ready = StopFlag(ctx), ctx.Event()
    child = ctx.Process(target=_wait_forever, args=(flag, ready), daemon=True)
    child.start()
    assert ready.wait(30)
    time.sleep(0.2)
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    started = time.monotonic()
    flag.set()
    assert flag.is_set() and flag.wait(0)
    assert time.monotonic() - started < 1.0


def test_a_stop_flag_wait_times_out_and_wakes_on_set() -> None:
    flag = StopFlag(multiprocessing.get_context("forkserver"))
    started = time.monotonic()
    assert flag.wait(0.2) is False
    assert 0.15 <= time.monotonic() - started < 2.0
    threading.Timer(0.1, flag.set).start()
    assert flag.wait(5) is True
