"""Golden tests: the seed guide's examples, as Avro events, through the default rules.

Each example of the guide (``../shared/seed/000_71cd4c02900403ea.txt``, retired Track API) is
rebuilt as the event our shop would publish; the current-API payload the rules make must
carry the same facts (names, ids, values, SKUs, categories, URLs, time), and every payload,
inside the bulk job body the service sends, must validate against Klaviyo's OpenAPI spec
(revision 2026-07-15). The guide's phone number 555-123-4567 is a fictional number Klaviyo
refuses, so the profiles here carry no phone (the e-mail identifies them).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from consumer.bodies import EncodedItem, body_format
from consumer.decode import DecodedRecord
from consumer.endpoints import Endpoint
from consumer.messages import EventPayload, Operation
from consumer.rules import CompiledRules, compile_rules
from consumer.schemas import SchemaCatalog
from kafka_klaviyo_dev.emulator.validation import SpecValidators, validators_for
from kafka_klaviyo_dev.samples import guide_order

# --- the guide's data, as it prints it ---------------------------------------------------------

WINNIE = {
    "ProductID": "1111",
    "SKU": "WINNIEPOOH",
    "ProductName": "Winnie the Pooh",
    "Quantity": 1,
    "ItemPrice": 9.99,
    "RowTotal": 9.99,
    "ProductURL": "http://www.example.com/path/to/product",
    "ImageURL": "http://www.example.com/path/to/product/image.png",
}
TALE = {
    "ProductID": "1112",
    "SKU": "TALEOFTWO",
    "ProductName": "A Tale of Two Cities",
    "Quantity": 1,
    "ItemPrice": 19.99,
    "RowTotal": 19.99,
    "ProductURL": "http://www.example.com/path/to/product2",
    "ImageURL": "http://www.example.com/path/to/product/image2.png",
}
# Added to Cart / Started Checkout "Items".
GUIDE_CART_ITEMS = [
    {**WINNIE, "ProductCategories": ["Fiction", "Children"]},
    {**TALE, "ProductCategories": ["Fiction", "Classics"]},
]
# Placed / Fulfilled / Cancelled / Refunded Order "Items".
GUIDE_ORDER_ITEMS = [
    {**WINNIE, "Categories": ["Fiction", "Children"], "Brand": "Kids Books"},
    {**TALE, "Categories": ["Fiction", "Classics"], "Brand": "Harcourt Classics"},
]
GUIDE_PROFILE = {
    "email": "john.smith@test.com",
    "first_name": "John",
    "last_name": "Smith",
    "location": {
        "address1": "123 Abc st",
        "address2": "Suite 1",
        "city": "Boston",
        "zip": "02110",
        "region": "MA",
        "country": "USA",
    },
}
PLACED_TIME = 1387302423
SHIPPED_TIME = 1387312956


def iso(unix: int) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat()


# --- spec validation helpers (shared with the property tests) ----------------------------------


@dataclass(frozen=True, slots=True)
class _Entry:
    item: EncodedItem


def request_body(operations: list[Operation]) -> dict[str, Any]:
    """The bulk job body the service would send for ``operations`` (one endpoint, one group)."""
    endpoint = operations[0].endpoint
    fmt = body_format(endpoint)
    body, _ = fmt.assemble([_Entry(fmt.encode(op)) for op in operations], operations[0].group)
    decoded: dict[str, Any] = orjson.loads(body)
    return decoded


def spec_issues(validators: SpecValidators, operations: list[Operation]) -> list[str]:
    """Every OpenAPI violation of the bodies for ``operations`` (grouped per endpoint+group)."""
    groups: dict[tuple[Endpoint, str | None], list[Operation]] = {}
    for operation in operations:
        groups.setdefault((operation.endpoint, operation.group), []).append(operation)
    out: list[str] = []
    for (endpoint, _), members in groups.items():
        validator = validators.for_path(endpoint.spec.path)
        for op in members:  # each alone, then all together in one request
            out += [
                f"{endpoint.name} {i.pointer}: {i.detail}"
                for i in validator.issues(request_body([op]))
            ]
        out += [
            f"{endpoint.name} {i.pointer}: {i.detail}"
            for i in validator.issues(request_body(members))
        ]
    return out


@pytest.fixture(scope="session")
def spec_validators(klaviyo_spec_path: Path) -> SpecValidators:
    """Klaviyo's request schemas of every endpoint we post to (CI fails without the spec)."""
    return validators_for(klaviyo_spec_path, tuple(endpoint.spec.path for endpoint in Endpoint))


@pytest.fixture(scope="module")
def compiled() -> CompiledRules:
    return compile_rules(catalog=SchemaCatalog.load())


# --- events built from the guide's data --------------------------------------------------------


def customer() -> dict[str, Any]:
    return dict(guide_order()["customer"])


def money(amount: str) -> dict[str, Any]:
    return {"amount": Decimal(amount), "currency": "USD"}


def record(name: str, data: dict[str, Any]) -> DecodedRecord:
    return DecodedRecord(f"shop.events.{name}", data, None, b"\0" * 8)


# Fields the later order events add to OrderPlaced's, as decoding fills them in when absent.
EXTRA_FIELDS = {
    "OrderFulfilled": {"carrier": None, "tracking_number": None, "tracking_url": None},
    "OrderCancelled": {"reason": None},
    "OrderRefunded": {"reason": None, "refund_total": None},
}


def order_event(name: str, occurred: int, **extra: Any) -> DecodedRecord:
    data = guide_order() | EXTRA_FIELDS[name]
    data["occurred_at"] = datetime.fromtimestamp(occurred, UTC)
    data["event_id"] = f"guide-{name}"
    return record(name, data | extra)


def cart_lines() -> list[dict[str, Any]]:
    return [dict(line) for line in guide_order()["line_items"]]


def event(op: Operation) -> dict[str, Any]:
    assert isinstance(op.payload, EventPayload)
    return op.payload.event


def metric(op: Operation) -> str:
    name: str = event(op)["metric"]["data"]["attributes"]["name"]
    return name


def check_order_event(op: Operation, name: str, unix: int) -> dict[str, Any]:
    """The facts every order-level event of the guide carries; returns its properties."""
    assert op.endpoint is Endpoint.EVENTS
    assert isinstance(op.payload, EventPayload)
    assert op.payload.profile == GUIDE_PROFILE
    attributes = event(op)
    assert metric(op) == name
    assert attributes["unique_id"] == "1234"  # the guide's $event_id: the order id
    assert attributes["value"] == 29.98 and attributes["value_currency"] == "USD"
    assert attributes["time"] == iso(unix)
    properties: dict[str, Any] = attributes["properties"]
    assert sorted(properties["Categories"]) == sorted(["Fiction", "Classics", "Children"])
    assert properties["ItemNames"] == ["Winnie the Pooh", "A Tale of Two Cities"]
    assert properties["Brands"] == ["Kids Books", "Harcourt Classics"]
    assert properties["Discount Code"] == "Free Shipping"
    assert properties["Discount Value"] == 5
    assert properties["Items"] == GUIDE_ORDER_ITEMS
    return properties


# --- the guide's examples ------------------------------------------------------------------------


def test_viewed_product(compiled: CompiledRules, spec_validators: SpecValidators) -> None:
    data = {
        "event_id": "guide-viewed",
        "store_id": "default",
        "occurred_at": datetime.fromtimestamp(PLACED_TIME - 3600, UTC),
        "customer": customer(),
        "product": {
            "product_id": "1111",
            "sku": None,
            "name": "Winnie the Pooh",
            "categories": ["Fiction", "Children"],
            "brand": "Kids Books",
            "url": "http://www.example.com/path/to/product",
            "image_url": "http://www.example.com/path/to/product/image.png",
            "price": money("9.99"),
            "compare_at_price": money("14.99"),
        },
    }
    [op] = compiled.translate(record("ProductViewed", data))
    assert metric(op) == "Viewed Product"
    assert event(op)["properties"] == {
        "ProductName": "Winnie the Pooh",
        "ProductID": "1111",
        "Categories": ["Fiction", "Children"],
        "ImageURL": "http://www.example.com/path/to/product/image.png",
        "URL": "http://www.example.com/path/to/product",
        "Brand": "Kids Books",
        "Price": 9.99,
        "CompareAtPrice": 14.99,
    }
    assert event(op)["time"] == iso(PLACED_TIME - 3600)
    assert spec_issues(spec_validators, [op]) == []


def test_added_to_cart(compiled: CompiledRules, spec_validators: SpecValidators) -> None:
    lines = cart_lines()
    data = {
        "event_id": "guide-added",
        "store_id": "default",
        "occurred_at": datetime.fromtimestamp(1387299000, UTC),
        "cart_id": "1000123",
        "customer": customer(),
        "added_item": lines[1],
        "items": lines,
        "total": money("29.98"),
        "checkout_url": "http://www.example.com/path/to/checkout",
    }
    [op] = compiled.translate(record("CartItemAdded", data))
    attributes = event(op)
    properties = attributes["properties"]
    assert metric(op) == "Added to Cart"
    assert attributes["value"] == 29.98
    assert {key: value for key, value in properties.items() if key.startswith("AddedItem")} == {
        "AddedItemProductName": "A Tale of Two Cities",
        "AddedItemProductID": "1112",
        "AddedItem_SKU": "TALEOFTWO",
        "AddedItem_Categories": ["Fiction", "Classics"],
        "AddedItem_ImageURL": "http://www.example.com/path/to/product/image2.png",
        "AddedItem_URL": "http://www.example.com/path/to/product2",
        "AddedItem_Price": 19.99,
        "AddedItem_Quantity": 1,
    }
    assert properties["ItemNames"] == ["Winnie the Pooh", "A Tale of Two Cities"]
    assert properties["CheckoutURL"] == "http://www.example.com/path/to/checkout"
    assert properties["Items"] == GUIDE_CART_ITEMS
    assert spec_issues(spec_validators, [op]) == []


def test_started_checkout(compiled: CompiledRules, spec_validators: SpecValidators) -> None:
    data = {
        "event_id": "guide-checkout",
        "store_id": "default",
        "occurred_at": datetime.fromtimestamp(1387299423, UTC),
        "cart_id": "1000123",
        "customer": customer(),
        "items": cart_lines(),
        "total": money("29.98"),
        "checkout_url": "http://www.example.com/path/to/checkout",
    }
    [op] = compiled.translate(record("CheckoutStarted", data))
    attributes = event(op)
    assert metric(op) == "Started Checkout"
    # The guide's "$event_id": "1000123_1387299423" - the cart id and the Unix time.
    assert attributes["unique_id"] == "1000123_1387299423"
    assert attributes["value"] == 29.98 and attributes["time"] == iso(1387299423)
    assert attributes["properties"]["ItemNames"] == ["Winnie the Pooh", "A Tale of Two Cities"]
    assert attributes["properties"]["CheckoutURL"] == "http://www.example.com/path/to/checkout"
    assert attributes["properties"]["Items"] == GUIDE_CART_ITEMS
    assert spec_issues(spec_validators, [op]) == []


def test_placed_order_and_ordered_products(
    compiled: CompiledRules, spec_validators: SpecValidators
) -> None:
    placed, winnie, tale = compiled.translate(record("OrderPlaced", guide_order()))
    check_order_event(placed, "Placed Order", PLACED_TIME)
    for op, item, unique_id in (
        (winnie, GUIDE_ORDER_ITEMS[0], "1234_WINNIEPOOH"),
        (tale, GUIDE_ORDER_ITEMS[1], "1234_TALEOFTWO"),
    ):
        attributes = event(op)
        assert metric(op) == "Ordered Product"
        assert attributes["unique_id"] == unique_id  # the guide's "1234_WINNIEPOOH"
        assert attributes["value"] == item["RowTotal"] and attributes["time"] == iso(PLACED_TIME)
        properties = attributes["properties"]
        for key in ("ProductID", "SKU", "ProductName", "Quantity", "ProductURL", "ImageURL"):
            assert properties[key] == item[key]
        assert properties["ProductCategories"] == item["Categories"]
        assert properties["ProductBrand"] == item["Brand"]
        assert isinstance(op.payload, EventPayload) and op.payload.profile == GUIDE_PROFILE
    assert spec_issues(spec_validators, [placed, winnie, tale]) == []


def test_fulfilled_order(compiled: CompiledRules, spec_validators: SpecValidators) -> None:
    [op] = compiled.translate(
        order_event(
            "OrderFulfilled",
            SHIPPED_TIME,
            carrier="UPS",
            tracking_number="1Z999",
            tracking_url="https://ups.example/1Z999",
        )
    )
    properties = check_order_event(op, "Fulfilled Order", SHIPPED_TIME)
    assert properties["Carrier"] == "UPS" and properties["TrackingNumber"] == "1Z999"
    assert spec_issues(spec_validators, [op]) == []


def test_cancelled_order(compiled: CompiledRules, spec_validators: SpecValidators) -> None:
    [op] = compiled.translate(
        order_event("OrderCancelled", SHIPPED_TIME, reason="No longer needed")
    )
    assert check_order_event(op, "Cancelled Order", SHIPPED_TIME)["Reason"] == "No longer needed"
    assert spec_issues(spec_validators, [op]) == []


def test_refunded_order(compiled: CompiledRules, spec_validators: SpecValidators) -> None:
    [op] = compiled.translate(
        order_event("OrderRefunded", SHIPPED_TIME, reason="No longer needed", refund_total=None)
    )
    assert check_order_event(op, "Refunded Order", SHIPPED_TIME)["Reason"] == "No longer needed"
    partial = order_event(
        "OrderRefunded", SHIPPED_TIME, reason="Damaged", refund_total=money("9.99")
    )
    [op_partial] = compiled.translate(partial)
    assert event(op_partial)["value"] == 9.99 and event(op_partial)["unique_id"] == "1234"
    assert spec_issues(spec_validators, [op, op_partial]) == []


def test_cancel_and_refund_share_the_placed_orders_unique_id(compiled: CompiledRules) -> None:
    placed = compiled.translate(record("OrderPlaced", guide_order()))[0]
    for name in ("OrderFulfilled", "OrderCancelled", "OrderRefunded"):
        [op] = compiled.translate(order_event(name, SHIPPED_TIME))
        assert event(op)["unique_id"] == event(placed)["unique_id"] == "1234"


# --- the other endpoints -------------------------------------------------------------------------


def test_profile_subscription_and_catalog_payloads_validate(
    compiled: CompiledRules, spec_validators: SpecValidators
) -> None:
    now = datetime.fromtimestamp(PLACED_TIME, UTC)
    person = customer() | {"phone": "+1 617 253 1000", "customer_id": "c-1234"}
    operations = compiled.translate(
        record(
            "CustomerUpserted",
            {
                "event_id": "e1",
                "store_id": "default",
                "occurred_at": now,
                "customer": person,
                "organization": "Acme",
                "title": "Reader",
                "locale": "en-US",
                "properties": {"Favourite": "Winnie the Pooh"},
            },
        )
    )
    for channel, action in (
        ("EMAIL", "SUBSCRIBE"),
        ("SMS", "SUBSCRIBE"),
        ("EMAIL", "UNSUBSCRIBE"),
        ("SMS", "UNSUBSCRIBE"),
    ):
        operations += compiled.translate(
            record(
                "SubscriptionChanged",
                {
                    "event_id": f"e-{channel}-{action}",
                    "store_id": "default",
                    "occurred_at": now,
                    "customer_id": "c-1234",
                    "email": "john.smith@test.com",
                    "phone": "+1 617 253 1000",
                    "channel": channel,
                    "action": action,
                    "list_id": "Y6nRLr",
                    "consented_at": now,
                    "source": "checkout",
                },
            )
        )
    operations += compiled.translate(
        record(
            "ProductUpserted",
            {
                "event_id": "e2",
                "store_id": "default",
                "occurred_at": now,
                "product_id": "1111",
                "title": "Winnie the Pooh",
                "description": "A bear of very little brain.",
                "url": "http://www.example.com/path/to/product",
                "image_url": "http://www.example.com/path/to/product/image.png",
                "price": money("9.99"),
                "categories": ["Fiction", "Children"],
                "brand": "Kids Books",
                "sku": "WINNIEPOOH",
                "inventory_quantity": None,
                "published": True,
            },
        )
    )
    operations += compiled.translate(
        record(
            "ProductDeleted",
            {"event_id": "e3", "store_id": "default", "occurred_at": now, "product_id": "1112"},
        )
    )
    endpoints = [op.endpoint for op in operations]
    assert endpoints == [
        Endpoint.PROFILES,
        Endpoint.SUBSCRIBE,
        Endpoint.SUBSCRIBE,
        Endpoint.UNSUBSCRIBE,
        Endpoint.UNSUBSCRIBE,
        Endpoint.CATALOG_UPDATE,
        Endpoint.CATALOG_DELETE,
    ]
    # The upsert's fallback is what goes to Create Items when the item turns out to be new.
    upsert = operations[5]
    assert upsert.fallback is not None
    create = Operation(Endpoint.CATALOG_CREATE, upsert.fallback, upsert.dedup_key)
    assert spec_issues(spec_validators, [*operations, create]) == []
    subscribe = request_body([operations[1]])
    assert subscribe["data"]["relationships"]["list"]["data"] == {"type": "list", "id": "Y6nRLr"}


def test_a_broken_payload_would_be_caught(
    compiled: CompiledRules, spec_validators: SpecValidators
) -> None:
    """The validation above has teeth: a payload Klaviyo refuses is reported."""
    [op] = compiled.translate(
        record(
            "ProductDeleted",
            {
                "event_id": "e",
                "store_id": "default",
                "occurred_at": datetime.now(UTC),
                "product_id": "1",
            },
        )
    )
    broken = Operation(op.endpoint, {"attributes": {"title": 1}}, op.dedup_key)
    assert spec_issues(spec_validators, [broken])
