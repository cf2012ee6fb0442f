"""Accounts on the test servers and what reads them: `Account` (a user of one of the session
Dovecots that tests/dovecot/conftest.py starts), the types of the ``accounts`` and
``config_for`` fixtures, and snapshots and counts of an account's mail over IMAP.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import imapclient

from bench.harness.corpus import Message, seed_account
from bench.harness.dovecot import Dovecot

# Users every session server knows from the start.
STATIC_USERS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}


@dataclass(frozen=True)
class Account:
    """A user on one of the test servers."""

    server: Dovecot
    user: str
    password: str

    @property
    def address(self) -> str:
        """``host:port`` of the plain IMAP port, as fastsync's config ``server`` key wants it."""
        return f"{self.server.host}:{self.server.port}"

    def client(self, tls: bool | str = False) -> imapclient.IMAPClient:
        return self.server.client(self.user, tls=tls)  # type: ignore[arg-type]

    def seed(self, messages: Sequence[Message]) -> None:
        seed_account(
            self.server.host, self.server.port, self.user, self.password, messages, separator=self.server.separator
        )


# accounts(count=2, server=None) -> never-used accounts
AccountFactory = Callable[..., list[Account]]
# config_for(src_account, dst_account, fmt="json", extra=None, **kw) -> path of a config file
ConfigFor = Callable[..., Path]


def message_count(account: Account) -> int:
    """Messages in all selectable folders of *account* (STATUS MESSAGES)."""
    client = account.client()
    try:
        return sum(
            client.folder_status(name, ["MESSAGES"])[b"MESSAGES"]
            for flags, _d, name in client.list_folders()
            if b"\\Noselect" not in flags
        )
    finally:
        client.logout()


Snapshot = dict[str, Counter[tuple[bytes, tuple[bytes, ...], str]]]


def snapshot(account: Account, delimiter_to: str = "/") -> Snapshot:
    """Every message of every selectable folder: (bytes, flags without \\Recent, internal date).

    Folder names are rewritten with *delimiter_to* so two servers with different
    hierarchy separators compare directly.
    """
    client = account.client()
    client._imap.debug = 0  # imaplib would format the repr of every body (slow)
    client.normalise_times = False
    out: Snapshot = {}
    try:
        for flags, delimiter, name in client.list_folders():
            if b"\\Noselect" in flags:
                continue
            client.select_folder(name, readonly=True)
            uids = client.search()
            messages: Counter[tuple[bytes, tuple[bytes, ...], str]] = Counter()
            for start in range(0, len(uids), 500):
                reply = client.fetch(uids[start : start + 500], ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"])
                for data in reply.values():
                    flags_kept = tuple(sorted(f for f in data[b"FLAGS"] if f != b"\\Recent"))
                    messages[(data[b"BODY[]"], flags_kept, data[b"INTERNALDATE"].isoformat())] += 1
            key = name.replace(delimiter.decode(), delimiter_to) if delimiter else name
            out[key] = messages
    finally:
        client.logout()
    return out
