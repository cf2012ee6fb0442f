"""The event log behind ``--log-file``: one call, `event`, for every module of the parent.

Records layer: imports nothing of fastsync.  Events go to the "fastsync" logger; only
`cli.py` attaches a handler (and redacts the run's secrets once more), so without
``--log-file`` an event costs one level check.  Workers never log: they report to the
parent over their pipe, and the parent logs what they did, so lines never interleave.
"""

from __future__ import annotations

import logging

LOGGER_NAME = "fastsync"

log = logging.getLogger(LOGGER_NAME)


def event(
    name: str, *, side: str = "", folder: str = "", uid: int | None = None, level: int = logging.INFO, **fields: object
) -> None:
    """Log one event of the run.

    *side* ("src" or "dst"), *folder* and *uid* name what the event is about; the other
    *fields* are primitives (numbers, strings, lists of UIDs).  Callers pass server text
    that the protocol edge has already redacted.
    """
    if log.isEnabledFor(level):
        log.log(level, name, extra={"event": name, "side": side, "folder": folder, "uid": uid, "fields": fields})
