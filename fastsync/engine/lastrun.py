"""The report document of the last sync of a config's two accounts, kept for ``fastsync report``.

Engine layer: imports `statedir` and `state` (the files' names).  One JSON file
``<hash of the two accounts>.report.json`` in the state directory, ``0600``, written whole
(temporary file, then rename), read without following a link.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from fastsync.engine import statedir
from fastsync.engine.state import accounts_name, default_dir
from fastsync.records.errors import StateError, UsageError
from fastsync.settings.config import Config


def path_of(config: Config, directory: Path | None) -> Path:
    return (directory or default_dir()) / (accounts_name(config) + ".report.json")


def save(config: Config, directory: Path | None, doc: dict[str, Any]) -> None:
    path = path_of(config, directory)
    statedir.prepare(path.parent)
    try:
        statedir.replace_file(path, orjson.dumps(doc))
    except OSError as exc:
        raise StateError(f"{path}: cannot be written: {exc.strerror}; check the state directory (--state-dir)") \
            from None


def load(config: Config, directory: Path | None) -> dict[str, Any]:
    """The last sync's document; `UsageError` when no sync of these accounts left one."""
    path = path_of(config, directory)
    if not os.path.lexists(path):
        raise UsageError(f"no sync of {config.src.user} -> {config.dst.user} is recorded in "
                         f"{path.parent}; run fastsync sync first (or give --state-dir)")
    fd = statedir.open_file(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as file:
        try:
            doc = orjson.loads(file.read())
        except orjson.JSONDecodeError:
            raise StateError(f"{path}: damaged; run fastsync sync again to write it anew") from None
    if not isinstance(doc, dict):
        raise StateError(f"{path}: damaged; run fastsync sync again to write it anew")
    return doc
