"""The man pages in man/ are current (run `python man/generate.py`) and complete: every flag
of every command in its page, every key the config loader accepts in fastsync.conf(5),
every page installed; and the README's quick start is a configuration file that loads."""

from __future__ import annotations

import configparser
import re
import sys
from pathlib import Path

import pytest

from fastsync import cli
from fastsync.records.errors import ExitCode
from fastsync.settings import config as config_rules
from fastsync.settings.config import parse_config
from fastsync.settings.configfile import read_config_file
from fastsync.settings.options import COMMAND_FLAGS, GLOBAL_FLAGS
from tests.helpers import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "man"))

import generate  # noqa: E402

MAN = REPO_ROOT / "man"


def _without_date(text: str) -> list[str]:
    # The .TH line carries the generation date; everything else must match.
    return [line for line in text.splitlines() if not line.startswith(".TH ")]


def _page(name: str) -> str:
    return (MAN / name).read_text()


def _section(page: str, name: str) -> list[str]:
    """The lines of one .SH section of a man page (empty when there is none)."""
    lines = page.splitlines()
    if f".SH {name}" not in lines:
        return []
    start = lines.index(f".SH {name}") + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith(".SH ")), len(lines))
    return lines[start:end]


def _terms(page: str, section: str) -> list[str]:
    """The terms of the tagged paragraphs (.TP, then .B term) of one section, unescaped."""
    lines = _section(page, section)
    return [lines[i + 1].removeprefix(".B ").replace("\\-", "-")
            for i, line in enumerate(lines[:-1]) if line == ".TP" and lines[i + 1].startswith(".B ")]


def _bold(text: str) -> str:
    """*text* as argparse-manpage and generate.py set an option name: bold, hyphens escaped."""
    return f"\\fB{text.replace('-', chr(92) + '-')}\\fR"


def test_every_page_is_current(tmp_path: Path) -> None:
    written = generate.generate(tmp_path)
    assert sorted(p.name for p in written) == sorted(generate.PAGES)
    for fresh in written:
        committed = MAN / fresh.name
        assert committed.exists(), f"{fresh.name} is not committed; run: python man/generate.py"
        assert _without_date(committed.read_text()) == _without_date(fresh.read_text()), (
            f"{fresh.name} is stale; run: python man/generate.py")


def test_there_is_a_page_per_command_and_no_page_for_a_command_that_is_gone() -> None:
    assert {name for _page_name, name in generate.COMMAND_PAGES} == set(cli.COMMANDS) == set(COMMAND_FLAGS)
    on_disk = {p.name for p in MAN.iterdir() if re.fullmatch(r"[\w.-]+\.[15]", p.name)}
    assert on_disk == set(generate.PAGES)


@pytest.mark.parametrize("command", sorted(COMMAND_FLAGS))
def test_every_flag_of_a_command_is_in_its_page_with_both_variables(command: str) -> None:
    page = _page(f"fastsync-{command}.1")
    options = "\n".join(_section(page, "OPTIONS"))
    for flag in COMMAND_FLAGS[command]:
        for name in flag.names:
            assert _bold(name) in options, (command, name)
        # Each option's description names its variable and imapsync-go's alias.
        assert f"[env: {flag.env} (or {flag.alias})]".replace("-", "\\-") in options.replace("\n", " "), flag.env
    assert page.startswith(f'.TH FASTSYNC\\-{command.upper()} "1" ')
    assert _section(page, "NAME") == [f"fastsync-{command} - {cli.COMMANDS[command][0]}".replace("-", "\\-")]


def test_the_main_page_has_the_global_flags_and_lists_every_command() -> None:
    page = _page("fastsync.1")
    options = "\n".join(_section(page, "OPTIONS"))
    for flag in GLOBAL_FLAGS:
        for name in flag.names:
            assert _bold(name) in options, name
    assert _bold("--version") in options
    # Only the global options: each command's own are on its page.
    assert _bold("--procs") not in options
    commands = "\n".join(_section(page, "COMMANDS"))
    for name in cli.COMMANDS:
        assert f"\\fBfastsync\\-{name}\\fR(1)" in commands
    for heading in ("DESCRIPTION", "OPTIONS", "COMMANDS", "EXIT STATUS", "ENVIRONMENT", "FILES", "SEE ALSO"):
        assert _section(page, heading), heading
    assert page.index(".SH EXIT STATUS") < page.index(".SH ENVIRONMENT") < page.index(".SH FILES")


def test_exit_codes_have_a_section_of_their_own() -> None:
    page = _page("fastsync.1")
    assert _section(page, "COMMENTS") == []  # where argparse-manpage would put the --help epilog
    exit_status = _section(page, "EXIT STATUS")
    # One .TP entry per code, its text on one line (not wrapped mid-entry as in --help).
    codes = [int(line.removeprefix(".B ")) for line in exit_status if re.fullmatch(r"\.B \d+", line)]
    assert codes == sorted(int(code) for code in ExitCode)
    assert exit_status.count(".TP") == len(codes)
    partial = exit_status[exit_status.index(".B 1") + 1]
    assert partial.startswith("partial: ") and partial.endswith("show: a folder could not be read")


@pytest.mark.parametrize(("section", "keys"), [
    ("TOP-LEVEL KEYS", config_rules.TOP_KEYS),
    ("ACCOUNT KEYS", config_rules.SIDE_KEYS),
    ("MAP ENTRIES", config_rules.MAP_KEYS),
    ("RATE LIMITS", config_rules.RATE_KEYS),
])
def test_the_config_page_describes_exactly_the_keys_the_loader_accepts(section: str, keys: tuple[str, ...]) -> None:
    terms = _terms(_page("fastsync.conf.5"), section)
    assert sorted(terms) == sorted(keys)


def test_the_main_page_has_a_configuration_section_with_every_top_level_key() -> None:
    # A reader of fastsync(1) learns every top-level key there (include and exclude too),
    # and where the rest is.
    assert sorted(_terms(_page("fastsync.1"), "CONFIGURATION")) == sorted(config_rules.TOP_KEYS)
    assert "fastsync.conf\\fR(5)" in "\n".join(_section(_page("fastsync.1"), "CONFIGURATION"))


def _literal_blocks(section_text: str) -> list[str]:
    """The literal blocks (four-space indented) of a man/text section, unindented."""
    blocks = re.split(r"\n\s*\n", section_text)
    return ["\n".join(line[4:] for line in block.splitlines())
            for block in blocks if block.strip() and all(line.startswith("    ") for line in block.splitlines())]


def _text_section(page: str, heading: str) -> str:
    text = (MAN / "text" / f"{page}.txt").read_text()
    return text.split(f"# {heading}\n", 1)[1].split("\n# ", 1)[0]


def test_the_config_page_examples_load(tmp_path: Path) -> None:
    # The files they name, so that pass_file and ca_file resolve.
    (tmp_path / "old-password.txt").write_text("secret\n")
    (tmp_path / "private-ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    environ = {"OLD_PASS": "secret", "NEW_PASS": "secret"}
    examples = _literal_blocks(_text_section("fastsync.conf.5", "EXAMPLES"))
    minimal = _literal_blocks(_text_section("fastsync.conf.5", "DESCRIPTION"))[0]
    assert len(examples) == 2 and examples[1].lstrip().startswith("{")
    for name, text in (("minimal.yaml", minimal), ("full.yaml", examples[0]), ("oauth2.json", examples[1])):
        path = tmp_path / name
        path.write_text(text + "\n")
        data, lines = read_config_file(str(path))
        config = parse_config(data, str(path), lines=lines, environ=environ)
        assert config.src.host == "imap.old.example"
    assert config.dst.oauth2_token_cmd and config.rate_limit.max_connections == 8


def test_setup_cfg_installs_every_page() -> None:
    setup = configparser.ConfigParser()
    setup.read(REPO_ROOT / "setup.cfg")
    data_files = setup["options.data_files"]
    installed = {section: data_files[section].split() for section in data_files}
    assert sorted(installed["share/man/man1"]) == sorted(f"man/{p}" for p in generate.PAGES if p.endswith(".1"))
    assert installed["share/man/man5"] == ["man/fastsync.conf.5"]


def test_the_readme_quick_start_config_loads(tmp_path: Path) -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    heredoc = re.search(r"cat > (\S+) <<'EOF'\n(.*?)\nEOF\n", quick_start, re.DOTALL)
    assert heredoc, "the quick start writes its config file with a here-document"
    path = tmp_path / heredoc.group(1)
    path.write_text(heredoc.group(2) + "\n")
    data, lines = read_config_file(str(path))
    config = parse_config(data, str(path), lines=lines, environ={"OLD_PASS": "a", "NEW_PASS": "b"})
    assert config.src.tls == config.dst.tls == "implicit"
    # The commands it runs are those of the parser, with the file it wrote.
    commands = re.findall(r"^fastsync (.*?)(?:\s+#.*)?$", quick_start, re.MULTILINE)
    assert commands
    for command in commands:
        args = command.split()
        assert args[:2] == ["-c", heredoc.group(1)]
        cli.build_parser().parse_args(args)
