"""Pytest set-up shared by both halves of the suite.

``tests/unit`` holds the tests that need no server: pure logic, seconds in all.
``tests/dovecot`` holds the tests against private Dovecot servers on 127.0.0.1, whose
fixtures live in ``tests/dovecot/conftest.py``.  Every test under ``tests/dovecot``
carries the ``dovecot`` marker (added here), and a test anywhere else that starts a
Dovecot fails, so the unit half stays fast and never needs Dovecot installed.  Run the
halves with:

    python -m pytest -q tests/unit      # the same as -m "not dovecot"
    python -m pytest -q tests/dovecot   # the same as -m dovecot

This file does not import the Dovecot launcher (`bench.harness.dovecot`): it notices a
start from the process the launcher spawns.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # make `bench` and `tests` importable without installing them
    sys.path.insert(0, str(REPO_ROOT))

DOVECOT_TESTS = Path(__file__).resolve().parent / "dovecot"


@pytest.hookimpl(tryfirst=True)  # before -m selects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(DOVECOT_TESTS):
            item.add_marker(pytest.mark.dovecot)


# Dovecot masters started by this process so far, counted to catch a test outside
# tests/dovecot that starts one.  An audit hook (PEP 578) sees every subprocess.Popen,
# whoever imported the launcher and whenever.
_starts = 0
_starts_before = pytest.StashKey[int]()


def _count_dovecot_starts(event: str, args: tuple[Any, ...]) -> None:
    global _starts
    if event != "subprocess.Popen":
        return
    executable, argv = args[0], args[1]
    program = executable or (argv if isinstance(argv, (str, bytes)) else argv[0])
    if os.path.basename(os.fsdecode(program)) == "dovecot":
        _starts += 1


sys.addaudithook(_count_dovecot_starts)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    item.stash[_starts_before] = _starts
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    result = yield
    if _starts > item.stash.get(_starts_before, _starts) and item.get_closest_marker("dovecot") is None:
        pytest.fail(f"{item.nodeid} starts a Dovecot server: it belongs in tests/dovecot", pytrace=False)
    return result
