"""What the compiled rules produce: OrderTranslator's exact outputs, and every output kind."""

from __future__ import annotations

import copy
import textwrap
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from consumer.decode import DecodedRecord
from consumer.endpoints import Endpoint
from consumer.errors import TranslationError, UnmappedRecordError
from consumer.rules import CompiledRules, compile_rules
from consumer.rules.functions import (
    Where,
    rt_e164,
    rt_join,
    rt_number,
    rt_number_repeats,
    rt_string,
)
from consumer.schemas import SchemaCatalog
from kafka_klaviyo_dev.handwritten import OrderTranslator
from kafka_klaviyo_dev.samples import generated_orders, guide_order

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def record(data: dict[str, Any], name: str = "shop.events.OrderPlaced") -> DecodedRecord:
    return DecodedRecord(name, data, None, b"\0" * 8)


def money(amount: str, currency: str = "USD") -> dict[str, Any]:
    return {"amount": Decimal(amount), "currency": currency}


@pytest.fixture(scope="module")
def catalog() -> SchemaCatalog:
    return SchemaCatalog.load()


@pytest.fixture(scope="module")
def compiled(catalog: SchemaCatalog) -> CompiledRules:
    return compile_rules(catalog=catalog)


# --- OrderPlaced: exactly what the hand-written translator produces -------------------------


def orders() -> list[dict[str, Any]]:
    variants = [guide_order(), *generated_orders(60, seed=3)]
    repeated = guide_order()
    repeated["line_items"].append(dict(repeated["line_items"][0]))
    with_ids = guide_order()
    for number, line in enumerate(with_ids["line_items"], 1):
        line["line_id"] = f"L{number}"
    empty_line_id = guide_order()
    empty_line_id["line_items"][0]["line_id"] = ""
    no_phone = guide_order()
    no_phone["customer"]["phone"] = None
    valid_phone = guide_order()
    valid_phone["customer"]["phone"] = "(617) 253-1000"
    no_address = guide_order()
    no_address["customer"]["address"] = None
    empty_fields = guide_order()
    empty_fields["customer"] |= {"first_name": "", "customer_id": "c-9"}
    empty_fields["customer"]["address"] = {**empty_fields["customer"]["address"], "city": ""}
    no_discount = guide_order()
    no_discount |= {"discount_code": None, "discount_total": None}
    no_brand = guide_order()
    no_brand["line_items"][0]["brand"] = None
    no_brand["line_items"][1]["brand"] = ""
    no_lines = guide_order()
    no_lines["line_items"] = []
    return [
        *variants,
        repeated,
        with_ids,
        empty_line_id,
        no_phone,
        valid_phone,
        no_address,
        empty_fields,
        no_discount,
        no_brand,
        no_lines,
    ]


def test_order_placed_outputs_equal_order_translators_exactly(compiled: CompiledRules) -> None:
    handwritten = OrderTranslator()
    for order in orders():
        ours = compiled.translate(record(copy.deepcopy(order)))
        theirs = handwritten.translate(record(copy.deepcopy(order)))
        assert ours == theirs
        # Equal down to key order, so the JSON bytes Klaviyo receives are the same too.
        for mine, reference in zip(ours, theirs, strict=True):
            assert list(mine.payload.event) == list(reference.payload.event)
            assert list(mine.payload.event["properties"]) == list(
                reference.payload.event["properties"]
            )


def test_renamed_metrics_and_backfill_equal_order_translators(catalog: SchemaCatalog) -> None:
    handwritten = OrderTranslator(
        placed_order_metric="Order Placed",
        ordered_product_metric="Product Ordered",
        default_phone_region="GB",
        backfill=True,
    )
    compiled = compile_rules(
        catalog=catalog,
        metric_names={"Placed Order": "Order Placed", "Ordered Product": "Product Ordered"},
        default_phone_region="GB",
        force_backfill=True,
    )
    order = guide_order()
    order["customer"]["phone"] = "020 7946 0958"
    assert compiled.translate(record(order)) == handwritten.translate(record(order))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"email": None, "phone": None, "customer_id": None}, "profile"),
        ({"email": "", "phone": "", "customer_id": ""}, "profile"),
        ({"email": None, "phone": "call me maybe"}, "profile.phone_number"),
        ({"email": None, "phone": "5551234567"}, "profile.phone_number"),
    ],
)
def test_order_errors_match_order_translator_and_carry_no_pii(
    compiled: CompiledRules, change: dict[str, Any], field: str
) -> None:
    order = guide_order()
    order["customer"] |= change
    with pytest.raises(TranslationError) as ours:
        compiled.translate(record(order))
    with pytest.raises(TranslationError) as theirs:
        OrderTranslator().translate(record(order))
    assert ours.value.field == theirs.value.field == field
    assert ours.value.rule == "placed-order"
    assert ours.value.record_name == "shop.events.OrderPlaced"
    assert ours.value.stage == "translate"
    assert ours.value.detail == {"rule": "placed-order", "field": field}
    for secret in ("call me", "5551234567", "smith"):
        assert secret not in str(ours.value).lower()


def test_unmapped_record(compiled: CompiledRules) -> None:
    with pytest.raises(UnmappedRecordError):
        compiled.translate(record({}, name="shop.events.Money"))


# --- browsing events ---------------------------------------------------------------------------


def customer(**changes: Any) -> dict[str, Any]:
    base = {
        "customer_id": "c-1",
        "email": "ada@example.org",
        "phone": None,
        "first_name": "Ada",
        "last_name": "Lovelace",
        "address": None,
        "anonymous_id": None,
        "kx": None,
    }
    return base | changes


def line(sku: str, price: str, quantity: int = 1) -> dict[str, Any]:
    return {
        "line_id": None,
        "product_id": f"p-{sku}",
        "sku": sku,
        "name": f"Product {sku}",
        "quantity": quantity,
        "unit_price": money(price),
        "row_total": money(str(Decimal(price) * quantity)),
        "categories": ["A"],
        "brand": None,
        "product_url": None,
        "image_url": f"https://img/{sku}.png",
    }


def test_site_visited_becomes_active_on_site(compiled: CompiledRules) -> None:
    [op] = compiled.translate(
        record(
            {
                "event_id": "ev-1",
                "store_id": "s",
                "occurred_at": NOW,
                "customer": customer(),
                "page_url": "https://shop/x",
                "referrer": None,
                "session_id": "sess",
            },
            "shop.events.SiteVisited",
        )
    )
    event = op.payload.event
    assert event["metric"]["data"]["attributes"]["name"] == "Active on Site"
    assert event["properties"] == {"URL": "https://shop/x", "SessionID": "sess"}
    assert event["unique_id"] == "ev-1" and event["time"] == "2026-03-01T12:00:00+00:00"
    assert op.dedup_key == ("email:ada@example.org", "Active on Site", "ev-1")
    assert op.payload.profile == {
        "email": "ada@example.org",
        "external_id": "c-1",
        "first_name": "Ada",
        "last_name": "Lovelace",
    }


def test_started_checkout_unique_id_is_cart_and_unix_time(compiled: CompiledRules) -> None:
    data = {
        "event_id": "e",
        "store_id": "s",
        "occurred_at": datetime.fromtimestamp(1387299423, UTC),
        "cart_id": "1000123",
        "customer": customer(),
        "items": [line("A", "1.50", 2)],
        "total": money("3"),
        "checkout_url": "https://shop/checkout",
    }
    [op] = compiled.translate(record(data, "shop.events.CheckoutStarted"))
    assert op.payload.event["unique_id"] == "1000123_1387299423"
    assert op.payload.event["value"] == 3.0
    assert op.payload.event["properties"]["Items"][0]["RowTotal"] == 3.0


# --- profiles, subscriptions, catalog ---------------------------------------------------------


def test_customer_upserted_becomes_a_profile_upsert(compiled: CompiledRules) -> None:
    data = {
        "event_id": "e",
        "store_id": "s",
        "occurred_at": NOW,
        "customer": customer(
            phone="+44 20 7946 0958",
            address={
                "address1": "1 Main St",
                "address2": None,
                "city": "Leeds",
                "region": "",
                "zip": "LS1",
                "country": "GB",
            },
        ),
        "organization": "Analytical Engines",
        "title": None,
        "locale": "en-GB",
        "properties": {"tier": "gold"},
    }
    [op] = compiled.translate(record(data, "shop.events.CustomerUpserted"))
    assert op.endpoint is Endpoint.PROFILES
    assert op.payload == {
        "attributes": {
            "email": "ada@example.org",
            "external_id": "c-1",
            "phone_number": "+442079460958",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "organization": "Analytical Engines",
            "locale": "en-GB",
            "location": {"address1": "1 Main St", "city": "Leeds", "zip": "LS1", "country": "GB"},
            "properties": {"tier": "gold"},
        }
    }
    assert op.dedup_key == ("profile", "email:ada@example.org")
    data["properties"] = {}
    [op] = compiled.translate(record(data, "shop.events.CustomerUpserted"))
    assert "properties" not in op.payload["attributes"]


def subscription(**changes: Any) -> DecodedRecord:
    data = {
        "event_id": "e",
        "store_id": "s",
        "occurred_at": NOW,
        "customer_id": "c-1",
        "email": "ada@example.org",
        "phone": "+1 617 253 1000",
        "channel": "EMAIL",
        "action": "SUBSCRIBE",
        "list_id": "LIST1",
        "consented_at": datetime(2026, 2, 1, tzinfo=UTC),
        "source": "footer",
    }
    return record(data | changes, "shop.events.SubscriptionChanged")


def test_email_subscribe(compiled: CompiledRules) -> None:
    [op] = compiled.translate(subscription())
    assert op.endpoint is Endpoint.SUBSCRIBE and op.group == "LIST1"
    assert op.payload == {
        "attributes": {
            "email": "ada@example.org",
            "subscriptions": {
                "email": {
                    "marketing": {
                        "consent": "SUBSCRIBED",
                        "consented_at": "2026-02-01T00:00:00+00:00",
                    }
                }
            },
        }
    }
    assert op.dedup_key == ("LIST1", "email", "email:ada@example.org")


def test_sms_unsubscribe_uses_the_e164_number(compiled: CompiledRules) -> None:
    [op] = compiled.translate(subscription(channel="SMS", action="UNSUBSCRIBE"))
    assert op.endpoint is Endpoint.UNSUBSCRIBE and op.group == "LIST1"
    assert op.payload == {
        "attributes": {
            "phone_number": "+16172531000",
            "subscriptions": {"sms": {"marketing": {"consent": "UNSUBSCRIBED"}}},
        }
    }


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"channel": "SMS", "phone": "not a number"}, "subscription.phone_number"),
        ({"channel": "SMS", "phone": None}, "subscription.phone_number"),
        ({"email": None}, "subscription.email"),
        ({"list_id": ""}, "subscription.list_id"),
    ],
)
def test_subscription_failures_are_translation_errors(
    compiled: CompiledRules, changes: dict[str, Any], field: str
) -> None:
    with pytest.raises(TranslationError) as info:
        compiled.translate(subscription(**changes))
    assert info.value.field == field and info.value.rule == "subscription"
    assert "not a number" not in str(info.value)


def product(**changes: Any) -> DecodedRecord:
    data = {
        "event_id": "e",
        "store_id": "s",
        "occurred_at": NOW,
        "product_id": "1111",
        "title": "Winnie the Pooh",
        "description": "",
        "url": "http://www.example.com/path/to/product",
        "image_url": None,
        "price": money("9.99"),
        "categories": ["Fiction", "Children", ""],
        "brand": "Kids Books",
        "sku": None,
        "inventory_quantity": 3,
        "published": True,
    }
    return record(data | changes, "shop.events.ProductUpserted")


def test_product_upserted_is_an_update_carrying_the_create_as_its_fallback(
    compiled: CompiledRules,
) -> None:
    [update] = compiled.translate(product())
    create = update.fallback
    assert create is not None
    categories = {
        "categories": {
            "data": [
                {"type": "catalog-category", "id": "$custom:::$default:::Fiction"},
                {"type": "catalog-category", "id": "$custom:::$default:::Children"},
            ]
        }
    }
    attributes = {
        "title": "Winnie the Pooh",
        "description": "",
        "url": "http://www.example.com/path/to/product",
        "price": 9.99,
        "published": True,
        "custom_metadata": {"Brand": "Kids Books", "InventoryQuantity": 3, "Currency": "USD"},
    }
    assert create == {
        "attributes": {
            "external_id": "1111",
            "integration_type": "$custom",
            "catalog_type": "$default",
            **attributes,
        },
        "relationships": categories,
    }
    assert update.endpoint is Endpoint.CATALOG_UPDATE
    assert update.payload == {
        "id": "$custom:::$default:::1111",
        "attributes": attributes,
        "relationships": categories,
    }
    assert update.dedup_key == ("$custom:::$default:::1111",)


def test_product_deleted_is_a_catalog_delete(compiled: CompiledRules) -> None:
    data = {"event_id": "e", "store_id": "s", "occurred_at": NOW, "product_id": "1111"}
    [op] = compiled.translate(record(data, "shop.events.ProductDeleted"))
    assert op.endpoint is Endpoint.CATALOG_DELETE
    assert op.payload == {"id": "$custom:::$default:::1111"}


# --- the language at run time ------------------------------------------------------------------

FEATURES = """
rules:
  - name: features
    record: shop.events.CheckoutStarted
    for_each: {item: items}
    when: item.quantity > 0
    event:
      metric: Checkout Line
      profile:
        email: lower(trim(customer.email))
        phone_number: e164(customer.phone, 'GB')
        location:
          city: customer.address.city
      unique_id: f'{cart_id}/{item.sku}/{unix(occurred_at)}'
      time: occurred_at
      value: item.row_total.amount
      value_currency: item.row_total.currency
      backfill: item.quantity > 5
      properties:
        Units: sum(items[].quantity)
        Skus: join(items[].sku, '|')
        FirstSku: first(items[].sku)
        Lines: length(items)
        Size: if(total.amount >= 10, 'big', 'small')
        Brand: item.brand ?? customer.first_name ?? 'none'
        Amount: string(total.amount)
        Parsed: number('12.50')
        Keys: number_repeats(items[].sku)
        Static: {$const: {nested: [1, 'two']}}
        Literal: "'text'"
        Number: 7
        Flag: true
        Nothing: null
        Missing?: item.brand
        Priced:
          $for: {other: items}
          $where: other.unit_price.amount > 1
          $emit:
            Sku: other.sku
            Url?: other.product_url
        Pairs:
          $for:
            other: items
            key: number_repeats(items[].sku)
          $emit: f'{key}={other.quantity}'
"""


def test_language_features_compile_and_run(catalog: SchemaCatalog, tmp_path: Path) -> None:
    (tmp_path / "f.yaml").write_text(FEATURES, encoding="utf-8")
    compiled = compile_rules([tmp_path], catalog=catalog, include_defaults=False)
    items = [line("A", "0.50", 1), line("B", "2.00", 6), line("A", "3.00", 0)]
    items[1]["brand"] = "Acme"
    items[1]["product_url"] = "https://p/b"
    data = {
        "event_id": "e",
        "store_id": "s",
        "occurred_at": datetime.fromtimestamp(1_700_000_000, UTC),
        "cart_id": "C",
        "customer": customer(email="  ADA@Example.ORG ", phone="020 7946 0958"),
        "items": items,
        "total": money("12.00"),
        "checkout_url": "u",
    }
    ops = compiled.translate(record(data, "shop.events.CheckoutStarted"))
    assert len(ops) == 2  # the line with quantity 0 fails `when`
    first, second = (op.payload.event for op in ops)
    assert ops[0].payload.profile == {"email": "ada@example.org", "phone_number": "+442079460958"}
    assert first["unique_id"] == "C/A/1700000000" and second["unique_id"] == "C/B/1700000000"
    assert first["value"] == 0.5 and "backfill" not in first and second["backfill"] is True
    assert first["properties"] == {
        "Units": 7,
        "Skus": "A|B|A",
        "FirstSku": "A",
        "Lines": 3,
        "Size": "big",
        "Brand": "Ada",
        "Amount": "12",
        "Parsed": 12.5,
        "Keys": ["A", "B", "A_2"],
        "Static": {"nested": [1, "two"]},
        "Literal": "text",
        "Number": 7,
        "Flag": True,
        "Nothing": None,
        "Priced": [{"Sku": "B", "Url": "https://p/b"}, {"Sku": "A"}],
        "Pairs": ["A=1", "B=6", "A_2=0"],
    }
    assert second["properties"]["Brand"] == "Acme" and second["properties"]["Missing"] == "Acme"


def test_null_template_placeholder_and_bad_number_fail_the_message(
    catalog: SchemaCatalog, tmp_path: Path
) -> None:
    (tmp_path / "f.yaml").write_text(
        textwrap.dedent(
            """
            rules:
              - name: ids
                record: shop.events.SiteVisited
                event:
                  metric: Visit
                  profile: {email: customer.email}
                  unique_id: f'{session_id}-{event_id}'
                  value: number(referrer)
            """
        ),
        encoding="utf-8",
    )
    compiled = compile_rules([tmp_path], catalog=catalog, include_defaults=False)
    data = {
        "event_id": "e1",
        "store_id": "s",
        "occurred_at": NOW,
        "customer": customer(),
        "page_url": "u",
        "referrer": "12.5",
        "session_id": "S",
    }
    [op] = compiled.translate(record(data, "shop.events.SiteVisited"))
    assert op.payload.event["value"] == 12.5 and op.payload.event["unique_id"] == "S-e1"
    with pytest.raises(TranslationError) as info:
        compiled.translate(record(data | {"referrer": "lots"}, "shop.events.SiteVisited"))
    assert info.value.field == "event.value" and "not a number" in str(info.value)
    with pytest.raises(TranslationError) as info:
        compiled.translate(record(data | {"session_id": None}, "shop.events.SiteVisited"))
    assert info.value.field == "event.unique_id"


def test_runtime_functions() -> None:
    where = Where("r", "rule", "field")
    assert rt_e164("020 7946 0958", "GB", where) == "+442079460958"
    assert rt_e164("", "US", where) is None
    with pytest.raises(TranslationError, match="cannot be parsed"):
        rt_e164("no", "US", where)
    assert rt_number(" 1.5 ", where) == 1.5 and rt_number(None, where) is None
    with pytest.raises(TranslationError):
        rt_number("nan", where)
    assert rt_join(["a", None, Decimal("1.50")], "-") == "a-1.5"
    assert rt_string(Decimal("5.0000")) == "5" and rt_string(True) == "true"
    assert rt_number_repeats(["a", "a", "b", "a"]) == ["a", "a_2", "b", "a_3"]


def test_traced_attributes_operations_to_rules(compiled: CompiledRules) -> None:
    traced = compiled.traced(record(guide_order()))
    assert [(t.rule.name, len(t.operations)) for t in traced] == [
        ("placed-order", 1),
        ("ordered-product", 2),
    ]


def test_a_fan_out_that_emits_nothing_does_not_need_a_profile(
    catalog: SchemaCatalog, tmp_path: Path
) -> None:
    (tmp_path / "f.yaml").write_text(
        textwrap.dedent(
            """
            rules:
              - name: per-line
                record: shop.events.OrderPlaced
                for_each: {line: line_items}
                event:
                  metric: Line
                  profile: {email: customer.email}
                  unique_id: f'{order_id}-{line.sku}'
            """
        ),
        encoding="utf-8",
    )
    compiled = compile_rules([tmp_path], catalog=catalog, include_defaults=False)
    order = guide_order()
    order["customer"] |= {"email": None, "phone": None}
    order["line_items"] = []
    assert compiled.translate(record(order)) == []
    order["line_items"] = guide_order()["line_items"]
    with pytest.raises(TranslationError, match="no identifier"):
        compiled.translate(record(order))


def test_lists_built_inside_a_profile_see_the_whole_record(
    catalog: SchemaCatalog, tmp_path: Path
) -> None:
    (tmp_path / "f.yaml").write_text(
        textwrap.dedent(
            """
            rules:
              - name: placed
                record: shop.events.OrderPlaced
                event:
                  metric: Placed
                  unique_id: order_id
                  profile:
                    email: customer.email
                    first_name: customer.first_name
                    last_name: customer.last_name
                    properties:
                      Lines:
                        $for: {l: line_items}
                        $emit:
                          Sku: l.sku
                          Buyer?: customer.first_name
                          Url?: l.product_url
                          Id?: f'{order_id}-{l.line_id}'
                          Phone?: e164(customer.phone)
            """
        ),
        encoding="utf-8",
    )
    compiled = compile_rules([tmp_path], catalog=catalog, include_defaults=False)
    order = guide_order()
    order["customer"]["phone"] = "(617) 253-1000"
    for number, item in enumerate(order["line_items"], 1):
        item["line_id"] = f"L{number}"
    [op] = compiled.translate(record(order))
    shared = {"Buyer": "John", "Phone": "+16172531000"}
    assert op.payload.profile["properties"] == {
        "Lines": [
            {
                "Sku": "WINNIEPOOH",
                **shared,
                "Url": "http://www.example.com/path/to/product",
                "Id": "1234-L1",
            },
            {
                "Sku": "TALEOFTWO",
                **shared,
                "Url": "http://www.example.com/path/to/product2",
                "Id": "1234-L2",
            },
        ]
    }
    order["line_items"][1]["line_id"] = None
    with pytest.raises(TranslationError) as info:
        compiled.translate(record(order))
    assert info.value.field == "profile.properties.Lines[].Id"


# --- identities compare as Klaviyo compares them -----------------------------------------------


def test_identities_compare_emails_as_klaviyo_does(compiled: CompiledRules) -> None:
    """Klaviyo treats e-mail addresses without regard to case: so do the dedup and state keys,
    or a repeat would reach Klaviyo inside one request (which refuses it whole) and two
    consent changes of one person would not be ordered against each other."""

    def subscription(email: str, action: str) -> DecodedRecord:
        return record(
            {
                "event_id": "e",
                "store_id": "s",
                "occurred_at": NOW,
                "customer_id": None,
                "email": email,
                "phone": None,
                "channel": "EMAIL",
                "action": action,
                "list_id": "L1",
                "consented_at": NOW,
                "source": None,
            },
            "shop.events.SubscriptionChanged",
        )

    [upper] = compiled.translate(subscription("Ann.Smith@Shop.Example", "SUBSCRIBE"))
    [lower] = compiled.translate(subscription("ann.smith@shop.example", "UNSUBSCRIBE"))
    assert upper.dedup_key == lower.dedup_key and upper.state_key == lower.state_key
    # The address itself goes to Klaviyo as written.
    assert upper.payload["attributes"]["email"] == "Ann.Smith@Shop.Example"  # type: ignore[index]

    order = guide_order()
    shouting = copy.deepcopy(order)
    shouting["customer"]["email"] = order["customer"]["email"].upper()
    keys = [op.dedup_key for op in compiled.translate(record(order))]
    assert keys == [op.dedup_key for op in compiled.translate(record(shouting))]
