"""Commands that go out together instead of one round trip each, against a real Dovecot.

At 50 ms of round trip every wait for a reply before the next command costs a run 50 ms
where it lies on the way to the copies.  A proxy holds back the server's replies that a
client could wait for (`Fault.hold_down`) and records both directions in the order it
passed them on: a command that left before the held reply was sent without waiting.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from bench.harness.corpus import Message
from bench.harness.tcpproxy import CountingProxy, Fault, Recording
from tests.dovecot.accounts import Account, AccountFactory, ConfigFor, snapshot
from tests.helpers import run_cli, summary_line

WHEN = dt.datetime(2023, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
HOLD_S = 1.0


def _sent_before_reply(recording: Recording, command: bytes, reply: bytes) -> bool | None:
    """Whether the client sent *command* before the proxy passed on the first server chunk
    holding *reply* (None: either not seen)."""
    sent = seen = None
    for number, upstream, data in recording.order:
        if upstream and sent is None and command in data:
            sent = number
        if not upstream and seen is None and reply in data:
            seen = number
    if sent is None or seen is None:
        return None
    return sent < seen


def _held(port: int, marker: bytes) -> CountingProxy:
    """A recording proxy to *port* that holds every server chunk holding *marker*."""
    return CountingProxy(port, faults=lambda _n: Fault(hold_down=marker, stall_s=HOLD_S), record=True)


def _three_to_copy(accounts: AccountFactory) -> tuple[Account, Account]:
    """A source with three small messages in INBOX, and an empty destination."""
    src, dst = accounts(2)
    src.seed([Message("INBOX", f"Message-ID: <rt{n}@x>\r\nSubject: {n}\r\n\r\nbody {n}\r\n".encode(), ("\\Seen",),
                      WHEN + dt.timedelta(minutes=n)) for n in range(3)])
    return src, dst


def _copy_three(src: Account, dst: Account, config: Path) -> None:
    """Sync with one worker: the three messages copied exactly."""
    result = run_cli("sync", "-c", config, "-y", "--procs", "1")
    assert result.returncode == 0, result.stderr
    assert "3 copied" in summary_line(result.stdout)
    assert snapshot(dst) == snapshot(src)


def test_a_worker_examines_and_fetches_in_one_round_trip_and_checks_the_copy_so(
    accounts: AccountFactory, config_for: ConfigFor
) -> None:
    src, dst = _three_to_copy(accounts)
    # EXAMINE answers with the READ-ONLY response code (RFC 3501 section 6.3.2).
    with _held(src.server.port, b"OK [READ-ONLY]") as src_proxy, _held(dst.server.port, b"OK [READ-ONLY]") as dst_proxy:
        _copy_three(src, dst, config_for(src, dst, extra={"src": {"server": f"127.0.0.1:{src_proxy.port}"},
                                                          "dst": {"server": f"127.0.0.1:{dst_proxy.port}"}}))
    # The worker's source connection: EXAMINE, then the bodies' UID FETCH before its reply.
    workers = [r for r in src_proxy.recordings if b"BODY.PEEK[]" in r.client_bytes]
    assert len(workers) == 1
    assert _sent_before_reply(workers[0], b"UID FETCH", b"OK [READ-ONLY]") is True
    # The worker's destination connection: after the first unit of a folder, the check that
    # the server kept the copy's Message-Id (EXAMINE, UID FETCH of its header) is one round trip.
    workers = [r for r in dst_proxy.recordings if b"APPEND" in r.client_bytes]
    assert len(workers) == 1
    assert _sent_before_reply(workers[0], b"UID FETCH", b"OK [READ-ONLY]") is True


def test_the_planner_asks_for_the_namespace_with_the_folder_list(
    accounts: AccountFactory, config_for: ConfigFor
) -> None:
    src, dst = accounts(2)
    src.seed([Message("INBOX", b"Message-ID: <ns@x>\r\nSubject: ns\r\n\r\nbody\r\n", (), WHEN)])
    # Dovecot's text of a LIST's tagged OK.
    with _held(src.server.port, b"List completed") as proxy:
        config = config_for(src, dst, extra={"src": {"server": f"127.0.0.1:{proxy.port}"}})
        result = run_cli("sync", "-c", config, "-y", "--procs", "1")
    assert result.returncode == 0, result.stderr
    assert snapshot(dst) == snapshot(src)
    planners = [r for r in proxy.recordings if b"NAMESPACE" in r.client_bytes]
    assert len(planners) == 1
    assert _sent_before_reply(planners[0], b"NAMESPACE", b"List completed") is True


def _chunks(recordings: list[Recording], upstream: bool, marker: bytes) -> list[int]:
    """The numbers of the chunks holding *marker* that went one way, every connection's."""
    return sorted(n for r in recordings for n, up, data in r.order if up == upstream and marker in data)


def test_a_worker_fetches_its_next_unit_while_the_destination_stores_the_one_in_hand(
    accounts: AccountFactory, config_for: ConfigFor
) -> None:
    src, dst = accounts(2)
    # 1.5 MB a folder: two units of up to 1 MiB each, so a unit's next is of the same
    # folder (no EXAMINE) or of another.
    folders = ("INBOX", "Lists", "Sent")
    src.seed([Message(folder, f"Message-ID: <ov{n}{folder}@x>\r\nSubject: {n}\r\n\r\n{'x' * 75_000}\r\n".encode(),
                      ("\\Seen",) if n % 2 else (), WHEN + dt.timedelta(minutes=n))
              for folder in folders for n in range(20)])
    # Both accounts live on one server: one proxy sees (and numbers) every connection's
    # chunks.  Each APPEND's reply (RFC 4315's APPENDUID in its tagged OK) is held back.
    assert src.server.port == dst.server.port
    with _held(src.server.port, b"[APPENDUID") as proxy:
        config = config_for(src, dst, extra={"src": {"server": f"127.0.0.1:{proxy.port}"},
                                             "dst": {"server": f"127.0.0.1:{proxy.port}"}})
        result = run_cli("sync", "-c", config, "-y", "--procs", "1")
    assert result.returncode == 0, result.stderr
    assert "60 copied" in summary_line(result.stdout)
    assert snapshot(dst) == snapshot(src)
    # One worker: each unit's bodies after the first are fetched before the reply to the
    # APPEND of the unit before it.
    fetches = _chunks(proxy.recordings, True, b"BODY.PEEK[]")
    replies = _chunks(proxy.recordings, False, b"[APPENDUID")
    assert len(fetches) == len(replies) >= 2 * len(folders)
    assert all(fetch < reply for fetch, reply in zip(fetches[1:], replies, strict=False)), (fetches, replies)


def test_the_check_of_a_folders_first_copies_goes_with_the_append(
    accounts: AccountFactory, config_for: ConfigFor
) -> None:
    """The first unit of each folder is checked for a Message-Id the server rewrote
    (EXAMINE, UID FETCH of the new messages' headers): sent right after the APPEND, before
    its reply, not one round trip after it."""
    src, dst = _three_to_copy(accounts)
    # Dovecot's text of an APPEND's tagged OK.
    with _held(dst.server.port, b"Append completed") as dst_proxy:
        _copy_three(src, dst, config_for(src, dst, extra={"dst": {"server": f"127.0.0.1:{dst_proxy.port}"}}))
    workers = [r for r in dst_proxy.recordings if b"APPEND" in r.client_bytes]
    assert len(workers) == 1
    assert _sent_before_reply(workers[0], b"EXAMINE", b"Append completed") is True
