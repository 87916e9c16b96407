"""Request bodies of Klaviyo's bulk endpoints, assembled from items encoded once.

Each endpoint has a :class:`BodyFormat` that encodes one operation to JSON bytes when it joins a
batch (so the batcher knows its size) and later joins those bytes into the JSON:API body. It
also maps a JSON pointer from a 400 response back to the items it names, which is how a bad
request is narrowed to the offending items.

A run sends either live traffic or history (:class:`History`: a replay or backfill). History
differs in two bodies only: events carry ``backfill: true`` (recorded without triggering
flows, RULES.md E22) and subscriptions are a historical import with each consent's
``consented_at`` (S2-S4). Live subscriptions leave ``consented_at`` out: Klaviyo refuses it
without ``historical_import`` and takes the time it receives the request as the consent time.

A live run may still send old consent as history (:func:`consent_is_older`, setting
``rules.consent.historical_after_s``): consent given long before it reaches Klaviyo (a backlog,
a re-drive) keeps its own time instead of taking the request's. ``historical_import`` is an
attribute of the whole request, so such items go in requests of their own
(:func:`consumer.batch.batch_key`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

import orjson

from consumer.endpoints import Endpoint
from consumer.messages import EventPayload, Operation


@dataclass(frozen=True, slots=True)
class History:
    """How a run sends what it reads: live (the default) or as history (replay, backfill)."""

    #: Events are recorded without triggering flows (``backfill: true``).
    backfill: bool = False
    #: Subscriptions are sent as a historical import, with the consent times of the records.
    historical_consent: bool = False


LIVE = History()


def as_historical_consent(history: History) -> History:
    """``history`` with its subscriptions sent as a historical import (events unchanged)."""
    return history if history.historical_consent else replace(history, historical_consent=True)


def consent_is_older(operation: Operation, cutoff: datetime) -> bool:
    """Whether every consent of a Subscribe item was given before ``cutoff`` (aware).

    A consent without ``consented_at``, or with one that is not ISO 8601 with a UTC offset, is
    not: Klaviyo reads a time without offset in the account's zone (RULES.md D16), so it is
    safer sent as live consent."""
    payload = operation.payload
    if operation.endpoint is not Endpoint.SUBSCRIBE or not isinstance(payload, dict):
        return False
    attributes = payload.get("attributes")
    channels = attributes.get("subscriptions") if isinstance(attributes, dict) else None
    if not isinstance(channels, dict) or not channels:
        return False
    for kinds in channels.values():
        if not isinstance(kinds, dict) or not kinds:
            return False
        for consent in kinds.values():
            at = consent.get("consented_at") if isinstance(consent, dict) else None
            moment = _aware_moment(at)
            if moment is None or not moment < cutoff:
                return False
    return True


def _aware_moment(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else None
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


@dataclass(frozen=True, slots=True)
class EncodedItem:
    """One item as JSON bytes, plus the group it belongs to (events group per profile).

    Catalog items also carry the ids of the categories they name (which must exist before
    the item refers to them) and, for an upsert, the item to create if the update finds
    none (``fallback``, JSON of the create endpoint's item).
    """

    json: bytes
    group_key: bytes | None = None
    group_overhead: int = 0
    requires: tuple[str, ...] = ()
    fallback: bytes | None = None

    def cost(self, groups: set[bytes] | None) -> int:
        """Bytes this item adds to a body that already holds ``groups``."""
        if self.group_key is None or (groups is not None and self.group_key in groups):
            return len(self.json) + _ITEM_OVERHEAD
        return len(self.json) + _ITEM_OVERHEAD + self.group_overhead


class HasItem(Protocol):
    """Anything carrying an encoded item (batch entries)."""

    @property
    def item(self) -> EncodedItem: ...


_ITEM_OVERHEAD = 40


def _exact(encoded: bytes) -> bytes:
    """A copy of orjson's output that owns only its length.

    orjson's bytes keep the 4 KiB buffer they were written into; items wait in batches, so
    without the copy every waiting event would pin 4 KiB (measured: 737 MB for a backlog).
    """
    return bytes(memoryview(encoded))


class BodyFormat(Protocol):
    """How one endpoint's items become a request body."""

    envelope_bytes: int

    def encode(self, operation: Operation) -> EncodedItem: ...

    def assemble(
        self, entries: Sequence[HasItem], group: str | None
    ) -> tuple[bytes, list[list[int]]]:
        """The body, and the entry indexes in body order (one list per group)."""
        ...

    def entries_for_pointer(self, pointer: str, layout: list[list[int]]) -> list[int] | None:
        """Indexes of the entries a 400 error pointer names; None if it names no item."""
        ...


class EventsBodyFormat:
    """Bulk Create Events: events grouped under their profile."""

    _HEAD = b'{"data":{"type":"event-bulk-create-job","attributes":{"events-bulk-create":{"data":['
    _TAIL = b"]}}}}"
    _GROUP_HEAD = (
        b'{"type":"event-bulk-create","attributes":{"profile":{"data":'
        b'{"type":"profile","attributes":'
    )
    _GROUP_MID = b'}},"events":{"data":['
    _GROUP_TAIL = b"]}}}"
    _EVENT_HEAD = b'{"type":"event","attributes":'
    _POINTER = re.compile(r"^/data/attributes/events-bulk-create/data/(\d+)(?:/attributes/(\w+))?")
    _EVENT_POINTER = re.compile(r"^/attributes/events/data/(\d+)")

    _BACKFILL_GROUP_HEAD = _GROUP_HEAD.replace(
        b'"attributes":{', b'"attributes":{"backfill":true,', 1
    )

    envelope_bytes = len(_HEAD) + len(_TAIL)

    def __init__(self, *, backfill: bool = False) -> None:
        # History: the flag at the entry and on every event (RULES.md E22 names both).
        self._backfill = backfill
        self._group_head = self._BACKFILL_GROUP_HEAD if backfill else self._GROUP_HEAD

    def encode(self, operation: Operation) -> EncodedItem:
        payload = operation.payload
        if not isinstance(payload, EventPayload):
            raise TypeError("Bulk Create Events takes EventPayload operations")
        # Sorted keys: the same profile always encodes to the same bytes, so it groups.
        profile = _exact(orjson.dumps(payload.profile, option=orjson.OPT_SORT_KEYS))
        overhead = len(profile) + len(self._group_head) + len(self._GROUP_MID) + 8
        event = {**payload.event, "backfill": True} if self._backfill else payload.event
        return EncodedItem(_exact(orjson.dumps(event)), profile, overhead)

    def assemble(
        self, entries: Sequence[HasItem], group: str | None = None
    ) -> tuple[bytes, list[list[int]]]:
        groups: dict[bytes, list[int]] = {}
        for index, entry in enumerate(entries):
            key = entry.item.group_key or b"{}"
            groups.setdefault(key, []).append(index)
        parts = [self._HEAD]
        for number, (profile, indexes) in enumerate(groups.items()):
            if number:
                parts.append(b",")
            parts += (self._group_head, profile, self._GROUP_MID)
            parts.append(b",".join(self._EVENT_HEAD + entries[i].item.json + b"}" for i in indexes))
            parts.append(self._GROUP_TAIL)
        parts.append(self._TAIL)
        return b"".join(parts), list(groups.values())

    def entries_for_pointer(self, pointer: str, layout: list[list[int]]) -> list[int] | None:
        match = self._POINTER.match(pointer)
        if match is None:
            return None
        group = int(match.group(1))
        if group >= len(layout):
            return None
        rest = pointer[match.start(2) - len("/attributes/") :] if match.group(2) else ""
        event = self._EVENT_POINTER.match(rest)
        if event is not None:
            position = int(event.group(1))
            return [layout[group][position]] if position < len(layout[group]) else None
        # A pointer into the profile (or the group itself) names every event of the group.
        return list(layout[group])


class ResourceListBodyFormat:
    """Endpoints whose body is one list of resources (profiles, subscriptions, catalog items).

    The operation's payload is the resource without its ``type``; ``with_list`` endpoints
    take the batch's group as the list relationship (one list per request).
    """

    def __init__(
        self,
        job_type: str,
        collection: str,
        item_type: str,
        *,
        with_list: bool,
        job_attributes: bytes = b"",
    ) -> None:
        self._head = (
            b'{"data":{"type":"'
            + job_type.encode()
            + b'","attributes":{'
            + job_attributes
            + b'"'
            + collection.encode()
            + b'":{"data":['
        )
        self._item_head = b'{"type":"' + item_type.encode() + b'",'
        self._with_list = with_list
        self._pointer = re.compile(r"^/data/attributes/" + re.escape(collection) + r"/data/(\d+)")
        # Tail with the list relationship is at most this much longer than without it.
        self.envelope_bytes = len(self._head) + 200

    def encode(self, operation: Operation) -> EncodedItem:
        payload = operation.payload
        if isinstance(payload, EventPayload):
            raise TypeError(f"{operation.endpoint.name} takes resource payloads, not events")
        resource = orjson.dumps(payload)
        # {"attributes": ...} -> {"type":"profile","attributes": ...}: splice, don't re-encode.
        return EncodedItem(self._item_head + resource[1:])

    def assemble(
        self, entries: Sequence[HasItem], group: str | None = None
    ) -> tuple[bytes, list[list[int]]]:
        tail = b"]}}"
        if self._with_list and group is not None:
            tail += (
                b',"relationships":{"list":{"data":{"type":"list","id":'
                + orjson.dumps(group)
                + b"}}}"
            )
        body = self._head + b",".join(entry.item.json for entry in entries) + tail + b"}}"
        return body, [[index] for index in range(len(entries))]

    def entries_for_pointer(self, pointer: str, layout: list[list[int]]) -> list[int] | None:
        match = self._pointer.match(pointer)
        if match is None:
            return None
        index = int(match.group(1))
        return [index] if index < len(layout) else None


class LiveSubscribeBodyFormat(ResourceListBodyFormat):
    """Subscribe, live: each consent without ``consented_at`` (RULES.md S2)."""

    def __init__(self) -> None:
        super().__init__(
            "profile-subscription-bulk-create-job", "profiles", "profile", with_list=True
        )

    def encode(self, operation: Operation) -> EncodedItem:
        payload = operation.payload
        if isinstance(payload, dict):
            payload = _without_consent_times(payload)
        return super().encode(Operation(operation.endpoint, payload, operation.dedup_key))


def _without_consent_times(resource: dict[str, Any]) -> dict[str, Any]:
    attributes = resource.get("attributes")
    if not isinstance(attributes, dict):
        return resource
    channels = attributes.get("subscriptions")
    if not isinstance(channels, dict):
        return resource
    stripped: dict[str, Any] = {}
    for channel, kinds in channels.items():
        if not isinstance(kinds, dict):
            stripped[channel] = kinds
            continue
        stripped[channel] = {
            kind: {k: v for k, v in consent.items() if k != "consented_at"}
            if isinstance(consent, dict)
            else consent
            for kind, consent in kinds.items()
        }
    return {**resource, "attributes": {**attributes, "subscriptions": stripped}}


def _formats(history: History) -> dict[Endpoint, BodyFormat]:
    subscribe: BodyFormat = (
        ResourceListBodyFormat(
            "profile-subscription-bulk-create-job",
            "profiles",
            "profile",
            with_list=True,
            job_attributes=b'"historical_import":true,',
        )
        if history.historical_consent
        else LiveSubscribeBodyFormat()
    )
    return {
        **_SHARED,
        Endpoint.EVENTS: EventsBodyFormat(backfill=history.backfill),
        Endpoint.SUBSCRIBE: subscribe,
    }


class CatalogItemBodyFormat(ResourceListBodyFormat):
    """Catalog item create and update: items that name categories, and upserts' fallbacks."""

    def __init__(self, job_type: str) -> None:
        super().__init__(job_type, "items", "catalog-item", with_list=False)

    def encode(self, operation: Operation) -> EncodedItem:
        item = super().encode(operation)
        payload = operation.payload
        assert not isinstance(payload, EventPayload)  # super().encode refused events
        fallback = operation.fallback
        return EncodedItem(
            item.json,
            requires=category_ids(payload),
            fallback=self._item_head + orjson.dumps(fallback)[1:] if fallback else None,
        )


def category_ids(payload: dict[str, Any]) -> tuple[str, ...]:
    """The catalog category ids a catalog item payload names (``relationships.categories``)."""
    relationships = payload.get("relationships")
    categories = relationships.get("categories") if isinstance(relationships, dict) else None
    data = categories.get("data") if isinstance(categories, dict) else None
    if not isinstance(data, list):
        return ()
    return tuple(
        ref["id"] for ref in data if isinstance(ref, dict) and isinstance(ref.get("id"), str)
    )


_SHARED: dict[Endpoint, BodyFormat] = {
    Endpoint.PROFILES: ResourceListBodyFormat(
        "profile-bulk-import-job", "profiles", "profile", with_list=False
    ),
    Endpoint.UNSUBSCRIBE: ResourceListBodyFormat(
        "profile-subscription-bulk-delete-job", "profiles", "profile", with_list=True
    ),
    Endpoint.CATALOG_CREATE: CatalogItemBodyFormat("catalog-item-bulk-create-job"),
    Endpoint.CATALOG_UPDATE: CatalogItemBodyFormat("catalog-item-bulk-update-job"),
    Endpoint.CATALOG_DELETE: ResourceListBodyFormat(
        "catalog-item-bulk-delete-job", "items", "catalog-item", with_list=False
    ),
}


_BY_HISTORY: dict[History, dict[Endpoint, BodyFormat]] = {}


def body_format(endpoint: Endpoint, history: History = LIVE) -> BodyFormat:
    """The body format of ``endpoint`` for live traffic or ``history``."""
    formats = _BY_HISTORY.get(history)
    if formats is None:
        formats = _BY_HISTORY[history] = _formats(history)
    return formats[endpoint]
