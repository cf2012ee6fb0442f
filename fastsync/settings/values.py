"""The values people type in flags, environment variables and the config file: sizes, ages,
regular expressions.

Settings layer: imports nothing of fastsync.  `options.py` (flags and ``FASTSYNC_*``
variables) and `config.py` (the config file) both parse through these functions, so
``--bps-down 2M``, ``FASTSYNC_BPS_DOWN=2M`` and ``rate_limit.down_bps: 2M`` mean the same.
A parser raises ValueError whose text is the problem alone ("expected ..."): the caller
knows whether a flag, a variable or a config field was wrong and names it.
"""

from __future__ import annotations

import re

# Sizes: k, M, G, T are powers of 1000 (as disks and providers count: Gmail's 25 MB,
# 2,500 MB a day); Ki, Mi, Gi, Ti powers of 1024 (IEC 80000-13).  Letters are read
# case-insensitively ("2m" is 2M) and a trailing B is allowed ("500kB", "1GiB").
SIZE_FACTORS = {
    "": 1,
    "k": 1000,
    "m": 1000**2,
    "g": 1000**3,
    "t": 1000**4,
    "ki": 1024,
    "mi": 1024**2,
    "gi": 1024**3,
    "ti": 1024**4,
}
SIZE_EXPECTED = (
    "expected a size such as 500k, 25M or 1G (k, M, G: powers of 1000; Ki, Mi, Gi: powers of 1024) "
    "or a whole number of bytes"
)
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]i?)?b?", re.IGNORECASE)

# Ages are whole days: IMAP searches internal dates by day (RFC 3501 section 6.4.4), so an
# hour would promise a precision the server does not give.  A year is 365 days.
AGE_DAYS = {"": 1, "d": 1, "w": 7, "y": 365}
AGE_EXPECTED = "expected an age in days, weeks or years such as 30d, 12w or 2y (a bare number is days)"
_AGE = re.compile(r"(\d+)\s*([dwy]?)", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes in *text*: ``2M`` -> 2000000, ``500Ki`` -> 512000, ``1.5G`` -> 1500000000, ``300`` -> 300.

    A fraction is allowed with a unit and rounded down to whole bytes; a bare number is
    whole bytes.  Raises ValueError (`SIZE_EXPECTED`) for anything else.
    """
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(SIZE_EXPECTED)
    number, unit = match.group(1), (match.group(2) or "").lower()
    if not unit and "." in number:
        raise ValueError(SIZE_EXPECTED)
    # Imported here: the worker processes, which import this module, never parse a size.
    from decimal import Decimal

    return int(Decimal(number) * SIZE_FACTORS[unit])


def parse_age_days(text: str) -> int:
    """Whole days in *text*: ``30d`` -> 30, ``12w`` -> 84, ``2y`` -> 730, ``45`` -> 45.

    Raises ValueError (`AGE_EXPECTED`) for anything else, hours and minutes included.
    """
    match = _AGE.fullmatch(text.strip())
    if match is None:
        raise ValueError(AGE_EXPECTED)
    return int(match.group(1)) * AGE_DAYS[match.group(2).lower()]


def regex_problem(pattern: str) -> str:
    """Why *pattern* is not a Python regular expression ('' when it is one)."""
    try:
        re.compile(pattern)
    except re.error as exc:
        return str(exc)
    return ""


# Budgets: bytes per account per rolling window (`rules/budget.py`).  "none" or 0: no budget.
LIMIT_EXPECTED = (
    "a size such as 500M or 2.5G (k, M, G: powers of 1000; Ki, Mi, Gi: of 1024), a whole number of bytes, "
    "or none (0) for no limit"
)
DAY_S = 86400.0
WINDOW_FACTORS_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY_S}
WINDOW_EXPECTED = "a duration such as 24h, 90m, 10s or 1d (a bare number is seconds), more than 0"
_WINDOW = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)", re.IGNORECASE)


def parse_daily_limit(text: str) -> int:
    """Bytes of a budget: a size as `parse_size` reads it, or ``none`` (0: no budget)."""
    if text.strip().lower() in ("none", "off", "no"):
        return 0
    return parse_size(text)


def parse_window_s(text: str) -> float:
    """Seconds of a budget's window: ``24h`` -> 86400, ``10s`` -> 10, ``1d``, ``90m``, ``30``."""
    match = _WINDOW.fullmatch(text.strip())
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"expected {WINDOW_EXPECTED}")
    return float(match.group(1)) * WINDOW_FACTORS_S[match.group(2).lower()]
