"""The values that travel between pipeline steps.

A Kafka message is decoded into a record, translated into :class:`Operation` objects (one per
Klaviyo item it produces), and each operation carries the :class:`~consumer.commit.MessageTicket`
of its message through batching and delivery, so the last step knows which offset it completes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from consumer.endpoints import Endpoint

# The account a message goes to when no routing is configured (see consumer.routing).
DEFAULT_ACCOUNT = "default"

JSONDict = dict[str, Any]


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
    """

    endpoint: Endpoint
    payload: EventPayload | JSONDict
    # Klaviyo refuses a request that repeats this key; the batcher keeps one per batch.
    dedup_key: tuple[str, ...] | None = None
    # Items with different groups never share a request (e.g. the list of a subscription).
    group: str | None = None
