"""Unit tests of the engine's request record and the records that cross into a worker (no server)."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import pytest

from fastsync.engine.worker import PoolSetup
from fastsync.engine.run import Mode, RunRequest, state_cache
from fastsync.records.model import WorkerSettings
from fastsync.rules.limits import Limits
from fastsync.settings.config import parse_config
from fastsync.settings.options import Options

CONFIG = parse_config(
    {
        "src": {"server": "127.0.0.1:1", "user": "a", "pass": "pa", "tls": "none"},
        "dst": {"server": "127.0.0.1:2", "user": "b", "pass": "pb", "tls": "none"},
    },
    "fastsync.json",
    environ={},
)


@pytest.mark.parametrize(
    ("dry_run", "watch", "mode", "writes"),
    [
        (False, False, Mode.SYNC, True),
        (True, False, Mode.DRY_RUN, False),
        (False, True, Mode.WATCH, True),
    ],
)
def test_the_sync_request_follows_the_options(dry_run: bool, watch: bool, mode: Mode, writes: bool) -> None:
    options = dataclasses.replace(Options(), dry_run=dry_run, watch=watch)
    request = RunRequest.sync(CONFIG, options, stdin_is_tty=False)
    assert (request.mode, request.writes, request.stdin_is_tty) == (mode, writes, False)


@pytest.mark.parametrize("mode", [Mode.SHOW, Mode.CHECK])
def test_reading_modes_never_write(mode: Mode) -> None:
    assert not RunRequest(CONFIG, Options(), mode).writes


@pytest.mark.parametrize(
    ("sync_flags", "delete_dest", "suffix"),
    [(False, False, ".json"), (True, False, ".flags.json"), (False, True, ".delete.json"),
     (True, True, ".flags.delete.json")],
)
def test_each_kind_of_sync_keeps_a_state_cache_of_its_own(
    tmp_path: Path, sync_flags: bool, delete_dest: bool, suffix: str
) -> None:
    options = dataclasses.replace(Options(), state_dir=tmp_path, sync_flags=sync_flags, delete_dest=delete_dest)
    plain = state_cache(CONFIG, dataclasses.replace(options, sync_flags=False, delete_dest=False))
    cache = state_cache(CONFIG, options)
    assert cache.path is not None and plain.path is not None
    assert cache.path.parent == tmp_path
    assert cache.path.name == plain.path.stem + suffix


def test_the_worker_setup_survives_pickling(tmp_path: Path) -> None:
    setup = PoolSetup(CONFIG.src, CONFIG.dst, Limits(), WorkerSettings(retries=2), None, tmp_path / "ledger.sqlite")
    assert pickle.loads(pickle.dumps(setup)) == setup
