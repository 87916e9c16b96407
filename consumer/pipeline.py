"""The one place the steps meet::

    Kafka message -> decode -> translate -> batch -> deliver -> commit
                        \\__________\\________________\\-> dead-letter

:meth:`Pipeline.process` takes one polled message through decode, translate and batching on the
poll-loop thread. Closed batches go to the delivery scheduler (:mod:`consumer.deliver`), which
runs them on per-account threads. :meth:`Pipeline.tick`, called on every loop turn, sends
batches whose linger passed, applies finished deliveries to the tickets of their messages,
dead-letters the items Klaviyo's asynchronous jobs failed (:mod:`consumer.deliver.jobs`, after
their messages were committed), serves dead-letter confirmations, retries decoding parked by a
Schema Registry outage, and lets the committer commit the finished prefix of each partition.

Error routes (as in arroyo): a :class:`~consumer.errors.MessageError` is bad data and goes to
the dead-letter topic; an outage is retried (Klaviyo's inside the sender, the Schema Registry's
here, with the partition paused), never dead-lettered; anything else (authentication, a request
refused as a whole, the dead-letter topic, bugs) propagates and stops the process without
committing past unfinished work.

Commit order, written down where it happens: deliveries and dead-letter writes are confirmed
first (:mod:`consumer.commit` counts a message finished only then), then offsets are stored,
then committed.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from consumer.batch import Batching
from consumer.commit import Committer, MessageTicket, PartitionKey
from consumer.dead_letter import DeadLetterWriter
from consumer.decode import Decoder
from consumer.deliver.jobs import JobsDone, JobTracker
from consumer.deliver.scheduler import DeliveryScheduler, Finished
from consumer.deliver.sender import Backoff, BatchOutcome
from consumer.endpoints import Endpoint
from consumer.errors import MessageError, RejectedItemError, SchemaRegistryUnavailableError
from consumer.messages import DecodedRecord, KafkaMessage, Operation
from consumer.metrics import Metrics
from consumer.routing import AccountRouter

log = logging.getLogger(__name__)


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


@dataclass(slots=True)
class _Parked:
    """Messages of one partition waiting for the Schema Registry, in poll order."""

    tickets: deque[MessageTicket] = field(default_factory=deque)
    attempt: int = 0
    retry_at: float = 0.0


class Pipeline:
    """Decode, translate, batch, deliver, dead-letter and commit, for one consumer."""

    def __init__(
        self,
        *,
        decoder: Decoder,
        translator: Translator,
        router: AccountRouter,
        batching: Batching,
        deliveries: DeliveryScheduler,
        dead_letters: DeadLetterWriter,
        committer: Committer,
        metrics: Metrics,
        registry_backoff: Backoff,
        jobs: JobTracker | None = None,
        dead_letter_flush_min_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._decoder = decoder
        self._translator = translator
        self._route = router.account_for
        self._batching = batching
        self._deliveries = deliveries
        self._dead_letters = dead_letters
        self._jobs = jobs
        self.committer = committer
        self.metrics = metrics
        self._translated = metrics.messages.labels("translate", "translated")
        # Counted here per message, added to the Prometheus counter once per loop turn: its
        # lock costs more than the count.
        self._translated_since_tick = 0
        self._registry_backoff = registry_backoff
        self._flush_min_s = dead_letter_flush_min_s
        self._clock = clock
        self._parked: dict[PartitionKey, _Parked] = {}
        # When the Schema Registry stopped answering (None while it answers).
        self._registry_down_since: float | None = None

    # -- per message ---------------------------------------------------------------------

    def process(self, message: KafkaMessage) -> None:
        """Decode, translate and batch one polled message."""
        ticket = self.committer.track(message)
        if self._parked:
            parked = self._parked.get(ticket.progress.key)
            if parked is not None:
                parked.tickets.append(ticket)  # behind the one waiting for the registry
                return
        outage = self._handle(ticket)
        if outage is not None:
            key = ticket.progress.key
            parked = self._parked[key] = _Parked(deque([ticket]))
            self._wait_for_registry(key, parked, outage)

    def _handle(self, ticket: MessageTicket) -> SchemaRegistryUnavailableError | None:
        """Decode, translate and batch; the outage if the Schema Registry could not be asked
        (the ticket is untouched then, to be handled again)."""
        try:
            record = self._decoder.decode(ticket.message.value())
            ticket.record_name = record.record_name
            operations = self._translator.translate(record)
            account = self._route(record)
        except SchemaRegistryUnavailableError as outage:
            return outage
        except MessageError as error:
            error.record_name = error.record_name or ticket.record_name
            ticket.fail()
            self._dead_letter(ticket, error)
            return None
        self._translated_since_tick += 1
        ticket.expect(len(operations))
        for operation in operations:
            for batch in self._batching.add(account, operation, ticket):
                self._deliveries.submit(batch)
        return None

    # -- every loop turn -----------------------------------------------------------------

    def tick(self) -> None:
        """Send lingering batches, apply deliveries, serve dead-letter acks, retry parked
        decoding, commit when the interval has passed."""
        self._count_translated()
        for batch in self._batching.due(hold=self._deliveries.hold):
            self._deliveries.submit(batch)
        self._apply(self._deliveries.collect())
        if self._jobs is not None:
            self._apply_jobs(self._jobs.collect())
            self.metrics.jobs_pending.set(self._jobs.pending_jobs())
        self._dead_letters.poll()
        if self._parked:
            self._retry_parked()
        self.committer.tick()

    def in_flight_messages(self) -> int:
        return self.committer.in_flight()

    def held_items(self) -> int:
        """Klaviyo items in batches not finished yet (open, waiting, queued, running, or
        waiting for their job's outcome)."""
        batches = [*self._batching.open(), *self._deliveries.batches()]
        waiting = self._jobs.pending_items() if self._jobs is not None else 0
        return sum(len(batch.entries) for batch in batches) + waiting

    def parked_partitions(self) -> set[PartitionKey]:
        """Partitions waiting for the Schema Registry: keep them paused."""
        return set(self._parked)

    # -- rebalance and shutdown ----------------------------------------------------------

    def assign(self, partitions: Iterable[PartitionKey]) -> None:
        self.committer.assign(partitions)

    def revoke(self, partitions: Iterable[PartitionKey], timeout_s: float) -> bool:
        """Finish the revoked partitions' work within ``timeout_s`` (their dead-letter writes
        get at least the flush minimum), commit it, drop the rest. True if all finished."""
        keys = list(partitions)
        finished = self._finish(keys, timeout_s)
        self.committer.commit(sync=True, partitions=keys)
        self._release(keys)
        return finished

    def lose(self, partitions: Iterable[PartitionKey]) -> None:
        """Partitions lost without a clean revoke: another member owns them; drop our work."""
        self._release(list(partitions))

    def drain(self, timeout_s: float) -> bool:
        """Shutdown: deliver everything in flight within ``timeout_s`` (dead-letter writes
        get at least the flush minimum), then commit. True if everything finished."""
        finished = self._finish(None, timeout_s)
        self.committer.commit(sync=True)
        self._count_translated()
        return finished

    def close(self) -> None:
        """Abandon delivery: unfinished batches are never reported, so never committed."""
        self._deliveries.close()
        if self._jobs is not None:
            self._jobs.close()

    # -- internals -----------------------------------------------------------------------

    def _count_translated(self) -> None:
        if self._translated_since_tick:
            self._translated.inc(self._translated_since_tick)
            self._translated_since_tick = 0

    def _finish(self, partitions: list[PartitionKey] | None, timeout_s: float) -> bool:
        deadline = self._clock() + timeout_s
        for batch in self._batching.close_all():
            self._deliveries.submit(batch)

        def unfinished() -> int:
            return self.committer.unfinished(partitions)

        # Deliveries first: they may add dead-letter writes. The dead-letter flush gets its
        # own minimum, so a drain that used up its grace still confirms what it wrote.
        while unfinished() and not self._deliveries.idle():
            remaining = deadline - self._clock()
            if remaining <= 0:
                break
            self._apply(self._deliveries.collect(timeout_s=min(remaining, 0.2)))
            if self._jobs is not None:
                self._apply_jobs(self._jobs.collect())
            self._dead_letters.poll()
        if partitions is None and self._jobs is not None:
            self._await_jobs(deadline)
        flush_s = max(deadline - self._clock(), self._flush_min_s)
        self._dead_letters.flush(flush_s)
        return unfinished() == 0

    def _await_jobs(self, deadline: float) -> None:
        """Shutdown: wait (within the grace) for the outcomes of jobs still followed, so
        their failed items are dead-lettered; name the ones left without one."""
        jobs = self._jobs
        assert jobs is not None
        while not jobs.idle() and self._clock() < deadline:
            self._apply_jobs(jobs.collect())
            self._dead_letters.poll()
            time.sleep(min(0.1, max(0.0, deadline - self._clock())))
        self._apply_jobs(jobs.collect())
        left = list(jobs.pending())
        if left:
            log.warning(
                "stopping with %d Klaviyo jobs (%d items) without an outcome: their messages "
                "are committed, and items these jobs fail will not be dead-lettered: %s",
                len(left),
                sum(items for _, _, items in left),
                ", ".join(f"{path}/{job_id}" for path, job_id, _ in left[:20]),
            )

    def _release(self, partitions: list[PartitionKey]) -> None:
        for key in partitions:
            self._parked.pop(key, None)
        self.committer.release(partitions)
        for batch in self._batching.drop_released():
            self._batching.finished(batch)
        for batch in self._deliveries.drop_released():
            self._batching.finished(batch)

    def _apply(self, finished: list[Finished]) -> None:
        for done in finished:
            outcome = done.outcome
            if outcome is not None:
                self._count_batch(outcome)
                for entry in outcome.delivered:
                    for ticket in entry.all_tickets() if entry.twins else entry.tickets:
                        ticket.output_delivered()
                for entry in outcome.skipped:  # list-only unsubscribes of non-members
                    for ticket in entry.all_tickets():
                        ticket.output_delivered()
                for entry, error in outcome.rejected:
                    for ticket in entry.tickets:
                        self._reject(ticket, error)
                if outcome.jobs and self._jobs is not None:
                    # Delivered (committable) now; the batch holds its state keys until its
                    # jobs have an outcome, so a later change of the same state waits.
                    self._jobs.follow(done.batch, outcome.jobs)
                    continue
            self._batching.finished(done.batch)

    def _apply_jobs(self, done: list[JobsDone]) -> None:
        """Batches whose jobs have an outcome: dead-letter the items the jobs failed."""
        metrics = self.metrics
        for jobs in done:
            batch = jobs.batch
            account = batch.account
            for endpoint, seconds in jobs.latencies:
                metrics.job_seconds.labels(endpoint.name.lower()).observe(seconds)
            if jobs.created:
                metrics.job_created_items.labels(account).inc(jobs.created)
            for entry, error in jobs.failed:
                endpoint_name = str(error.detail.get("endpoint", batch.endpoint.spec.path))
                metrics.job_failed_items.labels(_endpoint_label(endpoint_name), account).inc()
                for ticket in entry.all_tickets():
                    error.record_name = ticket.record_name
                    self._dead_letter(ticket, error, confirmed=_no_ticket)
            self._deliveries.finished(batch)
            self._batching.finished(batch)

    def _count_batch(self, outcome: BatchOutcome) -> None:
        """The metrics of one finished batch: a few updates per batch, none per item."""
        batch = outcome.batch
        endpoint, account = batch.endpoint.name.lower(), batch.account
        metrics = self.metrics
        metrics.requests.labels(endpoint, account).inc(outcome.requests)
        if outcome.retries:
            metrics.retries.labels(endpoint, account).inc(outcome.retries)
        if outcome.throttled:
            metrics.throttled.labels(endpoint, account).inc(outcome.throttled)
        if outcome.rejected:
            metrics.rejected_items.labels(endpoint, account).inc(len(outcome.rejected))
        if outcome.skipped:
            metrics.unsubscribes_skipped.labels(account).inc(len(outcome.skipped))
        request_seconds = metrics.request_seconds.labels(endpoint)
        for seconds in outcome.request_seconds:
            request_seconds.observe(seconds)
        metrics.batch_items.labels(endpoint).observe(len(batch.entries))
        delivered = outcome.delivered
        if not delivered:
            return
        metrics.outputs_delivered.labels(endpoint, account).inc(len(delivered))
        metrics.batch_seconds.labels(endpoint).observe(time.monotonic() - batch.opened_at)
        # Kafka timestamps: milliseconds since the epoch (-1 when there is none).
        stamps = [entry.tickets[0].message.timestamp()[1] for entry in delivered]
        stamps.sort()
        metrics.end_to_end.observe_ages(endpoint, outcome.accepted_at * 1000.0, stamps)

    def _reject(self, ticket: MessageTicket, error: RejectedItemError) -> None:
        if ticket.released:
            return  # the new owner of the partition does it again, and decides
        if ticket.output_rejected():
            error.record_name = ticket.record_name
            self._dead_letter(ticket, error)

    def _dead_letter(
        self,
        ticket: MessageTicket,
        error: MessageError,
        confirmed: Callable[[], None] | None = None,
    ) -> None:
        """Send the message of ``ticket`` to the dead-letter topic; ``confirmed`` runs when
        the broker confirms it (default: the ticket's own, which lets its offset pass)."""
        self.metrics.messages.labels(error.stage, "dead_lettered").inc()
        self.metrics.dead_letters.labels(error.stage, type(error).__name__).inc()
        log.warning(
            "dead-lettering %s[%d]@%d at stage %s: %s",
            ticket.progress.topic,
            ticket.progress.partition,
            ticket.offset,
            error.stage,
            error,
        )
        self._dead_letters.send(ticket.message, error, confirmed or ticket.dead_letter_confirmed)

    # -- the Schema Registry is down -----------------------------------------------------

    def _wait_for_registry(
        self, key: PartitionKey, parked: _Parked, outage: SchemaRegistryUnavailableError
    ) -> None:
        delay = self._registry_backoff.delay(parked.attempt)
        parked.attempt += 1
        parked.retry_at = self._clock() + delay
        if self._registry_down_since is None:
            self._registry_down_since = self._clock()
            log.warning("Schema Registry outage begun: %s; retrying until it answers", outage)
        if parked.attempt == 1:
            log.warning(
                "%s[%d] paused at offset %d: waiting for the Schema Registry",
                key[0],
                key[1],
                parked.tickets[0].offset,
            )
        else:
            log.debug("%s[%d]: %s; retrying in %.1fs", key[0], key[1], outage, delay)

    def _retry_parked(self) -> None:
        now = self._clock()
        for key, parked in list(self._parked.items()):
            if now < parked.retry_at:
                continue
            while parked.tickets:
                outage = self._handle(parked.tickets[0])
                if outage is not None:
                    self._wait_for_registry(key, parked, outage)
                    break
                parked.tickets.popleft()
                self._registry_answered()
            if not parked.tickets:
                del self._parked[key]
                log.info("%s[%d] resumed: the Schema Registry answers again", *key)

    def _registry_answered(self) -> None:
        since = self._registry_down_since
        if since is not None:
            self._registry_down_since = None
            log.info("Schema Registry outage ended after %.1fs", self._clock() - since)


def _no_ticket() -> None:
    """A job's failed item is dead-lettered after its message was committed: no offset
    waits for the confirmation."""


def _endpoint_label(path: str) -> str:
    """The metric label of an endpoint path (as the other metrics name endpoints)."""
    for endpoint in Endpoint:
        if endpoint.spec.path == path:
            return endpoint.name.lower()
    return path
