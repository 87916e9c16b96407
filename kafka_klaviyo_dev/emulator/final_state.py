"""The state Klaviyo would end in, worked out from what the emulator accepted.

The emulator stores every accepted item in acceptance order (a ``seq`` shared by all endpoints
and accounts). Replaying those items in that order gives the end state of the stateful
resources, which is what the "latest state wins" guarantee (docs/DESIGN.md, section 2) is about:

consent
    per (account, list id, channel, person), from Subscribe Profiles (``SUBSCRIBED``) and
    Unsubscribe Profiles (``UNSUBSCRIBED``) jobs; the last accepted item wins. The person is
    the item's ``email`` (lower-cased: Klaviyo matches addresses case-insensitively) for the
    email channel and its ``phone_number`` for sms and whatsapp. An item changes only the
    channels under its ``subscriptions``. An Unsubscribe of a person who is not in its list
    (their consent on that list and channel is not ``SUBSCRIBED`` at that point) is global, as
    Klaviyo documents (RULES.md U1): their consent on that channel becomes ``UNSUBSCRIBED`` on
    every list of the account, each such step marked ``global`` in the history, and the
    entries it reached carry ``globally_unsubscribed`` true until a later Subscribe.
catalog items
    per (account, item id), from catalog item bulk create, update and delete jobs. A create
    names its item by ``integration_type:::catalog_type:::external_id``; update and delete by
    ``id``. Only the items of completed jobs that did not fail are stored: with strict catalog
    rules (:mod:`kafka_klaviyo_dev.emulator.catalog`) a create of an existing item and an
    update or delete of a missing one fail inside the job, as in Klaviyo, so they never get
    here; without them every item of a job succeeds and the last accepted operation wins. A
    create or update makes the item exist (an update merges its attributes into the item's, a
    create replaces them), a delete makes it deleted (its last attributes stay visible, with
    ``exists`` false).
catalog categories
    per (account, category id), the same way, from Create Catalog Category, its PATCH and
    DELETE and the category bulk create, update and delete jobs.
profiles
    per (account, identifier), from Bulk Import Profiles jobs; the identifier is the first of
    email, phone number, external id and Klaviyo id the profile carries
    (:func:`~kafka_klaviyo_dev.emulator.dedup.profile_identity`); the last accepted import of
    the profile wins, whole.

Each entry also lists the operations that led to it (endpoint and ``seq``), oldest first, so a
failing test can show how the state came about.

Pure functions of record lists; :class:`~kafka_klaviyo_dev.emulator.state.EmulatorState`
calls them on a snapshot taken under its lock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kafka_klaviyo_dev.emulator.dedup import profile_identity

#: Endpoints each view is built from (the emulator's endpoint names).
CONSENT_ENDPOINTS = ("subscribe", "unsubscribe")
CATALOG_ENDPOINTS = ("catalog_create", "catalog_update", "catalog_delete")
CATEGORY_ENDPOINTS = (
    "category_create",
    "category_update",
    "category_delete",
    "category_bulk_create",
    "category_bulk_update",
    "category_bulk_delete",
)
PROFILE_ENDPOINTS = ("profile_import",)

_CONSENT = {"subscribe": "SUBSCRIBED", "unsubscribe": "UNSUBSCRIBED"}
_CATALOG_OPERATION = {
    "catalog_create": "create",
    "catalog_update": "update",
    "catalog_delete": "delete",
}
_CATEGORY_OPERATION = {
    "category_create": "create",
    "category_update": "update",
    "category_delete": "delete",
    "category_bulk_create": "create",
    "category_bulk_update": "update",
    "category_bulk_delete": "delete",
}
#: Channel -> the attribute naming the person on it.
_PERSON_FIELD = {"email": "email", "sms": "phone_number", "whatsapp": "phone_number"}

Tagged = tuple[str, Mapping[str, Any]]
"""(endpoint name, accepted record)."""


def _in_order(records: Iterable[Tagged]) -> list[Tagged]:
    return sorted(records, key=lambda tagged: int(tagged[1].get("seq", 0)))


def _step(endpoint: str, record: Mapping[str, Any]) -> dict[str, Any]:
    return {"endpoint": endpoint, "seq": record.get("seq")}


def _person(channel: str, record: Mapping[str, Any]) -> str | None:
    field = _PERSON_FIELD.get(channel)
    value = record.get(field) if field is not None else None
    if not isinstance(value, str) or not value.strip():
        return None
    value = value.strip()
    return value.lower() if channel == "email" else value


def consent(records: Iterable[Tagged]) -> list[dict[str, Any]]:
    """Consent per (account, list id, channel, person), in order of first appearance."""
    state: dict[tuple[Any, ...], dict[str, Any]] = {}
    for endpoint, record in _in_order(records):
        value = _CONSENT.get(endpoint)
        subscriptions = record.get("subscriptions")
        if value is None or not isinstance(subscriptions, dict):
            continue
        for channel, kinds in subscriptions.items():
            person = _person(str(channel), record)
            if person is None:
                continue
            key = (record.get("account"), record.get("list_id"), channel, person)
            entry = state.setdefault(
                key,
                {
                    "account": key[0],
                    "list_id": key[1],
                    "channel": channel,
                    "person": person,
                    "history": [],
                },
            )
            member = entry.get("consent") == "SUBSCRIBED"
            entry["consent"] = value
            entry["types"] = sorted(kinds) if isinstance(kinds, dict) else []
            entry["seq"] = record.get("seq")
            entry["updated_at"] = record.get("received_at")
            step = _step(endpoint, record) | {"consent": value}
            if endpoint == "unsubscribe" and not member:
                _unsubscribe_everywhere(state, key, step, record.get("received_at"))
            else:
                entry["globally_unsubscribed"] = False
                entry["history"].append(step)
    return list(state.values())


def _unsubscribe_everywhere(
    state: dict[tuple[Any, ...], dict[str, Any]],
    key: tuple[Any, ...],
    step: dict[str, Any],
    updated_at: Any,
) -> None:
    """An unsubscribe of a non-member of list ``key[1]``: the person's consent on that channel
    ends on every list of the account (RULES.md U1)."""
    account, list_id, channel, person = key
    for other, entry in state.items():
        if other[0] != account or other[2] != channel or other[3] != person:
            continue
        if other != key:
            entry["consent"] = "UNSUBSCRIBED"
            entry["seq"] = step["seq"]
            entry["updated_at"] = updated_at
        entry["globally_unsubscribed"] = True
        entry["history"].append(step | {"global": True, "via_list": list_id})


def catalog_item_id(record: Mapping[str, Any]) -> str | None:
    """The id an accepted catalog record names: its ``id``, or for a create the id Klaviyo
    gives the new item (``integration_type:::catalog_type:::external_id``)."""
    explicit = record.get("id")
    if isinstance(explicit, str) and explicit:
        return explicit
    attributes = record.get("attributes")
    if not isinstance(attributes, dict):
        return None
    external_id = attributes.get("external_id")
    if not isinstance(external_id, str) or not external_id:
        return None
    integration = attributes.get("integration_type") or "$custom"
    catalog = attributes.get("catalog_type") or "$default"
    return f"{integration}:::{catalog}:::{external_id}"


def catalog_items(records: Iterable[Tagged]) -> list[dict[str, Any]]:
    """Catalog items per (account, item id), in order of first appearance."""
    return _catalog_view(records, _CATALOG_OPERATION)


def categories(records: Iterable[Tagged]) -> list[dict[str, Any]]:
    """Catalog categories per (account, category id), in order of first appearance."""
    return _catalog_view(records, _CATEGORY_OPERATION)


def _catalog_view(records: Iterable[Tagged], operations: Mapping[str, str]) -> list[dict[str, Any]]:
    state: dict[tuple[Any, str], dict[str, Any]] = {}
    for endpoint, record in _in_order(records):
        operation = operations.get(endpoint)
        item_id = catalog_item_id(record)
        if operation is None or item_id is None:
            continue
        key = (record.get("account"), item_id)
        entry = state.setdefault(
            key,
            {
                "account": key[0],
                "id": item_id,
                "exists": False,
                "attributes": {},
                "relationships": None,
                "history": [],
            },
        )
        attributes = record.get("attributes")
        given = dict(attributes) if isinstance(attributes, dict) else {}
        if operation == "delete":
            entry["exists"] = False
        else:
            if operation == "create" or not entry["exists"]:
                entry["attributes"] = given
            else:
                entry["attributes"] = {**entry["attributes"], **given}
            if record.get("relationships") is not None:
                entry["relationships"] = record.get("relationships")
            entry["exists"] = True
        entry["operation"] = operation
        entry["seq"] = record.get("seq")
        entry["updated_at"] = record.get("received_at")
        entry["history"].append(_step(endpoint, record) | {"operation": operation})
    return list(state.values())


def profiles(records: Iterable[Tagged]) -> list[dict[str, Any]]:
    """Imported profiles per (account, identifier), in order of first appearance."""
    state: dict[tuple[Any, str, str], dict[str, Any]] = {}
    for endpoint, record in _in_order(records):
        if endpoint not in PROFILE_ENDPOINTS:
            continue
        attributes = record.get("attributes")
        resource = {
            "id": record.get("id"),
            "attributes": dict(attributes) if isinstance(attributes, dict) else {},
        }
        identity = profile_identity(resource)
        if identity is None:
            continue
        key = (record.get("account"), *identity)
        entry = state.setdefault(
            key,
            {"account": key[0], "identifier": key[1], "value": key[2], "history": []},
        )
        entry["id"] = resource["id"]
        entry["attributes"] = resource["attributes"]
        entry["lists"] = list(record.get("lists") or [])
        entry["seq"] = record.get("seq")
        entry["history"].append(_step(endpoint, record))
    return list(state.values())
