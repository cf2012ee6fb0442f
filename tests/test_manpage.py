"""The checked-in man page is what the parser generates (run `python man/generate.py`)."""

from __future__ import annotations

import sys
from pathlib import Path

from helpers import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "man"))

from generate import generate


def _without_date(text: str) -> list[str]:
    # The .TH line carries the generation date; everything else must match.
    return [line for line in text.splitlines() if not line.startswith(".TH ")]


def test_man_page_is_fresh(tmp_path: Path) -> None:
    fresh = tmp_path / "fastsync.1"
    generate(fresh)
    checked_in = (REPO_ROOT / "man" / "fastsync.1").read_text()
    assert _without_date(checked_in) == _without_date(fresh.read_text()), "run: python man/generate.py"
    for needle in ("FASTSYNC_WORKERS (or IMAPSYNC_WORKERS)", "exit codes", "pass_cmd", "ENVIRONMENT", "EXAMPLES",
                   "[-c PATH] COMMAND"):
        assert needle in checked_in
