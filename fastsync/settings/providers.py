"""Quotas of the big providers, shown before a migration touches them.

Pure-logic layer: imports `config`; used by a sync pass (`engine/syncpass.py`).

Exceeding Gmail's IMAP quotas locks the account out of IMAP for up to a day; Exchange
Online throttles and then disconnects.  The figures are the providers' published limits.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastsync.settings.config import Account


@dataclass(frozen=True)
class Provider:
    name: str
    hosts: tuple[str, ...]
    quotas: str
    advice: str
    # Added to the advice when the provider is the source / the destination.
    as_src: str = ""
    as_dst: str = ""
    # The largest message its IMAP APPEND takes, for a server that does not announce it
    # (RFC 7889 APPENDLIMIT): Gmail announces APPENDLIMIT=35651584; Microsoft's IMAP
    # migration documents 35 MB.
    message_limit_bytes: int = 0


PROVIDERS = (
    Provider(
        "Gmail",
        ("imap.gmail.com", "imap.googlemail.com"),
        "15 simultaneous IMAP connections per account; 2,500 MB/day download and 500 MB/day upload "
        "over IMAP; exceeding them locks IMAP access for up to 24 hours",
        "--max-connections 10 --procs 8",
        "; fastsync keeps under the daily download limit itself (2,500 MB a day, --src-daily-limit), and for "
        "a large mailbox --until-done waits for the next window and goes on instead of stopping",
        "; fastsync keeps under the daily upload limit itself (500 MB a day, --dst-daily-limit), and for a "
        "large mailbox --until-done waits for the next window and goes on instead of stopping",
        message_limit_bytes=35_651_584,
    ),
    Provider(
        "Office 365 / Exchange Online",
        ("outlook.office365.com", "imap-mail.outlook.com", "outlook.office.com"),
        "throttling ('Request is throttled. Suggested Backoff Time') and disconnection under load; "
        "messages over about 35 MB are refused; about 20 connections per account",
        "--max-connections 8 --procs 6; messages over the size limit are reported, not retried",
        message_limit_bytes=35_000_000,
    ),
)


def provider_of(account: Account) -> Provider | None:
    host = account.host.lower().rstrip(".")
    for provider in PROVIDERS:
        if host in provider.hosts:
            return provider
    return None


def message_limit(account: Account) -> int:
    """The largest message *account*'s provider documents for APPEND, 0 when unknown."""
    provider = provider_of(account)
    return provider.message_limit_bytes if provider is not None else 0


def notices(*accounts: Account) -> list[str]:
    """One line per side that is a known provider: its quotas and the flags that respect them."""
    lines = []
    for account in accounts:
        provider = provider_of(account)
        if provider is not None:
            extra = provider.as_src if account.side == "src" else provider.as_dst
            lines.append(
                f"{account.label} is {provider.name}: {provider.quotas}. Suggested: {provider.advice}{extra}."
            )
    return lines


def is_gmail(account: Account) -> bool:
    """Whether *account*'s host is Gmail's (the capability X-GM-EXT-1 tells it too, once
    connected: `imap/capabilities.py`)."""
    provider = provider_of(account)
    return provider is not None and provider.name == "Gmail"
