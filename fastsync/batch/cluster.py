"""`fastsync batch --cluster ADDRESS`: each pair as a task of an existing Dask cluster.

Engine layer; imports dask/distributed only when a cluster is asked for (the optional
``cluster`` extra).  The submitting process keeps the journal, the admission of pairs
within the caps (`scheduler.py`) and the display; a task runs one pair on whichever
worker the scheduler picks, as `parent.PairProcess` runs it locally: in a fresh
interpreter, so that the pair's own worker pool starts although a Dask worker under a
nanny is a daemonic process (multiprocessing refuses children there).

Connection caps across machines.  Before it starts its pair, a task takes the pair's
connection budget on each server from a `distributed.Semaphore` named after the server
(``fastsync-connections-HOST:PORT``, ``--max-connections-per-server`` leases), under a
cluster-wide `distributed.Lock` so that two tasks never hold parts of budgets that
together would wait for each other.  Leases live `LEASE_TIMEOUT` without a refresh: a
worker that dies (or a machine that is lost) keeps its budget that long, so a pair that
Dask retries elsewhere waits until the dead worker's connections are surely gone (a pair
whose process is orphaned stops within its unit in hand, well within it).  Dask warns
that leases can be over-booked when a refresh is late (a worker that stops answering
for longer than the timeout): the semaphores then are not what holds the cap, the
submitting process is, since it starts a pair only when the budgets of the pairs it has
running fit; the semaphores add the cap across batches sharing servers and the wait
after a worker's death.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

from fastsync.settings.config import Config
from fastsync.records.errors import ConnectError, UsageError
from fastsync.settings.options import Options
from fastsync.batch.parent import Callbacks, PairProcess
from fastsync.records.results import PairResult

# How long a lease outlives its last refresh (refreshed every fifth of it); the
# scheduler checks leases every `distributed.scheduler.locks.lease-validation-interval`
# (10 s by default), so a dead worker's budget comes back 10 to 20 s after its death.
LEASE_TIMEOUT = "10s"

# Seconds between two looks of a task at the batch's stop event.
STOP_POLL_S = 1.0


# Address schemes (Dask's comm protocols) whose traffic is encrypted or never leaves the
# process; tcp://, ws://, ucx:// and an address without a scheme (tcp) are plain text.
PRIVATE_SCHEMES = ("tls", "wss", "inproc")


def check_address(address: str, plain: bool) -> None:
    """Refuse a cluster *address* whose traffic is not encrypted, unless *plain* (the user
    said --plain-cluster): each pair's accounts, passwords included, are pickled into its
    task's arguments, which cross the network to the scheduler, stay in its memory while
    the task lives, and go on to a worker."""
    scheme = address.partition("://")[0].lower() if "://" in address else "tcp"
    if plain or scheme in PRIVATE_SCHEMES:
        return
    raise UsageError(
        f"--cluster {address}: {scheme}:// is not encrypted, and every pair's passwords would cross the "
        "network to the Dask scheduler in clear and stay in its memory; use a tls:// address (Dask's TLS "
        "settings), or give --plain-cluster to accept that"
    )


def connect(address: str, plain: bool = False) -> Any:
    """A `distributed.Client` of the scheduler at *address*, or a one-line error; *plain*:
    an address without TLS is accepted (see `check_address`)."""
    check_address(address, plain)
    try:
        import distributed
    except ImportError:
        raise UsageError(
            f"--cluster {address}: Dask is not installed; pip install '.[cluster]' in fastsync's checkout "
            "(here and on every worker)"
        ) from None
    try:
        return distributed.Client(address, timeout=15, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ConnectError(
            f"--cluster {address}: cannot reach the Dask scheduler ({exc}); is `dask scheduler` running there?"
        ) from None


class ClusterPair:
    """One pair as a Dask task; ``wait`` and ``stop`` as `PairProcess` has them."""

    def __init__(self, client: Any, result: PairResult, config: Config, options: Options,
                 budgets: dict[str, int], cap: int, stop_name: str) -> None:
        self.result = result
        self.stop_name = stop_name
        self.client = client
        # Not pure: a sync has effects, Dask must not reuse one result for another run.
        self.future = client.submit(
            run_task, result, config, options, budgets, cap, stop_name, pure=False,
            key=f"fastsync-pair-line{result.line}-{uuid.uuid4().hex[:8]}",
        )

    def wait(self) -> PairResult:
        try:
            done: PairResult = self.future.result()
        except Exception as exc:  # noqa: BLE001 - whatever ended the task is the pair's failure
            self.result.outcome = "failed"
            self.result.errors.append(f"the pair's task failed on the cluster: {type(exc).__name__}: {exc}")
            return self.result
        self.result.__dict__.update(done.__dict__)
        return self.result

    def stop(self) -> None:
        import distributed

        distributed.Event(self.stop_name, client=self.client).set()


def stop_event_name() -> str:
    return f"fastsync-stop-{uuid.uuid4().hex}"


def run_task(result: PairResult, config: Config, options: Options, budgets: dict[str, int], cap: int,
             stop_name: str) -> PairResult:
    """The task: take the pair's connection budget, run the pair, give the budget back."""
    import dask
    import distributed

    held: list[Any] = []
    # Dask config keys of fastsync's (DASK_FASTSYNC__LEASE_TIMEOUT on the workers): a
    # shorter lease timeout, and whether leases are refreshed at all (off only to watch
    # over-booking happen, as the tests do).
    timeout = dask.config.get("fastsync.lease-timeout", LEASE_TIMEOUT)
    refresh = bool(dask.config.get("fastsync.refresh-leases", True))
    with dask.config.set({"distributed.scheduler.locks.lease-timeout": timeout}):
        if cap:
            semaphores = {server: distributed.Semaphore(max_leases=cap, name=f"fastsync-connections-{server}")
                          for server in budgets}
            for semaphore in semaphores.values():
                semaphore.refresh_leases = refresh
            with distributed.Lock("fastsync-connection-budgets"):
                for server, count in sorted(budgets.items()):
                    for _ in range(count):
                        semaphores[server].acquire()
                        held.append(semaphores[server])
    try:
        process = PairProcess(result, config, options, Callbacks(lambda _t: None, lambda _m, _b: None,
                                                                 lambda _m, _b: None))
        stop = distributed.Event(stop_name)

        def watch() -> None:
            while process.process.poll() is None:
                if stop.wait(STOP_POLL_S):
                    process.stop()
                    return

        threading.Thread(target=watch, daemon=True).start()
        return process.wait()
    finally:
        for semaphore in held:
            semaphore.release()
