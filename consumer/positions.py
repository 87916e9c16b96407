"""Positions in topics: the partitions a command names, and the offsets that bounds name.

Replay, ``group reset`` and the dead-letter tools all turn what an operator typed (topics,
``--partitions``, an offset or a time) into one offset per partition. The rules, in one place:

- an offset is clamped to what the partition still holds (``[low, high]`` watermarks);
- a time names the first offset whose timestamp is at or after it (the end, ``high``, when
  no message is that late);
- times are ISO-8601 (a time without a zone is UTC) or milliseconds since the epoch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from confluent_kafka import KafkaException, TopicPartition

from consumer.errors import ConfigError

PartitionKey = tuple[str, int]


class TopicMetadata(Protocol):
    """The metadata calls of a confluent_kafka.Consumer that positions need."""

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any: ...

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = -1, cached: bool = False
    ) -> tuple[int, int] | None: ...

    def offsets_for_times(
        self, partitions: list[TopicPartition], timeout: float = -1
    ) -> list[TopicPartition]: ...


def parse_time(text: str) -> int:
    """Milliseconds since the epoch of an ISO-8601 time (UTC when it names no zone) or of a
    number of milliseconds; ValueError naming the accepted forms otherwise."""
    stripped = text.strip()
    if stripped.isdigit():
        return int(stripped)
    try:
        moment = datetime.fromisoformat(stripped.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use ISO-8601 (2026-11-30T12:00:00Z) or epoch milliseconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def format_time(ms: int) -> str:
    """An epoch-milliseconds time as ISO-8601 UTC (seconds precision)."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


@dataclass(frozen=True, slots=True)
class Bound:
    """An offset or a time naming one position in every partition (exactly one is set)."""

    offset: int | None = None
    time_ms: int | None = None

    def __post_init__(self) -> None:
        if (self.offset is None) == (self.time_ms is None):
            raise ValueError("a bound is an offset or a time")

    def describe(self) -> str:
        if self.offset is not None:
            return f"offset {self.offset}"
        return format_time(self.time_ms or 0)


def partitions(
    metadata: TopicMetadata,
    topics: Sequence[str],
    *,
    only: Iterable[int] | None = None,
    timeout_s: float = 10.0,
) -> list[PartitionKey]:
    """Every partition of ``topics`` (or only the numbers in ``only``), in order.

    ConfigError for a topic the cluster does not have or a partition number none of the
    topics has."""
    wanted = set(only) if only is not None else None
    keys: list[PartitionKey] = []
    seen: set[int] = set()
    for topic in topics:
        try:
            described = metadata.list_topics(topic, timeout=timeout_s).topics.get(topic)
        except KafkaException as exc:
            raise ConfigError(f"cannot read the metadata of topic {topic}: {exc}") from exc
        if described is None or described.error is not None or not described.partitions:
            raise ConfigError(f"topic {topic} does not exist")
        numbers = sorted(described.partitions)
        seen.update(numbers)
        keys += [(topic, n) for n in numbers if wanted is None or n in wanted]
    missing = sorted(wanted - seen) if wanted is not None else []
    if missing:
        raise ConfigError(
            f"--partitions: {','.join(map(str, missing))} not in {','.join(topics)}"
        )
    return keys


def watermarks(
    metadata: TopicMetadata, keys: Iterable[PartitionKey], *, timeout_s: float = 10.0
) -> dict[PartitionKey, tuple[int, int]]:
    """The (low, high) watermark offsets of each partition: what it holds is [low, high)."""
    found: dict[PartitionKey, tuple[int, int]] = {}
    for topic, number in keys:
        try:
            marks = metadata.get_watermark_offsets(
                TopicPartition(topic, number), timeout=timeout_s
            )
        except KafkaException as exc:
            raise ConfigError(f"cannot read the offsets of {topic}[{number}]: {exc}") from exc
        if marks is None:
            raise ConfigError(f"cannot read the offsets of {topic}[{number}]")
        found[(topic, number)] = (int(marks[0]), int(marks[1]))
    return found


def resolve(
    metadata: TopicMetadata,
    bound: Bound,
    marks: dict[PartitionKey, tuple[int, int]],
    *,
    timeout_s: float = 10.0,
) -> dict[PartitionKey, int]:
    """The offset ``bound`` names in each partition of ``marks`` (see the module's rules)."""
    if bound.offset is not None:
        return {key: min(max(bound.offset, low), high) for key, (low, high) in marks.items()}
    assert bound.time_ms is not None
    asked = [TopicPartition(topic, number, bound.time_ms) for topic, number in marks]
    try:
        answers = metadata.offsets_for_times(asked, timeout=timeout_s)
    except KafkaException as exc:
        raise ConfigError(f"cannot look up offsets for {bound.describe()}: {exc}") from exc
    offsets: dict[PartitionKey, int] = {}
    for tp in answers:
        key = (tp.topic, tp.partition)
        if tp.error is not None:
            raise ConfigError(f"cannot look up {tp.topic}[{tp.partition}] at {bound.describe()}")
        low, high = marks[key]
        # -1: no message at or after that time.
        offsets[key] = high if tp.offset < 0 else min(max(tp.offset, low), high)
    return offsets
