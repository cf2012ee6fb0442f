"""Output for scripts: the exit codes table is the same in the code, the README and the man page.

The --json documents, --log-file events and exit codes of real runs: tests/dovecot/test_json.py.
"""

from __future__ import annotations

import re

from fastsync.records.errors import ExitCode
from tests.helpers import REPO_ROOT


# ----------------------------------------------------------------------------- exit codes


def test_the_exit_code_table_is_the_same_everywhere() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = {int(m) for m in re.findall(r"^\| (\d+) \|", section, re.MULTILINE)}
    assert documented == {int(c) for c in ExitCode}
    man = (REPO_ROOT / "man" / "fastsync.1").read_text()
    exit_status = man.split("\n.SH EXIT STATUS\n", 1)[1].split("\n.SH ", 1)[0]
    for code in ExitCode:
        assert re.search(rf"^\.B {int(code)}$", exit_status, re.MULTILINE), code
