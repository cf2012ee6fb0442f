"""A worker's test of whether its run is gone has one owner (`processes.ParentWatch`): the poll
object behind it must never be polled by two threads at once (``RuntimeError: concurrent
poll() invocation`` killed a worker).  Deterministic: who calls the test is recorded, and
every other caller is driven from threads of its own (no server, no timing race)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from types import SimpleNamespace

from fastsync.engine.processes import ParentWatch, parent_watch


def test_only_the_watch_thread_runs_the_test_however_many_threads_ask() -> None:
    callers: list[int] = []

    def ended() -> bool:
        callers.append(threading.get_ident())
        return False

    watch, leaving, stop = ParentWatch(ended), threading.Event(), threading.Event()
    owner = threading.Thread(target=watch.run, args=(leaving, stop))
    owner.start()
    # The worker's main loop, its two login threads and its slot waits ask, all at once.
    askers = [threading.Thread(target=lambda: [watch() for _ in range(2000)]) for _ in range(4)]
    for asker in askers:
        asker.start()
    for asker in askers:
        asker.join()
    leaving.set()
    owner.join()
    assert callers and set(callers) == {owner.ident}
    assert not watch() and not stop.is_set()


def test_a_run_that_ends_is_seen_by_every_thread_and_stops_the_run() -> None:
    run = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        watch = ParentWatch(parent_watch(SimpleNamespace(pid=run.pid)))
        leaving, stop = threading.Event(), threading.Event()
        owner = threading.Thread(target=watch.run, args=(leaving, stop))
        owner.start()
        failures: list[BaseException] = []

        def ask() -> None:
            try:
                while not watch():
                    time.sleep(0.001)
            except BaseException as exc:  # noqa: BLE001 - what a worker's thread would die of
                failures.append(exc)

        askers = [threading.Thread(target=ask) for _ in range(4)]
        for asker in askers:
            asker.start()
        assert not watch()
        run.kill()
        owner.join(timeout=30)
        for asker in askers:
            asker.join(timeout=30)
        assert not owner.is_alive() and failures == []
        assert watch() and stop.is_set()
    finally:
        run.kill()
        run.wait()
