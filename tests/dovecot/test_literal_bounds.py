"""What a server's literals may cost: memory is bounded by each literal's own announced
length, never by what the server said elsewhere (RFC822.SIZE), and the copy stays exact.

Against a real Dovecot behind a proxy (`LiteralSwap`) that sends a huge literal in place of
one message's header fields or body; the peak resident size of every process of the run
(`run_cli_peak`) is compared with that of the same sync without the huge literal.  48 MB
stands for the 300 MB a server sent: holding it whole shows at once."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from bench.harness.corpus import Message
from bench.harness.replyproxy import EditingProxy, LiteralSwap
from bench.harness.tcpproxy import CountingProxy
from tests.dovecot.accounts import AccountFactory, ConfigFor, snapshot
from tests.helpers import run_cli_peak

HUGE_BYTES = 48 * 1024 * 1024
# Growth of the peak over the same sync without the huge literal that still counts as
# bounded: well under the literal's size, well over what a few chunks and a MiB cost.
BOUNDED_KB = 20 * 1024


def _bodies(count: int = 3) -> list[bytes]:
    return [f"Message-ID: <lit{n}@x>\r\nSubject: {n}\r\n\r\n{'z' * (90 + n)}\r\n".encode() for n in range(count)]


def _seed(account: Any, bodies: list[bytes]) -> list[bytes]:
    account.seed([Message("INBOX", body, (), dt.datetime(2023, 1, 1, tzinfo=dt.UTC)) for body in bodies])
    return bodies


# On the destination before the sync: the planner then reads the source's identities (a
# folder empty on the destination is planned from UIDs and sizes alone).
_THERE = b"Message-ID: <there@x>\r\nSubject: there\r\n\r\nthere\r\n"


def _sync_peak(
    src: Any, dst: Any, config_for: ConfigFor, swap: Any = None, command: tuple[str, ...] = ("sync", "-y", "--procs", "1")
) -> tuple[Any, int, int]:
    """A sync (one worker), or *command*, with the source behind a proxy whose
    server-to-client bytes go through *swap* (a `LiteralSwap` factory, or none): its
    result, its peak (KiB) and how many literals were swapped."""
    swaps: list[LiteralSwap] = []

    def rewriter() -> LiteralSwap:
        swaps.append(swap())
        return swaps[-1]

    with CountingProxy(src.server.port, rewrite_down=rewriter if swap else None) as proxy:
        config = config_for(src, dst, extra={"src": {"server": f"127.0.0.1:{proxy.port}"}})
        result, peak_kb = run_cli_peak(command[0], "-c", config, *command[1:])
    return result, peak_kb, sum(s.swapped for s in swaps)


def _huge_header() -> bytes:
    # The Message-Id first, as Dovecot sends the fields in the message's order: the MiB
    # kept identifies the message as the whole header would.
    return b"Message-ID: <lit0@x>\r\nSubject: " + b"y" * HUGE_BYTES + b"\r\n\r\n"


def _huge_body() -> bytes:
    return b"Message-ID: <lit0@x>\r\nSubject: 0\r\n\r\n" + b"0123456789abcdef" * (HUGE_BYTES // 16)


def _first_message(line: bytes, item: bytes) -> bool:
    return line.startswith(b"* 1 FETCH ") and item in line


@pytest.mark.parametrize(
    ("case", "item", "make"),
    [
        # The planner reads every message's identity header fields.
        ("header", b"BODY[HEADER.FIELDS (", _huge_header),
        # A message whose RFC822.SIZE says ~130 bytes (a batched unit) sends 48 MB.
        ("body", b"BODY[] {", _huge_body),
    ],
)
def test_a_huge_literal_is_never_held_whole(
    case: str, item: bytes, make: Any, accounts: AccountFactory, config_for: ConfigFor
) -> None:
    base_src, base_dst, src, dst = accounts(4)
    bodies = _seed(src, _bodies())
    _seed(base_src, _bodies())
    for account in (base_dst, dst):
        _seed(account, [_THERE])
    baseline, base_kb, _none = _sync_peak(base_src, base_dst, config_for)
    assert baseline.returncode == 0, baseline.stderr

    def swap() -> LiteralSwap:
        return LiteralSwap(lambda line: _first_message(line, item), make)

    result, peak_kb, swapped = _sync_peak(src, dst, config_for, swap)
    assert swapped >= 1
    assert result.returncode == 0, result.stderr
    assert peak_kb - base_kb < BOUNDED_KB, (peak_kb, base_kb)
    stored = sorted(body for (body, _flags, _date) in snapshot(dst)["INBOX"])
    if case == "header":
        # Identified by the MiB kept: copied once, and found present by the next run, which
        # reads the whole header on the destination and the huge one on the source.
        assert stored == sorted([*bodies, _THERE])
        again, _kb, _swapped = _sync_peak(src, dst, config_for, swap)
        assert "0 copied, 3 already present" in again.stdout, again.stdout
    else:
        # The body as the server sent it, byte for byte, streamed from the source socket.
        assert stored == sorted([_huge_body(), *bodies[1:], _THERE])
        # check --bodies hashes it as it arrives, on both sides (the destination's copy
        # announces its size, the source's does not), and finds the copy the same (the
        # destination's own message is the one difference).
        command = ("check", "--bodies")
        checks = [_sync_peak(base_src, base_dst, config_for, None, command), _sync_peak(src, dst, config_for, swap, command)]
        for check, _kb, _swapped in checks:
            assert check.returncode == 1, check.stderr
            assert "0 missing, 1 extra, 0 flags, 0 date, 0 body" in check.stdout, check.stdout
        assert checks[1][1] - checks[0][1] < BOUNDED_KB, (checks[1][1], checks[0][1])


def _list_name_as_literal(size_bytes: int) -> Any:
    """An edit of the server's lines: INBOX's LIST reply names it with a literal of
    *size_bytes* (RFC 3501 section 4.3 allows a name as a literal; none is that long)."""

    def edit(line: bytes) -> bytes:
        if line.startswith(b"* LIST ") and line.rstrip().endswith(b" INBOX"):
            return line.rstrip()[: -len(b"INBOX")] + b"{%d}\r\n" % size_bytes + b"n" * size_bytes + b"\r\n"
        return line

    return edit


def test_a_huge_literal_outside_a_fetch_is_refused_quoting_its_reply(
    accounts: AccountFactory, config_for: ConfigFor
) -> None:
    src, dst = accounts(2)
    _seed(src, _bodies())
    with EditingProxy(src.server.port, down=_list_name_as_literal(8 * 1024 * 1024)) as proxy:
        config = config_for(src, dst, extra={"src": {"server": f"127.0.0.1:{proxy.port}", "timeout_s": 5}})
        result, peak_kb = run_cli_peak("sync", "-c", config, "-y", "--procs", "1")
    assert result.returncode == 3, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: source (127.0.0.1:"), last
    assert "the server announced a literal of 8388608 bytes (in a reply starting b'* LIST (" in last, last
    assert "internal error" not in result.stderr
