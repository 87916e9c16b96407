"""The guarantees of docs/DESIGN.md section 2, each proven from the outside on the real stack.

The consumer runs as its own OS process (``python -m consumer run``) against the session's
Apache Kafka broker and the Klaviyo emulator. What is checked is what Klaviyo would end with
(the emulator's final-state read-back: consent, catalog items, profiles, events), what the
dead-letter topic holds and which offsets the group committed, sampled while the process runs
where a guarantee says what may *never* be committed.

Stateful outputs are read only after the process has exited, so no request still in flight
can change them after the test looked.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from consumer.redact import mask
from consumer.schemas import SchemaCatalog
from kafka_klaviyo_dev.encode import encode_single_object
from kafka_klaviyo_dev.inspect import read_topic
from kafka_klaviyo_dev.kafka import LocalKafka
from kafka_klaviyo_dev.produce import produce_values
from kafka_klaviyo_dev.samples import (
    GENERATED_EMAIL_DOMAIN,
    GUIDE_EMAIL,
    GUIDE_LIST_ID,
    generated_orders,
    guide_journey,
    product_deleted,
    product_upserted,
    subscription_changed,
)
from tests.fixtures_emulator import RunningEmulator
from tests.support import (
    DEAD_LETTER_HEADERS,
    JOURNEY_ACCEPTED,
    JOURNEY_METRICS,
    CommitSampler,
    Stack,
    accounts_config,
    alive,
    expected_event_ids,
    kafka_properties,
    log_messages,
    wait_until_alive,
)

pytestmark = pytest.mark.integration

CATALOG = SchemaCatalog.load()
ORDER = "shop.events.OrderPlaced"
SUBSCRIPTION = "shop.events.SubscriptionChanged"
UPSERTED = "shop.events.ProductUpserted"
DELETED = "shop.events.ProductDeleted"
CATALOG_ID = "$custom:::$default:::"
START = datetime(2026, 1, 1, tzinfo=UTC)

#: The shared broker creates topics on first use; the consumer (and its dead-letter
#: producer: the properties apply to both) must not, so a dead-letter topic nobody created
#: stays missing and every write to it fails, slowly.
NO_AUTO_CREATE = kafka_properties(allow_auto_create_topics="false")


@pytest.fixture
def stack(
    kafka_broker: LocalKafka, emulator: RunningEmulator, topic_name: str, tmp_path: Path
) -> Stack:
    """A 3-partition topic and its dead-letter topic on the shared broker and emulator."""
    return Stack(kafka_broker, emulator, topic_name, tmp_path)


def order_values(orders: list[dict[str, Any]]) -> list[tuple[bytes | None, bytes | None]]:
    return [(o["order_id"].encode(), encode_single_object(CATALOG, ORDER, o)) for o in orders]


def event_ids_delivered(stack: Stack, account: str | None = None) -> set[tuple[str, str]]:
    return {(e.metric, e.unique_id or "") for e in stack.klaviyo.client.events(account=account)}


def wait_for_exit(consumer: Any, timeout_s: float) -> int | None:
    """The exit code, or None (the process killed) if it did not stop by itself in time."""
    try:
        return int(consumer.wait(timeout_s))
    except AssertionError:
        return None


# -- 1. a dead-letter topic that fails slowly -----------------------------------------------------

#: The dead-letter write timeout (librdkafka's message.timeout.ms) in variant (a).
DLQ_WRITE_TIMEOUT_S = 10
#: How long the process may take to stop by itself after the write times out: closing the
#: consumer and the producer on a busy 2-core machine, and generous.
DLQ_STOP_TIMEOUT_S = DLQ_WRITE_TIMEOUT_S + 60


def poison_first_stack(
    kafka_broker: LocalKafka, emulator: RunningEmulator, topic_name: str, tmp_path: Path
) -> tuple[Stack, dict[int, list[dict[str, Any]]]]:
    """A topic whose partition 0 starts with a message that is not Avro, followed by good
    orders; good orders in partitions 1 and 2; and a dead-letter topic nobody creates."""
    stack = Stack(
        kafka_broker,
        emulator,
        topic_name,
        tmp_path,
        dead_letter_topic=f"{topic_name}.dlq-nobody-creates",
    )
    produce_values(stack.bootstrap, stack.topic, [(b"poison", b"not avro")], partition=0)
    orders: dict[int, list[dict[str, Any]]] = {}
    for partition in range(3):
        batch = list(generated_orders(200, prefix=f"{topic_name}-p{partition}"))
        produce_values(stack.bootstrap, stack.topic, order_values(batch), partition=partition)
        orders[partition] = batch
    heads = {r.partition: r.key for r in read_topic(stack.bootstrap, stack.topic) if r.offset == 0}
    assert heads[0] == b"poison", heads
    return stack, orders


def assert_never_past_the_poison(sampler: CommitSampler) -> None:
    # The poison is offset 0 of partition 0: a committed offset above 0 (the next offset to
    # read) passes it before it was dead-lettered.
    passed = [s[0] for s in sampler.samples if s.get(0, -1) > 0]
    assert not passed, (
        f"partition 0's committed offset passed the undead-lettered poison at offset 0 in "
        f"{len(passed)} of {len(sampler.samples)} samples (highest {max(passed)})"
    )


def test_a_slowly_failing_dead_letter_topic_stops_the_process_and_nothing_passes_the_poison(
    kafka_broker: LocalKafka, emulator: RunningEmulator, topic_name: str, tmp_path: Path
) -> None:
    stack, _ = poison_first_stack(kafka_broker, emulator, topic_name, tmp_path)
    with CommitSampler(stack) as sampler:
        consumer = stack.consumer(
            "dlq-fails-slowly",
            KAFKA_KLAVIYO_KAFKA__PROPERTIES=NO_AUTO_CREATE,
            KAFKA_KLAVIYO_DEAD_LETTER__WRITE_TIMEOUT_S=str(DLQ_WRITE_TIMEOUT_S),
        )
        code = wait_for_exit(consumer, DLQ_STOP_TIMEOUT_S)
        sampler.stop()
    output = consumer.output()
    print(f"exit {code}; highest committed {sampler.highest()} in {len(sampler.samples)} samples")
    assert_never_past_the_poison(sampler)
    assert code is not None, (
        f"the process did not stop by itself within {DLQ_STOP_TIMEOUT_S}s of starting "
        f"(dead-letter write timeout {DLQ_WRITE_TIMEOUT_S}s):\n{output[-3000:]}"
    )
    assert code == 3, output[-5000:]
    errors = log_messages(output, "ERROR")
    print(f"ERROR lines: {errors}")
    assert len(errors) == 1, errors
    assert "dead-letter" in errors[0] and mask(stack.dlq) in errors[0], errors[0]
    assert "Traceback" not in output, output[-5000:]


def test_sigkill_while_a_dead_letter_write_is_pending_commits_nothing_past_the_poison(
    kafka_broker: LocalKafka, emulator: RunningEmulator, topic_name: str, tmp_path: Path
) -> None:
    stack, orders = poison_first_stack(kafka_broker, emulator, topic_name, tmp_path)
    others = expected_event_ids(orders[1] + orders[2])
    with CommitSampler(stack) as sampler:
        consumer = stack.consumer(
            "dlq-write-pending",
            KAFKA_KLAVIYO_KAFKA__PROPERTIES=NO_AUTO_CREATE,
            # Far longer than the run: the write is still pending when the process is killed.
            KAFKA_KLAVIYO_DEAD_LETTER__WRITE_TIMEOUT_S="600",
        )
        with consumer:
            # Partitions 1 and 2 are done: the consumer is well past the first fetch, which
            # held the poison at the head of partition 0.
            wait_until_alive(
                consumer,
                lambda: others <= event_ids_delivered(stack),
                120,
                "the orders of partitions 1 and 2",
            )
            alive(consumer)
            consumer.kill()
        sampler.stop()
    print(f"highest committed {sampler.highest()} in {len(sampler.samples)} samples")
    assert_never_past_the_poison(sampler)
    after = stack.committed()
    assert after.get(0, -1) <= 0, f"after the SIGKILL partition 0 is committed at {after[0]}"


# -- 2. latest state wins under a retry -----------------------------------------------------------


def wait_delivered_then_stop(
    stack: Stack, consumer: Any, accepted: dict[str, int], refused: dict[str, int]
) -> None:
    """Wait until every message is committed, the emulator accepted at least ``accepted``
    items per endpoint and answered ``refused`` 503s per endpoint; then SIGTERM, so nothing
    is still in flight when the final state is read."""

    def done() -> bool:
        stats = stack.klaviyo.client.stats()
        return (
            all(stats.accepted.get(e, 0) >= n for e, n in accepted.items())
            and all(stats.responses(e, 503) >= n for e, n in refused.items())
            and stack.lag() == 0
        )

    wait_until_alive(consumer, done, 90, f"{accepted} accepted after {refused} refused")
    assert consumer.stop() == 0, consumer.output()[-5000:]


@pytest.mark.parametrize(
    ("actions", "final"),
    [
        (("SUBSCRIBE", "UNSUBSCRIBE"), "UNSUBSCRIBED"),
        (("UNSUBSCRIBE", "SUBSCRIBE"), "SUBSCRIBED"),
    ],
    ids=["subscribe-then-unsubscribe", "unsubscribe-then-subscribe"],
)
def test_latest_consent_wins_when_the_earlier_request_is_retried(
    stack: Stack, actions: tuple[str, str], final: str
) -> None:
    email = f"latest-{uuid.uuid4().hex[:8]}@{GENERATED_EMAIL_DOMAIN}"
    list_id = "LatestWins"
    first, second = (action.lower() for action in actions)
    # The earlier change meets a 503 once and is retried; the later one is answered at once.
    stack.klaviyo.client.fail_with_status(503, requests=1, endpoint=first)
    stack.produce_records(
        [
            (
                email.encode(),
                SUBSCRIPTION,
                subscription_changed(
                    f"{email}-{number}",
                    list_id,
                    email=email,
                    action=action,
                    occurred_at=START + timedelta(minutes=number),
                ),
            )
            for number, action in enumerate(actions)
        ],
        partition=0,
    )
    with stack.consumer("consent") as consumer:
        wait_delivered_then_stop(stack, consumer, {second: 1}, {first: 1})

    [state] = stack.klaviyo.client.consent(list_id=list_id, person=email)
    assert state.consent == final, (
        f"{actions[0]} then {actions[1]} ended {state.consent}; accepted in this order: "
        f"{[h['endpoint'] for h in state.history]}"
    )
    assert stack.dead_letters() == []


@pytest.mark.parametrize(
    ("order", "faulted", "exists"),
    [
        (("upsert", "delete"), ("catalog_create", "catalog_update"), False),
        (("delete", "upsert"), ("catalog_delete",), True),
    ],
    ids=["upsert-then-delete", "delete-then-upsert"],
)
def test_latest_catalog_state_wins_when_the_earlier_request_is_retried(
    stack: Stack, order: tuple[str, str], faulted: tuple[str, ...], exists: bool
) -> None:
    product_id = f"latest-{uuid.uuid4().hex[:8]}"
    for endpoint in faulted:  # the earlier change meets a 503 once and is retried
        stack.klaviyo.client.fail_with_status(503, requests=1, endpoint=endpoint)
    build = {
        "upsert": (UPSERTED, lambda n: product_upserted(product_id, event_id=f"u{n}")),
        "delete": (DELETED, lambda n: product_deleted(product_id, event_id=f"d{n}")),
    }
    records = []
    for number, step in enumerate(order):
        name, make = build[step]
        records.append((product_id.encode(), name, make(number)))
    stack.produce_records(records, partition=0)
    # The upsert of a missing item: its update stores nothing, its create stores the item.
    last = "catalog_delete" if order[1] == "delete" else "catalog_create"
    with stack.consumer("catalog") as consumer:
        wait_delivered_then_stop(stack, consumer, {last: 1}, dict.fromkeys(faulted, 1))

    item = stack.klaviyo.client.catalog_item(CATALOG_ID + product_id)
    assert item is not None
    assert item.exists is exists, (
        f"{order[0]} then {order[1]} ended {'existing' if item.exists else 'deleted'}; "
        f"accepted in this order: {[h['operation'] for h in item.history]}"
    )
    assert stack.dead_letters() == []


# -- 3. a revision Klaviyo does not serve ---------------------------------------------------------

UNSERVED_REVISION = "2025-01-15"  # a valid revision format; the emulator serves 2026-07-15


def test_an_unserved_revision_stops_the_process_and_dead_letters_and_commits_nothing(
    stack: Stack,
) -> None:
    assert UNSERVED_REVISION not in stack.klaviyo.server.config.revisions
    stack.produce(20)
    stack.produce_records(
        [
            (
                b"s",
                SUBSCRIPTION,
                subscription_changed("s", "L1", email=f"r@{GENERATED_EMAIL_DOMAIN}"),
            ),
            (b"p", UPSERTED, product_upserted("revision-1")),
        ]
    )
    consumer = stack.consumer("revision", KLAVIYO_REVISION=UNSERVED_REVISION)
    code = wait_for_exit(consumer, 60)
    output = consumer.output()
    assert code == 3, f"exit {code}:\n{output[-5000:]}"
    errors = log_messages(output, "ERROR")
    print(f"exit {code}; ERROR lines: {errors}")
    assert len(errors) == 1, errors
    # The line names the refused revision (log lines are masked, but dates stay readable).
    assert "revision" in errors[0].lower() and UNSERVED_REVISION in errors[0], errors[0]
    assert "Traceback" not in output, output[-5000:]
    # A refusal of the request as a whole is a configuration problem, not bad data.
    assert stack.dead_letters() == []
    committed = stack.committed()
    assert all(offset < 0 for offset in committed.values()), committed


# -- 4. one account's outage never delays another -------------------------------------------------

LISTS = [f"Outage{number:02d}" for number in range(16)]


def test_one_accounts_outage_never_delays_the_other_account(stack: Stack, tmp_path: Path) -> None:
    client = stack.klaviyo.client
    acme_orders = list(generated_orders(300, prefix=f"{stack.topic}-a"))
    for order in acme_orders:
        order["store_id"] = "store-a"
    beta_orders = list(generated_orders(1000, prefix=f"{stack.topic}-b"))
    for order in beta_orders:
        order["store_id"] = "store-b"
    subscriptions = []
    for number in range(160):
        email = f"outage-{number}@{GENERATED_EMAIL_DOMAIN}"
        record = subscription_changed(
            f"outage-sub-{number}", LISTS[number % 16], email=email, store_id="store-a"
        )
        subscriptions.append((email.encode(), SUBSCRIPTION, record))
    # Acme's messages first in every partition, beta's after them: beta's work sits behind
    # acme's stuck work everywhere.
    stack.produce_records(subscriptions)
    stack.produce_records([(o["order_id"].encode(), ORDER, o) for o in acme_orders])
    stack.produce_records([(o["order_id"].encode(), ORDER, o) for o in beta_orders])
    expected = {"acme": expected_event_ids(acme_orders), "beta": expected_event_ids(beta_orders)}

    client.fail_with_status(503, account="acme")  # until the test ends it
    keys = {
        "KLAVIYO_KEY_BRAND_A": stack.klaviyo.key_for("acme"),
        "KLAVIYO_KEY_BRAND_B": stack.klaviyo.key_for("beta"),
    }
    with stack.consumer(
        "outage", KAFKA_KLAVIYO_CONFIG=str(accounts_config(tmp_path)), **keys
    ) as consumer:
        wait_until_alive(
            consumer,
            lambda: expected["beta"] <= event_ids_delivered(stack, "beta"),
            180,
            "every beta event while acme is down",
        )
        # Acme was down all along (its outage ends only below) and got nothing.
        stats = client.stats()
        assert stats.accounts["acme"]["accepted"] == {}, stats.accounts["acme"]
        assert sum(stats.accounts["acme"]["requests"].get("subscribe", {}).values()) > 0
        client.clear_faults()

        def acme_done() -> bool:
            consent = client.consent(account="acme")
            return (
                expected["acme"] <= event_ids_delivered(stack, "acme")
                and len(consent) == len(subscriptions)
                and stack.lag() == 0
            )

        wait_until_alive(consumer, acme_done, 180, "acme's data after its outage")
        assert consumer.stop() == 0, consumer.output()[-5000:]

    for account, ids in expected.items():
        got = [(e.metric, e.unique_id or "") for e in client.events(account=account)]
        assert set(got) == ids and len(got) == len(ids), account
    consent = client.consent(account="acme")
    assert {c.list_id for c in consent} == set(LISTS)
    assert all(c.subscribed for c in consent)
    assert stack.dead_letters() == []


# -- 5. every event type, through the process -----------------------------------------------------


def test_every_event_type_of_the_guides_journey_reaches_klaviyo(stack: Stack) -> None:
    journey = guide_journey()
    assert len({name for name, _ in journey}) == 11  # every mapped record type
    stack.produce_records([(b"john-smith", name, record) for name, record in journey])
    client = stack.klaviyo.client
    with stack.consumer("journey") as consumer:

        def done() -> bool:
            accepted = client.stats().accepted
            return (
                all(accepted.get(e, 0) >= n for e, n in JOURNEY_ACCEPTED.items())
                and stack.lag() == 0
            )

        wait_until_alive(consumer, done, 90, f"the journey delivered ({JOURNEY_ACCEPTED})")
        assert consumer.stop() == 0, consumer.output()[-5000:]

    stats = client.stats()
    # (The upserts' updates store nothing on this fresh catalog: their creates do.)
    assert {e: n for e, n in stats.accepted.items() if n} == JOURNEY_ACCEPTED
    assert sum(stats.validation_failures.values()) == 0, stats.validation_failures
    for endpoint in JOURNEY_ACCEPTED:
        status = 201 if endpoint == "category_create" else 202
        assert stats.responses(endpoint) == stats.responses(endpoint, status), stats.requests

    events = client.events()
    assert Counter(e.metric for e in events) == JOURNEY_METRICS
    ids = {(e.metric, e.unique_id) for e in events}
    assert {
        ("Placed Order", "1234"),
        ("Ordered Product", "1234_WINNIEPOOH"),
        ("Ordered Product", "1234_TALEOFTWO"),
        ("Fulfilled Order", "1234"),
        ("Cancelled Order", "1234"),
        ("Refunded Order", "1234"),
        ("Started Checkout", "1000123_1387299423"),
        ("Active on Site", "guide-visit"),
        ("Viewed Product", "guide-viewed"),
        ("Added to Cart", "guide-added"),
    } == ids
    assert all(e.email == GUIDE_EMAIL for e in events)

    [profile] = client.profiles(identifier="email", value=GUIDE_EMAIL)
    attributes = profile.attributes
    assert (attributes["first_name"], attributes["last_name"]) == ("John", "Smith")
    assert attributes["external_id"] == "c-1234"
    assert attributes["phone_number"] == "+16172531000"
    assert attributes["organization"] == "Acme Books"
    assert attributes["location"]["city"] == "Boston"
    assert attributes["properties"] == {"Favourite": "Winnie the Pooh"}

    assert client.consent_of(GUIDE_LIST_ID, GUIDE_EMAIL) == "SUBSCRIBED"

    items = {item.id: item for item in client.catalog_items()}
    assert set(items) == {CATALOG_ID + "1111", CATALOG_ID + "1112"}
    assert all(item.exists for item in items.values())
    assert items[CATALOG_ID + "1111"].attributes["title"] == "Winnie the Pooh"
    assert items[CATALOG_ID + "1112"].attributes["price"] == 19.99

    assert stack.dead_letters() == []
    assert stack.lag() == 0


# -- a per-item 400 for a non-order type ----------------------------------------------------------


def test_a_klaviyo_400_for_one_subscription_or_catalog_item_dead_letters_exactly_that_message(
    stack: Stack,
) -> None:
    run = uuid.uuid4().hex[:8]
    emails = [f"item-{run}-{n}@{GENERATED_EMAIL_DOMAIN}" for n in range(12)]
    products = [f"item-{run}-{n}" for n in range(6)]
    refused_email, refused_product = emails[5], products[2]
    client = stack.klaviyo.client
    client.reject_items("email", equals=refused_email, endpoint="subscribe")
    client.reject_items("id", equals=CATALOG_ID + refused_product, endpoint="catalog_delete")
    values: list[tuple[bytes | None, bytes | None]] = []
    for number, email in enumerate(emails):
        record = subscription_changed(f"item-sub-{number}", "ItemList", email=email)
        values.append((email.encode(), encode_single_object(CATALOG, SUBSCRIPTION, record)))
    for product in products:  # each item exists (Klaviyo fails a delete of a missing one)
        values.append(
            (product.encode(), encode_single_object(CATALOG, UPSERTED, product_upserted(product)))
        )
    for product in products:
        values.append(
            (product.encode(), encode_single_object(CATALOG, DELETED, product_deleted(product)))
        )
    produce_values(stack.bootstrap, stack.topic, values, headers=[("trace-id", b"abc")])
    original = dict(values)
    where = {r.key: r for r in read_topic(stack.bootstrap, stack.topic)}

    with stack.consumer("item-400") as consumer:
        wait_until_alive(consumer, lambda: stack.lag() == 0, 90, "every message handled")
        assert consumer.stop() == 0, consumer.output()[-5000:]

    dead = {record.key: record for record in stack.dead_letters()}
    assert set(dead) == {refused_email.encode(), refused_product.encode()}, sorted(dead)
    for key, record_name, array in (
        (refused_email.encode(), SUBSCRIPTION, "/data/attributes/profiles/data/"),
        (refused_product.encode(), DELETED, "/data/attributes/items/data/"),
    ):
        record = dead[key]
        missing = [h for h in DEAD_LETTER_HEADERS if h not in record.headers]
        assert not missing, (key, missing)
        headers = record.headers
        assert record.value == original[key]  # unchanged, so it can be re-driven
        assert headers["trace-id"] == b"abc"
        assert headers["dlq.stage"] == b"deliver"
        assert headers["dlq.http.status"] == b"400"
        assert headers["dlq.error.class"], headers
        assert orjson.loads(headers["dlq.error.detail"])["pointer"].startswith(array)
        assert headers["dlq.record.name"] == record_name.encode()
        assert headers["dlq.original.topic"] == stack.topic.encode()
        assert headers["dlq.original.partition"] == str(where[key].partition).encode()
        assert headers["dlq.original.offset"] == str(where[key].offset).encode()
        assert headers["dlq.consumer.group"] == stack.group_id.encode()
    assert refused_email.encode() not in dead[refused_email.encode()].headers["dlq.error.message"]

    consent = {c.person: c.consent for c in client.consent(list_id="ItemList")}
    assert consent == {e: "SUBSCRIBED" for e in emails if e != refused_email}
    items = {i.id: i.exists for i in client.catalog_items()}
    assert items == {CATALOG_ID + p: p == refused_product for p in products}
