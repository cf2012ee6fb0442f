"""Fixtures of the tests against real servers: private Dovecot servers, throwaway accounts and
fastsync config files for them.

Session-wide servers, each started by the first test that asks for it and kept for
the rest of the session: ``dovecot`` (hierarchy separator "/"), ``dovecot_dot``
(separator "."), ``dovecot_prefixed`` (separator "." and every personal folder under
the namespace prefix "INBOX.", RFC 2342), ``dovecot_lax`` (separator "/", accepts
folder names that the others refuse, such as "~x") and ``dovecot_gmail`` (separator "/",
Gmail's virtual All Mail, Starred and Important folders over a hidden archive).  Tests never share mail: the
``accounts`` fixture hands out users that no other test has used.

Every test in this directory carries the ``dovecot`` marker (tests/conftest.py adds it).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.harness.dovecot import Dovecot
from tests.dovecot.accounts import STATIC_USERS, Account, AccountFactory, ConfigFor
from tests.helpers import write_config

# Fresh users are provisioned in batches: Dovecot re-reads the passwd-file at most once
# a second, so Dovecot.add_users waits up to 1 s per call; a batch pays that once.
_POOL_BATCH = 40
_counter = itertools.count(1)


class _Pool:
    """Unused users of one server, topped up in batches."""

    def __init__(self, server: Dovecot) -> None:
        self.server = server
        # Users provisioned before start() (see _server) are still unused.
        self.free: list[str] = [user for user in server.users if user not in STATIC_USERS]

    def refill(self) -> None:
        fresh = {f"u{next(_counter)}": f"pw-{n}" for n in range(_POOL_BATCH)}
        self.server.add_users(fresh)
        self.free.extend(fresh)

    def take(self) -> Account:
        if not self.free:
            self.refill()
        user = self.free.pop(0)
        return Account(self.server, user, self.server.users[user])


def _server(
    tmp_path_factory: pytest.TempPathFactory, name: str, separator: str, **options: Any
) -> Iterator[Dovecot]:
    server = Dovecot(tmp_path_factory.mktemp(name), dict(STATIC_USERS), separator=separator, **options)
    # Provision the first batch of throwaway users before starting: no reload wait.
    server.add_users({f"u{next(_counter)}": f"pw-{n}" for n in range(_POOL_BATCH)})
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dovecot]:
    """A Dovecot with hierarchy separator "/" for the whole session."""
    yield from _server(tmp_path_factory, "dovecot", "/")


@pytest.fixture(scope="session")
def dovecot_dot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dovecot]:
    """A Dovecot with hierarchy separator "." for the whole session."""
    yield from _server(tmp_path_factory, "dovecot-dot", ".")


@pytest.fixture(scope="session")
def dovecot_prefixed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dovecot]:
    """A Dovecot whose personal namespace has prefix "INBOX." and separator ".": "INBOX.Sent"."""
    yield from _server(tmp_path_factory, "dovecot-prefixed", ".", namespace_prefix="INBOX.")


@pytest.fixture(scope="session")
def dovecot_gmail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dovecot]:
    """A Gmail-like Dovecot (separator "/"): "[Gmail]/All Mail" (\\All) shows every message,
    archived ones (in `bench.harness.dovecot.GMAIL_ARCHIVE`, not listed) included; "[Gmail]/Starred"
    (\\Flagged) and "[Gmail]/Important" (\\Important) are views.  Seed labelled messages into
    ordinary folders, archived ones into GMAIL_ARCHIVE."""
    yield from _server(tmp_path_factory, "dovecot-gmail", "/", gmail_like=True)


@pytest.fixture(scope="session")
def dovecot_lax(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dovecot]:
    """A Dovecot with separator "/" that accepts names the others refuse to create ("~x")."""
    yield from _server(tmp_path_factory, "dovecot-lax", "/", validate_fs_names=False)


_pools: dict[int, _Pool] = {}


def _pool(server: Dovecot) -> _Pool:
    pool = _pools.get(id(server))
    if pool is None or pool.server is not server:
        pool = _pools[id(server)] = _Pool(server)
    return pool


@pytest.fixture
def accounts(dovecot: Dovecot) -> AccountFactory:
    """Factory of never-used accounts: ``src, dst = accounts(2)``, ``[a] = accounts(1, server=dovecot_dot)``."""

    def make(count: int = 2, server: Dovecot | None = None) -> list[Account]:
        pool = _pool(server or dovecot)
        return [pool.take() for _ in range(count)]

    return make


@pytest.fixture
def config_for(tmp_path: Path) -> ConfigFor:
    """``config_for(src_account, dst_account, fmt="json", extra=None, **kw)`` -> path of a config file."""

    def make(src: Account, dst: Account, fmt: str = "json", extra: dict[str, Any] | None = None, **kw: Any) -> Path:
        return write_config(
            tmp_path, src.address, src.user, src.password, dst.address, dst.user, dst.password, fmt, extra, **kw
        )

    return make
