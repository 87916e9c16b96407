"""Cost per event of the compiled translation rules vs the hand-written OrderTranslator.

Both translate the same OrderPlaced events (3 line items each) in the same run. Two cases:

* ``with phone``: every customer has a valid phone number, so each translation includes one
  E.164 parse - the realistic case, where phonenumbers dominates the cost;
* ``no phone``: customers identified by e-mail and customer id only - what is left is the
  translation machinery itself, the stricter comparison.

Method: both translators are checked to produce equal operations, warmed up, then timed in
alternating passes over all events (so drift and neighbours' load hit both alike); the figures
are medians over the passes, in microseconds per input event. Results are printed as a table
and merged into ``bench-results.json`` at the repository root (entries with the same name are
replaced, others kept). Target: rules <= 1.3 x hand-written.

Run: ``.venv/bin/python bench/translate.py`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from consumer.decode import DecodedRecord  # noqa: E402
from consumer.messages import Operation  # noqa: E402
from consumer.rules import compile_rules  # noqa: E402
from consumer.schemas import SchemaCatalog  # noqa: E402
from kafka_klaviyo_dev.handwritten import OrderTranslator  # noqa: E402
from kafka_klaviyo_dev.samples import generated_orders  # noqa: E402

TARGET_RATIO = 1.3
LINES = 3
UNIT = "us/event"
RECORD = "shop.events.OrderPlaced"

Translate = Callable[[DecodedRecord], list[Operation]]


def order_events(count: int, *, phone: bool) -> list[DecodedRecord]:
    """``count`` generated OrderPlaced records with exactly three lines each."""
    out: list[DecodedRecord] = []
    for order in generated_orders(count * 8, seed=11):
        if len(order["line_items"]) != LINES:
            continue
        data = copy.deepcopy(order)
        if not phone:
            data["customer"]["phone"] = None
        out.append(DecodedRecord(RECORD, data, None, b"\0" * 8))
        if len(out) == count:
            return out
    raise SystemExit(f"could not generate {count} orders with {LINES} lines")


def one_pass(translate: Translate, events: list[DecodedRecord]) -> float:
    """Microseconds per event for one pass over ``events``."""
    start = time.perf_counter_ns()
    for event in events:
        translate(event)
    return (time.perf_counter_ns() - start) / len(events) / 1000


def measure(
    compiled: Translate, handwritten: Translate, events: list[DecodedRecord], repeats: int
) -> tuple[float, float]:
    """Median cost per event of each, from alternating passes (GC off while timing)."""
    for event in events:
        if compiled(event) != handwritten(event):
            raise SystemExit("the rules and OrderTranslator disagree; nothing to compare")
    for _ in range(2):
        one_pass(compiled, events)
        one_pass(handwritten, events)
    ours: list[float] = []
    theirs: list[float] = []
    enabled = gc.isenabled()
    gc.disable()
    try:
        for repeat in range(repeats):
            # Alternate who goes first, so a slow patch of the machine hits both alike.
            if repeat % 2 == 0:
                ours.append(one_pass(compiled, events))
                theirs.append(one_pass(handwritten, events))
            else:
                theirs.append(one_pass(handwritten, events))
                ours.append(one_pass(compiled, events))
            gc.collect()
    finally:
        if enabled:
            gc.enable()
    return statistics.median(ours), statistics.median(theirs)


def merge_results(path: Path, entries: list[dict[str, Any]]) -> None:
    """Replace entries of the same name in ``path`` (a JSON list), keep the others."""
    existing: list[dict[str, Any]] = []
    if path.exists():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            loaded = []
        if isinstance(loaded, list):
            existing = [e for e in loaded if isinstance(e, dict)]
    names = {entry["name"] for entry in entries}
    merged = [e for e in existing if e.get("name") not in names] + entries
    path.write_text(json.dumps(merged, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300, help="events per pass (default 300)")
    parser.add_argument("--repeats", type=int, default=31, help="timed passes (default 31)")
    parser.add_argument(
        "--output",
        type=Path,
        default=REPO / "bench-results.json",
        help="results file to merge into (default: <repo>/bench-results.json)",
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 if a ratio is above the target"
    )
    args = parser.parse_args(argv)

    compiled = compile_rules(catalog=SchemaCatalog.load())
    handwritten = OrderTranslator()
    rows: list[tuple[str, float, float]] = []
    entries: list[dict[str, Any]] = []
    recorded_at = datetime.now(UTC).isoformat(timespec="seconds")
    for case, phone in (("with phone", True), ("no phone", False)):
        events = order_events(args.events, phone=phone)
        ours, theirs = measure(compiled.translate, handwritten.translate, events, args.repeats)
        rows.append((case, ours, theirs))
        suffix = "" if phone else "_no_phone"
        entries.append(
            {
                "name": f"translate.order_placed{suffix}.rules",
                "value": round(ours, 3),
                "unit": UNIT,
                "baseline": round(theirs, 3),
                "ratio": round(ours / theirs, 3),
                "target": f"<= {TARGET_RATIO}",
                "met": ours / theirs <= TARGET_RATIO,
                "note": f"{case}; OrderPlaced with {LINES} lines; median of {args.repeats}"
                f" alternating passes over {args.events} events; baseline: OrderTranslator",
                "recorded_at": recorded_at,
            }
        )
        entries.append(
            {
                "name": f"translate.order_placed{suffix}.handwritten",
                "value": round(theirs, 3),
                "unit": UNIT,
                "note": f"{case}; hand-written OrderTranslator, same events and passes",
                "recorded_at": recorded_at,
            }
        )

    print(
        f"OrderPlaced with {LINES} lines -> {1 + LINES} Klaviyo events;"
        f" {args.events} events x {args.repeats} alternating passes, medians"
        f" (rules {compiled.version})"
    )
    header = (
        f"{'case':<12} {'rules':>12} {'hand-written':>14} {'ratio':>7}  target <= {TARGET_RATIO}"
    )
    print(header)
    print("-" * len(header))
    worst = 0.0
    for case, ours, theirs in rows:
        ratio = ours / theirs
        worst = max(worst, ratio)
        verdict = "ok" if ratio <= TARGET_RATIO else "OVER"
        print(f"{case:<12} {ours:>9.2f} us {theirs:>11.2f} us {ratio:>7.2f}  {verdict}")
    merge_results(args.output, entries)
    print(f"written to {args.output}")
    return 1 if args.strict and worst > TARGET_RATIO else 0


if __name__ == "__main__":
    sys.exit(main())
