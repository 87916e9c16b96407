"""Unknown fields: Klaviyo answers 400 "'<field>' is not a valid field for the resource '<type>'".

The schema never sets ``additionalProperties: false``, so the schema check accepts any extra
key; Klaviyo does not (RULES.md X1). The declared fields come from the operation's requestBody
schema in the spec; objects the schema leaves free-form (``properties``, ``custom_metadata``,
``patch_properties.append``...: an object without declared properties) take any key.

P10 (no ``anonymous_id`` in a profile import), C11 (no ``external_id``, ``integration_type``,
``catalog_type`` in a catalog update) and D24 (no ``data.id`` on a catalog create) are the same
refusal for named fields; they have their own checks so that they hold without the spec too.

The resource named in the detail is the JSON:API ``type`` of the nearest object around the
field (``profile``, ``metric``, ``catalog-item``, the job's type at the top). Klaviyo names
nested objects (``location``, push ``tokens``) by its own internal names, which the spec does
not give; the nearest resource type stands in for them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kafka_klaviyo_dev.emulator import pointer as jp
from kafka_klaviyo_dev.emulator.items import Issue, Item
from kafka_klaviyo_dev.emulator.limits import CheckContext, enforces


def not_a_valid_field(name: str, resource: str) -> str:
    """Klaviyo's detail for an unknown field."""
    return f"'{name}' is not a valid field for the resource '{resource}'."


@dataclass(slots=True)
class _Shape:
    """What a schema node allows: declared fields (None: free-form or a scalar), or the
    shape of an array's items; ``resource``: the node's JSON:API type, if it is a resource."""

    resource: str | None = None
    fields: dict[str, _Shape] | None = None
    items: _Shape | None = None


def _resource_type(schema: Mapping[str, Any]) -> str | None:
    kind = schema.get("properties", {}).get("type")
    enum = kind.get("enum") if isinstance(kind, dict) else None
    return str(enum[0]) if isinstance(enum, list) and len(enum) == 1 else None


def _compile(schema: Any) -> _Shape:
    shape = _Shape()
    if not isinstance(schema, dict):
        return shape
    properties = schema.get("properties")
    if isinstance(properties, dict) and properties:
        shape.resource = _resource_type(schema)
        shape.fields = {name: _compile(sub) for name, sub in properties.items()}
    elif schema.get("type") == "array":
        shape.items = _compile(schema.get("items"))
    return shape


# Schemas are compiled once each; the dict keeps them alive so their ids stay unique.
_COMPILED: dict[int, tuple[Mapping[str, Any], _Shape]] = {}


def shape_of(schema: Mapping[str, Any]) -> _Shape:
    """The compiled field tree of a resolved requestBody schema (cached)."""
    cached = _COMPILED.get(id(schema))
    if cached is None or cached[0] is not schema:
        cached = (schema, _compile(schema))
        _COMPILED[id(schema)] = cached
    return cached[1]


def unknown_fields(node: Any, shape: _Shape, where: str, resource: str) -> Iterator[Issue]:
    """Every key below ``node`` that ``shape`` does not declare."""
    stack: list[tuple[Any, _Shape, str, str]] = [(node, shape, where, resource)]
    while stack:
        value, at, pointer, owner = stack.pop()
        if at.fields is not None:
            if not isinstance(value, dict):
                continue  # a type error: the schema check's to report
            owner = at.resource or owner
            for name, sub in value.items():
                child = at.fields.get(name)
                here = f"{pointer}/{jp.escape(name)}"
                if child is None:
                    yield Issue(here, not_a_valid_field(name, owner))
                elif child.fields is not None or child.items is not None:
                    stack.append((sub, child, here, owner))
        elif at.items is not None and isinstance(value, list):
            if at.items.fields is None and at.items.items is None:
                continue
            stack.extend((v, at.items, f"{pointer}/{i}", owner) for i, v in enumerate(value))


@enforces("X1")
def check_unknown_fields(items: Sequence[Item], ctx: CheckContext) -> Iterator[Issue]:
    """X1: no key the schema does not declare, anywhere in the body (needs the spec)."""
    if ctx.schema is None or not isinstance(ctx.body, dict):
        return
    shape = shape_of(ctx.schema)
    data = ctx.body.get("data")
    job = data.get("type") if isinstance(data, dict) else None
    found = list(unknown_fields(ctx.body, shape, "", str(job) if job else "job"))
    found.sort(key=lambda issue: issue.pointer)  # the walk's order is a stack's
    yield from found


def _refuse_attributes(
    item: Item, names: tuple[str, ...], resource: str, container: tuple[str, ...]
) -> Iterator[Issue]:
    node: Any = item.resource
    for token in container:
        node = node.get(token) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        return
    for name in names:
        if name in node:
            yield Issue(
                jp.join(item.pointer, (*container, name)), not_a_valid_field(name, resource)
            )


@enforces("P10")
def check_no_anonymous_id(item: Item, ctx: CheckContext) -> Iterator[Issue]:
    """P10: a profile import's profiles have no ``anonymous_id`` (removed in 2026-01-15)."""
    yield from _refuse_attributes(item, ("anonymous_id",), "profile", ("attributes",))


@enforces("C11")
def check_update_immutables(item: Item, ctx: CheckContext) -> Iterator[Issue]:
    """C11: a catalog update sends no ``external_id``, ``integration_type``, ``catalog_type``."""
    names = ("external_id", "integration_type", "catalog_type")
    yield from _refuse_attributes(item, names, "catalog-item", ("attributes",))


@enforces("D24")
def check_no_id_on_create(item: Item, ctx: CheckContext) -> Iterator[Issue]:
    """D24: a catalog create's items carry no ``id`` (Klaviyo makes it from ``external_id``)."""
    yield from _refuse_attributes(item, ("id",), "catalog-item", ())
