"""Deterministic mail corpora for fastsync's tests and benchmarks, and a fast IMAP seeder.

``generate(profile, seed, scale)`` returns the same messages, byte for byte, for the same
arguments on every machine (everything derives from ``random.Random(seed)``; no clock,
no locale).  Messages are RFC 5322 with CRLF line endings; some carry raw UTF-8 in
headers (RFC 6532) and 8-bit bodies (RFC 6152 ``8bit`` transfer encoding), because real
mailboxes do and IMAP servers store them verbatim.

``seed_account(...)`` loads a list of messages into an account with MULTIAPPEND
(RFC 3502) so that tens of thousands of messages take seconds, not minutes.

Profiles (counts before ``scale``):

* ``tiny``: 300 messages in three folders, with awkward names (non-ASCII, ``&``, spaces,
  ``[brackets]``, nesting), duplicate Message-Ids, messages without Message-Id, 8-bit text.
* ``small``: 20,000 messages of ~2 KB in INBOX and Archive.
* ``realistic``: 10,000 messages, log-normal sizes (median ~12 KB) with a tail of
  multi-MB base64 attachments, a dozen folders, ~2.7 % without Message-Id, flags and
  custom keywords, internal dates over 2016-2023.
* ``large``: 200 messages of ~2 MB (base64 attachment).
* ``huge``: 8 messages of ~41 MB and one of ~110 MB (issue 17: the memory of very large
  messages; Office 365 accepts up to 150 MB).
* ``scale``: 100,000 messages of ~1.5 KB in INBOX.
"""

from __future__ import annotations

import base64
import math
import random
import ssl as _ssl
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import imapclient
from imapclient.exceptions import IMAPClientError

__all__ = ["Message", "PROFILES", "generate", "seed_account", "folders_of"]


@dataclass(frozen=True)
class Message:
    """One message to put in an account; ``folder`` always uses "/" as hierarchy separator."""

    folder: str
    body: bytes
    flags: tuple[str, ...]
    internaldate: datetime  # timezone-aware, whole seconds (IMAP's resolution)


PROFILES = ("tiny", "small", "realistic", "large", "huge", "scale")

# Dates are relative to a fixed instant, never to "now", so corpora are reproducible.
_EPOCH = datetime(2024, 1, 1, tzinfo=timezone.utc)
_ZONES = (
    timezone.utc,
    timezone(timedelta(hours=1)),
    timezone(timedelta(hours=2)),
    timezone(timedelta(hours=-5)),
    timezone(timedelta(hours=5, minutes=30)),
)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

_WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which "
    "but have an they you were her she there been one all we their has would when if so no what "
    "up out about into than them can only other new some could time these two may then do first "
    "any my now such like our over man me even most made after also did many before must through "
    "back years where much your way well down should because each just those people how too little "
    "state good very make world still own see men work long get here between both life being under "
    "never day same another know while last might us great old year off come since against go came "
    "right used take three meeting invoice report project budget review deadline server backup"
).split()
_WORDS_8BIT = "café été naïve façade déjà-vu Zürich Ærøskøbing smörgåsbord 東京 Привет niño €uro".split()
_NAMES = (
    ("Alice Martin", "alice@example.org"),
    ("Bob Durand", "bob@example.net"),
    ("Chloé Lefèvre", "chloe@example.fr"),
    ("Dmitri Ivanov", "dmitri@example.com"),
    ("Eve", "eve@example.org"),
    ("François Müller", "francois@example.de"),
    ("Grace Hopper", "grace@example.edu"),
    ("Hiro Tanaka", "hiro@example.jp"),
    ("mailer-daemon", "MAILER-DAEMON@example.com"),
    ("Newsletter", "news@lists.example.com"),
)
_SUBJECTS = (
    "Weekly report",
    "Re: budget 2020",
    "Invoice #{n}",
    "Meeting notes",
    "Fwd: server migration",
    "Question about the project",
    "[list] digest {n}",
    "Your order has shipped",
    "Holiday photos",
    "Re: Re: deadline",
)
_SUBJECTS_8BIT = ("Réunion de projet", "Café demain ?", "Grüße aus Zürich", "Отчёт {n}", "会議のお知らせ")

# Folders for the realistic profile with their share of messages.
_REALISTIC_FOLDERS: tuple[tuple[str, float], ...] = (
    ("INBOX", 0.40),
    ("Sent", 0.14),
    ("Drafts", 0.005),
    ("Trash", 0.02),
    ("Junk", 0.015),
    ("Archive/2019", 0.10),
    ("Archive/2020", 0.10),
    ("Archive/2021", 0.06),
    ("Projets/Café & [data]", 0.05),
    ("Projets/Old stuff", 0.03),
    ("Lists/python-dev", 0.06),
    ("Notes perso", 0.01),
    ("Reçus", 0.01),
)
_TINY_FOLDERS: tuple[tuple[str, int], ...] = (
    ("INBOX", 150),
    ("Projets/Café & [data]", 90),
    ("Archive/Été 2020", 60),
)


class _Text:
    """A pool of wrapped text lines to slice bodies from: far faster than drawing words per message."""

    def __init__(self, rng: random.Random, eight_bit: bool, lines: int = 4000) -> None:
        vocabulary = list(_WORDS) + (list(_WORDS_8BIT) * 3 if eight_bit else [])
        out: list[bytes] = []
        for _ in range(lines):
            words = rng.choices(vocabulary, k=rng.randint(6, 12))
            line = " ".join(words)
            if rng.random() < 0.1:
                line = line.capitalize() + "."
            out.append(line.encode("utf-8"))  # <= 12 words: always under RFC 5322's 78 chars
        self.lines = out
        self.blob = b"\r\n".join(out) + b"\r\n"
        # Byte offset of each line start, to cut on line boundaries.
        self.starts: list[int] = []
        pos = 0
        for line in out:
            self.starts.append(pos)
            pos += len(line) + 2

    def take(self, rng: random.Random, size: int) -> bytes:
        """About ``size`` bytes of whole CRLF-terminated lines."""
        chunks: list[bytes] = []
        remaining = max(size, 1)
        while remaining > 0:
            start = self.starts[rng.randrange(len(self.starts))]
            piece = self.blob[start : start + remaining]
            cut = piece.rfind(b"\r\n")
            if cut < 0:  # shorter than one line: take the whole line anyway
                end = self.blob.find(b"\r\n", start)
                piece = self.blob[start : end + 2]
            else:
                piece = piece[: cut + 2]
            chunks.append(piece)
            remaining -= len(piece)
        return b"".join(chunks)


def _rfc5322_date(moment: datetime) -> str:
    offset = moment.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return (
        f"{_DAYS[moment.weekday()]}, {moment.day} {_MONTHS[moment.month - 1]} {moment.year} "
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d} {sign}{minutes // 60:02d}{minutes % 60:02d}"
    )


def _encoded_word(text: str) -> str:
    """RFC 2047 B-encoding, the 7-bit way of carrying non-ASCII in headers."""
    return "=?UTF-8?B?" + base64.b64encode(text.encode("utf-8")).decode("ascii") + "?="


def _base64_lines(data: bytes) -> bytes:
    # RFC 2045 6.8: lines of at most 76 characters.
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


class _Builder:
    """Builds message bytes; all randomness comes from the generator's ``rng``."""

    def __init__(self, rng: random.Random, seed: int, profile: str) -> None:
        self.rng = rng
        self.seed = seed
        self.profile = profile
        self.text7 = _Text(rng, eight_bit=False)
        self.text8 = _Text(rng, eight_bit=True)

    def message_id(self, index: int) -> str:
        return f"<{self.profile}.{self.seed}.{index}.{self.rng.getrandbits(40):010x}@fastsync.test>"

    def build(
        self,
        index: int,
        date: datetime,
        size: int,
        *,
        message_id: str | None,
        eight_bit: bool = False,
        attachment: int = 0,
        sent: bool = False,
    ) -> bytes:
        rng = self.rng
        sender = _NAMES[rng.randrange(len(_NAMES))]
        recipient = _NAMES[rng.randrange(len(_NAMES))]
        if sent:
            sender = ("Me Myself", "me@fastsync.test")
        subjects = _SUBJECTS_8BIT if eight_bit else _SUBJECTS
        subject = subjects[rng.randrange(len(subjects))].format(n=index)

        def address(pair: tuple[str, str]) -> str:
            name, addr = pair
            if name.isascii():
                return f'"{name}" <{addr}>'
            # Non-ASCII display names: raw UTF-8 (RFC 6532) in 8-bit messages, RFC 2047 otherwise.
            return f"{name if eight_bit else _encoded_word(name)} <{addr}>"

        if not subject.isascii() and not eight_bit:
            subject = _encoded_word(subject)
        headers = [
            f"Return-Path: <{sender[1]}>",
            f"From: {address(sender)}",
            f"To: {address(recipient)}",
            f"Subject: {subject}",
            f"Date: {_rfc5322_date(date)}",
        ]
        if message_id is not None:
            headers.append(f"Message-ID: {message_id}")
        headers.append("MIME-Version: 1.0")
        text = (self.text8 if eight_bit else self.text7).take(rng, max(size - 600, 40))
        cte = "8bit" if eight_bit else "7bit"
        if attachment:
            boundary = f"=_fastsync_{index}_{rng.getrandbits(32):08x}"
            headers.append(f'Content-Type: multipart/mixed; boundary="{boundary}"')
            payload = _base64_lines(rng.randbytes(attachment))
            body = b"".join(
                [
                    b"This is a multi-part message in MIME format.\r\n",
                    f"--{boundary}\r\n".encode(),
                    f"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: {cte}\r\n\r\n".encode(),
                    text,
                    f"--{boundary}\r\n".encode(),
                    f'Content-Type: application/octet-stream; name="data-{index}.bin"\r\n'.encode(),
                    b"Content-Transfer-Encoding: base64\r\n",
                    f'Content-Disposition: attachment; filename="data-{index}.bin"\r\n\r\n'.encode(),
                    payload,
                    f"--{boundary}--\r\n".encode(),
                ]
            )
        else:
            headers.append("Content-Type: text/plain; charset=utf-8")
            headers.append(f"Content-Transfer-Encoding: {cte}")
            body = text
        return "\r\n".join(headers).encode("utf-8") + b"\r\n\r\n" + body


def _date(rng: random.Random, years: float) -> datetime:
    """A whole-second instant within ``years`` before the fixed epoch, in one of a few zones."""
    seconds = rng.randrange(int(years * 365.25 * 86400))
    zone = _ZONES[rng.randrange(len(_ZONES))]
    return (_EPOCH - timedelta(seconds=seconds)).astimezone(zone)


def _flags(rng: random.Random, sent: bool = False) -> tuple[str, ...]:
    flags: list[str] = []
    if sent or rng.random() < 0.85:
        flags.append("\\Seen")
    if not sent and rng.random() < 0.10:
        flags.append("\\Answered")
    if rng.random() < 0.03:
        flags.append("\\Flagged")
    if rng.random() < 0.02:  # custom keywords (RFC 3501 flag-keyword), e.g. client labels
        flags.append(rng.choice(("$Label1", "Work", "$Forwarded", "$Label5")))
    return tuple(flags)


def _count(n: int, scale: float) -> int:
    return max(1, round(n * scale))


def generate(profile: str, seed: int = 1, scale: float = 1.0) -> list[Message]:
    """Return the messages of ``profile`` for ``seed``; ``scale`` multiplies the message count.

    Messages of one folder are returned together, in the order they should be appended.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    if scale <= 0:
        raise ValueError("scale must be positive")
    rng = random.Random(f"fastsync:{profile}:{seed}")  # str seeds are hashed deterministically
    build = _Builder(rng, seed, profile)
    messages: list[Message]
    if profile == "tiny":
        messages = _tiny(rng, build, scale)
    elif profile == "small":
        n = _count(20_000, scale)
        messages = [
            Message(
                "INBOX" if rng.random() < 0.7 else "Archive",
                build.build(i, d := _date(rng, 4), rng.randint(1700, 2300), message_id=build.message_id(i)),
                _flags(rng),
                d,
            )
            for i in range(n)
        ]
    elif profile == "scale":
        n = _count(100_000, scale)
        messages = [
            Message(
                "INBOX",
                build.build(i, d := _date(rng, 6), rng.randint(1200, 1800), message_id=build.message_id(i)),
                _flags(rng),
                d,
            )
            for i in range(n)
        ]
    elif profile == "large":
        n = _count(200, scale)
        messages = []
        for i in range(n):
            d = _date(rng, 3)
            raw = 2_000_000 * 3 // 4  # base64 inflates by 4/3 (+ CRLF every 76 chars)
            body = build.build(i, d, 2000, message_id=build.message_id(i), attachment=raw)
            messages.append(Message("INBOX", body, _flags(rng), d))
    elif profile == "huge":
        sizes = [40_000_000] * _count(8, scale) + [107_000_000]
        messages = []
        for i, size in enumerate(sizes):
            d = _date(rng, 3)
            body = build.build(i, d, 2000, message_id=build.message_id(i), attachment=size * 3 // 4)
            messages.append(Message("INBOX", body, _flags(rng), d))
    else:
        messages = _realistic(rng, build, _count(10_000, scale))
    # Group by folder (stable): seeding appends folder by folder.
    order = {name: k for k, name in enumerate(dict.fromkeys(m.folder for m in messages))}
    return sorted(messages, key=lambda m: order[m.folder])


def _realistic(rng: random.Random, build: _Builder, n: int) -> list[Message]:
    names = [name for name, _ in _REALISTIC_FOLDERS]
    weights = [w for _, w in _REALISTIC_FOLDERS]
    mu, sigma = math.log(12_000), 1.0  # median 12 KB; mean ~20 KB
    out: list[Message] = []
    for i in range(n):
        folder = rng.choices(names, weights)[0]
        sent = folder in ("Sent", "Drafts")
        if folder.startswith("Archive/"):
            year = int(folder[-4:])
            d = datetime(year, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=rng.randrange(365 * 86400))
            d = d.astimezone(_ZONES[rng.randrange(len(_ZONES))])
        else:
            d = _date(rng, 8)
        size = int(min(rng.lognormvariate(mu, sigma), 1_500_000))
        attachment = 0
        if rng.random() < 0.004:  # the tail: ~40 per 10,000 with 1-6 MB attachments
            attachment = rng.randint(750_000, 4_500_000)  # x4/3 once base64-encoded
        elif size > 60_000 and rng.random() < 0.5:  # big messages are mostly attachments
            attachment, size = size, 3_000
        message_id = None if rng.random() < 0.027 else build.message_id(i)
        eight_bit = rng.random() < 0.08 or folder == "Projets/Café & [data]"
        body = build.build(
            i, d, max(size, 800), message_id=message_id, eight_bit=eight_bit, attachment=attachment, sent=sent
        )
        flags = ("\\Draft", "\\Seen") if folder == "Drafts" else _flags(rng, sent=sent)
        out.append(Message(folder, body, flags, d))
    return out


def _tiny(rng: random.Random, build: _Builder, scale: float) -> list[Message]:
    out: list[Message] = []
    index = 0
    for folder, count in _TINY_FOLDERS:
        n = _count(count, scale)
        first = len(out)
        for k in range(n):
            d = _date(rng, 5)
            message_id = None if k % 25 == 7 else build.message_id(index)  # 4 % without Message-Id
            eight_bit = k % 3 == 0
            body = build.build(index, d, rng.randint(500, 6000), message_id=message_id, eight_bit=eight_bit)
            out.append(Message(folder, body, _flags(rng), d))
            index += 1
        if n >= 3:
            # Same Message-Id twice in one folder: an exact copy (a message filed twice) ...
            copied = out[first + 1]
            out.append(Message(folder, copied.body, copied.flags, copied.internaldate))
            # ... and a different message reusing another's Message-Id (broken mailers do that).
            reused = _message_id_of(out[first + 2].body)
            assert reused is not None
            d = _date(rng, 5)
            body = build.build(index, d, 1200, message_id=reused, eight_bit=True)
            out.append(Message(folder, body, ("\\Seen", "$Label1"), d))
            index += 1
    return out


def _message_id_of(body: bytes) -> str | None:
    head = body.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"message-id:"):
            return line.split(b":", 1)[1].strip().decode("ascii")
    return None


def folders_of(messages: Iterable[Message]) -> list[str]:
    """Folder names used by ``messages`` plus their parents, parents first ("/" separated)."""
    seen: dict[str, None] = {}
    for message in messages:
        parts = message.folder.split("/")
        for depth in range(1, len(parts) + 1):
            seen.setdefault("/".join(parts[:depth]), None)
    return list(seen)


def _batches(messages: Sequence[Message], max_bytes: int, max_count: int) -> Iterator[list[Message]]:
    batch: list[Message] = []
    size = 0
    for message in messages:
        if batch and (size + len(message.body) > max_bytes or len(batch) >= max_count):
            yield batch
            batch, size = [], 0
        batch.append(message)
        size += len(message.body)
    if batch:
        yield batch


def seed_account(
    host: str,
    port: int,
    user: str,
    password: str,
    messages: Sequence[Message],
    separator: str = "/",
    ssl: bool = False,
    ssl_context: _ssl.SSLContext | None = None,
    *,
    max_batch_bytes: int = 8 * 1024 * 1024,
    max_batch_count: int = 500,
) -> None:
    """Create the folders of ``messages`` (parents first) and append every message.

    Folder names are translated from "/" to ``separator``.  Messages go in with
    MULTIAPPEND (RFC 3502): one APPEND command carries a batch of messages (bounded by
    ``max_batch_bytes``/``max_batch_count`` so a single command stays reasonable), and
    imapclient sends them as LITERAL+ (RFC 7888) non-synchronizing literals, so a batch
    costs one round trip.  Flags and INTERNALDATE are set by the APPEND itself.
    """
    client = imapclient.IMAPClient(host, port, ssl=ssl, ssl_context=ssl_context, timeout=120)
    try:
        client.login(user, password)
        existing = {name for _flags, _delim, name in client.list_folders()}
        for folder in folders_of(messages):
            name = folder.replace("/", separator)
            if name.upper() == "INBOX" or name in existing:
                continue
            try:
                client.create_folder(name)
            except IMAPClientError as error:  # RFC 5530 ALREADYEXISTS, e.g. created by a parent
                if "ALREADYEXISTS" not in str(error).upper() and "EXISTS" not in str(error).upper():
                    raise
            existing.add(name)
        by_folder: dict[str, list[Message]] = {}
        for message in messages:
            by_folder.setdefault(message.folder, []).append(message)
        multiappend = client.has_capability("MULTIAPPEND")
        for folder, folder_messages in by_folder.items():
            name = folder.replace("/", separator)
            for batch in _batches(folder_messages, max_batch_bytes, max_batch_count if multiappend else 1):
                items = [{"msg": m.body, "flags": m.flags, "date": m.internaldate} for m in batch]
                if multiappend:
                    client.multiappend(name, items)
                else:
                    client.append(name, batch[0].body, batch[0].flags, batch[0].internaldate)
    finally:
        try:
            client.logout()
        except (IMAPClientError, OSError):
            pass
