"""Reading back from a local broker: a group's lag and a topic's records (demo and tests)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition


def _partitions(consumer: Consumer, topic: str) -> list[TopicPartition]:
    metadata = consumer.list_topics(topic, timeout=10)
    return [TopicPartition(topic, p) for p in sorted(metadata.topics[topic].partitions)]


def group_lag(bootstrap_servers: str, group_id: str, topic: str) -> int:
    """Messages of ``topic`` past ``group_id``'s committed offsets (uncommitted = all)."""
    return sum(partition_lags(bootstrap_servers, group_id, topic).values())


def partition_lags(bootstrap_servers: str, group_id: str, topic: str) -> dict[int, int]:
    """Partition -> messages past ``group_id``'s committed offset (uncommitted = all)."""
    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": group_id})
    try:
        lags: dict[int, int] = {}
        for committed in consumer.committed(_partitions(consumer, topic), timeout=10):
            low, high = consumer.get_watermark_offsets(committed, timeout=10)
            start = committed.offset if committed.offset >= 0 else low
            lags[committed.partition] = max(0, high - start)
        return lags
    finally:
        consumer.close()


def committed_offsets(bootstrap_servers: str, group_id: str, topic: str) -> dict[int, int]:
    """Partition -> committed offset (-1001 when nothing was committed)."""
    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": group_id})
    try:
        return {
            tp.partition: tp.offset
            for tp in consumer.committed(_partitions(consumer, topic), timeout=10)
        }
    finally:
        consumer.close()


@dataclass(frozen=True, slots=True)
class TopicRecord:
    """One record read back from a topic."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


def read_topic(bootstrap_servers: str, topic: str, timeout_s: float = 10.0) -> list[TopicRecord]:
    """Every record currently in ``topic`` (reads up to the high watermarks seen at the start)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": f"inspect-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = _partitions(consumer, topic)
        ends = {}
        for tp in partitions:
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            if high > low:
                ends[tp.partition] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        records: list[TopicRecord] = []
        remaining = dict(ends)
        deadline = time.monotonic() + timeout_s
        while remaining and time.monotonic() < deadline:
            for message in consumer.consume(500, timeout=0.5):
                if message.error() is not None:
                    continue
                partition, offset = message.partition() or 0, message.offset() or 0
                headers: dict[str, bytes] = {}
                for name, raw in message.headers() or []:  # type: ignore[str-unpack]
                    headers[name] = raw.encode() if isinstance(raw, str) else raw or b""
                key, value = message.key(), message.value()
                records.append(
                    TopicRecord(
                        partition,
                        offset,
                        key.encode() if isinstance(key, str) else key,
                        value.encode() if isinstance(value, str) else value,
                        headers,
                    )
                )
                if offset + 1 >= remaining.get(partition, 0):
                    remaining.pop(partition, None)
        return records
    finally:
        consumer.close()
