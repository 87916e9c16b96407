"""The endpoint table: every Klaviyo bulk endpoint the emulator serves, in one place.

Each :class:`Endpoint` says where its items are, how many and how large a request may be, its
rate limits, which ingestion checks apply, how its items are deduplicated and what is recorded
for read-back. Adding an endpoint is adding a row here; the request pipeline is shared.
(Create Catalog Category is a row too: a body of one item, answered 201 instead of 202.)

:data:`ROUTES` lists the other operations the emulator serves (the GETs of jobs and
categories, PATCH and DELETE of a category), each with its own rate limits.

Numbers come from the spec's operation descriptions (docs/DESIGN.md, section 3); where Klaviyo
states no payload size, the 5 MB of its other bulk endpoints is assumed.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kafka_klaviyo_dev.emulator import dedup, limits
from kafka_klaviyo_dev.emulator import pointer as jp
from kafka_klaviyo_dev.emulator.config import WindowLimits
from kafka_klaviyo_dev.emulator.items import (
    Extracted,
    Issue,
    Item,
    extract_catalog_items,
    extract_events,
    extract_profiles,
)
from kafka_klaviyo_dev.emulator.limits import ItemCheck, RequestCheck
from kafka_klaviyo_dev.emulator.rules import catalog, contacts, events, fields

MB = 1_000_000
KB = 1_000

Recorder = Callable[[Item, Any, float], dict[str, Any]]
DedupKey = Callable[[Item, float], Hashable | None]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One bulk endpoint: path, limits, checks and what it records."""

    name: str
    path: str
    job_type: str
    noun: str
    max_items: int
    max_bytes: int
    limits: WindowLimits
    extract: Callable[[Any], Extracted]
    item_checks: tuple[ItemCheck, ...]
    record: Recorder
    request_checks: tuple[RequestCheck, ...] = ()
    dedup_key: DedupKey | None = None
    returns_job: bool = False
    #: A synchronous create of one resource (Create Catalog Category): 201 and its document.
    creates_resource: bool = False


def _get(node: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def record_event(item: Item, body: Any, received_at: float) -> dict[str, Any]:
    """What read-back shows of an accepted event."""
    attributes = item.attributes
    profile: dict[str, Any] = dict(limits.profile_attributes(item))
    if item.profile is not None and item.profile.get("id") is not None:
        profile["id"] = item.profile["id"]
    backfill = attributes.get("backfill")
    if not isinstance(backfill, bool):
        backfill = bool(item.group_backfill)
    time = attributes.get("time")
    properties = attributes.get("properties")
    return {
        "profile": profile,
        "metric": item.metric,
        "unique_id": attributes.get("unique_id"),
        "time": time if isinstance(time, str) else _iso(received_at),
        "value": attributes.get("value"),
        "value_currency": attributes.get("value_currency"),
        "properties": properties if isinstance(properties, dict) else {},
        "backfill": backfill,
        "received_at": received_at,
    }


def record_profile(item: Item, body: Any, received_at: float) -> dict[str, Any]:
    """What read-back shows of an imported profile."""
    lists = _get(body, "data", "relationships", "lists", "data")
    return {
        "id": item.resource.get("id"),
        "attributes": dict(item.attributes),
        "meta": item.resource.get("meta"),
        "lists": [_get(x, "id") for x in lists] if isinstance(lists, list) else [],
        "received_at": received_at,
    }


def record_subscription(item: Item, body: Any, received_at: float) -> dict[str, Any]:
    """What read-back shows of one profile (un)subscribed."""
    attributes = item.attributes
    return {
        "id": item.resource.get("id"),
        "email": attributes.get("email"),
        "phone_number": attributes.get("phone_number"),
        "subscriptions": attributes.get("subscriptions"),
        "list_id": _get(body, "data", "relationships", "list", "data", "id"),
        "custom_source": _get(body, "data", "attributes", "custom_source"),
        "historical_import": _get(body, "data", "attributes", "historical_import"),
        "received_at": received_at,
    }


def record_catalog_item(item: Item, body: Any, received_at: float) -> dict[str, Any]:
    """What read-back shows of one catalog item created, updated or deleted."""
    return {
        "id": item.resource.get("id"),
        "attributes": dict(item.attributes),
        "relationships": item.resource.get("relationships"),
        "received_at": received_at,
    }


def record_category(item: Item, body: Any, received_at: float) -> dict[str, Any]:
    """What read-back shows of one catalog category created, updated or deleted."""
    return record_catalog_item(item, body, received_at)


CATEGORIES_ARRAY = ("data", "attributes", "categories", "data")


def extract_categories(body: Any) -> Extracted:
    """Catalog category create/update/delete jobs: an array of catalog-category resources."""
    out = Extracted(array_pointer=jp.pointer(*CATEGORIES_ARRAY))
    node: Any = body
    for depth, token in enumerate(CATEGORIES_ARRAY):
        if not isinstance(node, dict) or token not in node:
            where = jp.pointer(*CATEGORIES_ARRAY[: depth + 1])
            out.issues.append(Issue(where, f"'{token}' is required."))
            return out
        node = node[token]
    if not isinstance(node, list):
        out.issues.append(Issue(out.array_pointer, "'data' must be an array."))
        return out
    for i, entry in enumerate(node):
        resource = entry if isinstance(entry, dict) else {}
        attributes = resource.get("attributes")
        out.items.append(
            Item(
                position=i,
                pointer=f"{out.array_pointer}/{i}",
                resource=resource,
                attributes=attributes if isinstance(attributes, dict) else {},
            )
        )
    return out


def extract_one_category(body: Any) -> Extracted:
    """Create Catalog Category: the one resource at ``/data``."""
    out = Extracted(array_pointer="/data")
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        out.issues.append(Issue("/data", "'data' is required."))
        return out
    attributes = data.get("attributes")
    out.items.append(
        Item(
            position=0,
            pointer="/data",
            resource=data,
            attributes=attributes if isinstance(attributes, dict) else {},
        )
    )
    return out


_BULK_SMALL = WindowLimits(burst=10, steady=150)
_BULK_LARGE = WindowLimits(burst=75, steady=750)
_READ_LARGE = WindowLimits(burst=350, steady=3500)

# Which checks each endpoint runs, by RULES.md id. Order matters where two checks can name the
# same pointer: the first one's issue (and rule id) is kept, so the specific rules come before
# the general X1 (a request check, run after the item checks).
_PROFILE_DATA: tuple[ItemCheck, ...] = (
    contacts.check_phone,  # D4 (E8, P6, S12: E.164)
    contacts.check_email,  # D3
    contacts.check_locale,  # E9, P7
    contacts.check_time_zone,  # E11, P7
    contacts.check_patch_values,  # E13
)
_CATALOG_DATA: tuple[ItemCheck, ...] = (
    limits.check_strings,  # E4
    catalog.check_custom_metadata,  # C6
    catalog.check_category_ids,  # C7
    catalog.check_urls,  # C10
)
_FIELDS: tuple[RequestCheck, ...] = (fields.check_unknown_fields,)  # X1

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        name="events",
        path="/api/event-bulk-create-jobs",
        job_type="event-bulk-create-job",
        noun="events",
        max_items=1_000,
        max_bytes=5 * MB,
        limits=_BULK_SMALL,
        extract=extract_events,
        item_checks=(
            limits.check_strings,  # E4, E14 (strings)
            limits.check_profile_strings,  # E4
            limits.check_profile_identified,  # E1, D1
            *_PROFILE_DATA,
            events.check_profile_size,  # D5 (profile object)
            limits.check_metric_name,  # E18
            limits.check_event_time,  # E16, D6
            events.check_property_count,  # E14
            events.check_property_shape,  # D5
            events.check_unique_id,  # D7
            events.check_currency,  # E17
            events.check_metric_service,  # E19
        ),
        request_checks=(limits.duplicate_events, *_FIELDS),  # E20, X1
        dedup_key=dedup.event_key,
        record=record_event,
    ),
    Endpoint(
        name="profile_import",
        path="/api/profile-bulk-import-jobs",
        job_type="profile-bulk-import-job",
        noun="profiles",
        max_items=10_000,
        max_bytes=5 * MB,
        limits=_BULK_SMALL,
        extract=extract_profiles,
        item_checks=(
            limits.check_strings,  # E4
            limits.check_profile_identified,  # D14
            *_PROFILE_DATA,
            fields.check_no_anonymous_id,  # P10
            limits.make_item_size_check(100 * KB, "profile", "P3"),
        ),
        request_checks=_FIELDS,
        record=record_profile,
        returns_job=True,
    ),
    Endpoint(
        name="subscribe",
        path="/api/profile-subscription-bulk-create-jobs",
        job_type="profile-subscription-bulk-create-job",
        noun="profiles",
        max_items=1_000,
        max_bytes=5 * MB,
        limits=_BULK_LARGE,
        extract=extract_profiles,
        item_checks=(
            limits.check_strings,  # E4
            contacts.check_subscriber_identified,  # S10
            contacts.check_subscribe_email,  # S11
            contacts.check_subscribe_phone,  # S12
            contacts.check_phone,  # D4, S12 (E.164)
            contacts.check_email,  # D3
            limits.check_consent_times,  # S2-S4
        ),
        request_checks=_FIELDS,
        record=record_subscription,
    ),
    Endpoint(
        name="unsubscribe",
        path="/api/profile-subscription-bulk-delete-jobs",
        job_type="profile-subscription-bulk-delete-job",
        noun="profiles",
        max_items=100,
        max_bytes=5 * MB,
        limits=_BULK_LARGE,
        extract=extract_profiles,
        item_checks=(
            limits.check_strings,  # E4
            contacts.check_unsubscribe_channels,  # U4
            contacts.check_unsubscribe_phone,  # U6
            contacts.check_email,  # D3
        ),
        request_checks=_FIELDS,
        record=record_subscription,
    ),
    Endpoint(
        name="catalog_create",
        path="/api/catalog-item-bulk-create-jobs",
        job_type="catalog-item-bulk-create-job",
        noun="catalog items",
        max_items=100,
        max_bytes=5 * MB,
        limits=_BULK_LARGE,
        extract=extract_catalog_items,
        item_checks=(
            fields.check_no_id_on_create,  # D24
            catalog.check_catalog_type,  # C5
            *_CATALOG_DATA,
        ),
        request_checks=_FIELDS,
        record=record_catalog_item,
        returns_job=True,
    ),
    Endpoint(
        name="catalog_update",
        path="/api/catalog-item-bulk-update-jobs",
        job_type="catalog-item-bulk-update-job",
        noun="catalog items",
        max_items=100,
        max_bytes=5 * MB,
        limits=_BULK_LARGE,
        extract=extract_catalog_items,
        item_checks=(
            fields.check_update_immutables,  # C11
            catalog.check_item_id,  # C8
            *_CATALOG_DATA,
        ),
        request_checks=_FIELDS,
        record=record_catalog_item,
        returns_job=True,
    ),
    Endpoint(
        name="catalog_delete",
        path="/api/catalog-item-bulk-delete-jobs",
        job_type="catalog-item-bulk-delete-job",
        noun="catalog items",
        max_items=100,
        max_bytes=5 * MB,
        limits=_BULK_LARGE,
        extract=extract_catalog_items,
        item_checks=(catalog.check_item_id,),  # C8
        request_checks=_FIELDS,
        record=record_catalog_item,
        returns_job=True,
    ),
    Endpoint(
        name="category_bulk_create",
        path="/api/catalog-category-bulk-create-jobs",
        job_type="catalog-category-bulk-create-job",
        noun="catalog categories",
        max_items=100,
        max_bytes=5 * MB,
        limits=_BULK_LARGE,
        extract=extract_categories,
        item_checks=(limits.check_strings,),
        record=record_category,
        returns_job=True,
    ),
    Endpoint(
        name="category_bulk_update",
        path="/api/catalog-category-bulk-update-jobs",
        job_type="catalog-category-bulk-update-job",
        noun="catalog categories",
        max_items=100,
        max_bytes=5 * MB,
        limits=_BULK_LARGE,
        extract=extract_categories,
        item_checks=(limits.check_strings,),
        record=record_category,
        returns_job=True,
    ),
    Endpoint(
        name="category_bulk_delete",
        path="/api/catalog-category-bulk-delete-jobs",
        job_type="catalog-category-bulk-delete-job",
        noun="catalog categories",
        max_items=100,
        max_bytes=5 * MB,
        limits=_BULK_LARGE,
        extract=extract_categories,
        item_checks=(),
        record=record_category,
        returns_job=True,
    ),
    Endpoint(
        name="category_create",
        path="/api/catalog-categories",
        job_type="catalog-category",
        noun="catalog categories",
        max_items=1,
        max_bytes=5 * MB,
        limits=_BULK_LARGE,
        extract=extract_one_category,
        item_checks=(limits.check_strings,),
        record=record_category,
        creates_resource=True,
    ),
)

BY_PATH: Mapping[str, Endpoint] = {e.path: e for e in ENDPOINTS}
BY_NAME: Mapping[str, Endpoint] = {e.name: e for e in ENDPOINTS}


def lookup(name_or_path: str) -> Endpoint | None:
    """The endpoint named ``name_or_path`` (name like ``events``, or path; a trailing slash
    is ignored)."""
    key = name_or_path.rstrip("/") or name_or_path
    return BY_NAME.get(key) or BY_PATH.get(key)


@dataclass(frozen=True, slots=True)
class Route:
    """One operation besides the POST endpoints: method, path template, its own rate limits.

    ``template`` tokens in braces (``{id}``) match one path segment; ``endpoint`` is the
    endpoint row the route belongs to (the job type, for the GETs of jobs).
    """

    name: str
    method: str
    template: str
    limits: WindowLimits
    endpoint: str | None = None

    def match(self, method: str, path: str) -> str | None:
        """The ``{id}`` of ``path`` ("" for a template without one), or None if no match."""
        if method != self.method:
            return None
        want = self.template.strip("/").split("/")
        got = path.strip("/").split("/")
        if len(want) != len(got):
            return None
        found = ""
        for template_part, part in zip(want, got, strict=True):
            if template_part.startswith("{"):
                if not part:
                    return None
                found = part
            elif template_part != part:
                return None
        return found


#: GET limits of each job type, from the spec's ``x-klaviyo-ratelimit`` of its GET operations
#: (they differ from the POST's: catalog item delete and category jobs are read at 350/3500).
_JOB_READ_LIMITS: Mapping[str, WindowLimits] = {
    "profile_import": _BULK_SMALL,
    "catalog_create": _BULK_LARGE,
    "catalog_update": _BULK_LARGE,
    "catalog_delete": _READ_LARGE,
    "category_bulk_create": _READ_LARGE,
    "category_bulk_update": _READ_LARGE,
    "category_bulk_delete": _READ_LARGE,
}


def _routes() -> tuple[Route, ...]:
    out: list[Route] = []
    for endpoint in ENDPOINTS:
        read = _JOB_READ_LIMITS.get(endpoint.name)
        if not endpoint.returns_job or read is None:
            continue
        out.append(Route(f"{endpoint.name}_jobs", "GET", endpoint.path, read, endpoint.name))
        out.append(
            Route(f"{endpoint.name}_job", "GET", endpoint.path + "/{job_id}", read, endpoint.name)
        )
    out += [
        Route(
            "profile_import_errors",
            "GET",
            "/api/profile-bulk-import-jobs/{id}/import-errors",
            _BULK_SMALL,
            "profile_import",
        ),
        # Get Profiles for List: a list's members from the consent state (emulator.lists).
        Route("list_profiles", "GET", "/api/lists/{id}/profiles", _BULK_LARGE, "unsubscribe"),
        Route("category_list", "GET", "/api/catalog-categories", _READ_LARGE, "category_create"),
        Route(
            "category_get", "GET", "/api/catalog-categories/{id}", _READ_LARGE, "category_create"
        ),
        Route(
            "category_update",
            "PATCH",
            "/api/catalog-categories/{id}",
            _BULK_LARGE,
            "category_create",
        ),
        Route(
            "category_delete",
            "DELETE",
            "/api/catalog-categories/{id}",
            _BULK_LARGE,
            "category_create",
        ),
    ]
    return tuple(out)


ROUTES: tuple[Route, ...] = _routes()
ROUTES_BY_NAME: Mapping[str, Route] = {r.name: r for r in ROUTES}


def route_for(method: str, path: str) -> tuple[Route, str] | None:
    """The route serving ``method path`` and the id in the path; None if none does."""
    for route in ROUTES:
        found = route.match(method, path)
        if found is not None:
            return route, found
    return None


def methods_at(path: str) -> Sequence[str]:
    """The methods the emulator serves at ``path`` (for a 405's ``Allow``)."""
    methods = ["POST"] if path.rstrip("/") in BY_PATH else []
    for method in ("GET", "PATCH", "DELETE"):
        if route_for(method, path) is not None:
            methods.append(method)
    return methods


def operation_name(name_or_path: str) -> str | None:
    """The name of the endpoint (name or path) or route (``profile_import_job``...) given."""
    endpoint = lookup(name_or_path)
    if endpoint is not None:
        return endpoint.name
    return name_or_path if name_or_path in ROUTES_BY_NAME else None
