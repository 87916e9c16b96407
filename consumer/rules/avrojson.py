"""Events given as JSON (``translate FILE``), made exactly what the consumer would decode.

Input: ``{"record": "shop.events.OrderPlaced", "value": {...}}`` where ``value`` is the record in
Avro's JSON form, leniently: a union may be tagged (``{"string": "x"}``) or plain, a decimal may
be a string or a number, a timestamp may be epoch milliseconds or ISO 8601 text, and fields
with defaults may be left out. The value is then written and read back with fastavro against
the catalog's schema, so the translator sees the very types a Kafka message would give
(Decimal, aware datetime, defaults filled in).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from io import BytesIO
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from consumer.decode import DecodedRecord
from consumer.schemas import SchemaCatalog

_PRIMITIVE_NAMES = frozenset(
    {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
)


class JsonInputError(ValueError):
    """The JSON is not an event of a record the catalog knows; the message says where."""


def record_from_json(document: Any, catalog: SchemaCatalog) -> DecodedRecord:
    """The DecodedRecord a Kafka message carrying this event would decode to."""
    if not isinstance(document, dict) or not {"record", "value"} <= set(document):
        raise JsonInputError('expected {"record": "<Avro full name>", "value": {...}}')
    requested = document["record"]
    name = catalog.resolve_name(requested) if isinstance(requested, str) else None
    if name is None:
        known = ", ".join(sorted(catalog.event_names))
        raise JsonInputError(f"record {requested!r} is not in the schema catalog ({known})")
    schema = catalog.parsed(name)
    named: dict[str, Any] = dict(schema.get("__named_schemas", {}))
    value = _coerce(schema, document["value"], named, "value")
    buffer = BytesIO()
    try:
        schemaless_writer(buffer, schema, value)
        buffer.seek(0)
        data = schemaless_reader(buffer, schema, None)
    except Exception as exc:  # fastavro reports bad data with many exception types
        raise JsonInputError(f"value does not fit {name}: {exc}") from exc
    if not isinstance(data, dict):
        raise JsonInputError(f"{name} is not a record schema")
    return DecodedRecord(name, data, None, catalog.fingerprint(name))


def _coerce(schema: Any, value: Any, named: dict[str, Any], where: str) -> Any:
    if isinstance(schema, str):
        if schema in _PRIMITIVE_NAMES:
            return _primitive(schema, value, where)
        if schema in named:
            return _coerce(named[schema], value, named, where)
        raise JsonInputError(f"{where}: unknown type {schema}")
    if isinstance(schema, list):
        return _union(schema, value, named, where)
    kind = schema.get("type")
    logical = schema.get("logicalType")
    if logical == "decimal":
        return _decimal(value, int(schema.get("scale", 0)), where)
    if logical in ("timestamp-millis", "timestamp-micros"):
        return _timestamp(value, where)
    if kind == "record":
        return _record(schema, value, named, where)
    if kind == "array":
        if not isinstance(value, list):
            raise JsonInputError(f"{where}: expected a list")
        return [_coerce(schema["items"], v, named, f"{where}[{i}]") for i, v in enumerate(value)]
    if kind == "map":
        if not isinstance(value, dict):
            raise JsonInputError(f"{where}: expected an object")
        return {
            str(k): _coerce(schema["values"], v, named, f"{where}.{k}") for k, v in value.items()
        }
    if kind == "enum":
        if value not in schema.get("symbols", ()):
            symbols = ", ".join(schema.get("symbols", ()))
            raise JsonInputError(f"{where}: {value!r} is not one of {symbols}")
        return value
    if kind == "fixed":
        return value.encode("latin-1") if isinstance(value, str) else value
    if isinstance(kind, str | list | dict):
        return _coerce(kind, value, named, where)
    raise JsonInputError(f"{where}: unsupported schema {schema!r}")


def _record(schema: dict[str, Any], value: Any, named: dict[str, Any], where: str) -> Any:
    if not isinstance(value, dict):
        raise JsonInputError(f"{where}: expected an object for {schema.get('name')}")
    fields = {field["name"]: field for field in schema["fields"]}
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise JsonInputError(f"{where}: unknown field(s) {', '.join(unknown)}")
    out: dict[str, Any] = {}
    for name, field in fields.items():
        if name in value:
            out[name] = _coerce(field["type"], value[name], named, f"{where}.{name}")
        elif "default" in field:
            out[name] = field["default"]
        else:
            raise JsonInputError(f"{where}.{name}: required (it has no default)")
    return out


def _union(branches: list[Any], value: Any, named: dict[str, Any], where: str) -> Any:
    if value is None:
        if "null" in branches:
            return None
        raise JsonInputError(f"{where}: may not be null")
    if isinstance(value, dict) and len(value) == 1:
        ((tag, inner),) = value.items()
        for branch in branches:
            if _branch_name(branch) in (tag, tag.rpartition(".")[2]) or _branch_name(
                branch
            ).endswith(f".{tag}"):
                return _coerce(branch, inner, named, where)
    errors: list[str] = []
    for branch in branches:
        if branch == "null":
            continue
        try:
            return _coerce(branch, value, named, where)
        except JsonInputError as exc:
            errors.append(str(exc))
    raise JsonInputError(errors[0] if len(errors) == 1 else f"{where}: fits no branch of the union")


def _branch_name(branch: Any) -> str:
    if isinstance(branch, str):
        return branch
    if isinstance(branch, dict):
        if "name" in branch:
            return str(branch["name"])
        return str(branch.get("logicalType") or branch.get("type"))
    return ""


def _primitive(kind: str, value: Any, where: str) -> Any:
    if kind == "null":
        if value is not None:
            raise JsonInputError(f"{where}: expected null")
        return None
    if kind == "boolean":
        if not isinstance(value, bool):
            raise JsonInputError(f"{where}: expected true or false")
        return value
    if kind in ("int", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise JsonInputError(f"{where}: expected an integer")
        return value
    if kind in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise JsonInputError(f"{where}: expected a number")
        return float(value)
    if kind == "bytes":
        return value.encode("latin-1") if isinstance(value, str) else value
    if not isinstance(value, str):
        raise JsonInputError(f"{where}: expected text")
    return value


def _decimal(value: Any, scale: int, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise JsonInputError(f"{where}: expected a decimal (text or number)")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise JsonInputError(f"{where}: {value!r} is not a decimal") from None
    quantum = Decimal(1).scaleb(-scale)
    exact = number.quantize(quantum)
    if exact != number:
        raise JsonInputError(f"{where}: {value!r} has more than {scale} decimal places")
    return exact


def _timestamp(value: Any, where: str) -> datetime:
    if isinstance(value, bool):
        raise JsonInputError(f"{where}: expected a timestamp")
    if isinstance(value, int):
        seconds, millis = divmod(value, 1000)
        return datetime.fromtimestamp(seconds, UTC) + timedelta(milliseconds=millis)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise JsonInputError(f"{where}: {value!r} is not an ISO 8601 timestamp") from None
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    raise JsonInputError(f"{where}: expected epoch milliseconds or ISO 8601 text")
