"""Which offsets may be committed: per partition, the contiguous prefix of finished messages.

A message is finished when every output it produced is delivered to Klaviyo or its
dead-letter write is confirmed. One message may fan out into several batches and endpoints,
and batches finish out of order, so each partition keeps its messages in poll order and the
committable offset only moves past a message once everything before it has finished too.

Everything here runs on the poll-loop thread: no locks.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False, slots=True)
class MessageTicket:
    """One polled message and how many of its outputs are still outstanding."""

    progress: PartitionProgress
    offset: int
    # The original confluent_kafka.Message: kept for the dead-letter copy until it is finished.
    message: Any
    outstanding: int = 0
    record_name: str | None = None
    attempts: int = 1
    # Dead-letter bookkeeping for outputs Klaviyo rejected: the record is written once per
    # message, and the rejected outputs count as finished only once that write is confirmed.
    dead_letter_sent: bool = False
    dead_letter_confirmed: bool = False
    outputs_awaiting_dead_letter: int = 0

    @property
    def finished(self) -> bool:
        return self.outstanding <= 0

    def output_finished(self) -> None:
        """One output was delivered (or dead-lettered); the last one finishes the message."""
        self.outstanding -= 1

    def finish(self) -> None:
        """The whole message is done (for example: dead-lettered before it had outputs)."""
        self.outstanding = 0

    def dead_letter_confirmed_now(self) -> None:
        """The dead-letter write for this message is confirmed: release the waiting outputs."""
        self.dead_letter_confirmed = True
        self.outstanding -= self.outputs_awaiting_dead_letter
        self.outputs_awaiting_dead_letter = 0


@dataclass(eq=False, slots=True)
class PartitionProgress:
    """Messages of one assigned partition in poll order, and the offset safe to commit."""

    topic: str
    partition: int
    pending: deque[MessageTicket] = field(default_factory=deque)
    committable: int | None = None
    # What the broker confirmed; commits repeat until it equals ``committable``.
    committed: int | None = None
    # Set when the partition is revoked or lost: late completions for it are ignored.
    released: bool = False

    def track(self, offset: int, message: Any) -> MessageTicket:
        ticket = MessageTicket(self, offset, message)
        self.pending.append(ticket)
        return ticket

    def advance(self) -> None:
        """Move the committable offset over the finished prefix (Kafka commits offset + 1)."""
        pending = self.pending
        while pending and pending[0].finished:
            self.committable = pending.popleft().offset + 1


class OffsetTracker:
    """Progress of every assigned partition; the only source of offsets to store."""

    def __init__(self) -> None:
        self._partitions: dict[tuple[str, int], PartitionProgress] = {}

    def assign(self, topic: str, partition: int) -> PartitionProgress:
        progress = PartitionProgress(topic, partition)
        self._partitions[(topic, partition)] = progress
        return progress

    def get(self, topic: str, partition: int) -> PartitionProgress:
        progress = self._partitions.get((topic, partition))
        if progress is None:
            # A message can arrive for a partition whose assign callback we have not seen
            # only in tests that assign manually; track it the same way.
            progress = self.assign(topic, partition)
        return progress

    def find(self, topic: str, partition: int) -> PartitionProgress | None:
        """The progress of an assigned partition, or None."""
        return self._partitions.get((topic, partition))

    def release(self, topic: str, partition: int) -> PartitionProgress | None:
        """Forget a revoked or lost partition; its in-flight outputs no longer count."""
        progress = self._partitions.pop((topic, partition), None)
        if progress is not None:
            progress.released = True
        return progress

    def partitions(self) -> list[PartitionProgress]:
        return list(self._partitions.values())

    def in_flight(self) -> int:
        """Messages polled and not yet past the committable point."""
        return sum(len(p.pending) for p in self._partitions.values())

    def to_commit(self) -> list[PartitionProgress]:
        """Partitions whose committable offset moved since the last commit."""
        ready = []
        for progress in self._partitions.values():
            progress.advance()
            if progress.committable is not None and progress.committable != progress.committed:
                ready.append(progress)
        return ready
