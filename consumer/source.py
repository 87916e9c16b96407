"""The source step: the librdkafka settings of every client, and the consumer seen by the loop.

:func:`consumer_config`, :func:`producer_config` and :func:`admin_config` are the one place
librdkafka settings are built (the service's consumer and dead-letter producer, the tools that
read a topic, and the admin client of ``group reset``).
``kafka.properties`` pass through under librdkafka's own names, except the keys correctness
depends on, which are pinned here and refused in ``kafka.properties`` with one line naming the
key: offsets are stored and committed by the service only after delivery
(``enable.auto.commit``, ``enable.auto.offset.store``), partitions move incrementally
(``partition.assignment.strategy``), and the dead-letter producer is idempotent and waits for
every replica (``enable.idempotence``, ``acks``).

:class:`KafkaConsumer` is the part of confluent_kafka.Consumer the service uses; tests give a
fake of it. :class:`Source` wraps one for the poll loop: subscribe with rebalance callbacks,
poll, pause and resume by partition, and a close that cannot hang the shutdown.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from confluent_kafka import TopicPartition

from consumer.commit import Committer, OffsetStore, PartitionKey
from consumer.errors import ConfigError
from consumer.logs import KafkaErrorLog, librdkafka_logger
from consumer.messages import KafkaMessage
from consumer.settings import KafkaSettings

log = logging.getLogger(__name__)

#: Consumer keys the service's guarantees rest on: never taken from ``kafka.properties``.
PINNED_CONSUMER: dict[str, Any] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "partition.assignment.strategy": "cooperative-sticky",
}
#: Producer keys the dead-letter guarantees rest on.
PINNED_PRODUCER: dict[str, Any] = {"enable.idempotence": True, "acks": "all"}

# Producer side of "any record the consumer can read can be dead-lettered": librdkafka's own
# limit out of the way (the broker's limit of the dead-letter topic still applies; records
# above it are written cut, see consumer.dead_letter).
_PRODUCER_MAX_BYTES = 100 * 1024 * 1024

RebalanceCallback = Callable[[Any, list[TopicPartition]], None]
CommitCallback = Callable[[Any, list[TopicPartition]], None]


def consumer_config(
    kafka: KafkaSettings,
    *,
    group_id: str | None = None,
    on_commit: CommitCallback | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """librdkafka settings of a group consumer: defaults, then ``kafka.properties``, then
    ``overrides`` (for tools: a throwaway group, ``auto.offset.reset``), then the pinned keys."""
    _refuse_pinned(kafka.properties, PINNED_CONSUMER)
    config: dict[str, Any] = {
        # librdkafka prefetches up to 64 MB by default; the in-flight cap keeps the loop fed
        # anyway, so a deep backlog would only cost memory (measured: -85 MB).
        "queued.max.messages.kbytes": 16384,
        "bootstrap.servers": kafka.bootstrap_servers,
        **kafka.properties,
        "group.id": group_id or kafka.group_id,
        "auto.offset.reset": "earliest",
        **(overrides or {}),
        **PINNED_CONSUMER,
    }
    if on_commit is not None:
        config["on_commit"] = on_commit
    return {**config, **_logging(kafka)}


def producer_config(kafka: KafkaSettings, *, timeout_s: float) -> dict[str, Any]:
    """librdkafka settings of the dead-letter producer; a write not confirmed within
    ``timeout_s`` fails."""
    _refuse_pinned(kafka.properties, PINNED_PRODUCER)
    return {
        "bootstrap.servers": kafka.bootstrap_servers,
        **kafka.properties,
        "linger.ms": 5,
        "message.timeout.ms": int(timeout_s * 1000),
        "message.max.bytes": _PRODUCER_MAX_BYTES,
        **PINNED_PRODUCER,
        **_logging(kafka),
    }


def _logging(kafka: KafkaSettings) -> dict[str, Any]:
    """librdkafka's messages and errors through the service's logger, never raw on stderr."""
    return {"logger": librdkafka_logger(), "error_cb": KafkaErrorLog(kafka.bootstrap_servers)}


#: ``kafka.properties`` keys an admin client shares with the consumer: how to reach and
#: authenticate to the cluster. The consumer's tuning keys would only earn warnings there.
_CONNECTION_KEYS = (
    "security.protocol",
    "sasl.",
    "ssl.",
    "enable.ssl.",
    "client.id",
    "client.dns.lookup",
    "socket.",
    "broker.address.",
)


def admin_config(kafka: KafkaSettings) -> dict[str, Any]:
    """librdkafka settings of an admin client: the bootstrap servers and the connection and
    security keys of ``kafka.properties``."""
    return {
        "bootstrap.servers": kafka.bootstrap_servers,
        **{k: v for k, v in kafka.properties.items() if k.startswith(_CONNECTION_KEYS)},
    }


class KafkaConsumer(OffsetStore, Protocol):
    """The part of confluent_kafka.Consumer the service uses (offsets: see OffsetStore)."""

    def subscribe(
        self,
        topics: list[str],
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
        on_lost: RebalanceCallback | None = None,
    ) -> None: ...

    def consume(self, num_messages: int = 1, timeout: float = -1) -> Sequence[KafkaMessage]: ...

    def pause(self, partitions: list[TopicPartition]) -> None: ...

    def resume(self, partitions: list[TopicPartition]) -> None: ...

    def close(self) -> None: ...

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = -1, cached: bool = False
    ) -> tuple[int, int]: ...


class Source:
    """The group consumer as the poll loop uses it (thread-unsafe, like librdkafka's)."""

    def __init__(self, consumer: KafkaConsumer, topics: Sequence[str]) -> None:
        self.consumer = consumer
        self.topics = tuple(topics)
        self._paused: set[PartitionKey] = set()

    def subscribe(
        self,
        *,
        on_assign: RebalanceCallback,
        on_revoke: RebalanceCallback,
        on_lost: RebalanceCallback,
    ) -> None:
        self.consumer.subscribe(
            list(self.topics), on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost
        )

    def poll(self, max_messages: int, timeout_s: float) -> Sequence[KafkaMessage]:
        return self.consumer.consume(max_messages, timeout=timeout_s)

    def watermarks(self, topic: str, partition: int) -> tuple[int, int]:
        """librdkafka's last known (low, high) offsets of a partition, without asking the
        broker ((-1001, -1001) while unknown)."""
        # Typed as a tuple; librdkafka's binding may still answer None (unknown partition).
        found: tuple[int, int] | None = self.consumer.get_watermark_offsets(
            TopicPartition(topic, partition), cached=True
        )
        return found if found is not None else (-1001, -1001)

    def finished(self, committer: Committer) -> bool:
        """Whether everything to read is read and committed: never, for a group member
        (a bounded source, :class:`consumer.replay.RangeSource`, says otherwise)."""
        return False

    @property
    def paused(self) -> frozenset[PartitionKey]:
        return frozenset(self._paused)

    def pause(self, partitions: Iterable[PartitionKey]) -> None:
        todo = [key for key in partitions if key not in self._paused]
        if todo:
            self.consumer.pause([TopicPartition(t, p) for t, p in todo])
            self._paused.update(todo)

    def resume(self, partitions: Iterable[PartitionKey]) -> None:
        todo = [key for key in partitions if key in self._paused]
        if todo:
            self.consumer.resume([TopicPartition(t, p) for t, p in todo])
            self._paused.difference_update(todo)

    def close(self, timeout_s: float) -> bool:
        """Leave the group; False if that did not finish within ``timeout_s`` (an unreachable
        broker), in which case the process exits without waiting for it."""
        done = threading.Event()

        def close() -> None:
            try:
                self.consumer.close()
            except Exception as exc:  # closing is best effort: nothing is committed here
                log.warning("closing the consumer failed: %s", exc)
            finally:
                done.set()

        threading.Thread(target=close, name="consumer-close", daemon=True).start()
        if done.wait(timeout_s):
            return True
        log.warning("the consumer did not leave the group within %.0fs; exiting anyway", timeout_s)
        return False


def _refuse_pinned(properties: dict[str, Any], pinned: dict[str, Any]) -> None:
    for key in properties:
        if key in pinned:
            raise ConfigError(
                f"kafka.properties.{key}: set by kafka-klaviyo ({pinned[key]!r}) because its "
                "delivery guarantees depend on it; remove it"
            )
