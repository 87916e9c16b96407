"""Read the dead-letter topic, every partition, up to its end as of the start.

The end offsets (high watermarks) are taken once, before reading, so a read terminates even
while records keep arriving. The consumer is a plain one built by
:func:`consumer.source.consumer_config` under a throwaway group id (``<group>.dlq-inspect``);
it is assigned partitions (no group membership) and never commits, so reading moves nobody's
offsets. Partitions are read one after the other: output comes in (partition, offset) order.

Progress of a read is one line on stderr, rewritten in place, when stderr is a terminal. It is
drawn here rather than with tqdm, which is a development-only package of this project (the
service's image does not have it; ``tests/unit/test_packaging.py``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from consumer.dlq.records import DeadLetterRecord, parse_record
from consumer.dlq.selection import Selection
from consumer.errors import ConfigError, KafkaKlaviyoError
from consumer.settings import KafkaSettings
from consumer.source import consumer_config

_BATCH = 1000


class DeadLetterTopicError(ConfigError):
    """The dead-letter topic does not exist (a configuration error: exit 2)."""


class DeadLetterReadError(KafkaKlaviyoError):
    """The broker could not be reached or a read failed; the message names the topic."""


class RecordNotFoundError(KafkaKlaviyoError):
    """No dead-letter record at the coordinates asked for."""


class DeadLetterReader:
    """Reads :class:`DeadLetterRecord` objects from one dead-letter topic; use as a context
    manager (or call :meth:`close`)."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        *,
        timeout_s: float = 15.0,
        stall_s: float = 60.0,
        consumer_factory: Callable[[dict[str, Any]], Any] = Consumer,
    ) -> None:
        self.topic = topic
        self._bootstrap = kafka.bootstrap_servers
        self._timeout_s = timeout_s
        self._stall_s = stall_s
        config = consumer_config(
            kafka,
            group_id=f"{kafka.group_id}.dlq-inspect",
            # EOF events end a partition whose last offsets are not records (transaction
            # markers, compaction) without waiting for an offset that never comes.
            overrides={"enable.partition.eof": True},
        )
        try:
            self._consumer = consumer_factory(config)
        except KafkaException as exc:
            raise ConfigError(f"kafka.properties: librdkafka refused the settings: {exc}") from exc

    def __enter__(self) -> DeadLetterReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._consumer.close()

    def extents(self) -> dict[int, tuple[int, int]]:
        """Partition -> (first offset, end offset) now; DeadLetterTopicError if the topic
        does not exist."""
        try:
            metadata = self._consumer.list_topics(self.topic, timeout=self._timeout_s)
        except KafkaException as exc:
            raise self._read_error("cannot list it", exc) from exc
        described = metadata.topics.get(self.topic)
        if described is None or (
            described.error is not None
            and described.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
        ):
            raise DeadLetterTopicError(
                f"dead-letter topic {self.topic!r} does not exist"
                f" (bootstrap servers {self._bootstrap}; set kafka.dead_letter_topic or --topic)"
            )
        if described.error is not None:
            raise DeadLetterReadError(f"dead-letter topic {self.topic}: {described.error.str()}")
        extents: dict[int, tuple[int, int]] = {}
        for partition in sorted(described.partitions):
            try:
                low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(self.topic, partition), timeout=self._timeout_s
                )
            except KafkaException as exc:
                raise self._read_error(f"no end offsets of partition {partition}", exc) from exc
            extents[partition] = (low, high)
        return extents

    def records(
        self,
        *,
        start_ms: int | None = None,
        start_offsets: dict[int, int] | None = None,
        progress: bool = False,
    ) -> Iterator[DeadLetterRecord]:
        """Every record from the start (the beginning, ``start_offsets``, or the first record
        written at or after ``start_ms``) to the end offsets taken now."""
        extents = self.extents()
        starts = {p: max(low, (start_offsets or {}).get(p, low)) for p, (low, _) in extents.items()}
        if start_ms is not None:
            starts = self._starts_by_time(start_ms, extents, starts)
        todo = {p: (starts[p], high) for p, (_, high) in extents.items() if starts[p] < high}
        total = sum(high - start for start, high in todo.values())
        bar = Progress(self.topic, total, sys.stderr) if progress else None
        try:
            for partition, (start, end) in todo.items():
                yield from self._partition(partition, start, end, bar)
        finally:
            if bar is not None:
                bar.close()

    def select(self, selection: Selection, *, progress: bool = False) -> Iterator[DeadLetterRecord]:
        """The records ``selection`` matches; with ``since``, partitions are read only from
        the first record written at that time (a record is written after it failed)."""
        for record in self.records(start_ms=selection.since_ms, progress=progress):
            if selection.matches(record):
                yield record

    def record_at(self, partition: int, offset: int) -> DeadLetterRecord:
        """The record at ``partition:offset``; RecordNotFoundError if there is none."""
        extents = self.extents()
        if partition not in extents:
            raise RecordNotFoundError(
                f"dead-letter topic {self.topic} has no partition {partition}"
                f" (it has {len(extents)})"
            )
        low, high = extents[partition]
        if not low <= offset < high:
            held = f"offsets {low}..{high - 1}" if high > low else "no records"
            raise RecordNotFoundError(
                f"no dead-letter record at {partition}:{offset} in {self.topic}"
                f" (partition {partition} holds {held})"
            )
        for record in self._partition(partition, offset, offset + 1, None):
            if record.offset == offset:
                return record
        raise RecordNotFoundError(
            f"no dead-letter record at {partition}:{offset} in {self.topic} (compacted away?)"
        )

    # -- internals -----------------------------------------------------------------------

    def _starts_by_time(
        self, start_ms: int, extents: dict[int, tuple[int, int]], starts: dict[int, int]
    ) -> dict[int, int]:
        """Skip what was written before ``start_ms`` (offsets_for_times: the first offset
        whose timestamp is at or after it)."""
        wanted = [TopicPartition(self.topic, p, start_ms) for p in extents]
        try:
            found = self._consumer.offsets_for_times(wanted, timeout=self._timeout_s)
        except KafkaException as exc:
            raise self._read_error("cannot look up offsets by time", exc) from exc
        moved = dict(starts)
        for tp in found:
            # -1: nothing written at or after that time in this partition.
            at = tp.offset if tp.offset >= 0 else extents[tp.partition][1]
            moved[tp.partition] = max(starts[tp.partition], at)
        return moved

    def _partition(
        self, partition: int, start: int, end: int, bar: Progress | None
    ) -> Iterator[DeadLetterRecord]:
        consumer = self._consumer
        consumer.assign([TopicPartition(self.topic, partition, start)])
        position = start
        last_progress = time.monotonic()
        try:
            while position < end:
                try:
                    messages = consumer.consume(_BATCH, timeout=1.0)
                except KafkaException as exc:
                    raise self._read_error(f"reading partition {partition}", exc) from exc
                if not messages:
                    if time.monotonic() - last_progress > self._stall_s:
                        raise DeadLetterReadError(
                            f"dead-letter topic {self.topic}: no record from partition"
                            f" {partition} at offset {position} (end {end}) for"
                            f" {self._stall_s:.0f}s (bootstrap servers {self._bootstrap})"
                        )
                    continue
                last_progress = time.monotonic()
                before = position
                for message in messages:
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            position = end
                            break
                        raise DeadLetterReadError(
                            f"dead-letter topic {self.topic}[{partition}]: {error.str()}"
                        )
                    offset = message.offset()
                    if offset is None or offset >= end:
                        position = end
                        break
                    position = offset + 1
                    yield parse_record(message)
                if bar is not None:
                    bar.update(min(position, end) - before)
        finally:
            consumer.unassign()

    def _read_error(self, what: str, exc: KafkaException) -> DeadLetterReadError:
        return DeadLetterReadError(
            f"dead-letter topic {self.topic}: {what}: {exc} (bootstrap servers {self._bootstrap})"
        )


class Progress:
    """``topic: 12,345 / 100,000 records (12%)`` on a terminal, redrawn at most 5 times a
    second and erased at the end."""

    def __init__(self, topic: str, total: int, stream: TextIO, interval_s: float = 0.2) -> None:
        self._topic = topic
        self._total = total
        self._stream = stream
        self._interval_s = interval_s
        self._done = 0
        self._drawn = 0.0

    def update(self, count: int) -> None:
        self._done += count
        now = time.monotonic()
        if now - self._drawn >= self._interval_s:
            self._drawn = now
            share = self._done / self._total if self._total else 1.0
            self._stream.write(
                f"\r{self._topic}: {self._done:,} / {self._total:,} records ({share:.0%})"
            )
            self._stream.flush()

    def close(self) -> None:
        if self._drawn:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
