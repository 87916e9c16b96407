"""Avro-encoded records of every event type, for the component tests (single-object framing)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from consumer.schemas import SchemaCatalog
from kafka_klaviyo_dev.encode import encode_single_object
from kafka_klaviyo_dev.samples import generated_orders, guide_order

CATALOG = SchemaCatalog.load()
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)

__all__ = ["CATALOG", "customer", "guide_order", "order", "orders", "product", "subscription"]


def encode(record_name: str, data: dict[str, Any]) -> bytes:
    return encode_single_object(CATALOG, f"shop.events.{record_name}", data)


def order(data: dict[str, Any] | None = None) -> bytes:
    return encode("OrderPlaced", data or guide_order())


def orders(count: int, prefix: str = "component") -> list[tuple[dict[str, Any], bytes]]:
    return [(o, order(o)) for o in generated_orders(count, prefix=prefix)]


def subscription(
    action: str,
    email: str,
    *,
    list_id: str = "LIST1",
    store_id: str = "acme",
    seconds: int = 0,
) -> bytes:
    moment = NOW + timedelta(seconds=seconds)
    return encode(
        "SubscriptionChanged",
        {
            "event_id": uuid.uuid4().hex,
            "store_id": store_id,
            "occurred_at": moment,
            "customer_id": None,
            "email": email,
            "phone": None,
            "channel": "EMAIL",
            "action": action,
            "list_id": list_id,
            "consented_at": moment,
            "source": "footer",
        },
    )


def product(product_id: str, *, title: str = "Winnie the Pooh", deleted: bool = False) -> bytes:
    base: dict[str, Any] = {
        "event_id": uuid.uuid4().hex,
        "store_id": "acme",
        "occurred_at": NOW,
        "product_id": product_id,
    }
    if deleted:
        return encode("ProductDeleted", base)
    return encode(
        "ProductUpserted",
        {
            **base,
            "title": title,
            "description": "A bear of very little brain.",
            "url": f"https://shop.example/products/{product_id}",
            "image_url": None,
            "price": {"amount": Decimal("9.99"), "currency": "USD"},
            "categories": ["Children"],
            "brand": None,
            "sku": None,
            "inventory_quantity": None,
            "published": True,
        },
    )


def customer(email: str, *, first_name: str = "John", customer_id: str | None = None) -> bytes:
    return encode(
        "CustomerUpserted",
        {
            "event_id": uuid.uuid4().hex,
            "store_id": "acme",
            "occurred_at": NOW,
            "customer": {
                "customer_id": customer_id,
                "email": email,
                "phone": None,
                "first_name": first_name,
                "last_name": "Smith",
                "address": None,
            },
            "organization": None,
            "title": None,
            "locale": None,
            "properties": {},
        },
    )
