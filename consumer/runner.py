"""``kafka-klaviyo run``: the poll loop, backpressure, rebalances, signals and shutdown.

The runner constructs nothing: :func:`consumer.compose.build_service` gives it the parts. The
loop polls a chunk of messages, hands each to the :class:`~consumer.pipeline.Pipeline`, ticks
it, and pauses every assigned partition while too many messages are in flight (resuming at
half the cap), and the partitions the pipeline parked while the Schema Registry is down.
Rebalances use the cooperative-sticky assignor: a revoked partition's work is finished and
committed before it is given up (only that partition's); a lost one is dropped without a
commit.

SIGTERM or SIGINT: stop polling, deliver what is in flight within the grace period, commit,
leave the group; exit 0. A fatal error (401/403 from Klaviyo, a request Klaviyo refuses as a
whole, the dead-letter topic not writable or its limit passed) and any unexpected error stop
at once with one masked line, commit nothing more, and exit 3.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

from confluent_kafka import KafkaError, TopicPartition

from consumer.commit import PartitionKey
from consumer.compose import Service
from consumer.errors import FATAL_ERRORS, KafkaKlaviyoError
from consumer.exit_codes import EXIT_FATAL, EXIT_OK
from consumer.metrics import LagSampler
from consumer.redact import mask

log = logging.getLogger(__name__)

# A revoke waits at most this long for the revoked partitions' deliveries: the group waits for
# the rebalance to complete, and another member redelivers whatever was left.
_REVOKE_TIMEOUT_S = 30.0
# Leaving the group takes well under a second; an unreachable broker must not hold the exit.
_CLOSE_TIMEOUT_S = 5.0


class Runner:
    """One consumer-group member delivering to Klaviyo until stopped."""

    def __init__(self, service: Service, *, on_turn: Callable[[], None] | None = None) -> None:
        self._service = service
        # Called once per loop turn on the loop's thread (a replay's progress display).
        self._on_turn = on_turn
        self._settings = service.settings
        self._source = service.source
        self.pipeline = service.pipeline
        self.metrics = service.metrics
        self._stop_requested = threading.Event()
        self._fatal = False
        # Set once the final commit is done: the revoke that closing triggers has nothing
        # left to do and must not wait again.
        self._stopping = False
        self._over_cap = False
        self._lag = LagSampler(
            self.metrics, self._source.watermarks, self.pipeline.committer.committed
        )

    # -- public --------------------------------------------------------------------------

    def request_stop(self, *_: object) -> None:
        """Ask the loop to drain and stop (the SIGTERM/SIGINT handler)."""
        self._stop_requested.set()

    def install_signal_handlers(self) -> None:
        def handler(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s: draining and leaving the group", signal.Signals(signum).name)
            self.request_stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def run(self) -> int:
        """Consume until stopped; returns the process exit code."""
        server = self._service.metrics_server
        try:
            self._source.subscribe(
                on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
            )
            log.info(
                "consuming %s as group %s",
                ",".join(self._source.topics),
                self._service.group_id,
            )
            tune_garbage_collector()
            if server is not None:
                server.start()
                log.info("metrics and health on port %d", server.port)
            self._loop()
            return self._drain_and_leave()
        except FATAL_ERRORS as exc:
            return self._stop_fatally(str(exc))
        except KafkaKlaviyoError as exc:
            return self._stop_fatally(f"{type(exc).__name__}: {exc}")
        except Exception as exc:
            # A bug, or a library failing in a way nobody translated: stop, commit nothing
            # more; the traceback goes into the same (masked) log line.
            return self._stop_fatally(f"unexpected {type(exc).__name__}: {exc}", exc)
        finally:
            if server is not None:
                server.stop()

    # -- the loop ------------------------------------------------------------------------

    def _loop(self) -> None:
        kafka = self._settings.kafka
        committer = self.pipeline.committer
        while not self._stop_requested.is_set() and not self._source.finished(committer):
            self.metrics.polled()
            for message in self._source.poll(kafka.poll_batch_size, 0.1):
                error = message.error()
                if error is not None:
                    self._on_consume_error(error)
                    continue
                self.pipeline.process(message)
            self.pipeline.tick()
            self._apply_backpressure()
            self._lag.sample(self.pipeline.committer.assigned())
            if self._on_turn is not None:
                self._on_turn()

    def _apply_backpressure(self) -> None:
        cap = self._settings.delivery.max_in_flight_messages
        in_flight = self.pipeline.in_flight_messages()
        self.metrics.in_flight.set(in_flight)
        if not self._over_cap and in_flight >= cap:
            self._over_cap = True
            log.info("paused: %d messages in flight (cap %d)", in_flight, cap)
        elif self._over_cap and in_flight <= cap // 2:
            self._over_cap = False
            log.info("resumed: %d messages in flight", in_flight)
        assigned = self.pipeline.committer.assigned()
        held = set(assigned) if self._over_cap else self.pipeline.parked_partitions()
        self._source.pause(held)
        self._source.resume(key for key in assigned if key not in held)
        self.metrics.paused.set(len(self._source.paused))

    def _on_consume_error(self, error: KafkaError) -> None:
        if error.fatal():
            raise KafkaKlaviyoError(f"Kafka consumer failed: {error.str()}")
        # Transport hiccups and broker restarts: librdkafka reconnects by itself.
        log.warning("consumer: %s", error.str())

    # -- shutdown ------------------------------------------------------------------------

    def _drain_and_leave(self) -> int:
        grace = self._settings.delivery.shutdown_grace_s
        if not self.pipeline.drain(grace):
            log.warning(
                "grace period of %.0fs ended with deliveries in flight; "
                "their offsets stay uncommitted and will be redelivered",
                grace,
            )
        self._stopping = True
        self._service.abort.set()
        self.pipeline.close()
        self._source.close(timeout_s=_CLOSE_TIMEOUT_S)
        self._service.dead_letters.close()
        self._service.close_clients()
        log.info(
            "stopped: %d items delivered, %d messages dead-lettered",
            self.metrics.total_delivered(),
            self.metrics.total("kafka_klaviyo_messages", outcome="dead_lettered"),
        )
        return EXIT_OK

    def _stop_fatally(self, reason: str, exc: BaseException | None = None) -> int:
        self._fatal = True
        self.metrics.fatal = True
        self._service.abort.set()
        log.error(
            "stopping without committing unfinished work: %s", mask(reason), exc_info=exc
        )
        self.pipeline.close()
        self._source.close(timeout_s=_CLOSE_TIMEOUT_S)
        self._service.dead_letters.close(abandon=True)
        self._service.close_clients()
        return EXIT_FATAL

    # -- consumer callbacks --------------------------------------------------------------

    def _on_assign(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        self.pipeline.assign(_keys(partitions))
        self.metrics.assigned_partitions += len(partitions)
        log.info("assigned %s", _names(partitions))
        # A paused loop stays paused for its new partitions too (next turn).
        self._apply_backpressure()

    def _on_revoke(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        if self._fatal or self._stopping:
            return
        keys = list(_keys(partitions))
        timeout = min(self._settings.delivery.shutdown_grace_s, _REVOKE_TIMEOUT_S)
        if not self.pipeline.revoke(keys, timeout):
            log.warning(
                "revoked %s with work unfinished after %.0fs: another member redelivers it",
                _names(partitions),
                timeout,
            )
        self._source.resume(keys)  # a partition assigned again later starts unpaused
        self.metrics.assigned_partitions -= len(partitions)
        log.info("revoked %s", _names(partitions))

    def _on_lost(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        keys = list(_keys(partitions))
        self.pipeline.lose(keys)
        self._source.resume(keys)
        self.metrics.assigned_partitions -= len(partitions)
        log.warning("lost %s: their in-flight work is dropped", _names(partitions))


def _keys(partitions: Iterable[TopicPartition]) -> Iterable[PartitionKey]:
    return ((tp.topic, tp.partition) for tp in partitions)


def _names(partitions: list[TopicPartition]) -> str:
    return ",".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"


def tune_garbage_collector() -> None:
    """Freeze what startup built out of every later garbage collection; call once ready.

    The compiled rules, schemas, phone metadata and clients live as long as the process;
    without the freeze each full collection walks them again (``make bench``, scenario (a):
    the collector's CPU per event halved). A higher young threshold was tried too: no faster
    on long runs, and 130 MB more peak memory.
    """
    gc.freeze()
