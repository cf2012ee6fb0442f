"""The config file's syntax: reading it, YAML and JSON with the line of every key, rendering.

Settings layer, used by ``config.py`` only.  :func:`read_config_file` picks :func:`parse_yaml` or
:func:`parse_json` by the file's extension; both turn the text into data plus a map from
field paths (``"src.server"``, ``"map[1].dst"``) to 1-based line numbers, or raise
:class:`~fastsync.records.errors.ConfigError` with a one-line message that never quotes the file's
text (a line of it could hold a password).  :func:`quote`, :func:`show`, :func:`kind`,
:func:`join_path` and :func:`display_path` render names, values and paths for those
messages on one line, revealing no secret; :func:`suggest_key` names the key an unknown one
was probably meant to be.
"""

from __future__ import annotations

import datetime
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from fastsync.records.errors import ConfigError

__all__ = [
    "EXTENSIONS",
    "KeyLines",
    "display_path",
    "join_path",
    "kind",
    "node_lines",
    "parse_json",
    "parse_yaml",
    "printable",
    "quote",
    "read_config_file",
    "show",
    "suggest_key",
    "syntax_error",
]

EXTENSIONS = (".json", ".yml", ".yaml")


# --------------------------------------------------------------------------- rendering


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def quote(text: str, limit: int = 60) -> str:
    """Quote a string for a one-line message: long text is cut, unprintables escaped."""
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return '"' + printable(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'


def printable(text: str) -> str:
    """Escape every unprintable character (not just \\n): U+2028 and friends break lines too."""
    return "".join(
        ch
        if ch.isprintable()
        else (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        for ch in text
    )


def kind(value: object) -> str:
    """Describe a value's type without revealing it (used for secrets and containers)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (datetime.date, datetime.datetime)):
        return "a date"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, (set, frozenset)):
        return "a set"
    if isinstance(value, (bytes, bytearray)):
        return "binary data"
    return "a " + type(value).__name__


def show(value: object) -> str:
    """Render a (non-secret) value for a message: scalars verbatim, containers by kind."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return quote(repr(value), 40)[1:-1]
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    return kind(value)


def _key_text(key: object) -> str:
    if isinstance(key, str) and _PLAIN_KEY.fullmatch(key):
        return key
    return show(key)


def join_path(path: str, key: object) -> str:
    """The field path of ``key`` inside ``path``: ``src`` and ``user`` give ``src.user``."""
    part = _key_text(key)
    return f"{path}.{part}" if path else part


def display_path(path: str) -> str:
    """``path`` relative to the working directory when it lies below it, else absolute."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return printable(path)
    return printable(path if relative.startswith(os.pardir) else relative)


# --------------------------------------------------------------------------- parsing


def read_config_file(name: str) -> tuple[object, Mapping[str, int]]:
    """Read the file ``name`` and parse it by its extension: the data and its key lines."""
    shown = printable(name)  # one line even for a file name with a newline in it
    extension = os.path.splitext(name)[1].lower()
    if extension not in EXTENSIONS:
        got = f'"{extension}"' if extension else "no extension"
        raise ConfigError(
            f"{shown}: unsupported file type ({got}); expected a {', '.join(EXTENSIONS)} file"
        )
    try:
        with open(name, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{shown}: cannot read: {exc.strerror}; pass -c PATH or set FASTSYNC_CONFIG"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"{shown}: cannot read: {exc.strerror or type(exc).__name__}; expected a readable file"
        ) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{shown}: cannot read: not UTF-8 text (byte {exc.start}); expected a UTF-8 encoded file"
        ) from None

    parse: Callable[[str, str], tuple[object, Mapping[str, int]]]
    parse = parse_json if extension == ".json" else parse_yaml
    return parse(text, shown)


def parse_yaml(text: str, shown: str) -> tuple[object, dict[str, int]]:
    # Imported here: worker processes import this module but never parse a file.
    # PyYAML ships no type stubs; with types-PyYAML installed the ignore is unused.
    import yaml  # type: ignore[import-untyped, unused-ignore]

    loader = yaml.SafeLoader(text)
    try:
        # One parse gives both the node tree (for line numbers) and the data built from it.
        # Lines are taken before construction, which splices merged (<<) keys into the tree.
        node = loader.get_single_node()
        lines = node_lines(shown, node) if node is not None else {}
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        raise syntax_error(shown, "YAML", exc) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{shown}: not valid YAML: {_oneline(str(exc))}") from None
    except RecursionError:
        raise ConfigError(f"{shown}: not valid YAML: nested too deeply") from None
    finally:
        loader.dispose()
    return data, lines


def parse_json(text: str, shown: str) -> tuple[object, Mapping[str, int]]:
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in items:
            if key in result:
                duplicates.append(key)
            result[key] = value
        return result

    # The stdlib parser (not orjson) because its errors carry line and column.
    try:
        data = json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{shown} (line {exc.lineno}, column {exc.colno}): not valid JSON: {_oneline(exc.msg)}"
        ) from None
    except RecursionError:
        raise ConfigError(f"{shown}: not valid JSON: nested too deeply") from None
    if duplicates:
        _json_key_lines(text, shown)  # raises naming the duplicate's line, where it can tell
        raise ConfigError(
            f"{shown}: key {show(duplicates[0])} appears twice in one object; expected each key once"
        )
    return data, KeyLines(text, shown)


def _json_key_lines(text: str, shown: str) -> dict[str, int]:
    """JSON is (nearly always) YAML, so the YAML composer gives line numbers for free; when
    it disagrees with the JSON parser, messages simply go without line numbers."""
    # Imported here: worker processes import this module but never parse a file.
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except (yaml.YAMLError, RecursionError):
        return {}
    finally:
        loader.dispose()
    return node_lines(shown, node) if node is not None else {}


class KeyLines(Mapping[str, int]):
    """The key lines of a valid JSON file, composed when a message first asks for one: a
    config without mistakes never does, and composing it cost every run ~10 ms of CPU,
    most of it importing the YAML parser."""

    def __init__(self, text: str, shown: str) -> None:
        self._text = text
        self._shown = shown
        self._lines: dict[str, int] | None = None

    def _all(self) -> dict[str, int]:
        if self._lines is None:
            try:
                self._lines = _json_key_lines(self._text, self._shown)
            except ConfigError:
                self._lines = {}  # a key the composer reads as a duplicate: no line numbers
        return self._lines

    def __getitem__(self, path: str) -> int:
        return self._all()[path]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


def syntax_error(shown: str, language: str, exc: Any) -> ConfigError:
    mark = exc.problem_mark or exc.context_mark
    # exc.problem is the parser's own words; str(exc) would quote the offending source line,
    # which could be a password.
    parts = [part for part in (exc.context, exc.problem) if part]
    problem = _oneline(", ".join(parts) or "syntax error")
    if mark is None:
        return ConfigError(f"{shown}: not valid {language}: {problem}")
    return ConfigError(
        f"{shown} (line {mark.line + 1}, column {mark.column + 1}): not valid {language}: {problem}"
    )


def _oneline(text: str) -> str:
    return " ".join(text.split())


def node_lines(shown: str, root: Any) -> dict[str, int]:
    """Map each key path to the 1-based line of its key; raise on a duplicate key."""
    # Imported here: worker processes import this module but never parse a file.
    import yaml

    lines: dict[str, int] = {}
    seen: set[int] = set()
    duplicate: tuple[str, int, int] | None = None

    def walk(node: Any, path: str) -> None:
        nonlocal duplicate
        # Aliases share nodes: visiting each once keeps "billion laughs" files linear.
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for key, value in node.value:
                if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                    continue
                child = join_path(path, key.value)
                line = key.start_mark.line + 1
                if key.value in first:
                    if duplicate is None:
                        duplicate = (child, line, first[key.value])
                else:
                    first[key.value] = line
                    lines.setdefault(child, line)
                walk(value, child)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                child = f"{path}[{index}]"
                lines.setdefault(child, item.start_mark.line + 1)
                walk(item, child)

    try:
        walk(root, "")
    except RecursionError:
        pass  # line numbers are a nicety; validation will still run
    if duplicate is not None:
        child, line, first_line = duplicate
        raise ConfigError(
            f"{shown}: {child} (line {line}): duplicate key, first given on line {first_line}; "
            "expected each key once"
        )
    return lines


# Keys people bring from other tools; difflib alone would not connect "password" to "pass"
# reliably, and "host"/"port" to "server" not at all.
ALIASES = {
    "password": "pass",
    "passwd": "pass",
    "host": "server",
    "hostname": "server",
    "port": "server",
    "username": "user",
    "login": "user",
    "name": "label",
    "timeout": "timeout_s",
    "ssl": "tls",
    "source": "src",
    "destination": "dst",
    "mapping": "map",
    "folders": "map",
    "ratelimit": "rate_limit",
    # imapsync's --authuser1/--authuser2.
    "authuser": "auth_user",
    "admin": "auth_user",
}


def suggest_key(key: object, known: tuple[str, ...]) -> str | None:
    """The known key an unknown *key* was probably meant to be: a spelling or another tool's name."""
    if not isinstance(key, str):
        return None
    lowered = key.strip().lower().replace("-", "_").replace(" ", "_")
    if lowered in known:
        return lowered
    alias = ALIASES.get(lowered)
    if alias in known:
        return alias
    import difflib  # only for a key that is wrong: kept out of the worker processes' imports

    close = difflib.get_close_matches(lowered, known, n=1, cutoff=0.6)
    return close[0] if close else None
