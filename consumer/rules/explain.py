"""``translate --explain``: every output field, its value, and the rule text that produced it.

The checker records, for each rule, where each output field comes from (a pointer pattern
such as ``event/properties/Items/*/SKU`` and the expression as written, with its line). Here the
operations a record actually produced are walked and each field is matched to its pattern, so
the explanation shows real values next to their sources. Fields no rule wrote (``metric.data.
type``, ``integration_type``...) are the fixed shape of Klaviyo's API and say so.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from consumer.decode import DecodedRecord
from consumer.messages import EventPayload, Operation
from consumer.rules.compiled import CompiledRules
from consumer.rules.model import Rule, Source

FIXED = "(fixed by Klaviyo's API)"
_MAX_VALUE = 60


@dataclass(frozen=True, slots=True)
class ExplainedField:
    """One output field: where it is, its value, and its source (None: fixed shape)."""

    pointer: str
    value: Any
    source: Source | None


@dataclass(frozen=True, slots=True)
class ExplainedOperation:
    """One operation and the rule and fields behind it."""

    operation: Operation
    rule: Rule
    fields: list[ExplainedField]


def explain(compiled: CompiledRules, record: DecodedRecord) -> list[ExplainedOperation]:
    """Translate ``record`` and attribute every output field to its source."""
    out: list[ExplainedOperation] = []
    for traced in compiled.traced(record):
        sources = {source.pointer: source for source in traced.rule.sources}
        for operation in traced.operations:
            fields = list(_fields(operation, sources))
            out.append(ExplainedOperation(operation, traced.rule, fields))
    return out


def _fields(operation: Operation, sources: dict[str, Source]) -> Iterator[ExplainedField]:
    payload = operation.payload
    if isinstance(payload, EventPayload):
        yield from _walk(payload.profile, "profile", "profile", sources)
        yield from _walk(payload.event, "event", "event", sources)
        return
    if "endpoint" in sources:
        yield ExplainedField("endpoint", operation.endpoint.name, sources["endpoint"])
    yield from _walk(payload, "", "", sources)
    if operation.group is not None:
        yield ExplainedField("group", operation.group, sources.get("group"))


def _walk(
    value: Any, pointer: str, pattern: str, sources: dict[str, Source]
) -> Iterator[ExplainedField]:
    source = sources.get(pattern)
    if source is not None and not source.descend:
        yield ExplainedField(pointer, value, source)
        return
    if source is not None:
        yield ExplainedField(pointer, _summary(value), source)
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from _walk(item, _join(pointer, str(key)), _join(pattern, str(key)), sources)
    elif isinstance(value, list) and value:
        for index, item in enumerate(value):
            yield from _walk(item, _join(pointer, str(index)), _join(pattern, "*"), sources)
    elif source is None:
        yield ExplainedField(pointer, value, None)


def _join(pointer: str, key: str) -> str:
    return f"{pointer}/{key}" if pointer else key


def _summary(value: Any) -> str:
    if isinstance(value, list):
        return f"<{len(value)} item{'s' if len(value) != 1 else ''}>"
    return "<object>"


def display_pointer(pointer: str) -> str:
    """``event/properties/Items/0/SKU`` -> ``event.properties.Items[0].SKU``."""
    out = ""
    for part in pointer.split("/"):
        if part.isdigit():
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def _show(value: Any) -> str:
    if isinstance(value, str) and value.startswith("<") and value.endswith(">"):
        return value
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= _MAX_VALUE else text[: _MAX_VALUE - 3] + "..."


def render(explained: list[ExplainedOperation], record: DecodedRecord) -> str:
    """The human-readable explanation of one record's translation."""
    lines = [f"record {record.record_name}: {len(explained)} operation(s)"]
    total = len(explained)
    for number, item in enumerate(explained, 1):
        operation = item.operation
        lines.append("")
        lines.append(
            f"[{number}/{total}] {operation.endpoint.name} {operation.endpoint.spec.path}"
            f"  rule {item.rule.name!r} ({item.rule.location})"
        )
        if item.rule.when is not None:
            lines.append(f"  when: {item.rule.when.text}")
        if item.rule.for_each:
            loops = ", ".join(f"{name} in {typed.text}" for name, typed in item.rule.for_each)
            lines.append(f"  one per: {loops}")
        if operation.dedup_key is not None:
            lines.append(f"  dedup key: {' | '.join(operation.dedup_key)}")
        rows = [
            (display_pointer(f.pointer), _show(f.value), _describe(f.source)) for f in item.fields
        ]
        width = min(max((len(r[0]) for r in rows), default=0), 48)
        value_width = min(max((len(r[1]) for r in rows), default=0), _MAX_VALUE)
        for pointer, value, source in rows:
            lines.append(f"  {pointer:<{width}}  {value:<{value_width}}  <- {source}")
    return "\n".join(lines)


def _describe(source: Source | None) -> str:
    if source is None:
        return FIXED
    return f"{source.text}  (line {source.line})"
