"""Publishing sample events to a local topic, the way a shop's order service would.

Used by the demo, the integration tests and the benchmarks. Values use registry-free Avro
single-object encoding (schemas from ``schemas/``) or, given a Schema Registry client, the
Confluent wire format with each record type's schema registered under its full name
(RecordNameStrategy); keys are the order id, so one order's events stay in one partition.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import httpx
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient, SchemaRegistryError

from consumer.schemas import SchemaCatalog
from kafka_klaviyo_dev.encode import encode_confluent, encode_single_object, register_schemas
from kafka_klaviyo_dev.errors import DevstackError


def produce_values(
    bootstrap_servers: str,
    topic: str,
    values: Iterable[tuple[bytes | None, bytes | None]],
    *,
    headers: list[tuple[str, str | bytes | None]] | None = None,
    partition: int | None = None,
) -> int:
    """Produce (key, value) pairs and wait until the broker confirmed all; returns the count.

    ``partition``: every pair goes to that partition instead of the one its key hashes to.
    """
    producer = Producer(
        {
            "bootstrap.servers": bootstrap_servers,
            "enable.idempotence": True,
            "linger.ms": 20,
            "compression.type": "lz4",
            # A fresh broker answers "coordinator load in progress" once; that is not news.
            "log_level": 3,
        }
    )
    failures: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(err.str())

    count = 0
    where: dict[str, Any] = {} if partition is None else {"partition": partition}
    for key, value in values:
        while True:
            try:
                producer.produce(
                    topic, key=key, value=value, headers=headers, on_delivery=delivered, **where
                )
                break
            except BufferError:
                producer.poll(0.1)  # local queue full: let deliveries drain
        count += 1
        if count % 1000 == 0:
            producer.poll(0)
    remaining = producer.flush(60)
    if failures or remaining:
        raise DevstackError(
            f"producing to {topic}: {len(failures)} failed, {remaining} unconfirmed"
            + (f" (first: {failures[0]})" if failures else "")
        )
    return count


def produce_orders(
    bootstrap_servers: str,
    topic: str,
    orders: Iterable[dict[str, Any]],
    *,
    catalog: SchemaCatalog | None = None,
    record_name: str = "shop.events.OrderPlaced",
) -> int:
    """Encode records of ``record_name`` (single-object encoding) and produce them."""
    catalog = catalog or SchemaCatalog.load()
    return produce_values(
        bootstrap_servers,
        topic,
        (
            (order["order_id"].encode(), encode_single_object(catalog, record_name, order))
            for order in orders
        ),
    )


def produce_records(
    bootstrap_servers: str,
    topic: str,
    records: Iterable[tuple[bytes | None, str, Mapping[str, Any]]],
    *,
    catalog: SchemaCatalog | None = None,
    partition: int | None = None,
    headers: list[tuple[str, str | bytes | None]] | None = None,
    registry: SchemaRegistryClient | None = None,
) -> int:
    """Encode (key, record full name, record) triples of any record type and produce them, in
    order; ``partition`` as in :func:`produce_values`.

    Single-object encoding, or with ``registry`` the Confluent wire format: each record
    type's schema is registered (once per call; an unchanged schema keeps its id) before its
    first record is encoded.
    """
    catalog = catalog or SchemaCatalog.load()
    values: Iterable[tuple[bytes | None, bytes | None]]
    if registry is None:
        values = (
            (key, encode_single_object(catalog, name, record)) for key, name, record in records
        )
    else:
        values = _confluent_values(registry, catalog, records)
    return produce_values(bootstrap_servers, topic, values, partition=partition, headers=headers)


def _confluent_values(
    registry: SchemaRegistryClient,
    catalog: SchemaCatalog,
    records: Iterable[tuple[bytes | None, str, Mapping[str, Any]]],
) -> Iterator[tuple[bytes | None, bytes | None]]:
    ids: dict[str, int] = {}
    for key, name, record in records:
        if name not in ids:
            try:
                ids.update(register_schemas(registry, catalog, names=[name]))
            except (SchemaRegistryError, httpx.HTTPError) as exc:
                raise DevstackError(
                    f"could not register the schema of {name} in the Schema Registry: {exc}"
                ) from exc
        yield key, encode_confluent(ids[name], catalog.parsed(name), record)
