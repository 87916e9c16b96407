"""The local Kafka devstack runs a real broker that clients, restarts and crashes can rely on."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from kafka_klaviyo_dev.kafka import LocalKafka

pytestmark = pytest.mark.integration


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    errors: list[str] = []

    def on_delivery(err: object, _msg: Message) -> None:
        if err is not None:
            errors.append(str(err))

    for i, value in enumerate(values):
        producer.produce(topic, value=value, key=str(i).encode(), on_delivery=on_delivery)
    assert producer.flush(30) == 0, "messages still queued after 30 s"
    assert errors == []


def _consumer(bootstrap: str, group: str) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )


def _consume(consumer: Consumer, count: int, timeout: float = 60.0) -> list[Message]:
    deadline = time.monotonic() + timeout
    got: list[Message] = []
    while len(got) < count and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error() is not None:
            raise KafkaException(msg.error())
        got.append(msg)
    assert len(got) == count, f"consumed {len(got)} of {count} messages in {timeout} s"
    return got


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A broker only this module restarts and kills, so the shared one stays undisturbed."""
    broker = LocalKafka(work_dir=tmp_path_factory.mktemp("own-kafka"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def test_produce_and_consume(kafka_broker: LocalKafka, topic_name: str) -> None:
    kafka_broker.create_topic(topic_name, partitions=2)
    kafka_broker.create_topic(topic_name, partitions=2)  # existing topic is fine
    values = [f"message-{i}".encode() for i in range(5)]
    _produce(kafka_broker.bootstrap_servers, topic_name, values)

    consumer = _consumer(kafka_broker.bootstrap_servers, f"g-{uuid.uuid4().hex}")
    try:
        consumer.subscribe([topic_name])
        got = _consume(consumer, len(values))
    finally:
        consumer.close()
    assert sorted(msg.value() or b"" for msg in got) == sorted(values)
    assert {msg.partition() for msg in got} <= {0, 1}


def test_committed_offset_survives_restart(own_broker: LocalKafka, topic_name: str) -> None:
    own_broker.create_topic(topic_name, partitions=1, config={"retention.ms": "-1"})
    _produce(own_broker.bootstrap_servers, topic_name, [f"v{i}".encode() for i in range(10)])
    group = f"g-{uuid.uuid4().hex}"
    address_before = own_broker.bootstrap_servers

    consumer = _consumer(own_broker.bootstrap_servers, group)
    try:
        consumer.subscribe([topic_name])
        got = _consume(consumer, 4)
        consumer.commit(message=got[-1], asynchronous=False)
    finally:
        consumer.close()
    assert got[-1].offset() == 3

    own_broker.restart()
    assert own_broker.bootstrap_servers == address_before

    consumer = _consumer(own_broker.bootstrap_servers, group)
    try:
        committed = consumer.committed([TopicPartition(topic_name, 0)], timeout=30)
        assert committed[0].offset == 4
        consumer.subscribe([topic_name])
        resumed = _consume(consumer, 6)
    finally:
        consumer.close()
    assert [msg.offset() for msg in resumed] == list(range(4, 10))


def test_kill_then_restart_keeps_topics(own_broker: LocalKafka, topic_name: str) -> None:
    own_broker.create_topic(topic_name, partitions=3)
    _produce(own_broker.bootstrap_servers, topic_name, [b"before-crash"])
    pid = own_broker.pid
    assert pid is not None

    own_broker.kill()
    assert own_broker.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)

    own_broker.restart()
    consumer = _consumer(own_broker.bootstrap_servers, f"g-{uuid.uuid4().hex}")
    try:
        consumer.subscribe([topic_name])
        got = _consume(consumer, 1)
    finally:
        consumer.close()
    assert got[0].value() == b"before-crash"


def test_stop_leaves_no_java_process() -> None:
    broker = LocalKafka()  # no work_dir: a temp dir that stop() must remove
    broker.start()
    pid = broker.pid
    work_dir = broker.work_dir
    assert pid is not None
    assert work_dir.is_dir()

    broker.stop()
    broker.stop()  # idempotent

    assert broker.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    # The JVM ran in its own process group; nothing from that group may survive it.
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    assert not work_dir.exists()
