"""Shared helpers for the benchmarks: one results file, one table.

Every benchmark script records its figures with :func:`record`, which merges them into
``bench-results.json`` at the repository root (git-ignored; docs/DESIGN.md section 4): a JSON
list of objects, one per figure, replacing any earlier entry of the same ``name`` so several
scripts (and several runs) can share the file::

    from bench.common import record, print_table

    entries = [
        record("translate_events_per_s", 41_000.0, "events/s",
               baseline=52_000.0, ratio=0.79, target=">= 0.7"),
        record("peak_rss_mb", 180.0, "MB", target="<= 300"),
    ]
    print_table(entries)

An entry has ``name``, ``value``, ``unit``; ``baseline`` and ``ratio`` only when a baseline was
measured in the same run; ``target`` (``">= 0.7"``: compared with ``ratio`` when the entry has
one, else with ``value``) and ``met`` when a target is given; ``note`` for context (quick run,
machine load, configuration) and ``recorded_at`` (UTC, ISO 8601).
"""

from __future__ import annotations

import json
import math
import operator
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["RESULTS_FILE", "check_target", "print_table", "record"]

REPO = Path(__file__).resolve().parents[1]
RESULTS_FILE = REPO / "bench-results.json"

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}

Entry = dict[str, Any]


def check_target(target: str, measured: float) -> bool:
    """True if ``measured`` meets ``target`` (``">= 0.7"``, ``"<= 300"``, ``"> 0"``...)."""
    op, _, number = target.strip().partition(" ")
    compare = _OPERATORS.get(op)
    if compare is None:
        raise ValueError(f"target {target!r} is not '<op> <number>' with op in {list(_OPERATORS)}")
    return compare(measured, float(number.replace(",", "").replace("_", "")))


def record(
    name: str,
    value: float,
    unit: str,
    baseline: float | None = None,
    ratio: float | None = None,
    *,
    target: str | None = None,
    note: str | None = None,
    path: Path | None = None,
) -> Entry:
    """Write one figure to ``bench-results.json`` (replacing an entry of the same name).

    ``ratio`` defaults to ``value / baseline`` when a baseline is given. Returns the entry.
    """
    if baseline is not None and ratio is None and baseline:
        ratio = value / baseline
    entry: Entry = {"name": name, "value": _number(value), "unit": unit}
    if baseline is not None:
        entry["baseline"] = _number(baseline)
    if ratio is not None:
        entry["ratio"] = round(ratio, 4)
    if target is not None:
        entry["target"] = target
        entry["met"] = check_target(target, ratio if ratio is not None else value)
    if note:
        entry["note"] = note
    entry["recorded_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    _merge([entry], path or RESULTS_FILE)
    return entry


def load(path: Path | None = None) -> list[Entry]:
    """The entries currently in the results file (empty if it is missing or unreadable)."""
    try:
        data = json.loads((path or RESULTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(data, list):
        return []
    return [e for e in data if isinstance(e, dict) and "name" in e]


def _merge(entries: Iterable[Entry], path: Path) -> None:
    new = {e["name"]: e for e in entries}
    kept = [e for e in load(path) if e["name"] not in new]
    merged = kept + list(new.values())
    # Write-then-rename: a crash never leaves half a file, and a concurrent reader sees old or new.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".bench-results.", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(merged, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _number(value: float) -> float | int:
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return int(value)
    return round(value, 4) if math.isfinite(value) else value


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:,.1f}"
        return f"{value:.3g}" if value else "0"
    return str(value)


def print_table(entries: Iterable[Mapping[str, Any]], *, title: str | None = None) -> None:
    """Print entries as a table: name, value, unit, baseline, ratio, target, met?; notes below."""
    rows = list(entries)
    header = ("name", "value", "unit", "baseline", "ratio", "target", "met?")
    lines = [
        (
            str(e["name"]),
            _fmt(e.get("value")),
            str(e.get("unit", "")),
            _fmt(e.get("baseline")),
            _fmt(e.get("ratio")),
            str(e.get("target") or "-"),
            _fmt(e.get("met")),
        )
        for e in rows
    ]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    right = {1, 3, 4}

    def row(cells: tuple[str, ...]) -> str:
        return "  ".join(
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    if title:
        print(f"\n{title}")
    print(row(header))
    print("  ".join("-" * w for w in widths))
    for line in lines:
        print(row(line))
    notes = [(e["name"], e["note"]) for e in rows if e.get("note")]
    if notes:
        print()
        for name, note in notes:
            print(f"  {name}: {note}")
    print(f"\n(written to {RESULTS_FILE.relative_to(REPO)})")
