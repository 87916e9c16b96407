"""Klaviyo's event identity: (profile, metric name, unique_id), and who a profile is.

Klaviyo drops an event whose profile, metric and ``unique_id`` match one it already has
(silently: the request still gets 202), and refuses a whole request that repeats one. Without a
``unique_id`` Klaviyo uses the event time to the second, and without a time, the time the
request arrived.

A profile is identified by the first identifier it carries, in Klaviyo's order of precedence:
email, then phone number, then external id, then Klaviyo id (then the web-tracking ids).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # items imports this module, to work out each item's identity and key
    from kafka_klaviyo_dev.emulator.items import Item

#: (identifier name, normalised value)
ProfileIdentity = tuple[str, str]
#: (profile identity, metric name, unique id)
EventKey = tuple[ProfileIdentity, str, str]

_IDENTIFIERS = ("email", "phone_number", "external_id", "id", "anonymous_id", "_kx")


def profile_identity(profile: Mapping[str, Any] | None) -> ProfileIdentity | None:
    """The identifier that names ``profile`` (a profile resource object), or None."""
    if not profile:
        return None
    attributes = profile.get("attributes")
    attributes = attributes if isinstance(attributes, dict) else {}
    for name in _IDENTIFIERS:
        value = profile.get("id") if name == "id" else attributes.get(name)
        if isinstance(value, str) and value.strip():
            value = value.strip()
            # Klaviyo matches e-mail addresses case-insensitively.
            return name, value.lower() if name == "email" else value
    return None


def parse_time(value: str) -> datetime | None:
    """An ISO 8601 timestamp as an aware UTC datetime (naive means UTC), or None."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def implicit_unique_id(attributes: Mapping[str, Any], received_at: float) -> str:
    """The unique id Klaviyo assumes when none is given: the event time to the second."""
    raw = attributes.get("time")
    moment = parse_time(raw) if isinstance(raw, str) else None
    if moment is None:
        moment = datetime.fromtimestamp(received_at, UTC)
    return moment.replace(microsecond=0).isoformat()


def explicit_event_key(
    identity: ProfileIdentity | None, metric: str, attributes: Mapping[str, Any]
) -> EventKey | None:
    """The dedup key of an event that has a ``unique_id``; None if it has none (the key then
    depends on when the request arrived) or its profile has no identifier."""
    unique = attributes.get("unique_id")
    if identity is None or not isinstance(unique, str) or unique == "":
        return None
    return identity, metric, unique


def event_key(item: Item, received_at: float) -> EventKey | None:
    """The dedup key of one event item; None if its profile has no identifier."""
    if item.key is not None:  # worked out at extraction: the event has a unique_id
        return item.key
    if item.identity is None:
        return None
    return item.identity, item.metric, implicit_unique_id(item.attributes, received_at)


def metric_name(attributes: Mapping[str, Any]) -> str:
    """The metric name of an event's ``attributes`` ("" if missing or not a string)."""
    metric = attributes.get("metric")
    data = metric.get("data") if isinstance(metric, dict) else None
    attrs = data.get("attributes") if isinstance(data, dict) else None
    name = attrs.get("name") if isinstance(attrs, dict) else None
    return name if isinstance(name, str) else ""
