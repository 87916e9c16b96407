"""Browser identity end to end: a customer's anonymous_id and kx, from Kafka to Klaviyo.

A real broker, the consumer as its own process, the emulator as a real HTTP server validating
every body against Klaviyo's OpenAPI spec. A visit and a profile of one customer who carries
both ids: the event's profile holds ``anonymous_id`` and ``_kx`` beside the e-mail address, the
profile import holds ``_kx`` only (Klaviyo removed ``anonymous_id`` from it, RULES.md P10).
A visitor known only by the browser's id is an event profile of its own.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kafka_klaviyo_dev.kafka import LocalKafka
from kafka_klaviyo_dev.samples import (
    CUSTOMER_UPSERTED,
    GENERATED_EMAIL_DOMAIN,
    SITE_VISITED,
    customer_upserted,
    site_visited,
)
from tests.fixtures_emulator import RunningEmulator
from tests.support import Stack, wait_for_commits, wait_until_alive

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(
    kafka_broker: LocalKafka, emulator: RunningEmulator, topic_name: str, tmp_path: Path
) -> Stack:
    return Stack(kafka_broker, emulator, topic_name, tmp_path, partitions=1)


def test_anonymous_id_and_kx_reach_the_event_profile_and_only_kx_the_profile_import(
    stack: Stack,
) -> None:
    run = uuid.uuid4().hex[:8]
    email = f"browser-{run}@{GENERATED_EMAIL_DOMAIN}"
    anonymous_id, kx, lone = f"anon-{run}", f"kx-{run}", f"anon-only-{run}"
    customer = {
        "customer_id": f"c-{run}",
        "email": email,
        "phone": None,
        "first_name": "Ada",
        "last_name": "Lovelace",
        "address": None,
        "anonymous_id": anonymous_id,
        "kx": kx,
    }
    visitor = {**customer, "customer_id": None, "email": None, "kx": None, "anonymous_id": lone}
    now = datetime.now(UTC)
    key = customer["customer_id"].encode()
    stack.produce_records(
        [
            (
                key,
                SITE_VISITED,
                site_visited(f"visit-{run}", customer, "https://shop/", occurred_at=now),
            ),
            (
                key,
                CUSTOMER_UPSERTED,
                customer_upserted(f"profile-{run}", customer, occurred_at=now),
            ),
            (
                b"anon",
                SITE_VISITED,
                site_visited(f"anon-{run}", visitor, "https://shop/", occurred_at=now),
            ),
        ]
    )
    client = stack.klaviyo.client

    def delivered() -> bool:
        visits = {e.unique_id for e in client.events(unique_id=f"visit-{run}")}
        visits |= {e.unique_id for e in client.events(unique_id=f"anon-{run}")}
        return len(visits) == 2 and bool(_imported(stack, email))

    with stack.consumer("identity") as consumer:
        wait_until_alive(consumer, delivered, 90, "both visits and the profile delivered")
        wait_for_commits(stack, consumer, 30, "everything committed")
        assert consumer.stop() == 0, consumer.output()[-5000:]

    [event] = client.events(unique_id=f"visit-{run}")
    assert event.profile["email"] == email
    assert (event.profile["anonymous_id"], event.profile["_kx"]) == (anonymous_id, kx)
    [alone] = client.events(unique_id=f"anon-{run}")
    assert alone.profile["anonymous_id"] == lone and "email" not in alone.profile
    [imported] = _imported(stack, email)
    assert imported["attributes"]["_kx"] == kx
    assert "anonymous_id" not in imported["attributes"]
    stats = client.stats()
    assert sum(stats.validation_failures.values()) == 0, stats.validation_failures
    assert stack.dead_letters() == []


def _imported(stack: Stack, email: str) -> list[dict[str, object]]:
    return [
        item
        for item in stack.klaviyo.client.items("profile_import")
        if item["attributes"].get("email") == email
    ]
