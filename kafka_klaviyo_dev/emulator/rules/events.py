"""Event data: the limits of Klaviyo's Events API overview and the spec's event fields.

E14 at most 400 properties; D5 arrays of at most 4,000 items, objects nested at most 10 levels,
64-bit integers, a profile object of at most 95 KB; D7 ``unique_id`` of 1-255 characters;
E17 ISO 4217 ``value_currency``; E19 metric ``service`` absent or ``api``.

Nesting is counted strictly: ``properties`` itself is level 1, so ``{"a": {...}}`` puts its
inner object at level 2. Integers beyond 64 unsigned bits reach the checks as floats (the JSON
parser's choice), so only those between 2**63 and 2**64 are caught.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import orjson

from kafka_klaviyo_dev.emulator.items import Issue, Item
from kafka_klaviyo_dev.emulator.limits import CheckContext, enforces, profile_check

MAX_PROPERTIES = 400
MAX_ARRAY_ITEMS = 4_000
MAX_NESTING = 10
MIN_INT, MAX_INT = -(2**63), 2**63 - 1
MAX_PROFILE_BYTES = 95_000
MAX_UNIQUE_ID = 255
_CURRENCY = re.compile(r"^[A-Z]{3}$")
#: ISO 4217 codes in use (2025, with XCG beside ANG during the Caribbean guilder's switch).
_ISO_4217_CODES = """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD
    BTN BWP BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP
    DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR
    IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD
    MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB
    PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD
    SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS
    VED VES VND VUV WST XAF XAG XAU XBA XBB XBC XBD XCD XCG XDR XOF XPD XPF XPT XSU XTS XUA
    XXX YER ZAR ZMW ZWG ZWL
"""
ISO_4217 = frozenset(_ISO_4217_CODES.split())


def _properties_pointer(item: Item) -> str:
    return f"{item.pointer}/attributes/properties"


@enforces("E14")
def check_property_count(item: Item, ctx: CheckContext) -> Iterator[Issue]:
    """E14/D5: an event has at most 400 properties (top-level keys of ``properties``)."""
    properties = item.attributes.get("properties")
    if isinstance(properties, dict) and len(properties) > MAX_PROPERTIES:
        yield Issue(
            _properties_pointer(item),
            f"An event may not have more than {MAX_PROPERTIES} properties; "
            f"got {len(properties):,}.",
        )


def _shape_fits(node: dict[str, Any], depth: int) -> bool:
    """The common case, no issue, decided without building a pointer (``node`` at ``depth``)."""
    if depth > MAX_NESTING:
        return False
    stack: list[tuple[Any, int]] = [(node, depth)]
    while stack:
        value, level = stack.pop()
        for child in value.values() if type(value) is dict else value:
            kind = type(child)
            if kind is dict:
                if level >= MAX_NESTING:
                    return False
                stack.append((child, level + 1))
            elif kind is list:
                if len(child) > MAX_ARRAY_ITEMS:
                    return False
                stack.append((child, level))  # an array adds no object level
            elif kind is int and not MIN_INT <= child <= MAX_INT:
                return False
    return True


def _shape_issues(node: Any, base: str) -> Iterator[Issue]:
    """Arrays too long, objects too deep, integers too wide, below ``node`` (level 1)."""
    stack: list[tuple[Any, str, int]] = [(node, base, 1)]
    while stack:
        value, where, depth = stack.pop()
        kind = type(value)
        if kind is dict:
            if depth > MAX_NESTING:
                yield Issue(
                    where,
                    f"Event properties may not nest objects more than {MAX_NESTING} levels deep.",
                )
                continue
            stack.extend(
                (v, f"{where}/{k.replace('~', '~0').replace('/', '~1')}", depth + 1)
                for k, v in value.items()
                if type(v) in (dict, list, int)
            )
        elif kind is list:
            if len(value) > MAX_ARRAY_ITEMS:
                yield Issue(
                    where,
                    f"An array in event properties may not have more than "
                    f"{MAX_ARRAY_ITEMS:,} items; got {len(value):,}.",
                )
                continue
            # An array does not add an object level; its objects are at the array's level.
            stack.extend(
                (v, f"{where}/{i}", depth)
                for i, v in enumerate(value)
                if type(v) in (dict, list, int)
            )
        elif kind is int and not MIN_INT <= value <= MAX_INT:
            yield Issue(where, "Integers in event properties must fit in 64 bits.")


@enforces("D5")
def check_property_shape(item: Item, ctx: CheckContext) -> Iterator[Issue]:
    """D5: arrays of at most 4,000 items, at most 10 levels of objects, 64-bit integers."""
    properties = item.attributes.get("properties")
    if isinstance(properties, dict) and properties and not _shape_fits(properties, 1):
        yield from _shape_issues(properties, _properties_pointer(item))


@profile_check
@enforces("D5")
def check_profile_size(item: Item, ctx: CheckContext) -> Iterator[Issue]:
    """D5: an event's profile object may not exceed 95 KB, serialised."""
    if item.profile is None or not item.profile_pointer:
        return
    size = len(orjson.dumps(item.profile))
    if size > MAX_PROFILE_BYTES:
        yield Issue(
            item.profile_pointer,
            f"An event's profile may not exceed {MAX_PROFILE_BYTES:,} bytes; got {size:,}.",
        )


@enforces("D7")
def check_unique_id(item: Item, ctx: CheckContext) -> Iterator[Issue]:
    """D7: ``unique_id`` is 1 to 255 characters long."""
    unique_id = item.attributes.get("unique_id")
    if isinstance(unique_id, str) and not 1 <= len(unique_id) <= MAX_UNIQUE_ID:
        yield Issue(
            f"{item.pointer}/attributes/unique_id",
            f"'unique_id' must be 1 to {MAX_UNIQUE_ID} characters long.",
        )


@enforces("E17")
def check_currency(item: Item, ctx: CheckContext) -> Iterator[Issue]:
    """E17: ``value_currency`` is an ISO 4217 code (three capitals, and a known one)."""
    currency = item.attributes.get("value_currency")
    if isinstance(currency, str) and not (_CURRENCY.match(currency) and currency in ISO_4217):
        yield Issue(
            f"{item.pointer}/attributes/value_currency",
            "'value_currency' must be an ISO 4217 currency code such as 'USD'.",
        )


@enforces("E19")
def check_metric_service(item: Item, ctx: CheckContext) -> Iterator[Issue]:
    """E19: the metric's ``service`` is absent or ``api`` (the default, for API requests)."""
    metric = item.attributes.get("metric")
    data = metric.get("data") if isinstance(metric, dict) else None
    attributes = data.get("attributes") if isinstance(data, dict) else None
    service = attributes.get("service") if isinstance(attributes, dict) else None
    if service is not None and service != "api":
        yield Issue(
            f"{item.pointer}/attributes/metric/data/attributes/service",
            "'service' must be 'api' (the default) for API requests.",
        )
