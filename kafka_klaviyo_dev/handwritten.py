"""A hand-written translation of ``shop.events.OrderPlaced``, for tests and benchmarks only.

:class:`OrderTranslator` turns an order into the guide's Placed Order event plus one Ordered
Product event per line, in Klaviyo's current API, as plain Python. The service translates with
its compiled rules; this stays as the oracle the rules are tested against and the baseline
their benchmark compares with.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from consumer.decode import DecodedRecord
from consumer.endpoints import Endpoint
from consumer.errors import TranslationError, UnmappedRecordError
from consumer.messages import EventPayload, JSONDict, Operation
from consumer.phones import NOT_VALID, to_e164

ORDER_PLACED = "shop.events.OrderPlaced"


class OrderTranslator:
    """Hand-written OrderPlaced -> Placed Order + Ordered Product (the walking skeleton)."""

    def __init__(
        self,
        *,
        placed_order_metric: str = "Placed Order",
        ordered_product_metric: str = "Ordered Product",
        default_phone_region: str = "US",
        backfill: bool = False,
    ) -> None:
        self._placed = _metric(placed_order_metric)
        self._ordered = _metric(ordered_product_metric)
        self._placed_name = placed_order_metric
        self._ordered_name = ordered_product_metric
        self._region = default_phone_region
        self._backfill = backfill

    @property
    def mapped_records(self) -> frozenset[str]:
        return frozenset({ORDER_PLACED})

    @property
    def version(self) -> str:
        return "handwritten-orders-1"

    def translate(self, record: DecodedRecord) -> list[Operation]:
        if record.record_name != ORDER_PLACED:
            raise UnmappedRecordError(
                f"no translation rule maps record {record.record_name}",
                record_name=record.record_name,
            )
        order = record.data
        profile = customer_profile(order["customer"], rule=ORDER_PLACED, region=self._region)
        identity = profile_identity(profile)
        order_id: str = order["order_id"]
        time = iso_time(order["occurred_at"])
        lines = order["line_items"]
        items = [_line_properties(line) for line in lines]

        placed_properties: JSONDict = {
            "OrderId": order_id,
            "Categories": unique(c for line in lines for c in line["categories"]),
            "ItemNames": [line["name"] for line in lines],
            "Brands": unique(line["brand"] for line in lines if line["brand"]),
            "Items": items,
        }
        if order["discount_code"] is not None:
            placed_properties["Discount Code"] = order["discount_code"]
        if order["discount_total"] is not None:
            placed_properties["Discount Value"] = money(order["discount_total"])
        total = order["total"]
        operations = [
            self._event(
                profile,
                identity,
                self._placed,
                self._placed_name,
                placed_properties,
                time,
                money(total),
                total["currency"],
                order_id,
            )
        ]
        for line_key, line in zip(line_identities(lines), lines, strict=True):
            properties: JSONDict = {
                "OrderId": order_id,
                "ProductID": line["product_id"],
                "SKU": line["sku"],
                "ProductName": line["name"],
                "Quantity": line["quantity"],
                "ProductURL": line["product_url"],
                "ImageURL": line["image_url"],
                "ProductCategories": list(line["categories"]),
                "ProductBrand": line["brand"],
            }
            row_total = line["row_total"]
            operations.append(
                self._event(
                    profile,
                    identity,
                    self._ordered,
                    self._ordered_name,
                    properties,
                    time,
                    money(row_total),
                    row_total["currency"],
                    f"{order_id}_{line_key}",
                )
            )
        return operations

    def _event(
        self,
        profile: JSONDict,
        identity: str,
        metric: JSONDict,
        metric_name: str,
        properties: JSONDict,
        time: str,
        value: float,
        currency: str,
        unique_id: str,
    ) -> Operation:
        event: JSONDict = {
            "properties": properties,
            "time": time,
            "value": value,
            "value_currency": currency,
            "unique_id": unique_id,
            "metric": metric,
        }
        if self._backfill:
            event["backfill"] = True
        return Operation(
            Endpoint.EVENTS,
            EventPayload(profile, event),
            dedup_key=(identity, metric_name, unique_id),
        )


def _metric(name: str) -> JSONDict:
    return {"data": {"type": "metric", "attributes": {"name": name}}}


def _line_properties(line: dict[str, Any]) -> JSONDict:
    return {
        "ProductID": line["product_id"],
        "SKU": line["sku"],
        "ProductName": line["name"],
        "Quantity": line["quantity"],
        "ItemPrice": money(line["unit_price"]),
        "RowTotal": money(line["row_total"]),
        "ProductURL": line["product_url"],
        "ImageURL": line["image_url"],
        "Categories": list(line["categories"]),
        "Brand": line["brand"],
    }


def customer_profile(customer: dict[str, Any], *, rule: str, region: str) -> JSONDict:
    """Klaviyo profile attributes from a ``shop.events.Customer``; at least one identifier."""
    profile: JSONDict = {}
    if customer.get("email"):
        profile["email"] = customer["email"]
    if customer.get("customer_id"):
        profile["external_id"] = customer["customer_id"]
    # Browser identity (the rules' anonymous_id and _kx): identifiers too, so before the phone.
    if customer.get("anonymous_id"):
        profile["anonymous_id"] = customer["anonymous_id"]
    if customer.get("kx"):
        profile["_kx"] = customer["kx"]
    if customer.get("phone"):
        try:
            profile["phone_number"] = e164(customer["phone"], region=region, rule=rule)
        except TranslationError:
            # Klaviyo refuses the whole profile for a bad number: with another identifier the
            # event still lands without it; as the only identifier it is bad data.
            if not profile:
                raise
    if not profile:
        raise TranslationError(
            "the customer has no email, phone, customer id or browser id",
            rule=rule,
            field="profile",
        )
    for source, target in (("first_name", "first_name"), ("last_name", "last_name")):
        if customer.get(source):
            profile[target] = customer[source]
    address = customer.get("address")
    if address:
        location = {key: value for key, value in address.items() if value}
        if location:
            profile["location"] = location
    return profile


def profile_identity(profile: JSONDict) -> str:
    """The identifier Klaviyo resolves the profile by, for in-batch dedup keys."""
    for key in ("email", "phone_number", "external_id", "anonymous_id", "_kx"):
        if key in profile:
            value = profile[key]
            # Klaviyo compares e-mail addresses without regard to case.
            return f"{key}:{value.strip().lower() if key == 'email' else value}"
    raise AssertionError("customer_profile always sets an identifier")


def e164(raw: str, *, region: str, rule: str) -> str:
    """Normalise a phone number to E.164; TranslationError if it cannot be one."""
    normalised, problem = to_e164(raw, region)
    if normalised is None:
        raise TranslationError(problem or NOT_VALID, rule=rule, field="profile.phone_number")
    return normalised


def money(value: dict[str, Any]) -> float:
    """A ``shop.events.Money`` amount as the JSON number Klaviyo expects."""
    amount: Decimal = value["amount"]
    return float(amount)


def iso_time(value: datetime) -> str:
    """timestamp-millis (a tz-aware datetime from fastavro) as ISO 8601."""
    return value.isoformat()


def unique(values: Iterable[str]) -> list[str]:
    """Distinct values in first-seen order."""
    return list(dict.fromkeys(values))


def line_identities(lines: list[dict[str, Any]]) -> list[str]:
    """A stable identity per line: its line id, else its SKU (numbered when SKUs repeat)."""
    seen: dict[str, int] = {}
    identities = []
    for line in lines:
        key = line.get("line_id") or line["sku"]
        count = seen.get(key, 0)
        seen[key] = count + 1
        identities.append(key if count == 0 else f"{key}_{count + 1}")
    return identities
