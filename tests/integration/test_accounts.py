"""Several Klaviyo accounts under faults: each account has its own key, limits and batches.

Orders of two stores are routed by ``store_id`` to two accounts of the emulator (``acme`` and
``beta``, each with its own API key). One account being throttled must not hold back the other,
and one account refusing its key stops the process without committing past its messages.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from kafka_klaviyo_dev.inspect import read_topic
from kafka_klaviyo_dev.kafka import LocalKafka
from kafka_klaviyo_dev.produce import produce_orders
from kafka_klaviyo_dev.samples import generated_orders
from tests.fixtures_emulator import RunningEmulator
from tests.support import (
    Stack,
    accounts_config,
    expected_event_ids,
    log_messages,
    wait_until_alive,
)

pytestmark = pytest.mark.integration

STORES = {"store-a": "acme", "store-b": "beta"}
#: How long acme may take for its remaining ~15,000 events while beta's 429 storm goes on. A
#: few seconds when nothing holds acme back; the storm lasts until the test ends it, so this
#: bound is only how long a slow machine may take, not part of what is proven.
ACME_TIMEOUT_S = 240


def two_store_orders(count: int, prefix: str) -> list[dict[str, Any]]:
    orders = list(generated_orders(count, prefix=prefix))
    for number, order in enumerate(orders):
        order["store_id"] = "store-a" if number % 2 else "store-b"
    return orders


@pytest.fixture
def stack(
    kafka_broker: LocalKafka, emulator: RunningEmulator, topic_name: str, tmp_path: Path
) -> Stack:
    return Stack(kafka_broker, emulator, topic_name, tmp_path)


def test_a_429_storm_on_one_account_does_not_hold_back_the_other(
    stack: Stack, tmp_path: Path
) -> None:
    orders = two_store_orders(10_000, stack.topic)
    produce_orders(stack.bootstrap, stack.topic, orders)
    expected = {
        account: expected_event_ids([o for o in orders if o["store_id"] == store])
        for store, account in STORES.items()
    }
    keys = {
        "KLAVIYO_KEY_BRAND_A": stack.klaviyo.key_for("acme"),
        "KLAVIYO_KEY_BRAND_B": stack.klaviyo.key_for("beta"),
    }
    client = stack.klaviyo.client
    # Beta answers slowly from the start (half a second a request), so it is still far from
    # done when its storm begins, however fast the machine.
    client.add_latency(0.5, account="beta")
    with stack.consumer(
        "two-accounts", KAFKA_KLAVIYO_CONFIG=str(accounts_config(tmp_path)), **keys
    ) as consumer:
        wait_until_alive(
            consumer,
            lambda: stack.accepted("acme") > 0 and stack.accepted("beta") > 0,
            120,
            "both accounts to receive events",
        )
        # Beta is throttled until the test ends the storm; acme has its own limits and must
        # not wait for beta's Retry-After: all of acme's events arrive while the storm blows.
        storm = client.rate_limit_storm(retry_after=2, account="beta")
        started = time.monotonic()
        at_start = stack.accepted("acme")
        try:
            wait_until_alive(
                consumer,
                lambda: stack.accepted("acme") >= len(expected["acme"]),
                ACME_TIMEOUT_S,
                "acme's remaining events during beta's 429 storm",
            )
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}: acme had {at_start} of {len(expected['acme'])} events when it began "
                f"and {stack.accepted('acme')} at its end"
            ) from None
        beta_then = stack.accepted("beta")
        still_blowing = [f for f in client.faults() if f["id"] == storm and f["active"]]
        print(
            f"acme finished {time.monotonic() - started:.1f}s into beta's storm; beta had "
            f"{beta_then} of {len(expected['beta'])} events"
        )
        # The storm was still on and still holding beta back when acme was done.
        assert still_blowing, client.faults()
        assert beta_then < len(expected["beta"]), beta_then
        client.clear_faults()
        wait_until_alive(consumer, lambda: stack.lag() == 0, 240, "both accounts delivered")
        assert consumer.stop() == 0, consumer.output()

    stats = client.stats()
    assert stats.accounts["beta"]["requests"]["events"].get("429", 0) > 0
    assert stats.accounts["acme"]["requests"]["events"].get("429", 0) == 0
    assert stats.retry_after_violations == 0, stats.retry_after_violation_log[:5]
    # Each account holds exactly its own store's events, each once.
    for account, ids in expected.items():
        got = [(e.metric, e.unique_id or "") for e in client.events(account=account)]
        assert len(got) == len(set(got)), f"{account}: {len(got) - len(set(got))} twice"
        assert set(got) == ids, account
    assert stack.dead_letters() == []


def test_one_account_refusing_its_key_stops_without_committing_past_its_messages(
    stack: Stack, tmp_path: Path
) -> None:
    orders = two_store_orders(600, stack.topic)
    produce_orders(stack.bootstrap, stack.topic, orders)
    consumer = stack.consumer(
        "wrong-key",
        KAFKA_KLAVIYO_CONFIG=str(accounts_config(tmp_path)),
        KLAVIYO_KEY_BRAND_A=stack.klaviyo.key_for("acme"),
        KLAVIYO_KEY_BRAND_B="pk_revoked_brand_b_key_0000",
    )
    code = consumer.wait(120)
    output = consumer.output()
    assert code == 3, output[-5000:]
    errors = log_messages(output, "ERROR")
    assert len(errors) == 1 and "API key" in errors[0], errors
    assert "pk_revoked_brand_b_key_0000" not in output
    assert "Traceback" not in output, output[-5000:]
    # An auth failure is not bad data: nothing dead-lettered, nothing of beta's delivered ...
    assert stack.dead_letters() == []
    assert stack.accepted("beta") == 0
    # ... and no partition's committed offset passes its first message for beta.
    store_of = {o["order_id"]: o["store_id"] for o in orders}
    first_beta: dict[int, int] = {}
    for record in read_topic(stack.bootstrap, stack.topic):
        if store_of[(record.key or b"").decode()] == "store-b":
            first_beta[record.partition] = min(
                first_beta.get(record.partition, record.offset), record.offset
            )
    committed = stack.committed()
    for partition, offset in first_beta.items():
        assert committed.get(partition, -1) <= offset, (partition, committed, first_beta)
