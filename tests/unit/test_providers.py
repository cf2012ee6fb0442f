"""The quota notices shown before a migration touches Gmail or Office 365."""

from __future__ import annotations

import pytest

from fastsync.settings.config import parse_config
from fastsync.settings.providers import notices


def config(src_host: str, dst_host: str) -> object:
    side = {"user": "someone", "pass": "x", "tls": "implicit"}
    return parse_config(
        {"src": {**side, "server": f"{src_host}:993"}, "dst": {**side, "server": f"{dst_host}:993"}}, "c.json"
    )


@pytest.mark.parametrize(
    ("src", "dst", "expected"),
    [
        ("imap.gmail.com", "imap.example.org", ["source is Gmail: 15 simultaneous IMAP connections"]),
        ("imap.example.org", "outlook.office365.com", ["destination is Office 365 / Exchange Online"]),
        ("IMAP.GMAIL.COM.", "outlook.office365.com", ["source is Gmail", "destination is Office 365"]),
        ("imap.example.org", "mail.example.net", []),
    ],
)
def test_notices_name_the_quotas_and_the_flags(src: str, dst: str, expected: list[str]) -> None:
    cfg = config(src, dst)
    lines = notices(cfg.src, cfg.dst)  # type: ignore[attr-defined]
    assert len(lines) == len(expected)
    for line, start in zip(lines, expected, strict=True):
        assert line.startswith(start)
        assert "--max-connections" in line
    if "gmail" in src.lower():
        assert "2,500 MB/day download and 500 MB/day upload" in lines[0]


@pytest.mark.parametrize(
    ("src", "dst", "advice"),
    [
        ("imap.gmail.com", "imap.example.org", "daily download limit itself (2,500 MB a day, --src-daily-limit)"),
        ("imap.example.org", "imap.gmail.com", "daily upload limit itself (500 MB a day, --dst-daily-limit)"),
    ],
)
def test_gmail_notice_names_the_daily_limit_of_its_side(src: str, dst: str, advice: str) -> None:
    cfg = config(src, dst)
    [line] = notices(cfg.src, cfg.dst)  # type: ignore[attr-defined]
    assert advice in line
    assert line.endswith("--until-done waits for the next window and goes on instead of stopping.")
