"""What an on-call engineer reads, after a known run: ``/metrics`` values and the log lines.

The run: two accounts; orders (events) for both, customers (profiles) and a subscription for
one; a message that is not Avro (dead-lettered at decode), a customer Klaviyo refuses
(dead-lettered at deliver), one 429 on the subscription endpoint and one 503 on the second
account's events (the emulator's fault API). Every count is known beforehand or read from
the requests the emulator answered. And a Schema Registry outage: one line when it begins, one
when it ends, one per partition paused and resumed, however often the decoding is retried.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Any

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from consumer.endpoints import Endpoint
from consumer.exit_codes import EXIT_OK
from consumer.logs import JsonFormatter
from consumer.runner import Runner
from kafka_klaviyo_dev.encode import encode_confluent, register_schemas
from tests.component import records
from tests.component.conftest import TOPIC, Stack, settings, wait_until
from tests.fakes import FlakyRegistry

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
REFUSED = "refused@shop.example"


def _samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _scrape_when_lag_is_sampled(port: int) -> Samples:
    """``/metrics`` once the lag of every partition is sampled after the last commit."""

    def scrape() -> Samples | None:
        response = httpx.get(f"http://127.0.0.1:{port}/metrics", trust_env=False)
        assert response.status_code == 200
        samples = _samples(response.text)
        lags = [
            samples.get(
                ("kafka_klaviyo_consumer_lag_messages", (("partition", str(p)), ("topic", TOPIC)))
            )
            for p in range(3)
        ]
        return samples if lags == [0, 0, 0] else None

    found: Samples = wait_until(scrape, what="the lag of every partition sampled at 0")
    return found


def _events(order: dict[str, Any]) -> int:
    return 1 + len(order["line_items"])


def test_metrics_and_logs_of_a_known_run(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    client = stack.klaviyo.client
    client.rate_limit_storm(retry_after=1, requests=1, endpoint="subscribe")
    client.fail_with_status(503, requests=1, endpoint="events", account="beta")
    client.reject_items("email", equals=REFUSED, endpoint="profile_import")

    acme_orders = [order for order, _ in records.orders(3, prefix="acme")]
    beta_orders = [order for order, _ in records.orders(2, prefix="beta")]
    for order in acme_orders:
        order["store_id"] = "acme"
    for order in beta_orders:
        order["store_id"] = "beta"
    for order in acme_orders:
        stack.produce(records.order(order), partition=0)
    stack.produce(records.customer("ada@shop.example", customer_id="c-1"), partition=1)
    stack.produce(records.customer(REFUSED, customer_id="c-2"), partition=1)
    stack.produce(records.subscription("SUBSCRIBE", "sub@shop.example"), partition=1)
    for order in beta_orders:
        stack.produce(records.order(order), partition=2)
    stack.produce(b"not avro at all", partition=2)

    monkeypatch.setenv("COMPONENT_BETA_KEY", "pk_component_beta")
    config = settings(
        accounts={"beta": {"api_key_env": "COMPONENT_BETA_KEY"}},
        routing={"field": "store_id", "accounts": {"acme": "default", "beta": "beta"}},
        delivery={"retry_after_min_s": 0.01, "retry_after_max_s": 0.2},
        observability={"metrics_port": 0},
    )
    service = stack.service(config)
    assert service.metrics_server is not None
    port = service.metrics_server.port
    runner = Runner(service)
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(runner.run()), daemon=True)
    with caplog.at_level(logging.INFO):
        thread.start()
        try:
            wait_until(
                lambda: [stack.committed(p) for p in range(3)] == [3, 3, 3],
                what="all committed",
            )
            samples = _scrape_when_lag_is_sampled(port)
        finally:
            runner.request_stop()
            thread.join(60)
    assert codes == [EXIT_OK]
    lag = "kafka_klaviyo_consumer_lag_messages"

    # -- messages, outputs and dead-letters --------------------------------------------------
    messages = "kafka_klaviyo_messages_total"
    assert _value(samples, messages, stage="translate", outcome="translated") == 3 + 3 + 2
    assert _value(samples, messages, stage="decode", outcome="dead_lettered") == 1
    assert _value(samples, messages, stage="deliver", outcome="dead_lettered") == 1
    dead = Counter(
        (record.header("dlq.stage"), record.header("dlq.error.class"))
        for record in stack.dead_letters()
    )
    assert dead == {("decode", "NotAvroError"): 1, ("deliver", "RejectedItemError"): 1}
    for (stage, error_class), count in dead.items():
        assert (
            _value(
                samples, "kafka_klaviyo_dead_letters_total", stage=stage, error_class=error_class
            )
            == count
        )

    delivered = "kafka_klaviyo_outputs_delivered_total"
    acme_events = sum(map(_events, acme_orders))
    beta_events = sum(map(_events, beta_orders))
    assert _value(samples, delivered, endpoint="events", account="default") == acme_events
    assert _value(samples, delivered, endpoint="events", account="beta") == beta_events
    assert _value(samples, delivered, endpoint="profiles", account="default") == 1
    assert _value(samples, delivered, endpoint="subscribe", account="default") == 1
    assert len(client.events(account="acme")) == acme_events
    assert (
        _value(
            samples, "kafka_klaviyo_rejected_items_total", endpoint="profiles", account="default"
        )
        == 1
    )

    # -- requests, retries, 429s: what the emulator answered ---------------------------------
    answered = Counter(stack.klaviyo.log)
    by_path: Counter[str] = Counter()
    for (path, _status), count in answered.items():
        by_path[path] += count
    for endpoint in (Endpoint.EVENTS, Endpoint.PROFILES, Endpoint.SUBSCRIBE):
        name, path = endpoint.name.lower(), endpoint.spec.path
        requests = sum(
            _value(samples, "kafka_klaviyo_requests_total", endpoint=name, account=account)
            for account in ("default", "beta")
        )
        assert requests == by_path[path] > 0
        timed = _value(samples, "kafka_klaviyo_request_duration_seconds_count", endpoint=name)
        assert timed == by_path[path]
    assert answered[(Endpoint.SUBSCRIBE.spec.path, 429)] == 1
    assert answered[(Endpoint.EVENTS.spec.path, 503)] == 1
    retries, throttled = "kafka_klaviyo_retries_total", "kafka_klaviyo_throttled_total"
    assert _value(samples, retries, endpoint="subscribe", account="default") == 1
    assert _value(samples, throttled, endpoint="subscribe", account="default") == 1
    assert _value(samples, retries, endpoint="events", account="beta") == 1
    assert _value(samples, throttled, endpoint="events", account="beta") == 0
    assert _value(samples, retries, endpoint="events", account="default") == 0
    assert _value(samples, retries, endpoint="profiles", account="default") == 0

    # -- histograms ----------------------------------------------------------------------------
    events = acme_events + beta_events
    assert _value(samples, "kafka_klaviyo_batch_size_items_sum", endpoint="events") == events
    assert _value(samples, "kafka_klaviyo_batch_size_items_sum", endpoint="profiles") == 2
    delay = "kafka_klaviyo_end_to_end_delay_seconds"
    assert _value(samples, f"{delay}_count", endpoint="events") == events
    assert _value(samples, f"{delay}_count", endpoint="subscribe") == 1
    assert _value(samples, f"{delay}_bucket", endpoint="events", le="+Inf") == events
    # Produced moments before: every delay is under a minute even on a loaded machine.
    assert _value(samples, f"{delay}_bucket", endpoint="events", le="60.0") == events
    assert _value(samples, "kafka_klaviyo_commit_latency_seconds_count") > 0

    # -- gauges ----------------------------------------------------------------------------
    for partition in range(3):
        labels = {"topic": TOPIC, "partition": str(partition)}
        assert _value(samples, lag, **labels) == 0
    assert _value(samples, "kafka_klaviyo_paused_partitions") == 0
    assert _value(samples, "kafka_klaviyo_in_flight_messages") == 0

    # -- log lines -------------------------------------------------------------------------
    lines = [record.getMessage() for record in caplog.records]
    assert (
        lines.count(
            "Klaviyo outage begun for account beta, events: "
            "POST /api/event-bulk-create-jobs: HTTP 503; retrying until it answers"
        )
        == 1
    )
    assert (
        sum(line.startswith("Klaviyo outage ended for account beta, events:") for line in lines)
        == 1
    )
    assert (
        sum(
            line.startswith("Klaviyo throttling begun for account default, subscribe:")
            for line in lines
        )
        == 1
    )
    assert (
        sum(
            line.startswith("Klaviyo throttling ended for account default, subscribe:")
            for line in lines
        )
        == 1
    )
    assert any(line.startswith("assigned ") for line in lines)
    formatted = "\n".join(JsonFormatter().format(record) for record in caplog.records)
    for secret in ("pk_component", REFUSED, "ada@shop.example", "sub@shop.example"):
        assert secret not in formatted


def test_a_schema_registry_outage_is_one_line_when_it_begins_and_one_when_it_ends(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    registry = FlakyRegistry("observability")
    ids = register_schemas(registry.inner, records.CATALOG, names=["shop.events.OrderPlaced"])
    schema = records.CATALOG.parsed("shop.events.OrderPlaced")
    registry.down.set()
    for partition in (0, 1):
        for order, _ in records.orders(2, prefix=f"p{partition}"):
            stack.produce(
                encode_confluent(ids["shop.events.OrderPlaced"], schema, order),
                partition=partition,
            )
    runner = Runner(stack.service(registry=registry))  # type: ignore[arg-type]
    thread = threading.Thread(target=runner.run, daemon=True)
    with caplog.at_level(logging.INFO):
        thread.start()
        try:
            wait_until(lambda: registry.asked >= 6, what="several retries with backoff")
            paused = _value(
                _samples(generate_latest(runner.metrics.registry).decode()),
                "kafka_klaviyo_paused_partitions",
            )
            assert paused == 2
            registry.down.clear()
            wait_until(lambda: [stack.committed(p) for p in (0, 1)] == [2, 2], what="delivered")
        finally:
            runner.request_stop()
            thread.join(30)
    lines = [record.getMessage() for record in caplog.records]
    begun = [line for line in lines if line.startswith("Schema Registry outage begun")]
    ended = [line for line in lines if line.startswith("Schema Registry outage ended after")]
    assert len(begun) == 1 and len(ended) == 1, lines
    for partition in (0, 1):
        waiting = f"{TOPIC}[{partition}] paused at offset 0: waiting for the Schema Registry"
        assert lines.count(waiting) == 1, lines
        assert lines.count(f"{TOPIC}[{partition}] resumed: the Schema Registry answers again") == 1
