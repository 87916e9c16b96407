"""Request bodies of Klaviyo's bulk endpoints, assembled from items encoded once.

Each endpoint has a :class:`BodyFormat` that encodes one operation to JSON bytes when it joins a
batch (so the batcher knows its size) and later joins those bytes into the JSON:API body. It
also maps a JSON pointer from a 400 response back to the items it names, which is how a bad
request is narrowed to the offending items.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import orjson

from consumer.endpoints import Endpoint
from consumer.messages import EventPayload, Operation

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class EncodedItem:
    """One item as JSON bytes, plus the group it belongs to (events group per profile)."""

    json: bytes
    group_key: bytes | None = None
    group_overhead: int = 0

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


class BodyFormat(Protocol):
    """How one endpoint's items become a request body."""

    envelope_bytes: int

    def encode(self, operation: Operation) -> EncodedItem: ...

    def assemble(self, entries: Sequence[HasItem]) -> tuple[bytes, list[list[int]]]:
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

    envelope_bytes = len(_HEAD) + len(_TAIL)

    def encode(self, operation: Operation) -> EncodedItem:
        payload = operation.payload
        if not isinstance(payload, EventPayload):
            raise TypeError("Bulk Create Events takes EventPayload operations")
        # Sorted keys: the same profile always encodes to the same bytes, so it groups.
        profile = orjson.dumps(payload.profile, option=orjson.OPT_SORT_KEYS)
        overhead = len(profile) + len(self._GROUP_HEAD) + len(self._GROUP_MID) + 8
        return EncodedItem(orjson.dumps(payload.event), profile, overhead)

    def assemble(self, entries: Sequence[HasItem]) -> tuple[bytes, list[list[int]]]:
        groups: dict[bytes, list[int]] = {}
        for index, entry in enumerate(entries):
            key = entry.item.group_key or b"{}"
            groups.setdefault(key, []).append(index)
        parts = [self._HEAD]
        for number, (profile, indexes) in enumerate(groups.items()):
            if number:
                parts.append(b",")
            parts += (self._GROUP_HEAD, profile, self._GROUP_MID)
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


_FORMATS: dict[Endpoint, BodyFormat] = {Endpoint.EVENTS: EventsBodyFormat()}


def body_format(endpoint: Endpoint) -> BodyFormat:
    """The body format of ``endpoint``."""
    try:
        return _FORMATS[endpoint]
    except KeyError:
        raise NotImplementedError(f"no body format for {endpoint.name} yet") from None
