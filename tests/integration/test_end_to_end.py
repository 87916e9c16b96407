"""End to end on the real stack: Avro events on a real Kafka broker reach the Klaviyo emulator.

The consumer runs as its own OS process (``python -m consumer run``), configured only through
the environment, exactly as in a Kubernetes pod. Nothing here is mocked: the broker is Apache
Kafka from Maven Central, the emulator is a real HTTP server validating every body against
Klaviyo's OpenAPI spec.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from pathlib import Path

import httpx
import orjson
import pytest

from consumer.schemas import SchemaCatalog
from kafka_klaviyo_dev.encode import encode_single_object
from kafka_klaviyo_dev.inspect import committed_offsets, group_lag, read_topic
from kafka_klaviyo_dev.produce import produce_orders, produce_values
from kafka_klaviyo_dev.samples import expected_events, generated_orders, guide_order
from tests.support import (
    DEAD_LETTER_HEADERS,
    ConsumerProcess,
    consumer_env,
    free_port,
    kafka_properties,
    wait_for,
)

pytestmark = pytest.mark.integration

CATALOG = SchemaCatalog.load()


@pytest.fixture
def stack(kafka_broker, emulator, topic_name, tmp_path: Path):
    """A 3-partition topic, its dead-letter topic, and the consumer's environment."""
    kafka_broker.create_topic(topic_name, partitions=3)
    dead_letter_topic = f"{topic_name}.dlq"
    kafka_broker.create_topic(dead_letter_topic, partitions=1)
    group = f"group-{uuid.uuid4().hex[:8]}"
    env = consumer_env(
        bootstrap_servers=kafka_broker.bootstrap_servers,
        base_url=emulator.base_url,
        api_key=emulator.api_key,
        topic=topic_name,
        group_id=group,
        dead_letter_topic=dead_letter_topic,
    )

    class Stack:
        bootstrap = kafka_broker.bootstrap_servers
        topic = topic_name
        dlq = dead_letter_topic
        group_id = group
        klaviyo = emulator

        def consumer(self, **extra: str) -> ConsumerProcess:
            return ConsumerProcess(
                {**env, **extra}, tmp_path / f"consumer-{uuid.uuid4().hex[:6]}.log"
            )

        def lag(self) -> int:
            return group_lag(self.bootstrap, self.group_id, self.topic)

    return Stack()


def test_orders_reach_klaviyo_and_offsets_are_committed(stack) -> None:
    orders = [guide_order(), *generated_orders(200, prefix=stack.topic)]
    expected = sum(expected_events(order) for order in orders)
    produce_orders(stack.bootstrap, stack.topic, orders)

    port = free_port()
    with stack.consumer(KAFKA_KLAVIYO_OBSERVABILITY__METRICS_PORT=str(port)) as consumer:
        wait_for(lambda: len(stack.klaviyo.client.events()) >= expected, 90, "all events")
        wait_for(lambda: stack.lag() == 0, 30, "offsets committed to the end")
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert httpx.get(f"{base}/readyz").status_code == 200
        metrics = httpx.get(f"{base}/metrics").text
        delivered = 'kafka_klaviyo_outputs_delivered_total{account="default",endpoint="events"}'
        assert f"{delivered} {expected}.0" in metrics
        translated = 'kafka_klaviyo_messages_total{outcome="translated",stage="translate"}'
        assert f"{translated} {len(orders)}.0" in metrics
        assert consumer.stop() == 0, consumer.output()

    events = stack.klaviyo.client.events()
    assert len(events) == expected
    guide = {
        e.unique_id: e
        for e in events
        if e.unique_id in {"1234", "1234_WINNIEPOOH", "1234_TALEOFTWO"}
    }
    assert guide["1234"].metric == "Placed Order" and guide["1234"].value == 29.98
    assert guide["1234_WINNIEPOOH"].metric == "Ordered Product"
    assert guide["1234_TALEOFTWO"].value == 19.99
    assert guide["1234"].email == "john.smith@test.com"
    assert guide["1234"].properties["ItemNames"] == ["Winnie the Pooh", "A Tale of Two Cities"]
    stats = stack.klaviyo.client.stats()
    # Every body the consumer sent validated against the OpenAPI spec and Klaviyo's limits.
    assert stats.responses("events", 400) == 0 and sum(stats.validation_failures.values()) == 0
    assert stats.responses("events") == stats.responses("events", 202)
    assert read_topic(stack.bootstrap, stack.dlq, timeout_s=2) == []


def test_redelivery_after_restart_is_deduplicated_by_unique_id(stack) -> None:
    orders = list(generated_orders(30, prefix=stack.topic))
    expected = sum(expected_events(order) for order in orders)
    produce_orders(stack.bootstrap, stack.topic, orders)
    # The killed member holds its partitions until its session times out (45 s by default):
    # 6 s, the broker's minimum, so the second run does not spend most of its wait on that.
    session = kafka_properties(session_timeout_ms=6000, heartbeat_interval_ms=1000)
    # A first consumer delivers everything but is killed before it can commit.
    with stack.consumer(
        KAFKA_KLAVIYO_KAFKA__COMMIT_INTERVAL_MS="600000", KAFKA_KLAVIYO_KAFKA__PROPERTIES=session
    ) as first:
        wait_for(lambda: len(stack.klaviyo.client.events()) >= expected, 60, "first delivery")
        first.kill()
    assert stack.lag() == len(orders)  # nothing committed
    with stack.consumer(KAFKA_KLAVIYO_KAFKA__PROPERTIES=session) as second:
        wait_for(lambda: stack.lag() == 0, 120, "second run to commit")
        assert second.stop() == 0
    stats = stack.klaviyo.client.stats()
    assert len(stack.klaviyo.client.events()) == expected
    assert stats.duplicates_dropped.get("events", 0) == expected


def test_poison_messages_are_dead_lettered_and_the_partition_moves_on(stack) -> None:
    good = list(generated_orders(40, prefix=stack.topic))
    no_identity = guide_order()
    no_identity["order_id"] = "no-identity"
    no_identity["customer"] = {**no_identity["customer"], "email": None, "phone": None}
    rejected = guide_order()
    rejected["order_id"] = "rejected-by-klaviyo"
    rejected["customer"] = {**rejected["customer"], "email": "rejected@kafka-klaviyo-demo.dev"}
    money = {"amount": Decimal("1.50"), "currency": "USD"}
    poison = [
        (b"not-avro", b'{"order_id": "json, not avro"}'),
        (b"unknown-fingerprint", b"\xc3\x01" + b"\x01" * 8 + b"\x00"),
        # A valid Avro record that no translation rule maps (a shared type, not an event).
        (b"unmapped", encode_single_object(CATALOG, "shop.events.Money", money)),
        (b"no-identity", encode_single_object(CATALOG, "shop.events.OrderPlaced", no_identity)),
        (b"rejected", encode_single_object(CATALOG, "shop.events.OrderPlaced", rejected)),
    ]
    stack.klaviyo.client.reject_items("profile.email", equals="rejected@kafka-klaviyo-demo.dev")
    values = [
        (
            order["order_id"].encode(),
            encode_single_object(CATALOG, "shop.events.OrderPlaced", order),
        )
        for order in good
    ]
    # Poison spread through the stream, all on one key so they share a partition with others.
    for index, item in enumerate(poison):
        values.insert(index * 8 + 3, item)
    produce_values(stack.bootstrap, stack.topic, values, headers=[("trace-id", b"abc")])

    with stack.consumer() as consumer:
        wait_for(lambda: stack.lag() == 0, 90, "every message delivered or dead-lettered")
        assert consumer.stop() == 0, consumer.output()

    expected = sum(expected_events(order) for order in good)
    assert len(stack.klaviyo.client.events()) == expected
    dead = {record.key: record for record in read_topic(stack.bootstrap, stack.dlq)}
    assert set(dead) == {key for key, _ in poison}
    stages = {key: record.headers["dlq.stage"] for key, record in dead.items()}
    assert stages == {
        b"not-avro": b"decode",
        b"unknown-fingerprint": b"decode",
        b"unmapped": b"decode",
        b"no-identity": b"translate",
        b"rejected": b"deliver",
    }
    classes = {key: record.headers["dlq.error.class"] for key, record in dead.items()}
    assert classes[b"not-avro"] == b"NotAvroError"
    assert classes[b"unknown-fingerprint"] == b"UnknownSchemaError"
    assert classes[b"unmapped"] == b"UnmappedRecordError"
    assert classes[b"no-identity"] == b"TranslationError"
    assert classes[b"rejected"] == b"RejectedItemError"
    for key, original in poison:
        record = dead[key]
        assert record.value == original  # unchanged, so it can be re-driven
        assert record.headers["trace-id"] == b"abc"
        for header in DEAD_LETTER_HEADERS:
            assert header in record.headers, (key, header)
        assert record.headers["dlq.original.topic"] == stack.topic.encode()
        assert record.headers["dlq.consumer.group"] == stack.group_id.encode()
    rejected_headers = dead[b"rejected"].headers
    assert rejected_headers["dlq.http.status"] == b"400"
    assert orjson.loads(rejected_headers["dlq.error.detail"])["pointer"].startswith("/data/")
    assert b"rejected@" not in rejected_headers["dlq.error.message"]  # PII masked
    assert dead[b"unmapped"].headers["dlq.record.name"] == b"shop.events.Money"


def test_klaviyo_outage_commits_nothing_and_dead_letters_nothing(stack) -> None:
    orders = list(generated_orders(20, prefix=stack.topic))
    expected = sum(expected_events(order) for order in orders)
    produce_orders(stack.bootstrap, stack.topic, orders)
    stack.klaviyo.client.fail_with_status(503, seconds=600)

    with stack.consumer(KAFKA_KLAVIYO_DELIVERY__SHUTDOWN_GRACE_S="1") as consumer:
        wait_for(lambda: stack.klaviyo.client.stats().responses("events", 503) >= 3, 30, "retries")
        assert consumer.stop() == 0, consumer.output()
    assert stack.lag() == len(orders)
    assert all(
        offset < 0
        for offset in committed_offsets(stack.bootstrap, stack.group_id, stack.topic).values()
    )
    assert read_topic(stack.bootstrap, stack.dlq, timeout_s=2) == []

    stack.klaviyo.client.clear_faults()
    with stack.consumer() as consumer:
        wait_for(lambda: stack.lag() == 0, 60, "delivery after the outage")
        assert consumer.stop() == 0
    assert len(stack.klaviyo.client.events()) == expected


def test_rejected_api_key_stops_with_one_line_and_commits_nothing(stack) -> None:
    produce_orders(stack.bootstrap, stack.topic, generated_orders(5, prefix=stack.topic))
    consumer = stack.consumer(KLAVIYO_API_KEY="pk_wrong_key_123")
    code = consumer.wait(60)
    output = consumer.output()
    assert code == 3, output
    assert "Klaviyo refused the API key (HTTP 401" in output
    assert "pk_wrong_key_123" not in output
    assert stack.lag() == 5
    assert read_topic(stack.bootstrap, stack.dlq, timeout_s=2) == []


def test_bad_configuration_names_the_setting(stack) -> None:
    consumer = stack.consumer(KLAVIYO_REVISION="latest")
    assert consumer.wait(30) == 2
    lines = consumer.output().strip().splitlines()
    assert lines[-1].startswith("kafka-klaviyo: configuration error: klaviyo.revision:")


def test_two_accounts_routed_by_store_id(stack, tmp_path: Path) -> None:
    orders = list(generated_orders(40, prefix=stack.topic))
    for number, order in enumerate(orders):
        order["store_id"] = "store-a" if number % 2 else "store-b"
    produce_orders(stack.bootstrap, stack.topic, orders)
    config = tmp_path / "accounts.yaml"
    config.write_text(
        "accounts:\n"
        "  brand-a: {api_key_env: KLAVIYO_KEY_BRAND_A}\n"
        "  brand-b: {api_key_env: KLAVIYO_KEY_BRAND_B}\n"
        "routing:\n"
        "  field: store_id\n"
        "  accounts: {store-a: brand-a, store-b: brand-b}\n"
    )
    keys = {
        "KLAVIYO_KEY_BRAND_A": stack.klaviyo.key_for("acme"),
        "KLAVIYO_KEY_BRAND_B": stack.klaviyo.key_for("beta"),
    }
    with stack.consumer(KAFKA_KLAVIYO_CONFIG=str(config), **keys) as consumer:
        wait_for(lambda: stack.lag() == 0, 60, "every order delivered")
        assert consumer.stop() == 0, consumer.output()

    def placed(account: str) -> set[str]:
        events = stack.klaviyo.client.events(account=account, metric="Placed Order")
        return {event.unique_id for event in events}

    assert placed("acme") == {o["order_id"] for o in orders if o["store_id"] == "store-a"}
    assert placed("beta") == {o["order_id"] for o in orders if o["store_id"] == "store-b"}
