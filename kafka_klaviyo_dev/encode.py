"""Producer-side Avro helpers for tests, the demo and benchmarks (the consumer never encodes).

* :func:`encode_single_object` - Avro single-object encoding (``C3 01`` + fingerprint), the
  registry-free framing the demo uses.
* :func:`encode_confluent` - Confluent wire format (``00`` + 4-byte big-endian schema id).
* :func:`register_schemas` - register every event schema of a catalog in a Schema Registry.

Subject naming: :func:`record_subject` (Confluent's RecordNameStrategy, subject = the record's
full name, e.g. ``shop.events.OrderPlaced``) is the default, because one order topic carries
several event types and TopicNameStrategy (``<topic>-value``) allows only one type per topic.
Pass ``subject_strategy=topic_subject("orders")`` to register under ``orders-value`` instead.

Record values follow fastavro's conventions: ``Decimal`` for decimals (at most the schema's
scale, 4 places), timezone-aware ``datetime`` (or int epoch millis) for timestamp-millis
(a naive datetime would be taken as local time), enum symbols as ``str``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from io import BytesIO
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from fastavro import schemaless_writer

from consumer.schemas import SchemaCatalog

__all__ = [
    "encode_confluent",
    "encode_single_object",
    "record_subject",
    "register_schemas",
    "topic_subject",
]


def encode_single_object(
    catalog: SchemaCatalog, full_name: str, record: Mapping[str, Any]
) -> bytes:
    """``C3 01`` + the schema's 8-byte CRC-64-AVRO fingerprint + the Avro binary body."""
    buf = BytesIO()
    buf.write(b"\xc3\x01")
    buf.write(catalog.fingerprint(full_name))
    schemaless_writer(buf, catalog.parsed(full_name), record)
    return buf.getvalue()


def encode_confluent(schema_id: int, parsed_schema: Any, record: Mapping[str, Any]) -> bytes:
    """``00`` + the 4-byte big-endian schema id + the Avro binary body."""
    buf = BytesIO()
    buf.write(b"\x00")
    buf.write(schema_id.to_bytes(4, "big"))
    schemaless_writer(buf, parsed_schema, record)
    return buf.getvalue()


def record_subject(full_name: str) -> str:
    """RecordNameStrategy: the subject is the record's full name."""
    return full_name


def topic_subject(topic: str) -> Callable[[str], str]:
    """TopicNameStrategy for one topic: every record under ``<topic>-value``."""

    def strategy(_full_name: str) -> str:
        return f"{topic}-value"

    return strategy


def register_schemas(
    registry_client: SchemaRegistryClient,
    catalog: SchemaCatalog,
    subject_strategy: Callable[[str], str] = record_subject,
    names: Iterable[str] | None = None,
) -> dict[str, int]:
    """Register the catalog's event schemas (or ``names``); returns full name -> schema id.

    Each schema is registered self-contained (named types inlined, no references), so any
    consumer can read it without fetching further subjects. Registering an unchanged schema
    again returns its existing id.
    """
    ids: dict[str, int] = {}
    for name in sorted(names if names is not None else catalog.event_names):
        schema = Schema(catalog.canonical_json(name), schema_type="AVRO")
        ids[name] = int(registry_client.register_schema(subject_strategy(name), schema))
    return ids
