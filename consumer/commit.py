"""The commit step: which offsets may be committed, when, and what the broker confirmed.

Every polled message gets a :class:`MessageTicket`. It is finished when every output it
produced is delivered to Klaviyo, or refused by Klaviyo and its dead-letter record confirmed by
the broker, or, when the message itself failed (decode, translate), once that record is
confirmed. One message may fan out into several batches and endpoints, and batches finish out
of order, so each partition keeps its tickets in poll order and the committable offset only
moves past a message once everything before it has finished too.

Each finished message is counted once by the dead-letter budget, when the committable offset
passes it (so in offset order per partition); a budget that trips stops the process before
that offset is stored.

Commit order, written down where it happens (:meth:`Committer.commit`): outputs delivered and
dead-letter writes confirmed first (that is what makes a ticket finished), then offsets stored,
then committed; commits repeat until the broker confirms the offset we hold.

Everything here runs on the poll-loop thread: no locks.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, overload

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from consumer.dead_letter import DeadLetterBudget
from consumer.messages import KafkaMessage

log = logging.getLogger(__name__)

PartitionKey = tuple[str, int]

_UNKNOWN = -1  # outputs not known yet: the message is not translated
_NO_DEAD_LETTER, _DEAD_LETTER_SENT, _DEAD_LETTER_CONFIRMED = 0, 1, 2


class MessageTicket:
    """One polled message: its offset, its outputs still outstanding, its dead-letter state."""

    __slots__ = (
        "_awaiting",
        "_dead_letter",
        "_outstanding",
        "message",
        "offset",
        "progress",
        "record_name",
    )

    def __init__(self, progress: PartitionProgress, offset: int, message: KafkaMessage) -> None:
        self.progress = progress
        self.offset = offset
        # Kept for the dead-letter copy until the message is finished.
        self.message = message
        self.record_name: str | None = None
        self._outstanding = _UNKNOWN
        # Refused outputs waiting for the dead-letter record to be confirmed.
        self._awaiting = 0
        self._dead_letter = _NO_DEAD_LETTER

    @property
    def finished(self) -> bool:
        """Every output accounted for, and the dead-letter record (if any) confirmed."""
        return self._outstanding == 0 and self._dead_letter != _DEAD_LETTER_SENT

    @property
    def dead_lettered(self) -> bool:
        return self._dead_letter != _NO_DEAD_LETTER

    @property
    def released(self) -> bool:
        """The partition was revoked or lost: this work is no longer ours."""
        return self.progress.released

    def expect(self, outputs: int) -> None:
        """The message was translated into ``outputs`` Klaviyo items."""
        self._outstanding = outputs

    def fail(self) -> None:
        """The message itself failed (decode, translate): it is dead-lettered, no outputs."""
        self._outstanding = 0
        self._dead_letter = _DEAD_LETTER_SENT

    def output_delivered(self) -> None:
        """Klaviyo accepted one output."""
        self._outstanding -= 1

    def output_rejected(self) -> bool:
        """Klaviyo refused one output as bad data.

        True if the message must now be dead-lettered (its first refused output); the refused
        outputs count as finished once :meth:`dead_letter_confirmed` runs.
        """
        if self._dead_letter == _DEAD_LETTER_CONFIRMED:
            self._outstanding -= 1
            return False
        self._awaiting += 1
        if self._dead_letter == _NO_DEAD_LETTER:
            self._dead_letter = _DEAD_LETTER_SENT
            return True
        return False

    def dead_letter_confirmed(self) -> None:
        """The broker confirmed the dead-letter record: release the outputs waiting for it."""
        self._dead_letter = _DEAD_LETTER_CONFIRMED
        self._outstanding -= self._awaiting
        self._awaiting = 0


@dataclass(eq=False, slots=True)
class PartitionProgress:
    """Tickets of one assigned partition in poll order, and the offset safe to commit."""

    topic: str
    partition: int
    pending: deque[MessageTicket] = field(default_factory=deque)
    committable: int | None = None
    # What the broker confirmed; commits repeat until it equals ``committable``.
    committed: int | None = None
    # Set when the partition is revoked or lost: late completions for it are ignored.
    released: bool = False

    @property
    def key(self) -> PartitionKey:
        return (self.topic, self.partition)

    def track(self, offset: int, message: KafkaMessage) -> MessageTicket:
        ticket = MessageTicket(self, offset, message)
        self.pending.append(ticket)
        return ticket

    def advance(self, budget: DeadLetterBudget) -> None:
        """Move the committable offset over the finished prefix (Kafka commits offset + 1),
        counting each message's outcome once; a tripped budget raises before it moves."""
        pending = self.pending
        while pending:
            ticket = pending[0]
            if not ticket.finished:
                break
            budget.count(ticket.dead_lettered)
            self.committable = pending.popleft().offset + 1

    def unfinished(self) -> int:
        return sum(1 for ticket in self.pending if not ticket.finished)


class OffsetStore(Protocol):
    """The part of a Kafka consumer the committer uses (confluent_kafka.Consumer has it)."""

    def store_offsets(
        self, message: Any = None, offsets: list[TopicPartition] | None = None
    ) -> None: ...

    @overload
    def commit(self, *, asynchronous: Literal[True] = ...) -> None: ...

    @overload
    def commit(self, *, asynchronous: Literal[False]) -> list[TopicPartition]: ...


class Committer:
    """Owns the offsets: tracks tickets per partition, stores and commits the finished prefix
    every ``interval_s`` (and on demand), and takes the broker's acknowledgements.

    ``on_commit`` is librdkafka's commit callback; give it to the consumer's configuration.
    """

    def __init__(
        self,
        store: OffsetStore,
        *,
        budget: DeadLetterBudget,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
        on_latency: Callable[[float], None] | None = None,
        metadata: Mapping[PartitionKey, str] | None = None,
    ) -> None:
        """``on_latency`` gets the seconds from each commit request to its confirmation."""
        self._store = store
        self._on_latency = on_latency
        # Start times of asynchronous commits not confirmed yet (librdkafka answers in order).
        self._requested: deque[float] = deque()
        # Committed with each partition's offset (a replay keeps its end bound there).
        self._metadata = dict(metadata or {})
        self._budget = budget
        self._interval_s = interval_s
        self._clock = clock
        self._last = clock()
        self._partitions: dict[PartitionKey, PartitionProgress] = {}

    # -- tickets -------------------------------------------------------------------------

    def track(self, message: KafkaMessage) -> MessageTicket:
        """A ticket for a polled message, in poll order within its partition."""
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        assert topic is not None and partition is not None and offset is not None
        progress = self._partitions.get((topic, partition))
        if progress is None:
            # Only where a partition is assigned without a callback (manual assignment).
            progress = self.assign([(topic, partition)])[0]
        return progress.track(offset, message)

    def in_flight(self) -> int:
        """Messages polled and not yet passed by the committable offset."""
        return sum(len(p.pending) for p in self._partitions.values())

    def unfinished(self, partitions: Iterable[PartitionKey] | None = None) -> int:
        """Tickets not finished yet, in ``partitions`` (default: every assigned one)."""
        keys = self._partitions if partitions is None else partitions
        found = (self._partitions.get(key) for key in keys)
        return sum(p.unfinished() for p in found if p is not None)

    # -- partitions ----------------------------------------------------------------------

    def assign(self, partitions: Iterable[PartitionKey]) -> list[PartitionProgress]:
        assigned = []
        for topic, partition in partitions:
            progress = self._partitions[(topic, partition)] = PartitionProgress(topic, partition)
            assigned.append(progress)
        return assigned

    def release(self, partitions: Iterable[PartitionKey]) -> list[PartitionProgress]:
        """Forget revoked or lost partitions; their tickets read as released from now on."""
        released = []
        for key in partitions:
            progress = self._partitions.pop(key, None)
            if progress is not None:
                progress.released = True
                released.append(progress)
        return released

    def assigned(self) -> list[PartitionKey]:
        return list(self._partitions)

    # -- committing ----------------------------------------------------------------------

    def tick(self) -> None:
        """Commit asynchronously if the commit interval has passed."""
        if self._clock() - self._last >= self._interval_s:
            self.commit(sync=False)

    def commit(self, *, sync: bool, partitions: Iterable[PartitionKey] | None = None) -> None:
        """Store and commit the finished prefix of every partition (or of ``partitions``)
        whose committable offset differs from what the broker confirmed.

        Until the confirmed offset equals the committable one, every turn asks again: a
        commit retried across a broker restart can land after a newer one, and then the
        older offset is what the broker holds.
        """
        self._last = self._clock()
        keys = list(self._partitions) if partitions is None else list(partitions)
        ready = []
        for key in keys:
            progress = self._partitions.get(key)
            if progress is None:
                continue
            progress.advance(self._budget)
            if progress.committable is not None and progress.committable != progress.committed:
                metadata = self._metadata.get(key)
                ready.append(
                    TopicPartition(progress.topic, progress.partition, progress.committable)
                    if metadata is None
                    else TopicPartition(
                        progress.topic, progress.partition, progress.committable, metadata
                    )
                )
        if not ready:
            return
        try:
            self._store.store_offsets(offsets=ready)
            started = self._clock()
            if sync:
                self._acknowledge(self._store.commit(asynchronous=False))
                if self._on_latency is not None:
                    self._on_latency(self._clock() - started)
            else:
                self._store.commit(asynchronous=True)  # confirmations arrive in on_commit
                self._requested.append(started)
        except KafkaException as exc:
            if _code(exc) != KafkaError._NO_OFFSET:
                # Not fatal (a broker restart, a rebalance): the next turn commits again.
                log.warning("commit failed: %s", exc)

    def on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """librdkafka's commit callback: note what the broker confirmed."""
        if error is not None and error.code() != KafkaError._NO_OFFSET:
            log.warning("commit failed: %s", error.str())
        if self._requested:
            started = self._requested.popleft()
            if self._on_latency is not None and error is None:
                self._on_latency(self._clock() - started)
        self._acknowledge(partitions)

    def committable(self, key: PartitionKey) -> int | None:
        """The offset up to which an assigned partition's messages are finished."""
        progress = self._partitions.get(key)
        return progress.committable if progress is not None else None

    def committed(self, key: PartitionKey) -> int | None:
        """The offset the broker confirmed for an assigned partition."""
        progress = self._partitions.get(key)
        return progress.committed if progress is not None else None

    def _acknowledge(self, partitions: list[TopicPartition] | None) -> None:
        for tp in partitions or ():
            if tp.error is not None or tp.offset is None or tp.offset < 0:
                continue
            progress = self._partitions.get((tp.topic, tp.partition))
            if progress is not None:
                progress.committed = tp.offset


def _code(exc: KafkaException) -> Any:
    first = exc.args[0] if exc.args else None
    return first.code() if isinstance(first, KafkaError) else None
