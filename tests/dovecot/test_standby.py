"""Workers started while the run plans (`pool.Standby`), against a real Dovecot.

`sync -y` starts them once the folder counts say there is mail to copy, so that their
start and logins overlap planning.  The copy then takes them as its first workers (no
more connections than without them); those a plan turns out not to need log out having
written nothing.
"""

from __future__ import annotations

import datetime as dt

from bench.harness.corpus import Message
from bench.harness.tcpproxy import CountingProxy, Recording
from tests.dovecot.accounts import AccountFactory, ConfigFor, snapshot
from tests.helpers import run_cli, summary_line
from tests.wire import commands

WHEN = dt.datetime(2023, 5, 6, 7, 8, 9, tzinfo=dt.UTC)

# What a connection that never copies may send: greeting exchange, login, logout.
SESSION_ONLY = {"CAPABILITY", "AUTHENTICATE", "LOGIN", "ENABLE", "ID", "LOGOUT"}


def _message(n: int, size_bytes: int) -> Message:
    head = f"Message-ID: <standby{n}@x>\r\nSubject: standby {n}\r\n\r\n".encode()
    return Message("INBOX", head + b"x" * size_bytes + b"\r\n", ("\\Seen",), WHEN + dt.timedelta(minutes=n))


def _names(recording: Recording) -> list[str]:
    return [c.name for c in commands(bytes(recording.client_bytes))]


def test_standby_workers_the_plan_does_not_need_log_out_having_written_nothing(
    accounts: AccountFactory, config_for: ConfigFor
) -> None:
    src, dst = accounts(2)
    src.seed([_message(n, 40_000) for n in range(6)])
    with CountingProxy(dst.server.port, record=True) as proxy:
        config = config_for(src, dst, extra={"dst": {"server": f"127.0.0.1:{proxy.port}"}})
        # The counts say 6 messages are missing; the plan leaves every one out by size.
        result = run_cli("sync", "-c", config, "-y", "--procs", "3", "--max-size", "20k")
    assert result.returncode == 0, result.stderr
    assert summary_line(result.stdout).startswith("1 folders, 0 copied")
    assert "Traceback" not in result.stderr
    assert not snapshot(dst).get("INBOX")
    # The planner, and one standby worker (6 small messages make one unit).
    assert len(proxy.recordings) == 2
    workers = [names for names in map(_names, proxy.recordings) if "LIST" not in names]
    assert len(workers) == 1
    assert set(workers[0]) <= SESSION_ONLY and workers[0][-1] == "LOGOUT", workers


def test_the_copy_takes_the_standby_workers_first(accounts: AccountFactory, config_for: ConfigFor) -> None:
    for procs, messages, connections in (("2", 1000, 3), ("4", 30, 2)):
        src, dst = accounts(2)
        src.seed([_message(n, 200) for n in range(messages)])
        with CountingProxy(dst.server.port, record=True) as proxy:
            config = config_for(src, dst, extra={"dst": {"server": f"127.0.0.1:{proxy.port}"}})
            result = run_cli("sync", "-c", config, "-y", "--procs", procs)
        assert result.returncode == 0, result.stderr
        assert f"{messages} copied" in summary_line(result.stdout)
        assert snapshot(dst) == snapshot(src)
        # 1000 messages make 3 units for 2 workers, 30 make one unit for one: the planner and
        # the standby workers, and no worker started besides them.
        assert len(proxy.recordings) == connections, procs
        appending = [names for names in map(_names, proxy.recordings) if "APPEND" in names]
        assert len(appending) == connections - 1
