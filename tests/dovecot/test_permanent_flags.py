"""Keywords a destination folder cannot keep (PERMANENTFLAGS without \\*, RFC 3501 section 7.1).

Dovecot keeps every keyword, so a proxy rewrites the destination's PERMANENTFLAGS to leave
out ``\\*``, and the destination's copy is seeded without the keyword, as such a server
would have stored it.  The same accounts reached directly are the control: there the
keyword counts, and check and --sync-flags see the difference.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.harness.dovecot import Dovecot
from bench.harness.tcpproxy import CountingProxy
from tests.dovecot.accounts import Account, AccountFactory, ConfigFor, snapshot
from tests.helpers import message, run_cli, summary_line

# What Dovecot answers to SELECT, and the same without "any keyword".
ANY_KEYWORD = (b"\\Draft \\*)]", b"\\Draft)]")


def _accounts(accounts: AccountFactory) -> tuple[Account, Account]:
    src, dst = accounts(2)
    kept = message("INBOX", 1, flags=("\\Seen", "$Label1"))
    src.seed([kept, message("INBOX", 2, flags=("\\Flagged",))])
    # The destination dropped the keyword on APPEND, as a server without \* does.
    dst.seed([message("INBOX", 1, flags=("\\Seen",)), message("INBOX", 2, flags=("\\Flagged",))])
    return src, dst


def _proxied_config(config_for: ConfigFor, src: Account, dst: Account, proxy: CountingProxy) -> Path:
    return config_for(src, dst, extra={"dst": {"server": f"127.0.0.1:{proxy.port}"}}, name="proxied")


def test_check_compares_only_what_the_destination_keeps(accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst = _accounts(accounts)
    direct = run_cli("check", "-c", config_for(src, dst), "--json")
    assert direct.returncode == 1, direct.stderr
    [inbox] = json.loads(direct.stdout)["folders"]
    assert [d["kind"] for d in inbox["differences"]] == ["flags"]
    assert inbox["unkept_flags"] == []

    with CountingProxy(dst.server.port, replace_down=ANY_KEYWORD) as proxy:
        config = _proxied_config(config_for, src, dst, proxy)
        result = run_cli("check", "-c", config)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "destination folder 'INBOX' cannot keep $Label1 (PERMANENTFLAGS, or refused on APPEND); not compared" in result.stdout
        assert result.stdout.rstrip().endswith("everything matches.")
        doc = json.loads(run_cli("check", "-c", config, "--json").stdout)
    assert doc["folders"][0]["unkept_flags"] == ["$Label1"]
    assert doc["matches"] is True


def test_sync_flags_sets_nothing_the_destination_cannot_keep(accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst = _accounts(accounts)
    before = snapshot(dst)
    with CountingProxy(dst.server.port, replace_down=ANY_KEYWORD) as proxy:
        result = run_cli("sync", "-c", _proxied_config(config_for, src, dst, proxy), "-y", "--sync-flags")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "destination folder 'INBOX' cannot keep $Label1" in result.stderr
    assert summary_line(result.stdout).endswith("0 flags updated")
    assert snapshot(dst) == before

    # The control: reached directly, the destination keeps keywords, and the flag is set.
    direct = run_cli("sync", "-c", config_for(src, dst), "-y", "--sync-flags", "--full")
    assert direct.returncode == 0, direct.stdout + direct.stderr
    assert summary_line(direct.stdout).endswith("1 flags updated")
    assert snapshot(dst) == snapshot(src)


@pytest.fixture(scope="module")
def without_unselect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dovecot]:
    """A destination without UNSELECT (RFC 3691): leaving a folder takes CLOSE there."""
    server = Dovecot(tmp_path_factory.mktemp("no-unselect"), {"d1": "p1", "d2": "p2"}, starttls=False,
                     imap_capability="IMAP4rev1 NAMESPACE")
    with server:
        yield server


@pytest.mark.parametrize(("command", "user"), [("check", "d1"), ("sync", "d2")])
def test_leaving_a_selected_destination_folder_expunges_nothing(
    command: str, user: str, accounts: AccountFactory, config_for: ConfigFor, without_unselect: Dovecot
) -> None:
    """SELECT is used on the destination; a CLOSE after it would expunge \\Deleted messages."""
    [src] = accounts(1)
    src.seed([message("INBOX", 1), message("INBOX", 2)])
    src.client().create_folder("Other")
    dst = Account(without_unselect, user, without_unselect.users[user])
    dst.seed([message("INBOX", 1), message("INBOX", 9, flags=("\\Deleted",))])
    args = ("check",) if command == "check" else ("sync", "-y", "--sync-flags")
    result = run_cli(*args, "-c", config_for(src, dst))
    assert result.returncode in (0, 1), result.stderr
    kept = snapshot(dst)["INBOX"]
    assert any("\\Deleted" in str(flags) for _body, flags, _date in kept)
    assert sum(kept.values()) == (2 if command == "check" else 3)


class _RefuseStore:
    """Client bytes with every STORE's item misspelt while *refusing* holds True: the server
    answers BAD and stores nothing."""

    def __init__(self, refusing: list[bool]) -> None:
        self.refusing = refusing

    def feed(self, data: bytes) -> bytes:
        return data.replace(b" FLAGS.SILENT ", b" FLAGX.SILENT ") if self.refusing[0] else data

    def flush(self) -> bytes:
        return b""


def test_a_refused_store_leaves_the_pair_to_compare_again(accounts: AccountFactory, config_for: ConfigFor) -> None:
    """The --sync-flags state cache must not record as in step a folder whose STORE failed:
    both runs reach the destination through one proxy, so they share one state cache."""
    src, dst = accounts(2)
    src.seed([message("INBOX", 1, flags=("\\Seen", "\\Flagged"))])
    dst.seed([message("INBOX", 1, flags=("\\Seen",))])
    refusing = [True]
    with CountingProxy(dst.server.port, rewrite_up=lambda: _RefuseStore(refusing)) as proxy:
        config = _proxied_config(config_for, src, dst, proxy)
        refused = run_cli("sync", "-c", config, "-y", "--sync-flags")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "STORE refused" in refused.stderr
        assert summary_line(refused.stdout).endswith("0 flags updated")
        assert snapshot(dst) != snapshot(src)
        refusing[0] = False
        again = run_cli("sync", "-c", config, "-y", "--sync-flags")
    assert again.returncode == 0, again.stdout + again.stderr
    assert summary_line(again.stdout).endswith("1 flags updated")
    assert snapshot(dst) == snapshot(src)


class _RefuseKeyword:
    """Client bytes with keyword $Label1 spelt with a character Dovecot refuses in a keyword
    (same length: literals keep their sizes), so that an APPEND carrying it is answered
    ``NO [CANNOT] Invalid characters in keyword``, as a server without ``\\*`` in its
    PERMANENTFLAGS may answer."""

    def feed(self, data: bytes) -> bytes:
        return data.replace(b"$Label1", b"$Lab]l1")

    def flush(self) -> bytes:
        return b""


def test_a_keyword_refused_on_append_costs_only_the_keyword(accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst = accounts(2)
    src.seed([message("INBOX", n, flags=("\\Seen", "$Label1") if n % 2 else ("\\Flagged",)) for n in range(1, 7)])
    with CountingProxy(dst.server.port, replace_down=ANY_KEYWORD, rewrite_up=_RefuseKeyword) as proxy:
        config = _proxied_config(config_for, src, dst, proxy)
        result = run_cli("sync", "-c", config, "-y")
        assert result.returncode == 0, result.stdout + result.stderr
        assert ", 6 copied, " in summary_line(result.stdout), result.stdout
        assert [line for line in result.stderr.splitlines() if "$Label1" in line] == [
            "warning: destination folder 'INBOX' refused the keywords $Label1; messages that carry them are "
            "copied without them"
        ], result.stderr
        again = run_cli("sync", "-c", config, "-y", "--sync-flags")
        assert again.returncode == 0, again.stdout + again.stderr
        assert summary_line(again.stdout).endswith(", 0 flags updated") and ", 0 copied, " in again.stdout
        assert run_cli("check", "-c", config).returncode == 0
    held = snapshot(dst)["INBOX"]
    assert sum(held.values()) == 6
    assert sorted(flags for _body, flags, _date in held) == [(b"\\Flagged",)] * 3 + [(b"\\Seen",)] * 3
