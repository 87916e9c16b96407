"""The one place that wires the steps::

    Kafka message -> decode -> translate -> batch -> deliver -> commit
                        \\__________\\________________\\-> dead-letter

:meth:`Pipeline.process` takes one polled message through decode, translate and batching on the
poll-loop thread. Closed batches go to a small thread pool that delivers them
(:mod:`consumer.deliver.sender`). :meth:`Pipeline.tick`, called on every loop turn, sends batches
whose linger passed, collects finished deliveries, finishes the messages behind them, serves
dead-letter confirmations and commits the contiguous finished prefix of each partition.

Error routes (as in arroyo): a :class:`~consumer.errors.MessageError` is bad data and goes to
the dead-letter topic; an outage is retried inside the sender (backpressure, never
dead-lettered); anything else (auth, dead-letter failure, bugs) propagates and stops the
process without committing past unfinished work.

Commit order, written down where it happens: deliveries and dead-letter writes are confirmed
first, then offsets are stored, then committed.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Protocol

from consumer.batch import Batch, Batcher
from consumer.commit import MessageTicket, OffsetTracker, PartitionProgress
from consumer.dead_letter import DeadLetterBudget, DeadLetterWriter
from consumer.decode import DecodedRecord, Decoder
from consumer.deliver.sender import BatchOutcome, DeliveryAborted, Sender
from consumer.endpoints import Endpoint
from consumer.errors import MessageError, RejectedItemError
from consumer.messages import Operation
from consumer.metrics import Metrics
from consumer.routing import AccountRouter

log = logging.getLogger(__name__)

BatchKey = tuple[str, Endpoint, str | None]


class Translator(Protocol):
    """Turns one decoded record into the Klaviyo operations it implies (the compiled rules)."""

    @property
    def mapped_records(self) -> frozenset[str]:
        """Full names of the Avro records this translator maps."""
        ...

    @property
    def version(self) -> str:
        """Identifies the rules in force (the ``dlq.registry.version`` header)."""
        ...

    def translate(self, record: DecodedRecord) -> list[Operation]:
        """Operations for ``record``; raises TranslationError or UnmappedRecordError."""
        ...
# Stores and commits the offsets; confirmations come back through Pipeline.acknowledge.
CommitFn = Callable[[list[PartitionProgress], bool], None]


class Pipeline:
    """Decode, translate, batch, deliver, dead-letter and commit, for one consumer."""

    def __init__(
        self,
        *,
        decoder: Decoder,
        translator: Translator,
        router: AccountRouter,
        sender: Sender,
        dead_letters: DeadLetterWriter,
        dead_letter_budget: DeadLetterBudget,
        commit: CommitFn,
        metrics: Metrics,
        linger_s: float,
        max_concurrent_requests: int,
        commit_interval_s: float = 1.0,
    ) -> None:
        self.tracker = OffsetTracker()
        self._decoder = decoder
        self._translator = translator
        self._route = router.account_for
        self._sender = sender
        self._dead_letters = dead_letters
        self._budget = dead_letter_budget
        self.metrics = metrics
        self._translated = metrics.messages.labels("translated")
        self._dead_lettered = metrics.messages.labels("dead_lettered")
        self._commit = commit
        self._linger_s = linger_s
        self._commit_interval_s = commit_interval_s
        self._last_commit = time.monotonic()
        self._batchers: dict[tuple[str, Endpoint, str | None], Batcher] = {}
        # Threads start on demand; max_concurrent_requests bounds each key, not the pool.
        self._pool = ThreadPoolExecutor(64, thread_name_prefix="deliver")
        self._in_flight: dict[Future[BatchOutcome], BatchKey] = {}
        self._active: Counter[BatchKey] = Counter()
        self._pending: dict[BatchKey, deque[Batch]] = {}
        self._max_concurrent = max_concurrent_requests
        self._closed = False

    # -- per message ---------------------------------------------------------------------

    def process(self, message: Any) -> None:
        """Decode, translate and batch one polled confluent_kafka.Message."""
        ticket = self.tracker.get(message.topic(), message.partition()).track(
            message.offset(), message
        )
        try:
            record = self._decoder.decode(message.value())
            ticket.record_name = record.record_name
            operations = self._translator.translate(record)
            account = self._route(record)
        except MessageError as error:
            error.record_name = error.record_name or ticket.record_name
            self._dead_letter(ticket, error, on_confirmed=ticket.finish)
            return
        self._budget.succeeded()
        self._translated.inc()
        ticket.outstanding = len(operations)
        for operation in operations:
            batcher = self._batcher(account, operation.endpoint, operation.group)
            closed = batcher.add(operation, ticket)
            if closed is not None:
                self._send(closed)

    # -- every loop turn -----------------------------------------------------------------

    def tick(self, now: float | None = None) -> None:
        """Send lingering batches, collect deliveries, serve dead-letter acks, commit."""
        now = time.monotonic() if now is None else now
        for batcher in self._batchers.values():
            due = batcher.take_due(now)
            if due is not None:
                self._send(due)
        self._collect(block=False)
        self._dead_letters.poll()
        if now - self._last_commit >= self._commit_interval_s:
            self.commit(sync=False)

    def in_flight_messages(self) -> int:
        return self.tracker.in_flight()

    def commit(self, *, sync: bool) -> None:
        """Store and commit the finished prefix of every partition that moved."""
        self._last_commit = time.monotonic()
        ready = self.tracker.to_commit()
        if ready:
            self._commit(ready, sync)

    def acknowledge(self, topic: str, partition: int, offset: int) -> None:
        """The broker confirmed ``offset`` as committed (the commit callback).

        Until the confirmed offset equals the committable one, every commit turn asks
        again: a commit retried across a broker restart can land after a newer one, and
        then the older offset is what the broker holds.
        """
        progress = self.tracker.find(topic, partition)
        if progress is not None:
            progress.committed = offset

    # -- rebalance and shutdown ----------------------------------------------------------

    def assign(self, partitions: Iterable[tuple[str, int]]) -> None:
        for topic, partition in partitions:
            self.tracker.assign(topic, partition)

    def revoke(self, partitions: Iterable[tuple[str, int]], timeout_s: float) -> None:
        """Finish what can be finished in ``timeout_s``, commit it, then forget the partitions."""
        self.flush(timeout_s)
        self.commit(sync=True)
        for topic, partition in partitions:
            self.tracker.release(topic, partition)

    def lose(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Partitions lost without a clean revoke: another member owns them; drop our work."""
        for topic, partition in partitions:
            self.tracker.release(topic, partition)

    def flush(self, timeout_s: float) -> bool:
        """Send every open batch and wait up to ``timeout_s`` for all deliveries and
        dead-letter confirmations. True if everything finished in time."""
        deadline = time.monotonic() + timeout_s
        for batcher in self._batchers.values():
            batch = batcher.take_open()
            if batch is not None:
                self._send(batch)
        while (self._in_flight or self._pending) and not self._closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._collect(block=True, timeout_s=min(remaining, 0.5))
        if self._closed:
            return False
        remaining = max(0.0, deadline - time.monotonic())
        self._dead_letters.flush(remaining)
        return True

    def close(self) -> None:
        """Stop delivery threads; unfinished batches are abandoned (never committed)."""
        self._closed = True
        self._pending.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- internals -----------------------------------------------------------------------

    def _batcher(self, account: str, endpoint: Endpoint, group: str | None) -> Batcher:
        key = (account, endpoint, group)
        batcher = self._batchers.get(key)
        if batcher is None:
            batcher = self._batchers[key] = Batcher(account, endpoint, self._linger_s, group)
        return batcher

    def _send(self, batch: Batch) -> None:
        # Each (account, endpoint, list) has its own slots, so one throttled account or
        # endpoint never holds the others back. Batches beyond the slots wait here, visible
        # and bounded by the in-flight cap that pauses partitions.
        if self._closed:
            return
        key = (batch.account, batch.endpoint, batch.group)
        if self._active[key] >= self._max_concurrent:
            self._pending.setdefault(key, deque()).append(batch)
            return
        self._active[key] += 1
        self._in_flight[self._pool.submit(self._sender.deliver, batch)] = key

    def _collect(self, *, block: bool, timeout_s: float = 0.0) -> None:
        if block and self._in_flight:
            done, _ = wait(self._in_flight, timeout=timeout_s, return_when=FIRST_COMPLETED)
        else:
            done = {future for future in self._in_flight if future.done()}
        for future in done:
            key = self._in_flight.pop(future)
            self._active[key] -= 1
            queue = self._pending.get(key)
            if queue:
                batch = queue.popleft()
                if not queue:
                    del self._pending[key]
                self._send(batch)
            try:
                outcome = future.result()
            except DeliveryAborted:
                continue
            self._apply(outcome)

    def _apply(self, outcome: BatchOutcome) -> None:
        endpoint = outcome.batch.endpoint.name.lower()
        metrics = self.metrics
        metrics.requests.labels(endpoint).inc(outcome.requests)
        if outcome.retries:
            metrics.retries.labels(endpoint).inc(outcome.retries)
        if outcome.rejected:
            metrics.rejected_items.labels(endpoint).inc(len(outcome.rejected))
        metrics.outputs_delivered.labels(endpoint).inc(len(outcome.delivered))
        metrics.batch_seconds.labels(endpoint).observe(time.monotonic() - outcome.batch.opened_at)
        for entry in outcome.delivered:
            for ticket in entry.tickets:
                ticket.output_finished()
        for entry, error in outcome.rejected:
            for ticket in entry.tickets:
                self._reject_output(ticket, error)

    def _reject_output(self, ticket: MessageTicket, error: RejectedItemError) -> None:
        if ticket.dead_letter_confirmed:
            ticket.output_finished()
            return
        ticket.outputs_awaiting_dead_letter += 1
        if not ticket.dead_letter_sent:
            error.record_name = ticket.record_name
            self._dead_letter(ticket, error, on_confirmed=ticket.dead_letter_confirmed_now)

    def _dead_letter(
        self, ticket: MessageTicket, error: MessageError, *, on_confirmed: Callable[[], None]
    ) -> None:
        self._budget.dead_lettered()
        ticket.dead_letter_sent = True
        self._dead_lettered.inc()
        log.warning(
            "dead-lettering %s[%d]@%d at stage %s: %s",
            ticket.progress.topic,
            ticket.progress.partition,
            ticket.offset,
            error.stage,
            error,
        )
        self._dead_letters.send(ticket.message, error, ticket.attempts, on_confirmed)
