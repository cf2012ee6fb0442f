"""Fast reading of the FETCH responses fastsync asks for, and the small pieces of protocol
text around them: sequence sets, dates, SEARCH replies.

Pure-logic layer (no fastsync imports), used by the protocol edge.

imaplib hands over an untagged FETCH response as a list of items: plain lines, and
``(line, literal)`` pairs where the line ended with ``{n}``.  imapclient's general parser
tokenises every line byte by byte, which cost more CPU than the rest of a copy (about
140 µs a message).  The responses fastsync requests have a fixed, simple shape (UID,
RFC822.SIZE, FLAGS, INTERNALDATE and one body section sent as a literal), so this module
reads them with a few regular expressions: a message in the usual shape (the items in the
order asked) with one match (`usual_refs`, `usual_sizes`, `usual_bodies`, `usual_states`),
any other with a search per item (`records`).  Anything else (a body sent as a quoted
string or NIL, two literals, an item missing) is reported as not understood, and the
caller falls back to imapclient's parser for that message.  Pure functions, no I/O.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

_START = re.compile(rb"(\d+) \(")
_UID = re.compile(rb"[( ]UID (\d+)")
# Gmail's message id (X-GM-EXT-1): the same in every folder that shows the message.
_GM_MSGID = re.compile(rb"[( ]X-GM-MSGID (\d+)")
_SIZE = re.compile(rb"[( ]RFC822\.SIZE (\d+)")
_FLAGS = re.compile(rb"[( ]FLAGS \(([^)]*)\)")
_DATE = re.compile(rb'[( ]INTERNALDATE "([^"]+)"')
_LITERAL_AT_END = re.compile(rb"\{\d+\}$")
# A response line announcing a literal (RFC 3501 section 4.3: "{" number "}" CRLF, then
# that many bytes), and the one whose literal is a whole message body (``BODY[]``).
_LITERAL_SIZE = re.compile(rb"\{(\d+)\}$")
_BODY_LITERAL = re.compile(rb"^\* \d+ FETCH \(.*BODY\[\] \{(\d+)\}$")

_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTHS = {name.encode(): number for number, name in enumerate(_MONTH_NAMES, 1)}
# RFC 3501 section 9, date-time: "dd-Mon-yyyy hh:mm:ss +zzzz", day possibly space-padded.
# An APPEND carries the source's text as it is (no parsing and formatting per message), so
# the pattern checks the ranges an APPEND's date-time must respect.
_INTERNALDATE = re.compile(
    rb"\s?([012]?\d|3[01])-(" + "|".join(_MONTH_NAMES).encode() + rb")-(\d{4}) ([01]\d|2[0-3]):([0-5]\d):([0-5]\d)"
    rb" ([+-])(\d\d)([0-5]\d)$", re.IGNORECASE)


@dataclass
class Record:
    """One message's part of a FETCH response: its text (literals left out) and literals."""

    number: int
    items: list[object] = field(default_factory=list)
    text: bytes = b""
    literals: list[bytes] = field(default_factory=list)

    def gm_msgid(self) -> int | None:
        return _int(_GM_MSGID.search(self.text))

    def uid(self) -> int | None:
        return _int(_UID.search(self.text))

    def size(self) -> int | None:
        match = _SIZE.search(self.text)
        return None if match is None else size_number(match.group(1))

    def flags(self) -> tuple[str, ...] | None:
        match = _FLAGS.search(self.text)
        if match is None:
            return None
        return _flags(match.group(1))

    def internaldate(self) -> bytes | None:
        """The INTERNALDATE as sent, when it is a well-formed RFC 3501 date-time, its day
        zero-padded (``05-Jul-2021``, not `` 5-Jul-2021``: both are date-day-fixed, the
        first is what every server reads)."""
        match = _DATE.search(self.text)
        return None if match is None else _internaldate_as_sent(match.group(1))

    def literal(self) -> bytes | None:
        """The message's single literal, or None when it had none or several."""
        return self.literals[0] if len(self.literals) == 1 else None


# The longest response line read (a literal's bytes do not count), imaplib's own bound.
# imaplib refuses a longer one with a plain `error`, as a NO would be, while the rest of
# the line is still unread and every later reply out of step: the protocol edge reads
# lines itself and drops the connection instead (an abort), quoting `overlong`.
MAX_LINE_BYTES = 1_000_000


def overlong(line: bytes) -> str:
    """What to say of a response line longer than `MAX_LINE_BYTES`: no IMAP reply is that
    long (a literal carries anything long), so it is quoted by its start only."""
    return (
        f"the server sent a response line of more than {MAX_LINE_BYTES} bytes (starting {line[:40]!r}); "
        "no IMAP reply is that long"
    )


# RFC 9051 section 9: RFC822.SIZE is a number64, at most 2**63 - 1.
MAX_NUMBER64 = 2**63 - 1


def size_number(raw: bytes | int) -> int:
    """An RFC822.SIZE as fastsync keeps it: the number, or -1 ("not known", which decides
    nothing: `plan.size_reason`) for one beyond what the protocol allows, so that no JSON
    document, pipe message or SQLite row has to hold a number that 64 bits cannot."""
    value = int(raw)
    return value if 0 <= value <= MAX_NUMBER64 else -1


def _int(match: re.Match[bytes] | None) -> int | None:
    return int(match.group(1)) if match else None


def _internaldate_as_sent(raw: bytes) -> bytes | None:
    if not _INTERNALDATE.match(raw):
        return None
    text = raw.lstrip()
    return b"0" + text if text[1:2] == b"-" else text


# The shape of the responses fastsync reads by the thousand, as Dovecot and most servers
# send them (the items in the order asked, one literal, then ")"): the survey's UID,
# RFC822.SIZE and identity header fields, the copy's UID, FLAGS, INTERNALDATE and body,
# and check's (below).  A message in that shape is read with one match instead of
# `records` and a search per item (a third of the survey's time, bench/README.md).
_REF_SHAPE = re.compile(rb"\d+ \(UID (\d+) RFC822\.SIZE (\d+) BODY\[HEADER\.FIELDS \([^()]*\)\] \{\d+\}")
_BODY_SHAPE = re.compile(rb'\d+ \(UID (\d+) FLAGS \(([^()]*)\) INTERNALDATE "([^"]+)" BODY\[\] \{\d+\}')
# `check` and --sync-flags: UID, RFC822.SIZE, FLAGS, INTERNALDATE, identity header fields.
_STATE_SHAPE = re.compile(
    rb'\d+ \(UID (\d+) RFC822\.SIZE (\d+) FLAGS \(([^()]*)\) INTERNALDATE "([^"]+)" '
    rb"BODY\[HEADER\.FIELDS \([^()]*\)\] \{\d+\}"
)
# A survey of a folder whose identities are not needed (`usual_sizes`): one line, no literal.
_SIZE_SHAPE = re.compile(rb"\d+ \(UID (\d+) RFC822\.SIZE (\d+)\)")


def _leading(data: Sequence[object], shape: re.Pattern[bytes]) -> tuple[list[tuple[re.Match[bytes], bytes]], int]:
    """The messages at the start of *data* whose response has *shape* (its line, its
    literal, then ")"), as (match, literal); and the index of the first item of the rest."""
    found: list[tuple[re.Match[bytes], bytes]] = []
    match = shape.fullmatch
    index, end = 0, len(data) - 1
    while index < end:
        item = data[index]
        if type(item) is not tuple or data[index + 1] != b")":
            break
        line, literal = item
        shaped = match(line)
        if shaped is None:
            break
        found.append((shaped, literal))
        index += 2
    return found, index


def usual_refs(data: Sequence[object]) -> tuple[list[tuple[int, int, bytes]], Sequence[object]]:
    """(UID, size, header fields) of the leading messages of a survey FETCH in the usual
    shape, and the rest of *data* (from a message of another shape, or an unsolicited
    response, on) for `records`: the order of messages is kept."""
    found, index = _leading(data, _REF_SHAPE)
    return [(int(m.group(1)), size_number(m.group(2)), literal) for m, literal in found], data[index:]


def usual_sizes(data: Sequence[object]) -> tuple[list[tuple[int, int]], Sequence[object]]:
    """(UID, size) of the leading messages of a ``(UID RFC822.SIZE)`` FETCH in the usual
    shape (a line each, the items in that order), and the rest of *data* for `records`."""
    found: list[tuple[int, int]] = []
    match = _SIZE_SHAPE.fullmatch
    for index, item in enumerate(data):
        shaped = match(item) if type(item) is bytes else None
        if shaped is None:
            return found, data[index:]
        found.append((int(shaped.group(1)), size_number(shaped.group(2))))
    return found, data[len(data):]


def usual_bodies(data: Sequence[object]) -> tuple[list[tuple[int, tuple[str, ...], bytes, bytes]], Sequence[object]]:
    """(UID, flags, INTERNALDATE as sent, body) of the leading messages of a copy FETCH in
    the usual shape (the date well-formed: see `Record.internaldate`), and the rest of
    *data* for `records`."""
    found, rest = _dated_leading(data, _BODY_SHAPE, 3)
    return [(int(m.group(1)), _flags(m.group(2)), date, literal) for m, date, literal in found], rest


def usual_states(
    data: Sequence[object],
) -> tuple[list[tuple[int, int, tuple[str, ...], bytes, bytes]], Sequence[object]]:
    """(UID, size, flags, INTERNALDATE as sent, header fields) of the leading messages of a
    `check` FETCH in the usual shape, and the rest of *data* for `records`."""
    found, rest = _dated_leading(data, _STATE_SHAPE, 4)
    return [
        (int(m.group(1)), size_number(m.group(2)), _flags(m.group(3)), date, literal) for m, date, literal in found
    ], rest


def _dated_leading(
    data: Sequence[object], shape: re.Pattern[bytes], date_group: int
) -> tuple[list[tuple[re.Match[bytes], bytes, bytes]], Sequence[object]]:
    """`_leading` up to the first message whose INTERNALDATE is malformed: the general
    reading says what is wrong with it."""
    found, index = _leading(data, shape)
    out: list[tuple[re.Match[bytes], bytes, bytes]] = []
    for position, (m, literal) in enumerate(found):
        date = _internaldate_as_sent(m.group(date_group))
        if date is None:
            return out, data[2 * position :]
        out.append((m, date, literal))
    return out, data[index:]


def _flags(text: bytes) -> tuple[str, ...]:
    return tuple(f.decode("utf-8", "replace") for f in text.split())


def records(data: Iterable[object]) -> Iterator[Record]:
    """Group imaplib's untagged FETCH items by message.

    imaplib has already taken "FETCH" out: a message's first item starts "<number> (".
    """
    current: Record | None = None
    parts: list[bytes] = []
    for item in data:
        if isinstance(item, tuple):
            line, literal = item[0], item[1]
        elif isinstance(item, bytes):
            line, literal = item, None
        else:
            continue
        start = _START.match(line)
        if start:
            if current is not None:
                current.text = b"".join(parts)
                yield current
            current = Record(int(start.group(1)))
            parts = []
        if current is None:
            continue
        current.items.append(item)
        if literal is not None:
            # The "{n}" marker leaves the text; a space keeps the next item separated.
            parts.append(_LITERAL_AT_END.sub(b"", line) + b" ")
            current.literals.append(literal)
        else:
            parts.append(line)
    if current is not None:
        current.text = b"".join(parts)
        yield current


def literal_size(line: bytes) -> int | None:
    """The size of the literal a response line (CRLF removed) announces, or None."""
    return _int(_LITERAL_SIZE.search(line))


def body_literal(line: bytes) -> tuple[int, int | None] | None:
    """(literal size, UID or None) when *line* starts an untagged FETCH whose last item
    before the literal is the whole body (``BODY[] {n}``), else None.  The UID is None when
    the server sends it after the body (RFC 3501 section 7.4.2 fixes no order of items)."""
    match = _BODY_LITERAL.match(line)
    if match is None:
        return None
    return int(match.group(1)), _int(_UID.search(line))


def uid_in(text: bytes) -> int | None:
    """The UID item of a piece of FETCH response text, or None."""
    return _int(_UID.search(b" " + text))


def parse_internaldate(raw: bytes) -> dt.datetime | None:
    """An INTERNALDATE as an aware datetime (its own offset kept), or None when malformed."""
    match = _INTERNALDATE.match(raw)
    if not match:
        return None
    day, month_name, year, hour, minute, second, sign, off_h, off_m = match.groups()
    month = _MONTHS.get(month_name.capitalize())
    if month is None:
        return None
    offset = dt.timedelta(hours=int(off_h), minutes=int(off_m))
    try:
        return dt.datetime(
            int(year), month, int(day), int(hour), int(minute), int(second),
            tzinfo=dt.timezone(-offset if sign == b"-" else offset),
        )
    except ValueError:
        return None


def format_internaldate(moment: dt.datetime) -> bytes:
    """An aware datetime as an RFC 3501 date-time, with its own offset (no locale involved)."""
    offset = moment.utcoffset() or dt.timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    month = _MONTH_NAMES[moment.month - 1]
    return (
        f"{moment.day:02d}-{month}-{moment.year:04d} {moment.hour:02d}:{moment.minute:02d}:{moment.second:02d} "
        f"{sign}{minutes // 60:02d}{minutes % 60:02d}"
    ).encode("ascii")


def sequence_set(numbers: Sequence[int]) -> str:
    """Compact IMAP sequence set (RFC 3501 section 9, ``sequence-set``): 1,2,3,7 -> ``1:3,7``."""
    ordered = sorted(set(numbers))
    parts = []
    start = prev = ordered[0] if ordered else 0
    for n in ordered[1:]:
        if n == prev + 1:
            prev = n
            continue
        parts.append(f"{start}:{prev}" if prev != start else str(start))
        start = prev = n
    if ordered:
        parts.append(f"{start}:{prev}" if prev != start else str(start))
    return ",".join(parts)


def search_dates(since: dt.date | None, before: dt.date | None) -> list[str]:
    """SEARCH keys for a window of internal dates: ``SINCE 1-Feb-2024 BEFORE 3-Mar-2024``
    (RFC 3501 section 6.4.4: dates without time, compared with the date of each message's
    internal date in its own zone; month names in English whatever the locale)."""
    keys = []
    for key, day in (("SINCE", since), ("BEFORE", before)):
        if day is not None:
            keys += [key, f"{day.day}-{_MONTH_NAMES[day.month - 1]}-{day.year:04d}"]
    return keys


def search_uids(data: Iterable[object]) -> set[int]:
    """The numbers of untagged SEARCH replies as imaplib hands them over (``b"4 7 9"``, or
    ``b""`` when nothing matched)."""
    return {int(n) for item in data if isinstance(item, bytes) for n in item.split() if n.isdigit()}


def batches(count: int, size: int) -> Iterator[str]:
    """Sequence sets covering messages 1..*count*, *size* at a time."""
    for start in range(1, count + 1, size):
        yield f"{start}:{min(count, start + size - 1)}"


def uid_sets(uids: Sequence[int], batch: int) -> Iterator[str]:
    """`sequence_set`s of at most *batch* UIDs each, ascending: some servers cap command
    lines at 8 or 64 KB, and scattered UIDs make a long one."""
    ordered = sorted(set(uids))
    for start in range(0, len(ordered), batch):
        yield sequence_set(ordered[start : start + batch])


# -- LIST, STATUS and SELECT replies ---------------------------------------------------------

# RFC 3501 section 7.2.2: "(" flags ")" SP (quoted delimiter / NIL) SP mailbox, where the
# mailbox is an astring (an atom may hold "[" and "]": ASTRING-CHAR), a quoted string or a
# literal, and may be followed by extended data (RFC 5258 mbox-list-extended), ignored here.
_LIST_HEAD = re.compile(rb'\(([^()]*)\) (NIL|"(?:[^"\\]|\\.)") ', re.IGNORECASE)
_QUOTED = re.compile(rb'"((?:[^"\\]|\\.)*)"')
_ATOM = re.compile(rb'[^\x00-\x20\x7f(){"%*\\]+')


def unquote(text: bytes) -> bytes:
    """The value of a quoted string's inside (RFC 3501 section 9: quoted-specials escaped)."""
    return re.sub(rb"\\(.)", rb"\1", text)


def list_entries(items: Iterable[object]) -> Iterator[tuple[tuple[bytes, ...], bytes, bytes]]:
    """(flags, delimiter, name as sent) of each LIST reply, from imaplib's items (a line, or a
    ``(line, literal)`` pair when the name came as a literal).  Raises ValueError naming the
    item that is not a LIST reply."""
    for item in items:
        literal: bytes | None = None
        if isinstance(item, tuple) and len(item) == 2 and all(isinstance(part, bytes) for part in item):
            line, literal = item
        elif isinstance(item, bytes):
            line = item
        elif item is None:
            continue
        else:
            raise ValueError(repr(item))
        if literal is None and (not line or line.startswith(b" ")):
            # What followed a literal name on its line: nothing, or RFC 5258 extended data.
            continue
        head = _LIST_HEAD.match(line)
        if head is None:
            raise ValueError(repr(line))
        flags = tuple(head.group(1).split())
        delimiter = b"" if head.group(2).upper() == b"NIL" else unquote(head.group(2)[1:-1])
        yield flags, delimiter, _list_name(line[head.end():], literal, line)


def _list_name(rest: bytes, literal: bytes | None, line: bytes) -> bytes:
    if literal is not None:
        if not _LITERAL_SIZE.fullmatch(rest):
            raise ValueError(repr(line))
        return literal
    name, after = _astring(rest, line)
    if after and not after.startswith(b" "):
        raise ValueError(repr(line))
    return name


_STATUS_VALUES = re.compile(rb"\s*\(([^()]*)\)\s*")


def status_entries(items: Sequence[object]) -> Iterator[tuple[bytes, dict[str, bytes]] | ValueError]:
    """(folder name as sent, {item: value as sent}) of each STATUS reply (RFC 3501 section
    7.2.4: mailbox SP "(" [item SP value *(SP item SP value)] ")"), from imaplib's items; the
    mailbox is an astring or a literal (then its values are the next item).  A reply that
    cannot be read comes as a ValueError naming it, in its place."""
    index = 0
    while index < len(items):
        item = items[index]
        index += 1
        if item is None:
            continue
        try:
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], bytes):
                name, rest = item[1], items[index] if index < len(items) else b""
                index += 1
            elif isinstance(item, bytes):
                name, rest = _astring(item, item)
            else:
                raise ValueError(repr(item))
            yield name, _status_values(rest if isinstance(rest, bytes) else b"", item)
        except ValueError as exc:
            yield exc


def _astring(text: bytes, line: object) -> tuple[bytes, bytes]:
    """A leading quoted string or atom of *text*, unquoted, and what follows it."""
    quoted = _QUOTED.match(text)
    if quoted is not None:
        return unquote(quoted.group(1)), text[quoted.end():]
    atom = _ATOM.match(text)
    if atom is None:
        raise ValueError(repr(line))
    return atom.group(0), text[atom.end():]


def _status_values(rest: bytes, line: object) -> dict[str, bytes]:
    match = _STATUS_VALUES.fullmatch(rest)
    words = match.group(1).split() if match else []
    if match is None or len(words) % 2:
        raise ValueError(repr(line))
    return {words[i].decode("ascii", "replace").upper(): words[i + 1] for i in range(0, len(words), 2)}


_NAMESPACE_TOKEN = re.compile(rb'\s*(?:(\()|(\))|"((?:[^"\\]|\\.)*)"|(NIL)\b|([^\s()"]+))', re.IGNORECASE)


def personal_namespaces(line: bytes) -> list[tuple[bytes, bytes]] | None:
    """(prefix, delimiter) of each personal namespace of a NAMESPACE reply's line (RFC 2342
    section 5: three lists or NIL, each namespace "(" prefix SP delimiter *(extension) ")");
    extension data after the delimiter is ignored; None when the line cannot be read."""
    stack: list[list[object]] = [[]]
    pos = 0
    while pos < len(line):
        token = _NAMESPACE_TOKEN.match(line, pos)
        if token is None:
            return None
        pos = token.end()
        if token.group(1):
            stack.append([])
        elif token.group(2):
            if len(stack) < 2:
                return None
            done = stack.pop()
            stack[-1].append(done)
        elif token.group(3) is not None:
            stack[-1].append(unquote(token.group(3)))
        elif token.group(4):
            stack[-1].append(None)
        else:
            stack[-1].append(token.group(5))
    if len(stack) != 1 or not stack[0]:
        return None
    personal = stack[0][0]
    if personal is None:
        return []
    found = []
    for entry in personal if isinstance(personal, list) else [None]:
        if not isinstance(entry, list) or len(entry) < 2 or not isinstance(entry[0], bytes):
            return None
        found.append((entry[0], entry[1] if isinstance(entry[1], bytes) else b""))
    return found


def number(value: object) -> int | None:
    """A reply's number (RFC 3501 number: digits) as imaplib or imapclient hand it over, or
    None when it is not one (NIL, a word, a negative or fractional value)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 0 else None
    if isinstance(value, bytes | str) and value.isascii() and value.isdigit():
        return int(value)
    return None


_PERMANENTFLAGS = re.compile(rb"\[PERMANENTFLAGS \(([^()]*)\)\]", re.IGNORECASE)


def permanent_flags(ok_lines: Iterable[object]) -> tuple[str, ...] | None:
    """The flags of a ``[PERMANENTFLAGS (...)]`` response code (RFC 3501 section 7.1) among the
    untagged OK replies of a SELECT, or None when none came."""
    for line in ok_lines:
        if isinstance(line, bytes):
            match = _PERMANENTFLAGS.search(line)
            if match is not None:
                return _flags(match.group(1))
    return None


def text_of(value: Any) -> str:
    """A reply item as text (bytes decoded as UTF-8, lists joined by spaces)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list | tuple):
        return " ".join(text_of(v) for v in value)
    return str(value)
