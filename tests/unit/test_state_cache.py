"""The state cache that lets a re-run skip untouched folder pairs: reading, matching, saving."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import pytest

from fastsync.settings.config import Config, parse_config
from fastsync.records.model import FolderPair, FolderStatus
from fastsync.engine.state import StateCache

INBOX = FolderPair("INBOX", "INBOX")
WORK = FolderPair("Work", "Archive/Work", "map")
SRC = FolderStatus(messages=12, size_bytes=40_000, uidvalidity=1700, uidnext=13, highestmodseq=88)
DST = FolderStatus(messages=12, size_bytes=40_100, uidvalidity=5, uidnext=20, highestmodseq=0)


def write(path: Path, data: bytes | object) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())
    return path


# ----------------------------------------------------------------------------- reading


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{not json",
        b"\xff\xfe\x00garbage",
        [],
        "a string",
        {"pairs": {"INBOX\nINBOX": [[1, 2, 3, 0], [1, 2, 3, 0]]}},
        {"version": 2, "pairs": {"INBOX\nINBOX": [[1, 2, 3, 0], [1, 2, 3, 0]]}},
        {"version": "1", "pairs": {"INBOX\nINBOX": [[1, 2, 3, 0], [1, 2, 3, 0]]}},
        {"version": 1, "pairs": [["INBOX\nINBOX", [1, 2, 3, 0]]]},
        {"version": 1},
    ],
    ids=["empty file", "broken JSON", "not UTF-8", "a list", "a string", "no version", "version 2",
         "version as text", "pairs not a mapping", "no pairs"],
)
def test_an_unusable_file_is_an_empty_cache(tmp_path: Path, content: bytes | object) -> None:
    cache = StateCache(write(tmp_path / "state.json", content))
    assert cache.pairs == {}
    assert not cache.unchanged(INBOX, FolderStatus(3, 0, 1, 2), FolderStatus(3, 0, 1, 2))


def test_a_missing_file_is_an_empty_cache(tmp_path: Path) -> None:
    cache = StateCache(tmp_path / "absent" / "state.json")
    assert cache.pairs == {}
    assert not (tmp_path / "absent").exists()


def test_a_cache_without_a_path_keeps_nothing_on_disk(tmp_path: Path) -> None:
    cache = StateCache(None)
    cache.record(INBOX, SRC, DST)
    assert cache.unchanged(INBOX, SRC, DST)
    cache.save()
    assert list(tmp_path.iterdir()) == []
    assert StateCache(None).pairs == {}


# ----------------------------------------------------------------------------- matching


def test_record_unchanged_forget() -> None:
    cache = StateCache(None)
    assert not cache.unchanged(INBOX, SRC, DST)
    cache.record(INBOX, SRC, DST)
    assert cache.pairs == {"INBOX\nINBOX": [[1700, 13, 12, 88], [5, 20, 12, 0]]}
    assert cache.unchanged(INBOX, SRC, DST)
    assert not cache.unchanged(WORK, SRC, DST)
    # The fingerprint is UIDVALIDITY, UIDNEXT, MESSAGES and HIGHESTMODSEQ: the size is not in it.
    assert cache.unchanged(INBOX, FolderStatus(12, 1, 1700, 13, 88), FolderStatus(12, -1, 5, 20, 0))
    cache.forget(INBOX)
    assert cache.pairs == {}
    assert not cache.unchanged(INBOX, SRC, DST)
    cache.forget(INBOX)  # forgetting twice is harmless
    assert cache.pairs == {}


@pytest.mark.parametrize("side", ["src", "dst"])
@pytest.mark.parametrize(
    "change",
    [
        {"uidvalidity": 1701},
        {"uidnext": 14},
        {"messages": 11},
        {"highestmodseq": 89},
    ],
    ids=["uidvalidity", "uidnext", "messages", "highestmodseq"],
)
def test_any_status_change_on_either_side_is_a_change(side: str, change: dict[str, int]) -> None:
    cache = StateCache(None)
    cache.record(INBOX, SRC, DST)
    base = SRC if side == "src" else DST
    changed = dataclasses.replace(base, **change)
    src, dst = (changed, DST) if side == "src" else (SRC, changed)
    assert not cache.unchanged(INBOX, src, dst)
    assert cache.unchanged(INBOX, SRC, DST)


@pytest.mark.parametrize(("src", "dst"), [(None, DST), (SRC, None), (None, None)])
def test_an_unknown_status_is_never_unchanged(src: FolderStatus | None, dst: FolderStatus | None) -> None:
    cache = StateCache(None)
    cache.record(INBOX, SRC, DST)
    assert not cache.unchanged(INBOX, src, dst)


def test_pairs_are_told_apart_by_both_names() -> None:
    cache = StateCache(None)
    cache.record(FolderPair("a", "b"), SRC, DST)
    assert cache.unchanged(FolderPair("a", "b"), SRC, DST)
    assert not cache.unchanged(FolderPair("a", "c"), SRC, DST)
    assert not cache.unchanged(FolderPair("b", "b"), SRC, DST)
    # Which status is the source's and which the destination's matters.
    cache.record(FolderPair("x", "y"), DST, SRC)
    assert cache.unchanged(FolderPair("x", "y"), DST, SRC)
    assert not cache.unchanged(FolderPair("x", "y"), SRC, DST)


# ----------------------------------------------------------------------------- saving


def test_save_then_reload_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "fastsync" / "state.json"  # parent folders are created
    cache = StateCache(path)
    cache.record(INBOX, SRC, DST)
    cache.record(WORK, DST, SRC)
    cache.save()
    assert json.loads(path.read_bytes()) == {
        "version": 1,
        "pairs": {
            "INBOX\nINBOX": [[1700, 13, 12, 88], [5, 20, 12, 0]],
            "Work\nArchive/Work": [[5, 20, 12, 0], [1700, 13, 12, 88]],
        },
    }
    again = StateCache(path)
    assert again.pairs == cache.pairs
    assert again.unchanged(INBOX, SRC, DST) and again.unchanged(WORK, DST, SRC)
    assert not again.unchanged(INBOX, DST, SRC)
    again.forget(WORK)
    again.save()
    assert StateCache(path).pairs == {"INBOX\nINBOX": [[1700, 13, 12, 88], [5, 20, 12, 0]]}


def test_save_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    cache = StateCache(path)
    for n in range(3):
        cache.record(FolderPair(f"f{n}", f"f{n}"), SRC, DST)
        cache.save()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    assert len(StateCache(path).pairs) == 3


def test_a_failed_save_keeps_the_old_cache_and_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.json"
    old = StateCache(path)
    old.record(INBOX, SRC, DST)
    old.save()
    before = path.read_bytes()

    def interrupted(src: str, dst: str) -> None:
        raise KeyboardInterrupt  # Ctrl-C between writing the temporary file and renaming it

    monkeypatch.setattr("fastsync.engine.state.os.replace", interrupted)
    new = StateCache(path)
    new.record(WORK, SRC, DST)
    with pytest.raises(KeyboardInterrupt):
        new.save()
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


# ----------------------------------------------------------------------------- file name


def config(src_user: str = "alice@example.org", dst_user: str = "alice.smith@example.net",
           dst_server: str = "mail.example.net:993") -> Config:
    side = {"pass": "secret", "tls": "implicit"}
    return parse_config(
        {"src": {**side, "server": "imap.example.org:993", "user": src_user},
         "dst": {**side, "server": dst_server, "user": dst_user}},
        "c.json",
        environ={},
    )


def test_for_config_names_the_file_by_a_hash_of_both_accounts(tmp_path: Path) -> None:
    cache = StateCache.for_config(config(), tmp_path)
    accounts = "imap.example.org:993\nalice@example.org\nmail.example.net:993\nalice.smith@example.net"
    assert cache.path == tmp_path / (hashlib.sha256(accounts.encode()).hexdigest()[:24] + ".json")
    assert cache.pairs == {}
    for private in ("alice", "smith", "example", "secret"):
        assert private not in cache.path.name


@pytest.mark.parametrize(
    "other",
    [{"src_user": "bob@example.org"}, {"dst_user": "bob@example.net"}, {"dst_server": "mail.example.net:143"}],
    ids=["source user", "destination user", "destination port"],
)
def test_for_config_another_account_is_another_file(tmp_path: Path, other: dict[str, str]) -> None:
    same = StateCache.for_config(config(), tmp_path).path
    assert StateCache.for_config(config(), tmp_path).path == same
    assert StateCache.for_config(config(**other), tmp_path).path != same


def test_for_config_defaults_to_the_xdg_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cache = StateCache.for_config(config(), None)
    assert cache.path is not None
    assert cache.path.parent == tmp_path / "xdg" / "fastsync"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cache = StateCache.for_config(config(), None)
    assert cache.path is not None
    assert cache.path.parent == tmp_path / "home" / ".cache" / "fastsync"
    assert not os.path.exists(cache.path.parent)  # nothing is written before save()
