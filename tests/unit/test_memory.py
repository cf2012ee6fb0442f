"""What keeps a run's resident memory down, asserted without timing or RSS thresholds:
the modules a worker process holds (every worker is forked from the fork server, which
each of them counts in its RSS), the size of the planner's per-message records and of
`plan.shard`'s bookkeeping (allocations traced by tracemalloc, which do not depend on the
machine's load), and how a worker's C allocator returns large blocks."""

from __future__ import annotations

import ctypes
import pickle
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from fastsync.engine import processes
from fastsync.records.model import FolderPair, MessageRef, MessageState
from fastsync.rules.plan import shard

# Modules only the parent needs, for some commands or errors: OAuth2's token fetch
# (urllib.request, http.client), the command line's parser, suggestions for a mistyped
# key or folder name, the parsing of sizes.
PARENT_ONLY = (
    "fastsync.settings.grants",
    "urllib.request",
    "http.client",
    "argparse",
    "difflib",
    "decimal",
)


# Modules the parent uses to run and show a sync, which a worker never does: the state
# cache (with orjson and, through it, uuid and platform), the daily budgets, the results
# and the reporter's interface, the command's options, an OAuth2 identity's parsing.
PARENT_SYNC_ONLY = (
    "fastsync.engine.state",
    "orjson",
    "uuid",
    "platform",
    "fastsync.engine.budgets",
    "fastsync.records.results",
    "fastsync.settings.options",
    "fastsync.settings.oauth2",
)


def _worker_modules(tmp_path: Path) -> set[str]:
    """The modules a process started as a worker holds as it starts (forked from the fork
    server, with its preloads); exec is a builtin, so unpickling the target imports nothing."""
    listing = tmp_path / "modules"
    code = f"import sys\nwith open({str(listing)!r}, 'w') as out: out.write('\\n'.join(sys.modules))"
    worker = processes.context().Process(target=exec, args=(code, {}))
    worker.start()
    worker.join(60)
    assert worker.exitcode == 0
    held = set(listing.read_text().split())
    assert "fastsync.engine.pool" in held  # the fork server's preload
    return held


def test_a_worker_holds_no_module_only_the_parent_needs(tmp_path: Path) -> None:
    assert sorted(_worker_modules(tmp_path) & set(PARENT_ONLY)) == []


def test_a_worker_holds_none_of_the_parents_sync_modules(tmp_path: Path) -> None:
    # Each costs its memory once per worker: a worker counts the fork server's pages.
    assert sorted(_worker_modules(tmp_path) & set(PARENT_SYNC_ONLY)) == []


def test_the_planners_per_message_records_have_no_dict() -> None:
    ref = MessageRef(7, 1500, "<a@example.org>|x", True, 3)
    state = MessageState(7, 1500, "<a@example.org>|x", ("\\Seen",), None)
    for record in (ref, state):
        assert not hasattr(record, "__dict__")
        assert pickle.loads(pickle.dumps(record)) == record  # they still cross processes


def test_shard_keeps_no_list_per_message_of_a_large_folder() -> None:
    refs = [MessageRef(uid, 1500, "") for uid in range(1000, 51_000)]
    tracemalloc.start()
    try:
        units = list(shard(FolderPair("INBOX", "INBOX"), 1, refs, 1))
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sum(len(u.uids) for u in units) == len(refs)
    # A list per message (and a dict of them) took 7.8 MB here; the units themselves ~0.3 MB.
    assert peak_bytes < 2_000_000


MALLINFO = """
import ctypes, sys
from fastsync.engine.processes import thrifty_malloc

class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Mallinfo2
if sys.argv[1] == "thrifty":
    thrifty_malloc()
freed = bytes(1 << 20)
del freed  # glibc alone now serves blocks up to 1 MiB from its heap
mapped = libc.mallinfo2().hblks
held = bytes(256 * 1024)
print(libc.mallinfo2().hblks - mapped)
"""


def _has_mallinfo2() -> bool:
    try:
        return hasattr(ctypes.CDLL(None), "mallinfo2")
    except OSError:
        return False


@pytest.mark.skipif(not _has_mallinfo2(), reason="glibc >= 2.33 only")
def test_a_worker_gives_large_blocks_pages_of_their_own() -> None:
    def mapped_blocks(mode: str) -> int:
        done = subprocess.run([sys.executable, "-c", MALLINFO, mode], capture_output=True, text=True, check=True)
        return int(done.stdout)

    # A 256 KiB body after a 1 MiB one was freed: from the heap by glibc's own rule, where
    # freed pages may stay resident; in its own mapping, unmapped when freed, in a worker.
    assert mapped_blocks("plain") == 0
    assert mapped_blocks("thrifty") == 1
