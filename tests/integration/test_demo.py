"""``make demo`` on the real stack: the guide's journey, generated traffic and a poison message.

The demo's :func:`~kafka_klaviyo_dev.demo.play` runs on the session's Apache Kafka broker and
the emulator (a real HTTP server validating every body against Klaviyo's OpenAPI spec), with
its consumer in-process as ``make demo`` runs it. What the demo printed is checked against
what the emulator accepted and holds, read back by the test itself after the demo returned,
and against the dead-letter topic.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter

import pytest

from kafka_klaviyo_dev.demo import (
    CATALOG_ID,
    POISON_KEY,
    POISON_VALUE,
    DemoStack,
    demo_records,
    expected_for,
    play,
)
from kafka_klaviyo_dev.inspect import read_topic
from kafka_klaviyo_dev.kafka import LocalKafka
from kafka_klaviyo_dev.samples import GUIDE_EMAIL, GUIDE_LIST_ID, GUIDE_ORDER_ID, GUIDE_PHONE
from tests.fixtures_emulator import RunningEmulator

pytestmark = pytest.mark.integration

ORDERS = 40


@pytest.fixture
def demo_stack(kafka_broker: LocalKafka, emulator: RunningEmulator, topic_name: str) -> DemoStack:
    """The demo's topic, dead-letter topic and group on the shared broker and emulator."""
    kafka_broker.create_topic(topic_name, partitions=3)
    kafka_broker.create_topic(f"{topic_name}.dlq", partitions=1)
    return DemoStack(
        kafka_broker.bootstrap_servers,
        emulator.base_url,
        emulator.api_key,
        topic=topic_name,
        dead_letter_topic=f"{topic_name}.dlq",
        group_id=f"demo-{uuid.uuid4().hex[:8]}",
    )


def section(output: str, heading: str) -> dict[str, int]:
    """The ``name count`` lines under the first line starting with ``heading``."""
    lines = output.splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith(heading))
    counts: dict[str, int] = {}
    for line in lines[start + 1 :]:
        match = re.fullmatch(r"  (\S.*?)\s+(\d+)(?: of \d+)?", line)
        if match is None:
            break
        counts[match.group(1)] = int(match.group(2))
    return counts


def test_demo_shows_the_guides_journey_as_the_emulator_accepted_it(
    demo_stack: DemoStack, emulator: RunningEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    code = play(demo_stack, orders=ORDERS, timeout_s=240)
    out, err = capsys.readouterr()
    assert code == 0, out + err

    client = emulator.client
    stats = client.stats()
    after_replay = {name: n for name, n in stats.accepted.items() if n}
    printed_endpoints = section(out, "What Klaviyo received, per endpoint")
    journey, traffic = demo_records(ORDERS)
    accepted = dict(expected_for(journey + traffic).endpoints)
    assert printed_endpoints == accepted, out
    assert {"events", "profile_import", "subscribe", "catalog_create", "category_create"} <= set(
        accepted
    )
    # The replay at the end sent everything again: Klaviyo dropped the events as duplicates
    # and took the profiles and consent a second time; the catalog items, which exist now,
    # were updated (no create), and the categories, which exist, were not created again.
    assert after_replay == {
        **accepted,
        "profile_import": 2 * accepted["profile_import"],
        "subscribe": 2 * accepted["subscribe"],
        "catalog_update": accepted["catalog_create"],
    }, out
    assert stats.total_duplicates_dropped == accepted["events"]
    assert sum(stats.validation_failures.values()) == 0, stats.validation_failures

    events = client.events()
    accepted_placed = sum(1 for e in events if e.metric == "Placed Order")
    assert section(out, "Per metric:") == dict(Counter(e.metric for e in events)), out
    johns = {(e.metric, e.unique_id) for e in events if e.email == GUIDE_EMAIL}
    assert johns == {
        ("Active on Site", "guide-visit"),
        ("Viewed Product", "guide-viewed"),
        ("Added to Cart", "guide-added"),
        ("Started Checkout", "1000123_1387299423"),
        ("Placed Order", GUIDE_ORDER_ID),
        ("Ordered Product", "1234_WINNIEPOOH"),
        ("Ordered Product", "1234_TALEOFTWO"),
        ("Fulfilled Order", GUIDE_ORDER_ID),
        ("Cancelled Order", GUIDE_ORDER_ID),
        ("Refunded Order", GUIDE_ORDER_ID),
    }
    for line in ("Order 1234 (the guide's sample order):", "value 29.98 USD", "TALEOFTWO"):
        assert line in out, out

    [profile] = client.profiles(identifier="email", value=GUIDE_EMAIL)
    assert profile.attributes["external_id"] in out
    assert client.consent_of(GUIDE_LIST_ID, GUIDE_EMAIL) == "SUBSCRIBED"
    assert f"consent on list {GUIDE_LIST_ID}: email: SUBSCRIBED" in out
    for product_id, title in (("1111", "Winnie the Pooh"), ("1112", "A Tale of Two Cities")):
        item = client.catalog_item(CATALOG_ID + product_id)
        assert item is not None and item.exists and item.attributes["title"] == title
        assert re.search(rf"\$custom:::\$default:::{product_id}\s+{title}\s", out), out

    # The poison, dead-lettered by the live group and again by the replay (its own group).
    dead, again = read_topic(demo_stack.bootstrap_servers, demo_stack.dead_letter_topic)
    for record in (dead, again):
        assert (record.key, record.value) == (POISON_KEY, POISON_VALUE)
        assert record.headers["dlq.stage"] == b"decode"
    assert dead.headers["dlq.consumer.group"] == demo_stack.group_id.encode()
    assert again.headers["dlq.consumer.group"].startswith(f"{demo_stack.group_id}.replay.".encode())
    # `dlq show` of the live group's record: its failure and its source coordinates.
    assert f"kafka-klaviyo dlq show {dead.partition}:{dead.offset}:" in out
    for line in ('"stage": "decode"', '"error_class": "NotAvroError"', '"key": "demo-poison"'):
        assert line in out, line
    assert f"translated Placed Order: {accepted_placed}" in out
    assert f"Klaviyo dropped {accepted['events']} replayed events as duplicates" in out

    # Personal data printed only masked (the phone in both forms a profile carries it).
    digits = re.sub(r"\D", "", GUIDE_PHONE)
    for secret in (GUIDE_EMAIL, digits, "+" + digits, emulator.api_key):
        assert secret not in out and secret not in err


def test_demo_exits_1_naming_what_never_arrived(
    demo_stack: DemoStack, emulator: RunningEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    # Klaviyo's subscribe endpoint is down for the whole run: the demo must not wait forever.
    emulator.client.fail_with_status(503, seconds=600, endpoint="subscribe")
    try:
        code = play(demo_stack, orders=4, timeout_s=5)
    finally:
        emulator.client.clear_faults()
    out, err = capsys.readouterr()
    assert code == 1, out + err
    journey, traffic = demo_records(4)
    subscribe = expected_for(journey + traffic).endpoints["subscribe"]
    assert re.search(rf"timed out after 5s: still missing .*\bsubscribe 0 of {subscribe}\b", err), (
        err
    )
    assert emulator.client.stats().accepted.get("subscribe", 0) == 0
