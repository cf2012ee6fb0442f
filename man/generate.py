"""Regenerate man/fastsync.1 from the argument parser: `python man/generate.py`.

The page is built by argparse-manpage from `fastsync.cli.build_parser()` plus the
hand-written sections in man/sections.txt (environment, examples...).  The exit codes
and the config format, which `--help` shows in the parser's epilog, get sections of
their own here (EXIT STATUS and CONFIGURATION, one .TP entry per code or key) instead of
argparse-manpage's COMMENTS, which would print the epilog as one paragraph, wrapped
mid-entry.  tests/test_manpage.py fails when the checked-in page differs from what this
script writes.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

from argparse_manpage.cli import main as argparse_manpage

from fastsync import __version__, cli

HERE = Path(__file__).resolve().parent

# An entry of an epilog block: "  0    success..." or "  src / dst:   label, ...";
# more deeply indented lines continue it.
_ENTRY = re.compile(r"^  (\S.*?):?\s{2,}(\S.*)$")
_CONTINUATION = re.compile(r"^\s{3,}(\S.*)$")


def man_parser() -> argparse.ArgumentParser:
    """The command's parser without its epilog, which `sections` renders instead."""
    parser = cli.build_parser()
    parser.epilog = None
    return parser


def roff(text: str) -> str:
    """Text as roff: backslashes and hyphens escaped, no line taken for a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text.startswith((".", "'")) else text


def entries(block: str) -> list[tuple[str, str]]:
    """(term, text) of each entry of a help block (`cli.EXIT_CODES_HELP`, `cli.CONFIG_HELP`)."""
    found: list[tuple[str, str]] = []
    for line in block.splitlines():
        entry, more = _ENTRY.match(line), _CONTINUATION.match(line)
        if entry:
            found.append((entry.group(1), entry.group(2)))
        elif more and found:
            term, text = found[-1]
            found[-1] = (term, f"{text} {more.group(1)}")
    return found


def sections() -> str:
    """The EXIT STATUS and CONFIGURATION sections, in argparse-manpage's include syntax."""
    out = ["[>configuration]"]
    out.append(roff("A JSON or YAML file, chosen by its extension; the keys are those of imapsync-go:"))
    for term, text in entries(cli.CONFIG_HELP):
        out += [".TP", f".B {roff(term)}", roff(text)]
    out += ["", "[>exit status]"]
    for code, text in entries(cli.EXIT_CODES_HELP):
        out += [".TP", f".B {code}", roff(text)]
    return "\n".join(out) + "\n\n"


def generate(output: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        include = Path(tmp) / "sections.txt"
        include.write_text(sections() + (HERE / "sections.txt").read_text())
        argv = [
            "--pyfile", str(Path(__file__).resolve()),
            "--function", "man_parser",
            "--project-name", "fastsync",
            "--prog", "fastsync",
            "--version", __version__,
            "--description", "mirror folders from one IMAP account to another",
            "--author", "fastsync contributors",
            "--manual-title", "fastsync manual",
            "--include", str(include),
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
