"""Unit tests of `records.secrets`: every spelling of a secret is found, ordinary text is left alone."""

from __future__ import annotations

import base64
import json

import orjson
import pytest

from fastsync.records.secrets import redact, redact_values

SECRETS = ['pa"ss\\wo\'rd', "Grüße\\\"42!", "tab\there\nnl", "plainpassword"]


def forms(secret: str, user: str = "alice@example.org") -> list[str]:
    imap = secret.replace("\\", "\\\\").replace('"', '\\"')
    return [
        secret, imap, repr(secret), repr(secret.encode()), json.dumps(secret), json.dumps(secret, ensure_ascii=False),
        orjson.dumps(secret).decode(), json.dumps(repr(secret.encode())), repr(f'"{imap}"'), json.dumps(f'"{imap}"'),
        base64.b64encode(f"\0{user}\0{secret}".encode()).decode(),
        base64.b64encode(f"{user}\0{user}\0{secret}".encode()).decode(),
        base64.b64encode(f"user={user}\1auth=Bearer {secret}\1\1".encode()).decode(),
    ]


@pytest.mark.parametrize("secret", SECRETS)
@pytest.mark.parametrize("user", ["a", "ab", "abc", "alice@example.org"])
def test_every_spelling_is_redacted(secret: str, user: str) -> None:
    middle = secret[len(secret) // 2 - 1: len(secret) // 2 + 1]
    for index, form in enumerate(forms(secret, user)):
        text = redact(f"NO [AUTHENTICATIONFAILED] {form} refused", [secret])
        assert "***" in text and text.startswith("NO [AUTHENTICATIONFAILED] ") and text.endswith(" refused")
        # Nothing of the secret's middle is left in the escaped forms (in base64 the
        # characters it shares with its neighbours stay).
        assert index >= 10 or middle not in text, (form, text)


@pytest.mark.parametrize("text", [
    "folder 'INBOX' UID 4: [LIMIT] Message too large", "0 folders, 0 copied", "aGVsbG8gd29ybGQ=", "",
])
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact(text, [*SECRETS, ""]) == text


def test_documents_are_redacted_value_by_value() -> None:
    secret = SECRETS[0]
    doc = {"error": f"refused {secret}", "n": 3, "list": [secret, None, 1.5], secret: True}
    assert redact_values(doc, [secret]) == {"error": "refused ***", "n": 3, "list": ["***", None, 1.5], "***": True}
