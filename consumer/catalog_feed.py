"""The custom catalog feed: the shop's products as the JSON file Klaviyo fetches.

Klaviyo can take a custom catalog as a hosted JSON feed instead of through the Catalog API
(never both, RULES.md D21). The feed is one flat JSON list, one object per item, with
Klaviyo's field names (``id``, ``title``, ``link``, ``description``, ``price``,
``image_link``, ``categories``, ``inventory_quantity``, ``inventory_policy``); a feed file may
not exceed 100 MB.

This module is the pure part of ``kafka-klaviyo catalog-feed``:

- :func:`feed_item` maps one ``ProductUpserted`` record to a feed item;
- :class:`CatalogState` keeps the latest state per product id: an upsert sets it (again, after
  a delete), a delete or an unpublished product removes it, a tombstone deletes the product
  whose id is the message key;
- :func:`render` is the feed's bytes (items sorted by id, so the same state is the same
  bytes whatever order the partitions were read in) and :func:`check_size` the 100 MB limit;
- :func:`entity_tag` is the HTTP ``ETag`` of a feed (it changes exactly when the bytes do),
  :func:`write_atomically` puts a feed in place so that a reader sees the old or the new file,
  never part of one, and :class:`PublishedFeed` is the feed a server hands out.

Reading the topic, serving and the command itself are in :mod:`consumer.catalog_feed_command`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from consumer.errors import KafkaKlaviyoError

PRODUCT_UPSERTED = "shop.events.ProductUpserted"
PRODUCT_DELETED = "shop.events.ProductDeleted"
PRODUCT_RECORDS = frozenset({PRODUCT_UPSERTED, PRODUCT_DELETED})

#: Klaviyo's feed size limit, "100 MB", read as the stricter decimal megabytes.
FEED_LIMIT_BYTES = 100_000_000

#: Klaviyo's ``inventory_policy``: 1 keeps an out-of-stock item out of product feeds and
#: recommendation blocks, 2 shows it whatever its stock (Klaviyo's default).
HIDE_OUT_OF_STOCK = 1
SHOW_OUT_OF_STOCK = 2


class FeedTooLargeError(KafkaKlaviyoError):
    """The feed is over the size limit; ``str(err)`` is one line naming both sizes."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"catalog feed is {size:,} bytes, over the feed limit of {limit:,} bytes"
            + (" (Klaviyo's 100 MB)" if limit == FEED_LIMIT_BYTES else "")
        )


def feed_item(record: Mapping[str, Any], *, out_of_stock_policy: int = HIDE_OUT_OF_STOCK) -> dict[
    str, Any
]:
    """The feed item of a decoded ``ProductUpserted`` record (see the README for the table).

    Klaviyo refuses blank required fields: an empty description becomes the title, and a
    product without an image has no ``image_link`` rather than an empty one. An untracked
    inventory (``inventory_quantity`` null) has no quantity and Klaviyo's default policy."""
    item: dict[str, Any] = {
        "id": record["product_id"],
        "title": record["title"],
        "link": record["url"],
        "description": record["description"] or record["title"],
        "price": _number(record["price"]["amount"]),
    }
    if record.get("image_url"):
        item["image_link"] = record["image_url"]
    item["categories"] = list(record.get("categories") or ())
    quantity = record.get("inventory_quantity")
    if quantity is not None:
        item["inventory_quantity"] = quantity
        item["inventory_policy"] = out_of_stock_policy
    else:
        item["inventory_policy"] = SHOW_OUT_OF_STOCK
    return item


def _number(amount: Any) -> int | float:
    """A decimal amount as a JSON number: whole amounts as integers (10, not 10.0)."""
    value = Decimal(amount) if not isinstance(amount, Decimal) else amount
    return int(value) if value == value.to_integral_value() else float(value)


class CatalogState:
    """The latest feed item per product id, from product records in Kafka order."""

    def __init__(self, *, out_of_stock_policy: int = HIDE_OUT_OF_STOCK) -> None:
        self._items: dict[str, dict[str, Any]] = {}
        self._policy = out_of_stock_policy
        #: Bumped by every change of the items, so a publisher knows when to render again.
        self.version = 0

    def __len__(self) -> int:
        return len(self._items)

    def apply(self, record_name: str, data: Mapping[str, Any]) -> bool:
        """Apply one decoded record; whether the feed changed. Other record types are
        ignored (False)."""
        if record_name == PRODUCT_UPSERTED:
            if not data.get("published", True):
                # Hidden in the shop: not an item to recommend in e-mails either.
                return self.remove(str(data["product_id"]))
            item = feed_item(data, out_of_stock_policy=self._policy)
            if self._items.get(item["id"]) == item:
                return False
            self._items[item["id"]] = item
            self.version += 1
            return True
        if record_name == PRODUCT_DELETED:
            return self.remove(str(data["product_id"]))
        return False

    def remove(self, product_id: str) -> bool:
        """Remove a product (a delete, an unpublished product, a tombstone); whether it was
        in the feed."""
        if self._items.pop(product_id, None) is None:
            return False
        self.version += 1
        return True

    def items(self) -> list[dict[str, Any]]:
        """The feed's items, sorted by id."""
        return [self._items[key] for key in sorted(self._items)]


def render(state: CatalogState) -> bytes:
    """The feed's bytes: a JSON list of the items, sorted by id."""
    return orjson.dumps(state.items())


def check_size(body: bytes, limit: int = FEED_LIMIT_BYTES) -> None:
    """FeedTooLargeError when ``body`` is over ``limit`` bytes."""
    if len(body) > limit:
        raise FeedTooLargeError(len(body), limit)


def entity_tag(body: bytes) -> str:
    """A strong HTTP entity tag of the feed's bytes (quoted, as sent in ``ETag``)."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def write_atomically(path: Path, body: bytes) -> None:
    """Replace ``path`` with ``body``: a temporary file in the same directory, flushed to
    disk, then renamed over it, so a reader (a web server handing it to Klaviyo) opens the
    old file or the new one, never half of one. OSError on failure; the old file stays."""
    directory = path.parent
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(body)
            out.flush()
            os.fsync(out.fileno())
        # mkstemp makes it owner-only; the feed is public (Klaviyo fetches it from a web server).
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


@dataclass(frozen=True, slots=True)
class Feed:
    """One rendered feed: its bytes, its entity tag and how many items it holds."""

    body: bytes
    etag: str
    items: int

    @classmethod
    def of(cls, state: CatalogState, *, limit: int = FEED_LIMIT_BYTES) -> Feed:
        """Render ``state``; FeedTooLargeError over ``limit``."""
        body = render(state)
        check_size(body, limit)
        return cls(body, entity_tag(body), len(state))


class PublishedFeed:
    """The feed a server hands out: swapped whole, read by the server's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._feed: Feed | None = None

    def publish(self, feed: Feed) -> None:
        with self._lock:
            self._feed = feed

    def current(self) -> Feed | None:
        """The last published feed; None before the first build finished."""
        with self._lock:
            return self._feed


def matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (weak comparison, ``*`` included),
    so the answer is 304 Not Modified."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False
