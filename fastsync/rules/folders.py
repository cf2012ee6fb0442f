"""Source -> destination folder names: namespaces, map entries, delimiters, INBOX, special-use.

Names here are decoded (modified UTF-7, RFC 3501 section 5.1.3, is the session's business)
and written with each side's own hierarchy delimiter.  Pure functions, no IMAP.

Names are mapped in their namespace-relative form (RFC 2342): the source's personal
prefix is taken off, the components are joined with the destination's delimiter, and the
destination's prefix is put on.  So ``INBOX.Archive.2020`` on a server whose folders live
under ``INBOX.`` becomes ``Archive/2020`` on a plain "/" server, and back; INBOX stays
INBOX, and a child of INBOX on a plain server (``INBOX/Sub``) stays a child of INBOX.

Pure-logic layer: imports records and settings; every command pairs folders through
`sort_out` and filters the pairs through `filter_pairs` (``--include``/``--exclude``),
so sync, check and show always agree on the mapping and on what is left out.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastsync.settings.config import Config
from fastsync.records.errors import UsageError
from fastsync.records.model import Folder, FolderPair, Namespace

if TYPE_CHECKING:  # the parent's options (a worker's sessions use the rules, never the options)
    from fastsync.settings.options import Options

# RFC 6154 \All: every message of the account (Gmail's All Mail, archived mail included).
ALL = "\\All"

# Folders that show messages of other folders (Gmail's Starred and Important): skipped
# unless a map entry or -s names them, or every labelled message would arrive twice.
VIEWS = ("\\Flagged", "\\Important")

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


def relative_parts(folder: Folder, namespace: Namespace) -> list[str]:
    """A folder's name components below its account's personal namespace prefix.

    INBOX is ``["INBOX"]`` and a child of INBOX outside the prefix keeps ``INBOX`` first;
    a folder outside the personal namespace (another user's, a shared one) keeps its
    whole name.
    """
    name = folder.name
    if is_inbox(name):
        return ["INBOX"]
    prefix = namespace.prefix
    if prefix and _has_prefix(name, prefix) and len(name) > len(prefix):
        return split(name[len(prefix):], folder.delimiter or namespace.delimiter)
    parts = split(name, folder.delimiter)
    if is_inbox(parts[0]):
        parts[0] = "INBOX"
    return parts


def absolute_name(parts: Sequence[str], namespace: Namespace) -> str:
    """The destination's name for namespace-relative *parts* (see `relative_parts`)."""
    delimiter = namespace.delimiter
    if is_inbox(parts[0]):
        return "INBOX" if len(parts) == 1 else "INBOX" + delimiter + translate(parts[1:], delimiter)
    return namespace.prefix + translate(parts, delimiter)


def _has_prefix(name: str, prefix: str) -> bool:
    # A prefix beginning with INBOX matches case-insensitively there (RFC 3501 section 5.1).
    if prefix[:5].upper() == "INBOX":
        return name[:5].upper() == "INBOX" and name[5 : len(prefix)] == prefix[5:]
    return name.startswith(prefix)


def infer_namespace(folders: Sequence[Folder], delimiter: str = "") -> Namespace:
    """The personal namespace of a server without NAMESPACE, from its folder list.

    The delimiter is INBOX's (else the first folder's, else *delimiter*, from
    ``LIST "" ""``, else "/").  The prefix is ``INBOX`` plus the delimiter when every
    folder but INBOX lives below INBOX and there is at least one: the layout of servers
    that put personal folders under INBOX; otherwise empty.
    """
    found = next((f.delimiter for f in folders if is_inbox(f.name) and f.delimiter), "")
    found = found or next((f.delimiter for f in folders if f.delimiter), "") or delimiter or "/"
    others = [f for f in folders if not is_inbox(f.name)]
    below_inbox = [f for f in others if is_inbox(split(f.name, found)[0])]
    prefix = "INBOX" + found if others and len(below_inbox) == len(others) else ""
    return Namespace(prefix, found, announced=False)


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


def special_use_rules(
    src: Iterable[Folder], dst: Iterable[Folder], src_ns: Namespace, dst_ns: Namespace
) -> list[Rule]:
    """Pair folders by RFC 6154 role when their names differ (``Sent Items`` -> ``Sent``)."""
    dst_by_role: dict[str, Folder] = {}
    for folder in dst:
        if folder.special_use and folder.special_use not in dst_by_role:
            dst_by_role[folder.special_use] = folder
    rules = []
    seen_roles = set()
    for folder in src:
        role = folder.special_use
        if not role or role in seen_roles or role == ALL or role not in dst_by_role:
            continue
        seen_roles.add(role)
        target = dst_by_role[role]
        if relative_parts(folder, src_ns) != relative_parts(target, dst_ns):
            rules.append(Rule(folder.name, target.name, f"special-use {role}"))
    return rules


def plan_pairs(
    src_folders: Sequence[Folder],
    dst_folders: Sequence[Folder],
    dst_ns: Namespace,
    rules: Sequence[Rule] = (),
    src_ns: Namespace = Namespace("", ""),
) -> list[FolderPair]:
    """The folder pairs a sync would use.

    With *rules* (from ``map`` or ``-s/-d``), only the named folders and their subfolders
    are synced, the longest matching rule winning.  Without, every selectable source folder
    goes to the same namespace-relative path on the destination, except that special-use
    folders are paired by role.  ``\\Noselect`` folders are skipped but their children are not.
    """
    explicit = bool(rules)
    if not explicit:
        rules = special_use_rules(src_folders, dst_folders, src_ns, dst_ns)
    ordered = sorted(rules, key=lambda r: len(r.src), reverse=True)
    delimiter = dst_ns.delimiter
    pairs = []
    for folder in src_folders:
        if not folder.selectable:
            continue
        for rule in ordered:
            rest = matches(rule.src, folder.name, folder.delimiter)
            if rest is None:
                continue
            dst = rule.dst if not rest else rule.dst + delimiter + translate(rest, delimiter)
            pairs.append(FolderPair(folder.name, dst, rule.reason, folder.special_use))
            break
        else:
            if not explicit:
                dst = absolute_name(relative_parts(folder, src_ns), dst_ns)
                pairs.append(FolderPair(folder.name, dst, src_role=folder.special_use))
    # INBOX first; a source \All folder last: of its messages, only those in no other synced
    # folder are copied (the planner needs the others' identities first).
    pairs.sort(key=lambda p: (p.src_role == ALL, not is_inbox(p.src), p.src))
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
    if options.src_folder:
        # Without -d, the same name on the destination: filled in by resolve_rules, which
        # knows both namespaces.  (-d without -s is refused by `options.resolve`.)
        return [Rule(options.src_folder, options.dst_folder or "", "command line")]
    return [Rule(m.src, m.dst, "map") for m in config.map]


def resolve_rules(
    rules: Sequence[Rule], src_folders: Sequence[Folder], src_ns: Namespace, dst_ns: Namespace
) -> list[Rule]:
    """Rules with names as the servers spell them: a ``map`` entry or ``-s/-d`` may be written
    with or without the namespace prefix (``Archive`` or ``INBOX.Archive``).

    A source name is taken as written when a folder has it, else with the source's prefix;
    one that names no folder either way is a usage error.  A destination name gets the
    destination's prefix unless it has it already or is INBOX (or below it); an empty one
    (``-s`` without ``-d``) is the source folder's own name on the destination.
    """
    resolved = []
    for rule in rules:
        src = rule.src
        prefixed = src_ns.prefix + src
        if not _names_a_folder(src, src_folders) and src_ns.prefix and _names_a_folder(prefixed, src_folders):
            src = src_ns.prefix + src
        if not _names_a_folder(src, src_folders):
            raise UsageError(
                f"source folder {rule.src!r} ({rule.reason}) does not exist"
                f"{did_you_mean(rule.src, [f.name for f in src_folders if f.selectable])}; "
                "`fastsync show` lists the folders"
            )
        if not rule.dst:
            delimiter = next((f.delimiter for f in src_folders if same_name(f.name, src)), src_ns.delimiter)
            dst = absolute_name(relative_parts(Folder(src, delimiter), src_ns), dst_ns)
            resolved.append(Rule(src, dst, rule.reason))
            continue
        dst = rule.dst
        inbox_child = is_inbox(split(dst, dst_ns.delimiter)[0])
        if dst_ns.prefix and not inbox_child and not _has_prefix(dst, dst_ns.prefix):
            dst = dst_ns.prefix + dst
        reason = rule.reason if (src, dst) == (rule.src, rule.dst) else f"{rule.reason} {rule.src!r} -> {rule.dst!r}"
        resolved.append(Rule(src, dst, reason))
    return resolved


def close_names(name: str, names: Sequence[str], limit: int = 3) -> list[str]:
    """The names among *names* that *name* was probably meant to be: the same but for letter
    case alone if there is one, else those that begin with it ("Sent" for "Sent Items"),
    then those `difflib` finds close (a typing mistake), best first."""
    lowered = {n.lower(): n for n in reversed(names)}
    want = name.lower()
    found = [n for n in names if n.lower() == want and n != name]
    if found:
        return found[:limit]
    found += [n for n in names if n.lower().startswith(want) and want and n not in found]
    import difflib  # only for a name that is wrong: kept out of the worker processes' imports

    found += [lowered[c] for c in difflib.get_close_matches(want, list(lowered), n=limit, cutoff=0.7)]
    return list(dict.fromkeys(n for n in found if n != name))[:limit]


def did_you_mean(name: str, names: Sequence[str]) -> str:
    """`` (did you mean 'A' or 'B'?)`` after a name that names nothing (or "")."""
    close = close_names(name, names)
    return f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""


def _names_a_folder(name: str, folders: Sequence[Folder]) -> bool:
    # The same test as the mapping itself: "Old" covers "Old/a", not "Older".
    return any(matches(name, f.name, f.delimiter) is not None for f in folders)


def sort_out(
    src_folders: Sequence[Folder],
    dst_folders: Sequence[Folder],
    rules: Sequence[Rule],
    src_ns: Namespace | None = None,
    dst_ns: Namespace | None = None,
    include: Sequence[str] = (),
) -> tuple[list[FolderPair], list[FolderPair]]:
    """(the pairs to sync, the pairs left out with their reason).

    Left out: a source folder that is a view of others (`VIEWS`) when no rule names it and
    no ``--include`` pattern does, and any pair into the destination's \\All folder (Gmail
    shows every message there already; appending into it makes copies)."""
    src_ns = src_ns or infer_namespace(src_folders)
    dst_ns = dst_ns or infer_namespace(dst_folders)
    resolved = resolve_rules(rules, src_folders, src_ns, dst_ns)
    dst_all = {f.name for f in dst_folders if f.special_use == ALL}
    kept, left = [], []
    for pair in plan_pairs(src_folders, dst_folders, dst_ns, resolved, src_ns):
        named = any(re.search(pattern, pair.src) for pattern in include)
        if not resolved and pair.src_role in VIEWS and not named:
            left.append(dataclasses.replace(pair, reason=f"skipped: {pair.src_role}, a view of other folders"))
        elif pair.dst in dst_all:
            left.append(dataclasses.replace(pair, reason=f"skipped: the destination's {ALL} folder"))
        else:
            kept.append(pair)
    return kept, left


def exclusion(name: str, include: Sequence[str], exclude: Sequence[str]) -> str:
    """Why the source folder *name* is left out by ``--include`` / ``--exclude``; '' when it is taken.

    As imapsync does: Python regular expressions searched (`re.search`) in the decoded
    name with the source's own delimiter, as ``show`` prints it, so ``^Archive`` takes the
    subfolders of Archive too and ``^Archive$`` only Archive.  A folder is taken when it
    matches one of *include* (all are, without any) and none of *exclude*.
    """
    if include and not any(re.search(pattern, name) for pattern in include):
        return "not matched by --include " + " ".join(repr(pattern) for pattern in include)
    matched = next((pattern for pattern in exclude if re.search(pattern, name)), None)
    return f"excluded by --exclude {matched!r}" if matched is not None else ""


def filter_pairs(
    pairs: Iterable[FolderPair], include: Sequence[str], exclude: Sequence[str]
) -> tuple[list[FolderPair], list[FolderPair]]:
    """The pairs a run takes, and those `exclusion` leaves out (with the reason as theirs)."""
    taken, left_out = [], []
    for pair in pairs:
        why = exclusion(pair.src, include, exclude)
        if why:
            left_out.append(FolderPair(pair.src, pair.dst, why))
        else:
            taken.append(pair)
    return taken, left_out


def creation_problem(name: str, delimiter: str) -> str:
    """Why a destination would refuse to create folder *name* (its own spelling, with its
    *delimiter*), '' when nothing is known against it.  RFC 3501 section 5.1 leaves names to
    the server; servers that keep folders as files (Dovecot, Courier, Cyrus) refuse empty
    components, "." and "..", and Dovecot one that starts with "~"."""
    for part in split(name, delimiter):
        if part in ("", ".", ".."):
            return f"its name has a component {part!r}"
        if part.startswith("~"):
            return f"its name has a component starting with '~' ({part!r})"
    return ""
