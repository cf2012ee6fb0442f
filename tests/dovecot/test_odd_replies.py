"""Servers whose replies are legal, or common, but not Dovecot's; and a folder that cannot be
read, which must stop nothing but itself.

Each server is a real Dovecot behind `bench.harness.replyproxy.EditingProxy`, which edits the lines it
sends (or the commands it receives): lines ending in a bare LF, ``HIGHESTMODSEQ NIL`` for an
empty folder, NAMESPACE extension data, a mechanism announced but refused, a folder that
fails STATUS and EXAMINE.  Dovecot itself sends a folder name such as ``abc[def`` as an atom.
Each test wants an exact copy, a re-run that copies nothing and `check` agreeing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from bench.harness.dovecot import Dovecot
from bench.harness.replyproxy import EditingProxy, Edit, bare_lf, modseq_nil, renamed, status_dropped
from tests.dovecot.accounts import Account, AccountFactory, ConfigFor
from tests.helpers import message, run_cli, summary_line, write_config

# What Dovecot 2.3 announces after login, without LIST-STATUS (RFC 5819): Gmail and
# Microsoft 365 do not have it, and fastsync then asks STATUS folder by folder.
WITHOUT_LIST_STATUS = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT MULTIAPPEND UNSELECT CHILDREN NAMESPACE UIDPLUS "
    "LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH SEARCHRES WITHIN BINARY MOVE LITERAL+ SPECIAL-USE"
)

Contents = dict[str, Counter[tuple[bytes, tuple[bytes, ...]]]]


def contents(account: Account, folders: Sequence[str]) -> Contents:
    """Bytes and flags of every message of *folders* (named, not listed: imapclient's LIST
    parser refuses ``abc[def``)."""
    client = account.client()
    client._imap.debug = 0
    out: Contents = {}
    try:
        for name in folders:
            client.select_folder(name, readonly=True)
            fetched = client.fetch(client.search(), ["BODY.PEEK[]", "FLAGS"]) if client.search() else {}
            out[name] = Counter(
                (data[b"BODY[]"], tuple(sorted(f for f in data[b"FLAGS"] if f != b"\\Recent")))
                for data in fetched.values()
            )
    finally:
        client.logout()
    return out


def proxied_config(tmp_path: Path, src: Account, dst: Account, src_port: int, dst_port: int) -> Path:
    return write_config(tmp_path, f"127.0.0.1:{src_port}", src.user, src.password,
                        f"127.0.0.1:{dst_port}", dst.user, dst.password)


def exact_and_stable(config: Path, src: Account, dst: Account, folders: Sequence[str]) -> None:
    """sync copies everything (exit 0), a re-run copies nothing, check finds no difference."""
    first = run_cli("sync", "-c", config, "-y")
    assert first.returncode == 0, first.stderr
    assert contents(dst, folders) == contents(src, folders)
    again = run_cli("sync", "-c", config, "-y")
    assert again.returncode == 0, again.stderr
    assert " 0 copied, " in summary_line(again.stdout), again.stdout
    checked = run_cli("check", "-c", config)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def seed(src: Account) -> None:
    src.seed([message("INBOX", 1), message("INBOX", 2, flags=("\\Seen",)), message("Work", 3),
              message("Work", 4, message_id=None)])


@pytest.fixture
def edited(tmp_path: Path, accounts: AccountFactory) -> Iterator[tuple[Account, Account, Callable[..., Path]]]:
    """(src, dst, make): make(src_down=, src_up=, dst_down=, dst_up=) puts each side behind an
    `EditingProxy` with those edits and returns the config file."""
    src, dst = accounts(2)
    proxies: list[EditingProxy] = []

    def make(src_down: Edit | None = None, src_up: Edit | None = None, dst_down: Edit | None = None,
             dst_up: Edit | None = None) -> Path:
        src_proxy = EditingProxy(src.server.port, down=src_down, up=src_up).__enter__()
        dst_proxy = EditingProxy(dst.server.port, down=dst_down, up=dst_up).__enter__()
        proxies.extend((src_proxy, dst_proxy))
        return proxied_config(tmp_path, src, dst, src_proxy.port, dst_proxy.port)

    yield src, dst, make
    for proxy in proxies:
        proxy.__exit__(None, None, None)


# --------------------------------------------------------------------------- replies read as they are


def test_lines_ending_in_a_bare_lf(edited: tuple[Account, Account, Callable[..., Path]]) -> None:
    """Every line of both servers ends in LF alone (literals untouched): the login after
    AUTHENTICATE PLAIN succeeds (it was "password refused", exit 4) and the copy is exact."""
    src, dst, make = edited
    seed(src)
    exact_and_stable(make(src_down=bare_lf, dst_down=bare_lf), src, dst, ["INBOX", "Work"])


def test_highestmodseq_nil_for_an_empty_folder(edited: tuple[Account, Account, Callable[..., Path]]) -> None:
    """STATUS of an empty folder says HIGHESTMODSEQ NIL on both sides (it was int(None): exit 70)."""
    src, dst, make = edited
    seed(src)
    for account in (src, dst):
        client = account.client()
        client.create_folder("Empty")
        client.logout()
    exact_and_stable(make(src_down=modseq_nil, dst_down=modseq_nil), src, dst, ["INBOX", "Work", "Empty"])


def test_folder_name_with_a_bracket(tmp_path: Path, accounts: AccountFactory, config_for: ConfigFor) -> None:
    """Dovecot lists ``abc[def`` as an atom (RFC 3501: "[" is an ATOM-CHAR); imapclient's
    parser refused it and the whole account failed as a malformed response."""
    src, dst = accounts(2)
    src.seed([message("INBOX", 1), message("abc[def", 2), message("x]y", 3)])
    exact_and_stable(config_for(src, dst), src, dst, ["INBOX", "abc[def", "x]y"])


def _namespace_extension(line: bytes) -> bytes:
    """RFC 2342's Namespace_Response_Extension after the personal namespace's delimiter."""
    return line.replace(b'* NAMESPACE (("" "/"))', b'* NAMESPACE (("" "/" "X-PARAM" ("FLAG1" "FLAG2")))')


def test_namespace_with_extension_data(edited: tuple[Account, Account, Callable[..., Path]]) -> None:
    src, dst, make = edited
    seed(src)
    exact_and_stable(make(src_down=_namespace_extension, dst_down=_namespace_extension), src, dst, ["INBOX", "Work"])


def test_login_falls_back_when_authenticate_plain_is_refused(
    edited: tuple[Account, Account, Callable[..., Path]],
) -> None:
    """The server announces AUTH=PLAIN but refuses the mechanism ("NO [ALERT] Unsupported
    authentication mechanism": the proxy misspells it on the way): LOGIN is used instead."""
    src, dst, make = edited
    seed(src)
    misspelt = renamed_command(b"AUTHENTICATE PLAIN", b"AUTHENTICATE PLAIX")
    exact_and_stable(make(src_up=misspelt, dst_up=misspelt), src, dst, ["INBOX", "Work"])


def renamed_command(old: bytes, new: bytes) -> Edit:
    def edit(line: bytes) -> bytes:
        return line.replace(b" " + old + b"\r\n", b" " + new + b"\r\n")

    return edit


def test_wrong_password_is_still_refused_once(tmp_path: Path, accounts: AccountFactory) -> None:
    """A refusal of the credentials is not retried with LOGIN: exit 4, the server's words."""
    src, dst = accounts(2)
    with EditingProxy(src.server.port, record=True) as proxy:
        config = write_config(tmp_path, f"127.0.0.1:{proxy.port}", src.user, "not-the-password",
                              dst.address, dst.user, dst.password)
        result = run_cli("show", "-c", config)
    assert result.returncode == 4, result.stderr
    assert "AUTHENTICATIONFAILED" in result.stderr and "not-the-password" not in result.stderr
    sent = b"".join(bytes(r.client_bytes) for r in proxy.recordings)
    assert b" LOGIN " not in sent.upper()


# --------------------------------------------------------------------------- one unusable folder


def unusable(name: bytes) -> tuple[Edit, Edit]:
    """(down, up) edits that make folder *name* fail STATUS and EXAMINE with NO while LIST
    shows it: its LIST-STATUS reply dropped, its name misspelt in every command."""
    return status_dropped(name), renamed(name, name + b"-gone")


def check_unusable_folder(config: Path, src: Account, dst: Account, bad: str, good: Sequence[str]) -> None:
    result = run_cli("sync", "-c", config, "-y")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"'{bad}'" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert contents(dst, good) == contents(src, good)
    checked = run_cli("check", "-c", config)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert f"'{bad}'" in checked.stderr
    rows = [line.split("\t") for line in checked.stdout.splitlines() if "\t" in line]
    assert all(row[-1] == "match" for row in rows if row[0] in good), checked.stdout
    shown = run_cli("show", "-c", config)
    assert any(line.startswith(f"src\t{bad}\terror: ") for line in shown.stdout.splitlines()), shown.stdout
    # The listing is partial: said on stderr, naming the folder, and exit 1 as check's.
    assert shown.returncode == 1, shown.stdout + shown.stderr
    said = [line for line in shown.stderr.splitlines() if line.startswith("error: ")]
    assert len(said) == 1 and f"folder '{bad}'" in said[0] and "not in the listing" in said[0], shown.stderr


def test_a_source_folder_that_fails_status_and_examine(edited: tuple[Account, Account, Callable[..., Path]]) -> None:
    src, dst, make = edited
    seed(src)
    src.seed([message("Other", 5)])
    down, up = unusable(b"Work")
    config = make(src_down=down, src_up=up)
    check_unusable_folder(config, src, dst, "Work", ["INBOX", "Other"])
    # Nothing was created for it on the destination.
    client = dst.client()
    names = [name for _flags, _delimiter, name in client.list_folders()]
    client.logout()
    assert "Work" not in names


@pytest.fixture(scope="module")
def no_list_status(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dovecot]:
    server = Dovecot(tmp_path_factory.mktemp("no-list-status"), {}, "/", imap_capability=WITHOUT_LIST_STATUS)
    server.add_users({f"nls{n}": f"pw-{n}" for n in range(4)})
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_inbox_that_fails_status_without_list_status(tmp_path: Path, no_list_status: Dovecot) -> None:
    """Without LIST-STATUS every folder's STATUS is asked on its own: an INBOX that fails it
    (and EXAMINE) stopped the whole account before anything was copied."""
    src, dst = (Account(no_list_status, user, no_list_status.users[user]) for user in ("nls0", "nls1"))
    seed(src)
    src.seed([message("Other", 5)])
    down, up = unusable(b"INBOX")
    with EditingProxy(no_list_status.port, down=down, up=up) as proxy:
        config = proxied_config(tmp_path, src, dst, proxy.port, no_list_status.port)
        check_unusable_folder(config, src, dst, "INBOX", ["Work", "Other"])


def test_a_destination_folder_that_cannot_be_examined_gets_no_copies(
    edited: tuple[Account, Account, Callable[..., Path]],
) -> None:
    """A destination folder that exists but fails STATUS and EXAMINE is not taken for empty:
    nothing is appended to it (each run would copy everything again), the others are exact."""
    src, dst, make = edited
    seed(src)
    client = dst.client()
    client.create_folder("Work")
    client.logout()
    down, up = unusable(b"Work")
    config = make(dst_down=down, dst_up=up)
    result = run_cli("sync", "-c", config, "-y")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "'Work'" in result.stderr
    assert contents(dst, ["INBOX"]) == contents(src, ["INBOX"])
    assert contents(dst, ["Work"]) == {"Work": Counter()}
