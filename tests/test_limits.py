"""Unit tests of the shared bandwidth buckets and connection slots, with a fake clock."""

from __future__ import annotations

import multiprocessing
import os
import time

import pytest

from fastsync.limits import BURST_BYTES, ConnectionSlots, SharedBucket, refill_and_charge, workers_allowed


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


def test_connection_slots_cap_across_processes() -> None:
    ctx = multiprocessing.get_context("fork")
    slots = ConnectionSlots(ctx, 2)
    slots.acquire()
    slots.acquire()
    assert not slots._semaphore.acquire(timeout=0.05)
    slots.release()
    assert slots._semaphore.acquire(timeout=0.05)


@pytest.mark.parametrize(
    ("requested", "max_connections", "expected"),
    [(8, 0, 8), (8, 3, 2), (2, 10, 2), (4, 1, 1), (4, 2, 1)],
)
def test_workers_allowed_leaves_a_slot_for_the_planner(requested: int, max_connections: int, expected: int) -> None:
    assert workers_allowed(requested, max_connections) == expected


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
