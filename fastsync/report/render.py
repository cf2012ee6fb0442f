"""``report.html``, ``report.csv`` and ``report.json`` from the report's document (`document.py`).

Output layer.  Each file is written whole into a temporary file of the report directory,
then renamed over the old one, so that a browser reloading the page of a running batch,
or a script reading the CSV, never sees half of it.  The page is rendered by Jinja2 with
autoescaping on for every value: folder names, subjects and the servers' words are text,
never markup.  It is one file with nothing to fetch (no script at all, the chart an inline
SVG whose coordinates are numbers computed here), under a Content-Security-Policy that
allows none, so it opens from a ``file:`` URL.  While a batch runs it reloads itself
(meta refresh); the final page does not.
"""

from __future__ import annotations

import csv
import io
import itertools
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from fastsync.records.errors import StateError, UsageError
from fastsync.report.document import ROW_FIELDS

# Seconds between two reloads of a running batch's page.
REFRESH_S = 3

CHART_WIDTH, CHART_HEIGHT = 640, 200


def _environment() -> Any:
    try:
        import jinja2
    except ImportError:
        raise UsageError("--report needs Jinja2: install it with the extra 'report': pip install '.[report]' in a checkout of fastsync") from None
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("fastsync.report", "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
    environment.filters["size"] = size
    return environment


def size(value: object) -> str:
    """Bytes as a person reads them (1.5 MB); the CSV and JSON keep the exact number."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)
    for unit in ("bytes", "KB", "MB", "GB"):
        if number < 1000 or unit == "GB":
            return f"{number:.0f} {unit}" if unit == "bytes" else f"{number:.1f} {unit}"
        number /= 1000
    return str(value)


def chart(samples: Sequence[Sequence[float]]) -> dict[str, Any]:
    """The throughput chart: an SVG polyline of megabytes per second over time, from
    (seconds, bytes so far) samples; numbers only."""
    points = sorted((float(t), float(b)) for t, b in samples)
    rates = []
    for (t0, b0), (t1, b1) in itertools.pairwise(points):
        if t1 > t0:
            rates.append((t1, max(0.0, (b1 - b0) / (t1 - t0) / 1e6)))
    if not rates:
        return {"points": "", "max_rate": 0.0, "seconds": 0.0, "width": CHART_WIDTH, "height": CHART_HEIGHT}
    end = max(t for t, _ in rates) or 1.0
    top = max(r for _, r in rates) or 1.0
    line = " ".join(f"{t / end * CHART_WIDTH:.1f},{CHART_HEIGHT - r / top * (CHART_HEIGHT - 10):.1f}"
                    for t, r in rates)
    return {"points": f"0,{CHART_HEIGHT} " + line, "max_rate": round(top, 2), "seconds": round(end, 1),
            "width": CHART_WIDTH, "height": CHART_HEIGHT}


def html(doc: Mapping[str, Any]) -> str:
    template = _environment().get_template("report.html.j2")
    return str(template.render(doc=doc, chart=chart(doc.get("samples", [])), fields=ROW_FIELDS,
                               refresh_s=REFRESH_S))


def rows_csv(doc: Mapping[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(ROW_FIELDS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in doc["rows"]:
        # A cell starting with = + - @ is a formula to a spreadsheet: the server's text is not one.
        writer.writerow({k: ("'" + v if isinstance(v, str) and v[:1] in "=+-@" else v) for k, v in row.items()})
    return out.getvalue()


def _replace(directory: Path, name: str, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}-")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, directory / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write(doc: Mapping[str, Any], directory: str) -> None:
    """The three files into *directory* (created if missing), each replaced atomically."""
    page = html(doc)
    where = Path(directory)
    try:
        where.mkdir(parents=True, exist_ok=True)
        _replace(where, "report.json", orjson.dumps(doc, option=orjson.OPT_INDENT_2))
        _replace(where, "report.csv", rows_csv(doc).encode())
        _replace(where, "report.html", page.encode())
    except OSError as exc:
        raise StateError(f"--report {directory}: cannot write the report: {exc.strerror}; "
                         "choose a writable directory") from None
