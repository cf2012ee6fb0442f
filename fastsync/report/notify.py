"""``--notify CMD``: the command told when a sync or a batch ends.

Output layer.  CMD is split as a shell would split it (`shlex.split`) and run without a
shell, with the run's summary as one JSON document on its standard input (the ``--json``
document, secrets redacted), its output discarded, for at most `TIMEOUT_S` seconds.  Its
failure (not found, a non-zero exit, the timeout) is said in a warning and logged; it
never changes the run's exit code.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from fastsync.records import secrets as secrets_rules
from fastsync.records.events import event

TIMEOUT_S = 60


def notify(command: str, doc: Mapping[str, Any], secrets: Iterable[str], warn: Callable[[str], None]) -> None:
    """Run *command* with *doc* (every secret of *secrets* masked) on its standard input."""
    data = orjson.dumps(secrets_rules.redact_values(dict(doc), list(secrets)), option=orjson.OPT_INDENT_2)
    problem = ""
    try:
        argv = shlex.split(command)
        if not argv:
            raise ValueError("empty command")
        done = subprocess.run(argv, input=data, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=TIMEOUT_S, check=False)
        if done.returncode != 0:
            problem = f"exited with code {done.returncode}"
    except subprocess.TimeoutExpired:
        problem = f"still running after {TIMEOUT_S} s: stopped"
    except (OSError, ValueError) as exc:
        problem = getattr(exc, "strerror", None) or str(exc)
    if problem:
        warn(f"--notify {command!r}: {problem}; the run's exit code is unchanged")
        event("notify failed", level=logging.WARNING, command=command, reason=problem)
    else:
        event("notified", command=command)
