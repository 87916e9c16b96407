"""``kafka-klaviyo run``: consumer-group membership, the poll loop, backpressure and shutdown.

The loop polls a chunk of messages, hands each to the :class:`~consumer.pipeline.Pipeline`,
ticks it, and pauses every assigned partition while too many messages are in flight
(resuming at half the cap). Rebalances use the cooperative-sticky assignor: a revoked partition
is flushed and committed before it is given up; a lost one is dropped without a commit.

SIGTERM or SIGINT: stop polling, deliver what is in flight within the grace period, commit,
leave the group; exit 0. A fatal error (401/403 from Klaviyo, dead-letter topic not writable)
stops at once with one line, commits nothing more, and exits 3.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
from types import FrameType
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient

from consumer.commit import PartitionProgress
from consumer.dead_letter import DeadLetterBudget, DeadLetterWriter
from consumer.decode import Decoder
from consumer.deliver.client import KlaviyoClient
from consumer.deliver.sender import Backoff, Sender
from consumer.endpoints import Endpoint
from consumer.errors import AuthenticationError, DeadLetterError, KafkaKlaviyoError
from consumer.messages import DEFAULT_ACCOUNT
from consumer.metrics import Metrics, MetricsServer
from consumer.pipeline import Pipeline, Translator
from consumer.routing import AccountRouter
from consumer.rules import rules_from_settings
from consumer.schemas import SchemaCatalog
from consumer.settings import Settings

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FATAL = 3


def kafka_client_config(settings: Settings) -> dict[str, Any]:
    """librdkafka settings shared by the consumer and the dead-letter producer."""
    return {"bootstrap.servers": settings.kafka.bootstrap_servers, **settings.kafka.properties}


class Runner:
    """One consumer-group member delivering to Klaviyo until stopped."""

    def __init__(self, settings: Settings, *, translator: Translator | None = None) -> None:
        self._settings = settings
        self._stop_requested = threading.Event()
        self._abort_delivery = threading.Event()
        self._fatal = False
        # Set once the final commit is done: the revoke that close() triggers has nothing
        # left to do and must not wait again.
        self._stopping = False
        self._paused = False
        self.metrics = Metrics()
        port = settings.observability.metrics_port
        self._metrics_server = MetricsServer(self.metrics, port) if port is not None else None
        catalog = SchemaCatalog.load()
        if translator is None:
            # Checked and compiled before anything connects: a broken rule file stops here,
            # every problem listed (RegistryError is a ConfigError -> exit 2).
            translator = rules_from_settings(settings.rules, catalog=catalog)
        registry_settings = settings.schema_registry
        registry = (
            # new_client: a mock:// URL gives confluent-kafka's in-memory registry (tests).
            SchemaRegistryClient.new_client(
                {"url": registry_settings.url, **registry_settings.properties}
            )
            if registry_settings.url
            else None
        )
        decoder = Decoder(catalog, registry=registry, mapped_records=translator.mapped_records)
        self._clients = klaviyo_clients(settings)
        delivery = settings.delivery
        sender = Sender(
            self._clients,
            backoff=Backoff(delivery.backoff_initial_s, delivery.backoff_max_s),
            stop=self._abort_delivery,
            rate_limit_share=delivery.rate_limit_share if delivery.client_rate_limit else None,
        )
        self.dead_letters = DeadLetterWriter(
            topic=settings.kafka.dead_letter_topic,
            group_id=settings.kafka.group_id,
            registry_version=translator.version,
            producer_config=kafka_client_config(settings),
        )
        self._consumer = Consumer(
            {
                # librdkafka prefetches up to 64 MB by default; the in-flight cap keeps the
                # loop fed anyway, so a deep backlog would only cost memory (measured: -85 MB).
                "queued.max.messages.kbytes": 16384,
                **kafka_client_config(settings),
                "group.id": settings.kafka.group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "cooperative-sticky",
                "on_commit": self._on_commit,
            }
        )
        self.pipeline = Pipeline(
            decoder=decoder,
            translator=translator,
            router=AccountRouter.from_settings(settings.routing),
            sender=sender,
            dead_letters=self.dead_letters,
            dead_letter_budget=DeadLetterBudget(
                max_consecutive=settings.dead_letter.max_consecutive,
                max_ratio=settings.dead_letter.max_ratio,
                window=settings.dead_letter.ratio_window,
            ),
            commit=self._commit,
            metrics=self.metrics,
            linger_s=settings.batch.linger_ms / 1000,
            max_concurrent_requests=settings.delivery.max_concurrent_requests,
            commit_interval_s=settings.kafka.commit_interval_ms / 1000,
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
        kafka = self._settings.kafka
        self._consumer.subscribe(
            list(kafka.topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        log.info("consuming %s as group %s", ",".join(kafka.topics), kafka.group_id)
        tune_garbage_collector()
        server = self._metrics_server
        if server is not None:
            server.start()
            log.info("metrics and health on port %d", server.port)
        try:
            return self._loop()
        finally:
            if server is not None:
                server.stop()

    def _loop(self) -> int:
        kafka = self._settings.kafka
        try:
            while not self._stop_requested.is_set():
                self.metrics.polled()
                for message in self._consumer.consume(kafka.poll_batch_size, timeout=0.1):
                    error = message.error()
                    if error is not None:
                        self._on_consume_error(error)
                        continue
                    self.pipeline.process(message)
                self.pipeline.tick()
                self._apply_backpressure()
        except (AuthenticationError, DeadLetterError) as exc:
            return self._stop_fatally(str(exc))
        except KafkaKlaviyoError as exc:
            return self._stop_fatally(f"{type(exc).__name__}: {exc}")
        return self._drain_and_leave()

    # -- shutdown ------------------------------------------------------------------------

    def _drain_and_leave(self) -> int:
        grace = self._settings.delivery.shutdown_grace_s
        try:
            finished = self.pipeline.flush(grace)
            self.pipeline.commit(sync=True)
        except (AuthenticationError, DeadLetterError) as exc:
            return self._stop_fatally(str(exc))
        if not finished:
            log.warning(
                "grace period of %.0fs ended with deliveries in flight; "
                "their offsets stay uncommitted and will be redelivered",
                grace,
            )
        self._stopping = True
        self._abort_delivery.set()
        self.pipeline.close()
        self._consumer.close()
        self.dead_letters.close()
        self._close_clients()
        log.info(
            "stopped: %d items delivered, %d messages dead-lettered",
            sum(
                self.metrics.total("kafka_klaviyo_outputs_delivered", endpoint=e.name.lower())
                for e in Endpoint
            ),
            self.metrics.total("kafka_klaviyo_messages", outcome="dead_lettered"),
        )
        return EXIT_OK

    def _stop_fatally(self, reason: str) -> int:
        self._fatal = True
        self.metrics.fatal = True
        self._abort_delivery.set()
        log.error("stopping without committing unfinished work: %s", reason)
        self.pipeline.close()
        self._consumer.close()
        self.dead_letters.close(abandon=True)
        self._close_clients()
        return EXIT_FATAL

    def _close_clients(self) -> None:
        for client in self._clients.values():
            client.close()

    # -- consumer callbacks --------------------------------------------------------------

    def _commit(self, ready: list[PartitionProgress], sync: bool) -> None:
        offsets = [
            TopicPartition(p.topic, p.partition, p.committable)
            for p in ready
            if p.committable is not None
        ]
        try:
            self._consumer.store_offsets(offsets=offsets)
            if sync:
                self._acknowledge(self._consumer.commit(asynchronous=False))
            else:
                # Confirmations arrive in _on_commit.
                self._consumer.commit(asynchronous=True)
        except KafkaException as exc:
            code = exc.args[0].code() if exc.args else None
            if code != KafkaError._NO_OFFSET:
                # Not fatal (a broker restart, a rebalance): the next turn commits again.
                log.warning("commit failed: %s", exc)

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if error is not None and error.code() != KafkaError._NO_OFFSET:
            log.warning("commit failed: %s", error.str())
        self._acknowledge(partitions)

    def _acknowledge(self, partitions: list[TopicPartition] | None) -> None:
        for tp in partitions or ():
            if tp.error is None and tp.offset is not None and tp.offset >= 0:
                self.pipeline.acknowledge(tp.topic, tp.partition or 0, tp.offset)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.pipeline.assign((tp.topic, tp.partition) for tp in partitions)
        self.metrics.assigned_partitions += len(partitions)
        if self._paused:
            consumer.pause(partitions)
        log.info("assigned %s", _names(partitions))

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._fatal or self._stopping:
            return
        timeout = min(self._settings.delivery.shutdown_grace_s, 30.0)
        self.pipeline.revoke(((tp.topic, tp.partition) for tp in partitions), timeout)
        self.metrics.assigned_partitions -= len(partitions)
        log.info("revoked %s", _names(partitions))

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.pipeline.lose((tp.topic, tp.partition) for tp in partitions)
        self.metrics.assigned_partitions -= len(partitions)
        log.warning("lost %s: their in-flight work is dropped", _names(partitions))

    def _on_consume_error(self, error: KafkaError) -> None:
        if error.fatal():
            raise KafkaKlaviyoError(f"Kafka consumer failed: {error.str()}")
        # Transport hiccups and broker restarts: librdkafka reconnects by itself.
        log.warning("consumer: %s", error.str())

    def _apply_backpressure(self) -> None:
        cap = self._settings.delivery.max_in_flight_messages
        in_flight = self.pipeline.in_flight_messages()
        self.metrics.in_flight.set(in_flight)
        if not self._paused and in_flight >= cap:
            self._consumer.pause(self._consumer.assignment())
            self._paused = True
            self.metrics.paused.set(1)
            log.info("paused: %d messages in flight (cap %d)", in_flight, cap)
        elif self._paused and in_flight <= cap // 2:
            self._consumer.resume(self._consumer.assignment())
            self._paused = False
            self.metrics.paused.set(0)
            log.info("resumed: %d messages in flight", in_flight)


def klaviyo_clients(settings: Settings) -> dict[str, KlaviyoClient]:
    """One HTTP client per Klaviyo account, each with its own key."""
    klaviyo = settings.klaviyo
    keys = {name: account.resolved_api_key(name) for name, account in settings.accounts.items()}
    base_urls = {name: account.base_url for name, account in settings.accounts.items()}
    needs_default = settings.routing is None or DEFAULT_ACCOUNT in (
        *settings.routing.accounts.values(),
        settings.routing.default_account,
    )
    if needs_default or not keys:
        keys[DEFAULT_ACCOUNT] = klaviyo.resolved_api_key()
    return {
        name: KlaviyoClient(
            base_url=base_urls.get(name) or klaviyo.base_url,
            api_key=key,
            revision=klaviyo.revision,
            timeout_s=klaviyo.timeout_s,
            max_connections=settings.delivery.max_concurrent_requests,
        )
        for name, key in keys.items()
    }


def _names(partitions: list[TopicPartition]) -> str:
    return ",".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"


def tune_garbage_collector() -> None:
    """Freeze what startup built out of every later garbage collection; call once ready.

    The compiled registry, schemas, phone metadata and clients live as long as the process;
    without the freeze each full collection walks them again (``make bench``, scenario (a):
    the collector's CPU per event halved). A higher young threshold was tried too: no faster
    on long runs, and 130 MB more peak memory.
    """
    gc.freeze()
