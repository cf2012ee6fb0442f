"""Source -> destination folder names: map entries, hierarchy delimiters, INBOX, special-use.

Names here are decoded (modified UTF-7, RFC 3501 section 5.1.3, is the session's business)
and written with each side's own hierarchy delimiter.  Pure functions, no IMAP.

Pure-logic layer: imports records and settings; every command pairs folders through
`pair_folders`, so sync, check and show always agree on the mapping.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from fastsync.config import Config
from fastsync.errors import UsageError
from fastsync.model import Folder, FolderPair
from fastsync.options import Options

# Substitute for a destination delimiter found inside a source name component
# (a folder "a/b" on a "." server cannot keep its "/" on a "/" server).
DELIMITER_SUBSTITUTE = "_"


@dataclass(frozen=True)
class Rule:
    """A source folder (and its subfolders) goes to a destination folder."""

    src: str
    dst: str
    reason: str = "map"


def is_inbox(name: str) -> bool:
    # RFC 3501 section 5.1: INBOX is case-insensitive; every other name is case-sensitive.
    return name.upper() == "INBOX"


def same_name(a: str, b: str) -> bool:
    return a == b or (is_inbox(a) and is_inbox(b))


def split(name: str, delimiter: str) -> list[str]:
    return name.split(delimiter) if delimiter else [name]


def translate(parts: Sequence[str], dst_delimiter: str) -> str:
    """Join name components with the destination delimiter, defusing delimiters inside them."""
    if not dst_delimiter:
        return "".join(parts)
    return dst_delimiter.join(p.replace(dst_delimiter, DELIMITER_SUBSTITUTE) for p in parts)


def matches(rule_src: str, name: str, delimiter: str) -> list[str] | None:
    """The components of *name* below *rule_src* ([] for the folder itself), or None."""
    if same_name(rule_src, name):
        return []
    if delimiter and (name.startswith(rule_src + delimiter) or (
        is_inbox(name.split(delimiter, 1)[0]) and is_inbox(rule_src)
    )):
        rest = name[len(rule_src) + len(delimiter):]
        return split(rest, delimiter)
    return None


def special_use_rules(src: Iterable[Folder], dst: Iterable[Folder]) -> list[Rule]:
    """Pair folders by RFC 6154 role when their names differ (``Sent Items`` -> ``Sent``)."""
    dst_by_role: dict[str, Folder] = {}
    for folder in dst:
        if folder.special_use and folder.special_use not in dst_by_role:
            dst_by_role[folder.special_use] = folder
    rules = []
    seen_roles = set()
    for folder in src:
        role = folder.special_use
        if not role or role in seen_roles or role == "\\All" or role not in dst_by_role:
            continue
        seen_roles.add(role)
        target = dst_by_role[role]
        src_parts = split(folder.name, folder.delimiter)
        dst_parts = split(target.name, target.delimiter)
        if src_parts != dst_parts:
            rules.append(Rule(folder.name, target.name, f"special-use {role}"))
    return rules


def plan_pairs(
    src_folders: Sequence[Folder],
    dst_folders: Sequence[Folder],
    dst_delimiter: str,
    rules: Sequence[Rule] = (),
) -> list[FolderPair]:
    """The folder pairs a sync would use.

    With *rules* (from ``map`` or ``-s/-d``), only the named folders and their subfolders
    are synced, the longest matching rule winning.  Without, every selectable source folder
    goes to the same path on the destination, except that special-use folders are paired by
    role.  ``\\Noselect`` folders are skipped but their children are not.
    """
    explicit = bool(rules)
    if not explicit:
        rules = special_use_rules(src_folders, dst_folders)
    ordered = sorted(rules, key=lambda r: len(r.src), reverse=True)
    pairs = []
    for folder in src_folders:
        if not folder.selectable:
            continue
        for rule in ordered:
            rest = matches(rule.src, folder.name, folder.delimiter)
            if rest is None:
                continue
            base = rule.dst
            dst = base if not rest else base + dst_delimiter + translate(rest, dst_delimiter)
            pairs.append(FolderPair(folder.name, dst, rule.reason))
            break
        else:
            if explicit:
                continue
            if is_inbox(folder.name):
                pairs.append(FolderPair(folder.name, "INBOX"))
            else:
                parts = split(folder.name, folder.delimiter)
                if is_inbox(parts[0]):
                    parts[0] = "INBOX"
                pairs.append(FolderPair(folder.name, translate(parts, dst_delimiter)))
    pairs.sort(key=lambda p: (not is_inbox(p.src), p.src))
    return pairs


def folders_to_create(pairs: Iterable[FolderPair], existing: Iterable[str], dst_delimiter: str) -> list[str]:
    """Missing destination folders of the pairs, parents before children.

    Only the pairs' own folders are created: a parent that exists on the source only as a
    \\Noselect container is left for the server to make (RFC 3501 section 6.3.3 lets CREATE
    add missing superiors), so it does not become a selectable, empty folder.
    """
    have = set(existing)
    wanted = {p.dst for p in pairs if p.dst not in have and not is_inbox(p.dst)}
    return sorted(wanted, key=lambda name: (len(split(name, dst_delimiter)), name))


def rules_from(config: Config, options: Options) -> list[Rule]:
    """The mapping rules of a run: ``-s/-d`` when given (they override ``map``), else ``map``."""
    if options.src_folder or options.dst_folder:
        src = options.src_folder or options.dst_folder or ""
        dst = options.dst_folder or src
        return [Rule(src, dst, "command line")]
    return [Rule(m.src, m.dst, "map") for m in config.map]


def dst_delimiter(folders: Sequence[Folder]) -> str:
    """The destination's hierarchy delimiter: INBOX's, else the first folder's, else "/"."""
    for folder in folders:
        if is_inbox(folder.name) and folder.delimiter:
            return folder.delimiter
    for folder in folders:
        if folder.delimiter:
            return folder.delimiter
    return "/"


def pair_folders(src_folders: Sequence[Folder], dst_folders: Sequence[Folder], rules: Sequence[Rule]) -> list[FolderPair]:
    """`plan_pairs` for two listed accounts; a rule naming no source folder is a usage error."""
    for rule in rules:
        # The same test as the mapping itself: "Old" covers "Old/a", not "Older".
        if not any(matches(rule.src, f.name, f.delimiter) is not None for f in src_folders):
            raise UsageError(
                f"source folder {rule.src!r} ({rule.reason}) does not exist; `fastsync show` lists the folders"
            )
    return plan_pairs(src_folders, dst_folders, dst_delimiter(dst_folders), rules)
