"""The values that travel between pipeline steps.

A Kafka message (anything shaped like :class:`KafkaMessage`) is decoded into a
:class:`DecodedRecord`, translated into :class:`Operation` objects (one per Klaviyo item it
produces), and each operation carries the ticket of its message
(:class:`~consumer.commit.MessageTicket`) through batching and delivery, so the last step knows
which offset it completes.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import KafkaError

from consumer.endpoints import Endpoint

# The account a message goes to when no routing is configured (see consumer.routing).
DEFAULT_ACCOUNT = "default"

JSONDict = dict[str, Any]


def header_pairs(headers: Headers | None) -> list[tuple[str, bytes | str | None]]:
    """A message's headers as (name, value) pairs, in order."""
    if headers is None:
        return []
    return list(headers.items()) if isinstance(headers, dict) else list(headers)


# As confluent-kafka gives them: a list of pairs (a dict when a producer was given one).
Headers = list[tuple[str, bytes | str | None]] | dict[str, bytes | str | None]


class KafkaMessage(Protocol):
    """What the pipeline reads of a polled message (confluent_kafka.Message has it all)."""

    def topic(self) -> str | None: ...

    def partition(self) -> int | None: ...

    def offset(self) -> int | None: ...

    def key(self) -> bytes | None: ...

    def value(self) -> bytes | None: ...

    def headers(self) -> Headers | None: ...

    def timestamp(self) -> tuple[int, int]: ...

    def error(self) -> KafkaError | None: ...


@dataclass(frozen=True, slots=True)
class DecodedRecord:
    """One decoded message value.

    ``record_name`` is the catalog's full name of the record (the reader schema's name, which
    differs from the writer's only through an alias). Exactly one of ``schema_id`` (Confluent
    framing) and ``fingerprint`` (single-object framing, 8 bytes) is set.
    """

    record_name: str
    data: dict[str, Any]
    schema_id: int | None
    fingerprint: bytes | None


@dataclass(frozen=True, slots=True)
class EventPayload:
    """One Klaviyo event with the profile it belongs to (Bulk Create Events groups by profile).

    ``profile`` holds profile attributes (email, phone_number, external_id, names, location...),
    ``event`` holds the event attributes (properties, metric, time, value, unique_id...).
    """

    profile: JSONDict
    event: JSONDict


@dataclass(frozen=True, slots=True)
class Operation:
    """One item for one Klaviyo endpoint, produced from one Kafka message.

    ``payload`` per endpoint (the body formats in :mod:`consumer.bodies` wrap it):

    - ``EVENTS``: an :class:`EventPayload`.
    - every other endpoint: the item's JSON:API resource object without its ``type``, i.e. a
      dict with ``attributes`` and, where the endpoint has them, ``id``, ``relationships``
      or ``meta``. Examples:

      - ``PROFILES``: ``{"attributes": {"email": ..., "first_name": ..., "location": {...},
        "properties": {...}}}``
      - ``SUBSCRIBE``: ``{"attributes": {"email": ..., "subscriptions": {"email":
        {"marketing": {"consent": "SUBSCRIBED", "consented_at": ...}}}}}``, ``group`` = list id
      - ``UNSUBSCRIBE``: ``{"attributes": {"email": ..., "subscriptions": {"email":
        {"marketing": {"consent": "UNSUBSCRIBED"}}}}}``, ``group`` = list id
      - ``CATALOG_CREATE``: ``{"attributes": {"external_id": ..., "integration_type":
        "$custom", "catalog_type": "$default", "title": ..., "description": ..., "url": ...,
        "price": ..., "image_full_url": ...}}``
      - ``CATALOG_UPDATE``: ``{"id": "$custom:::$default:::<external id>", "attributes": {...}}``
      - ``CATALOG_DELETE``: ``{"id": "$custom:::$default:::<external id>"}``

    ``dedup_key`` identifies the item as Klaviyo does (e-mail addresses lower-cased): Klaviyo
    refuses a request that repeats it, so a batch holds one item per key. For endpoints that
    set state (profiles, consent, catalog items) it is also the state's key, which orders
    deliveries: see :attr:`state_key`.
    """

    endpoint: Endpoint
    payload: EventPayload | JSONDict
    dedup_key: tuple[str, ...] | None = None
    # Items with different groups never share a request (e.g. the list of a subscription).
    group: str | None = None
    # What to create when Klaviyo's job reports that the item to update does not exist
    # (a catalog upsert: update first, create only the items that turn out to be new).
    fallback: JSONDict | None = None
    # An unsubscribe only of the list's members (rule ``unsubscribe_scope: list``): the
    # sender leaves out people not in the list, whom Klaviyo would unsubscribe globally.
    list_only: bool = False

    @property
    def state_key(self) -> tuple[Hashable, ...] | None:
        """The key of the Klaviyo state this operation sets, or None for an occurrence.

        Subscribe and unsubscribe share one kind ("consent"), catalog create, update and
        delete another ("catalog"), so operations on the same state are ordered across
        endpoints; events have none.
        """
        kind = self.endpoint.spec.state
        if kind is None or self.dedup_key is None:
            return None
        return (kind, *self.dedup_key)
