"""Refused messages: how a header field is shown, and when a refusal is tried again.

Pure logic, no I/O; `engine/refusals.py` keeps the records, the engine's sync pass and
`fastsync accept` decide with these rules.  A message the destination refused (its
server said NO to the copy) is tried again by the next runs, at most ``--retry-refused``
times; after that it is listed as refused without being sent again.  An operator may
accept the refusals that are known (``fastsync accept``): those messages are then left
out and the run counts as complete with accepted exceptions.  A refusal seen after the
accept is a new one: it is not covered.
"""

from __future__ import annotations

import email.errors
import email.header

DEFAULT_RETRIES = 3

# Characters shown as an escape in a stored subject or date: they come from the message's
# sender, and nothing downstream (terminal, CSV cell, report page) should meet them raw.
_CONTROLS = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}
_CONTROLS |= {code: f"\\u{code:04x}" for code in (0x2028, 0x2029, 0x202E, 0x202D, 0x2066, 0x2067, 0x2068, 0x2069)}

# A subject or date is only a label: longer ones are cut.
MAX_FIELD_CHARS = 300


def header_text(raw: bytes) -> str:
    """A header field's value as a person reads it: RFC 2047 encoded words decoded, every
    control character escaped, at most `MAX_FIELD_CHARS` characters."""
    text = raw.decode("utf-8", "replace")
    try:
        text = str(email.header.make_header(email.header.decode_header(text)))
    except (email.errors.HeaderParseError, LookupError, UnicodeError, ValueError):
        pass  # an encoded word that does not decode is shown as it was written
    text = " ".join(text.split())
    return text.translate(_CONTROLS)[:MAX_FIELD_CHARS]


def key(folder: str, uid: int, message_id: str) -> str:
    """What names one refused message: its source folder, UID and Message-Id."""
    return f"{folder}\n{uid}\n{message_id}"


def held(attempts: int, accepted: bool, retries: int) -> bool:
    """Whether a refused message is left out of a run: accepted, or refused *retries*
    times already (``--retry-refused``; 0 never tries it again)."""
    return accepted or attempts >= retries + 1
