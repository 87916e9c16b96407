"""Hand-written OrderPlaced translation: the guide's Placed Order and Ordered Product."""

import pytest

from consumer.decode import DecodedRecord
from consumer.endpoints import Endpoint
from consumer.errors import TranslationError, UnmappedRecordError
from kafka_klaviyo_dev.handwritten import OrderTranslator
from kafka_klaviyo_dev.samples import generated_orders, guide_order


def _record(data, name="shop.events.OrderPlaced"):
    return DecodedRecord(name, data, None, b"\0" * 8)


def test_guide_order_becomes_placed_order_and_ordered_products() -> None:
    placed, winnie, tale = OrderTranslator().translate(_record(guide_order()))
    assert {op.endpoint for op in (placed, winnie, tale)} == {Endpoint.EVENTS}
    profile = placed.payload.profile
    assert profile["email"] == "john.smith@test.com"
    # The guide's 555-123-4567 is a fictional number Klaviyo refuses: the event goes without it.
    assert "phone_number" not in profile
    assert profile["location"]["city"] == "Boston" and profile["location"]["zip"] == "02110"
    event = placed.payload.event
    assert event["metric"]["data"]["attributes"]["name"] == "Placed Order"
    assert event["unique_id"] == "1234"
    assert event["value"] == 29.98 and event["value_currency"] == "USD"
    assert event["time"] == "2013-12-17T17:47:03+00:00"
    properties = event["properties"]
    assert properties["ItemNames"] == ["Winnie the Pooh", "A Tale of Two Cities"]
    assert sorted(properties["Categories"]) == ["Children", "Classics", "Fiction"]
    assert properties["Brands"] == ["Kids Books", "Harcourt Classics"]
    assert properties["Discount Code"] == "Free Shipping" and properties["Discount Value"] == 5
    first = properties["Items"][0]
    assert first == {
        "ProductID": "1111",
        "SKU": "WINNIEPOOH",
        "ProductName": "Winnie the Pooh",
        "Quantity": 1,
        "ItemPrice": 9.99,
        "RowTotal": 9.99,
        "ProductURL": "http://www.example.com/path/to/product",
        "ImageURL": "http://www.example.com/path/to/product/image.png",
        "Categories": ["Fiction", "Children"],
        "Brand": "Kids Books",
    }
    assert winnie.payload.event["unique_id"] == "1234_WINNIEPOOH"
    assert winnie.payload.event["value"] == 9.99
    assert winnie.payload.event["properties"]["ProductBrand"] == "Kids Books"
    assert tale.payload.event["unique_id"] == "1234_TALEOFTWO"
    assert tale.payload.event["metric"]["data"]["attributes"]["name"] == "Ordered Product"
    assert placed.dedup_key == ("email:john.smith@test.com", "Placed Order", "1234")


def test_unique_ids_are_deterministic_and_distinct() -> None:
    translator = OrderTranslator()
    for order in generated_orders(50):
        first = [op.payload.event["unique_id"] for op in translator.translate(_record(order))]
        again = [op.payload.event["unique_id"] for op in translator.translate(_record(order))]
        assert first == again and len(set(first)) == len(first)


def test_repeated_sku_without_line_ids_keeps_both_lines() -> None:
    order = guide_order()
    order["line_items"].append(dict(order["line_items"][0]))
    ids = [op.payload.event["unique_id"] for op in OrderTranslator().translate(_record(order))]
    assert ids[1:] == ["1234_WINNIEPOOH", "1234_TALEOFTWO", "1234_WINNIEPOOH_2"]


def test_missing_identifier_is_a_translation_error() -> None:
    order = guide_order()
    order["customer"] = {**order["customer"], "email": None, "phone": None, "customer_id": None}
    with pytest.raises(TranslationError, match="field 'profile'"):
        OrderTranslator().translate(_record(order))


def test_valid_phone_is_normalised_to_e164() -> None:
    order = guide_order()
    order["customer"] = {**order["customer"], "phone": "(617) 253-1000"}
    [placed, *_] = OrderTranslator().translate(_record(order))
    assert placed.payload.profile["phone_number"] == "+16172531000"


def test_bad_phone_as_the_only_identifier_is_a_translation_error_without_the_number() -> None:
    order = guide_order()
    order["customer"] = {**order["customer"], "email": None, "phone": "call me maybe"}
    with pytest.raises(TranslationError) as info:
        OrderTranslator().translate(_record(order))
    assert info.value.field == "profile.phone_number" and "call me" not in str(info.value)


def test_unmapped_record() -> None:
    with pytest.raises(UnmappedRecordError):
        OrderTranslator().translate(_record({}, name="shop.events.SiteVisited"))
