"""Pytest fixtures: private Dovecot servers, throwaway accounts and fastsync config files.

Session-wide servers, each started by the first test that asks for it and kept for
the rest of the session: ``dovecot`` (hierarchy separator "/"), ``dovecot_dot``
(separator "."), ``dovecot_prefixed`` (separator "." and every personal folder under
the namespace prefix "INBOX.", RFC 2342), ``dovecot_lax`` (separator "/", accepts
folder names that the others refuse, such as "~x") and ``dovecot_gmail`` (separator "/",
Gmail's virtual All Mail, Starred and Important folders over a hidden archive).  Tests never share mail: the
``accounts`` fixture hands out users that no other test has used.

Every test that needs a running Dovecot carries the ``dovecot`` marker: added below to
tests that use a server fixture (`SERVER_FIXTURES`), written out on tests that start a
server themselves; an unmarked test that starts one fails.  Run the two halves with:

    python -m pytest -m "not dovecot" -q   # unit tests only: seconds, no server started
    python -m pytest -m dovecot -q         # the tests against real Dovecot servers
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imapclient
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # make `bench` importable without installing it
    sys.path.insert(0, str(REPO_ROOT))

from bench.harness.corpus import Message, seed_account
from bench.harness.dovecot import Dovecot

# Users every session server knows from the start.
STATIC_USERS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}

# Fresh users are provisioned in batches: Dovecot re-reads the passwd-file at most once
# a second, so Dovecot.add_users waits up to 1 s per call; a batch pays that once.
_POOL_BATCH = 40
_counter = itertools.count(1)


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


AccountFactory = Callable[..., list[Account]]
# config_for(src_account, dst_account, fmt="json", extra=None, **kw) -> path of a config file
ConfigFor = Callable[..., Path]


@pytest.fixture
def accounts(dovecot: Dovecot) -> AccountFactory:
    """Factory of never-used accounts: ``src, dst = accounts(2)``, ``[a] = accounts(1, server=dovecot_dot)``."""

    def make(count: int = 2, server: Dovecot | None = None) -> list[Account]:
        pool = _pool(server or dovecot)
        return [pool.take() for _ in range(count)]

    return make


def write_config(
    tmp_path: Path,
    src_server: str,
    src_user: str,
    src_pass: str,
    dst_server: str,
    dst_user: str,
    dst_pass: str,
    fmt: str = "json",
    extra: dict[str, Any] | None = None,
    *,
    src_tls: str = "none",
    dst_tls: str = "none",
    ca_file: Path | str | None = None,
    name: str = "fastsync",
) -> Path:
    """Write a fastsync configuration file and return its path.

    Produces ``{"src": {"label": "source", "server": "host:port", "user", "pass", "tls"},
    "dst": {"label": "destination", ...}}``.  ``tls`` is "none" by default because the
    tests use the plain port; ``ca_file`` is added to both sides when given.  ``extra``
    is merged in last: nested dicts under "src"/"dst" update those sides, other keys are
    added at the top level (a value of None removes the key).
    """
    if fmt not in ("json", "yaml"):
        raise ValueError("fmt must be 'json' or 'yaml'")
    config: dict[str, Any] = {
        "src": {"label": "source", "server": src_server, "user": src_user, "pass": src_pass, "tls": src_tls},
        "dst": {"label": "destination", "server": dst_server, "user": dst_user, "pass": dst_pass, "tls": dst_tls},
    }
    if ca_file is not None:
        config["src"]["ca_file"] = config["dst"]["ca_file"] = str(ca_file)
    for key, value in (extra or {}).items():
        if key in ("src", "dst") and isinstance(value, dict):
            for side_key, side_value in value.items():
                if side_value is None:
                    config[key].pop(side_key, None)
                else:
                    config[key][side_key] = side_value
        elif value is None:
            config.pop(key, None)
        else:
            config[key] = value
    path = tmp_path / f"{name}.{fmt}"
    if fmt == "json":
        path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    else:
        import yaml

        path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def config_for(tmp_path: Path) -> ConfigFor:
    """``config_for(src_account, dst_account, fmt="json", extra=None, **kw)`` -> path of a config file."""

    def make(src: Account, dst: Account, fmt: str = "json", extra: dict[str, Any] | None = None, **kw: Any) -> Path:
        return write_config(
            tmp_path, src.address, src.user, src.password, dst.address, dst.user, dst.password, fmt, extra, **kw
        )

    return make


# --------------------------------------------------------------------------- the dovecot marker

# Fixtures that start a server or hand out accounts on one (config_for takes such accounts).
# `server` (test_harness.py) and `oauth` (test_security.py) start or fetch servers of their own.
SERVER_FIXTURES = frozenset(
    {"dovecot", "dovecot_dot", "dovecot_prefixed", "dovecot_lax", "dovecot_gmail", "accounts", "config_for", "server",
     "oauth"}
)


@pytest.hookimpl(tryfirst=True)  # before -m selects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.dovecot)


# Dovecot instances started so far in this session, counted to catch an unmarked test
# that starts one: `-m "not dovecot"` would start servers without anyone noticing.
_starts = 0
_starts_before = pytest.StashKey[int]()
_dovecot_start = Dovecot.start


def _counted_start(self: Dovecot, *args: Any, **kwargs: Any) -> None:
    global _starts
    _starts += 1
    _dovecot_start(self, *args, **kwargs)


Dovecot.start = _counted_start  # type: ignore[method-assign]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    item.stash[_starts_before] = _starts
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    result = yield
    if _starts > item.stash.get(_starts_before, _starts) and item.get_closest_marker("dovecot") is None:
        pytest.fail(f"{item.nodeid} starts a Dovecot server: mark it @pytest.mark.dovecot", pytrace=False)
    return result
