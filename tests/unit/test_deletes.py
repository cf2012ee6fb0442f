"""The pure parts of `sync --delete-dest` (mirroring deletions) and `--max-transfer`: the extra
messages of a folder, the deletion ceiling, sizes (against real servers: tests/dovecot/test_deletes.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastsync.records.model import FolderPair, FolderScan, FolderStatus, MessageRef
from fastsync.settings.options import DeleteCeiling, parse_ceiling
from fastsync.settings.values import parse_size
from fastsync.rules.plan import extra
from fastsync.engine.planner import FolderPlan, plan_deletions
from tests.helpers import run_cli

# ----------------------------------------------------------------------------- pure


def refs(*identities: str, first_uid: int = 1) -> list[MessageRef]:
    return [MessageRef(uid, 100, identity) for uid, identity in enumerate(identities, first_uid)]


@pytest.mark.parametrize(
    ("src", "dst", "expected_uids"),
    [
        (("a", "b"), ("a", "b"), []),
        (("a",), ("a", "b"), [2]),
        # Of two destination copies of a message the source has once, the later is extra.
        (("a",), ("a", "a"), [2]),
        (("a", "a"), ("a", "a", "a"), [3]),
        (("a", "b", "b"), ("b", "a"), []),
        ((), ("x", "y"), [1, 2]),
        (("a",), (), []),
    ],
)
def test_extra_is_the_multiset_difference_on_the_destination(
    src: tuple[str, ...], dst: tuple[str, ...], expected_uids: list[int]
) -> None:
    assert [r.uid for r in extra(refs(*src), refs(*dst))] == expected_uids


def scan(*identities: str) -> FolderScan:
    return FolderScan(FolderStatus(len(identities), -1, 7, 100), refs(*identities))


def test_a_destination_fed_by_two_source_folders_is_compared_with_both() -> None:
    plans = [FolderPlan(FolderPair("Sent Items", "Sent"), 1, 1), FolderPlan(FolderPair("Sent", "Sent"), 1, 1)]
    plan_deletions(plans, {"Sent Items": scan("a"), "Sent": scan("b")}, {"Sent": scan("a", "b", "c")})
    assert [r.identity for r in plans[0].to_delete] == ["c"]
    assert (plans[0].dst_messages, plans[0].dst_uidvalidity) == (3, 7)
    assert plans[1].to_delete == []


def test_nothing_is_deleted_where_a_source_folder_could_not_be_read() -> None:
    plans = [FolderPlan(FolderPair("A", "X"), 1, 1), FolderPlan(FolderPair("B", "X"), 1, 1)]
    plan_deletions(plans, {"A": scan("a"), "B": FolderScan(None, [], "gone")}, {"X": scan("a", "b")})
    assert plans[0].to_delete == plans[1].to_delete == []


@pytest.mark.parametrize(
    ("ceiling", "to_delete", "messages", "allowed"),
    [
        # Default: refused only when over 10 messages AND over 10 % of the folder.
        (DeleteCeiling(), 10, 10, True),
        (DeleteCeiling(), 11, 100, False),
        (DeleteCeiling(), 11, 110, True),
        (DeleteCeiling(), 12, 110, False),
        (DeleteCeiling(), 100, 10_000, True),
        (DeleteCeiling(), 1001, 10_000, False),
        (DeleteCeiling(), 0, 0, True),
        (parse_ceiling("0"), 1, 1000, False),
        (parse_ceiling("50"), 50, 50, True),
        (parse_ceiling("50"), 51, 10_000, False),
        (parse_ceiling("5%"), 5, 100, True),
        (parse_ceiling("5%"), 6, 100, False),
        (parse_ceiling("100%"), 30, 30, True),
    ],
)
def test_the_deletion_ceiling(ceiling: DeleteCeiling, to_delete: int, messages: int, allowed: bool) -> None:
    assert ceiling.allows(to_delete, messages) is allowed


@pytest.mark.parametrize("text", ["", "x", "-1", "5 %%", "101%", "1.5", "%"])
def test_a_bad_ceiling_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="expected a number of messages"):
        parse_ceiling(text)


@pytest.mark.parametrize(
    ("text", "size_bytes"),
    [("2500M", 2_500_000_000), ("500k", 500_000), ("1.5G", 1_500_000_000), ("123", 123), ("10 MB", 10_000_000),
     ("2g", 2_000_000_000), ("0", 0)],
)
def test_parse_size(text: str, size_bytes: int) -> None:
    assert parse_size(text) == size_bytes


@pytest.mark.parametrize("text", ["", "M", "-5M", "5X", "five"])
def test_a_bad_size_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="expected a size such as 500k"):
        parse_size(text)


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (("--max-transfer", "nope"), {}, "error: --max-transfer 'nope': expected a size such as 500k"),
        ((), {"FASTSYNC_MAX_TRANSFER": "2X"}, "error: environment variable FASTSYNC_MAX_TRANSFER='2X': expected a size"),
        (("--max-delete", "lots"), {}, "error: --max-delete 'lots': expected a number of messages (50) or a share"),
    ],
)
def test_bad_values_are_one_line_usage_errors(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], expected: str
) -> None:
    config = tmp_path / "c.json"
    side = {"server": "127.0.0.1:1", "user": "u", "pass": "p", "tls": "none"}
    config.write_text(json.dumps({"src": side, "dst": side}))
    result = run_cli("sync", "-c", config, *args, env=env)
    assert result.returncode == 2
    assert result.stderr.startswith(expected), result.stderr
    assert len(result.stderr.splitlines()) == 1
