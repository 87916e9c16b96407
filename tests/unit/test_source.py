"""librdkafka settings keep the keys the guarantees rest on; Source pauses, resumes, closes."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from confluent_kafka import TopicPartition

from consumer.errors import ConfigError
from consumer.settings import KafkaSettings
from consumer.source import Source, consumer_config, producer_config

CONSUMER_PINNED = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "partition.assignment.strategy": "cooperative-sticky",
}
PRODUCER_PINNED = {"enable.idempotence": True, "acks": "all"}

_TRY = {
    "enable.auto.commit": True,
    "enable.auto.offset.store": True,
    "partition.assignment.strategy": "range",
    "enable.idempotence": False,
    "acks": "1",
}


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(CONSUMER_PINNED))
def test_consumer_keys_the_guarantees_rest_on_cannot_be_set_in_properties(key: str) -> None:
    kafka = KafkaSettings(properties={key: _TRY[key]})
    with pytest.raises(ConfigError) as caught:
        consumer_config(kafka)
    assert f"kafka.properties.{key}" in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("key", sorted(PRODUCER_PINNED))
def test_producer_keys_the_guarantees_rest_on_cannot_be_set_in_properties(key: str) -> None:
    kafka = KafkaSettings(properties={key: _TRY[key]})
    with pytest.raises(ConfigError) as caught:
        producer_config(kafka, timeout_s=30)
    assert f"kafka.properties.{key}" in str(caught.value)


def test_pinned_consumer_values_win_over_tool_overrides() -> None:
    overrides = {k: v for k, v in _TRY.items() if k in CONSUMER_PINNED}
    config = consumer_config(KafkaSettings(), overrides=overrides)
    for key, value in CONSUMER_PINNED.items():
        assert config[key] == value


def test_pinned_values_are_in_the_built_configs() -> None:
    kafka = KafkaSettings(properties={"security.protocol": "SASL_SSL"})
    consumer = consumer_config(kafka)
    producer = producer_config(kafka, timeout_s=30)
    assert {k: consumer[k] for k in CONSUMER_PINNED} == CONSUMER_PINNED
    assert {k: producer[k] for k in PRODUCER_PINNED} == PRODUCER_PINNED


def test_other_properties_pass_through_under_their_own_names() -> None:
    properties = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "queued.max.messages.kbytes": 1024,
        "session.timeout.ms": 45000,
    }
    kafka = KafkaSettings(bootstrap_servers="broker:9092", group_id="g1", properties=properties)
    consumer = consumer_config(kafka)
    producer = producer_config(kafka, timeout_s=30)
    for key, value in properties.items():
        assert consumer[key] == value
        assert producer[key] == value
    assert consumer["bootstrap.servers"] == producer["bootstrap.servers"] == "broker:9092"
    assert consumer["group.id"] == "g1"


def test_tool_group_id_and_overrides_replace_the_settings() -> None:
    def on_commit(*_: Any) -> None:
        return None

    config = consumer_config(
        KafkaSettings(group_id="live"),
        group_id="replay-1",
        on_commit=on_commit,
        overrides={"auto.offset.reset": "latest"},
    )
    assert config["group.id"] == "replay-1"
    assert config["auto.offset.reset"] == "latest"
    assert config["on_commit"] is on_commit


@pytest.mark.parametrize(("timeout_s", "ms"), [(30, 30000), (7.5, 7500), (0.25, 250)])
def test_producer_message_timeout_follows_the_write_timeout(timeout_s: float, ms: int) -> None:
    assert producer_config(KafkaSettings(), timeout_s=timeout_s)["message.timeout.ms"] == ms


def test_producer_takes_records_of_at_least_100_mib() -> None:
    assert producer_config(KafkaSettings(), timeout_s=30)["message.max.bytes"] >= 100 * 1024 * 1024


# -- Source ----------------------------------------------------------------------------------


class FakeConsumer:
    def __init__(self, close_blocks: threading.Event | None = None) -> None:
        self.paused: list[list[tuple[str, int]]] = []
        self.resumed: list[list[tuple[str, int]]] = []
        self.closes = 0
        self._close_blocks = close_blocks
        self.close_error: Exception | None = None

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused.append([(tp.topic, tp.partition) for tp in partitions])

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.resumed.append([(tp.topic, tp.partition) for tp in partitions])

    def close(self) -> None:
        self.closes += 1
        if self._close_blocks is not None:
            self._close_blocks.wait()
        if self.close_error is not None:
            raise self.close_error


def test_pause_asks_the_consumer_only_for_partitions_not_paused_yet() -> None:
    consumer = FakeConsumer()
    source = Source(consumer, ["t"])  # type: ignore[arg-type]
    source.pause([("t", 0), ("t", 1)])
    source.pause([("t", 1), ("t", 2)])
    source.pause([("t", 0)])
    assert consumer.paused == [[("t", 0), ("t", 1)], [("t", 2)]]
    assert source.paused == {("t", 0), ("t", 1), ("t", 2)}


def test_resume_asks_the_consumer_only_for_paused_partitions() -> None:
    consumer = FakeConsumer()
    source = Source(consumer, ["t"])  # type: ignore[arg-type]
    source.resume([("t", 0)])
    assert consumer.resumed == []
    source.pause([("t", 0), ("t", 1)])
    source.resume([("t", 1), ("t", 9)])
    source.resume([("t", 1)])
    assert consumer.resumed == [[("t", 1)]]
    assert source.paused == {("t", 0)}
    source.pause([("t", 1)])
    assert consumer.paused[-1] == [("t", 1)]  # paused again after the resume


def test_close_returns_false_without_hanging_when_the_consumer_close_blocks() -> None:
    release = threading.Event()
    consumer = FakeConsumer(close_blocks=release)
    source = Source(consumer, ["t"])  # type: ignore[arg-type]
    started = time.monotonic()
    try:
        assert source.close(timeout_s=0.3) is False
        elapsed = time.monotonic() - started
        assert elapsed >= 0.3
        assert elapsed < 10  # generous: it must not wait for the blocked close
        assert consumer.closes == 1
    finally:
        release.set()


def test_close_returns_true_when_the_consumer_leaves_in_time() -> None:
    consumer = FakeConsumer()
    assert Source(consumer, ["t"]).close(timeout_s=10) is True  # type: ignore[arg-type]
    assert consumer.closes == 1


def test_close_returns_true_when_the_consumer_close_fails() -> None:
    consumer = FakeConsumer()
    consumer.close_error = RuntimeError("broker gone")
    assert Source(consumer, ["t"]).close(timeout_s=10) is True  # type: ignore[arg-type]
