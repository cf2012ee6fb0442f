"""The report page of a batch, read in a real browser: Chromium from the distribution's
packages (``.ci/setup`` installs it), driven headless by Selenium through Debian's
chromedriver; nothing is downloaded.

Five account pairs; the destination (a Dovecot behind `RefusingProxy`) refuses two
messages of one pair with words of its own, one of them with a subject that is a script.
The page shows five rows, a failed verdict, both refused messages with their subjects and
the server's words, as text; a chart; and the browser logs no error.  After ``fastsync
accept`` and a re-run, the verdict is complete with two accepted exceptions and the exit
code 0.  A batch's page changes by itself while the batch runs, and ``--notify`` gets
the totals."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.harness.refuseproxy import RefusingProxy
from tests.dovecot.accounts import Account, AccountFactory
from tests.dovecot.test_refused_records import REFUSE, SCRIPT_SUBJECT, TOO_BIG, VIRUS, seed_with_refusals
from tests.helpers import REPO_ROOT, cli_env, message, run_cli, wait_for

pytestmark = pytest.mark.dovecot

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
PAIRS = 5


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path in (CHROMIUM, CHROMEDRIVER):
        assert shutil.which(path), f"{path} is missing: run bash .ci/setup as root (apt-get install chromium chromium-driver)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _files(tmp_path: Path, pairs: list[tuple[Account, Account]], src_port: int, dst_port: int) -> tuple[Path, Path]:
    servers = tmp_path / "servers.yaml"
    servers.write_text(yaml.safe_dump({
        "src": {"label": "old", "server": f"127.0.0.1:{src_port}", "tls": "none"},
        "dst": {"label": "new", "server": f"127.0.0.1:{dst_port}", "tls": "none"},
    }))
    csv = tmp_path / "pairs.csv"
    csv.write_text("\n".join(["src_user,src_pass,dst_user,dst_pass"]
                             + [f"{s.user},{s.password},{d.user},{d.password}" for s, d in pairs]) + "\n")
    csv.chmod(0o600)
    return servers, csv


def _pairs(accounts: AccountFactory, refusing: int) -> list[tuple[Account, Account]]:
    users = accounts(2 * PAIRS)
    pairs = [(users[2 * i], users[2 * i + 1]) for i in range(PAIRS)]
    for index, (src, _dst) in enumerate(pairs):
        if index == refusing:
            seed_with_refusals(src, base=index * 100)
        else:
            src.seed([message("INBOX", index * 100 + n) for n in range(6)])
    return pairs


def _open(browser: Any, page: Path) -> None:
    browser.get_log("browser")  # what earlier pages logged
    browser.get(page.as_uri())


def _text(browser: Any, selector: str) -> str:
    return str(browser.find_element("css selector", selector).text)


def _errors(browser: Any) -> list[dict[str, Any]]:
    return [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]


def test_a_batch_report_in_the_browser_before_and_after_accept(
    accounts: AccountFactory, tmp_path: Path, browser: Any
) -> None:
    pairs = _pairs(accounts, refusing=2)
    server = pairs[0][0].server
    report, state, notified = tmp_path / "report", tmp_path / "state", tmp_path / "notified.json"
    notify = shlex.join([sys.executable, "-c", f"import sys; open({str(notified)!r}, 'w').write(sys.stdin.read())"])
    with RefusingProxy(server.port, refuse=REFUSE) as proxy:
        servers, csv = _files(tmp_path, pairs, server.port, proxy.port)
        batch = ("-c", servers, "batch", csv, "--state-dir", state, "--procs", "2", "--report", report)
        done = run_cli(*batch, "--notify", notify)
        assert done.returncode == 1, done.stderr

        _open(browser, report / "report.html")
        assert _text(browser, "#verdict") == "failed"
        assert len(browser.find_elements("css selector", "#rows tbody tr")) == PAIRS
        subjects = [e.text for e in browser.find_elements("css selector", "#refused td.subject")]
        assert sorted(subjects) == sorted([SCRIPT_SUBJECT, "café invoice"])
        reasons = " ".join(e.text for e in browser.find_elements("css selector", "#refused td.reason"))
        assert VIRUS.decode() in reasons and TOO_BIG.decode() in reasons
        assert browser.execute_script("return typeof window.pwned") == "undefined"
        assert browser.find_elements("css selector", "#chart polyline")
        assert not browser.find_elements("css selector", "meta[http-equiv=refresh]")
        assert _errors(browser) == []

        csv_rows = (report / "report.csv").read_text().splitlines()
        assert len(csv_rows) == PAIRS + 1
        doc = json.loads(notified.read_text())
        assert doc["summary"]["pairs"] == PAIRS and doc["summary"]["copied"] == 4 * 6 + 3 and doc["exit_code"] == 1
        assert all(s.password not in notified.read_text() for pair in pairs for s in pair)

        accepted = run_cli("-c", servers, "accept", csv, "--all", "--state-dir", state)
        assert accepted.returncode == 0, accepted.stderr
        again = run_cli(*batch)
        assert again.returncode == 0, again.stderr
        assert "complete with 2 accepted exceptions" in again.stdout + again.stderr

        _open(browser, report / "report.html")
        assert _text(browser, "#verdict") == "complete with 2 accepted exceptions"
        assert len(browser.find_elements("css selector", "#rows tbody tr")) == PAIRS
        assert _errors(browser) == []

        # Rendered again afterwards, from the journal alone.
        rendered = tmp_path / "again"
        redone = run_cli("-c", servers, "report", csv, "--state-dir", state, "--report", rendered)
        assert redone.returncode == 0, redone.stderr
        _open(browser, rendered / "report.html")
        assert _text(browser, "#verdict") == "complete with 2 accepted exceptions"
        assert len(browser.find_elements("css selector", "#rows tbody tr")) == PAIRS
        assert browser.execute_script("return typeof window.pwned") == "undefined"
        assert _errors(browser) == []


def test_a_running_batch_page_changes_by_itself(accounts: AccountFactory, tmp_path: Path, browser: Any) -> None:
    pairs = _pairs(accounts, refusing=4)
    server = pairs[0][0].server
    report = tmp_path / "report"
    # The refusing pair's first message stays in flight until released: the batch runs as long as the test needs.
    with RefusingProxy(server.port, refuse={}, hold=b"<refuse-1@example.org>") as proxy:
        servers, csv = _files(tmp_path, pairs, server.port, proxy.port)
        process = subprocess.Popen(
            [sys.executable, "-m", "fastsync", "-c", str(servers), "batch", str(csv), "--state-dir",
             str(tmp_path / "state"), "--procs", "1", "--report", str(report)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=REPO_ROOT)
        try:
            wait_for(lambda: (report / "report.html").exists(), what="the first report")
            _open(browser, report / "report.html")
            assert _text(browser, "#verdict") == "running"
            assert browser.find_elements("css selector", "meta[http-equiv=refresh]")
            first = _text(browser, "#rows")
            # No reload from here: the page reloads itself.
            wait_for(lambda: _text(browser, "#rows") != first and _text(browser, "#rows").count("exact") == PAIRS - 1,
                     timeout_s=120, interval_s=0.5, what="the page to show the finished pairs")
            assert _text(browser, "#verdict") == "running"
        finally:
            proxy.release()
            _out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        _open(browser, report / "report.html")
        assert _text(browser, "#verdict") == "complete"
        assert not browser.find_elements("css selector", "meta[http-equiv=refresh]")
        assert _errors(browser) == []
