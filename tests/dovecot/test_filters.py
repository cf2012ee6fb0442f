"""What a run takes, against real Dovecot servers: folders by --include/--exclude (and the
config keys), messages by internal date (--max-age/--min-age) and size (--max-size/--min-size),
the destination's APPENDLIMIT, and sizes with suffixes on the command line."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path


from bench.harness.corpus import Message
from bench.harness.dovecot import Dovecot
from fastsync.settings.values import SIZE_EXPECTED
from tests.dovecot.accounts import Account, AccountFactory, ConfigFor, snapshot
from tests.helpers import run_cli, summary_line

UTC = dt.UTC
FOLDERS = ["INBOX", "Sent", "Trash", "Junk", "Archive/2019", "Archive/2020"]


def _message(folder: str, n: int, *, size: int = 100, date: dt.datetime | None = None) -> Message:
    body = f"Message-ID: <f{n}@filters.example>\r\nSubject: {folder} {n}\r\n\r\n".encode() + b"x" * size + b"\r\n"
    return Message(folder, body, ("\\Seen",), date or dt.datetime(2020, 6, 1, tzinfo=UTC))


def _seed_folders(account: Account) -> None:
    account.seed([_message(folder, index) for index, folder in enumerate(FOLDERS)])


def _json(result_stdout: str) -> dict[str, object]:
    document = json.loads(result_stdout)
    assert isinstance(document, dict)
    return document


# --------------------------------------------------------------------------- --include / --exclude


def test_excluded_folders_are_neither_created_nor_counted(accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst = accounts(2)
    _seed_folders(src)
    config = config_for(src, dst)
    excludes = ("--exclude", "^Trash$", "--exclude", "^Archive/2019$")

    result = run_cli("sync", "-c", config, "-y", *excludes)
    assert result.returncode == 0, result.stderr
    assert summary_line(result.stdout).startswith("5 folders, 4 copied, 0 already present, 0 failed")
    copied = {name for name, messages in snapshot(dst).items() if messages}
    assert copied == {"INBOX", "Sent", "Junk", "Archive/2020"}
    assert "Trash" not in snapshot(dst)

    # check with the same filter compares the same folders; without it, Trash is missing.
    matching = run_cli("check", "-c", config, *excludes)
    assert matching.returncode == 0, matching.stdout + matching.stderr
    assert "5 folders checked" in matching.stdout
    differing = run_cli("check", "-c", config, "--json")
    assert differing.returncode == 1
    missing = {f["src"] for f in _json(differing.stdout)["folders"] if f["counts"]["missing"]}  # type: ignore[index, union-attr]
    assert missing == {"Trash", "Archive/2019"}


def test_show_marks_excluded_folders(accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst = accounts(2)
    _seed_folders(src)
    config = config_for(src, dst)

    table = run_cli("show", "-c", config, "--include", "^INBOX$", "--include", "^Archive", "--exclude", "2019")
    assert table.returncode == 0, table.stderr
    mapping = [line.split("\t") for line in table.stdout.splitlines() if line.startswith(("map\t", "excluded\t"))]
    assert ["map", "Archive/2020", "Archive/2020", "same name"] in mapping
    assert ["excluded", "Archive/2019", "-", "excluded by --exclude '2019'"] in mapping
    assert ["excluded", "Trash", "-", "not matched by --include '^INBOX$' '^Archive'"] in mapping
    assert {row[1] for row in mapping if row[0] == "map"} == {"INBOX", "Archive", "Archive/2020"}

    document = _json(run_cli("show", "-c", config, "--json", "--exclude", "^Junk$").stdout)
    assert {"src": "Junk", "reason": "excluded by --exclude '^Junk$'"} in document["excluded"]  # type: ignore[operator]
    assert "Junk" not in {m["src"] for m in document["mapping"]}  # type: ignore[attr-defined]
    flagged = {f["name"]: f["excluded"] for f in document["src"]["folders"]}  # type: ignore[index]
    assert flagged["Junk"] == "excluded by --exclude '^Junk$'"
    assert flagged["INBOX"] == ""


def test_config_include_and_exclude(accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst = accounts(2)
    _seed_folders(src)
    config = config_for(src, dst, fmt="yaml", extra={"include": ["^(INBOX|Sent|Trash)$"], "exclude": "^Trash$"})
    result = run_cli("sync", "-c", config, "-y")
    assert result.returncode == 0, result.stderr
    assert {name for name, messages in snapshot(dst).items() if messages} == {"INBOX", "Sent"}
    # A flag replaces the config's list.
    again = run_cli("sync", "-c", config, "-y", "--exclude", "^Sent$")
    assert again.returncode == 0, again.stderr
    assert {name for name, messages in snapshot(dst).items() if messages} == {"INBOX", "Sent", "Trash"}


def test_a_bad_regex_is_a_one_line_usage_error(accounts: AccountFactory, config_for: ConfigFor, tmp_path: Path) -> None:
    src, dst = accounts(2)
    result = run_cli("sync", "-c", config_for(src, dst), "-y", "--exclude", "([")
    assert result.returncode == 2
    assert result.stderr == "error: --exclude: '([' is not a valid regular expression: unterminated character set at position 1\n"
    bad = config_for(src, dst, extra={"include": ["ok", "*x"]})
    result = run_cli("show", "-c", bad)
    assert result.returncode == 2
    assert result.stderr == f'error: {bad}: include[1] (line 18): "*x" is not a valid regular expression: nothing to repeat at position 0\n'


# --------------------------------------------------------------------------- --max-age / --min-age


def test_age_filters_copy_exactly_the_window(accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst = accounts(2)
    now = dt.datetime.now(UTC).replace(microsecond=0)
    ages_days = {"old": 400, "mid": 60, "new": 3}
    messages = [
        _message(folder, n, date=now - dt.timedelta(days=ages_days[kind]))
        for n, (folder, kind) in enumerate([
            ("INBOX", "old"), ("INBOX", "mid"), ("INBOX", "new"), ("INBOX", "new"), ("Sent", "old"), ("Sent", "new"),
        ])
    ]
    src.seed(messages)
    config = config_for(src, dst)

    def subjects() -> set[str]:
        return {body.split(b"Subject: ")[1].split(b"\r\n")[0].decode()
                for messages in snapshot(dst).values() for body, _flags, _date in messages}

    newest = run_cli("sync", "-c", config, "-y", "--max-age", "30d", "--json")
    assert newest.returncode == 0, newest.stderr
    doc = _json(newest.stdout)
    assert doc["summary"]["copied"] == 3  # type: ignore[index]
    assert {r["src"]: r["outside_dates"] for r in doc["folders"]} == {"INBOX": 2, "Sent": 1}  # type: ignore[attr-defined, index]
    assert subjects() == {"INBOX 2", "INBOX 3", "Sent 5"}

    # Again: nothing to copy; the window is compared with everything on the destination.
    again = run_cli("sync", "-c", config, "-y", "--max-age", "30")
    assert again.returncode == 0, again.stderr
    assert summary_line(again.stdout).startswith("2 folders, 0 copied, 3 already present, 0 failed")
    assert run_cli("check", "-c", config, "--max-age", "30d").returncode == 0
    assert run_cli("check", "-c", config).returncode == 1

    oldest = run_cli("sync", "-c", config, "-y", "--min-age", "1y")
    assert oldest.returncode == 0, oldest.stderr
    assert summary_line(oldest.stdout).startswith("2 folders, 2 copied, 0 already present, 0 failed")
    assert subjects() == {"INBOX 0", "INBOX 2", "INBOX 3", "Sent 4", "Sent 5"}

    # A run without filters copies what the windows left out: the state cache did not
    # take the filtered runs for complete ones.
    rest = run_cli("sync", "-c", config, "-y")
    assert rest.returncode == 0, rest.stderr
    assert summary_line(rest.stdout).startswith("2 folders, 1 copied, 5 already present, 0 failed")
    assert snapshot(dst) == snapshot(src)


# --------------------------------------------------------------------------- --max-size / --min-size


def _sized_account(src: Account) -> None:
    src.seed([_message("INBOX", n, size=40_000 if n in (2, 5) else 500) for n in range(7)]
             + [_message("Sent", 10, size=30_000), _message("Sent", 11, size=10)])


def test_max_size_skips_and_counts_without_failing(accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst = accounts(2)
    _sized_account(src)
    config = config_for(src, dst)
    for _run in range(2):
        result = run_cli("sync", "-c", config, "-y", "-V", "--max-size", "20k")
        assert result.returncode == 0, result.stderr
        assert summary_line(result.stdout).endswith(", 3 skipped")
        listed = sorted(line for line in result.stdout.splitlines() if line.startswith("skipped: "))
        assert len(listed) == 3
        assert listed[0].startswith("skipped: folder 'INBOX' UID 3 ")
        assert listed[0].endswith(": larger than --max-size (20000 bytes)")
        assert listed[2].startswith("skipped: folder 'Sent' UID 1 ")
        assert "error:" not in result.stderr
    assert summary_line(result.stdout).startswith("2 folders, 0 copied, 6 already present, 0 failed")
    assert sum(snapshot(dst)["INBOX"].values()) == 5

    document = _json(run_cli("sync", "-c", config, "-y", "--json", "--max-size", "20k").stdout)
    assert document["exit_code"] == 0
    assert document["summary"]["skipped"] == 3  # type: ignore[index]
    skipped = {(s["folder"], s["uid"]) for s in document["skipped"]}  # type: ignore[attr-defined]
    assert skipped == {("INBOX", 3), ("INBOX", 6), ("Sent", 1)}

    smallest = run_cli("sync", "-c", config, "-y", "--min-size", "1k", "--max-size", "35k")
    assert smallest.returncode == 0, smallest.stderr
    assert summary_line(smallest.stdout).startswith("2 folders, 1 copied, 6 already present, 0 failed")
    assert summary_line(smallest.stdout).endswith(", 2 skipped")
    rest = run_cli("sync", "-c", config, "-y")
    assert summary_line(rest.stdout).startswith("2 folders, 2 copied, 7 already present, 0 failed")
    assert snapshot(dst) == snapshot(src)


def test_appendlimit_skips_once_per_folder_instead_of_failing(
    tmp_path: Path, accounts: AccountFactory, config_for: ConfigFor
) -> None:
    [src] = accounts(1)
    _sized_account(src)
    # Dovecot 2.3 refuses messages over quota_max_mail_size but does not announce
    # APPENDLIMIT for it; imap_capability adds the announcement of the same limit.
    with Dovecot(tmp_path / "limited", {"dst": "d-pw"}, quota_max_mail_size="20k",
                 imap_capability="+APPENDLIMIT=20480") as limited:
        dst = Account(limited, "dst", "d-pw")
        result = run_cli("sync", "-c", config_for(src, dst), "-y", "--json")
        assert result.returncode == 0, result.stderr
        # One per folder, as each is planned: with -y, in the order the folders are surveyed
        # while the copy runs (`rules.surveyorder`), not the plan's.
        warnings = sorted(line for line in result.stderr.splitlines() if line.startswith("warning: folder"))
        assert warnings == [
            "warning: folder 'INBOX': 2 messages over the destination's APPENDLIMIT of 20480 bytes skipped",
            "warning: folder 'Sent': 1 message over the destination's APPENDLIMIT of 20480 bytes skipped",
        ]
        assert "error:" not in result.stderr
        document = _json(result.stdout)
        assert document["summary"]["skipped"] == 3  # type: ignore[index]
        assert document["summary"]["copied"] == 6  # type: ignore[index]
        assert document["failed"] == []
        assert {s["reason"] for s in document["skipped"]} == {  # type: ignore[attr-defined]
            "over the destination's APPENDLIMIT of 20480 bytes"
        }
        assert sum(snapshot(dst)["INBOX"].values()) == 5


# --------------------------------------------------------------------------- size suffixes


def test_size_suffixes_on_the_command_line(accounts: AccountFactory, config_for: ConfigFor) -> None:
    src, dst = accounts(2)
    src.seed([_message("INBOX", 1)])
    config = config_for(src, dst, extra={"rate_limit": {"up_bps": "500k"}})
    result = run_cli("sync", "-c", config, "-y", "--bps-down", "2M")
    assert result.returncode == 0, result.stderr
    assert summary_line(result.stdout).startswith("1 folders, 1 copied")
    bad = run_cli("sync", "-c", config, "-y", "--bps-down", "2X")
    assert bad.returncode == 2
    assert bad.stderr == f"error: --bps-down '2X': {SIZE_EXPECTED}\n"
    assert bad.stdout == ""


def test_date_window_in_a_pipelined_survey_of_many_folders(accounts: AccountFactory, config_for: ConfigFor) -> None:
    """Dovecot runs a folder's FETCH and UID SEARCH side by side: the SEARCH reply may come
    before the FETCH completes, and must still count."""
    src, dst = accounts(2)
    now = dt.datetime.now(UTC).replace(microsecond=0)
    messages = []
    for index in range(12):
        folder = "INBOX" if index == 0 else f"F{index}"
        for n in range(150):
            days = 5 if n % 3 == 0 else 500
            messages.append(_message(folder, index * 1000 + n, size=50, date=now - dt.timedelta(days=days)))
    src.seed(messages)
    result = run_cli("sync", "-c", config_for(src, dst), "-y", "--max-age", "30d", "--json")
    assert result.returncode == 0, result.stderr
    doc = _json(result.stdout)
    assert doc["summary"]["copied"] == 12 * 50  # type: ignore[index]
    assert {r["outside_dates"] for r in doc["folders"]} == {100}  # type: ignore[attr-defined, index]
