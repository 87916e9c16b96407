"""The batch step: operations collected into bulk requests, in an order that keeps state right.

:class:`Batching` keeps one open batch per (account, endpoint, group). A batch closes when it
reaches the endpoint's item count, when one more item would pass its byte limit, or when its
linger time has passed. Each item is JSON-encoded once, when it is added; the request body is
assembled from those bytes (see :mod:`consumer.bodies`).

Repeats of a dedup key inside one batch are folded into one item, because one repeat makes
Klaviyo fail the whole request: events keep the first (as Klaviyo would), profile, consent and
catalog upserts keep the latest state. A folded repeat whose bytes differ keeps its own item as
a *twin*: if Klaviyo refuses the item sent, the twin is sent on its own, so a message is never
dead-lettered for another message's content.

Latest state wins: operations that set state (:attr:`~consumer.messages.Operation.state_key`:
a profile, a consent per list, channel and person, a catalog item) must reach Klaviyo in Kafka
order, across endpoints (an unsubscribe after a subscribe) and under retries. When an operation
joins a batch, every other unfinished batch holding the same key for an earlier message becomes
a batch it must wait for (``Batch.after``); the delivery scheduler sends a batch only once
those have finished. A batch only ever waits for batches that are already closed (an open one
holding the key is closed there and then), so the waits never form a cycle.

Consent sent as a historical import (a replay, or in a live run consent older than
``rules.consent.historical_after_s``) never shares a request with live consent:
``historical_import`` is an attribute of the whole request. Its batches have a key of their own
(:func:`batch_key`: the list wrapped in :class:`HistoricalImport`), and since consent keeps its
state key whichever kind it is sent as, the order above holds between the two kinds as it holds
between subscribe and unsubscribe.

An unsubscribe of the list's members only (rule ``unsubscribe_scope: list``,
:attr:`~consumer.messages.Operation.list_only`) is batched apart from Klaviyo's plain,
possibly global, unsubscribes the same way (the list wrapped in :class:`ListOnly`): the sender
asks Klaviyo which people of such a batch are in the list before it posts it. Its state key is
the person's too, so it keeps its place among the person's other consent changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from consumer.bodies import (
    LIVE,
    EncodedItem,
    History,
    as_historical_consent,
    body_format,
    consent_is_older,
)
from consumer.commit import MessageTicket, PartitionProgress
from consumer.endpoints import Endpoint
from consumer.messages import Operation


@dataclass(frozen=True, slots=True)
class HistoricalImport:
    """The group part of a batch key for Subscribe items sent as a historical import.

    Never equal to a list id, so these items never share a request (or the scheduler's
    per-key slots) with live consent for the same list."""

    list_id: str | None


@dataclass(frozen=True, slots=True)
class ListOnly:
    """The group part of a batch key for Unsubscribe items of the list's members only.

    Never equal to a list id, so they never share a request (or the scheduler's per-key
    slots) with plain unsubscribes of the same list, which Klaviyo applies globally to people
    not in the list."""

    list_id: str | None


BatchKey = tuple[str, Endpoint, str | HistoricalImport | ListOnly | None]
StateKey = tuple[Hashable, ...]


def batch_key(
    account: str,
    endpoint: Endpoint,
    group: str | None,
    history: History,
    list_only: bool = False,
) -> BatchKey:
    """The key of the batches ``endpoint``'s items of ``group`` go to when sent as ``history``
    (``list_only``: unsubscribes of the list's members only)."""
    if history.historical_consent and endpoint is Endpoint.SUBSCRIBE:
        return (account, endpoint, HistoricalImport(group))
    if list_only and endpoint is Endpoint.UNSUBSCRIBE:
        return (account, endpoint, ListOnly(group))
    return (account, endpoint, group)


@dataclass(eq=False, slots=True)
class BatchEntry:
    """One item of a batch, the messages it stands for, and folded repeats with other bytes.

    ``tickets`` are the messages whose own item is ``item`` (a repeat with the same bytes
    joins them); ``twins`` are repeats whose item differs, in arrival order.
    """

    item: EncodedItem
    tickets: list[MessageTicket]
    twins: list[tuple[MessageTicket, EncodedItem]] = field(default_factory=list)

    @property
    def live(self) -> bool:
        """Some message behind it still belongs to this consumer (not revoked or lost)."""
        # Plain loops: asked of every entry before every request.
        for ticket in self.tickets:
            if not ticket.progress.released:
                return True
        return any(not ticket.progress.released for ticket, _ in self.twins)

    def all_tickets(self) -> Iterator[MessageTicket]:
        yield from self.tickets
        for ticket, _ in self.twins:
            yield ticket

    def successor(self, *, keep_latest: bool) -> BatchEntry | None:
        """The entry to send once Klaviyo refused this one's item: its twins, or None."""
        if not self.twins:
            return None
        twins = list(self.twins)
        ticket, item = twins.pop() if keep_latest else twins.pop(0)
        tickets = [ticket]
        rest = []
        for twin, twin_item in twins:
            if twin_item.json == item.json:
                tickets.append(twin)
            else:
                rest.append((twin, twin_item))
        return BatchEntry(item, tickets, rest)


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
    # The partitions its messages come from: a revoke or loss concerns it only if it names one.
    partitions: set[PartitionProgress] = field(default_factory=set)
    # State keys of the operations it holds, and the closed batches it must wait for.
    state_keys: set[StateKey] = field(default_factory=set)
    after: set[Batch] = field(default_factory=set)
    dependents: list[Batch] = field(default_factory=list)
    # Live traffic or history: picks the body format (see consumer.bodies).
    history: History = LIVE
    # Unsubscribes of the list's members only: the sender checks membership first.
    list_only: bool = False

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def key(self) -> BatchKey:
        return batch_key(self.account, self.endpoint, self.group, self.history, self.list_only)

    @property
    def keep_latest(self) -> bool:
        """Folded repeats keep the latest item (state), not the first (events)."""
        return self.endpoint.spec.state is not None

    @property
    def touches_released(self) -> bool:
        """Some of its messages come from a partition that was revoked or lost."""
        return any(progress.released for progress in self.partitions)

    def drop_released(self) -> int:
        """Remove entries no message of ours stands behind any more; how many are left."""
        if not self.touches_released:
            return len(self.entries)
        self.entries = [entry for entry in self.entries if entry.live]
        self.by_dedup_key = {k: e for k, e in self.by_dedup_key.items() if e.live}
        return len(self.entries)


class Batcher:
    """The open batch of one (account, endpoint, group)."""

    def __init__(
        self,
        account: str,
        endpoint: Endpoint,
        linger_s: float,
        group: str | None = None,
        history: History = LIVE,
        list_only: bool = False,
    ) -> None:
        self.account = account
        self.endpoint = endpoint
        self.group = group
        self.history = history
        self.list_only = list_only
        self._format = body_format(endpoint, history)
        # Its items set state (profile, consent, catalog item): kept in order, latest folds.
        self.stateful = endpoint.spec.state is not None
        self._keep_latest = self.stateful
        self._max_items = endpoint.spec.max_items
        self._max_bytes = endpoint.spec.max_bytes - self._format.envelope_bytes
        self._linger_s = linger_s
        self._open: Batch | None = None

    @property
    def open_batch(self) -> Batch | None:
        return self._open

    def plan(self, operation: Operation) -> tuple[bool, EncodedItem | None]:
        """Where ``operation`` would go: (the open batch must close first, its encoded item).

        The item is None when the operation folds into an item of the open batch."""
        batch = self._open
        key = operation.dedup_key
        if batch is not None and key is not None and key in batch.by_dedup_key:
            return False, None
        item = self._format.encode(operation)
        full = batch is not None and (
            len(batch.entries) >= self._max_items
            or batch.size_bytes + item.cost(batch.profile_keys) > self._max_bytes
        )
        return full, item

    def add(
        self, operation: Operation, ticket: MessageTicket, item: EncodedItem | None = None
    ) -> Batch | None:
        """Add one operation (``item``: it encoded already, by :meth:`plan`); returns the
        batch it closed, if adding it closed one."""
        batch = self._open
        key = operation.dedup_key
        if batch is not None and key is not None:
            twin = batch.by_dedup_key.get(key)
            if twin is not None:
                self._fold(batch, twin, operation, ticket)
                return None
        if item is None:
            item = self._format.encode(operation)
        cost = item.cost(batch.profile_keys if batch is not None else None)
        closed = None
        if batch is not None and (
            len(batch.entries) >= self._max_items or batch.size_bytes + cost > self._max_bytes
        ):
            closed, batch = batch, None
        if batch is None:
            batch = self._open = self._new_batch()
            cost = item.cost(None)
        entry = BatchEntry(item, [ticket])
        batch.entries.append(entry)
        batch.partitions.add(ticket.progress)
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

    def open_or_new(self) -> Batch:
        if self._open is None:
            self._open = self._new_batch()
        return self._open

    def _new_batch(self) -> Batch:
        return Batch(
            self.account,
            self.endpoint,
            self.group,
            time.monotonic(),
            history=self.history,
            list_only=self.list_only,
        )

    def lingered(self, now: float) -> bool:
        """The open batch's linger time has passed."""
        batch = self._open
        return batch is not None and now - batch.opened_at >= self._linger_s

    def take_due(self, now: float) -> Batch | None:
        """The open batch if its linger time has passed."""
        if self.lingered(now):
            batch, self._open = self._open, None
            return batch
        return None

    def take_open(self) -> Batch | None:
        """The open batch regardless of linger (revoke, shutdown, or to keep state order)."""
        batch, self._open = self._open, None
        return batch

    def _fold(
        self, batch: Batch, entry: BatchEntry, operation: Operation, ticket: MessageTicket
    ) -> None:
        batch.partitions.add(ticket.progress)
        item = self._format.encode(operation)
        if item.json == entry.item.json:
            entry.tickets.append(ticket)
        elif self._keep_latest:
            # Upserts carry full state: the newer message's item is the one to send.
            entry.twins.extend((older, entry.item) for older in entry.tickets)
            batch.size_bytes += len(item.json) - len(entry.item.json)
            entry.item, entry.tickets = item, [ticket]
        else:
            entry.twins.append((ticket, item))


@dataclass(slots=True)
class _Holders:
    """Unfinished batches holding one state key: for its latest message, and for earlier ones."""

    ticket: MessageTicket
    current: list[Batch] = field(default_factory=list)
    earlier: list[Batch] = field(default_factory=list)


class Batching:
    """Every open batch, and the order stateful operations must keep between batches."""

    def __init__(
        self,
        linger_s: float,
        clock: Callable[[], float] = time.monotonic,
        history: History = LIVE,
        *,
        consent_historical_after_s: float | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """``consent_historical_after_s``: in a run that sends consent live, a Subscribe item
        whose consent is older than this (by ``wall_clock``, Unix seconds) when it is added goes
        as a historical import with its ``consented_at``; None sends all of it live."""
        self._linger_s = linger_s
        self._history = history
        self._historical = as_historical_consent(history)
        self._consent_after_s = None if history.historical_consent else consent_historical_after_s
        self._wall_clock = wall_clock
        self._clock = clock
        self._batchers: dict[BatchKey, Batcher] = {}
        self._holders: dict[StateKey, _Holders] = {}

    def add(self, account: str, operation: Operation, ticket: MessageTicket) -> Sequence[Batch]:
        """Add one operation; returns the batches that closed (full, or closed to keep order)."""
        history = self._history
        if self._consent_after_s is not None and operation.endpoint is Endpoint.SUBSCRIBE:
            history = self._consent_history(operation)
        key = batch_key(account, operation.endpoint, operation.group, history, operation.list_only)
        batcher = self._batchers.get(key)
        if batcher is None:
            batcher = Batcher(
                account,
                operation.endpoint,
                self._linger_s,
                operation.group,
                history,
                list_only=operation.list_only,
            )
            self._batchers[key] = batcher
        state = operation.state_key if batcher.stateful else None
        if state is None:
            # Events, the hot path: no order to keep.
            done = batcher.add(operation, ticket)
            if done is None:
                return ()
            self._drop_idle(key, batcher)
            return (done,)
        closed: list[Batch] = []
        full, item = batcher.plan(operation)
        if full:
            closed.append(batcher.take_open())  # type: ignore[arg-type]
        self._keep_order((account, *state), batcher.open_or_new(), ticket, closed)
        done = batcher.add(operation, ticket, item)
        if done is not None:
            closed.append(done)
        self._drop_idle(key, batcher)
        return closed

    def _consent_history(self, operation: Operation) -> History:
        """Live, or a historical import for consent older than the configured age."""
        assert self._consent_after_s is not None
        cutoff = datetime.fromtimestamp(self._wall_clock() - self._consent_after_s, UTC)
        return self._historical if consent_is_older(operation, cutoff) else self._history

    def _keep_order(
        self, state: StateKey, batch: Batch, ticket: MessageTicket, closed: list[Batch]
    ) -> None:
        """``batch`` is about to hold ``state`` for ``ticket``: make it wait for every batch
        holding the key for an earlier message (closing any of them still open)."""
        holders = self._holders.get(state)
        if holders is None:
            holders = self._holders[state] = _Holders(ticket)
        elif holders.ticket is not ticket:
            # A newer message for this key: everything holding it so far goes first.
            holders.earlier += holders.current
            holders.current = []
            holders.ticket = ticket
        for earlier in holders.earlier:
            if earlier is batch or earlier in batch.after:
                continue  # in the open batch a fold replaces (or twins) the older item
            other = self._batchers.get(earlier.key)
            if other is not None and other.open_batch is earlier:
                # Only closed batches are waited for: close this one now.
                closed.append(other.take_open())  # type: ignore[arg-type]
                self._drop_idle(earlier.key, other)
            batch.after.add(earlier)
            earlier.dependents.append(batch)
        if batch not in holders.current:
            holders.current.append(batch)
        batch.state_keys.add(state)

    def due(
        self, now: float | None = None, *, hold: Callable[[BatchKey], bool] | None = None
    ) -> list[Batch]:
        """Open batches whose linger time has passed, except those of keys ``hold`` names.

        The pipeline holds a key while an earlier batch of it is still queued or in flight, or
        while a request now would run ahead of the endpoint's steady rate: the open batch
        keeps filling instead of queuing half empty, so a rate-limited endpoint gets full
        requests (a full batch still closes at once)."""
        now = self._clock() if now is None else now
        out = []
        for key, batcher in list(self._batchers.items()):
            if hold is not None and batcher.lingered(now) and hold(key):
                continue
            batch = batcher.take_due(now)
            if batch is not None:
                out.append(batch)
                self._drop_idle(key, batcher)
        return out

    def close_all(self) -> list[Batch]:
        """Every open batch, closed now (revoke and shutdown)."""
        out = [b for b in (batcher.take_open() for batcher in self._batchers.values()) if b]
        self._batchers.clear()
        return out

    def drop_released(self) -> list[Batch]:
        """Remove entries of revoked or lost partitions from open batches; the batches left
        empty are dropped and returned (they are finished without a request)."""
        emptied = []
        for key, batcher in list(self._batchers.items()):
            batch = batcher.open_batch
            if batch is not None and batch.drop_released() == 0:
                batcher.take_open()
                self._drop_idle(key, batcher)
                emptied.append(batch)
        for batch in emptied:
            self.finished(batch)
        return emptied

    def finished(self, batch: Batch) -> None:
        """``batch`` was delivered or dropped: it no longer holds its state keys."""
        for state in batch.state_keys:
            holders = self._holders.get(state)
            if holders is None:
                continue
            holders.current = [b for b in holders.current if b is not batch]
            holders.earlier = [b for b in holders.earlier if b is not batch]
            if not holders.current and not holders.earlier:
                del self._holders[state]

    def open(self) -> list[Batch]:
        """The open batches."""
        return [b for b in (batcher.open_batch for batcher in self._batchers.values()) if b]

    def batchers(self) -> int:
        """Batchers kept (only those with an open batch: list ids come from message data)."""
        return len(self._batchers)

    def held_keys(self) -> int:
        """State keys with unfinished batches (bounded by the work in flight)."""
        return len(self._holders)

    def _drop_idle(self, key: BatchKey, batcher: Batcher) -> None:
        # Batchers per list id come from message data: keep only those with an open batch.
        if batcher.open_batch is None and self._batchers.get(key) is batcher:
            del self._batchers[key]
