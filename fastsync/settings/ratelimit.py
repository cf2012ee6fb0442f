"""The ``rate_limit`` section of the config file: throughput and connection caps, and the
budgets per account and window.

Settings layer: imports `values` and `configfile` only; `config.py` checks that the
section is a mapping of known keys and hands it here, with its function that raises the
one-line `ConfigError` naming a field.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from fastsync.settings.configfile import quote, show
from fastsync.settings.values import DAY_S, LIMIT_EXPECTED, WINDOW_EXPECTED, parse_daily_limit, parse_size, \
    parse_window_s

__all__ = ["BPS_EXPECTED", "RATE_KEYS", "RateLimit", "parse_rate_limit"]

RATE_KEYS = ("down_bps", "up_bps", "max_connections", "src_daily_limit", "dst_daily_limit", "limit_window")
BPS_EXPECTED = (
    "a whole number of bytes per second >= 0 or a size such as 2M or 500k "
    "(k, M, G: powers of 1000; Ki, Mi, Gi: of 1024)"
)

Fail = Callable[[str, str], NoReturn]


@dataclass(frozen=True)
class RateLimit:
    """Throughput and connection caps; 0 means unlimited.  The budgets: bytes of messages
    per account per rolling window of ``limit_window_s`` seconds (None: the provider's
    preset, if any; 0: no budget)."""

    down_bps: int = 0
    up_bps: int = 0
    max_connections: int = 0  # per side
    src_daily_limit: int | None = None
    dst_daily_limit: int | None = None
    limit_window: float = DAY_S


def parse_rate_limit(body: Mapping[Any, Any], fail: Fail) -> RateLimit:
    """The section's values; *fail* (path, problem) for the first that is wrong."""
    numbers: dict[str, Any] = {}
    for key in (k for k in RATE_KEYS if body.get(k) is not None):
        path, raw = f"rate_limit.{key}", body[key]
        if key == "max_connections":
            numbers[key] = _whole(fail, path, raw, "a whole number of connections per side >= 0")
        elif key == "limit_window":
            numbers[key] = _parsed(fail, path, raw, parse_window_s, WINDOW_EXPECTED)
        elif key.endswith("_daily_limit"):
            numbers[key] = _whole(fail, path, _parsed(fail, path, raw, parse_daily_limit, LIMIT_EXPECTED),
                                  LIMIT_EXPECTED)
        else:
            # Bytes per second as a number, or as a size the flags accept too (2M, 500k).
            numbers[key] = _whole(fail, path, _parsed(fail, path, raw, parse_size, BPS_EXPECTED), BPS_EXPECTED)
    return RateLimit(**numbers)


def _parsed(fail: Fail, path: str, raw: object, parse: Callable[[str], Any], expected: str) -> Any:
    """*raw* through *parse* when it is text (a number is left as it is)."""
    if not isinstance(raw, str):
        if isinstance(raw, bool) or (parse is parse_window_s and not isinstance(raw, (int, float))):
            fail(path, f"expected {expected}, got {show(raw)}")
        return raw if parse is not parse_window_s else _positive(fail, path, raw, expected)
    try:
        return parse(raw)
    except ValueError:
        fail(path, f"expected {expected}, got {quote(raw)}")


def _positive(fail: Fail, path: str, raw: Any, expected: str) -> float:
    if not (math.isfinite(raw) and raw > 0):
        fail(path, f"expected {expected}, got {show(raw)}")
    return float(raw)


def _whole(fail: Fail, path: str, value: object, expected: str) -> int:
    """A whole number >= 0; JSON's 1e6 (a float) counts when it is integral."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    fail(path, f"expected {expected}, got {show(value)}")
