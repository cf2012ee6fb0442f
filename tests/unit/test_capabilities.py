"""Unit tests of what a server's capability list means (`imap.capabilities.Capabilities`)."""

from __future__ import annotations

import pytest

from fastsync.imap.capabilities import Capabilities, status_items

DOVECOT = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES THREAD=REFS "
    "THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED "
    "I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE "
    "SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW STATUS=SIZE SAVEDATE LITERAL+ NOTIFY SPECIAL-USE"
)
GMAIL = (
    "IMAP4rev1 UNSELECT IDLE NAMESPACE QUOTA ID XLIST CHILDREN X-GM-EXT-1 UIDPLUS COMPRESS=DEFLATE ENABLE "
    "MOVE CONDSTORE ESEARCH UTF8=ACCEPT LIST-EXTENDED LIST-STATUS LITERAL- SPECIAL-USE APPENDLIMIT=35651584"
)
OFFICE_365_BEFORE_LOGIN = "IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS MOVE ID UNSELECT CHILDREN IDLE NAMESPACE LITERAL+"


@pytest.mark.parametrize(
    ("announced", "expected"),
    [
        ("", {}),
        ("IMAP4rev1 NAMESPACE", {"namespace": True}),
        (DOVECOT, {
            "multiappend": True, "uidplus": True, "condstore": True, "qresync": True, "literal_plus": True,
            "notify": True, "idle": True, "special_use": True, "list_status": True, "status_size": True,
            "namespace": True, "unselect": True, "move": True, "esearch": True, "sasl_ir": True, "enable": True,
        }),
        (GMAIL, {
            "uidplus": True, "condstore": True, "literal_minus": True, "idle": True, "gmail_ext": True,
            "special_use": True, "list_status": True, "namespace": True, "unselect": True,
            "appendlimit": 35_651_584, "compress_deflate": True, "move": True, "esearch": True, "quota": True,
            "utf8_accept": True, "enable": True,
        }),
        (OFFICE_365_BEFORE_LOGIN, {
            "uidplus": True, "literal_plus": True, "idle": True, "namespace": True, "unselect": True, "move": True,
            "sasl_ir": True, "auth_mechanisms": frozenset({"PLAIN", "XOAUTH2"}),
        }),
        # Atoms are case-insensitive (RFC 3501 section 9).
        ("imap4rev1 uidplus literal+ auth=oauthbearer appendlimit=10", {
            "uidplus": True, "literal_plus": True, "auth_mechanisms": frozenset({"OAUTHBEARER"}), "appendlimit": 10,
        }),
        ("IMAP4rev1 STARTTLS LOGINDISABLED", {"starttls": True, "login_disabled": True}),
        ("IMAP4rev1 QUOTA=RES-STORAGE UTF8=ONLY", {"quota": True, "utf8_accept": True}),
        # QRESYNC announced alone: CONDSTORE is asked for only where announced itself.
        ("IMAP4rev1 QRESYNC", {"qresync": True}),
        # A bare APPENDLIMIT means limits per folder (RFC 7889 section 3), not read.
        ("IMAP4rev1 APPENDLIMIT", {}),
        ("IMAP4rev1 APPENDLIMIT=", {}),
        ("IMAP4rev1 APPENDLIMITS=5", {}),
        # Words that only look like a known one.
        ("IMAP4rev1 X-UIDPLUS MULTIAPPEND2 NOTIFY-ME IDLE=1", {}),
    ],
    ids=["nothing", "minimal", "dovecot", "gmail", "office 365 before login", "lower case", "starttls",
         "variants", "qresync alone", "bare appendlimit", "empty appendlimit", "appendlimits", "look-alikes"],
)
def test_parse(announced: str, expected: dict[str, object]) -> None:
    parsed = Capabilities.parse(announced.split())
    fields = {name: value for name, value in vars(parsed).items() if name != "names"}
    defaults = {name: value for name, value in vars(Capabilities()).items() if name != "names"}
    assert fields == defaults | expected


def test_parse_takes_bytes_keeps_the_order_and_drops_repeats() -> None:
    parsed = Capabilities.parse([b"IMAP4rev1", b"AUTH=PLAIN", b"auth=login", b"AUTH=PLAIN", b""])
    # In the server's order: error messages list the mechanisms as announced.
    assert parsed.names == ("IMAP4REV1", "AUTH=PLAIN", "AUTH=LOGIN")
    assert parsed.auth_mechanisms == frozenset({"PLAIN", "LOGIN"})


def test_the_record_is_frozen() -> None:
    parsed = Capabilities.parse(["UIDPLUS"])
    with pytest.raises(AttributeError):
        parsed.uidplus = False  # type: ignore[misc]


@pytest.mark.parametrize(
    ("announced", "items"),
    [
        ("IMAP4rev1", ["MESSAGES", "UIDVALIDITY", "UIDNEXT"]),
        ("IMAP4rev1 STATUS=SIZE", ["MESSAGES", "UIDVALIDITY", "UIDNEXT", "SIZE"]),
        ("IMAP4rev1 CONDSTORE", ["MESSAGES", "UIDVALIDITY", "UIDNEXT", "HIGHESTMODSEQ"]),
        (DOVECOT, ["MESSAGES", "UIDVALIDITY", "UIDNEXT", "SIZE", "HIGHESTMODSEQ"]),
    ],
)
def test_status_items(announced: str, items: list[str]) -> None:
    assert status_items(Capabilities.parse(announced.split())) == items
