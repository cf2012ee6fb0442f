"""The checked-in man page is what the parser generates (run `python man/generate.py`)."""

from __future__ import annotations

import sys
from pathlib import Path

from helpers import REPO_ROOT

from fastsync.records.errors import ExitCode

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
    for needle in ("FASTSYNC_WORKERS (or IMAPSYNC_WORKERS)", "pass_cmd", "ENVIRONMENT", "EXAMPLES",
                   "FASTSYNC_DELETE_DEST", "[-c PATH] COMMAND"):
        assert needle in checked_in


def _section(page: str, name: str) -> list[str]:
    """The lines of one .SH section of a man page (empty when there is none)."""
    lines = page.splitlines()
    if f".SH {name}" not in lines:
        return []
    start = lines.index(f".SH {name}") + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith(".SH ")), len(lines))
    return lines[start:end]


def test_exit_codes_and_the_config_format_have_sections_of_their_own() -> None:
    page = (REPO_ROOT / "man" / "fastsync.1").read_text()
    assert _section(page, "COMMENTS") == []  # where argparse-manpage would put the --help epilog
    exit_status = _section(page, "EXIT STATUS")
    # One .TP entry per code, its text on one line (not wrapped mid-entry as in --help).
    codes = [int(line.removeprefix(".B ")) for line in exit_status if line.startswith(".B ")]
    assert codes == sorted(int(code) for code in ExitCode)
    assert exit_status.count(".TP") == len(codes)
    partial = exit_status[exit_status.index(".B 1") + 1]
    assert partial.startswith("partial: ") and partial.endswith("check: the accounts differ (or a folder could not be read)")
    configuration = _section(page, "CONFIGURATION")
    keys = [line.removeprefix(".B ") for line in configuration if line.startswith(".B ")]
    assert keys == ["src / dst", "map", "rate_limit"]
    assert page.index(".SH CONFIGURATION") < page.index(".SH EXIT STATUS") < page.index(".SH ENVIRONMENT")
