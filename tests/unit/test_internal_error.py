"""The last arm of `cli.main`: an unexpected exception is one line and exit code 70, never 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastsync import cli
from fastsync.commands import show
from fastsync.records.errors import ExitCode

CONFIG = {
    "src": {"server": "127.0.0.1:1", "user": "a", "pass": "secret-a", "tls": "none"},
    "dst": {"server": "127.0.0.1:1", "user": "b", "pass": "secret-b", "tls": "none"},
}


@pytest.fixture
def broken_show(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config file, and a `show` whose run meets a defect (no server is reached)."""

    def defect(*_args: object) -> None:
        raise KeyError("folder-index")

    monkeypatch.setattr(show, "run", defect)
    path = tmp_path / "fastsync.json"
    path.write_text(json.dumps(CONFIG))
    path.chmod(0o600)
    return path


def test_one_line_and_its_own_exit_code(broken_show: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["show", "-c", str(broken_show)], environ={})
    out, err = capsys.readouterr()
    assert code == ExitCode.INTERNAL == 70
    # tls: none is warned about on every run; nothing else but the one line.
    assert [line for line in err.splitlines() if not line.startswith("warning: ")] == [
        "error: internal error: KeyError: 'folder-index'; please report it (-V shows the traceback)"
    ]
    assert "Traceback" not in out + err


def test_verbose_prints_the_traceback(broken_show: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["show", "-V", "-c", str(broken_show)], environ={})
    _out, err = capsys.readouterr()
    assert code == 70
    lines = [line for line in err.splitlines() if not line.startswith("warning: ")]
    assert lines[0] == "error: internal error: KeyError: 'folder-index'; please report it"
    assert "Traceback (most recent call last)" in err and "in defect" in err


def test_json_document_and_log_file(broken_show: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "run.log"
    code = cli.main(["show", "--json", "--log-file", str(log), "--log-format", "json", "-c", str(broken_show)],
                    environ={})
    out, _err = capsys.readouterr()
    assert code == 70
    assert json.loads(out) == {
        "command": "show", "error": "internal error: KeyError: 'folder-index'; please report it", "exit_code": 70,
    }
    started, line = log.read_text().splitlines()
    assert json.loads(started)["event"] == "run started"
    record = json.loads(line)
    assert record["event"] == "run finished" and record["exit_code"] == 70
    assert "Traceback (most recent call last)" in record["traceback"] and "in defect" in record["traceback"]
    assert "secret-a" not in log.read_text()
