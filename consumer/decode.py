"""Decode Kafka message values into Avro records, in both framings a shop publishes.

* Confluent wire format: ``00`` + 4-byte big-endian schema id + Avro binary body. The writer
  schema comes from the Schema Registry (confluent-kafka's ``SchemaRegistryClient``, schema
  references followed), parsed once per id and cached.
* Avro single-object encoding: ``C3 01`` + 8-byte little-endian CRC-64-AVRO fingerprint +
  body. The writer schema comes from the :class:`~consumer.schemas.SchemaCatalog` (current
  files and ``history/``); no registry involved.

Either way the body is resolved against *our* reader schema of the same full name (or one
whose ``aliases`` name the writer's record), so fields the writer lacks get their defaults and
fields it added are skipped. When the writer reads bytes exactly like the reader
(:func:`~consumer.schemas.encoding_form` equal) the reader schema is used alone, which skips
fastavro's per-record resolution.

Decoded values are fastavro's defaults: ``decimal`` -> :class:`decimal.Decimal` (with the
schema's scale, e.g. ``Decimal("29.9800")``), ``timestamp-millis`` -> timezone-aware
:class:`datetime.datetime` in UTC, enum -> its symbol as ``str``, ``["null", T]`` -> ``None``
or the plain value (no tuple notation), map -> ``dict``, array -> ``list``.

Errors, and where they go:

* :class:`~consumer.errors.NotAvroError`, :class:`~consumer.errors.UnknownSchemaError`,
  :class:`~consumer.errors.SchemaMismatchError`, :class:`~consumer.errors.UnmappedRecordError`
  - bad data: dead-letter the message. ``record_name`` is set when known, ``detail`` carries
  ``schema_id`` or ``fingerprint`` (hex). Messages never contain field values.
* :class:`~consumer.errors.SchemaRegistryUnavailableError` - the registry could not be asked
  (connection error, timeout, 5xx, 429). Not bad data: never dead-letter; the pipeline parks
  the partition and retries. Nothing is cached, so the message decodes once the registry
  answers again.
* :class:`~consumer.errors.ConfigError` - the registry refused our credentials (401/403):
  stop the process.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from io import BytesIO
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, SchemaRegistryError
from fastavro import schemaless_reader
from fastavro.read import SchemaResolutionError
from fastavro.repository.base import AbstractSchemaRepository, SchemaRepositoryError
from fastavro.schema import load_schema

from consumer.errors import (
    ConfigError,
    DecodeError,
    NotAvroError,
    SchemaMismatchError,
    SchemaRegistryUnavailableError,
    UnknownSchemaError,
    UnmappedRecordError,
)
from consumer.messages import DecodedRecord
from consumer.schemas import SchemaCatalog, encoding_form

__all__ = [
    "CONFLUENT_MAGIC_BYTE",
    "SINGLE_OBJECT_MARKER",
    "DecodedRecord",
    "Decoder",
]

CONFLUENT_MAGIC_BYTE = 0
SINGLE_OBJECT_MARKER = b"\xc3\x01"
_CONFLUENT_HEADER = 5
_SINGLE_OBJECT_HEADER = 10
# Enough to recognise JSON, text or a foreign framing, too few to leak an e-mail address.
_SHOWN_BYTES = 4
_MAX_REFERENCE_DEPTH = 32
_ROOT = "$root"


@dataclass(frozen=True, slots=True)
class _Plan:
    """How to read the bodies of one schema id or fingerprint; built once, then reused."""

    record_name: str
    writer: Any
    reader: Any
    schema_id: int | None
    fingerprint: bytes | None
    detail: dict[str, Any]
    # A deterministic failure is cached too, so a flood of one bad type costs no lookups.
    failure: tuple[type[DecodeError], str] | None = None
    resolved: bool = False

    def fail(self) -> DecodeError:
        assert self.failure is not None
        cls, message = self.failure
        return cls(message, record_name=self.record_name or None, detail=dict(self.detail))


class _MappingRepository(AbstractSchemaRepository):
    """Named schemas from the registry's references, for fastavro's ``load_schema``."""

    def __init__(self, schemas: dict[str, Any]) -> None:
        self._schemas = schemas

    def load(self, name: str) -> Any:
        try:
            return self._schemas[name]
        except KeyError:
            raise SchemaRepositoryError(f"unknown named type {name}") from None


class Decoder:
    """Turns message values into :class:`DecodedRecord` objects; one per consumer.

    ``registry`` is needed only for Confluent-framed values. ``mapped_records`` (full names
    the translation rules map) makes any other record fail with
    :class:`~consumer.errors.UnmappedRecordError`; when it is None every record decodes, and a
    record the catalog lacks is read with its writer schema alone (for inspection tools).

    Caches are plain dicts filled on first sight of an id or fingerprint; concurrent use from
    several threads at worst builds a plan twice.
    """

    __slots__ = ("_by_fingerprint", "_by_id", "_catalog", "_mapped", "_registry")

    def __init__(
        self,
        catalog: SchemaCatalog,
        *,
        registry: SchemaRegistryClient | None = None,
        mapped_records: frozenset[str] | None = None,
    ) -> None:
        self._catalog = catalog
        self._registry = registry
        self._mapped = mapped_records
        self._by_id: dict[int, _Plan] = {}
        self._by_fingerprint: dict[bytes, _Plan] = {}

    def decode(self, value: bytes | None) -> DecodedRecord:
        """Decode one message value; raises a :class:`~consumer.errors.DecodeError` subclass,
        :class:`SchemaRegistryUnavailableError` or :class:`~consumer.errors.ConfigError`."""
        if not value:
            raise NotAvroError(
                "value is not Avro: the message has no value (null or empty)",
                detail={"length": 0},
            )
        first = value[0]
        if first == CONFLUENT_MAGIC_BYTE:
            if len(value) < _CONFLUENT_HEADER:
                raise _too_short(value, "Confluent wire format", _CONFLUENT_HEADER)
            schema_id = int.from_bytes(value[1:5], "big")
            plan = self._by_id.get(schema_id)
            if plan is None:
                plan = self._plan_for_id(schema_id)
            offset = _CONFLUENT_HEADER
        elif first == 0xC3 and value[1:2] == b"\x01":
            if len(value) < _SINGLE_OBJECT_HEADER:
                raise _too_short(value, "single-object encoding", _SINGLE_OBJECT_HEADER)
            fp = value[2:10]
            plan = self._by_fingerprint.get(fp)
            if plan is None:
                plan = self._plan_for_fingerprint(fp)
            offset = _SINGLE_OBJECT_HEADER
        else:
            raise NotAvroError(
                f"value is not Avro: first bytes {_show(value)} (neither Confluent magic byte 0"
                " nor single-object marker C3 01)",
                detail={"first_bytes": value[:_SHOWN_BYTES].hex(), "length": len(value)},
            )
        if plan.failure is not None:
            raise plan.fail()
        buf = BytesIO(value)
        buf.seek(offset)
        try:
            data = schemaless_reader(buf, plan.writer, plan.reader)
        except Exception as exc:  # fastavro signals corrupt input with many unrelated types
            raise SchemaMismatchError(
                f"{plan.record_name} ({_source(plan)}): body does not decode"
                f"{' with our reader schema' if plan.resolved else ''}: {_describe(exc)}",
                record_name=plan.record_name,
                detail=dict(plan.detail),
            ) from exc
        if buf.tell() != len(value):
            raise SchemaMismatchError(
                f"{plan.record_name} ({_source(plan)}): {len(value) - buf.tell()} bytes left"
                " after the record; the body was not written with this schema",
                record_name=plan.record_name,
                detail=dict(plan.detail),
            )
        if not isinstance(data, dict):
            # A writer schema that is not a record (e.g. a bare string) has nothing to translate.
            raise UnmappedRecordError(
                f"{plan.record_name} ({_source(plan)}) is not a record",
                record_name=plan.record_name,
                detail=dict(plan.detail),
            )
        return DecodedRecord(plan.record_name, data, plan.schema_id, plan.fingerprint)

    # -- plans: built once per schema id / fingerprint ---------------------------------

    def _plan_for_fingerprint(self, fp: bytes) -> _Plan:
        detail = {"fingerprint": fp.hex()}
        found = self._catalog.writer_by_fingerprint(fp)
        if found is None:
            # Not cached: a miss is already two dict lookups, and caching would let a flood of
            # random fingerprints grow the cache without bound.
            raise UnknownSchemaError(
                f"no schema in {self._catalog.directory} has fingerprint {fp.hex()}"
                " (single-object encoding)",
                detail=detail,
            )
        writer_name, writer = found
        plan = self._plan(writer_name, writer, schema_id=None, fingerprint=fp, detail=detail)
        self._by_fingerprint[fp] = plan
        return plan

    def _plan_for_id(self, schema_id: int) -> _Plan:
        detail: dict[str, Any] = {"schema_id": schema_id}
        if self._registry is None:
            raise UnknownSchemaError(
                f"value uses the Confluent wire format (schema id {schema_id}) but no Schema"
                " Registry is configured",
                detail=detail,
            )
        schema, references = self._fetch(schema_id)
        if schema.schema_type not in (None, "AVRO"):
            plan = _failed(
                schema_id,
                detail,
                NotAvroError,
                f"value is not Avro: schema id {schema_id} is a {schema.schema_type} schema",
            )
        else:
            try:
                raw = json.loads(schema.schema_str or "")
                named = _named_references(references)
                writer = load_schema(_ROOT, repo=_MappingRepository({**named, _ROOT: raw}))
            except Exception as exc:  # any parse failure means the same for us: unusable
                plan = _failed(
                    schema_id,
                    detail,
                    SchemaMismatchError,
                    f"writer schema id {schema_id} from the registry does not parse:"
                    f" {_describe(exc, always=True)}",
                )
            else:
                plan = self._plan(
                    _type_label(writer),
                    writer,
                    schema_id=schema_id,
                    fingerprint=None,
                    detail=detail,
                )
        self._by_id[schema_id] = plan
        return plan

    def _plan(
        self,
        writer_name: str,
        writer: Any,
        *,
        schema_id: int | None,
        fingerprint: bytes | None,
        detail: dict[str, Any],
    ) -> _Plan:
        name = self._catalog.resolve_name(writer_name)
        record_name = name or writer_name
        if self._mapped is not None and record_name not in self._mapped:
            source = (
                f"schema id {schema_id}"
                if schema_id is not None
                else (f"fingerprint {detail['fingerprint']}")
            )
            return _Plan(
                record_name,
                writer,
                None,
                schema_id,
                fingerprint,
                detail,
                failure=(
                    UnmappedRecordError,
                    f"record {record_name} ({source}) is not mapped by any translation rule",
                ),
            )
        if name is None:
            return _Plan(record_name, writer, None, schema_id, fingerprint, detail)
        reader = self._catalog.parsed(name)
        if reader is writer or encoding_form(writer) == encoding_form(reader):
            # Same bytes, same meaning: read with the reader alone, no per-record resolution.
            return _Plan(record_name, reader, None, schema_id, fingerprint, detail)
        return _Plan(record_name, writer, reader, schema_id, fingerprint, detail, resolved=True)

    def _fetch(self, schema_id: int) -> tuple[Schema, dict[str, str]]:
        """The writer schema and the JSON of every schema it references, by name."""
        assert self._registry is not None
        registry = self._registry
        what = f"schema id {schema_id}"
        schema: Schema = _ask(schema_id, what, lambda: registry.get_schema(schema_id))
        references: dict[str, str] = {}
        pending = [(ref, 0) for ref in schema.references or ()]
        while pending:
            ref, depth = pending.pop()
            if ref.name is None or ref.subject is None or ref.version is None:
                continue  # an incomplete reference surfaces as an unknown type when parsing
            if ref.name in references or depth > _MAX_REFERENCE_DEPTH:
                continue
            registered = _ask(
                schema_id,
                f"{ref.name} (subject {ref.subject} version {ref.version}, referenced by {what})",
                partial(registry.get_version, ref.subject, ref.version),
            )
            references[ref.name] = registered.schema.schema_str or "null"
            pending.extend((sub, depth + 1) for sub in registered.schema.references or ())
        return schema, references


def _ask(schema_id: int, what: str, call: Callable[[], Any]) -> Any:
    """One registry call, its failures translated: 404 is bad data, the rest is not."""
    try:
        return call()
    except SchemaRegistryError as exc:
        status = exc.http_status_code
        if status == 404:
            raise UnknownSchemaError(
                f"{what} is not in the Schema Registry ({exc.error_message},"
                f" code {exc.error_code})",
                detail={"schema_id": schema_id, "registry_error_code": exc.error_code},
            ) from exc
        if status in (401, 403):
            raise ConfigError(
                f"Schema Registry refused the credentials (HTTP {status}) while fetching"
                f" {what}: check the schema registry auth settings"
            ) from exc
        raise SchemaRegistryUnavailableError(
            f"Schema Registry answered HTTP {status} while fetching {what}: {exc.error_message}",
            schema_id=schema_id,
            http_status=status if status and status > 0 else None,
        ) from exc
    except Exception as exc:  # connection refused, timeout, DNS: all mean "try later"
        raise SchemaRegistryUnavailableError(
            f"Schema Registry unreachable while fetching {what}: {type(exc).__name__}: {exc}",
            schema_id=schema_id,
        ) from exc


def _named_references(references: dict[str, str]) -> dict[str, Any]:
    """Parsed reference JSON under its reference name and under its own full name."""
    out: dict[str, Any] = {}
    for ref_name, text in references.items():
        raw = json.loads(text)
        out[ref_name] = raw
        if isinstance(raw, dict) and "name" in raw:
            ns, nm = raw.get("namespace"), str(raw["name"])
            out.setdefault(nm if "." in nm or not ns else f"{ns}.{nm}", raw)
    return out


def _type_label(schema: Any) -> str:
    """A named type's full name; otherwise the Avro type (``string``, ``array``, ...)."""
    if isinstance(schema, dict):
        return str(schema.get("name", schema.get("type")))
    return str(schema) if isinstance(schema, str) else "union"


def _failed(schema_id: int, detail: dict[str, Any], cls: type[DecodeError], message: str) -> _Plan:
    return _Plan("", None, None, schema_id, None, detail, failure=(cls, message))


def _source(plan: _Plan) -> str:
    if plan.schema_id is not None:
        return f"schema id {plan.schema_id}"
    return f"fingerprint {plan.detail.get('fingerprint', '?')}"


def _show(value: bytes) -> str:
    shown = " ".join(f"{b:02x}" for b in value[:_SHOWN_BYTES])
    return shown + (" ..." if len(value) > _SHOWN_BYTES else "")


def _too_short(value: bytes, framing: str, needed: int) -> NotAvroError:
    return NotAvroError(
        f"value is not Avro: {len(value)} bytes ({_show(value)}) is shorter than the"
        f" {needed}-byte {framing} header",
        detail={"first_bytes": value[:_SHOWN_BYTES].hex(), "length": len(value)},
    )


def _describe(exc: BaseException, *, always: bool = False) -> str:
    """Exception class, plus its text only where that text is about schemas, never data."""
    if always or isinstance(exc, SchemaResolutionError | EOFError):
        return f"{type(exc).__name__}: {exc}"
    return type(exc).__name__
