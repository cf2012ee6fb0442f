"""Every spelling a secret may take in text, and text with each of them replaced by ``***``.

Records layer: imports nothing of fastsync.  The protocol edge (`imap/replies.redact`),
the reporter (`progress.py`, stderr and the --json document) and the --log-file
formatter (`cli.py`) all redact through `redact`, so that they agree on what a secret
looks like once it has been quoted or escaped on its way:

- as the server may echo it: an IMAP quoted string (RFC 3501 section 4.3: ``\\"`` and
  ``\\\\``), or inside the base64 of a SASL exchange (RFC 4616 PLAIN carries
  ``authzid NUL user NUL password``; XOAUTH2 and OAUTHBEARER carry the token);
- as Python renders it: ``repr()`` of a str, or of the UTF-8 bytes a reply arrived as,
  with either quote character;
- as JSON renders it, with or without ``\\uXXXX`` for non-ASCII characters;
- and each of these escaped once more (a server's quoted echo inside a repr'd reply
  inside a JSON document).
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Callable, Iterable
from typing import Any

MASK = "***"

# A base64 run shorter than this is not searched for: it would match ordinary words.
MIN_BASE64_CHARS = 6

_PY_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _imap_quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _python(text: str, quote: str) -> str:
    """*text* inside a str literal delimited by *quote*, as repr() writes it."""
    out = []
    for char in text:
        if char in _PY_ESCAPES:
            out.append(_PY_ESCAPES[char])
        elif char == quote:
            out.append("\\" + quote)
        elif not char.isprintable():
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(char)
    return "".join(out)


def _python_bytes(text: str, quote: str) -> str:
    """*text*'s UTF-8 bytes inside a bytes literal delimited by *quote*, as repr() writes it."""
    data = text.encode("utf-8", "surrogatepass")
    out = []
    for byte in data:
        char = chr(byte)
        if char in _PY_ESCAPES:
            out.append(_PY_ESCAPES[char])
        elif char == quote:
            out.append("\\" + quote)
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append(f"\\x{byte:02x}")
    return "".join(out)


_ESCAPERS: tuple[Callable[[str], str], ...] = (
    _imap_quoted,
    lambda text: _python(text, "'"),
    lambda text: _python(text, '"'),
    lambda text: _python_bytes(text, "'"),
    lambda text: _python_bytes(text, '"'),
    lambda text: json.dumps(text)[1:-1],
    lambda text: json.dumps(text, ensure_ascii=False)[1:-1],
)


def _base64_runs(secret: str) -> set[str]:
    """The base64 characters that encode *secret* wherever it stands in a longer byte
    string: one run for each of the three alignments, without the characters its
    neighbours share."""
    data = secret.encode("utf-8", "surrogatepass")
    runs = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + data + b"\0\0").decode("ascii")
        first = -(-8 * offset // 6)
        last = 8 * (offset + len(data)) // 6
        run = encoded[first:last]
        if len(run) >= MIN_BASE64_CHARS:
            runs.add(run)
    return runs


@functools.lru_cache(maxsize=256)
def spellings(secret: str) -> tuple[str, ...]:
    """Every form of *secret* to look for, longest first (so that a form containing
    another is replaced whole); none for an empty secret."""
    if not secret:
        return ()
    forms = {secret}
    for _depth in range(2):
        forms |= {escape(form) for form in forms for escape in _ESCAPERS}
    forms |= _base64_runs(secret)
    return tuple(sorted(forms, key=len, reverse=True))


def redact(text: str, secrets: Iterable[str]) -> str:
    """*text* with every spelling of every non-empty secret replaced by ``***``."""
    forms = sorted({form for secret in secrets for form in spellings(secret)}, key=len, reverse=True)
    for form in forms:
        if form in text:
            text = text.replace(form, MASK)
    return text


def redact_values(value: Any, secrets: Iterable[str]) -> Any:
    """*value* (a JSON-like document: dicts, lists, strings, numbers) with `redact` applied
    to every string it holds, keys too."""
    secrets = list(secrets)
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {redact_values(k, secrets): redact_values(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_values(v, secrets) for v in value]
    return value
