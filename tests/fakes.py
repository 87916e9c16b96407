"""Fakes of the Kafka edges, behind the service's own protocols (unit and component tests).

:class:`FakeBroker` holds topics (partitions of :class:`FakeMessage`) and committed offsets per
group. :class:`FakeConsumer` implements :class:`consumer.source.KafkaConsumer` over it, with
rebalances a test schedules (served, like librdkafka's callbacks, inside the next
``consume``); :class:`FakeProducer` implements :class:`consumer.dead_letter.KafkaProducer`,
confirming writes when polled or flushed, or failing them, or holding them unconfirmed, as a
test says. Nothing else is faked: the pipeline, committer, scheduler, sender, client and
dead-letter writer under test are the real ones.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from consumer.commit import MessageTicket, PartitionProgress

Key = tuple[str, int]


@dataclass
class FakeMessage:
    """A record as confluent_kafka.Message shows it."""

    _topic: str
    _partition: int
    _offset: int
    _key: bytes | None
    _value: bytes | None
    _headers: list[tuple[str, bytes | str | None]] | None = None
    _timestamp: int = 0
    _error: KafkaError | None = None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes | str | None]] | None:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (1, self._timestamp)

    def error(self) -> KafkaError | None:
        return self._error

    def header(self, name: str) -> str | None:
        for key, value in self._headers or ():
            if key == name:
                return value.decode() if isinstance(value, bytes) else value
        return None


def message(
    offset: int = 0,
    *,
    partition: int = 0,
    topic: str = "t",
    key: bytes | None = None,
    value: bytes | None = b"",
    headers: list[tuple[str, bytes | str | None]] | None = None,
    timestamp: int = 0,
) -> FakeMessage:
    """One message, for tests that need a ticket's message but no broker."""
    return FakeMessage(topic, partition, offset, key, value, headers, timestamp)


class Tickets:
    """Tickets of one partition, offsets counting up: ``tickets()`` is the next one."""

    def __init__(self, partition: int = 0, topic: str = "t") -> None:
        self.progress = PartitionProgress(topic, partition)
        self._next = 0

    def __call__(self) -> MessageTicket:
        offset, self._next = self._next, self._next + 1
        return self.progress.track(offset, message(offset, partition=self.progress.partition))


class FakeBroker:
    """Topics and committed offsets, shared by the fake clients of one test."""

    def __init__(self) -> None:
        self.topics: dict[str, list[list[FakeMessage]]] = {}
        self.committed: dict[tuple[str, str, int], int] = {}
        # Every commit the broker accepted, in order: (group, topic, partition, offset).
        self.commit_log: list[tuple[str, str, int, int]] = []
        self.lock = threading.Lock()

    def create(self, topic: str, partitions: int = 1) -> None:
        self.topics.setdefault(topic, [[] for _ in range(partitions)])

    def append(
        self,
        topic: str,
        partition: int,
        value: bytes | None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes | str | None]] | None = None,
    ) -> FakeMessage:
        with self.lock:
            log = self.topics[topic][partition]
            message = FakeMessage(
                topic, partition, len(log), key, value, headers, int(time.time() * 1000)
            )
            log.append(message)
            return message

    def records(self, topic: str) -> list[FakeMessage]:
        with self.lock:
            return [m for log in self.topics.get(topic, []) for m in log]

    def committed_offset(self, group: str, topic: str, partition: int) -> int | None:
        with self.lock:
            return self.committed.get((group, topic, partition))


class FakeConsumer:
    """confluent_kafka.Consumer as the service uses it, over a :class:`FakeBroker`."""

    def __init__(self, config: dict[str, Any], broker: FakeBroker) -> None:
        self.config = config
        self.broker = broker
        self.group = str(config["group.id"])
        self._on_commit: Callable[[KafkaError | None, list[TopicPartition]], None] | None = (
            config.get("on_commit")
        )
        self._callbacks: dict[str, Callable[..., None] | None] = {}
        self._topics: list[str] = []
        self._position: dict[Key, int] = {}
        self._stored: dict[Key, int] = {}
        self.paused: set[Key] = set()
        self._events: deque[tuple[str, list[Key]]] = deque()
        self._pending_callbacks: deque[tuple[KafkaError | None, list[TopicPartition]]] = deque()
        self.closed = False
        # Rebalance events served so far (assign, revoke and lost callbacks run).
        self.rebalances = 0
        # Test knobs.
        self.fail_commits = False

    # -- the protocol --------------------------------------------------------------------

    def subscribe(
        self,
        topics: list[str],
        on_assign: Callable[..., None] | None = None,
        on_revoke: Callable[..., None] | None = None,
        on_lost: Callable[..., None] | None = None,
    ) -> None:
        self._topics = list(topics)
        self._callbacks = {"assign": on_assign, "revoke": on_revoke, "lost": on_lost}
        everything = [(topic, p) for topic in topics for p in range(len(self.broker.topics[topic]))]
        self._events.append(("assign", everything))

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[FakeMessage]:
        self._serve()
        out: list[FakeMessage] = []
        with self.broker.lock:
            for key, position in list(self._position.items()):
                if key in self.paused:
                    continue
                log = self.broker.topics[key[0]][key[1]]
                take = log[position : position + num_messages - len(out)]
                out += take
                self._position[key] = position + len(take)
                if len(out) >= num_messages:
                    break
        if not out and timeout > 0:
            time.sleep(min(timeout, 0.005))
        return out

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused.update((tp.topic, tp.partition) for tp in partitions)

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused.difference_update((tp.topic, tp.partition) for tp in partitions)

    def store_offsets(
        self, message: Any = None, offsets: list[TopicPartition] | None = None
    ) -> None:
        for tp in offsets or ():
            key = (tp.topic, tp.partition)
            if key not in self._position:
                raise KafkaException(KafkaError(KafkaError._STATE, "partition not assigned"))
            self._stored[key] = tp.offset

    def commit(self, *, asynchronous: bool = True) -> list[TopicPartition] | None:
        if self.fail_commits:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "broker down"))
        if not self._stored:
            raise KafkaException(KafkaError(KafkaError._NO_OFFSET, "no offset stored"))
        done = []
        with self.broker.lock:
            for (topic, partition), offset in self._stored.items():
                self.broker.committed[(self.group, topic, partition)] = offset
                self.broker.commit_log.append((self.group, topic, partition, offset))
                done.append(TopicPartition(topic, partition, offset))
        self._stored.clear()
        if asynchronous:
            self._pending_callbacks.append((None, done))
            return None
        return done

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = -1, cached: bool = False
    ) -> tuple[int, int]:
        with self.broker.lock:
            return (0, len(self.broker.topics[partition.topic][partition.partition]))

    def close(self) -> None:
        if self._position and self._callbacks.get("revoke"):
            self._call("revoke", list(self._position))
        self._position.clear()
        self.closed = True

    # -- what a test does ----------------------------------------------------------------

    def assignment(self) -> list[Key]:
        return list(self._position)

    def revoke(self, partitions: Iterable[Key]) -> None:
        """Revoke at the next consume (a cooperative rebalance)."""
        self._events.append(("revoke", list(partitions)))

    def lose(self, partitions: Iterable[Key]) -> None:
        self._events.append(("lost", list(partitions)))

    def assign(self, partitions: Iterable[Key]) -> None:
        self._events.append(("assign", list(partitions)))

    # -- internals -----------------------------------------------------------------------

    def _serve(self) -> None:
        while self._pending_callbacks:
            error, partitions = self._pending_callbacks.popleft()
            if self._on_commit is not None:
                self._on_commit(error, partitions)
        while self._events:
            kind, keys = self._events.popleft()
            self.rebalances += 1
            if kind == "assign":
                for key in keys:
                    committed = self.broker.committed_offset(self.group, *key)
                    self._position[key] = committed if committed is not None else 0
                self._call("assign", keys)
            else:
                self._call(kind, keys)
                for key in keys:
                    self._position.pop(key, None)
                    self._stored.pop(key, None)
                    self.paused.discard(key)

    def _call(self, kind: str, keys: list[Key]) -> None:
        callback = self._callbacks.get(kind)
        if callback is not None:
            callback(self, [TopicPartition(t, p) for t, p in keys])


@dataclass
class _Pending:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | str | None]]
    on_delivery: Callable[[KafkaError | None, Any], None] | None


@dataclass
class FakeProducer:
    """confluent_kafka.Producer as the dead-letter writer uses it, over a :class:`FakeBroker`.

    ``mode``: "confirm" (the broker takes every write when polled), "fail" (every write fails
    with ``fail_code``), "hold" (writes are never confirmed: a broker that does not answer),
    "on_flush" (confirmed only by a flush: writes that need the time a flush gives them).
    ``max_bytes`` is librdkafka's own limit (produce raises), ``topic_max_bytes`` the
    dead-letter topic's (the delivery report fails with MSG_SIZE_TOO_LARGE).
    """

    config: dict[str, Any]
    broker: FakeBroker
    mode: str = "confirm"
    fail_code: int = KafkaError._MSG_TIMED_OUT
    max_bytes: int | None = None
    topic_max_bytes: int | None = None
    queue: deque[_Pending] = field(default_factory=deque)
    produced: int = 0
    closed: bool = False

    def produce(
        self,
        topic: str,
        value: str | bytes | None = None,
        key: str | bytes | None = None,
        partition: int = -1,
        callback: Any = None,
        on_delivery: Any = None,
        timestamp: int = 0,
        headers: Any = None,
    ) -> None:
        value_b = value.encode() if isinstance(value, str) else value
        key_b = key.encode() if isinstance(key, str) else key
        headers = list(headers or [])
        size = _size(key_b, value_b, headers)
        if self.max_bytes is not None and size > self.max_bytes:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "too large"))
        self.produced += 1
        self.queue.append(_Pending(topic, key_b, value_b, headers, on_delivery or callback))

    def poll(self, timeout: float = -1) -> int:
        return 0 if self.mode == "on_flush" else self._serve()

    def flush(self, timeout: float = -1) -> int:
        if self.mode == "on_flush" and timeout <= 0:
            return 0  # no time given: nothing can be confirmed
        served = self._serve()
        if self.queue and timeout > 0:
            time.sleep(min(timeout, 0.05))
        return served

    def purge(self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True) -> None:
        self.queue.clear()

    def close(self) -> bool:
        self.closed = True
        return True

    def _serve(self) -> int:
        if self.mode == "hold":
            return 0
        served = 0
        while self.queue:
            pending = self.queue.popleft()
            served += 1
            error: KafkaError | None = None
            if self.mode == "fail":
                error = KafkaError(self.fail_code, "write failed")
            elif (
                self.topic_max_bytes is not None
                and _size(pending.key, pending.value, pending.headers) > self.topic_max_bytes
            ):
                error = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "record too large for topic")
            elif pending.topic not in self.broker.topics:
                error = KafkaError(KafkaError._UNKNOWN_TOPIC, "unknown topic")
            message = None
            if error is None:
                message = self.broker.append(
                    pending.topic, 0, pending.value, pending.key, pending.headers
                )
            if pending.on_delivery is not None:
                pending.on_delivery(error, message)
        return served


def _size(key: bytes | None, value: bytes | None, headers: list[Any]) -> int:
    header_bytes = sum(len(k) + len(v or b"") for k, v in headers)
    return len(key or b"") + len(value or b"") + header_bytes


class FlakyRegistry:
    """Confluent's in-memory Schema Registry (``mock://``), refusing with 503 while ``down``
    is set: a Schema Registry outage at the edge of the component tier."""

    def __init__(self, name: str = "component") -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        self.inner = SchemaRegistryClient.new_client({"url": f"mock://{name}"})
        self.down = threading.Event()
        self.asked = 0

    def get_schema(self, schema_id: int, *args: Any, **kwargs: Any) -> Any:
        from confluent_kafka.schema_registry import SchemaRegistryError

        self.asked += 1
        if self.down.is_set():
            raise SchemaRegistryError(503, 50301, "registry unavailable")
        return self.inner.get_schema(schema_id, *args, **kwargs)

    def get_version(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.get_version(*args, **kwargs)

