"""The delivery guarantees, one test each, on the real service with fakes only at its edges.

The runner, pipeline, committer, batching, scheduler, sender, HTTP client and dead-letter
writer are the real ones (:func:`consumer.compose.build_service`); Kafka is a fake broker
behind the service's consumer and producer protocols, Klaviyo the emulator's app behind
``httpx.MockTransport`` (see ``conftest.py``). Each test waits for the condition it checks.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest

from consumer.exit_codes import EXIT_FATAL, EXIT_OK
from consumer.messages import DecodedRecord, Operation
from consumer.redact import mask
from consumer.runner import Runner
from kafka_klaviyo_dev.encode import encode_confluent, register_schemas
from tests.component import records
from tests.component.conftest import TOPIC, Stack, settings, wait_until
from tests.fakes import FlakyRegistry

CATALOG = records.CATALOG


def _events(stack: Stack) -> int:
    return len(stack.klaviyo.client.events())


def _dead_letter_header(record: Any, name: str) -> str | None:
    header: str | None = record.header(name)
    return header


# -- nothing lost ------------------------------------------------------------------------------


def test_an_offset_never_passes_a_dead_letter_before_the_broker_confirms_it(stack: Stack) -> None:
    stack.producer_setup = lambda producer: setattr(producer, "mode", "hold")
    stack.produce(b"not avro at all")  # offset 0 of partition 0: poison
    for _, value in records.orders(5):
        stack.produce(value)
    # A good message in another partition shows that commit turns do happen meanwhile.
    stack.produce(records.order(), partition=1)
    runner = stack.start()
    wait_until(lambda: stack.committed(1) == 1, what="partition 1 committed")
    wait_until(lambda: _events(stack) >= 5 * 2 + 3, what="the good orders delivered")
    wait_until(lambda: stack.producer.produced == 1, what="the dead-letter write")
    for _ in range(20):  # sampled throughout: the unconfirmed poison holds partition 0 back
        assert stack.committed(0) is None
        time.sleep(0.01)
    stack.producer.mode = "confirm"
    wait_until(lambda: stack.committed(0) == 6, what="partition 0 past the confirmed poison")
    assert stack.stop(runner) == EXIT_OK
    [record] = stack.dead_letters()
    assert _dead_letter_header(record, "dlq.stage") == "decode"
    assert _dead_letter_header(record, "dlq.original.offset") == "0"


def test_a_dead_letter_topic_that_refuses_writes_stops_without_committing_past_them(
    stack: Stack,
) -> None:
    stack.producer_setup = lambda producer: setattr(producer, "mode", "fail")
    stack.produce(b"not avro at all")
    for _, value in records.orders(3):
        stack.produce(value)
    runner = stack.start()
    assert stack.wait(runner) == EXIT_FATAL
    assert stack.committed(0) is None
    assert stack.dead_letters() == []


def test_a_drain_that_used_its_grace_still_confirms_its_dead_letters(stack: Stack) -> None:
    # Deliveries hang past the grace period; the dead-letter write is confirmed only by a
    # flush that is given time. The drain must give it its own minimum, not what is left.
    stack.producer_setup = lambda producer: setattr(producer, "mode", "on_flush")
    stack.klaviyo.client.add_latency(3.0, endpoint="events")
    stack.produce(b"not avro at all")
    stack.produce(records.order())
    runner = stack.start(
        settings(delivery={"shutdown_grace_s": 0.2}, dead_letter={"flush_min_s": 2.0})
    )
    wait_until(lambda: stack.producer.produced == 1, what="the dead-letter write")
    wait_until(lambda: runner.pipeline.held_items() > 0, what="the order in delivery")
    assert stack.stop(runner) == EXIT_OK
    assert len(stack.dead_letters()) == 1
    assert stack.committed(0) == 1  # the confirmed poison, not the undelivered order


def test_an_unconfirmed_dead_letter_on_revoke_leaves_the_offset_uncommitted_without_a_crash(
    stack: Stack,
) -> None:
    stack.producer_setup = lambda producer: setattr(producer, "mode", "hold")
    stack.produce(b"not avro at all")
    stack.produce(records.order())
    runner = stack.start(settings(delivery={"shutdown_grace_s": 0.2}))
    wait_until(lambda: stack.producer.produced == 1, what="the dead-letter write")
    stack.consumer.revoke([(TOPIC, 0)])
    wait_until(lambda: (TOPIC, 0) not in stack.consumer.assignment(), what="the revoke")
    assert stack.committed(0) is None
    assert runner.pipeline.committer.assigned() == [(TOPIC, 1), (TOPIC, 2)]
    assert stack.stop(runner) == EXIT_OK


# -- latest state wins -------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["latency", "503"])
def test_the_last_consent_wins_when_the_earlier_request_is_slow_or_retried(
    stack: Stack, fault: str
) -> None:
    client = stack.klaviyo.client
    if fault == "latency":
        client.add_latency(0.5, requests=1, endpoint="subscribe")
    else:
        client.fail_with_status(503, requests=1, endpoint="subscribe")
    stack.produce(records.subscription("SUBSCRIBE", "ann@shop.example"))
    stack.produce(records.subscription("UNSUBSCRIBE", "Ann@Shop.Example", seconds=1))
    stack.produce(records.subscription("UNSUBSCRIBE", "bob@shop.example"))
    stack.produce(records.subscription("SUBSCRIBE", "bob@shop.example", seconds=1))
    runner = stack.start()
    wait_until(lambda: stack.committed(0) == 4, what="all four committed")
    assert client.consent_of("LIST1", "ann@shop.example") == "UNSUBSCRIBED"
    assert client.consent_of("LIST1", "bob@shop.example") == "SUBSCRIBED"
    assert stack.stop(runner) == EXIT_OK


def test_a_catalog_item_deleted_after_its_upsert_stays_deleted(stack: Stack) -> None:
    client = stack.klaviyo.client
    client.add_latency(0.5, requests=1, endpoint="catalog_create")
    client.add_latency(0.5, requests=1, endpoint="catalog_update")
    stack.produce(records.product("P1"))
    stack.produce(records.product("P1", deleted=True))
    stack.produce(records.product("P2", deleted=True))
    stack.produce(records.product("P2", title="Back again"))
    runner = stack.start()
    wait_until(lambda: stack.committed(0) == 4, what="all four committed")
    # Committed at Klaviyo's 202: P2's update job then finds no item, and its create follows.
    wait_until(lambda: runner.pipeline.held_items() == 0, what="every job with its outcome")
    p1 = client.catalog_item("$custom:::$default:::P1")
    p2 = client.catalog_item("$custom:::$default:::P2")
    assert p1 is not None and p1.deleted
    assert p2 is not None and p2.exists and p2.attributes.get("title") == "Back again"
    assert stack.stop(runner) == EXIT_OK


def test_the_latest_profile_wins_over_an_earlier_batch_still_in_flight(stack: Stack) -> None:
    client = stack.klaviyo.client
    client.add_latency(1.0, requests=1, endpoint="profile_import")
    stack.produce(records.customer("ann@shop.example", first_name="Old"))
    runner = stack.start()
    wait_until(lambda: runner.pipeline.held_items() == 1, what="the first profile in flight")
    time.sleep(0.05)  # past the linger: the second upsert cannot join the first's batch
    stack.produce(records.customer("ann@shop.example", first_name="New"))
    wait_until(lambda: stack.committed(0) == 2, what="both committed")
    [profile] = client.profiles(identifier="email", value="ann@shop.example")
    assert profile.attributes["first_name"] == "New"
    assert stack.stop(runner) == EXIT_OK


# -- only a message's own content gets it dead-lettered -----------------------------------------


def test_an_unserved_revision_stops_the_process_and_dead_letters_nothing(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    for _, value in records.orders(20):
        stack.produce(value)
    runner = stack.start(settings(klaviyo={"revision": "2025-01-15"}))
    with caplog.at_level(logging.ERROR):
        assert stack.wait(runner) == EXIT_FATAL
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "revision" in errors[0].getMessage(), errors
    assert stack.dead_letters() == [] and stack.committed(0) is None
    assert _events(stack) == 0


def test_a_wrong_base_url_path_stops_the_process_and_dead_letters_nothing(stack: Stack) -> None:
    for _, value in records.orders(5):
        stack.produce(value)
    runner = stack.start(settings(klaviyo={"base_url": "http://klaviyo.test/v2"}))
    assert stack.wait(runner) == EXIT_FATAL
    assert stack.dead_letters() == [] and stack.committed(0) is None


def test_a_message_is_dead_lettered_only_for_its_own_content(stack: Stack) -> None:
    stack.klaviyo.client.reject_items("first_name", equals="Bad", endpoint="profile_import")
    stack.produce(records.customer("ann@shop.example", first_name="Good"))
    stack.produce(records.customer("ann@shop.example", first_name="Bad"))  # same batch
    runner = stack.start()
    wait_until(lambda: stack.committed(0) == 2, what="both finished")
    [record] = stack.dead_letters()
    assert _dead_letter_header(record, "dlq.original.offset") == "1"
    [profile] = stack.klaviyo.client.profiles(identifier="email", value="ann@shop.example")
    assert profile.attributes["first_name"] == "Good"
    assert stack.stop(runner) == EXIT_OK


# -- the dead-letter limit ----------------------------------------------------------------------


def test_the_dead_letter_limit_counts_each_refused_message_once(stack: Stack) -> None:
    stack.klaviyo.client.reject_items("profile.email", regex=".", endpoint="events")
    for _, value in records.orders(40):
        stack.produce(value)
    runner = stack.start(settings(dead_letter={"max_consecutive": 10, "max_ratio": None}))
    assert stack.wait(runner) == EXIT_FATAL
    committed = stack.committed(0) or 0
    assert committed <= 10  # nothing committed past the message that passed the limit


# -- bounded memory across rebalances during an outage ------------------------------------------


def test_rebalances_during_an_outage_keep_memory_bounded_and_drop_stale_work(
    stack: Stack,
) -> None:
    stack.klaviyo.client.fail_with_status(503, seconds=600, endpoint="events")
    cap = 60
    for index, (_, value) in enumerate(records.orders(600)):
        stack.produce(value, partition=index % 3)
    poll = 20
    # Retries sleep long: work of lost partitions must be let go of at once, not when its
    # next retry finds it is no longer ours.
    config = settings(
        kafka={"poll_batch_size": poll},
        delivery={"max_in_flight_messages": cap, "backoff_initial_s": 60, "backoff_max_s": 60},
    )
    runner = stack.start(config)
    keys = [(TOPIC, p) for p in range(3)]
    for _ in range(3):
        wait_until(lambda: runner.pipeline.in_flight_messages() >= cap, what="the cap reached")
        served = stack.consumer.rebalances
        stack.consumer.lose(keys)
        stack.consumer.assign(keys)
        wait_until(lambda s=served: stack.consumer.rebalances == s + 2, what="reassigned")
        wait_until(lambda: runner.pipeline.in_flight_messages() >= cap, what="the cap again")
        # Polled work is bounded by the cap (plus one poll), whatever was dropped before;
        # each order is three events.
        assert runner.pipeline.in_flight_messages() <= cap + poll
        wait_until(
            lambda: runner.pipeline.held_items() <= 3 * (cap + poll), 10, "lost work let go"
        )
    stack.klaviyo.client.clear_faults()
    # Once more, so the work starts over without a minute's backoff ahead of it.
    served = stack.consumer.rebalances
    stack.consumer.lose(keys)
    stack.consumer.assign(keys)
    wait_until(lambda: stack.consumer.rebalances == served + 2, what="lost and reassigned")
    wait_until(lambda: sum(stack.committed(p) or 0 for p in range(3)) == 600, 60, "all done")
    assert stack.stop(runner) == EXIT_OK
    assert stack.dead_letters() == []


# -- outages: never dead-lettered, never another account's problem ------------------------------


def _two_accounts(monkeypatch: pytest.MonkeyPatch, **delivery: Any) -> Any:
    monkeypatch.setenv("COMPONENT_BETA_KEY", "pk_component_beta")
    return settings(
        accounts={"beta": {"api_key_env": "COMPONENT_BETA_KEY"}},
        routing={"field": "store_id", "accounts": {"acme": "default", "beta": "beta"}},
        delivery=delivery,
    )


def test_an_account_in_an_outage_never_delays_another_account(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = stack.klaviyo.client
    client.fail_with_status(503, seconds=600, account="acme")
    # Enough unsubscribes over 16 lists for far more retrying batches than acme has threads.
    for index in range(16 * 4 * 100):
        value = records.subscription(
            "UNSUBSCRIBE", f"u{index}@shop.example", list_id=f"L{index % 16}"
        )
        stack.produce(value, partition=0)
    beta_orders = records.orders(50, prefix="beta")
    for order, _ in beta_orders:
        order["store_id"] = "beta"
    for order, _ in beta_orders:
        stack.produce(records.order(order), partition=1)
    runner = stack.start(_two_accounts(monkeypatch, threads_per_account=8))
    # Beta's orders all arrive while acme's outage goes on.
    wait_until(
        lambda: (
            len(client.events(account="beta"))
            == sum(1 + len(o["line_items"]) for o, _ in beta_orders)
        ),
        60,
        "beta's events",
    )
    wait_until(lambda: stack.committed(1) == 50, what="beta committed")
    assert client.consent(account="acme") == []
    assert stack.dead_letters() == []
    client.clear_faults()
    wait_until(lambda: stack.committed(0) == 6400, 120, "acme after its outage")
    assert stack.stop(runner) == EXIT_OK


def test_a_revoke_waits_only_for_the_revoked_partitions_work(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    client = stack.klaviyo.client
    client.fail_with_status(503, seconds=600, account="acme")
    stack.produce(records.order(dict(records.guide_order(), store_id="acme")))  # in an outage
    beta = records.guide_order()
    beta["store_id"] = "beta"
    stack.produce(records.order(beta), partition=1)
    runner = stack.start(_two_accounts(monkeypatch, shutdown_grace_s=20))
    wait_until(lambda: stack.committed(1) == 1, what="beta delivered")
    # Beta's next order is slow to answer: the revoke has work of its own to wait for.
    client.add_latency(0.5, requests=1, account="beta")
    stack.produce(records.order(dict(beta, order_id="second")), partition=1)
    wait_until(lambda: runner.pipeline.held_items() == 6, what="both accounts' orders held")
    started = time.monotonic()
    stack.consumer.revoke([(TOPIC, 1)])
    wait_until(lambda: (TOPIC, 1) not in stack.consumer.assignment(), 30, "the revoke")
    took = time.monotonic() - started
    assert stack.committed(1) == 2  # its own work finished and committed
    assert stack.committed(0) is None and runner.pipeline.held_items() == 3  # acme's, retrying
    assert not [r for r in caplog.records if "unfinished" in r.getMessage()]
    assert took < 10, f"revoke took {took:.1f}s (acme's outage held it?)"
    client.clear_faults()
    assert stack.stop(runner) == EXIT_OK


def test_no_dead_letter_for_work_of_a_partition_lost_meanwhile(stack: Stack) -> None:
    client = stack.klaviyo.client
    client.add_latency(1.0, requests=1, endpoint="events")
    client.reject_items("profile.email", regex=".", endpoint="events")
    stack.produce(records.order())
    runner = stack.start()
    wait_until(lambda: runner.pipeline.held_items() == 3, what="the order in delivery")
    stack.consumer.lose([(TOPIC, 0)])
    wait_until(lambda: (TOPIC, 0) not in stack.consumer.assignment(), what="partition lost")
    wait_until(lambda: any(status == 400 for _, status in stack.klaviyo.log), what="the 400")
    wait_until(lambda: runner.pipeline.held_items() == 0, what="the batch finished")
    runner.pipeline.tick()  # nothing left to write
    assert stack.producer.produced == 0 and stack.dead_letters() == []
    assert stack.stop(runner) == EXIT_OK


def test_a_schema_registry_outage_pauses_the_partition_and_dead_letters_nothing(
    stack: Stack,
) -> None:
    registry = FlakyRegistry("component")
    ids = register_schemas(registry.inner, CATALOG, names=["shop.events.OrderPlaced"])
    schema = CATALOG.parsed("shop.events.OrderPlaced")
    registry.down.set()
    orders = records.orders(3)
    for order, _ in orders:
        stack.produce(encode_confluent(ids["shop.events.OrderPlaced"], schema, order))
    stack.produce(records.order(), partition=1)  # single-object framing: no registry needed
    runner = Runner(stack.service(registry=registry))  # type: ignore[arg-type]
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: stack.committed(1) == 1, what="the other partition delivering")
        wait_until(lambda: registry.asked >= 3, what="retries with backoff")
        assert (TOPIC, 0) in stack.consumer.paused
        assert stack.committed(0) is None and stack.dead_letters() == []
        registry.down.clear()
        wait_until(lambda: stack.committed(0) == 3, what="partition 0 after the outage")
        wait_until(lambda: (TOPIC, 0) not in stack.consumer.paused, what="resumed")
        assert stack.dead_letters() == []
        assert thread.is_alive()
    finally:
        runner.request_stop()
        thread.join(30)


# -- stops --------------------------------------------------------------------------------------


class _Exploding:
    """A translator that fails in a way nobody planned for (a bug)."""

    mapped_records = frozenset({"shop.events.OrderPlaced"})
    version = "exploding"

    def translate(self, record: DecodedRecord) -> list[Operation]:
        raise RuntimeError("bug while handling ann@shop.example, key pk_live_secret-1.2")


def test_an_unexpected_error_stops_with_one_masked_line_and_exit_3(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    stack.produce(records.order())
    runner = Runner(stack.service(translator=_Exploding()))
    with caplog.at_level(logging.ERROR):
        assert runner.run() == EXIT_FATAL
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    text = errors[0].getMessage()
    assert "RuntimeError" in text and "ann@shop.example" not in text and "secret" not in text
    assert mask(text) == text
    assert stack.committed(0) is None


def test_the_dead_letter_limit_stops_the_process_on_decode_failures_too(stack: Stack) -> None:
    for _ in range(5):
        stack.produce(b"not avro")
    runner = stack.start(settings(dead_letter={"max_consecutive": 2, "max_ratio": None}))
    assert stack.wait(runner) == EXIT_FATAL
    assert (stack.committed(0) or 0) <= 2
