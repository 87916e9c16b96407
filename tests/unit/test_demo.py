"""What the demo expects Klaviyo to accept for the guide's journey and the generated traffic,
how it names what is missing, and which dead-letter headers it prints unmasked."""

from __future__ import annotations

from collections import Counter

import pytest

from consumer.bodies import category_ids
from consumer.decode import Decoder
from consumer.endpoints import Endpoint
from consumer.messages import EventPayload
from consumer.rules import compile_rules
from consumer.schemas import SchemaCatalog
from kafka_klaviyo_dev import demo
from kafka_klaviyo_dev.emulator.endpoints import lookup
from kafka_klaviyo_dev.encode import encode_single_object
from kafka_klaviyo_dev.samples import (
    GENERATED_EMAIL_DOMAIN,
    PRODUCT_DELETED,
    SUBSCRIPTION_CHANGED,
    expected_accepted,
    expected_metrics,
    generated_traffic,
    guide_journey,
    product_deleted,
    subscription_changed,
)
from tests.support import JOURNEY_ACCEPTED, JOURNEY_METRICS

CATALOG = SchemaCatalog.load()


def test_the_guides_journey_expects_every_metric_and_endpoint_of_the_guide() -> None:
    journey = guide_journey()
    assert dict(expected_metrics(journey)) == JOURNEY_METRICS
    assert dict(expected_accepted(journey)) == JOURNEY_ACCEPTED


def test_generated_traffic_has_every_record_type_but_deletes_and_scales_with_the_orders() -> None:
    names = Counter(name.rsplit(".", 1)[1] for _key, name, _record in generated_traffic(40))
    assert names["OrderPlaced"] == 40 and names["SiteVisited"] == 40
    assert set(names) == {
        "ProductUpserted",
        "SiteVisited",
        "ProductViewed",
        "CartItemAdded",
        "CheckoutStarted",
        "OrderPlaced",
        "OrderFulfilled",
        "OrderCancelled",
        "OrderRefunded",
        "CustomerUpserted",
        "SubscriptionChanged",
    }
    assert [name for _k, name, _r in generated_traffic(0)] == ["shop.events.ProductUpserted"] * 6
    assert generated_traffic(25) == generated_traffic(25)  # reproducible from the seed
    emails = {
        record["customer"]["email"]
        for _key, name, record in generated_traffic(40)
        if name.endswith("CustomerUpserted")
    }
    assert all(email.endswith("@" + GENERATED_EMAIL_DOMAIN) for email in emails)


def translated(pairs: list[tuple[str, dict]]) -> tuple[Counter[str], Counter[str], Counter]:
    """What the default rules make of the records, after a real encode and decode: items per
    emulator endpoint, events per metric, and how often each (endpoint, dedup key) recurs."""
    rules = compile_rules(None, catalog=CATALOG)
    decoder = Decoder(CATALOG, mapped_records=rules.mapped_records)
    endpoints: Counter[str] = Counter()
    metrics: Counter[str] = Counter()
    keys: Counter = Counter()
    categories: set[str] = set()
    for name, record in pairs:
        for op in rules.translate(decoder.decode(encode_single_object(CATALOG, name, record))):
            # An upsert's update carries its create: on the demo's fresh catalog the update
            # finds no item and the create is what stores it.
            sent = Endpoint.CATALOG_CREATE if op.fallback is not None else op.endpoint
            endpoint = lookup(sent.spec.path)
            if not isinstance(op.payload, EventPayload):
                categories.update(category_ids(op.payload))
            assert endpoint is not None, op.endpoint
            endpoints[endpoint.name] += 1
            keys[(endpoint.name, op.dedup_key)] += 1
            if isinstance(op.payload, EventPayload):
                metrics[op.payload.event["metric"]["data"]["attributes"]["name"]] += 1
    if categories:  # created once each, before the items name them
        endpoints["category_create"] = len(categories)
    return endpoints, metrics, keys


@pytest.mark.parametrize("orders", [0, 7, 60])
def test_expected_counts_are_what_the_default_rules_send_for_the_demo_records(orders: int) -> None:
    journey, traffic = demo.demo_records(orders)
    pairs = [(name, record) for _key, name, record in journey + traffic]
    endpoints, metrics, keys = translated(pairs)
    expected = demo.expected_for(journey + traffic)
    assert dict(expected.endpoints) == dict(endpoints)
    assert dict(expected.metrics) == dict(metrics)
    assert expected.dead_letters == 1
    # No Klaviyo identity recurs, so Klaviyo keeps every item and the service folds none:
    # what is sent is what the emulator should count as accepted.
    assert [key for key, n in keys.items() if n > 1] == []


def test_subscriptions_and_deletes_count_on_their_own_endpoints() -> None:
    pairs = [
        (SUBSCRIPTION_CHANGED, subscription_changed("s1", "L", email="a@x.dev")),
        (SUBSCRIPTION_CHANGED, subscription_changed("s2", "L", email="b@x.dev")),
        (
            SUBSCRIPTION_CHANGED,
            subscription_changed("s3", "L", email="a@x.dev", action="UNSUBSCRIBE"),
        ),
        (PRODUCT_DELETED, product_deleted("9")),
    ]
    assert dict(expected_accepted(pairs)) == {"subscribe": 2, "unsubscribe": 1, "catalog_delete": 1}
    assert expected_metrics(pairs) == Counter()
    assert dict(translated(pairs)[0]) == dict(expected_accepted(pairs))


def test_shortfall_names_only_what_is_missing_in_the_expected_order() -> None:
    expected = {"events": 10, "profile_import": 2, "subscribe": 1}
    assert demo.shortfall(expected, {"events": 10, "subscribe": 0, "catalog_create": 3}) == [
        "profile_import 0 of 2",
        "subscribe 0 of 1",
    ]
    assert demo.shortfall(expected, {"events": 11, "profile_import": 2, "subscribe": 1}) == []


def test_differences_name_too_many_too_few_and_the_unexpected() -> None:
    expected = {"events": 10, "subscribe": 1}
    got = {"events": 11, "subscribe": 1, "unsubscribe": 2}
    assert demo.differences(expected, got) == ["events 11 of 10", "unsubscribe 2 of 0"]
    assert demo.differences(expected, dict(expected)) == []
