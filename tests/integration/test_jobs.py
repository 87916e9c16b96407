"""Klaviyo's asynchronous jobs, on the real broker and emulator, the consumer as its process.

The emulator runs jobs as Klaviyo does (a 202 with the job, ``GET`` for its status, items
stored only when it completes, failures in ``errors`` or ``import-errors``, strict catalog
rules); the tests read the outcome from the outside: the dead-letter topic, the emulator's
state and request log, the group's committed offsets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kafka_klaviyo_dev.kafka import LocalKafka
from kafka_klaviyo_dev.samples import GENERATED_EMAIL_DOMAIN, customer_upserted, product_upserted
from tests.fixtures_emulator import RunningEmulator
from tests.support import Stack, log_messages, wait_for, wait_for_commits

pytest_plugins = ["tests.fixtures_kafka", "tests.fixtures_emulator"]

CUSTOMER = "shop.events.CustomerUpserted"
PRODUCT = "shop.events.ProductUpserted"
PREFIX = "$custom:::$default:::"
# Fast polls: the tests wait for outcomes, not for the production backoff.
FAST_JOBS = {"KAFKA_KLAVIYO_JOBS__POLL_INITIAL_S": "0.2", "KAFKA_KLAVIYO_JOBS__POLL_MAX_S": "0.5"}


@pytest.fixture
def stack(
    kafka_broker: LocalKafka, emulator: RunningEmulator, topic_name: str, tmp_path: Path
) -> Stack:
    return Stack(kafka_broker, emulator, topic_name, tmp_path, partitions=1)


def customers(count: int, prefix: str) -> list[tuple[bytes, str, dict[str, Any]]]:
    return [
        (
            f"c-{i}".encode(),
            CUSTOMER,
            customer_upserted(
                f"{prefix}-customer-{i}",
                {
                    "customer_id": f"c-{i}",
                    "email": f"person{i}-{abs(hash(prefix)) % 10_000}@{GENERATED_EMAIL_DOMAIN}",
                    "phone": None,
                    "first_name": f"Person{i}",
                    "last_name": None,
                    "address": None,
                },
            ),
        )
        for i in range(count)
    ]


def products(ids: list[str], *, price: str = "9.99", round_: int = 0) -> list[Any]:
    return [
        (
            product_id.encode(),
            PRODUCT,
            product_upserted(
                product_id,
                price=price,
                categories=["Books"],
                event_id=f"product-{product_id}-{round_}",
            ),
        )
        for product_id in ids
    ]


def item_writes(stack: Stack) -> dict[str, int]:
    """Catalog items posted so far, per endpoint (create, update): the items of every job
    the emulator started for them."""
    client = stack.klaviyo.client
    return {
        name: sum(job.total_count for job in client.jobs(endpoint=name))
        for name in ("catalog_create", "catalog_update")
    }


def test_a_profile_import_with_two_bad_profiles_dead_letters_exactly_those_two(
    stack: Stack,
) -> None:
    client = stack.klaviyo.client
    client.set_job_duration(1.0, endpoint="profile_import")
    client.fail_in_job(
        "email",
        regex=r"^person(3|7)-",
        detail="Invalid phone number format.",
        endpoint="profile_import",
    )
    records = customers(10, stack.topic)
    stack.produce_records(records)
    with stack.consumer("jobs", **FAST_JOBS) as consumer:
        wait_for(lambda: len(stack.dead_letters()) == 2, 120, "two dead-letter records")
        wait_for_commits(stack, consumer, 60, "everything committed")
        assert consumer.stop() == 0
        output = consumer.output()
    dead = stack.dead_letters()
    assert sorted(int(r.headers["dlq.original.offset"]) for r in dead) == [3, 7]
    assert {r.headers["dlq.stage"] for r in dead} == {b"job"}
    assert all(b"Invalid phone number format." in r.headers["dlq.error.message"] for r in dead)
    details = [r.headers["dlq.error.detail"].decode() for r in dead]
    assert all('"pointer"' in d and '"job"' in d for d in details), details
    imported = {p.attributes.get("first_name") for p in client.profiles()}
    assert imported == {f"Person{i}" for i in range(10) if i not in (3, 7)}
    assert GENERATED_EMAIL_DOMAIN not in output  # no e-mail address in the logs


def test_a_catalog_job_the_emulator_cancels_is_sent_again_and_its_items_land(
    stack: Stack,
) -> None:
    client = stack.klaviyo.client
    client.cancel_new_jobs(requests=1, endpoint="catalog_update")
    ids = [f"{stack.topic}-P{i}" for i in range(5)]
    stack.produce_records(products(ids))
    with stack.consumer("cancel", **FAST_JOBS) as consumer:
        wait_for(
            lambda: all(
                (item := client.catalog_item(PREFIX + i)) is not None and item.exists for i in ids
            ),
            120,
            "every item in the catalog",
        )
        wait_for_commits(stack, consumer, 60, "everything committed")
        assert consumer.stop() == 0
    statuses = [job.status for job in client.jobs(endpoint="catalog_update")]
    assert statuses[0] == "cancelled" and statuses[-1] == "complete", statuses
    assert stack.dead_letters() == []
    assert client.category(PREFIX + "Books") is not None


def test_upserts_of_existing_items_cost_at_most_1_1_item_writes_each(stack: Stack) -> None:
    client = stack.klaviyo.client
    ids = [f"{stack.topic}-P{i}" for i in range(1000)]
    stack.produce_records(products(ids, price="1.00"))
    with stack.consumer("upserts", **FAST_JOBS) as consumer:
        wait_for(
            lambda: len([i for i in client.catalog_items() if i.exists]) == 1000,
            300,
            "the 1,000 new items created",
        )
        wait_for_commits(stack, consumer, 120, "the first round committed")
        before = item_writes(stack)
        # New items: the update finds them missing, the create makes them (two writes each).
        assert before == {"catalog_create": 1000, "catalog_update": 1000}, before
        stack.produce_records(products(ids, price="2.00", round_=1))
        wait_for(
            lambda: all(
                i.attributes.get("price") == 2.0 for i in client.catalog_items() if i.exists
            ),
            300,
            "every item at its new price",
        )
        wait_for_commits(stack, consumer, 120, "the second round committed")
        assert consumer.stop() == 0
    after = item_writes(stack)
    writes = sum(after.values()) - sum(before.values())
    assert writes <= 1100, after
    assert after["catalog_create"] == before["catalog_create"]  # steady state creates nothing
    assert stack.dead_letters() == []
    # The category was created once, before the first item named it.
    assert client.stats().requests.get("category_create") == {"201": 1}


def test_a_slow_job_holds_back_neither_consumption_nor_the_commits_of_other_messages(
    stack: Stack,
) -> None:
    client = stack.klaviyo.client
    client.set_job_duration(3600.0, endpoint="profile_import")  # until the test completes it
    stack.produce_records(customers(3, stack.topic))
    orders = stack.produce(20)  # after the profiles, in the same partition
    with stack.consumer("slow", **FAST_JOBS) as consumer:
        wait_for(lambda: stack.accepted() > 0, 120, "the orders' events accepted")
        # Every message is committed while the profile job is still processing.
        wait_for_commits(stack, consumer, 120, "every message committed")
        [job] = client.jobs(endpoint="profile_import")
        assert job.status in ("queued", "processing")
        assert client.profiles() == []
        client.complete_job(job.id)
        wait_for(lambda: len(client.profiles()) == 3, 60, "the profiles stored")
        assert consumer.stop() == 0
    stack.assert_exactly_once(orders)
    assert stack.dead_letters() == []


def test_sigterm_with_a_job_pending_stops_within_the_grace_and_names_the_job(
    stack: Stack,
) -> None:
    client = stack.klaviyo.client
    client.set_job_duration(3600.0, endpoint="profile_import")
    stack.produce_records(customers(2, stack.topic))
    extra = {**FAST_JOBS, "KAFKA_KLAVIYO_DELIVERY__SHUTDOWN_GRACE_S": "2"}
    with stack.consumer("sigterm", **extra) as consumer:
        wait_for(lambda: client.jobs(endpoint="profile_import"), 120, "the profile job")
        wait_for_commits(stack, consumer, 60, "both messages committed")
        assert consumer.stop() == 0
        output = consumer.output()
    [job] = client.jobs(endpoint="profile_import")
    warnings = [m for m in log_messages(output, "WARNING") if "without an outcome" in m]
    assert len(warnings) == 1 and job.id in warnings[0], warnings
