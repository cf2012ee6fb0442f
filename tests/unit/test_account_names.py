"""One account whatever the case of its names: the ledger and the state cache are named
after the accounts, a ledger named after an old spelling is taken over, and a batch never
runs two spellings of one destination at once (pure: no server)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from fastsync.batch.inputs import load_batch
from fastsync.batch.scheduler import Allocation, Scheduler
from fastsync.engine.ledger import Ledger
from fastsync.engine.state import StateCache
from fastsync.records.results import BatchSummary
from fastsync.settings.config import load_config
from fastsync.settings.options import Options


def _config(tmp_path: Path, dst_user: str, src_server: str = "old.example") -> Path:
    path = tmp_path / f"{dst_user}-{src_server}.json"
    path.write_text(json.dumps({
        "src": {"server": f"{src_server}:993", "user": "Alice", "pass": "x"},
        "dst": {"server": "new.example:993", "user": dst_user, "pass": "y"},
    }))
    path.chmod(0o600)
    return path


def test_the_ledger_and_the_state_cache_are_named_after_the_accounts(tmp_path: Path) -> None:
    a = load_config(_config(tmp_path, "U015", "OLD.Example"))
    b = load_config(_config(tmp_path, "u015"))
    other = load_config(_config(tmp_path, "u016"))
    assert Ledger.for_config(a, tmp_path).path == Ledger.for_config(b, tmp_path).path
    assert StateCache.for_config(a, tmp_path).path == StateCache.for_config(b, tmp_path).path
    assert Ledger.for_config(other, tmp_path).path != Ledger.for_config(b, tmp_path).path


def test_a_ledger_named_after_the_old_spelling_is_kept(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, "U015"))
    # Where an earlier version kept it: named after the names as the config spelled them.
    spelled = f"{config.src.server}\n{config.src.user}\n{config.dst.server}\n{config.dst.user}"
    old = Ledger(tmp_path / (hashlib.sha256(spelled.encode()).hexdigest()[:24] + ".ledger.sqlite"))
    old.record(("INBOX", 1), ("INBOX", 9), [(10, 100)])
    old.close()
    ledger = Ledger.for_config(config, tmp_path)
    assert ledger.copies(("INBOX", 1), ("INBOX", 9)) == {10: 100}
    assert ledger.path is not None and ledger.path != old.path and not old.path.exists()  # type: ignore[union-attr]
    ledger.close()


def test_a_batch_never_runs_two_spellings_of_one_destination_at_once(tmp_path: Path) -> None:
    servers = tmp_path / "servers.json"
    servers.write_text(json.dumps({"src": {"server": "old.example:993"}, "dst": {"server": "new.example:993"}}))
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("src_user,src_pass,dst_user,dst_pass\na,1,u015,2\nb,3,U015,4\nc,5,u016,6\n")
    pairs.chmod(0o600)
    batch = load_batch(str(servers), str(pairs))
    scheduler = Scheduler(dataclasses.replace(Options(), state_dir=tmp_path), Allocation(4, 2, 1), False,
                          None, BatchSummary(), None)  # type: ignore[arg-type]
    first, same, other = batch.pairs
    scheduler.take(first, +1)
    assert not scheduler.fits(same)
    assert scheduler.fits(other)
    scheduler.take(first, -1)
    assert scheduler.fits(same)
