"""The distribution's name: "fastsync" on PyPI is an unrelated project, so nothing may tell
anyone to install it by that name (the command and the import name stay fastsync)."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# `pip install fastsync`, `pip install 'fastsync[cluster]'`, `pip install -U fastsync==1.0`...
INSTALL_BY_NAME = re.compile(r"pip3? install(?:[ \t]+-\S+)*[ \t]+['\"]?fastsync(?![\w-])")


def _documents() -> list[Path]:
    found = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "bench" / "README.md"]
    found += sorted((ROOT / "man").glob("fastsync*.[15]")) + sorted((ROOT / "man" / "text").glob("*.txt"))
    found += sorted((ROOT / "fastsync").rglob("*.py"))
    return found


def test_the_distribution_is_not_named_like_the_unrelated_project() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    assert config["metadata"]["name"] == "fastsync-imap"
    # The command keeps its name.
    assert config["options.entry_points"]["console_scripts"].strip().startswith("fastsync =")


@pytest.mark.parametrize("line, bad", [
    ("pip install 'fastsync[cluster]'", True),
    ("pip install fastsync", True),
    ("pip install -U fastsync==1.0", True),
    ("pip install '.[cluster]'", False),
    ("pip install -e '.[dev]'", False),
    ("pip install fastsync-imap", False),
    ("the fastsync command", False),
])
def test_the_pattern(line: str, bad: bool) -> None:
    assert bool(INSTALL_BY_NAME.search(line)) is bad


def test_no_document_installs_fastsync_by_name() -> None:
    offending = [
        f"{path.relative_to(ROOT)}: {match.group(0)}"
        for path in _documents()
        for match in INSTALL_BY_NAME.finditer(path.read_text(encoding="utf-8"))
    ]
    assert offending == []
