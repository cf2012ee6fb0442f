"""Tests of the test harness itself: the private Dovecot, the corpus and the seeder.

fastsync's own tests trust these pieces, so they are checked against the real server
(what needs no server: tests/unit/test_harness.py).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import ssl
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import imapclient
import pytest
import yaml
from imapclient.exceptions import IMAPClientError, LoginError

from bench.batch import batch, fastsync_batch_available, installed
from bench.harness.corpus import Message, folders_of, generate, seed_account
from bench.harness.dovecot import Dovecot, DovecotError, _group_alive
from bench.run import Side, doveadm_invocation, scratch_dir
from tests.dovecot.accounts import AccountFactory, STATIC_USERS
from tests.helpers import wait_for, write_config

REQUIRED_CAPABILITIES = {b"MULTIAPPEND", b"LITERAL+", b"UIDPLUS", b"CONDSTORE", b"SPECIAL-USE", b"STATUS=SIZE"}


@pytest.fixture(params=["/", "."], ids=["slash", "dot"])
def server(request: pytest.FixtureRequest) -> Dovecot:
    """Each session server in turn, to run a test under both hierarchy separators."""
    name = "dovecot" if request.param == "/" else "dovecot_dot"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- server basics


def test_login_and_capabilities(dovecot: Dovecot) -> None:
    client = dovecot.client("alice")
    try:
        assert REQUIRED_CAPABILITIES <= set(client.capabilities())
        assert client.namespace().personal[0] == ("", "/")
        assert [name for _f, _d, name in client.list_folders()] == ["INBOX"]
    finally:
        client.logout()


def test_wrong_password_is_rejected(dovecot: Dovecot) -> None:
    client = imapclient.IMAPClient(dovecot.host, dovecot.port, ssl=False, timeout=10)
    with pytest.raises(LoginError):
        client.login("alice", "not-the-password")
    client.shutdown()


def test_config_is_private(dovecot: Dovecot) -> None:
    text = dovecot.config_path.read_text()
    assert "!include" not in text  # nothing pulled in from /etc/dovecot
    assert str(dovecot.root) in text
    assert f"port = {dovecot.port}" in text and f"port = {dovecot.tls_port}" in text


@pytest.mark.parametrize("separator", ["/", "."])
def test_nested_folders_follow_separator(separator: str, dovecot: Dovecot, dovecot_dot: Dovecot,
                                         accounts: AccountFactory) -> None:
    srv = dovecot if separator == "/" else dovecot_dot
    [account] = accounts(1, server=srv)
    client = account.client()
    try:
        assert client.namespace().personal[0][1] == separator
        nested = separator.join(["Archive", "2020", "Q1"])
        client.create_folder(separator.join(["Archive"]))
        client.create_folder(separator.join(["Archive", "2020"]))
        client.create_folder(nested)
        client.create_folder("Café & [data] ü")
        listed = {name: (delim, flags) for flags, delim, name in client.list_folders()}
        assert set(listed) == {"INBOX", "Archive", f"Archive{separator}2020", nested, "Café & [data] ü"}
        assert all(delim == separator.encode() for delim, _ in listed.values())
        assert b"\\HasChildren" in listed["Archive"][1]
        # The other separator is an ordinary character in a name.
        other = "." if separator == "/" else "/"
        if other == ".":  # the "fs" layout allows "." in names under "/"
            client.create_folder("v1.2")
            assert any(name == "v1.2" for _f, _d, name in client.list_folders())
        client.select_folder(nested)
        client.append(nested, b"Subject: x\r\n\r\nbody\r\n")
        assert client.folder_status(nested, [b"MESSAGES"])[b"MESSAGES"] == 1
    finally:
        client.logout()


def test_special_use_declared_but_not_created(server: Dovecot, accounts: AccountFactory) -> None:
    [account] = accounts(1, server=server)
    client = account.client()
    try:
        assert [name for _f, _d, name in client.list_folders()] == ["INBOX"]
        for name in ("Sent", "Trash", "Junk", "Drafts", "Other"):
            client.create_folder(name)
        roles = {name: flags for flags, _d, name in client.list_folders()}
        assert b"\\Sent" in roles["Sent"]
        assert b"\\Trash" in roles["Trash"]
        assert b"\\Junk" in roles["Junk"]
        assert b"\\Drafts" in roles["Drafts"]
        assert not {b"\\Sent", b"\\Trash", b"\\Junk", b"\\Drafts"} & set(roles["Other"])
    finally:
        client.logout()


def test_prefixed_namespace(dovecot_prefixed: Dovecot, accounts: AccountFactory) -> None:
    [account] = accounts(1, server=dovecot_prefixed)
    client = account.client()
    try:
        assert client.namespace().personal == (("INBOX.", "."),)
        # Outside the prefix there is nothing: the NO names the prefix (no response code).
        with pytest.raises(IMAPClientError, match=r"nonexistent namespace. \(Mailbox name should probably be "
                                                  r"prefixed with: INBOX.\)"):
            client.create_folder("Sent")
        with pytest.raises(IMAPClientError, match=r"\[CANNOT\] Character not allowed in mailbox name: '/'"):
            client.create_folder("INBOX.x/y")
        names = ["INBOX.Sent", "INBOX.Sent Items", "INBOX.Trash", "INBOX.Archive", "INBOX.Archive.2020", "INBOX.Café"]
        for name in names:
            client.create_folder(name)
        listed = {name: (delim, set(flags)) for flags, delim, name in client.list_folders()}
        assert set(listed) == {"INBOX", *names}
        assert all(delim == b"." for delim, _ in listed.values())
        # The special-use declarations name folders relative to the prefix.
        roles = {name: flags & {b"\\Sent", b"\\Trash"} for name, (_d, flags) in listed.items()}
        assert roles == {
            "INBOX": set(), "INBOX.Sent": {b"\\Sent"}, "INBOX.Sent Items": {b"\\Sent"}, "INBOX.Trash": {b"\\Trash"},
            "INBOX.Archive": set(), "INBOX.Archive.2020": set(), "INBOX.Café": set(),
        }
    finally:
        client.logout()


def test_seed_on_a_prefixed_server(dovecot_prefixed: Dovecot, accounts: AccountFactory) -> None:
    [account] = accounts(1, server=dovecot_prefixed)
    when = datetime(2020, 1, 1, tzinfo=UTC)
    # Message.folder is "/"-separated and written with the prefix: "INBOX/Archive/2020".
    account.seed([Message("INBOX/Archive/2020", b"Subject: a\r\n\r\na\r\n", ("\\Seen",), when),
                  Message("INBOX/Sent", b"Subject: b\r\n\r\nb\r\n", (), when),
                  Message("INBOX", b"Subject: c\r\n\r\nc\r\n", (), when)])
    client = account.client()
    try:
        counts = {name: client.folder_status(name, [b"MESSAGES"])[b"MESSAGES"] for _f, _d, name in client.list_folders()}
        assert counts == {"INBOX": 1, "INBOX.Archive": 0, "INBOX.Archive.2020": 1, "INBOX.Sent": 1}
    finally:
        client.logout()


def test_lax_server_holds_a_name_the_others_refuse(
    dovecot: Dovecot, dovecot_lax: Dovecot, accounts: AccountFactory
) -> None:
    [strict] = accounts(1, server=dovecot)
    [lax] = accounts(1, server=dovecot_lax)
    client = strict.client()
    try:
        with pytest.raises(IMAPClientError, match=r"\[CANNOT\] Invalid mailbox name: Begins with '~'"):
            client.create_folder("~tilde")
    finally:
        client.logout()
    client = lax.client()
    try:
        client.create_folder("~tilde")
        client.append("~tilde", b"Subject: x\r\n\r\nx\r\n")
        assert client.folder_status("~tilde", [b"MESSAGES"])[b"MESSAGES"] == 1
    finally:
        client.logout()


def test_status_size(dovecot: Dovecot, accounts: AccountFactory) -> None:
    [account] = accounts(1)
    bodies = [b"Subject: a\r\n\r\nhello\r\n", b"Subject: b\r\n\r\n" + b"x" * 1000 + b"\r\n"]
    client = account.client()
    try:
        for body in bodies:
            client.append("INBOX", body)
        status = client.folder_status("INBOX", [b"MESSAGES", b"SIZE"])
        assert status[b"MESSAGES"] == 2
        assert status[b"SIZE"] == sum(len(b) for b in bodies)  # RFC 8438: sum of RFC822.SIZE
    finally:
        client.logout()


# --------------------------------------------------------------------------- accounts


def test_accounts_are_fresh_and_isolated(dovecot: Dovecot, accounts: AccountFactory) -> None:
    first, second = accounts(2)
    assert first.user != second.user
    assert first.user not in STATIC_USERS and second.user not in STATIC_USERS
    a = first.client()
    a.create_folder("Private")
    a.append("INBOX", b"Subject: mine\r\n\r\nonly for first\r\n")
    a.logout()
    b = second.client()
    try:
        assert [name for _f, _d, name in b.list_folders()] == ["INBOX"]
        assert b.folder_status("INBOX", [b"MESSAGES"])[b"MESSAGES"] == 0
    finally:
        b.logout()


def test_users_can_be_added_while_running(dovecot: Dovecot) -> None:
    user = f"late{time.monotonic_ns()}"
    with pytest.raises(LoginError):
        imapclient.IMAPClient(dovecot.host, dovecot.port, ssl=False, timeout=10).login(user, "pw")
    dovecot.add_user(user, "pw")  # no restart: passwd-file is re-read when it changes
    client = dovecot.client(user)
    assert client.folder_status("INBOX", [b"MESSAGES"])[b"MESSAGES"] == 0
    client.logout()


def test_account_pool_refills(dovecot: Dovecot, accounts: AccountFactory) -> None:
    many = accounts(45)  # more than one provisioning batch
    assert len({a.user for a in many}) == 45
    for account in (many[0], many[-1]):
        account.client().logout()


def test_write_config(tmp_path: Path, dovecot: Dovecot, accounts: AccountFactory) -> None:
    src, dst = accounts(2)
    path = write_config(tmp_path, src.address, src.user, src.password, dst.address, dst.user, dst.password)
    assert json.loads(path.read_text()) == {
        "src": {"label": "source", "server": f"127.0.0.1:{dovecot.port}", "user": src.user,
                "pass": src.password, "tls": "none"},
        "dst": {"label": "destination", "server": f"127.0.0.1:{dovecot.port}", "user": dst.user,
                "pass": dst.password, "tls": "none"},
    }
    path = write_config(tmp_path, src.address, src.user, src.password, dst.address, dst.user, dst.password,
                        fmt="yaml", extra={"dst": {"tls": "implicit", "server": "127.0.0.1:1"}, "workers": 4},
                        ca_file=dovecot.ca_file)
    loaded = yaml.safe_load(path.read_text())
    assert loaded["dst"]["tls"] == "implicit" and loaded["dst"]["server"] == "127.0.0.1:1"
    assert loaded["src"]["ca_file"] == str(dovecot.ca_file)
    assert loaded["workers"] == 4


def _fetch_folder(client: imapclient.IMAPClient, folder: str) -> list[tuple[bytes, tuple[bytes, ...], object]]:
    client.select_folder(folder, readonly=True)
    data = client.fetch(client.search("ALL"), [b"BODY.PEEK[]", b"FLAGS", b"INTERNALDATE"])
    return [(data[uid][b"BODY[]"], data[uid][b"FLAGS"], data[uid][b"INTERNALDATE"]) for uid in sorted(data)]


def test_seed_tiny_round_trip(server: Dovecot, accounts: AccountFactory) -> None:
    [account] = accounts(1, server=server)
    messages = generate("tiny")
    account.seed(messages)
    sep = server.separator
    client = account.client()
    client.normalise_times = False  # keep the zone: compare instants, not local wall time
    try:
        listed = {name: flags for flags, _d, name in client.list_folders()}
        expected_names = {f.replace("/", sep) for f in folders_of(messages)}
        assert set(listed) == expected_names
        for folder in dict.fromkeys(m.folder for m in messages):
            wanted = [m for m in messages if m.folder == folder]
            got = _fetch_folder(client, folder.replace("/", sep))
            assert len(got) == len(wanted)
            for message, (body, flags, internaldate) in zip(wanted, got):
                assert body == message.body  # byte-identical, 8-bit and CRLF included
                assert set(flags) - {b"\\Recent"} == {f.encode() for f in message.flags}
                assert internaldate == message.internaldate
        # Seeding again into existing folders must not fail ("already exists" ignored).
        account.seed(messages[:1])
        client.unselect_folder()  # RFC 3501 6.3.10: no STATUS on the selected mailbox
        assert client.folder_status("INBOX", [b"MESSAGES"])[b"MESSAGES"] == 153
    finally:
        client.logout()


def test_seed_batches_large_messages(dovecot: Dovecot, accounts: AccountFactory) -> None:
    [account] = accounts(1)
    messages = generate("large", scale=0.03)  # 6 x 2 MB: several 8 MB-bounded APPENDs
    assert len(messages) == 6 and all(len(m.body) > 2_000_000 for m in messages)
    seed_account(dovecot.host, dovecot.tls_port or 0, account.user, account.password, messages,
                 ssl=True, ssl_context=dovecot.ssl_context(), max_batch_bytes=5_000_000)
    client = account.client()
    try:
        status = client.folder_status("INBOX", [b"MESSAGES", b"SIZE"])
        assert status[b"MESSAGES"] == 6
        assert status[b"SIZE"] == sum(len(m.body) for m in messages)
    finally:
        client.logout()


# --------------------------------------------------------------------------- connections and TLS


def test_connections_counts_open_sessions(dovecot: Dovecot, accounts: AccountFactory) -> None:
    [account] = accounts(1)
    assert dovecot.connections(account.user) == 0
    clients = [account.client() for _ in range(3)]
    wait_for(lambda: dovecot.connections(account.user) == 3, timeout_s=5, interval_s=0.02, what="3 open sessions")
    other = dovecot.client("alice")
    assert dovecot.connections(account.user) == 3  # other users are counted separately
    other.logout()
    clients.pop().logout()
    wait_for(lambda: dovecot.connections(account.user) == 2, timeout_s=5, interval_s=0.02, what="2 open sessions")
    for client in clients:
        client.logout()
    wait_for(lambda: dovecot.connections(account.user) == 0, timeout_s=5, interval_s=0.02, what="0 open sessions")


def test_starttls_with_ca_file(dovecot: Dovecot) -> None:
    plain = imapclient.IMAPClient(dovecot.host, dovecot.port, ssl=False, timeout=10)
    assert b"STARTTLS" in plain.capabilities()
    plain.starttls(dovecot.ssl_context())
    plain.login("alice", STATIC_USERS["alice"])
    assert isinstance(plain._imap.sock, ssl.SSLSocket)
    plain.logout()


def test_implicit_tls_with_ca_file(dovecot: Dovecot) -> None:
    assert dovecot.ca_file is not None and dovecot.tls_port is not None
    context = ssl.create_default_context(cafile=str(dovecot.ca_file))
    for host in ("127.0.0.1", "localhost"):  # subjectAltName has both IP and DNS entries
        client = imapclient.IMAPClient(host, dovecot.tls_port, ssl=True, ssl_context=context, timeout=10)
        client.login("bob", STATIC_USERS["bob"])
        client.logout()


def test_tls_fails_verification_without_ca_file(dovecot: Dovecot) -> None:
    assert dovecot.tls_port is not None
    system_trust = ssl.create_default_context()
    with pytest.raises(ssl.SSLCertVerificationError):
        imapclient.IMAPClient(dovecot.host, dovecot.tls_port, ssl=True, ssl_context=system_trust, timeout=10)
    plain = imapclient.IMAPClient(dovecot.host, dovecot.port, ssl=False, timeout=10)
    with pytest.raises(ssl.SSLCertVerificationError):
        plain.starttls(system_trust)


def test_client_helper_tls_modes(dovecot: Dovecot) -> None:
    for mode in (False, True, "starttls"):
        client = dovecot.client("carol", tls=mode)  # type: ignore[arg-type]
        assert isinstance(client._imap.sock, ssl.SSLSocket) == (mode is not False)
        client.logout()


def test_private_instance_cap_no_tls_and_clean_stop(tmp_path: Path) -> None:
    server = Dovecot(tmp_path / "dc", {"x": "y"}, starttls=False, max_userip_connections=2)
    with server:
        assert server.tls_port is None and server.ca_file is None
        first = server.client("x")
        assert b"STARTTLS" not in first.capabilities()
        second = server.client("x")
        # mail_max_userip_connections=2: the third session is refused after LOGIN.
        with pytest.raises(imapclient.exceptions.IMAPClientError):
            third = server.client("x")
            third.list_folders()
        assert server.connections("x") == 2
        pgid = server._master.pid if server._master else 0
        port = server.port
        # no logout: stop() must end sessions whose clients are still connected
        del first, second
    assert not _group_alive(pgid)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_start_failure_reports_log(tmp_path: Path) -> None:
    with Dovecot(tmp_path / "dc", {"x": "y"}, starttls=False) as running:
        clash = Dovecot(tmp_path / "dc", {"x": "y"}, starttls=False)  # same base_dir
        with pytest.raises(DovecotError, match="already running"):
            clash.start(timeout=5)
        assert not clash.running
        running.client("x").logout()  # the first instance is unharmed


@pytest.mark.skipif(os.geteuid() != 0, reason="the chroot is used only when Dovecot runs as root")
def test_doveadm_copies_over_tls_from_an_unchrooted_server(tmp_path: Path) -> None:
    # bench run --tls puts doveadm in the table: its imapc source over implicit TLS.
    # pytest's tmp_path is under a 0700 directory, which unchrooted mail processes cannot enter.
    root = scratch_dir("fastsync-test-")
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        src = stack.enter_context(Dovecot(root / "src", {"s": "s-pw"}, chroot=False))
        dst = stack.enter_context(Dovecot(root / "dst", {"d": "d-pw"}, separator=".", chroot=False))
        client = src.client("s")
        client.append("INBOX", b"Subject: t\r\nMessage-Id: <t@x>\r\n\r\nbody\r\n")
        client.logout()
        assert src.tls_port is not None
        side = Side(src.host, src.tls_port, "s", "s-pw", True, str(src.ca_file))
        invocation = doveadm_invocation(tmp_path, side, dst, "d")
        result = subprocess.run(invocation.argv, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        client = dst.client("d")
        assert client.select_folder("INBOX", readonly=True)[b"EXISTS"] == 1
        client.logout()


def test_batch_harness_tiny(tmp_path: Path) -> None:
    """3 pairs at scale 0.01 with every tool this machine has: figures, verification, the cap held."""
    tools = ["fastsync-batch", "fastsync-loop", "fastsync-parallel", "imapsync"]
    runnable = [tool for tool in tools if installed(tool) is None]
    # No second runs: each pair of fastsync batch --again costs ~2 s even with nothing to copy.
    batch(tools, tmp_path / "out", pairs=3, scale=0.01, cap=4, repeat=1, rerun=False)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    rows = {row["tool"]: row for row in results["summary"]}
    assert set(rows) == set(runnable)
    # Until fastsync batch lands on main it is skipped with a reason, not run.
    assert ("fastsync-batch" in results["skipped"]) == (not fastsync_batch_available())
    for tool, row in rows.items():
        assert row["wall_s_min"] > 0 and row["messages_per_s_min"] > 0 and row["peak_rss_tree_mb"][1] > 0
        assert 1 <= max(row["peak_src_connections"] + row["peak_dst_connections"]) <= 4, tool
        assert not row["password_in_argv"], tool
        assert row["pairs"] == 3
        if tool != "imapsync":  # imapsync skips messages without Message-Id by design
            assert row["verified"] and row["exit_codes"] == [0], (tool, row["verification"])
        assert row["rerun_wall_s"] is None
    table = (tmp_path / "out" / "results.md").read_text()
    assert all(f"| {tool} |" in table for tool in tools)
