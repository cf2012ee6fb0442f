"""Unit tests for folder mapping: map rules, delimiters, INBOX, special-use, creation order."""

from __future__ import annotations

import pytest

from fastsync.records.errors import UsageError
from fastsync.rules.folders import (
    Rule,
    close_names,
    folders_to_create,
    infer_namespace,
    plan_pairs,
    resolve_rules,
    sort_out,
    special_use_rules,
)
from fastsync.records.model import Folder, FolderPair, Namespace

SLASH = Namespace("", "/")
DOT = Namespace("", ".")
PREFIXED = Namespace("INBOX.", ".")


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
    pairs = plan_pairs(src, folders("/", "INBOX"), SLASH)
    assert [(p.src, p.dst) for p in pairs] == [
        ("INBOX", "INBOX"),
        ("Test.[some_group]", "Test/[some_group]"),
        ("Test.[some_group].box", "Test/[some_group]/box"),
    ]


def test_slash_to_dot_defuses_dots_inside_names() -> None:
    src = folders("/", "INBOX", "a.b/c")
    pairs = plan_pairs(src, folders(".", "INBOX"), DOT)
    assert [(p.src, p.dst) for p in pairs] == [("INBOX", "INBOX"), ("a.b/c", "a_b.c")]


def test_inbox_is_case_insensitive() -> None:
    pairs = plan_pairs(folders("/", "Inbox", "Inbox/sub"), folders("/", "INBOX"), SLASH)
    assert [(p.src, p.dst) for p in pairs] == [("Inbox", "INBOX"), ("Inbox/sub", "INBOX/sub")]


def test_map_brings_subfolders_and_limits_the_sync() -> None:
    src = folders("/", "INBOX", "Old", "Old/a", "Old/a/b", "Other")
    rules = [Rule("Old", "Archive.2019"), Rule("INBOX", "INBOX")]
    pairs = plan_pairs(src, folders(".", "INBOX"), DOT, rules)
    assert [(p.src, p.dst) for p in pairs] == [
        ("INBOX", "INBOX"),
        ("Old", "Archive.2019"),
        ("Old/a", "Archive.2019.a"),
        ("Old/a/b", "Archive.2019.a.b"),
    ]


def test_longest_rule_wins() -> None:
    src = folders("/", "A", "A/B", "A/B/C")
    rules = [Rule("A", "X"), Rule("A/B", "Y")]
    pairs = plan_pairs(src, [], SLASH, rules)
    assert [(p.src, p.dst) for p in pairs] == [("A", "X"), ("A/B", "Y"), ("A/B/C", "Y/C")]


def test_special_use_pairs_by_role() -> None:
    src = folders("/", "INBOX", "Sent Items", "Sent Items/2019", "Deleted", roles={"Sent Items": "\\Sent", "Deleted": "\\Trash"})
    dst = folders(".", "INBOX", "Sent", "Trash", roles={"Sent": "\\Sent", "Trash": "\\Trash"})
    assert special_use_rules(src, dst, SLASH, DOT) == [
        Rule("Sent Items", "Sent", "special-use \\Sent"),
        Rule("Deleted", "Trash", "special-use \\Trash"),
    ]
    pairs = plan_pairs(src, dst, DOT)
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
    src = folders("/", "INBOX", "Older", "Old2")
    with pytest.raises(UsageError, match="source folder 'Old' \\(map\\) does not exist"):
        sort_out(src, [], [Rule("Old", "Archive")])
    assert [p.dst for p in sort_out(folders("/", "Old", "Old/a"), [], [Rule("Old", "X")])[0]] == ["X", "X/a"]


# ----------------------------------------------------------------------------- namespaces


@pytest.mark.parametrize(
    ("src", "src_ns", "dst", "dst_ns", "expected"),
    [
        # A prefixed source to a plain server: the prefix goes, the delimiter is translated.
        (folders(".", "INBOX", "INBOX.Sent", "INBOX.Archive", "INBOX.Archive.2020", "INBOX.a/b"), PREFIXED,
         folders("/", "INBOX"), SLASH,
         [("INBOX", "INBOX"), ("INBOX.Archive", "Archive"), ("INBOX.Archive.2020", "Archive/2020"),
          ("INBOX.Sent", "Sent"), ("INBOX.a/b", "a_b")]),
        # A plain source to a prefixed server: the prefix comes; a child of INBOX stays one.
        (folders("/", "INBOX", "Sent", "Archive", "Archive/2020", "a.b", "INBOX/Sub"), SLASH,
         folders(".", "INBOX"), PREFIXED,
         [("INBOX", "INBOX"), ("Archive", "INBOX.Archive"), ("Archive/2020", "INBOX.Archive.2020"),
          ("INBOX/Sub", "INBOX.Sub"), ("Sent", "INBOX.Sent"), ("a.b", "INBOX.a_b")]),
        # Prefixed on both sides: the names stay.
        (folders(".", "INBOX", "INBOX.Caf\u00e9", "INBOX.x.y"), PREFIXED, folders(".", "INBOX"), PREFIXED,
         [("INBOX", "INBOX"), ("INBOX.Caf\u00e9", "INBOX.Caf\u00e9"), ("INBOX.x.y", "INBOX.x.y")]),
        # The prefix is matched case-insensitively where it is INBOX's.
        (folders(".", "inbox", "inbox.Drafts"), PREFIXED, folders("/", "INBOX"), SLASH,
         [("inbox", "INBOX"), ("inbox.Drafts", "Drafts")]),
    ],
)
def test_names_map_in_their_namespace_relative_form(
    src: list[Folder], src_ns: Namespace, dst: list[Folder], dst_ns: Namespace, expected: list[tuple[str, str]]
) -> None:
    assert [(p.src, p.dst) for p in plan_pairs(src, dst, dst_ns, (), src_ns)] == expected


def test_special_use_pairs_across_prefixes() -> None:
    src = folders(".", "INBOX", "INBOX.Sent Items", "INBOX.Sent Items.2019", roles={"INBOX.Sent Items": "\\Sent"})
    dst = folders("/", "INBOX", "Sent", roles={"Sent": "\\Sent"})
    pairs = plan_pairs(src, dst, SLASH, (), PREFIXED)
    assert [(p.src, p.dst) for p in pairs] == [
        ("INBOX", "INBOX"), ("INBOX.Sent Items", "Sent"), ("INBOX.Sent Items.2019", "Sent/2019"),
    ]
    # Same relative name on both sides: no rule needed, the default mapping pairs them.
    same = folders("/", "INBOX", "Sent", roles={"Sent": "\\Sent"})
    assert special_use_rules(folders(".", "INBOX.Sent", roles={"INBOX.Sent": "\\Sent"}), same, PREFIXED, SLASH) == []


@pytest.mark.parametrize(
    ("rule", "src_ns", "dst_ns", "expected"),
    [
        (Rule("Archive", "Old"), PREFIXED, SLASH, Rule("INBOX.Archive", "Old", "map 'Archive' -> 'Old'")),
        (Rule("INBOX.Archive", "Old"), PREFIXED, SLASH, Rule("INBOX.Archive", "Old", "map")),
        (Rule("Archive", "Old"), SLASH, PREFIXED, Rule("Archive", "INBOX.Old", "map 'Archive' -> 'Old'")),
        (Rule("Archive", "INBOX.Old"), SLASH, PREFIXED, Rule("Archive", "INBOX.Old", "map")),
        (Rule("INBOX", "INBOX"), PREFIXED, PREFIXED, Rule("INBOX", "INBOX", "map")),
        # -s without -d: the source folder's own name, as the destination spells it.
        (Rule("Archive", "", "command line"), PREFIXED, SLASH, Rule("INBOX.Archive", "Archive", "command line")),
        (Rule("INBOX.Archive.2020", "", "command line"), PREFIXED, SLASH,
         Rule("INBOX.Archive.2020", "Archive/2020", "command line")),
        (Rule("Archive", "", "command line"), SLASH, PREFIXED, Rule("Archive", "INBOX.Archive", "command line")),
    ],
)
def test_rules_accept_names_with_or_without_the_prefix(
    rule: Rule, src_ns: Namespace, dst_ns: Namespace, expected: Rule
) -> None:
    src = folders(".", "INBOX", "INBOX.Archive", "INBOX.Archive.2020") if src_ns.prefix else folders("/", "INBOX", "Archive")
    assert resolve_rules([rule], src, src_ns, dst_ns) == [expected]


@pytest.mark.parametrize(
    ("listed", "expected"),
    [
        (folders(".", "INBOX", "INBOX.Sent", "INBOX.Trash"), Namespace("INBOX.", ".", announced=False)),
        (folders(".", "INBOX", "Sent", "INBOX.Sub"), Namespace("", ".", announced=False)),
        (folders("/", "INBOX"), Namespace("", "/", announced=False)),
        ([Folder("INBOX", "")], Namespace("", "/", announced=False)),
    ],
)
def test_infer_namespace(listed: list[Folder], expected: Namespace) -> None:
    assert infer_namespace(listed) == expected


def test_infer_namespace_takes_the_root_delimiter_when_no_folder_has_one() -> None:
    assert infer_namespace([Folder("INBOX", "")], ".") == Namespace("", ".", announced=False)


# ----------------------------------------------------------------------------- Gmail-like accounts

GMAIL_ROLES = {"[Gmail]/All Mail": "\\All", "[Gmail]/Starred": "\\Flagged", "[Gmail]/Important": "\\Important"}


def test_views_are_left_out_and_all_mail_goes_last() -> None:
    src = folders("/", "INBOX", "[Gmail]", "[Gmail]/All Mail", "[Gmail]/Starred", "[Gmail]/Important", "Work",
                  noselect=("[Gmail]",), roles=GMAIL_ROLES)
    kept, left = sort_out(src, folders("/", "INBOX"), [], SLASH, SLASH)
    assert [(p.src, p.dst, p.src_role) for p in kept] == [
        ("INBOX", "INBOX", ""), ("Work", "Work", ""), ("[Gmail]/All Mail", "[Gmail]/All Mail", "\\All"),
    ]
    assert [(p.src, p.reason) for p in left] == [
        ("[Gmail]/Important", "skipped: \\Important, a view of other folders"),
        ("[Gmail]/Starred", "skipped: \\Flagged, a view of other folders"),
    ]
    # A map entry naming a view brings it back.
    kept, left = sort_out(src, folders("/", "INBOX"), [Rule("[Gmail]/Starred", "Starred")], SLASH, SLASH)
    assert [(p.src, p.dst) for p in kept] == [("[Gmail]/Starred", "Starred")]
    assert left == []


def test_nothing_goes_into_the_destinations_all_folder() -> None:
    src = folders("/", "INBOX", "[Gmail]/All Mail", "Work", roles={"[Gmail]/All Mail": "\\All"})
    dst = folders("/", "INBOX", "[Gmail]/All Mail", roles={"[Gmail]/All Mail": "\\All"})
    kept, left = sort_out(src, dst, [], SLASH, SLASH)
    assert [p.src for p in kept] == ["INBOX", "Work"]
    assert [(p.src, p.reason) for p in left] == [("[Gmail]/All Mail", "skipped: the destination's \\All folder")]


@pytest.mark.parametrize(("name", "names", "close"), [
    ("Sent", ["INBOX", "Sent Items", "Drafts"], ["Sent Items"]),
    ("sent items", ["INBOX", "Sent Items"], ["Sent Items"]),
    ("Archiv", ["INBOX", "Archive", "Archive/2019"], ["Archive", "Archive/2019"]),
    ("Drafs", ["INBOX", "Drafts", "Trash"], ["Drafts"]),
    ("INBOX/Projcets", ["INBOX", "INBOX/Projects", "Sent"], ["INBOX/Projects"]),
    ("Zebra", ["INBOX", "Sent", "Trash"], []),
    ("", ["INBOX"], []),
])
def test_close_names(name: str, names: list[str], close: list[str]) -> None:
    assert close_names(name, names) == close


@pytest.mark.parametrize(("rule", "message"), [
    (Rule("Sent", "", "command line"),
     "source folder 'Sent' (command line) does not exist (did you mean 'Sent Items'?); `fastsync show` lists the folders"),
    (Rule("archive", "Old", "map"),
     "source folder 'archive' (map) does not exist (did you mean 'Archive'?); `fastsync show` lists the folders"),
    (Rule("Nothing", "X", "map"), "source folder 'Nothing' (map) does not exist; `fastsync show` lists the folders"),
])
def test_a_rule_naming_no_folder_suggests_the_close_ones(rule: Rule, message: str) -> None:
    src = folders("/", "INBOX", "Sent Items", "Archive", "Archive/2019")
    with pytest.raises(UsageError) as caught:
        sort_out(src, [], [rule])
    assert caught.value.message == message
