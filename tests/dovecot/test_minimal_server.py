"""Minimal servers: fastsync uses only what a server announces.

A Dovecot whose ``imap_capability`` is only "IMAP4rev1 NAMESPACE" still understands every
extension; only the announcement changes.  So what fastsync sent is read back from the
wire: each server sits behind a recording `CountingProxy`, and every command of every
connection is checked against what that server announced at that point (before login:
the greeting's or CAPABILITY's list, with its AUTH= mechanisms; after: the list sent with
the login's reply).  The copy itself must still be exact.

The checks also cover servers that differ from Dovecot in what they print: the minimal
source runs in UTC+05:30 (its INTERNALDATEs carry +0530) and its proxy space-pads the
day of every INTERNALDATE (`` 5-Jul-2021``), as RFC 3501's date-day-fixed allows and
Dovecot never does.  Servers that send UIDNEXT or UIDVALIDITY only to STATUS cannot be
imitated with Dovecot (its EXAMINE always sends both); tests/unit/test_minimal_server.py
covers what fastsync does with such an EXAMINE, and the checker (`tests.wire`) on its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import re
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.harness.corpus import Message
from bench.harness.dovecot import Dovecot
from bench.harness.tcpproxy import CountingProxy, Recording
from fastsync.engine.transfer import STREAM_ABOVE_BYTES
from tests.dovecot.accounts import Account, AccountFactory, Snapshot, snapshot
from tests.helpers import message, run_cli, summary_line, wait_for, write_config
from tests.wire import Command, announcements, commands, find_login, needs, violations

MINIMAL = "IMAP4rev1 NAMESPACE"
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))

def used(recordings: Sequence[Recording]) -> set[str]:
    """Every capability the commands of these connections needed."""
    return {need for r in recordings for c in commands(bytes(r.client_bytes)) for need in needs(c)}


def all_commands(recordings: Sequence[Recording]) -> list[Command]:
    return [c for r in recordings for c in commands(bytes(r.client_bytes))]


# --------------------------------------------------------------------------- against minimal Dovecots


@pytest.fixture(scope="module")
def minimal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Dovecot, Dovecot]]:
    """Two Dovecots announcing only IMAP4rev1 NAMESPACE: a source in UTC+05:30, a
    destination with "." as hierarchy separator."""
    users = {f"m{n}": f"m{n}-pw" for n in range(1, 5)}
    src = Dovecot(tmp_path_factory.mktemp("minimal-src"), users, starttls=False, imap_capability=MINIMAL)
    dst = Dovecot(tmp_path_factory.mktemp("minimal-dst"), users, separator=".", starttls=False, imap_capability=MINIMAL)
    saved = os.environ.get("TZ")
    # A POSIX TZ string needs no zoneinfo file inside the mail processes' chroot; Dovecot
    # passes TZ on (import_environment) and writes INTERNALDATEs in that zone.
    os.environ["TZ"] = "IST-5:30"
    try:
        src.start()
    finally:
        if saved is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = saved
    try:
        dst.start()
        yield src, dst
    finally:
        src.stop()
        dst.stop()


def corpus() -> list[Message]:
    """Keywords, nesting, non-ASCII names, messages without Message-Id, identical copies,
    days below 10 and dates written in other time zones."""
    body_like_commands = "x1 UNSELECT\r\nx2 APPEND INBOX {3+}\r\nabc\r\nx3 ID NIL\r\n"
    out = [
        message("INBOX", 1, flags=("\\Seen",)),
        message("INBOX", 2, flags=("\\Seen", "\\Flagged", "$Forwarded")),
        message("INBOX", 3, message_id=None, flags=("Project-X",)),
        message("INBOX", 4, message_id=None, flags=("\\Answered",)),
        dataclasses.replace(message("INBOX", 5), internaldate=dt.datetime(2021, 7, 5, 23, 45, 0, tzinfo=IST)),
        dataclasses.replace(
            message("INBOX", 6), internaldate=dt.datetime(2019, 12, 31, 22, 0, 0, tzinfo=dt.timezone(dt.timedelta(hours=-8)))
        ),
        message("Archive", 7),
        message("Archive", 8, flags=("\\Seen",)),
        message("Archive", 8, flags=("\\Seen",)),  # an identical copy
        message("Archive/2019", 9, flags=("$Label1", "\\Seen")),
        message("Archive/2019", 10, message_id=None),
        message("Archive/2019/Q1", 11, body=body_like_commands),
        message("Reçus", 12, flags=("\\Draft",)),
        message("Sent", 13, flags=("\\Seen",)),
    ]
    return out


def as_instants(snap: Snapshot) -> Snapshot:
    """The snapshot with each internal date as an instant in UTC: the destination writes
    the same moment in its own zone (RFC 3501 section 2.3.3 leaves the zone to the server)."""
    return {
        folder: Counter(
            {(body, flags, dt.datetime.fromisoformat(date).astimezone(dt.UTC).isoformat()): n for (body, flags, date), n in messages.items()}
        )
        for folder, messages in snap.items()
    }


@dataclass
class Wire:
    """Recording proxies in front of both servers, kept for a whole test so that the state
    cache (keyed by server address) sees the same servers on every run."""

    src: CountingProxy
    dst: CountingProxy
    config: Path

    def run(self, *args: str | Path) -> tuple[subprocess.CompletedProcess[str], list[Recording], list[Recording]]:
        """Run fastsync; returns its result and the connections it opened to each side."""
        src_start, dst_start = len(self.src.recordings), len(self.dst.recordings)
        result = run_cli(*args[:1], "-c", self.config, *args[1:])
        # Bytes are recorded before they are relayed: once the proxy has seen every
        # connection end, it has recorded all of them.
        wait_for(lambda: self.src.open_connections == 0 and self.dst.open_connections == 0, 10, what="connections to end")
        return result, self.src.recordings[src_start:], self.dst.recordings[dst_start:]


@pytest.fixture
def wire(tmp_path: Path) -> Iterator[Callable[..., Wire]]:
    """``wire(src, dst, pad_src_dates=False)``: recording proxies and a config through them."""
    with contextlib.ExitStack() as stack:

        def make(src: Account, dst: Account, pad_src_dates: bool = False) -> Wire:
            # Dovecot writes the day with two digits; RFC 3501's date-day-fixed also allows
            # a space.  Same length, so literal counts stay true.
            pad = (b'INTERNALDATE "0', b'INTERNALDATE " ') if pad_src_dates else None
            src_proxy = stack.enter_context(CountingProxy(src.server.port, record=True, replace_down=pad))
            dst_proxy = stack.enter_context(CountingProxy(dst.server.port, record=True))
            config = write_config(
                tmp_path, f"127.0.0.1:{src_proxy.port}", src.user, src.password,
                f"127.0.0.1:{dst_proxy.port}", dst.user, dst.password,
            )
            return Wire(src_proxy, dst_proxy, config)

        yield make


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


def assert_announced_only(recordings: Sequence[Recording], after_login: str | None = None) -> None:
    assert recordings, "no connection went through the proxy"
    for recording in recordings:
        sent = commands(bytes(recording.client_bytes))
        assert sent and sent[0].name in ("CAPABILITY", "AUTHENTICATE", "LOGIN"), sent[:1]
        if after_login is not None:
            _before, after = announcements(bytes(recording.server_bytes), find_login(sent)[1])
            assert after == frozenset(after_login.upper().split()), "the server did not announce what the test expects"
        assert violations(recording) == []


def test_copy_between_minimal_servers(minimal: tuple[Dovecot, Dovecot], wire: Callable[..., Wire], tmp_path: Path) -> None:
    src_server, dst_server = minimal
    src = Account(src_server, "m1", src_server.users["m1"])
    dst = Account(dst_server, "m1", dst_server.users["m1"])
    messages = corpus()
    src.seed(messages)
    client = src.client()
    try:
        client.create_folder("Empty")
    finally:
        client.logout()
    w = wire(src, dst, pad_src_dates=True)
    state = ["--state-dir", str(tmp_path / "state")]
    runs: list[tuple[str, list[Recording], list[Recording]]] = []

    result, src_rec, dst_rec = w.run("sync", "-y", *state)
    assert_ok(result)
    runs.append(("sync", src_rec, dst_rec))
    assert f"{len(messages)} copied, 0 already present" in summary_line(result.stdout)
    src_snapshot = snapshot(src)
    assert as_instants(snapshot(dst, delimiter_to="/")) == as_instants(src_snapshot)
    assert set(src_snapshot) >= {"Empty", "Archive/2019/Q1", "Reçus"}
    # The source wrote its dates in +0530, the proxy space-padded the days below 10, and
    # the APPENDs carried the source's date as read.
    down = b"".join(bytes(r.server_bytes) for r in src_rec)
    assert re.search(rb'INTERNALDATE " \d-[A-Z][a-z]{2}-\d{4} \d\d:\d\d:\d\d \+0530"', down)
    assert b'INTERNALDATE "0' not in down
    appends = [c for c in all_commands(dst_rec) if c.name == "APPEND"]
    assert len(appends) == len(messages)  # one message each: no MULTIAPPEND announced
    assert any(b'"05-Jul-2021 23:45:00 +0530"' in c.text for c in appends)
    assert all(c.literals and c.literals[0].endswith(b"}") and not c.literals[0].endswith(b"+}") for c in appends)

    for args in (("sync", "-y", *state), ("sync", "-y", "--full", *state)):
        result, src_rec, dst_rec = w.run(*args)
        assert_ok(result)
        runs.append((" ".join(args[:3]), src_rec, dst_rec))
        assert f"0 copied, {len(messages)} already present" in summary_line(result.stdout)
        assert not [c for c in all_commands(dst_rec) if c.name == "APPEND"]

    # A flag changed at the source reaches the destination with --sync-flags (SELECT, UID STORE).
    client = src.client()
    try:
        client.select_folder("INBOX")
        client.add_flags(client.search(["SUBJECT", "message 1"]), [b"\\Flagged", b"Later"])
    finally:
        client.logout()
    result, src_rec, dst_rec = w.run("sync", "-y", "--sync-flags", *state)
    assert_ok(result)
    runs.append(("sync --sync-flags", src_rec, dst_rec))
    assert any(c.name == "UID STORE" for c in all_commands(dst_rec))
    assert as_instants(snapshot(dst, delimiter_to="/")) == as_instants(snapshot(src))

    for args in (("check",), ("check", "--bodies"), ("show",)):
        result, src_rec, dst_rec = w.run(*args)
        assert_ok(result)
        runs.append((" ".join(args), src_rec, dst_rec))

    for what, src_rec, dst_rec in runs:
        for side, recordings in (("source", src_rec), ("destination", dst_rec)):
            try:
                assert_announced_only(recordings, after_login=MINIMAL)
            except AssertionError as exc:
                raise AssertionError(f"{what}, {side}: {exc}") from None


def test_minimal_source_to_full_destination(
    minimal: tuple[Dovecot, Dovecot], accounts: AccountFactory, wire: Callable[..., Wire]
) -> None:
    """One side minimal, the other a full Dovecot: each side gets what it announced.  The
    full side is also the check's positive control: there the parser does see the
    extensions in use, and finds them unannounced when held against the minimal list."""
    src_server, _dst_server = minimal
    src = Account(src_server, "m2", src_server.users["m2"])
    [dst] = accounts(1)
    messages = corpus()
    src.seed(messages)
    w = wire(src, dst)
    result, src_rec, dst_rec = w.run("sync", "-y")
    assert_ok(result)
    assert f"{len(messages)} copied" in summary_line(result.stdout)
    assert as_instants(snapshot(dst)) == as_instants(snapshot(src))
    check, check_src, check_dst = w.run("check")
    assert_ok(check)
    assert_announced_only(src_rec + check_src, after_login=MINIMAL)
    assert_announced_only(dst_rec + check_dst)
    in_use = used(dst_rec)
    assert {"MULTIAPPEND", "LIST-STATUS"} <= in_use and any(n.startswith("LITERAL+") for n in in_use), in_use
    minimal_set = frozenset(MINIMAL.upper().split())
    found = "\n".join(v for r in dst_rec for v in violations(r, announced_after_login=minimal_set))
    for need in ("MULTIAPPEND", "LITERAL+", "LIST-STATUS"):
        assert f"needs {need}" in found, found[:2000]


def test_large_message_streams_between_minimal_servers(
    minimal: tuple[Dovecot, Dovecot], wire: Callable[..., Wire]
) -> None:
    """A message above the streaming threshold, to a server without LITERAL+: its APPEND
    waits for the "+" continuation (RFC 3501 section 7.5) before the body is relayed, and
    nothing unannounced is sent on either side."""
    src_server, dst_server = minimal
    src = Account(src_server, "m3", src_server.users["m3"])
    dst = Account(dst_server, "m3", dst_server.users["m3"])
    filler = b"".join(b"%075d\r\n" % n for n in range(STREAM_ABOVE_BYTES // 77 + 1000))
    big = dataclasses.replace(message("INBOX", 21, flags=("\\Seen", "Project-X")), body=message("INBOX", 21).body + filler)
    messages = [big, message("INBOX", 22, flags=("$Label1",))]
    src.seed(messages)
    w = wire(src, dst)
    result, src_rec, dst_rec = w.run("sync", "-y")
    assert_ok(result)
    assert "2 copied" in summary_line(result.stdout)
    assert as_instants(snapshot(dst, delimiter_to="/")) == as_instants(snapshot(src))
    assert_announced_only(src_rec, after_login=MINIMAL)
    assert_announced_only(dst_rec, after_login=MINIMAL)
    appends = [c for c in all_commands(dst_rec) if c.name == "APPEND"]
    assert any(c.literals and c.literals[0].endswith(b"{%d}" % len(big.body)) for c in appends), appends
    assert not any(c.literals and c.literals[0].endswith(b"+}") for c in appends)
    fetches = [c.text for c in all_commands(src_rec) if c.name == "UID FETCH"]
    assert any(t.endswith(b" (BODY.PEEK[])") for t in fetches), fetches
