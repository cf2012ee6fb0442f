"""Check that a destination account mirrors a source account, message by message.

``compare(src_factory, dst_factory)`` reads every folder of both accounts (BODY.PEEK[],
so nothing is marked \\Seen) and compares each folder pair as multisets of body hashes,
with flags and INTERNALDATE attached.  It reports per folder what a sync tool lost
(missing), copied twice (duplicated), invented (extra), rewrote (same message, other
bytes: an added ``X-TUID`` header, re-encoded lines...), and whose flags or internal
date it did not carry over.  Used by the benchmark (bench/run.py) and usable from tests::

    report = compare(lambda: src.client(), lambda: dst.client())
    assert report.ok, report.describe()

Folders pair by path: the source name split on the source's hierarchy separator and
joined with the destination's ("Archive/2020" -> "Archive.2020"); ``mapping`` overrides
that for some source folders.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import ssl
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime

import imapclient

from fastsync.rules.plan import comparable_flags

__all__ = ["Endpoint", "FolderReport", "Report", "compare"]

ClientFactory = Callable[[], imapclient.IMAPClient]

# Messages fetched per FETCH command.  The realistic profile has a tail of 6 MB messages,
# so a batch may hold a few dozen MB; a folder is never held in memory, only its hashes.
FETCH_BATCH = 200

# Examples of differences kept per folder and kind, for the human-readable report.
EXAMPLES = 3

_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)
_FIELD_NAME = re.compile(rb"^([!-9;-~]+):", re.MULTILINE)


@dataclass(frozen=True)
class Endpoint:
    """Where to log in: a picklable stand-in for a client factory (``Endpoint(...).client``)."""

    host: str
    port: int
    user: str
    password: str
    tls: bool = False
    ca_file: str | None = None

    def client(self) -> imapclient.IMAPClient:
        context = ssl.create_default_context(cafile=self.ca_file) if self.tls else None
        client = imapclient.IMAPClient(self.host, self.port, ssl=self.tls, ssl_context=context, timeout=120)
        client.login(self.user, self.password)
        return client


@dataclass(frozen=True)
class _Seen:
    """What is kept of one message: its hashes and metadata, never its body."""

    digest: str
    # Identity that survives a rewrite: the Message-Id, else a hash of the body text.
    identity: bytes
    flags: frozenset[str]
    internaldate: datetime
    size: int
    header_names: tuple[bytes, ...]


@dataclass
class FolderReport:
    """Differences in one folder pair; every count is a number of messages."""

    src_folder: str
    dst_folder: str
    src_messages: int = 0
    dst_messages: int = 0
    missing: int = 0
    duplicated: int = 0
    extra: int = 0
    changed: int = 0
    flags_differ: int = 0
    dates_differ: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicated or self.extra or self.changed or self.flags_differ
                    or self.dates_differ)


@dataclass
class Report:
    """The whole comparison.  ``ok`` ignores destination folders that are empty and unmapped."""

    folders: list[FolderReport] = field(default_factory=list)
    missing_folders: list[str] = field(default_factory=list)
    extra_folders: list[str] = field(default_factory=list)

    COUNTS = ("missing", "duplicated", "extra", "changed", "flags_differ", "dates_differ")

    @property
    def ok(self) -> bool:
        return not self.missing_folders and all(f.ok for f in self.folders)

    def total(self, kind: str) -> int:
        return sum(int(getattr(f, kind)) for f in self.folders)

    @property
    def src_messages(self) -> int:
        return self.total("src_messages")

    def summary(self) -> str:
        """One line: 'ok' or the non-zero totals."""
        if self.ok:
            return f"ok ({self.src_messages} messages)"
        parts = [f"{kind.replace('_', ' ')} {self.total(kind)}" for kind in self.COUNTS if self.total(kind)]
        if self.missing_folders:
            parts.append(f"folders missing {len(self.missing_folders)}")
        return ", ".join(parts)

    def describe(self) -> str:
        """Several lines: the summary, then each folder that differs, with examples."""
        lines = [self.summary()]
        for name in self.missing_folders:
            lines.append(f"  folder {name!r} missing on the destination")
        for name in self.extra_folders:
            lines.append(f"  folder {name!r} only on the destination (has messages)")
        for f in self.folders:
            if f.ok:
                continue
            counts = ", ".join(f"{k.replace('_', ' ')} {getattr(f, k)}" for k in self.COUNTS if getattr(f, k))
            lines.append(f"  {f.src_folder!r} -> {f.dst_folder!r}: {f.src_messages} / {f.dst_messages}: {counts}")
            lines.extend(f"      {example}" for example in f.examples)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, object]:
        totals = {kind: self.total(kind) for kind in self.COUNTS}
        return {"ok": self.ok, "summary": self.summary(), "totals": totals,
                "missing_folders": self.missing_folders, "extra_folders": self.extra_folders,
                "folders": [asdict(f) for f in self.folders]}


def _flag_set(flags: Iterable[bytes | str]) -> frozenset[str]:
    """Flags as fastsync's own check compares them (`fastsync.rules.plan.comparable_flags`)."""
    return comparable_flags(f.decode("utf-8", "replace") if isinstance(f, bytes) else f for f in flags)


def _identity(body: bytes) -> tuple[bytes, tuple[bytes, ...]]:
    end = body.find(b"\r\n\r\n")
    head = body[:end] if end >= 0 else body
    names = tuple(n.lower() for n in _FIELD_NAME.findall(head))
    match = _MESSAGE_ID.search(head)
    if match and match.group(1).strip():
        return b"id:" + b"".join(match.group(1).split()), names
    text = body[end + 4:] if end >= 0 else b""
    return b"body:" + hashlib.sha256(text).digest(), names


def _read_folder(client: imapclient.IMAPClient, folder: str) -> list[_Seen]:
    client.select_folder(folder, readonly=True)
    # imapclient 4's fetch() takes a list of UIDs, not "1:*"; SEARCH gives that list.
    uids = client.search("ALL")
    seen: list[_Seen] = []
    for start in range(0, len(uids), FETCH_BATCH):
        reply = client.fetch(uids[start:start + FETCH_BATCH], ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"])
        for data in reply.values():
            body = data[b"BODY[]"]
            identity, names = _identity(body)
            seen.append(_Seen(hashlib.sha256(body).hexdigest(), identity, _flag_set(data[b"FLAGS"]),
                              data[b"INTERNALDATE"], len(body), names))
    return seen


def _open(factory: ClientFactory) -> imapclient.IMAPClient:
    client = factory()
    # IMAPClient turns on imaplib's tracing, which formats the repr() of every response,
    # bodies included, even when nothing is logged: several times slower than the fetch.
    client._imap.debug = 0
    client.normalise_times = False  # keep the server's zone: compare instants, not wall times
    return client


def _folders(client: imapclient.IMAPClient) -> tuple[dict[str, bool], str]:
    """Folder name -> selectable, and the hierarchy separator."""
    names: dict[str, bool] = {}
    separator = "/"
    for flags, delimiter, name in client.list_folders():
        if delimiter:
            separator = delimiter.decode() if isinstance(delimiter, bytes) else delimiter
        lowered = {(f.decode() if isinstance(f, bytes) else f).lower() for f in flags}
        names[name] = not lowered & {"\\noselect", "\\nonexistent"}
    return names, separator


def _dst_name(src_name: str, src_sep: str, dst_sep: str) -> str:
    if src_name.upper() == "INBOX":
        return "INBOX"
    return dst_sep.join(src_name.split(src_sep))


def _describe_change(src: _Seen, dst: _Seen) -> str:
    added = sorted(set(dst.header_names) - set(src.header_names))
    removed = sorted(set(src.header_names) - set(dst.header_names))
    parts = [f"size {src.size} -> {dst.size}"]
    if added:
        parts.append("headers added: " + ", ".join(n.decode(errors="replace") for n in added))
    if removed:
        parts.append("headers removed: " + ", ".join(n.decode(errors="replace") for n in removed))
    return "; ".join(parts)


def _compare_folder(report: FolderReport, src: Sequence[_Seen], dst: Sequence[_Seen]) -> None:
    report.src_messages, report.dst_messages = len(src), len(dst)
    shown: Counter[str] = Counter()

    def note(kind: str, text: str) -> None:
        shown[kind] += 1
        if shown[kind] <= EXAMPLES:
            report.examples.append(f"{kind}: {text}")

    by_digest_src: dict[str, list[_Seen]] = defaultdict(list)
    by_digest_dst: dict[str, list[_Seen]] = defaultdict(list)
    for m in src:
        by_digest_src[m.digest].append(m)
    for m in dst:
        by_digest_dst[m.digest].append(m)
    pairs: list[tuple[_Seen, _Seen]] = []
    unmatched_src: list[_Seen] = []
    for digest, copies in by_digest_src.items():
        # Same bytes several times (a message filed twice): sorting pairs equal metadata.
        copies = sorted(copies, key=_metadata)
        others = sorted(by_digest_dst.get(digest, []), key=_metadata)
        pairs.extend(zip(copies, others))
        unmatched_src.extend(copies[len(others):])
        if len(others) > len(copies):
            report.duplicated += len(others) - len(copies)
            note("duplicated", f"{len(others)} copies of {len(copies)}: {_label(copies[0])}")
    # A message whose bytes changed on the way keeps its Message-Id (or its body text).
    waiting: dict[bytes, list[_Seen]] = defaultdict(list)
    for digest, copies in by_digest_dst.items():
        if digest not in by_digest_src:
            for m in copies:
                waiting[m.identity].append(m)
    for m in unmatched_src:
        candidates = waiting.get(m.identity)
        if candidates:
            other = candidates.pop()
            report.changed += 1
            note("changed", _describe_change(m, other))
            pairs.append((m, other))
        else:
            report.missing += 1
            note("missing", _label(m))
    for leftovers in waiting.values():
        for m in leftovers:
            report.extra += 1
            note("extra", _label(m))
    for a, b in pairs:
        if a.flags != b.flags:
            report.flags_differ += 1
            note("flags", f"{sorted(a.flags)} -> {sorted(b.flags)}: {_label(a)}")
        if a.internaldate != b.internaldate:
            report.dates_differ += 1
            note("internal date", f"{a.internaldate.isoformat()} -> {b.internaldate.isoformat()}: {_label(a)}")


def _metadata(m: _Seen) -> tuple[list[str], datetime]:
    return sorted(m.flags), m.internaldate


def _label(m: _Seen) -> str:
    kind, _, value = m.identity.partition(b":")
    shown = value[:60].decode("ascii", "replace") if kind == b"id" else "no Message-Id, body sha256 " + value[:6].hex()
    return f"{shown} ({m.size} bytes)"


def compare(
    src_factory: ClientFactory, dst_factory: ClientFactory, mapping: Mapping[str, str] | None = None
) -> Report:
    """Compare every selectable source folder with its destination folder.

    The factories return logged-in IMAPClient instances (one per side, closed here).
    ``mapping`` maps source folder names to destination names; unlisted folders pair by
    path with separator translation.  Both sides are read concurrently.
    """
    src_client, dst_client = _open(src_factory), _open(dst_factory)
    try:
        src_folders, src_sep = _folders(src_client)
        dst_folders, dst_sep = _folders(dst_client)
        report = Report()
        mapped: set[str] = set()
        with ThreadPoolExecutor(max_workers=2) as pool:
            for name, selectable in sorted(src_folders.items()):
                if not selectable:
                    continue
                target = (mapping or {}).get(name) or _dst_name(name, src_sep, dst_sep)
                mapped.add(target)
                folder = FolderReport(name, target)
                report.folders.append(folder)
                src_job = pool.submit(_read_folder, src_client, name)
                if target not in dst_folders or not dst_folders[target]:
                    src_messages = src_job.result()
                    if src_messages:  # an empty folder not created loses nothing
                        report.missing_folders.append(name)
                    _compare_folder(folder, src_messages, [])
                    continue
                dst_job = pool.submit(_read_folder, dst_client, target)
                _compare_folder(folder, src_job.result(), dst_job.result())
            for name, selectable in sorted(dst_folders.items()):
                if name in mapped or not selectable:
                    continue
                if dst_client.folder_status(name, [b"MESSAGES"])[b"MESSAGES"]:
                    report.extra_folders.append(name)
        for name in report.extra_folders:
            # Messages in a folder the source does not have are extra by definition.
            count = len(_read_folder(dst_client, name))
            report.folders.append(FolderReport("", name, dst_messages=count, extra=count))
        return report
    finally:
        for client in (src_client, dst_client):
            with contextlib.suppress(Exception):  # a broken connection is closed anyway
                client.logout()
