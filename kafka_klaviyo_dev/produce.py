"""Publishing sample events to a local topic, the way a shop's order service would.

Used by the demo, the integration tests and the benchmarks. Values use registry-free Avro
single-object encoding (schemas from ``schemas/``); keys are the order id, so one order's
events stay in one partition.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import Producer

from consumer.schemas import SchemaCatalog
from kafka_klaviyo_dev.encode import encode_single_object
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
) -> int:
    """Encode (key, record full name, record) triples of any record type (single-object
    encoding) and produce them, in order; ``partition`` as in :func:`produce_values`."""
    catalog = catalog or SchemaCatalog.load()
    return produce_values(
        bootstrap_servers,
        topic,
        ((key, encode_single_object(catalog, name, record)) for key, name, record in records),
        partition=partition,
        headers=headers,
    )
