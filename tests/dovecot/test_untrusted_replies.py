"""Values a source server gets wrong or changes under fastsync's feet, played by a real
Dovecot behind a proxy that rewrites its replies (`bench.harness.tcpproxy`, ``rewrite_down``):
a folder whose UIDVALIDITY changes at every look, an INTERNALDATE that cannot be read, a
negative RFC822.SIZE.  Each must end in one clear line and an exit code that says what
was left, never in a silent loss or a crash."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable

import pytest

from bench.harness.tcpproxy import CountingProxy, LineRewriter
from tests.dovecot.accounts import AccountFactory, ConfigFor, snapshot
from tests.helpers import message, run_cli

_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY \d+\]")


def _fresh_uidvalidity() -> Callable[[], LineRewriter]:
    """Every SELECT/EXAMINE on every connection answers with a UIDVALIDITY never given
    before: a folder deleted and created again between any two looks at it."""
    counter = itertools.count(1000)

    def change(line: bytes) -> bytes:
        return _UIDVALIDITY.sub(lambda _m: b"[UIDVALIDITY %d]" % next(counter), line)

    return lambda: LineRewriter(change)


def test_a_folder_whose_uidvalidity_changes_again_after_replanning_ends_incomplete(
    accounts: AccountFactory, config_for: ConfigFor,
) -> None:
    src, dst = accounts(2)
    src.seed([message("INBOX", n) for n in range(5)])
    with CountingProxy(src.server.port, rewrite_down=_fresh_uidvalidity()) as proxy:
        config = config_for(src, dst, extra={"src": {"server": f"127.0.0.1:{proxy.port}"}})
        done = run_cli("sync", "-c", config, "-y", "--procs", "1", "--json")
    assert done.returncode == 1, done.stderr
    doc = json.loads(done.stdout)
    assert doc["complete"] is False
    assert any("'INBOX'" in error and "UIDVALIDITY" in error for error in doc["errors"]), doc["errors"]
    assert "'INBOX'" in done.stderr and "run again" in done.stderr
    # Nothing was copied under UIDs that no longer name the planned messages.
    assert doc["summary"]["copied"] == 0
    assert not snapshot(dst).get("INBOX")


def _replace_everywhere(old: bytes, new: bytes) -> Callable[[], LineRewriter]:
    return _replace_everywhere_by(lambda line: line.replace(old, new))


def _replace_everywhere_by(change: Callable[[bytes], bytes]) -> Callable[[], LineRewriter]:
    """Every server line of every connection passed through *change*."""
    return lambda: LineRewriter(change)


# Small messages are fetched whole; those above 1 MiB are streamed (`plan.STREAM_MESSAGE_BYTES`).
@pytest.mark.parametrize("body", ["", ("y" * 998 + "\r\n") * 1300], ids=["fetched", "streamed"])
def test_a_message_with_an_unreadable_internaldate_fails_alone(
    accounts: AccountFactory, config_for: ConfigFor, body: str,
) -> None:
    src, dst = accounts(2)
    src.seed([message("INBOX", n, body=body) for n in range(5)])
    # Message 3's date, as a server that stores garbage there would send it (RFC 3501 date-time it is not).
    bad = _replace_everywhere(b'"01-Mar-2015 08:00:03 +0000"', b'"01-Xyz-2015 08:00:03 +0000"')
    with CountingProxy(src.server.port, rewrite_down=bad) as proxy:
        config = config_for(src, dst, extra={"src": {"server": f"127.0.0.1:{proxy.port}"}})
        done = run_cli("sync", "-c", config, "-y", "--procs", "1", "--json")
    assert done.returncode == 1, done.stderr
    doc = json.loads(done.stdout)
    assert doc["summary"]["copied"] == 4 and doc["summary"]["failed"] == 1, done.stdout
    (failure,) = doc["failed"]
    # Message 3 has UID 4; its reason names what could not be read.
    assert failure["folder"] == "INBOX" and failure["uid"] == 4 and "INTERNALDATE" in failure["reason"], failure
    assert "internal error" not in done.stderr
    copied = {body for body, _flags, _date in snapshot(dst)["INBOX"]}
    assert len(copied) == 4 and not any(b"<m3@example.org>" in body for body in copied)


_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")


def test_negative_sizes_from_the_server_skip_nothing(accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst = accounts(2)
    src.seed([message("INBOX", n) for n in range(5)])
    # RFC 3501's RFC822.SIZE is an unsigned number: a server that sends -N gets sizes wrong.
    negative = _replace_everywhere_by(lambda line: _SIZE.sub(rb"RFC822.SIZE -\1", line))
    with CountingProxy(src.server.port, rewrite_down=negative) as proxy:
        config = config_for(src, dst, extra={"src": {"server": f"127.0.0.1:{proxy.port}"}})
        done = run_cli("sync", "-c", config, "-y", "--procs", "1", "--json")
        again = run_cli("sync", "-c", config, "-y", "--procs", "1", "--json", "--full")
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert doc["skipped"] == [] and doc["summary"]["copied"] == 5, doc
    assert again.returncode == 0 and json.loads(again.stdout)["summary"]["copied"] == 0
    assert snapshot(dst) == snapshot(src)
