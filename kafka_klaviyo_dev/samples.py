"""Sample order events: the guide's order 1234, and generated orders for demos and benchmarks.

Records are in the Python form fastavro writes (Decimal amounts, datetime times). Generated
customers use an e-mail domain real Klaviyo keeps; the guide's ``@test.com`` address is one
real Klaviyo would accept and silently drop.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

GUIDE_ORDER_ID = "1234"
GUIDE_EMAIL = "john.smith@test.com"
GENERATED_EMAIL_DOMAIN = "kafka-klaviyo-demo.dev"

Record = dict[str, Any]


def _money(amount: str | Decimal, currency: str = "USD") -> Record:
    return {"amount": Decimal(amount), "currency": currency}


def _line(
    product_id: str,
    sku: str,
    name: str,
    price: str,
    quantity: int,
    categories: list[str],
    brand: str,
    number: int,
) -> Record:
    suffix = "" if number == 1 else str(number)
    return {
        "line_id": None,
        "product_id": product_id,
        "sku": sku,
        "name": name,
        "quantity": quantity,
        "unit_price": _money(price),
        "row_total": _money(Decimal(price) * quantity),
        "categories": categories,
        "brand": brand,
        "product_url": f"http://www.example.com/path/to/product{suffix}",
        "image_url": f"http://www.example.com/path/to/product/image{suffix}.png",
    }


WINNIE = ("1111", "WINNIEPOOH", "Winnie the Pooh", "9.99", ["Fiction", "Children"], "Kids Books")
TALE = (
    "1112",
    "TALEOFTWO",
    "A Tale of Two Cities",
    "19.99",
    ["Fiction", "Classics"],
    "Harcourt Classics",
)


def guide_order() -> Record:
    """The guide's Placed Order: John Smith's order 1234 of two books, $29.98."""
    return {
        "event_id": "guide-order-1234-placed",
        "store_id": "default",
        # The guide's "time": 1387302423.
        "occurred_at": datetime.fromtimestamp(1387302423, UTC),
        "order_id": GUIDE_ORDER_ID,
        "customer": {
            "customer_id": None,
            "email": GUIDE_EMAIL,
            "phone": "5551234567",
            "first_name": "John",
            "last_name": "Smith",
            "address": {
                "address1": "123 Abc st",
                "address2": "Suite 1",
                "city": "Boston",
                "region": "MA",
                "zip": "02110",
                "country": "USA",
            },
        },
        "line_items": [
            _line(*WINNIE[:4], 1, WINNIE[4], WINNIE[5], 1),
            _line(*TALE[:4], 1, TALE[4], TALE[5], 2),
        ],
        "subtotal": _money("29.98"),
        "discount_code": "Free Shipping",
        "discount_total": _money("5"),
        "shipping_total": _money("5"),
        "tax_total": None,
        "total": _money("29.98"),
    }


_CATALOG = [
    ("2001", "MUG-BLUE", "Blue Mug", "12.50", ["Kitchen"], "Mugworks"),
    ("2002", "TEE-M", "Logo T-Shirt", "24.00", ["Apparel", "Tops"], "Shopwear"),
    ("2003", "SOCKS-3", "Socks (3 pairs)", "9.00", ["Apparel"], "Shopwear"),
    ("2004", "BOOK-KAFKA", "Kafka: The Definitive Guide", "49.99", ["Books", "Tech"], "Books Co"),
    ("2005", "LAMP-01", "Desk Lamp", "35.25", ["Home"], "Lumen"),
    ("2006", "PEN-SET", "Pen Set", "7.75", ["Office"], "Inkly"),
]
_FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Tim"]
_LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson"]


def generated_orders(
    count: int, *, seed: int = 7, start: datetime | None = None, prefix: str = "gen"
) -> Iterator[Record]:
    """``count`` plausible OrderPlaced records with 1 to 4 lines, reproducible from ``seed``."""
    rng = random.Random(seed)
    start = start or datetime(2026, 1, 1, tzinfo=UTC)
    for number in range(count):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        customer_number = rng.randrange(1, max(2, count // 2) + 1)
        picks = rng.sample(_CATALOG, rng.randint(1, 4))
        lines = []
        for position, (pid, sku, name, price, categories, brand) in enumerate(picks, 1):
            line = _line(pid, sku, name, price, rng.randint(1, 3), categories, brand, position)
            line["line_id"] = f"{prefix}-{number}-{position}"
            line["product_url"] = f"https://shop.{GENERATED_EMAIL_DOMAIN}/products/{pid}"
            line["image_url"] = f"https://shop.{GENERATED_EMAIL_DOMAIN}/images/{pid}.png"
            lines.append(line)
        subtotal = sum((line["row_total"]["amount"] for line in lines), Decimal(0))
        shipping = Decimal("4.99") if subtotal < 50 else Decimal(0)
        yield {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
            "store_id": "default",
            "occurred_at": start + timedelta(minutes=number),
            "order_id": f"{prefix}-{number:07d}",
            "customer": {
                "customer_id": f"cust-{customer_number}",
                "email": f"{first}.{last}.{customer_number}@{GENERATED_EMAIL_DOMAIN}".lower(),
                "phone": f"+1 617 555 {rng.randrange(100, 200):04d}",
                "first_name": first,
                "last_name": last,
                "address": None,
            },
            "line_items": lines,
            "subtotal": _money(subtotal),
            "discount_code": None,
            "discount_total": None,
            "shipping_total": _money(shipping),
            "tax_total": None,
            "total": _money(subtotal + shipping),
        }


def expected_events(order: Record) -> int:
    """Events one OrderPlaced produces: Placed Order plus one Ordered Product per line."""
    return 1 + len(order["line_items"])
