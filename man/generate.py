"""Regenerate the man pages in man/ from the argument parser: `python man/generate.py`.

Pages, the way git and mbsync ship them: fastsync(1) (overview, global options, exit
codes, environment, files), one page per command (fastsync-sync(1), fastsync-check(1),
fastsync-show(1), fastsync-batch(1)) and fastsync.conf(5) for the configuration file.

What the parser knows is taken from it: each command's one-line summary and description
(`cli.COMMANDS`), its options with their environment variables (`build_parser()`,
rendered by argparse-manpage), the exit codes (`cli.EXIT_CODES_HELP`).  Everything else
is hand-written in man/text/PAGE.txt, in a small markup this script turns into roff, so
that nobody has to escape a hyphen by hand:

    # HEADING          a section (.SH); "## Heading" a subsection (.SS)
    a paragraph        lines up to a blank line; `code` is set in bold, and a page
                       reference such as fastsync-sync(1) is set as one
    - an item          a bulleted paragraph (continuation lines indented)
    term               a tagged paragraph (.TP): the term in bold, then its text
    : its text
        indented       four spaces: a literal block (.nf), kept line for line

tests/unit/test_manpage.py fails when a committed page differs from what this script writes
(the date in the .TH line aside), when a flag of a command is missing from its page, and
when fastsync.conf(5) does not list exactly the keys the loader accepts.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from argparse_manpage.compat import get_reproducible_date
from argparse_manpage.manpage import Manpage

from fastsync import __version__, cli

HERE = Path(__file__).resolve().parent
TEXT = HERE / "text"
MANUAL = "fastsync manual"
AUTHOR = "fastsync contributors"

# Every page this script writes, as (file name, command or None).
COMMAND_PAGES = tuple((f"fastsync-{name}.1", name) for name in cli.COMMANDS)
PAGES = ("fastsync.1", *(page for page, _ in COMMAND_PAGES), "fastsync.conf.5")

# An entry of an epilog block: "  0    success..."; more deeply indented lines continue it.
_ENTRY = re.compile(r"^  (\S.*?):?\s{2,}(\S.*)$")
_CONTINUATION = re.compile(r"^\s{3,}(\S.*)$")
_PAGE_REFERENCE = re.compile(r"\b(fastsync(?:\\-[a-z]+)?(?:\.conf)?|diff|cmp|flock)\(([0-9])\)")


# --------------------------------------------------------------------------- markup -> roff


def escape(text: str) -> str:
    """Plain text as roff: backslashes and hyphens escaped, non-ASCII as named code points."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "".join(ch if ord(ch) < 128 else f"\\[u{ord(ch):04X}]" for ch in text)


def inline(text: str) -> str:
    """Prose (one line or several): escaped, `code` in bold, page references as man pages
    set them, and no line taken for a request."""
    parts = text.split("`")
    if len(parts) % 2 == 0:
        raise ValueError(f"unbalanced ` in {text!r}")
    out = "".join(escape(part) if i % 2 == 0 else f"\\%\\fB{escape(part)}\\fR" for i, part in enumerate(parts))
    out = _PAGE_REFERENCE.sub(r"\\%\\fB\1\\fR(\2)", out)
    return "\n".join(_guarded(line) for line in out.split("\n"))


def _guarded(line: str) -> str:
    # A line starting with . or ' would be read as a request.
    return "\\&" + line if line.startswith((".", "'")) else line


def render(markup: str) -> dict[str, str]:
    """The sections of one page's markup: {HEADING: roff}, in the order written."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for block in re.split(r"\n\s*\n", markup.strip("\n")):
        lines = block.split("\n")
        if lines[0].startswith("# "):
            current = sections.setdefault(lines[0][2:].strip(), [])
            lines = lines[1:]
            if not lines:
                continue
        if current is None:
            raise ValueError(f"text before the first '# HEADING': {lines[0]!r}")
        current.extend(_block(lines))
    return {heading: "\n".join(body).strip("\n") for heading, body in sections.items()}


def _block(lines: list[str]) -> list[str]:
    if lines[0].startswith("## "):
        return [f".SS {escape(lines[0][3:].strip())}", *(_block(lines[1:]) if len(lines) > 1 else [])]
    if all(line.startswith("    ") for line in lines):
        return [".PP", ".RS 4", ".nf", *(_guarded(escape(line[4:])) for line in lines), ".fi", ".RE"]
    if lines[0].startswith("- "):
        return [".IP \\(bu 2", _prose([lines[0][2:], *lines[1:]])]
    if len(lines) > 1 and lines[1].startswith(": "):
        return [".TP", f".B {inline(lines[0].strip())}", _prose([lines[1][2:], *lines[2:]])]
    return [".PP", _prose(lines)]


def _prose(lines: list[str]) -> str:
    return inline("\n".join(line.strip() for line in lines))


def page_text(page: str) -> dict[str, str]:
    return render((TEXT / f"{page}.txt").read_text())


# --------------------------------------------------------------------------- from the parser


def entries(block: str) -> list[tuple[str, str]]:
    """(term, text) of each entry of a help block (`cli.EXIT_CODES_HELP`)."""
    found: list[tuple[str, str]] = []
    for line in block.splitlines():
        entry, more = _ENTRY.match(line), _CONTINUATION.match(line)
        if entry:
            found.append((entry.group(1), entry.group(2)))
        elif more and found:
            term, text = found[-1]
            found[-1] = (term, f"{text} {more.group(1)}")
    return found


def exit_status() -> str:
    """One .TP entry per exit code, its text on one line (not wrapped mid-entry as in --help)."""
    out: list[str] = []
    for code, text in entries(cli.EXIT_CODES_HELP):
        out += [".TP", f".B {code}", inline(text)]
    return "\n".join(out)


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    """Each command's own parser, as `build_parser()` builds it."""
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(commands.choices)


def _manpage(parser: argparse.ArgumentParser, title: str, section: int, summary: str,
             synopsis: str, description: str, sections: dict[str, str]) -> str:
    """argparse-manpage's page for *parser* (its OPTIONS), with our synopsis, description
    and further sections."""
    parser.prog = title
    parser.description = None
    parser.epilog = None
    manpage = Manpage(parser, {
        "project_name": "fastsync", "version": __version__, "manual_title": MANUAL,
        "manual_section": section, "description": summary, "date": get_reproducible_date(),
    })
    manpage.add_section("synopsis", "=", synopsis)
    manpage.add_section("description", "=", description)
    for heading, body in sections.items():
        manpage.add_section(heading, ">", body)
    manpage.add_section("author", "=", AUTHOR)
    return _unhyphenated(str(manpage))


def _unhyphenated(page: str) -> str:
    """*page* without hyphenation and with a ragged right margin, as git's pages are set:
    option names and variables (FASTSYNC_LOG_FILE) must not be split across lines."""
    head, rest = page.split("\n", 1)
    assert head.startswith(".TH "), head
    return f"{head}\n.nh\n.ad l\n{rest}"


def main_page() -> str:
    """fastsync(1): the global options, the commands, and what every command shares."""
    parser = cli.build_parser()
    # The commands get pages of their own: here they are a list (COMMANDS), not the whole
    # of each command's options as argparse-manpage would print them.
    for group in parser._action_groups:
        group._group_actions = [a for a in group._group_actions if not isinstance(a, argparse._SubParsersAction)]
    text = page_text("fastsync.1")
    commands = []
    for name, (summary, _description) in cli.COMMANDS.items():
        commands += [".TP", f"\\fBfastsync\\-{name}\\fR(1)", inline(summary)]
    sections = {"COMMANDS": "\n".join(commands)}
    sections.update((heading, body) for heading, body in text.items() if heading != "DESCRIPTION")
    sections = _with_exit_status(sections, text)
    synopsis = ".B fastsync\n[\\fB\\-\\-version\\fR] [\\fB\\-c\\fR \\fIPATH\\fR] \\fICOMMAND\\fR [\\fIOPTIONS\\fR]"
    description = inline(parser.description or "") + "\n" + text["DESCRIPTION"]
    return _manpage(parser, "fastsync", 1, "mirror folders from one IMAP account to another",
                    synopsis, description, sections)


def _with_exit_status(sections: dict[str, str], text: dict[str, str]) -> dict[str, str]:
    """*sections* with EXIT STATUS (the codes, then the text's own paragraphs) before ENVIRONMENT."""
    out: dict[str, str] = {}
    for heading, body in sections.items():
        if heading == "ENVIRONMENT":
            out["EXIT STATUS"] = "\n".join(filter(None, [exit_status(), text.get("EXIT STATUS", "")]))
        if heading != "EXIT STATUS":
            out[heading] = body
    return out


def command_page(name: str) -> str:
    """fastsync-NAME(1): the command's synopsis, description and options, and its own sections."""
    parser = command_parsers()[name]
    summary, description = cli.COMMANDS[name]
    text = page_text(f"fastsync-{name}.1")
    synopsis = text.pop("SYNOPSIS")
    intro = inline(description) + ("\n" + text.pop("DESCRIPTION") if "DESCRIPTION" in text else "")
    return _manpage(parser, f"fastsync-{name}", 1, summary, synopsis, intro, text)


def conf_page() -> str:
    """fastsync.conf(5): hand-written; tests/unit/test_manpage.py checks it against the loader."""
    text = page_text("fastsync.conf.5")
    lines = [
        f'.TH FASTSYNC.CONF "5" "{get_reproducible_date()}" "fastsync {escape(__version__)}" "{MANUAL}"',
        ".SH NAME",
        "fastsync.conf \\- the configuration file of fastsync: two IMAP accounts and what to copy",
    ]
    for heading, body in text.items():
        lines += [f".SH {heading}", body]
    lines += [".SH AUTHOR", ".nf", AUTHOR, ".fi"]
    return _unhyphenated("\n".join(lines) + "\n")


def generate(directory: Path = HERE) -> list[Path]:
    """Write every page into *directory*; returns their paths."""
    written = []
    pages = {"fastsync.1": main_page(), "fastsync.conf.5": conf_page()}
    pages.update({page: command_page(name) for page, name in COMMAND_PAGES})
    for page in PAGES:
        path = directory / page
        path.write_text(pages[page])
        written.append(path)
    return written


if __name__ == "__main__":
    for path in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(path)
