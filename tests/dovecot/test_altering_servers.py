"""Destinations that alter what they store: mbox-based servers.

An mbox-based server (UW-IMAP and its kin) stores an appended message with ``Status:`` and
``X-UID:`` lines added to its header and body lines that start with "From " quoted as
">From ": the copy it returns is longer than the message sent.  fastsync recognises a
message without Message-Id by what its sender wrote (Date, From, Subject, To), not by its
size, so a re-run copies nothing, `check` finds every message, and no run blames a
Message-Id rewrite that did not happen.  This must hold without UIDPLUS, where no ledger
says which copy is which.

The destination is a real Dovecot behind `bench.rewriteproxy.MboxProxy`, which alters every
APPENDed message as such a server stores it (tests/unit/test_altering_proxies.py tests the
proxy on byte streams).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator

import pytest

from bench.harness.corpus import Message
from bench.harness.dovecot import Dovecot
from bench.harness.rewriteproxy import MboxProxy
from tests.dovecot.accounts import Account, AccountFactory, ConfigFor, Snapshot, snapshot
from tests.helpers import message, run_cli, summary_line

# What the destination announces: no UIDPLUS (so no ledger), LITERAL+ as most servers.
NO_UIDPLUS = "IMAP4rev1 NAMESPACE LITERAL+ MULTIAPPEND"

_MBOX_LINES = re.compile(rb"(?m)^(?:Status|X-UID): [^\r\n]*\r?\n")


def undo_mbox(body: bytes) -> bytes:
    """*body* as it was before an mbox-based server stored it (`alter_like_mbox` undone)."""
    end = body.find(b"\r\n\r\n")
    end = len(body) if end < 0 else end + 4
    return _MBOX_LINES.sub(b"", body[:end]) + re.sub(rb"(?m)^>From ", b"From ", body[end:])


def unaltered(snap: Snapshot) -> Snapshot:
    out: Snapshot = {}
    for folder, messages in snap.items():
        out[folder] = Counter()
        for (body, flags, date), count in messages.items():
            out[folder][(undo_mbox(body), flags, date)] += count
    return out


# --------------------------------------------------------------------------- against Dovecot


@pytest.fixture(scope="module")
def no_uidplus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dovecot]:
    users = {f"m{n}": f"m{n}-pw" for n in range(1, 4)}
    server = Dovecot(tmp_path_factory.mktemp("mbox-like"), users, starttls=False, imap_capability=NO_UIDPLUS)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def corpus() -> list[Message]:
    """Messages without Message-Id (some alike but for their bodies), body lines that start
    with "From ", and ordinary messages."""
    quoted = "From the desk of the sender.\r\nFrom here on, a quoted line.\r\n"
    return [
        *(message("INBOX", n, flags=("\\Seen",) if n % 2 else ()) for n in range(1, 6)),
        message("INBOX", 10, message_id=None),
        message("INBOX", 11, message_id=None, body=quoted),
        message("INBOX", 12, body=quoted, flags=("\\Flagged",)),
        # Two messages without Message-Id that differ only in their bodies (and sizes).
        message("Work", 20, message_id=None, body="short\r\n"),
        message("Work", 20, message_id=None, body="a longer body\r\n"),
        message("Work", 20, message_id=None, body="a longer body\r\n"),  # and one twice
        message("Work", 21, message_id=None, flags=("$Label1",)),
        message("Work", 22),
    ]


@pytest.mark.dovecot
@pytest.mark.parametrize("uidplus", [False, True], ids=["without UIDPLUS", "with UIDPLUS (the ledger)"])
def test_an_mbox_like_destination_is_copied_once_and_checks_clean(
    no_uidplus: Dovecot, accounts: AccountFactory, config_for: ConfigFor, uidplus: bool
) -> None:
    [src] = accounts(1)
    dst = accounts(1)[0] if uidplus else Account(no_uidplus, "m1", no_uidplus.users["m1"])
    messages = corpus()
    src.seed(messages)
    with MboxProxy(dst.server.port) as proxy:
        config = config_for(src, dst, extra={"dst": {"server": f"127.0.0.1:{proxy.port}"}})
        first = run_cli("sync", "-c", config, "-y")
        assert first.returncode == 0, first.stdout + first.stderr
        assert summary_line(first.stdout).split(", ")[1] == f"{len(messages)} copied", first.stdout
        assert (proxy.altered, proxy.passed) == (len(messages), 0)
        # The copies are the source's messages as an mbox-based server stores them.
        got = snapshot(dst)
        assert unaltered(got) == snapshot(src)
        assert all(b"X-UID: " in body for folder in got.values() for body, _f, _d in folder)
        assert "rewrites Message-Id" not in first.stderr, first.stderr

        for args in ((), ("--full",)):
            rerun = run_cli("sync", "-c", config, "-y", *args)
            assert rerun.returncode == 0, rerun.stdout + rerun.stderr
            assert summary_line(rerun.stdout).split(", ")[1] == "0 copied", rerun.stdout
            assert "rewrites Message-Id" not in rerun.stderr, rerun.stderr
        assert snapshot(dst) == got

        check = run_cli("check", "-c", config)
        assert check.returncode == 0, check.stdout + check.stderr
        assert check.stdout.rstrip().endswith("everything matches."), check.stdout
