"""Batching: operations for one (account, endpoint, group) collected into bulk requests.

A batch closes when it reaches the endpoint's item count, when one more item would pass its
byte limit, or when its linger time has passed. Each item is JSON-encoded once, when it is
added; the request body is assembled from those bytes (see :mod:`consumer.bodies`).
Repeats of a dedup key inside one batch are folded into one item, because one repeat makes
Klaviyo fail the whole request: events keep the first (as Klaviyo would), upserts of profiles
and catalog items keep the latest state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from consumer.bodies import EncodedItem, body_format
from consumer.commit import MessageTicket
from consumer.endpoints import Endpoint
from consumer.messages import Operation


@dataclass(eq=False, slots=True)
class BatchEntry:
    """One item of a batch, and the messages waiting for it (several after dedup)."""

    item: EncodedItem
    tickets: list[MessageTicket]


@dataclass(eq=False, slots=True)
class Batch:
    """Items for one bulk request to one endpoint of one Klaviyo account."""

    account: str
    endpoint: Endpoint
    group: str | None
    opened_at: float
    entries: list[BatchEntry] = field(default_factory=list)
    size_bytes: int = 0
    # Profiles already in the body (events are grouped under their profile).
    profile_keys: set[bytes] = field(default_factory=set)
    by_dedup_key: dict[tuple[str, ...], BatchEntry] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.entries)


class Batcher:
    """Open batch of one (account, endpoint, group); hands back batches ready to send."""

    def __init__(
        self, account: str, endpoint: Endpoint, linger_s: float, group: str | None = None
    ) -> None:
        self.account = account
        self.endpoint = endpoint
        self.group = group
        self._format = body_format(endpoint)
        # Klaviyo keeps the first of repeated events, but for profile and catalog upserts
        # the last state is the true one.
        self._keep_latest = endpoint is not Endpoint.EVENTS
        self._max_items = endpoint.spec.max_items
        self._max_bytes = endpoint.spec.max_bytes - self._format.envelope_bytes
        self._linger_s = linger_s
        self._open: Batch | None = None

    def add(self, operation: Operation, ticket: MessageTicket) -> Batch | None:
        """Add one operation; returns the batch it closed, if adding it closed one."""
        batch = self._open
        key = operation.dedup_key
        if batch is not None and key is not None:
            twin = batch.by_dedup_key.get(key)
            if twin is not None:
                twin.tickets.append(ticket)
                if self._keep_latest:
                    # Upserts carry full state: the newer message's item wins.
                    item = self._format.encode(operation)
                    batch.size_bytes += len(item.json) - len(twin.item.json)
                    twin.item = item
                return None
        item = self._format.encode(operation)
        cost = item.cost(batch.profile_keys if batch is not None else None)
        closed = None
        if batch is not None and (
            len(batch.entries) >= self._max_items or batch.size_bytes + cost > self._max_bytes
        ):
            closed, batch = batch, None
        if batch is None:
            batch = self._open = Batch(self.account, self.endpoint, self.group, time.monotonic())
            cost = item.cost(None)
        entry = BatchEntry(item, [ticket])
        batch.entries.append(entry)
        batch.size_bytes += cost
        if item.group_key is not None:
            batch.profile_keys.add(item.group_key)
        if key is not None:
            batch.by_dedup_key[key] = entry
        if closed is None and len(batch.entries) >= self._max_items:
            # Full: send it now rather than wait for the next item or the linger.
            self._open = None
            return batch
        return closed

    def take_due(self, now: float) -> Batch | None:
        """The open batch if its linger time has passed."""
        batch = self._open
        if batch is not None and now - batch.opened_at >= self._linger_s:
            self._open = None
            return batch
        return None

    def take_open(self) -> Batch | None:
        """The open batch regardless of linger (shutdown and revoke flush everything)."""
        batch, self._open = self._open, None
        return batch

    @property
    def open_batch(self) -> Batch | None:
        return self._open
