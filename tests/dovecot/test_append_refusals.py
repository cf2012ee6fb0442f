"""Refused APPENDs on destinations like Gmail, Microsoft 365 and Courier: no MULTIAPPEND
(RFC 3502), so one APPEND per message, and keywords the destination will not take.

Dovecot plays them: ``imap_capability`` leaves MULTIAPPEND out (and, for the second shape,
UIDPLUS and LITERAL+ too: every APPEND waits for its continuation and reports no UID),
``mail_max_keyword_length`` makes it refuse a long keyword (``NO [CANNOT] Keyword length
too long``) and ``quota_max_mail_size`` a large message (``NO [LIMIT]``).  A Dovecot with
MULTIAPPEND and the same limits checks the batch path's fallback, message by message.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.harness.corpus import Message
from bench.harness.dovecot import Dovecot
from bench.harness.tcpproxy import CountingProxy, Fault
from tests.dovecot.accounts import Account, AccountFactory, ConfigFor, Snapshot, snapshot
from tests.helpers import run_cli, summary_line

LIMITS = {"max_keyword_length": 20, "quota_max_mail_size": "20k"}
SHAPES = {
    # Microsoft 365 and Courier: UIDPLUS and LITERAL+, no MULTIAPPEND.
    "no MULTIAPPEND": "IMAP4rev1 LITERAL+ UIDPLUS NAMESPACE UNSELECT ENABLE CONDSTORE QRESYNC",
    # No UIDPLUS either: a copy is known by the OK of its own APPEND alone.
    "no MULTIAPPEND, no UIDPLUS": "IMAP4rev1 NAMESPACE",
    # Dovecot as it is: a refused MULTIAPPEND is tried again message by message.
    "MULTIAPPEND": None,
}
LONG_KEYWORD = "$" + "k" * 29
USERS = {f"d{n}": f"d{n}-pw" for n in range(12)}


@pytest.fixture(scope="module", params=list(SHAPES))
def limited(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dovecot]:
    server = Dovecot(tmp_path_factory.mktemp("refusing"), dict(USERS), starttls=False,
                     imap_capability=SHAPES[request.param], **LIMITS)  # type: ignore[arg-type]
    with server:
        yield server


_taken: Counter[int] = Counter()


def _dst(server: Dovecot) -> Account:
    """A destination user of *server* that no test has used."""
    user = f"d{_taken[id(server)]}"
    _taken[id(server)] += 1
    return Account(server, user, USERS[user])


def _message(n: int, size: int = 2_000, flags: tuple[str, ...] = ("\\Seen",)) -> Message:
    body = f"Message-ID: <r{n}@x>\r\nSubject: {n}\r\n\r\n".encode() + b"x" * size + b"\r\n"
    return Message("INBOX", body, flags, dt.datetime(2020, 6, 1, tzinfo=dt.UTC))


def _without(snap: Snapshot, keyword: str) -> Snapshot:
    """*snap* with *keyword* taken off every message, as a destination that refuses it holds it."""
    out: Snapshot = {}
    for folder, messages in snap.items():
        out[folder] = Counter()
        for (body, flags, date), count in messages.items():
            out[folder][(body, tuple(f for f in flags if f != keyword.encode()), date)] += count
    return out


@pytest.mark.dovecot
def test_a_refused_message_costs_only_itself(
    limited: Dovecot, accounts: AccountFactory, config_for: ConfigFor
) -> None:
    """Ten messages, the 7th over the destination's size limit: nine copies, each once, the
    summary says nine, and a re-run tries only the refused one again."""
    [src] = accounts(1)
    src.seed([_message(n, 40_000 if n == 7 else 2_000) for n in range(1, 11)])
    dst = _dst(limited)
    config = config_for(src, dst)
    for run, copied in enumerate((9, 0)):
        result = run_cli("sync", "-c", config, "-y")
        assert result.returncode == 1, result.stdout + result.stderr
        refused = [line for line in result.stderr.splitlines() if line.startswith("error: not copied:")]
        assert len(refused) == 1, result.stderr
        assert "folder 'INBOX' UID 7 <r7@x>" in refused[0] and "[LIMIT]" in refused[0], refused
        assert f", {copied} copied, " in summary_line(result.stdout), (run, result.stdout)
        held = snapshot(dst)["INBOX"]
        assert sum(held.values()) == 9 and set(held.values()) == {1}, (run, held)
    report = json.loads(run_cli("check", "-c", config, "--json").stdout)
    [inbox] = report["folders"]
    assert (inbox["counts"]["missing"], inbox["counts"]["extra"]) == (1, 0), inbox


@pytest.mark.dovecot
def test_a_keyword_the_destination_refuses_costs_only_the_keyword(
    limited: Dovecot, accounts: AccountFactory, config_for: ConfigFor
) -> None:
    """Ten messages, the 7th with a keyword too long for the destination (and one it
    keeps): all ten are copied, the 7th without that keyword, which is named once; a re-run
    copies nothing, and check and --sync-flags count the keyword as one the folder cannot keep."""
    [src] = accounts(1)
    src.seed([_message(n, flags=("\\Seen", "$Label1", LONG_KEYWORD) if n in (7, 9) else ("\\Seen",))
              for n in range(1, 11)])
    dst = _dst(limited)
    config = config_for(src, dst)
    result = run_cli("sync", "-c", config, "-y")
    assert result.returncode == 0, result.stdout + result.stderr
    assert ", 10 copied, " in summary_line(result.stdout), result.stdout
    named = [line for line in result.stderr.splitlines() if LONG_KEYWORD in line]
    assert len(named) == 1 and "'INBOX'" in named[0], result.stderr
    assert snapshot(dst) == _without(snapshot(src), LONG_KEYWORD)

    again = run_cli("sync", "-c", config, "-y", "--sync-flags")
    assert again.returncode == 0, again.stdout + again.stderr
    assert ", 0 copied, " in summary_line(again.stdout), again.stdout
    assert summary_line(again.stdout).endswith("0 flags updated"), again.stdout
    check = run_cli("check", "-c", config)
    assert check.returncode == 0, check.stdout + check.stderr
    assert LONG_KEYWORD in check.stdout
    assert snapshot(dst) == _without(snapshot(src), LONG_KEYWORD)


@pytest.mark.dovecot
@pytest.mark.parametrize("fault", [Fault(close_after_up=60_000), Fault(lose_append_reply=True)],
                         ids=["append cut", "append lands, reply lost"])
def test_a_connection_lost_among_single_appends_copies_nothing_twice(
    fault: Fault, limited: Dovecot, accounts: AccountFactory, config_for: ConfigFor
) -> None:
    """The destination connection drops part way through a unit's APPENDs: what was
    acknowledged is known, the rest is sent once, by the retry or by a re-run."""
    [src] = accounts(1)
    src.seed([_message(n) for n in range(1, 101)])
    dst = _dst(limited)
    with CountingProxy(limited.port, faults=lambda n: fault if n == 1 else None) as proxy:
        config = config_for(src, dst, extra={"dst": {"server": f"127.0.0.1:{proxy.port}", "timeout_s": 2}})
        result = run_cli("sync", "-c", config, "-y", "--procs", "1")
        assert proxy.faults_done >= 1, "the fault never fired"
        if result.returncode != 0:
            assert result.returncode == 1 and "run again" in result.stderr, result.stderr
            result = run_cli("sync", "-c", config, "-y", "--procs", "1")
        assert result.returncode == 0, result.stdout + result.stderr
        again = run_cli("sync", "-c", config, "-y")
        assert ", 0 copied, " in summary_line(again.stdout), again.stdout
        assert run_cli("check", "-c", config).returncode == 0
    assert snapshot(dst) == snapshot(src)


@pytest.mark.dovecot
@pytest.mark.parametrize("shape", ["no MULTIAPPEND, no UIDPLUS", "MULTIAPPEND"])
def test_a_refused_keyword_costs_only_the_keyword_when_streamed(
    shape: str, tmp_path: Path, accounts: AccountFactory, config_for: ConfigFor
) -> None:
    """Messages above `plan.STREAM_MESSAGE_BYTES` go from source to destination as they
    arrive: sent again without the keyword, the body comes from the source again."""
    [src] = accounts(1)
    src.seed([_message(n, 1_100_000, ("\\Seen", LONG_KEYWORD) if n == 2 else ("\\Seen",)) for n in range(1, 4)])
    with Dovecot(tmp_path / "streamed", {"dst": "d-pw"}, starttls=False, imap_capability=SHAPES[shape],
                 max_keyword_length=20) as server:
        dst = Account(server, "dst", "d-pw")
        config = config_for(src, dst)
        result = run_cli("sync", "-c", config, "-y")
        assert result.returncode == 0, result.stdout + result.stderr
        assert ", 3 copied, " in summary_line(result.stdout), result.stdout
        assert sum(LONG_KEYWORD in line for line in result.stderr.splitlines()) == 1, result.stderr
        again = run_cli("sync", "-c", config, "-y")
        assert ", 0 copied, " in summary_line(again.stdout), again.stdout
        assert run_cli("check", "-c", config).returncode == 0
        assert snapshot(dst) == _without(snapshot(src), LONG_KEYWORD)
