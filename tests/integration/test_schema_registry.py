"""The Confluent wire format on a real Schema Registry, a real broker and the emulator.

The registry is Apicurio Registry serving Confluent's API (``/apis/ccompat/v7``,
:class:`~kafka_klaviyo_dev.registry.LocalRegistry`); values are written by confluent-kafka's own
``AvroSerializer``, as a shop's producers would; the consumer runs as its own process with
``SCHEMA_REGISTRY_URL`` set. Results are read from the outside: what the emulator accepted, the
dead-letter topic, the group's committed offsets and the consumer's log.

Outages: the registry stopped (connection refused) and started again, and the registry
frozen with SIGSTOP (connections accepted, never answered), each while the consumer needs a
schema id it has not cached. The stopped one keeps its schemas in an H2 file, as a production
registry keeps them (Confluent's in its ``_schemas`` topic): an in-memory Apicurio comes back
empty and answers 404 for the ids the messages carry, which the consumer rightly takes for
bad data, and re-registering the schemas (Apicurio would give the same ids for the same order)
always races the consumer's next retry.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import (
    Schema,
    SchemaRegistryClient,
    topic_record_subject_name_strategy,
)
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from consumer.schemas import SchemaCatalog
from kafka_klaviyo_dev.demo import POISON_KEY, DemoStack, play
from kafka_klaviyo_dev.encode import encode_confluent, register_schemas
from kafka_klaviyo_dev.inspect import read_topic
from kafka_klaviyo_dev.kafka import LocalKafka
from kafka_klaviyo_dev.produce import produce_values
from kafka_klaviyo_dev.registry import LocalRegistry
from kafka_klaviyo_dev.samples import (
    KeyedRecord,
    expected_accepted,
    expected_metrics,
    generated_orders,
    generated_traffic,
)
from tests.fixtures_emulator import RunningEmulator
from tests.support import (
    ConsumerProcess,
    Stack,
    alive,
    log_messages,
    wait_for,
    wait_for_commits,
    wait_until_alive,
)

pytestmark = pytest.mark.integration

CATALOG = SchemaCatalog.load()
ORDER = "shop.events.OrderPlaced"

#: A registry that accepts connections but never answers must not hold the poll loop for
#: long: 2 s per request and no client-side retries (the pipeline retries with backoff).
REGISTRY_TIMEOUTS = json.dumps({"timeout": "2", "max.retries": "0"})


@pytest.fixture
def stack(
    kafka_broker: LocalKafka, emulator: RunningEmulator, topic_name: str, tmp_path: Path
) -> Stack:
    """A 3-partition topic on the shared broker, delivering to the shared emulator."""
    return Stack(kafka_broker, emulator, topic_name, tmp_path)


@pytest.fixture(scope="module")
def own_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    """A registry only this module stops, its schemas kept on disk across restarts."""
    registry = LocalRegistry(work_dir=tmp_path_factory.mktemp("own-registry"), persistent=True)
    registry.start()
    try:
        yield registry
    finally:
        registry.stop()


class Serializers:
    """confluent-kafka's AvroSerializer per record type, registering under
    ``<topic>-<record full name>`` (TopicRecordNameStrategy: several types on one topic,
    subjects no other test shares)."""

    def __init__(self, url: str, topic: str) -> None:
        self.client = SchemaRegistryClient({"url": url})
        self.topic = topic
        self._by_schema: dict[str, AvroSerializer] = {}

    def serialize(self, record: dict[str, Any], schema_str: str) -> bytes:
        serializer = self._by_schema.get(schema_str)
        if serializer is None:
            serializer = self._by_schema[schema_str] = AvroSerializer(
                self.client,
                schema_str,
                conf={"subject.name.strategy": topic_record_subject_name_strategy},
            )
        value = serializer(record, SerializationContext(self.topic, MessageField.VALUE))
        assert value is not None
        return bytes(value)

    def produce(
        self, stack: Stack, records: Iterable[KeyedRecord], *, partition: int | None = None
    ) -> None:
        values = [
            (key, self.serialize(dict(record), CATALOG.canonical_json(name)))
            for key, name, record in records
        ]
        produce_values(stack.bootstrap, stack.topic, values, partition=partition)


def schema_ids(stack: Stack) -> set[int]:
    """The schema ids the topic's values carry (Confluent header ``00`` + 4 bytes)."""
    values = [r.value for r in read_topic(stack.bootstrap, stack.topic, timeout_s=5)]
    assert all(v is not None and v[0] == 0 for v in values)
    return {int.from_bytes(v[1:5], "big") for v in values if v is not None}


def assert_delivered_once(stack: Stack, records: list[KeyedRecord]) -> None:
    """Klaviyo accepted exactly what the records should become, no event twice, and the
    dead-letter topic is empty."""
    pairs = [(name, record) for _key, name, record in records]
    expected = dict(expected_accepted(pairs))

    def accepted() -> dict[str, int]:
        return {name: n for name, n in stack.klaviyo.client.stats().accepted.items() if n}

    # Messages are committed at Klaviyo's 202; a new catalog item is stored later, by the
    # create that follows its update's job: wait for what Klaviyo holds, then compare.
    try:
        wait_for(lambda: accepted() == expected, 60, "what Klaviyo holds")
    except AssertionError:
        assert accepted() == expected
    stats = stack.klaviyo.client.stats()
    events = [(e.metric, e.unique_id) for e in stack.klaviyo.client.events()]
    assert Counter(metric for metric, _ in events) == expected_metrics(pairs)
    assert len(set(events)) == len(events), "an event was accepted twice"
    assert sum(stats.validation_failures.values()) == 0, stats.validation_failures
    assert stack.dead_letters() == []


def stop_cleanly(consumer: ConsumerProcess) -> None:
    output = consumer.output()
    assert consumer.stop() == 0, output[-5000:]


def encode(ids: dict[str, int], name: str, record: dict[str, Any]) -> bytes:
    """Confluent framing with the id the registry gave ``name``'s schema."""
    return encode_confluent(ids[name], CATALOG.parsed(name), record)


def orders_as_records(count: int, prefix: str) -> list[KeyedRecord]:
    return [
        (order["order_id"].encode(), ORDER, order)
        for order in generated_orders(count, prefix=prefix)
    ]


# -- decoding and delivery -----------------------------------------------------------------------


def test_values_from_confluents_avro_serializer_of_every_record_type_are_delivered(
    stack: Stack, schema_registry: LocalRegistry
) -> None:
    records = generated_traffic(8, prefix=stack.topic)
    kinds = {name for _key, name, _record in records}
    assert len(kinds) >= 8, kinds
    Serializers(schema_registry.url, stack.topic).produce(stack, records)
    # One schema id per record type, as registered by the serializer.
    assert len(schema_ids(stack)) == len(kinds)

    consumer = stack.consumer("serialized", SCHEMA_REGISTRY_URL=schema_registry.url)
    with consumer:
        wait_for_commits(stack, consumer, 120, "every serialized record committed")
        assert_delivered_once(stack, records)
        stop_cleanly(consumer)


def test_a_newer_producer_schema_with_an_added_optional_field_decodes_with_our_reader(
    stack: Stack, schema_registry: LocalRegistry
) -> None:
    serializers = Serializers(schema_registry.url, stack.topic)
    subject = f"{stack.topic}-{ORDER}"
    old = CATALOG.canonical_json(ORDER)
    newer = json.loads(old)
    newer["fields"].append({"name": "gift_note", "type": ["null", "string"], "default": None})
    new = json.dumps(newer)
    serializers.client.register_schema(subject, Schema(old, "AVRO"))
    # Apicurio's default is NONE; the evolution must pass the check a shop would run.
    serializers.client.set_compatibility(subject, "BACKWARD")
    assert serializers.client.test_compatibility(subject, Schema(new, "AVRO"))

    before = orders_as_records(4, f"{stack.topic}-v1")
    after = orders_as_records(6, f"{stack.topic}-v2")
    for n, (_key, _name, order) in enumerate(after):
        order["gift_note"] = None if n % 2 else f"for you, number {n}"
    serializers.produce(stack, before)
    values = [(key, serializers.serialize(dict(order), new)) for key, _name, order in after]
    produce_values(stack.bootstrap, stack.topic, values)
    assert serializers.client.get_versions(subject) == [1, 2]
    v1 = serializers.client.get_version(subject, 1).schema_id
    v2 = serializers.client.get_version(subject, 2).schema_id
    assert v1 != v2 and schema_ids(stack) == {v1, v2}

    consumer = stack.consumer("evolved", SCHEMA_REGISTRY_URL=schema_registry.url)
    with consumer:
        wait_for_commits(stack, consumer, 120, "both schema versions committed")
        assert_delivered_once(stack, before + after)
        stop_cleanly(consumer)


def test_the_demo_with_a_registry_sends_the_confluent_wire_format_end_to_end(
    stack: Stack, schema_registry: LocalRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    demo = DemoStack(
        stack.bootstrap,
        stack.klaviyo.base_url,
        stack.klaviyo.api_key,
        topic=stack.topic,
        dead_letter_topic=stack.dlq,
        group_id=stack.group_id,
        registry_url=schema_registry.url,
    )
    code = play(demo, orders=10, timeout_s=240)
    out, err = capsys.readouterr()
    assert code == 0, out + err
    produced = read_topic(stack.bootstrap, stack.topic, timeout_s=5)
    framed = [r for r in produced if r.key != POISON_KEY]
    assert framed and all(r.value is not None and r.value[0] == 0 for r in framed)
    assert stack.klaviyo.client.stats().accepted.get("events", 0) > 0


# -- outages -----------------------------------------------------------------------------------


def waiting_for_registry(consumer: ConsumerProcess, partition: int) -> bool:
    return any(
        "waiting for the Schema Registry" in line and f"[{partition}] paused" in line
        for line in log_messages(consumer.output())
    )


def test_a_stopped_registry_pauses_the_partition_and_a_restarted_one_resumes_it(
    stack: Stack, own_registry: LocalRegistry
) -> None:
    # The shop's schemas, registered in a fixed order (sorted by full name).
    client = SchemaRegistryClient({"url": own_registry.url})
    ids = register_schemas(client, CATALOG)
    first = orders_as_records(5, f"{stack.topic}-first")
    produce_values(
        stack.bootstrap,
        stack.topic,
        [(k, encode(ids, name, r)) for k, name, r in first],
        partition=0,
    )
    consumer = stack.consumer("outage", SCHEMA_REGISTRY_URL=own_registry.url)
    with consumer:
        # The consumer has fetched (and cached) the OrderPlaced schema id, and no other.
        wait_for_commits(stack, consumer, 120, "the orders before the outage")
        own_registry.stop()

        others = [r for r in generated_traffic(4, prefix=f"{stack.topic}-others") if r[1] != ORDER]
        cached = orders_as_records(5, f"{stack.topic}-cached")
        produce_values(
            stack.bootstrap,
            stack.topic,
            [(k, encode(ids, n, r)) for k, n, r in others],
            partition=0,
        )
        produce_values(
            stack.bootstrap,
            stack.topic,
            [(k, encode(ids, n, r)) for k, n, r in cached],
            partition=1,
        )
        # Partition 1 needs only the cached id: it is delivered while the registry is down.
        wait_until_alive(
            consumer, lambda: stack.partition_lags().get(1) == 0, 120, "partition 1 committed"
        )
        wait_until_alive(
            consumer, lambda: waiting_for_registry(consumer, 0), 60, "partition 0 paused"
        )
        assert stack.partition_lags()[0] == len(others)
        assert stack.dead_letters() == []

        own_registry.start()
        # Back with its schemas: registering them again changes nothing.
        assert register_schemas(SchemaRegistryClient({"url": own_registry.url}), CATALOG) == ids
        wait_for_commits(stack, consumer, 120, "partition 0 after the outage")
        alive(consumer)
        assert_delivered_once(stack, first + others + cached)
        assert any(
            line.startswith("Schema Registry outage ended after")
            for line in log_messages(consumer.output())
        )
        stop_cleanly(consumer)


def test_a_frozen_registry_pauses_the_partition_without_holding_the_others(
    stack: Stack, schema_registry: LocalRegistry
) -> None:
    serializers = Serializers(schema_registry.url, stack.topic)
    first = orders_as_records(5, f"{stack.topic}-first")
    others = [r for r in generated_traffic(4, prefix=f"{stack.topic}-others") if r[1] != ORDER]
    # Registered now (by serializing), fetched by the consumer only later.
    other_values = [
        (key, serializers.serialize(dict(r), CATALOG.canonical_json(n))) for key, n, r in others
    ]
    serializers.produce(stack, first, partition=0)
    consumer = stack.consumer(
        "frozen",
        SCHEMA_REGISTRY_URL=schema_registry.url,
        KAFKA_KLAVIYO_SCHEMA_REGISTRY__PROPERTIES=REGISTRY_TIMEOUTS,
    )
    with consumer:
        wait_for_commits(stack, consumer, 120, "the orders before the freeze")
        schema_registry.pause()
        try:
            produce_values(stack.bootstrap, stack.topic, other_values, partition=0)
            cached = orders_as_records(5, f"{stack.topic}-cached")
            serializers.produce(stack, cached, partition=1)  # its id is in the client's cache
            wait_until_alive(
                consumer, lambda: waiting_for_registry(consumer, 0), 60, "partition 0 paused"
            )
            wait_until_alive(
                consumer, lambda: stack.partition_lags().get(1) == 0, 120, "partition 1 committed"
            )
            assert stack.partition_lags()[0] == len(others)
            assert stack.dead_letters() == []
        finally:
            schema_registry.resume()
        wait_for_commits(stack, consumer, 120, "partition 0 after the freeze")
        alive(consumer)
        assert_delivered_once(stack, first + others + cached)
        stop_cleanly(consumer)
