"""``make demo``: the whole pipeline on this machine, end to end.

Starts a local Kafka broker (:mod:`kafka_klaviyo_dev.kafka`) and the Klaviyo emulator, produces the
guide's order 1234 and generated orders, runs one consumer until the emulator has every
expected event, prints what Klaviyo received and stops everything.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from pathlib import Path

from consumer.compose import build_service
from consumer.runner import Runner
from consumer.settings import Settings
from kafka_klaviyo_dev.emulator.client import AcceptedEvent, EmulatorClient
from kafka_klaviyo_dev.emulator.config import EmulatorConfig, RateLimitSettings
from kafka_klaviyo_dev.emulator.server import EmulatorServer
from kafka_klaviyo_dev.errors import DevstackError
from kafka_klaviyo_dev.inspect import TopicRecord, group_lag, read_topic
from kafka_klaviyo_dev.kafka import LocalKafka
from kafka_klaviyo_dev.produce import produce_orders
from kafka_klaviyo_dev.samples import (
    GENERATED_EMAIL_DOMAIN,
    GUIDE_EMAIL,
    GUIDE_ORDER_ID,
    expected_events,
    generated_orders,
    guide_order,
)

TOPIC = "shop.events"
DEAD_LETTER_TOPIC = "shop.events.dlq"
# The emulator's key for the demo account; a throwaway, not a real Klaviyo key.
DEMO_API_KEY = "pk_demo_local_emulator_key"


def find_openapi_spec() -> Path | None:
    """Klaviyo's OpenAPI spec: $KLAVIYO_OPENAPI_SPEC, else ../shared/klaviyo/stable.json."""
    override = os.environ.get("KLAVIYO_OPENAPI_SPEC")
    if override:
        return Path(override)
    beside = Path(__file__).resolve().parent.parent.parent / "shared" / "klaviyo" / "stable.json"
    return beside if beside.is_file() else None


def run_demo(*, orders: int, timeout_s: float) -> int:
    """Run the demo; returns the exit code (0 when every event reached the emulator)."""
    spec = find_openapi_spec()
    records = [guide_order(), *generated_orders(orders)]
    expected = sum(expected_events(order) for order in records)
    print("kafka-klaviyo demo")
    print("  starting a local Apache Kafka broker (the first run fetches its jars with Maven)")
    with LocalKafka() as kafka:
        kafka.create_topic(TOPIC, partitions=3)
        kafka.create_topic(DEAD_LETTER_TOPIC, partitions=1)
        emulator = EmulatorServer(
            EmulatorConfig(
                api_keys={DEMO_API_KEY: "demo"},
                spec_path=spec,
                rate_limits=RateLimitSettings(enabled=True),
            )
        )
        base_url = emulator.start()
        try:
            print(f"  broker {kafka.bootstrap_servers}, Klaviyo emulator {base_url}")
            print(
                "  request bodies validated against Klaviyo's OpenAPI spec"
                if spec
                else "  OpenAPI spec not found: bodies are not schema-validated"
            )
            produce_orders(kafka.bootstrap_servers, TOPIC, records)
            print(
                f"  produced {len(records)} OrderPlaced events ({expected} Klaviyo events expected)"
            )
            return _consume_and_report(kafka, base_url, expected, timeout_s)
        finally:
            emulator.stop()


def _consume_and_report(kafka: LocalKafka, base_url: str, expected: int, timeout_s: float) -> int:
    settings = Settings(
        kafka={  # type: ignore[arg-type]
            "bootstrap_servers": kafka.bootstrap_servers,
            "group_id": "kafka-klaviyo-demo",
            "topics": [TOPIC],
            "dead_letter_topic": DEAD_LETTER_TOPIC,
        },
        klaviyo={"base_url": base_url, "api_key": DEMO_API_KEY},  # type: ignore[arg-type]
        batch={"linger_ms": 100},  # type: ignore[arg-type]
    )
    runner = Runner(build_service(settings))
    exit_code: list[int] = []
    thread = threading.Thread(target=lambda: exit_code.append(runner.run()), name="consumer")
    started = time.monotonic()
    thread.start()
    group = settings.kafka.group_id
    try:
        # Done when the group has committed every message: each one is delivered or
        # dead-lettered (offsets are committed only then).
        deadline = started + timeout_s
        lag = group_lag(kafka.bootstrap_servers, group, TOPIC)
        while lag and time.monotonic() < deadline and thread.is_alive():
            time.sleep(0.5)
            lag = group_lag(kafka.bootstrap_servers, group, TOPIC)
        elapsed = time.monotonic() - started
    finally:
        runner.request_stop()
        thread.join(timeout=60)
    if thread.is_alive() or not exit_code or exit_code[0] != 0:
        raise DevstackError("the consumer did not stop cleanly")
    received = EmulatorClient(base_url).events()
    dead_letters = read_topic(kafka.bootstrap_servers, DEAD_LETTER_TOPIC)
    _print_summary(received, expected, elapsed, dead_letters)
    if lag:
        print(f"Timed out after {timeout_s:.0f}s with {lag} messages not yet committed.")
    return 0 if lag == 0 and len(received) == expected and not dead_letters else 1


def _print_summary(
    received: list[AcceptedEvent],
    expected: int,
    elapsed: float,
    dead_letters: list[TopicRecord],
) -> None:
    print()
    print(f"What Klaviyo received ({len(received)} of {expected} events in {elapsed:.1f}s):")
    per_metric = Counter(event.metric for event in received)
    for metric, count in sorted(per_metric.items()):
        print(f"  {metric:<18} {count:>6}")
    print()
    print(f"Order {GUIDE_ORDER_ID} (the guide's sample order):")
    print(f"  {'metric':<16} {'profile email':<22} {'value':>7}  unique_id")
    for event in received:
        if (event.unique_id or "").split("_")[0] == GUIDE_ORDER_ID:
            value = f"{event.value:.2f}" if event.value is not None else "-"
            print(f"  {event.metric:<16} {event.email or '':<22} {value:>7}  {event.unique_id}")
    for record in dead_letters:
        headers = record.headers
        print(
            f"Dead-lettered: {headers['dlq.original.topic'].decode()}"
            f"[{headers['dlq.original.partition'].decode()}]"
            f"@{headers['dlq.original.offset'].decode()} at stage "
            f"{headers['dlq.stage'].decode()}: {headers['dlq.error.message'].decode()}"
        )
    print()
    print(
        "The guide's phone number 555-123-4567 is a fictional one that Klaviyo would refuse, "
        "so order 1234's profile goes without it."
    )
    print(
        f"Note: real Klaviyo accepts but silently drops profiles at test.com and example.com, "
        f"so the guide's {GUIDE_EMAIL} would never show up in a real account; the generated "
        f"customers use @{GENERATED_EMAIL_DOMAIN}, which Klaviyo keeps."
    )
