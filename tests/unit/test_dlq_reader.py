"""The dead-letter reader over a fake consumer: where it starts, where it stops, what it
refuses (the real broker: tests/integration/test_dlq.py)."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, TopicPartition

from consumer.dlq.reader import (
    DeadLetterReader,
    DeadLetterTopicError,
    Progress,
    RecordNotFoundError,
)
from consumer.dlq.selection import Selection
from consumer.settings import KafkaSettings
from tests.fakes import FakeMessage

TOPIC = "shop.events.dlq"


@dataclass
class Eof:
    """What librdkafka hands out at the end of a partition."""

    partition: int

    def error(self) -> KafkaError:
        return KafkaError(KafkaError._PARTITION_EOF)


@dataclass
class FakeConsumer:
    """Partitions of records (offsets may have gaps); ``eof_at`` ends a partition early, as
    transaction markers at its end would."""

    partitions: dict[int, list[FakeMessage]]
    eof_at: dict[int, int] = field(default_factory=dict)
    times: dict[int, int] = field(default_factory=dict)
    exists: bool = True
    assigned: list[TopicPartition] = field(default_factory=list)
    closed: bool = False
    config: dict[str, Any] = field(default_factory=dict)

    def list_topics(self, topic: str, timeout: float) -> Any:
        error = None if self.exists else KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)
        described = SimpleNamespace(error=error, partitions={p: None for p in self.partitions})
        return SimpleNamespace(topics={topic: described})

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> tuple[int, int]:
        records = self.partitions[tp.partition]
        if not records:
            return (0, 0)
        return (records[0].offset(), records[-1].offset() + 1 + self.eof_at.get(tp.partition, 0))

    def offsets_for_times(self, wanted: list[TopicPartition], timeout: float) -> Any:
        return [TopicPartition(tp.topic, tp.partition, self.times[tp.partition]) for tp in wanted]

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = partitions

    def unassign(self) -> None:
        self.assigned = []

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        (tp,) = self.assigned
        out: list[Any] = [m for m in self.partitions[tp.partition] if m.offset() >= tp.offset]
        out.append(Eof(tp.partition))
        self.assigned = [TopicPartition(tp.topic, tp.partition, 1 << 40)]
        return out[:num_messages]

    def close(self) -> None:
        self.closed = True


def records(partition: int, *offsets: int) -> list[FakeMessage]:
    return [
        FakeMessage(TOPIC, partition, o, None, b"v", [("dlq.stage", b"decode")], 1000 * o)
        for o in offsets
    ]


def reader_over(consumer: FakeConsumer) -> DeadLetterReader:
    def factory(config: dict[str, Any]) -> FakeConsumer:
        consumer.config = config
        return consumer

    settings = KafkaSettings(group_id="kafka-klaviyo")
    return DeadLetterReader(settings, TOPIC, consumer_factory=factory, stall_s=1)


def coordinates(reader: DeadLetterReader, **kwargs: Any) -> list[tuple[int, int]]:
    return [(r.partition, r.offset) for r in reader.records(**kwargs)]


def test_every_partition_in_order_with_a_throwaway_group_that_never_commits() -> None:
    consumer = FakeConsumer({0: records(0, 0, 1, 2), 1: [], 2: records(2, 5, 7)})
    with reader_over(consumer) as reader:
        assert coordinates(reader) == [(0, 0), (0, 1), (0, 2), (2, 5), (2, 7)]
    assert consumer.closed
    assert consumer.config["group.id"] == "kafka-klaviyo.dlq-inspect"
    assert consumer.config["enable.auto.commit"] is False
    assert consumer.config["enable.partition.eof"] is True


def test_a_partition_whose_end_is_no_record_ends_at_its_eof() -> None:
    consumer = FakeConsumer({0: records(0, 0, 1)}, eof_at={0: 2})  # end offset 4
    assert coordinates(reader_over(consumer)) == [(0, 0), (0, 1)]


def test_start_offsets_and_times_skip_what_is_before_them() -> None:
    consumer = FakeConsumer({0: records(0, 0, 1, 2, 3), 1: records(1, 0, 1)}, times={0: 2, 1: -1})
    reader = reader_over(consumer)
    assert coordinates(reader, start_offsets={0: 3}) == [(0, 3), (1, 0), (1, 1)]
    # -1: nothing written at or after that time in partition 1.
    assert coordinates(reader, start_ms=2000) == [(0, 2), (0, 3)]
    since = Selection(since=datetime(1970, 1, 1, 0, 0, 2, tzinfo=UTC))
    assert [(r.partition, r.offset) for r in reader.select(since)] == [(0, 2), (0, 3)]


def test_a_missing_topic_names_it() -> None:
    with pytest.raises(
        DeadLetterTopicError, match=r"dead-letter topic 'shop\.events\.dlq' does not exist"
    ):
        reader_over(FakeConsumer({}, exists=False)).extents()


def test_record_at_finds_one_record_or_says_what_the_partition_holds() -> None:
    reader = reader_over(FakeConsumer({0: records(0, 3, 4, 6), 1: []}))
    assert reader.record_at(0, 4).offset == 4
    with pytest.raises(RecordNotFoundError, match=r"partition 0 holds offsets 3\.\.6"):
        reader.record_at(0, 9)
    with pytest.raises(RecordNotFoundError, match="partition 1 holds no records"):
        reader.record_at(1, 0)
    with pytest.raises(RecordNotFoundError, match="has no partition 5"):
        reader.record_at(5, 0)
    with pytest.raises(RecordNotFoundError, match="compacted"):
        reader.record_at(0, 5)


def test_progress_is_one_line_rewritten_and_erased() -> None:
    stream = io.StringIO()
    progress = Progress(TOPIC, 2000, stream, interval_s=0)
    progress.update(500)
    progress.update(1500)
    progress.close()
    assert stream.getvalue() == (
        f"\r{TOPIC}: 500 / 2,000 records (25%)\r{TOPIC}: 2,000 / 2,000 records (100%)\r\x1b[K"
    )
