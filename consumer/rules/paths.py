"""Static types of rule expressions, read from the Avro schemas through the SchemaCatalog.

Every expression gets a :class:`AType` at load time: what kind of value it yields and whether
it can be null. Paths are resolved with :meth:`~consumer.schemas.SchemaCatalog.field`, so a
path that does not exist in the record's schema is a load-time problem, not a KeyError on the
first message. Kinds mirror what fastavro decodes: ``decimal`` is :class:`decimal.Decimal`,
``timestamp`` an aware :class:`datetime.datetime`, ``enum`` a ``str`` among known symbols.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace
from typing import Any

from consumer.schemas import FieldInfo, SchemaCatalog

NUMBER_KINDS = frozenset({"int", "float", "decimal"})
STRING_KINDS = frozenset({"string", "enum"})
_PRIMITIVES = {
    "string": "string",
    "uuid": "string",
    "int": "int",
    "long": "int",
    "float": "float",
    "double": "float",
    "boolean": "boolean",
    "bytes": "bytes",
    "fixed": "bytes",
    "null": "null",
    "decimal": "decimal",
    "timestamp-millis": "timestamp",
    "timestamp-micros": "timestamp",
    "date": "date",
    "time-millis": "int",
    "time-micros": "int",
}


@dataclass(frozen=True, slots=True)
class AType:
    """The static type of an expression.

    ``kind``: string, int, float, decimal, boolean, timestamp, date, bytes, enum, record,
    array, map, null (the literal), any (unknown until run time). ``item`` is the element of
    an array or the value of a map. A record (or an array/map of records) read from a schema
    carries ``root``/``path`` so its fields can be looked up in the catalog.
    """

    kind: str
    nullable: bool = False
    item: AType | None = None
    name: str = ""
    symbols: tuple[str, ...] = ()
    root: str = ""
    path: str = ""

    def describe(self) -> str:
        """Human wording for problems: ``array of string``, ``shop.events.Money or null``."""
        if self.kind == "array" and self.item is not None:
            text = f"array of {self.item.describe()}"
        elif self.kind == "map" and self.item is not None:
            text = f"map of {self.item.describe()}"
        elif self.kind in ("record", "enum") and self.name:
            text = f"{self.kind} {self.name}"
        else:
            text = self.kind
        return f"{text} or null" if self.nullable and self.kind != "null" else text

    def with_null(self, nullable: bool = True) -> AType:
        """The same type, nullable or not."""
        return self if self.nullable == nullable else replace(self, nullable=nullable)

    @property
    def is_number(self) -> bool:
        return self.kind in NUMBER_KINDS

    @property
    def is_stringish(self) -> bool:
        return self.kind in STRING_KINDS

    def has(self, kinds: frozenset[str], catalog: SchemaCatalog, _depth: int = 0) -> bool:
        """True if a value of this type may contain a value of one of ``kinds``."""
        if self.kind in kinds or self.kind == "any":
            return True
        if _depth > 16:
            return False
        if self.item is not None and self.item.has(kinds, catalog, _depth + 1):
            return True
        if self.kind == "record":
            return any(
                t.has(kinds, catalog, _depth + 1) for t in record_fields(catalog, self).values()
            )
        return False


STRING = AType("string")
INT = AType("int")
FLOAT = AType("float")
BOOLEAN = AType("boolean")
NULL = AType("null", nullable=True)
ANY = AType("any", nullable=True)
TIMESTAMP = AType("timestamp")


def array_of(item: AType, nullable: bool = False) -> AType:
    """An array type."""
    return AType("array", nullable=nullable, item=item)


def record_type(record: str) -> AType:
    """The type of a whole event record (the root every rule reads from)."""
    return AType("record", name=record, root=record, path="")


def _from_field(catalog: SchemaCatalog, root: str, info: FieldInfo) -> AType:
    nullable = info.nullable
    kind = _PRIMITIVES.get(info.type_name)
    if kind is not None:
        return AType(kind, nullable=nullable)
    if info.type_name == "array":
        element = catalog.field(root, info.path + "[]")
        item = _from_field(catalog, root, element) if element is not None else ANY
        return AType("array", nullable=nullable, item=item, root=root, path=info.path)
    if info.type_name == "map":
        values = info.schema.get("values") if isinstance(info.schema, dict) else None
        return AType("map", nullable=nullable, item=_from_schema(values))
    if info.type_name == "union":
        return ANY
    schema = info.schema
    if isinstance(schema, dict) and schema.get("type") == "record":
        return AType("record", nullable, name=str(schema["name"]), root=root, path=info.path)
    if isinstance(schema, dict) and schema.get("type") == "enum":
        symbols = tuple(str(s) for s in schema.get("symbols", ()))
        return AType("enum", nullable, name=str(schema["name"]), symbols=symbols)
    if isinstance(schema, dict) and schema.get("type") == "fixed":
        return AType("bytes", nullable)
    return ANY


def _from_schema(schema: Any) -> AType:
    """A map's value type; only primitives are looked into (records in maps are `any`)."""
    nullable = False
    if isinstance(schema, list):
        branches = [b for b in schema if b != "null"]
        nullable = len(branches) < len(schema)
        schema = branches[0] if len(branches) == 1 else None
    if isinstance(schema, dict):
        schema = schema.get("logicalType") or schema.get("type")
    if isinstance(schema, str) and schema in _PRIMITIVES:
        return AType(_PRIMITIVES[schema], nullable=nullable)
    return ANY


def record_fields(catalog: SchemaCatalog, record: AType) -> dict[str, AType]:
    """Field name -> type of a record type read from the catalog (empty when unknown)."""
    if record.kind != "record" or not record.root:
        return {}
    prefix = f"{record.path}." if record.path else ""
    out: dict[str, AType] = {}
    for path, info in catalog.fields(record.root).items():
        if path.startswith(prefix):
            rest = path[len(prefix) :]
            if rest and "." not in rest and "[" not in rest:
                out[rest] = _from_field(catalog, record.root, info)
    return out


def field_type(catalog: SchemaCatalog, record: AType, name: str) -> AType | None:
    """The type of field ``name`` of ``record``; None if it has no such field."""
    path = f"{record.path}.{name}" if record.path else name
    info = catalog.field(record.root, path)
    if info is None:
        return None
    found = _from_field(catalog, record.root, info)
    return found.with_null(found.nullable or record.nullable)


def suggest(name: str, candidates: list[str]) -> str:
    """`` (did you mean 'x'?)`` or nothing."""
    close = difflib.get_close_matches(name, candidates, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unify(types: list[AType]) -> AType | None:
    """The type of a value that is one of ``types`` (coalesce, if); None if they clash."""
    concrete = [t for t in types if t.kind != "null"]
    nullable = any(t.nullable for t in types)
    if not concrete:
        return NULL
    first = concrete[0]
    if all(t.kind == first.kind and t.name == first.name for t in concrete):
        return first.with_null(nullable)
    kinds = {t.kind for t in concrete}
    if "any" in kinds:
        return ANY
    if kinds <= NUMBER_KINDS:
        return AType("float", nullable)
    if kinds <= STRING_KINDS:
        return AType("string", nullable)
    return None
