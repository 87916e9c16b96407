"""Catalog categories exist before an item refers to them: each is created once per account.

A catalog item names its categories by id (``$custom:::$default:::<name>``); Klaviyo fails an
item whose category does not exist. Before a catalog create or update goes out, the sender
asks :class:`Categories` for the ids its items name: ids not seen yet are created (``POST
/api/catalog-categories``, a 409 meaning it exists already) and remembered, so steady state
costs no request at all. A category Klaviyo refuses is remembered too, with its error: the
items naming it are refused with it (dead-lettered) rather than sent to fail in their job.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

import orjson

from consumer.deliver.client import Answer, KlaviyoClient
from consumer.errors import BadRequestError, RejectedItemError

PATH = "/api/catalog-categories"
PREFIX = "$custom:::$default:::"
# Klaviyo's limits of Create Catalog Category (x-klaviyo-ratelimit).
BURST_PER_SECOND = 75
STEADY_PER_MINUTE = 750

# (account, the request, cancelled) -> the answer; retried through outages (Sender.call).
Call = Callable[[str, Callable[[KlaviyoClient], Answer], threading.Event], Answer]


class Categories:
    """The categories known to exist, per account; creates the missing ones once each."""

    def __init__(self, call: Call) -> None:
        self._call = call
        self._lock = threading.Lock()
        self._known: set[tuple[str, str]] = set()
        self._refused: dict[tuple[str, str], RejectedItemError] = {}
        # One creator per (account, id): other threads needing it wait for its answer.
        self._creating: dict[tuple[str, str], threading.Event] = {}

    def ensure(
        self, account: str, ids: Iterable[str], cancelled: threading.Event
    ) -> dict[str, RejectedItemError]:
        """Make every category of ``ids`` exist in ``account``; the ones Klaviyo refused,
        with their error. Blocks through outages (DeliveryAborted when cancelled)."""
        refused: dict[str, RejectedItemError] = {}
        for category in dict.fromkeys(ids):
            key = (account, category)
            while True:
                with self._lock:
                    if key in self._known:
                        break
                    if key in self._refused:
                        refused[category] = self._refused[key]
                        break
                    waiting = self._creating.get(key)
                    if waiting is None:
                        done = self._creating[key] = threading.Event()
                if waiting is not None:
                    waiting.wait()
                    continue
                try:
                    error = self._create(account, category, cancelled)
                finally:
                    with self._lock:
                        del self._creating[key]
                    done.set()
                with self._lock:
                    if error is None:
                        self._known.add(key)
                    else:
                        self._refused[key] = error
                        refused[category] = error
                break
        return refused

    def known(self, account: str) -> int:
        with self._lock:
            return sum(1 for known_account, _ in self._known if known_account == account)

    def _create(
        self, account: str, category: str, cancelled: threading.Event
    ) -> RejectedItemError | None:
        external_id = category.removeprefix(PREFIX)
        body = orjson.dumps(
            {
                "data": {
                    "type": "catalog-category",
                    "attributes": {
                        "external_id": external_id,
                        "name": external_id,
                        "integration_type": "$custom",
                        "catalog_type": "$default",
                    },
                }
            }
        )
        try:
            self._call(account, lambda client: client.create(PATH, body), cancelled)
        except BadRequestError as exc:
            first = exc.errors[0] if exc.errors else {}
            return RejectedItemError(
                f"Klaviyo refused the item's category: {first.get('detail') or first.get('title')}",
                http_status=exc.http_status,
                detail={"code": first.get("code"), "category": external_id},
            )
        return None
