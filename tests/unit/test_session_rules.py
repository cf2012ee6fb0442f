"""The pure rules of the IMAP layer: sequence sets, response codes, throttling, back-off, flags."""

from __future__ import annotations

import random

import pytest

from fastsync.records.model import WorkerSettings
from fastsync.imap.replies import response_code, throttle_wait
from fastsync.imap.wire import sequence_set
from fastsync.rules.plan import settable_flags
from fastsync.rules.retry import backoff_s

# ----------------------------------------------------------------------------- sequence sets


@pytest.mark.parametrize(
    ("numbers", "expected"),
    [
        ([], ""),
        ([5], "5"),
        ([1, 2, 3], "1:3"),
        ([1, 2, 3, 7], "1:3,7"),
        ([1, 3, 5], "1,3,5"),
        ([1, 2, 4, 5, 9], "1:2,4:5,9"),
        ([9, 10, 11, 20, 21, 40], "9:11,20:21,40"),
        ([7, 3, 1, 2], "1:3,7"),
        ([3, 3, 1, 2, 2], "1:3"),
        ([4, 4, 4], "4"),
        ([4294967294, 4294967295, 1], "1,4294967294:4294967295"),
    ],
    ids=["empty", "single", "one run", "run then single", "no runs", "two runs", "three runs", "unsorted",
         "duplicates", "one number repeated", "largest UIDs"],
)
def test_sequence_set(numbers: list[int], expected: str) -> None:
    assert sequence_set(numbers) == expected


# ----------------------------------------------------------------------------- response codes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[TRYCREATE] Mailbox doesn't exist: Archive", "TRYCREATE"),
        (b"[TRYCREATE] Mailbox doesn't exist: Archive", "TRYCREATE"),
        ("[ALREADYEXISTS] Mailbox already exists", "ALREADYEXISTS"),
        (b"[ALREADYEXISTS] Mailbox already exists", "ALREADYEXISTS"),
        ("[OVERQUOTA] Quota exceeded (mailbox for user is full)", "OVERQUOTA"),
        (b"[OVERQUOTA] Quota exceeded (mailbox for user is full)", "OVERQUOTA"),
        ("[UNKNOWN-CTE] Unknown Content-Transfer-Encoding", "UNKNOWN-CTE"),
        (b"[UNKNOWN-CTE] Unknown Content-Transfer-Encoding", "UNKNOWN-CTE"),
        ("[APPENDUID 38505 3955] APPEND completed", "APPENDUID"),
        ("   [LIMIT] Message too large", "LIMIT"),
        (b"\t[LIMIT] Message too large", "LIMIT"),
        ("[trycreate] lower case", "TRYCREATE"),
        (b"[OverQuota] mixed case", "OVERQUOTA"),
        (b"[LIMIT] \xff\xfe not UTF-8 after the code", "LIMIT"),
        ("[CANNOT] Nom de dossier réservé", "CANNOT"),
        ("Mailbox doesn't exist: Archive", ""),
        ("Error in IMAP command APPEND: [OVERQUOTA] not at the start", ""),
        ("[] empty brackets", ""),
        ("", ""),
        (b"", ""),
    ],
)
def test_response_code(text: str | bytes, expected: str) -> None:
    assert response_code(text) == expected


# ----------------------------------------------------------------------------- throttling


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Office 365 says how long to wait.
        ("Request is throttled. Suggested Backoff Time: 12000 milliseconds", 12.0),
        ("* BYE Request is throttled. Suggested Backoff Time: 300 milliseconds", 0.3),
        ("request is throttled. suggested backoff time:250 MILLISECONDS", 0.25),
        ("Request is throttled. Suggested Backoff Time: 0 milliseconds", 0.0),
        # Office 365 without a figure, and Gmail: throttled, wait unspecified.
        ("Request is throttled.", 0.0),
        ("[THROTTLED] Account exceeded command or bandwidth limits. (Failure)", 0.0),
        ("[UNAVAILABLE] Temporary System Error", 0.0),
        ("* BYE [UNAVAILABLE] Too many simultaneous connections", 0.0),
        ("[ALERT] Too many simultaneous connections. (Failure)", 0.0),
        ("too many simultaneous connections", 0.0),
        ("[throttled] lower case", 0.0),
        # Ordinary replies.
        ("Mailbox doesn't exist: Archive", None),
        ("[OVERQUOTA] Quota exceeded (mailbox for user is full)", None),
        ("[AUTHENTICATIONFAILED] Authentication failed.", None),
        ("Suggested Backoff Time: soon", None),
        ("", None),
    ],
)
def test_throttle_wait(text: str, expected: float | None) -> None:
    assert throttle_wait(text) == expected


# ----------------------------------------------------------------------------- back-off


@pytest.mark.parametrize(
    ("settings", "steps"),
    [
        # Attempt n waits between step/2 and step, step = base * 2^(n-1) capped at the maximum.
        (WorkerSettings(), [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]),
        (WorkerSettings(backoff_base_s=0.5, backoff_max_s=5.0), [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]),
        (WorkerSettings(backoff_base_s=3.0, backoff_max_s=3.0), [3.0, 3.0, 3.0]),
    ],
    ids=["defaults", "half-second base", "base at the cap"],
)
def test_backoff_bounds_doubling_and_cap(settings: WorkerSettings, steps: list[float]) -> None:
    for attempt, step in enumerate(steps, 1):
        # The same seed draws the same fraction of the step: the exact value is known.
        assert backoff_s(attempt, settings, random.Random(42)) == random.Random(42).uniform(step / 2, step)
        rng = random.Random(7)
        draws = [backoff_s(attempt, settings, rng) for _ in range(500)]
        assert all(step / 2 <= d <= step for d in draws), (attempt, min(draws), max(draws))
        # The jitter spreads over the whole range: workers do not reconnect in lockstep.
        assert min(draws) < step * 0.55 and max(draws) > step * 0.95
    # One seed for every attempt: each wait doubles the one before, until the cap holds it.
    waits = [backoff_s(attempt, settings, random.Random(3)) for attempt in range(1, len(steps) + 1)]
    for before, after, step_before, step_after in zip(waits, waits[1:], steps, steps[1:], strict=False):
        if step_after == 2 * step_before:
            assert after == 2 * before
        elif step_after == step_before:
            assert after == before


def test_backoff_never_exceeds_the_cap_however_many_attempts() -> None:
    settings = WorkerSettings(backoff_base_s=1.0, backoff_max_s=60.0)
    rng = random.Random(11)
    assert all(30.0 <= backoff_s(attempt, settings, rng) <= 60.0 for attempt in range(7, 200))


# ----------------------------------------------------------------------------- flags of the copy


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ((), ()),
        (("\\Recent",), ()),
        (("\\recent",), ()),
        (("\\RECENT",), ()),
        (("\\Seen", "\\Recent"), ("\\Seen",)),
        (("\\Recent", "\\Flagged", "\\Seen"), ("\\Flagged", "\\Seen")),
        (("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"), ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")),
        (("\\Draft", "\\Seen"), ("\\Draft", "\\Seen")),
        (("$Forwarded", "\\rEcEnT", "NonJunk", "$label1"), ("$Forwarded", "NonJunk", "$label1")),
        # A keyword that merely looks like the system flag is the user's own.
        (("Recent", "$Recent", "\\Recently"), ("Recent", "$Recent", "\\Recently")),
    ],
)
def test_settable_flags(flags: tuple[str, ...], expected: tuple[str, ...]) -> None:
    assert settable_flags(flags) == expected
