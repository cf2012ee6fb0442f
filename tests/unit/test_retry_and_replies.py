"""Unit tests of the one retry rule and of what a server's reply means (pure logic)."""

from __future__ import annotations

import random

import pytest

from fastsync.records.errors import (
    AuthError,
    ConnectError,
    ConnectionLost,
    DestinationFull,
    FolderMissing,
    MalformedResponse,
    MessageError,
    Throttled,
    TLSError,
)
from fastsync.imap.replies import already_exists, append_refused, flags_may_be_why, raise_if_throttled, redact
from fastsync.records.model import WorkerSettings
from fastsync.rules.retry import with_retries
from fastsync.settings.config import Account

SETTINGS = WorkerSettings(retries=3, backoff_base_s=1.0, backoff_max_s=60.0)
DST = Account(side="dst", label="dest", host="h", port=1, user="u", password="pw", tls="none", ca_file=None,
              timeout_s=5.0)


class Script:
    """A call that fails with the given errors, then returns "done"; records what happened."""

    def __init__(self, *errors: ConnectError) -> None:
        self.errors = list(errors)
        self.seen: list[list[str]] = []
        self.resets = 0
        self.notices: list[tuple[str, float, int]] = []
        self.waits: list[float] = []

    def work(self, failures: list[ConnectError]) -> str:
        self.seen.append([type(f).__name__ for f in failures])
        if self.errors:
            raise self.errors.pop(0)
        return "done"

    def run(self, *, cancel: bool = False, wait_out_throttling: bool = True) -> str:
        def reset() -> None:
            self.resets += 1

        def notify(exc: ConnectError, wait_s: float, attempt: int) -> None:
            self.notices.append((exc.message, wait_s, attempt))

        def wait(wait_s: float) -> bool:
            self.waits.append(wait_s)
            return cancel

        return with_retries(self.work, SETTINGS, reset=reset, notify=notify, wait=wait, rng=random.Random(1),
                            wait_out_throttling=wait_out_throttling)


def test_lost_connections_are_retried_with_growing_backoff() -> None:
    script = Script(ConnectionLost("a"), MalformedResponse("b"))
    assert script.run() == "done"
    assert script.seen == [[], ["ConnectionLost"], ["ConnectionLost", "MalformedResponse"]]
    assert script.resets == 2
    assert [n[2] for n in script.notices] == [1, 2]
    first, second = script.waits
    assert 0.5 <= first <= 1.0 and 1.0 <= second <= 2.0


def test_retries_are_bounded() -> None:
    script = Script(*[ConnectionLost(str(n)) for n in range(4)])
    with pytest.raises(ConnectionLost, match="3"):
        script.run()
    assert len(script.notices) == 3 and script.resets == 4


def test_the_servers_suggested_wait_is_used() -> None:
    script = Script(Throttled("slow down", 12.0))
    assert script.run() == "done"
    assert script.waits == [12.0]


def test_a_worker_does_not_wait_out_throttling() -> None:
    script = Script(Throttled("slow down", 12.0))
    with pytest.raises(Throttled):
        script.run(wait_out_throttling=False)
    assert script.resets == 0 and script.waits == []


@pytest.mark.parametrize("error", [AuthError("refused"), TLSError("untrusted certificate")])
def test_what_retrying_cannot_mend_is_raised_at_once(error: AuthError | TLSError) -> None:
    script = Script(error)  # type: ignore[arg-type]
    with pytest.raises(type(error)):
        script.run()
    assert script.resets == 0


def test_cancellation_during_the_wait_ends_the_retries() -> None:
    script = Script(ConnectionLost("gone"))
    with pytest.raises(ConnectionLost):
        script.run(cancel=True)
    assert len(script.waits) == 1 and len(script.seen) == 1


@pytest.mark.parametrize(
    ("text", "status", "kind", "code"),
    [
        ("[TRYCREATE] Mailbox doesn't exist: Archive", "NO", FolderMissing, "TRYCREATE"),
        ("[OVERQUOTA] Quota exceeded (mailbox for user is full)", "NO", DestinationFull, ""),
        ("[LIMIT] Mail too large", "NO", MessageError, "LIMIT"),
        ("[TOOBIG] Message too big", "NO", MessageError, "TOOBIG"),
        ("Some other refusal", "NO", MessageError, ""),
        # imaplib's own words before the server's reply.
        ("append failed: [TRYCREATE] no such folder", "", FolderMissing, "TRYCREATE"),
    ],
)
def test_append_refusals_are_typed(text: str, status: str, kind: type, code: str) -> None:
    error = append_refused(DST, "Archive", text, status)
    assert type(error) is kind
    assert error.side == "dst"
    assert error.message.startswith(f"dest (h:1): 'Archive': APPEND refused: {status + ' ' if status else ''}")
    if isinstance(error, MessageError):
        assert error.code == code
    else:
        assert error.message.endswith("; free space on the destination and run again")


@pytest.mark.parametrize(
    ("text", "wait_s"),
    [
        ("Request is throttled. Suggested Backoff Time: 12000 milliseconds", 12.0),
        ("[UNAVAILABLE] Temporary System Problem", 0.0),
        ("[ALERT] Too many simultaneous connections", 0.0),
    ],
)
def test_throttling_replies_are_throttled_on_their_side(text: str, wait_s: float) -> None:
    with pytest.raises(Throttled) as raised:
        raise_if_throttled(text, DST)
    assert (raised.value.side, raised.value.wait_s) == ("dst", wait_s)
    # A refusal for the connections open says so (`TooManyConnections`, a kind of Throttled).
    assert raised.value.message in (f"dest (h:1): server is throttling: {text}",
                                    f"dest (h:1): server refuses more connections: {text}")


def test_other_replies_are_not_throttling() -> None:
    assert raise_if_throttled("[AUTHENTICATIONFAILED] Authentication failed.", DST) is None


@pytest.mark.parametrize(
    ("text", "status", "expected"),
    [
        # Dovecot's words for a keyword it does not take.
        ("[CANNOT] Keyword length too long", "NO", True),
        ("[CANNOT] Invalid characters in keyword", "NO", True),
        ("Error in IMAP command APPEND: Invalid characters in atom", "BAD", True),
        ("Some other refusal", "NO", True),
        # Codes that name another cause: the message is not sent again.
        ("[LIMIT] Mail too large", "NO", False),
        ("[TOOBIG] Message too big", "NO", False),
        ("[TRYCREATE] Mailbox doesn't exist: Archive", "NO", False),
        ("[NOPERM] Permission denied", "NO", False),
    ],
)
def test_refusals_that_may_be_about_keywords(text: str, status: str, expected: bool) -> None:
    error = append_refused(DST, "Archive", text, status)
    assert isinstance(error, MessageError)
    assert flags_may_be_why(error) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[ALREADYEXISTS] Mailbox already exists", True),
        ("Mailbox exists", True),
        ("[CANNOT] Invalid mailbox name", False),
        ("Permission denied", False),
    ],
)
def test_already_exists(text: str, expected: bool) -> None:
    assert already_exists(text) is expected


def test_redact_replaces_every_secret_and_ignores_empty_ones() -> None:
    assert redact("user pw1 token tk2 pw1", "pw1", "", "tk2") == "user *** token *** ***"


@pytest.mark.parametrize(("text", "count", "expected"), [
    ("[APPENDUID 38505 3955] APPEND completed", 1, (38505, [3955])),
    ("[APPENDUID 38505 3955:3957,3960] done", 4, (38505, [3955, 3956, 3957, 3960])),
    ("[APPENDUID 38505 3957:3955] done", 3, (38505, [3955, 3956, 3957])),
    # Malformed (RFC 4315 section 4): reported as nothing, never an error after the store.
    ("[APPENDUID 38505 1:3,] done", 3, None),
    ("[APPENDUID 38505 :3] done", 3, None),
    ("[APPENDUID 38505 1::3] done", 3, None),
    ("[APPENDUID 38505 ,] done", 1, None),
    ("[APPENDUID 0 1:3] done", 3, None),
    ("[APPENDUID 38505 0:2] done", 3, None),
    ("[APPENDUID x 1] done", 1, None),
    ("[APPENDUID 38505 3955] done", 2, None),
])
def test_append_uids_reads_only_well_formed_replies(
    text: str, count: int, expected: tuple[int, list[int]] | None
) -> None:
    from fastsync.imap.replies import append_uids

    assert append_uids(text, count) == expected
