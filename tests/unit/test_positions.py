"""Positions: time parsing, partition selection, offsets named by offsets and times."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import TopicPartition

from consumer.errors import ConfigError
from consumer.positions import Bound, parse_time, partitions, resolve, watermarks


class Metadata:
    """A cluster of topics whose messages have timestamps 1000 * offset."""

    def __init__(self, marks: dict[tuple[str, int], tuple[int, int]]) -> None:
        self.marks = marks

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        numbers = {p: object() for (t, p) in self.marks if t == topic}
        described = SimpleNamespace(partitions=numbers, error=None) if numbers else None
        return SimpleNamespace(topics={topic: described} if described else {})

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float | None = None, cached: bool = False
    ) -> tuple[int, int] | None:
        return self.marks.get((partition.topic, partition.partition))

    def offsets_for_times(
        self, partitions: list[TopicPartition], timeout: float | None = None
    ) -> list[TopicPartition]:
        answers = []
        for tp in partitions:
            low, high = self.marks[(tp.topic, tp.partition)]
            first = max(low, -(-tp.offset // 1000))
            answers.append(TopicPartition(tp.topic, tp.partition, first if first < high else -1))
        return answers


CLUSTER = Metadata({("a", 0): (0, 10), ("a", 1): (5, 8), ("b", 0): (0, 0)})


def test_times_are_iso_8601_utc_by_default_or_epoch_milliseconds() -> None:
    assert parse_time("1700000000000") == 1_700_000_000_000
    assert parse_time("2023-11-14T22:13:20Z") == 1_700_000_000_000
    assert parse_time("2023-11-14T22:13:20") == 1_700_000_000_000
    assert parse_time("2023-11-14T23:13:20+01:00") == 1_700_000_000_000
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_time("yesterday")


def test_partitions_in_order_and_refusals_name_the_topic_or_number() -> None:
    assert partitions(CLUSTER, ["a", "b"]) == [("a", 0), ("a", 1), ("b", 0)]
    assert partitions(CLUSTER, ["a"], only=[1]) == [("a", 1)]
    with pytest.raises(ConfigError, match="topic c does not exist"):
        partitions(CLUSTER, ["c"])
    with pytest.raises(ConfigError, match="--partitions: 7 not in a"):
        partitions(CLUSTER, ["a"], only=[0, 7])


def test_offsets_are_clamped_to_what_the_partition_holds() -> None:
    marks = watermarks(CLUSTER, [("a", 0), ("a", 1)])
    assert resolve(CLUSTER, Bound(offset=6), marks) == {("a", 0): 6, ("a", 1): 6}
    assert resolve(CLUSTER, Bound(offset=0), marks) == {("a", 0): 0, ("a", 1): 5}
    assert resolve(CLUSTER, Bound(offset=99), marks) == {("a", 0): 10, ("a", 1): 8}


def test_a_time_names_the_first_offset_at_or_after_it_or_the_end() -> None:
    marks = watermarks(CLUSTER, [("a", 0), ("a", 1)])
    assert resolve(CLUSTER, Bound(time_ms=6500), marks) == {("a", 0): 7, ("a", 1): 7}
    assert resolve(CLUSTER, Bound(time_ms=50_000), marks) == {("a", 0): 10, ("a", 1): 8}
    assert resolve(CLUSTER, Bound(time_ms=0), marks) == {("a", 0): 0, ("a", 1): 5}


def test_a_bound_is_an_offset_or_a_time() -> None:
    with pytest.raises(ValueError):
        Bound()
    with pytest.raises(ValueError):
        Bound(offset=1, time_ms=2)
    assert Bound(time_ms=1_700_000_000_000).describe() == "2023-11-14T22:13:20+00:00"
