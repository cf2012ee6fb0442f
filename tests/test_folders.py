"""Unit tests for folder mapping: map rules, delimiters, INBOX, special-use, creation order."""

from __future__ import annotations

import pytest

from fastsync.folders import Rule, folders_to_create, plan_pairs, special_use_rules
from fastsync.model import Folder, FolderPair


def folders(delimiter: str, *names: str, noselect: tuple[str, ...] = (), roles: dict[str, str] | None = None) -> list[Folder]:
    roles = roles or {}
    out = []
    for name in names:
        attributes: tuple[str, ...] = ()
        if name in noselect:
            attributes += ("\\Noselect",)
        if name in roles:
            attributes += (roles[name],)
        out.append(Folder(name, delimiter, attributes))
    return out


def test_same_paths_with_delimiter_translation() -> None:
    src = folders(".", "INBOX", "Test", "Test.[some_group]", "Test.[some_group].box", noselect=("Test",))
    pairs = plan_pairs(src, folders("/", "INBOX"), "/")
    assert [(p.src, p.dst) for p in pairs] == [
        ("INBOX", "INBOX"),
        ("Test.[some_group]", "Test/[some_group]"),
        ("Test.[some_group].box", "Test/[some_group]/box"),
    ]


def test_slash_to_dot_defuses_dots_inside_names() -> None:
    src = folders("/", "INBOX", "a.b/c")
    pairs = plan_pairs(src, folders(".", "INBOX"), ".")
    assert [(p.src, p.dst) for p in pairs] == [("INBOX", "INBOX"), ("a.b/c", "a_b.c")]


def test_inbox_is_case_insensitive() -> None:
    pairs = plan_pairs(folders("/", "Inbox", "Inbox/sub"), folders("/", "INBOX"), "/")
    assert [(p.src, p.dst) for p in pairs] == [("Inbox", "INBOX"), ("Inbox/sub", "INBOX/sub")]


def test_map_brings_subfolders_and_limits_the_sync() -> None:
    src = folders("/", "INBOX", "Old", "Old/a", "Old/a/b", "Other")
    rules = [Rule("Old", "Archive.2019"), Rule("INBOX", "INBOX")]
    pairs = plan_pairs(src, folders(".", "INBOX"), ".", rules)
    assert [(p.src, p.dst) for p in pairs] == [
        ("INBOX", "INBOX"),
        ("Old", "Archive.2019"),
        ("Old/a", "Archive.2019.a"),
        ("Old/a/b", "Archive.2019.a.b"),
    ]


def test_longest_rule_wins() -> None:
    src = folders("/", "A", "A/B", "A/B/C")
    rules = [Rule("A", "X"), Rule("A/B", "Y")]
    pairs = plan_pairs(src, [], "/", rules)
    assert [(p.src, p.dst) for p in pairs] == [("A", "X"), ("A/B", "Y"), ("A/B/C", "Y/C")]


def test_special_use_pairs_by_role() -> None:
    src = folders("/", "INBOX", "Sent Items", "Sent Items/2019", "Deleted", roles={"Sent Items": "\\Sent", "Deleted": "\\Trash"})
    dst = folders(".", "INBOX", "Sent", "Trash", roles={"Sent": "\\Sent", "Trash": "\\Trash"})
    assert special_use_rules(src, dst) == [
        Rule("Sent Items", "Sent", "special-use \\Sent"),
        Rule("Deleted", "Trash", "special-use \\Trash"),
    ]
    pairs = plan_pairs(src, dst, ".")
    assert [(p.src, p.dst, p.reason) for p in pairs] == [
        ("INBOX", "INBOX", ""),
        ("Deleted", "Trash", "special-use \\Trash"),
        ("Sent Items", "Sent", "special-use \\Sent"),
        ("Sent Items/2019", "Sent.2019", "special-use \\Sent"),
    ]


@pytest.mark.parametrize(
    ("pairs", "existing", "expected"),
    [
        ([("a/b/c", "a/b/c"), ("a", "a")], ["INBOX"], ["a", "a/b/c"]),
        ([("INBOX", "inbox"), ("x", "x")], ["x"], []),
        ([("Sent", "Sent"), ("Sent/2019", "Sent/2019")], ["Sent"], ["Sent/2019"]),
    ],
)
def test_folders_to_create_parents_first(pairs: list[tuple[str, str]], existing: list[str], expected: list[str]) -> None:
    assert folders_to_create([FolderPair(s, d) for s, d in pairs], existing, "/") == expected


def test_a_rule_naming_no_folder_is_an_error_even_with_a_longer_name_around() -> None:
    from fastsync.errors import UsageError
    from fastsync.folders import pair_folders

    src = folders("/", "INBOX", "Older", "Old2")
    with pytest.raises(UsageError, match="source folder 'Old' \\(map\\) does not exist"):
        pair_folders(src, [], [Rule("Old", "Archive")])
    assert [p.dst for p in pair_folders(folders("/", "Old", "Old/a"), [], [Rule("Old", "X")])] == ["X", "X/a"]
