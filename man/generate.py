"""Regenerate man/fastsync.1 from the argument parser: `python man/generate.py`.

The page is built by argparse-manpage from `fastsync.cli.build_parser()` plus the
hand-written sections in man/sections.txt (environment, examples); the exit codes and
the config format come from the parser's epilog.  tests/test_manpage.py fails when the
checked-in page differs from what this script writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from argparse_manpage.cli import main as argparse_manpage

from fastsync import __version__

HERE = Path(__file__).resolve().parent


def generate(output: Path) -> None:
    argv = [
        "--module", "fastsync.cli",
        "--function", "build_parser",
        "--project-name", "fastsync",
        "--prog", "fastsync",
        "--version", __version__,
        "--description", "mirror folders from one IMAP account to another",
        "--author", "fastsync contributors",
        "--manual-title", "fastsync manual",
        "--include", str(HERE / "sections.txt"),
        "--output", str(output),
    ]
    saved = sys.argv
    sys.argv = ["argparse-manpage", *argv]
    try:
        argparse_manpage()
    finally:
        sys.argv = saved


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "fastsync.1")
