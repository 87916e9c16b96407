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

from collections.abc import Callable, Iterator, Mapping, Sequence
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
    """What a schema node allows.

    ``names``: the declared fields (None: free-form or a scalar); ``nested``: (name, pointer
    token, shape) of the declared fields that have structure of their own; ``items``: the
    shape of an array's items; ``resource``: the node's JSON:API type, if it is a resource.
    """

    resource: str | None = None
    names: frozenset[str] | None = None
    nested: tuple[tuple[str, str, _Shape], ...] = ()
    items: _Shape | None = None
    #: The root's generated fast check (see :func:`_predicate`).
    fits: Callable[[Any], bool] | None = None

    @property
    def structured(self) -> bool:
        """Whether a value of this shape can hold an unknown field."""
        return self.names is not None or (self.items is not None and self.items.structured)


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
        shape.names = frozenset(properties)
        children = ((name, _compile(sub)) for name, sub in properties.items())
        shape.nested = tuple(
            (name, jp.escape(name), child) for name, child in children if child.structured
        )
    elif schema.get("type") == "array":
        shape.items = _compile(schema.get("items"))
    return shape


# Schemas are compiled once each; the dict keeps them alive so their ids stay unique.
_COMPILED: dict[int, tuple[Mapping[str, Any], _Shape]] = {}


def shape_of(schema: Mapping[str, Any]) -> _Shape:
    """The compiled field tree of a resolved requestBody schema (cached)."""
    cached = _COMPILED.get(id(schema))
    if cached is None or cached[0] is not schema:
        shape = _compile(schema)
        shape.fits = _predicate(shape)
        cached = (schema, shape)
        _COMPILED[id(schema)] = cached
    return cached[1]


def _predicate(shape: _Shape) -> Callable[[Any], bool]:
    """A function that is True if no key below its argument is unknown to ``shape``.

    Generated Python with one inlined block per object level (the way ``validation.py``
    compiles the schema): a clean body, the common case, is decided in a few loops over its
    arrays instead of a call per object, and without building any pointer.
    """
    lines = ["def fits(x0):"]
    names: dict[str, frozenset[str]] = {}
    counter = iter(range(1, 1_000_000))

    def emit(depth: int, text: str) -> None:
        lines.append("    " * depth + text)

    def node(at: _Shape, var: str, depth: int) -> None:
        if at.names is not None:
            const = f"N{len(names)}"
            names[const] = at.names
            emit(depth, f"if type({var}) is dict:")
            emit(depth + 1, f"if not {var}.keys() <= {const}: return False")
            for name, _, child in at.nested:
                sub = f"x{next(counter)}"
                emit(depth + 1, f"{sub} = {var}.get({name!r})")
                node(child, sub, depth + 1)
        elif at.items is not None:
            item = f"x{next(counter)}"
            emit(depth, f"if type({var}) is list:")
            emit(depth + 1, f"for {item} in {var}:")
            node(at.items, item, depth + 2)

    node(shape, "x0", 1)
    emit(1, "return True")
    namespace: dict[str, Any] = dict(names)
    exec(compile("\n".join(lines), "<unknown-fields predicate>", "exec"), namespace)
    fits: Callable[[Any], bool] = namespace["fits"]
    return fits


def unknown_fields(node: Any, shape: _Shape, where: str, resource: str) -> Iterator[Issue]:
    """Every key below ``node`` that ``shape`` does not declare."""
    # Set difference finds the unknown keys at C speed, and the walk descends only into
    # fields that have structure; a body without unknown keys builds no pointer at all.
    if shape.fits is not None and shape.fits(node):
        return
    stack: list[tuple[Any, _Shape, str, str]] = [(node, shape, where, resource)]
    while stack:
        value, at, pointer, owner = stack.pop()
        if at.names is not None:
            if type(value) is not dict:
                continue  # a type error: the schema check's to report
            owner = at.resource or owner
            extra = value.keys() - at.names
            if extra:
                for name in extra:
                    yield Issue(f"{pointer}/{jp.escape(name)}", not_a_valid_field(name, owner))
            for name, token, child in at.nested:
                sub = value.get(name)
                if sub is not None:
                    stack.append((sub, child, f"{pointer}/{token}", owner))
        elif at.items is not None and type(value) is list:
            items = at.items
            stack.extend((v, items, f"{pointer}/{i}", owner) for i, v in enumerate(value))


@enforces("X1")
def check_unknown_fields(items: Sequence[Item], ctx: CheckContext) -> Iterator[Issue]:
    """X1: no key the schema does not declare, anywhere in the body (needs the spec)."""
    if ctx.schema is None or not isinstance(ctx.body, dict):
        return
    shape = shape_of(ctx.schema)
    data = ctx.body.get("data")
    job = data.get("type") if isinstance(data, dict) else None
    found = list(unknown_fields(ctx.body, shape, "", str(job) if job else "job"))
    found.sort(key=_body_order)  # the walk's order is a stack's
    yield from found


def _body_order(issue: Issue) -> list[tuple[int, int, str]]:
    # Array indexes compare as numbers: /data/2 before /data/10.
    return [(1, int(t), "") if t.isdigit() else (0, 0, t) for t in issue.pointer.split("/")]


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
