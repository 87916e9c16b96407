"""Sample events: the guide's journey (John Smith's order 1234 and everything around it),
generated orders and traffic of every record type for demos, tests and benchmarks, and what
Klaviyo should accept for them (:func:`expected_accepted`, :func:`expected_metrics`).

Records are in the Python form fastavro writes (Decimal amounts, datetime times). Generated
customers use an e-mail domain real Klaviyo keeps; the guide's ``@test.com`` address is one
real Klaviyo would accept and silently drop.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
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
            "anonymous_id": None,
            "kx": None,
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
                "anonymous_id": None,
                "kx": None,
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


# --- the guide's whole journey, and the other record types ------------------------------------

#: Record full names, short: ``shop.events.<name>``.
NAMESPACE = "shop.events"
GUIDE_CART_ID = "1000123"
GUIDE_LIST_ID = "Y6nRLr"
GUIDE_CUSTOMER_ID = "c-1234"
#: A number Klaviyo accepts (the guide's 555-123-4567 is a fictional one it refuses).
GUIDE_PHONE = "+1 617 253 1000"
#: The guide's times: browsing before the order, the shipment after it.
GUIDE_VISIT_TIME = 1387295000
GUIDE_VIEW_TIME = 1387298823
GUIDE_CART_TIME = 1387299000
GUIDE_CHECKOUT_TIME = 1387299423
GUIDE_PLACED_TIME = 1387302423
GUIDE_SHIPPED_TIME = 1387312956


def _at(unix: int) -> datetime:
    return datetime.fromtimestamp(unix, UTC)


#: The guide's browser identity: the shop's web-tracking id of John Smith's browser and the
#: exchange id Klaviyo's tracking gave it (a stand-in: real values come from Klaviyo only).
GUIDE_ANONYMOUS_ID = "guide-browser-7f3c9a"
GUIDE_KX = "guide-kx-Mx8vQk2hZr"


def _guide_customer() -> Record:
    return dict(guide_order()["customer"])


def _guide_browser() -> Record:
    """John Smith as the shop's web tracking knows him: his browser's ids besides his address."""
    return _guide_customer() | {"anonymous_id": GUIDE_ANONYMOUS_ID, "kx": GUIDE_KX}


def site_visited(
    event_id: str, customer: Record, page_url: str, *, occurred_at: datetime | None = None
) -> Record:
    """A SiteVisited record (Active on Site)."""
    return {
        "event_id": event_id,
        "store_id": "default",
        "occurred_at": occurred_at or datetime(2026, 1, 1, tzinfo=UTC),
        "customer": customer,
        "page_url": page_url,
        "referrer": None,
        "session_id": None,
    }


def guide_site_visit() -> Record:
    """John Smith lands on the shop (Active on Site)."""
    record = site_visited(
        "guide-visit",
        _guide_browser(),
        "http://www.example.com/",
        occurred_at=_at(GUIDE_VISIT_TIME),
    )
    record["referrer"] = "https://www.google.com/"
    record["session_id"] = "guide-session-1"
    return record


def guide_product_viewed() -> Record:
    """The guide's Viewed Product: Winnie the Pooh."""
    pid, sku, name, price, categories, brand = WINNIE
    return {
        "event_id": "guide-viewed",
        "store_id": "default",
        "occurred_at": _at(GUIDE_VIEW_TIME),
        "customer": _guide_browser(),
        "product": {
            "product_id": pid,
            "sku": sku,
            "name": name,
            "categories": list(categories),
            "brand": brand,
            "url": "http://www.example.com/path/to/product",
            "image_url": "http://www.example.com/path/to/product/image.png",
            "price": _money(price),
            "compare_at_price": _money("14.99"),
        },
    }


def guide_cart_item_added() -> Record:
    """The guide's Added to Cart: A Tale of Two Cities joins Winnie the Pooh."""
    lines = [dict(line) for line in guide_order()["line_items"]]
    return {
        "event_id": "guide-added",
        "store_id": "default",
        "occurred_at": _at(GUIDE_CART_TIME),
        "cart_id": GUIDE_CART_ID,
        "customer": _guide_customer(),
        "added_item": lines[1],
        "items": lines,
        "total": _money("29.98"),
        "checkout_url": "http://www.example.com/path/to/checkout",
    }


def guide_checkout_started() -> Record:
    """The guide's Started Checkout (unique id: cart id + Unix time)."""
    return {
        "event_id": "guide-checkout",
        "store_id": "default",
        "occurred_at": _at(GUIDE_CHECKOUT_TIME),
        "cart_id": GUIDE_CART_ID,
        "customer": _guide_customer(),
        "items": [dict(line) for line in guide_order()["line_items"]],
        "total": _money("29.98"),
        "checkout_url": "http://www.example.com/path/to/checkout",
    }


def order_followup(order: Record, event_id: str, occurred_at: datetime, **extra: Any) -> Record:
    """What became of an order (OrderFulfilled, OrderCancelled, OrderRefunded): the order's
    fields, a new event id and time, plus ``extra`` (carrier, reason, refund_total...)."""
    record = dict(order)
    record["event_id"] = event_id
    record["occurred_at"] = occurred_at
    record.update(extra)
    return record


def _later_order_event(name: str, **extra: Any) -> Record:
    return order_followup(
        guide_order(), f"guide-order-1234-{name}", _at(GUIDE_SHIPPED_TIME), **extra
    )


def guide_order_fulfilled() -> Record:
    """Order 1234 shipped (Fulfilled Order)."""
    return _later_order_event(
        "fulfilled",
        carrier="UPS",
        tracking_number="1Z999AA10123456784",
        tracking_url="https://www.ups.com/track?tracknum=1Z999AA10123456784",
    )


def guide_order_cancelled() -> Record:
    """Order 1234 cancelled (Cancelled Order)."""
    return _later_order_event("cancelled", reason="No longer needed")


def guide_order_refunded() -> Record:
    """Order 1234 refunded in full (Refunded Order)."""
    return _later_order_event("refunded", reason="No longer needed", refund_total=None)


def customer_upserted(
    event_id: str, customer: Record, *, occurred_at: datetime | None = None, **extra: Any
) -> Record:
    """A CustomerUpserted record (a profile upsert)."""
    record: Record = {
        "event_id": event_id,
        "store_id": "default",
        "occurred_at": occurred_at or datetime(2026, 1, 1, tzinfo=UTC),
        "customer": customer,
        "organization": None,
        "title": None,
        "locale": None,
        "properties": {},
    }
    record.update(extra)
    return record


def guide_customer_upserted() -> Record:
    """John Smith's profile, with a customer id, a phone number Klaviyo accepts and the
    exchange id of his browser (a profile import takes ``_kx``, not ``anonymous_id``)."""
    customer = _guide_browser() | {"customer_id": GUIDE_CUSTOMER_ID, "phone": GUIDE_PHONE}
    return customer_upserted(
        "guide-customer",
        customer,
        occurred_at=_at(GUIDE_PLACED_TIME),
        organization="Acme Books",
        title="Reader",
        locale="en-US",
        properties={"Favourite": "Winnie the Pooh"},
    )


def subscription_changed(
    event_id: str,
    list_id: str,
    *,
    email: str | None = None,
    phone: str | None = None,
    action: str = "SUBSCRIBE",
    channel: str = "EMAIL",
    store_id: str = "default",
    occurred_at: datetime | None = None,
) -> Record:
    """A SubscriptionChanged record: ``action`` SUBSCRIBE/UNSUBSCRIBE on ``channel``
    EMAIL/SMS for one list."""
    at = occurred_at or datetime(2026, 1, 1, tzinfo=UTC)
    return {
        "event_id": event_id,
        "store_id": store_id,
        "occurred_at": at,
        "customer_id": None,
        "email": email,
        "phone": phone,
        "channel": channel,
        "action": action,
        "list_id": list_id,
        "consented_at": at,
        "source": "test",
    }


def guide_subscription() -> Record:
    """John Smith subscribes to the newsletter list by e-mail."""
    return subscription_changed(
        "guide-subscription",
        GUIDE_LIST_ID,
        email=GUIDE_EMAIL,
        occurred_at=_at(GUIDE_PLACED_TIME),
    )


def product_upserted(
    product_id: str,
    *,
    title: str | None = None,
    price: str = "9.99",
    categories: list[str] | None = None,
    event_id: str | None = None,
    store_id: str = "default",
    occurred_at: datetime | None = None,
    **extra: Any,
) -> Record:
    """A ProductUpserted record (a catalog item create-or-update)."""
    record: Record = {
        "event_id": event_id or f"product-{product_id}-upserted",
        "store_id": store_id,
        "occurred_at": occurred_at or datetime(2026, 1, 1, tzinfo=UTC),
        "product_id": product_id,
        "title": title or f"Product {product_id}",
        "description": f"The description of product {product_id}.",
        "url": f"https://shop.{GENERATED_EMAIL_DOMAIN}/products/{product_id}",
        "image_url": None,
        "price": _money(price),
        "categories": categories or [],
        "brand": None,
        "sku": None,
        "inventory_quantity": None,
        "published": True,
    }
    record.update(extra)
    return record


def product_deleted(
    product_id: str,
    *,
    event_id: str | None = None,
    store_id: str = "default",
    occurred_at: datetime | None = None,
) -> Record:
    """A ProductDeleted record (a catalog item delete)."""
    return {
        "event_id": event_id or f"product-{product_id}-deleted",
        "store_id": store_id,
        "occurred_at": occurred_at or datetime(2026, 1, 1, tzinfo=UTC),
        "product_id": product_id,
    }


def guide_products() -> list[Record]:
    """The guide's two books as catalog products."""
    out = []
    for number, (pid, sku, name, price, categories, brand) in enumerate((WINNIE, TALE), 1):
        suffix = "" if number == 1 else str(number)
        out.append(
            product_upserted(
                pid,
                title=name,
                price=price,
                categories=list(categories),
                event_id=f"guide-product-{pid}",
                occurred_at=_at(GUIDE_VIEW_TIME - 86400),
                description=f"{name}, from {brand}.",
                url=f"http://www.example.com/path/to/product{suffix}",
                image_url=f"http://www.example.com/path/to/product/image{suffix}.png",
                brand=brand,
                sku=sku,
                inventory_quantity=10,
            )
        )
    return out


def guide_journey() -> list[tuple[str, Record]]:
    """(record full name, record) of the guide's whole journey, in the order it happens:
    the catalog, the visit, the product view, the cart, the checkout, the order and what
    became of it, the customer's profile and their e-mail subscription."""
    products = [(f"{NAMESPACE}.ProductUpserted", p) for p in guide_products()]
    return [
        *products,
        (f"{NAMESPACE}.SiteVisited", guide_site_visit()),
        (f"{NAMESPACE}.ProductViewed", guide_product_viewed()),
        (f"{NAMESPACE}.CartItemAdded", guide_cart_item_added()),
        (f"{NAMESPACE}.CheckoutStarted", guide_checkout_started()),
        (f"{NAMESPACE}.OrderPlaced", guide_order()),
        (f"{NAMESPACE}.OrderFulfilled", guide_order_fulfilled()),
        (f"{NAMESPACE}.OrderCancelled", guide_order_cancelled()),
        (f"{NAMESPACE}.OrderRefunded", guide_order_refunded()),
        (f"{NAMESPACE}.CustomerUpserted", guide_customer_upserted()),
        (f"{NAMESPACE}.SubscriptionChanged", guide_subscription()),
    ]


# --- generated traffic of every kind, and what Klaviyo should accept for it -------------------

SITE_VISITED = f"{NAMESPACE}.SiteVisited"
PRODUCT_VIEWED = f"{NAMESPACE}.ProductViewed"
CART_ITEM_ADDED = f"{NAMESPACE}.CartItemAdded"
CHECKOUT_STARTED = f"{NAMESPACE}.CheckoutStarted"
ORDER_PLACED = f"{NAMESPACE}.OrderPlaced"
ORDER_FULFILLED = f"{NAMESPACE}.OrderFulfilled"
ORDER_CANCELLED = f"{NAMESPACE}.OrderCancelled"
ORDER_REFUNDED = f"{NAMESPACE}.OrderRefunded"
CUSTOMER_UPSERTED = f"{NAMESPACE}.CustomerUpserted"
SUBSCRIPTION_CHANGED = f"{NAMESPACE}.SubscriptionChanged"
PRODUCT_UPSERTED = f"{NAMESPACE}.ProductUpserted"
PRODUCT_DELETED = f"{NAMESPACE}.ProductDeleted"

#: (Kafka key, record full name, record), as :func:`kafka_klaviyo_dev.produce.produce_records`
#: takes them.
KeyedRecord = tuple[bytes, str, Record]


def product_viewed(
    event_id: str, customer: Record, line: Record, *, occurred_at: datetime
) -> Record:
    """A ProductViewed record of the product on an order or cart ``line``."""
    return {
        "event_id": event_id,
        "store_id": "default",
        "occurred_at": occurred_at,
        "customer": customer,
        "product": {
            "product_id": line["product_id"],
            "sku": line["sku"],
            "name": line["name"],
            "categories": list(line["categories"]),
            "brand": line["brand"],
            "url": line["product_url"],
            "image_url": line["image_url"],
            "price": dict(line["unit_price"]),
            "compare_at_price": None,
        },
    }


def _cart_total(items: list[Record]) -> Record:
    return _money(sum((line["row_total"]["amount"] for line in items), Decimal(0)))


def cart_item_added(
    event_id: str, cart_id: str, customer: Record, items: list[Record], *, occurred_at: datetime
) -> Record:
    """A CartItemAdded record: the last of ``items`` was just added to the cart."""
    return {
        "event_id": event_id,
        "store_id": "default",
        "occurred_at": occurred_at,
        "cart_id": cart_id,
        "customer": customer,
        "added_item": items[-1],
        "items": items,
        "total": _cart_total(items),
        "checkout_url": f"https://shop.{GENERATED_EMAIL_DOMAIN}/checkout/{cart_id}",
    }


def checkout_started(
    event_id: str, cart_id: str, customer: Record, items: list[Record], *, occurred_at: datetime
) -> Record:
    """A CheckoutStarted record of the cart ``cart_id``."""
    return {
        "event_id": event_id,
        "store_id": "default",
        "occurred_at": occurred_at,
        "cart_id": cart_id,
        "customer": customer,
        "items": items,
        "total": _cart_total(items),
        "checkout_url": f"https://shop.{GENERATED_EMAIL_DOMAIN}/checkout/{cart_id}",
    }


def generated_traffic(
    orders: int, *, seed: int = 7, prefix: str = "gen", list_id: str = GUIDE_LIST_ID
) -> list[KeyedRecord]:
    """A shop's traffic around ``orders`` generated orders, every record type but deletes.

    The catalog's products first, then per order: a site visit; for every second order a
    view of its first product, for every third the cart and the checkout; the order; for
    every fourth its shipment, every tenth a cancellation, every twentieth a partial refund.
    Each customer's profile comes with their first order, and every other customer
    subscribes to ``list_id`` by e-mail.

    Every record has its own Klaviyo identity (event unique ids, profiles, consents and
    catalog items are never repeated), so Klaviyo keeps each one:
    :func:`expected_accepted` counts what it should accept. Keys are the customer id (the
    product id for products), so one customer's records stay in one partition, in order.
    """
    products = [
        product_upserted(
            pid,
            title=name,
            price=price,
            categories=list(categories),
            event_id=f"{prefix}-product-{pid}",
            brand=brand,
            sku=sku,
        )
        for pid, sku, name, price, categories, brand in _CATALOG
    ]
    out: list[KeyedRecord] = [(p["product_id"].encode(), PRODUCT_UPSERTED, p) for p in products]
    customers: set[str] = set()
    for number, order in enumerate(generated_orders(orders, seed=seed, prefix=prefix)):
        customer, lines, at = order["customer"], order["line_items"], order["occurred_at"]
        key = str(customer["customer_id"]).encode()
        before = at - timedelta(seconds=40)
        out.append(
            (
                key,
                SITE_VISITED,
                site_visited(
                    f"{prefix}-visit-{number}",
                    customer,
                    f"https://shop.{GENERATED_EMAIL_DOMAIN}/",
                    occurred_at=before,
                ),
            )
        )
        if number % 2 == 0:
            viewed = product_viewed(
                f"{prefix}-viewed-{number}", customer, lines[0], occurred_at=before
            )
            out.append((key, PRODUCT_VIEWED, viewed))
        if number % 3 == 0:
            cart = f"{prefix}-cart-{number}"
            added = cart_item_added(
                f"{prefix}-added-{number}", cart, customer, lines, occurred_at=before
            )
            checkout = checkout_started(
                f"{prefix}-checkout-{number}", cart, customer, lines, occurred_at=before
            )
            out += [(key, CART_ITEM_ADDED, added), (key, CHECKOUT_STARTED, checkout)]
        out.append((key, ORDER_PLACED, order))
        later = at + timedelta(days=1)
        if number % 4 == 0:
            shipped = order_followup(
                order,
                f"{prefix}-fulfilled-{number}",
                later,
                carrier="UPS",
                tracking_number=f"1Z{number:016d}",
                tracking_url=None,
            )
            out.append((key, ORDER_FULFILLED, shipped))
        if number % 10 == 1:
            cancelled = order_followup(
                order, f"{prefix}-cancelled-{number}", later, reason="Changed my mind"
            )
            out.append((key, ORDER_CANCELLED, cancelled))
        if number % 20 == 3:
            refunded = order_followup(
                order,
                f"{prefix}-refunded-{number}",
                later,
                reason="Damaged in transit",
                refund_total=dict(lines[0]["row_total"]),
            )
            out.append((key, ORDER_REFUNDED, refunded))
        # One profile per customer id: generated customers sharing an id are one person.
        if customer["customer_id"] not in customers:
            customers.add(customer["customer_id"])
            profile = customer_upserted(f"{prefix}-customer-{number}", customer, occurred_at=at)
            out.append((key, CUSTOMER_UPSERTED, profile))
            if len(customers) % 2 == 1:
                subscription = subscription_changed(
                    f"{prefix}-subscription-{number}",
                    list_id,
                    email=customer["email"],
                    occurred_at=at,
                )
                out.append((key, SUBSCRIPTION_CHANGED, subscription))
    return out


#: The Klaviyo metrics each record type's default rules make, per record (OrderPlaced's
#: Ordered Product is per line, see :func:`expected_metrics`).
_METRICS: dict[str, tuple[str, ...]] = {
    SITE_VISITED: ("Active on Site",),
    PRODUCT_VIEWED: ("Viewed Product",),
    CART_ITEM_ADDED: ("Added to Cart",),
    CHECKOUT_STARTED: ("Started Checkout",),
    ORDER_PLACED: ("Placed Order",),
    ORDER_FULFILLED: ("Fulfilled Order",),
    ORDER_CANCELLED: ("Cancelled Order",),
    ORDER_REFUNDED: ("Refunded Order",),
}
#: The emulator's endpoint names (``EmulatorStats.accepted``) the stateful record types'
#: default rules post one item to, per record.
_STATE_ENDPOINTS: dict[str, tuple[str, ...]] = {
    CUSTOMER_UPSERTED: ("profile_import",),
    # Klaviyo has no bulk upsert: an item is updated, and created when the update's job says
    # it does not exist (README, Products). On a catalog without the item (a fresh account,
    # as in the demo) the update stores nothing and the create stores it.
    PRODUCT_UPSERTED: ("catalog_create",),
    PRODUCT_DELETED: ("catalog_delete",),
}


def expected_metrics(records: Iterable[tuple[str, Record]]) -> Counter[str]:
    """Metric name -> events the default rules make of (record full name, record) pairs."""
    counts: Counter[str] = Counter()
    for name, record in records:
        counts.update(_METRICS.get(name, ()))
        if name == ORDER_PLACED:
            counts["Ordered Product"] += len(record["line_items"])
    return counts


def expected_accepted(records: Iterable[tuple[str, Record]]) -> Counter[str]:
    """Endpoint name -> items Klaviyo should accept for (record full name, record) pairs.

    Counts what the default rules send; it equals what Klaviyo keeps only when no two
    records share a Klaviyo identity (Klaviyo drops a repeated event, and the service may
    fold repeats of one profile, consent or catalog item into one item), as
    :func:`generated_traffic` and :func:`guide_journey` ensure.
    """
    pairs = list(records)
    counts: Counter[str] = Counter()
    events = sum(expected_metrics(pairs).values())
    if events:
        counts["events"] = events
    categories: set[str] = set()
    for name, record in pairs:
        if name == SUBSCRIPTION_CHANGED:
            counts["subscribe" if record["action"] == "SUBSCRIBE" else "unsubscribe"] += 1
        else:
            counts.update(_STATE_ENDPOINTS.get(name, ()))
        if name == PRODUCT_UPSERTED:
            categories.update(c for c in record["categories"] if c)
    if categories:
        # Each category is created once, before the first item naming it (README, Products).
        counts["category_create"] = len(categories)
    return counts
