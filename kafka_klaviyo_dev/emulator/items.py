"""Where the items are in each bulk body, and a uniform view of one item.

Every bulk endpoint carries an array of items (events grouped under profiles, profiles, catalog
items). The checks, fault rules, dedup and the read-back store all work on :class:`Item`, which
keeps the JSON pointer of the item so that any error about it can name it the way Klaviyo does.
Extraction is defensive: with schema validation off, a malformed body yields structural issues
instead of exceptions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from kafka_klaviyo_dev.emulator import pointer as jp
from kafka_klaviyo_dev.emulator.dedup import (
    EventKey,
    ProfileIdentity,
    explicit_event_key,
    metric_name,
    profile_identity,
)

_EMPTY: Mapping[str, Any] = {}


class Issue(NamedTuple):
    """One reason to refuse a request: a JSON pointer into the body and a PII-free detail."""

    pointer: str
    detail: str


class Item(NamedTuple):
    """One item of a bulk request.

    A named tuple rather than a frozen dataclass: a body makes a thousand of them, and a tuple
    is built in half the time.

    Attributes:
        position: where the item is among the request's items, in body order.
        pointer: JSON pointer of the item's resource object.
        resource: the resource object (``type``, ``id``, ``attributes``...).
        attributes: its ``attributes`` (empty if missing).
        profile: the profile the item belongs to: for events, the profile of its group; for
            profile endpoints, the item itself; None for catalog items.
        profile_pointer: JSON pointer of ``profile``.
        group_backfill: events only: the ``backfill`` flag of the profile group.
        identity: the identifier that names ``profile`` (see
            :func:`~kafka_klaviyo_dev.emulator.dedup.profile_identity`); None without one.
        metric: events only: the metric name ("" if missing or not a string).
        key: events only: the dedup key (see :func:`~kafka_klaviyo_dev.emulator.dedup.event_key`)
            when it does not depend on when the request arrived: the event has a
            ``unique_id`` and its profile an identifier.

    ``identity``, ``metric`` and ``key`` are worked out once here, not by each check and
    dedup step that needs them; events of a group share their profile's identity.
    """

    position: int
    pointer: str
    resource: Mapping[str, Any]
    attributes: Mapping[str, Any]
    profile: Mapping[str, Any] | None = None
    profile_pointer: str | None = None
    group_backfill: bool | None = None
    identity: ProfileIdentity | None = None
    metric: str = ""
    key: EventKey | None = None


@dataclass(slots=True)
class Extracted:
    """The items of a body, where their array is, and what made the body unreadable."""

    items: list[Item] = field(default_factory=list)
    array_pointer: str = ""
    issues: list[Issue] = field(default_factory=list)


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else _EMPTY


def _array(body: Any, tokens: Sequence[str], out: Extracted) -> list[Any] | None:
    """The array at ``tokens`` below the root, or None with an issue recorded."""
    node: Any = body
    for depth, token in enumerate(tokens):
        if not isinstance(node, dict) or token not in node:
            out.issues.append(Issue(jp.pointer(*tokens[: depth + 1]), f"'{token}' is required."))
            return None
        node = node[token]
    if not isinstance(node, list):
        out.issues.append(Issue(jp.pointer(*tokens), f"'{tokens[-1]}' must be an array."))
        return None
    return node


EVENTS_ARRAY = ("data", "attributes", "events-bulk-create", "data")
PROFILES_ARRAY = ("data", "attributes", "profiles", "data")
CATALOG_ARRAY = ("data", "attributes", "items", "data")


def extract_events(body: Any) -> Extracted:
    """Bulk Create Events: profile groups, each with its own events."""
    out = Extracted(array_pointer=jp.pointer(*EVENTS_ARRAY))
    groups = _array(body, EVENTS_ARRAY, out)
    if groups is None:
        return out
    position = 0
    # Pointers built with f-strings: every token here is a constant or an index (nothing to
    # escape), and a 1,000-event body makes a thousand of them.
    for g, group in enumerate(groups):
        group_pointer = f"{out.array_pointer}/{g}"
        attributes = _dict(_dict(group).get("attributes"))
        profile = _dict(_dict(attributes.get("profile")).get("data"))
        profile_pointer = f"{group_pointer}/attributes/profile/data"
        identity = profile_identity(profile)
        events = _dict(attributes.get("events")).get("data")
        if not isinstance(events, list):
            out.issues.append(
                Issue(
                    f"{group_pointer}/attributes/events/data",
                    "'data' must be an array of events.",
                )
            )
            continue
        backfill = attributes.get("backfill")
        group_backfill = backfill if isinstance(backfill, bool) else None
        events_pointer = f"{group_pointer}/attributes/events/data/"
        for e, event in enumerate(events):
            resource = _dict(event)
            event_attributes = _dict(resource.get("attributes"))
            metric = metric_name(event_attributes)
            key = explicit_event_key(identity, metric, event_attributes)
            # Positional: keywords would double the cost of building an item.
            out.items.append(
                Item(
                    position,
                    f"{events_pointer}{e}",
                    resource,
                    event_attributes,
                    profile,
                    profile_pointer,
                    group_backfill,
                    identity,
                    metric,
                    key,
                )
            )
            position += 1
    return out


def extract_profiles(body: Any) -> Extracted:
    """Profile import and (un)subscribe jobs: an array of profile resource objects."""
    out = Extracted(array_pointer=jp.pointer(*PROFILES_ARRAY))
    profiles = _array(body, PROFILES_ARRAY, out)
    for i, profile in enumerate(profiles or ()):
        item_pointer = f"{out.array_pointer}/{i}"
        resource = _dict(profile)
        out.items.append(
            Item(
                position=i,
                pointer=item_pointer,
                resource=resource,
                attributes=_dict(resource.get("attributes")),
                profile=resource,
                profile_pointer=item_pointer,
                identity=profile_identity(resource),
            )
        )
    return out


def extract_catalog_items(body: Any) -> Extracted:
    """Catalog item create/update/delete jobs: an array of catalog-item resource objects."""
    out = Extracted(array_pointer=jp.pointer(*CATALOG_ARRAY))
    entries = _array(body, CATALOG_ARRAY, out)
    for i, entry in enumerate(entries or ()):
        out.items.append(
            Item(
                position=i,
                pointer=f"{out.array_pointer}/{i}",
                resource=_dict(entry),
                attributes=_dict(_dict(entry).get("attributes")),
            )
        )
    return out


def field_view(item: Item) -> Mapping[str, Any]:
    """What fault rules' field paths are resolved against: the item's attributes, plus
    ``id``/``type`` of the item and, when the item belongs to a profile that is not itself,
    ``profile`` (the profile's attributes with its ``id``)."""
    view: dict[str, Any] = dict(item.attributes)
    for key in ("id", "type"):
        if key in item.resource and key not in view:
            view[key] = item.resource[key]
    if item.profile is not None and item.profile is not item.resource:
        profile = dict(_dict(item.profile.get("attributes")))
        if "id" in item.profile:
            profile.setdefault("id", item.profile["id"])
        view.setdefault("profile", profile)
    return view


def field_pointer(item: Item, tokens: Sequence[str]) -> str:
    """The JSON pointer of a field that :func:`field_view` resolved through ``tokens``."""
    if not tokens:
        return item.pointer
    head = tokens[0]
    if head == "profile" and "profile" not in item.attributes and item.profile_pointer:
        rest = tokens[1:]
        if rest and rest[0] == "id":
            return jp.join(item.profile_pointer, rest)
        return jp.join(item.profile_pointer, ("attributes", *rest))
    if head in ("id", "type") and head not in item.attributes:
        return jp.join(item.pointer, tokens)
    return jp.join(item.pointer, ("attributes", *tokens))
