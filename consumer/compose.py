"""The composition root: every part of a consumer, built once from the settings.

:func:`build_service` is the only place that constructs the steps and wires them::

    Source -> Pipeline(decoder, rules, router, batching, deliveries, dead-letters, committer)

Nothing else creates a Kafka client, an HTTP client, a thread pool or the compiled rules. The
Kafka clients come from factories and the HTTP transport can be given, so the component tests
build the real service with a fake consumer and producer and ``httpx.MockTransport`` over the
emulator's app; another source (a bounded replay of a range, the dead-letter topic) reuses the
same delivery by passing its own consumer factory and group id.

The rules are compiled before anything connects: a broken rule file stops here with every
problem listed (RulesError is a ConfigError: exit 2).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient

from consumer.batch import Batching
from consumer.bodies import LIVE, History
from consumer.catalog_feed import PRODUCT_RECORDS
from consumer.commit import Committer, PartitionKey
from consumer.dead_letter import DeadLetterBudget, DeadLetterWriter, KafkaProducer
from consumer.decode import Decoder
from consumer.deliver.client import KlaviyoClient
from consumer.deliver.jobs import JobTracker
from consumer.deliver.scheduler import DeliveryScheduler
from consumer.deliver.sender import Backoff, RetryAfterBounds, Sender
from consumer.errors import ConfigError
from consumer.messages import DEFAULT_ACCOUNT, DecodedRecord, Operation
from consumer.metrics import Metrics, MetricsServer
from consumer.pipeline import Pipeline, Translator
from consumer.routing import AccountRouter
from consumer.rules import CompiledRules, rules_from_settings
from consumer.schemas import SchemaCatalog
from consumer.settings import Settings
from consumer.source import KafkaConsumer, Source, consumer_config, producer_config

T = TypeVar("T")
ConsumerFactory = Callable[[dict[str, Any]], KafkaConsumer]
ProducerFactory = Callable[[dict[str, Any]], KafkaProducer]
SourceFactory = Callable[[Any], Source]


@dataclass(frozen=True)
class Translation:
    """Decode, translate and route: the steps a dry run shares with the service."""

    decoder: Decoder
    translator: Translator
    router: AccountRouter


def build_translation(
    settings: Settings,
    *,
    translator: Translator | None = None,
    registry: SchemaRegistryClient | None = None,
) -> Translation:
    """The decoder, the compiled rules (or ``translator``) and the account router."""
    catalog = SchemaCatalog.load()
    if translator is None:
        compiled = rules_from_settings(settings.rules, catalog=catalog)
        refuse_catalog_rules(settings, compiled)
        translator = compiled if settings.catalog.source == "api" else FeedCatalog(compiled)
    decoder = Decoder(
        catalog,
        registry=registry or schema_registry(settings),
        mapped_records=translator.mapped_records,
    )
    return Translation(decoder, translator, AccountRouter.from_settings(settings.routing))


#: Rule outputs that write Klaviyo's catalog through the Catalog API.
CATALOG_KINDS = frozenset({"catalog_item", "catalog_delete"})


def refuse_catalog_rules(settings: Settings, rules: CompiledRules) -> None:
    """With ``catalog.source: feed`` the catalog reaches Klaviyo as a feed, and Klaviyo takes a
    custom catalog from the feed or the API, never both (RULES.md D21): rules that would send
    catalog items are a ConfigError naming the setting and the rules."""
    if settings.catalog.source != "feed":
        return
    named = [f"{r.name} ({r.location})" for r in rules.rules if r.kind in CATALOG_KINDS]
    if named:
        raise ConfigError(
            f"catalog.source: feed, but the translation rules {', '.join(named)} would send "
            "catalog items to Klaviyo's Catalog API, and Klaviyo takes a catalog from the feed "
            "or the API, not both; disable those rules (enabled: false in a rules file) or set "
            "catalog.source: api"
        )


class FeedCatalog:
    """The rules when the catalog goes to Klaviyo as a feed: product records no rule maps are
    passed over (nothing to send, committed) instead of dead-lettered as unmapped records."""

    def __init__(self, rules: Translator) -> None:
        self._rules = rules
        self._passed_over = PRODUCT_RECORDS - rules.mapped_records

    @property
    def mapped_records(self) -> frozenset[str]:
        return self._rules.mapped_records | self._passed_over

    @property
    def version(self) -> str:
        return self._rules.version

    def translate(self, record: DecodedRecord) -> list[Operation]:
        if record.record_name in self._passed_over:
            return []
        return self._rules.translate(record)


@dataclass
class Service:
    """The parts of one running consumer, as the runner needs them."""

    settings: Settings
    group_id: str
    source: Source
    pipeline: Pipeline
    dead_letters: DeadLetterWriter
    clients: dict[str, KlaviyoClient]
    metrics: Metrics
    metrics_server: MetricsServer | None
    # Set to abandon every delivery at once (shutdown after the grace period, fatal stop).
    abort: threading.Event

    def close_clients(self) -> None:
        for client in self.clients.values():
            client.close()


def build_service(
    settings: Settings,
    *,
    consumer_factory: ConsumerFactory = Consumer,
    producer_factory: ProducerFactory = Producer,
    transport: httpx.BaseTransport | None = None,
    translator: Translator | None = None,
    registry: SchemaRegistryClient | None = None,
    group_id: str | None = None,
    source: SourceFactory | None = None,
    history: History = LIVE,
    commit_metadata: Mapping[PartitionKey, str] | None = None,
) -> Service:
    """Build every part of a consumer from ``settings`` (nothing connects yet).

    The keyword arguments replace what the settings would build: the Kafka clients, the HTTP
    transport, the translator (default: the compiled rules), the Schema Registry client, the
    consumer group id and the source (default: the group member of ``kafka.topics``). A
    replay passes its own source, ``history`` (how history is sent, see consumer.bodies) and
    the metadata its commits carry."""
    translation = build_translation(settings, translator=translator, registry=registry)
    translator = translation.translator
    metrics = Metrics()
    port = settings.observability.metrics_port
    metrics_server = MetricsServer(metrics, port) if port is not None else None

    delivery = settings.delivery
    clients = klaviyo_clients(settings, transport=transport)
    abort = threading.Event()
    sender = Sender(
        clients,
        backoff=Backoff(delivery.backoff_initial_s, delivery.backoff_max_s),
        stop=abort,
        rate_limit_share=delivery.rate_limit_share if delivery.client_rate_limit else None,
        retry_after=RetryAfterBounds(delivery.retry_after_min_s, delivery.retry_after_max_s),
    )
    kafka = settings.kafka
    group = group_id or kafka.group_id
    producer = _kafka_client(
        producer_factory, producer_config(kafka, timeout_s=settings.dead_letter.write_timeout_s)
    )
    dead_letters = DeadLetterWriter(
        producer,
        topic=kafka.dead_letter_topic,
        group_id=group,
        rules_version=translator.version,
    )
    # The consumer's commit callback is the committer's, and the committer stores and commits
    # through the consumer: the callback finds the committer once both exist.
    committer: Committer | None = None

    def on_commit(error: Any, partitions: Any) -> None:
        assert committer is not None
        committer.on_commit(error, partitions)

    consumer = _kafka_client(
        consumer_factory, consumer_config(kafka, group_id=group, on_commit=on_commit)
    )
    limits = settings.dead_letter
    committer = Committer(
        consumer,
        budget=DeadLetterBudget(
            max_consecutive=limits.max_consecutive,
            max_ratio=limits.max_ratio,
            window=limits.ratio_window,
        ),
        interval_s=kafka.commit_interval_ms / 1000,
        on_latency=metrics.commit_seconds.observe,
        metadata=commit_metadata,
    )
    jobs = JobTracker(sender, settings.jobs)
    pipeline = Pipeline(
        decoder=translation.decoder,
        translator=translator,
        router=translation.router,
        batching=Batching(
            settings.batch.linger_ms / 1000,
            history=history,
            consent_historical_after_s=settings.rules.consent.historical_after_s,
        ),
        deliveries=DeliveryScheduler(
            sender,
            per_key=delivery.max_concurrent_requests,
            threads_per_account=delivery.threads_per_account,
            gate=lambda batch: batch.endpoint.spec.job is None or jobs.room(),
        ),
        jobs=jobs,
        dead_letters=dead_letters,
        committer=committer,
        metrics=metrics,
        registry_backoff=Backoff(delivery.backoff_initial_s, delivery.backoff_max_s),
        dead_letter_flush_min_s=limits.flush_min_s,
    )
    return Service(
        settings=settings,
        group_id=group,
        source=source(consumer) if source is not None else Source(consumer, kafka.topics),
        pipeline=pipeline,
        dead_letters=dead_letters,
        clients=clients,
        metrics=metrics,
        metrics_server=metrics_server,
        abort=abort,
    )


def _kafka_client(factory: Callable[[dict[str, Any]], T], config: dict[str, Any]) -> T:
    """A librdkafka client; a setting librdkafka refuses is a configuration error."""
    try:
        return factory(config)
    except KafkaException as exc:
        raise ConfigError(f"kafka.properties: librdkafka refused the settings: {exc}") from exc


# confluent-kafka's client waits forever for an answer by default: a registry that accepts
# connections but never answers (hung, SIGSTOPped) would hold the poll loop for good.
_REGISTRY_TIMEOUT_S = 10.0
# The client's settings that must be numbers; ``schema_registry.properties`` holds strings.
_REGISTRY_NUMBERS = frozenset(
    {
        "timeout",
        "max.retries",
        "retries.wait.ms",
        "retries.max.wait.ms",
        "cache.capacity",
        "cache.latest.ttl.sec",
    }
)


def schema_registry(settings: Settings) -> SchemaRegistryClient | None:
    """Confluent's Schema Registry client, if a URL is configured (``mock://`` for tests)."""
    registry = settings.schema_registry
    if not registry.url:
        return None
    conf: dict[str, Any] = {"url": registry.url, "timeout": _REGISTRY_TIMEOUT_S}
    for key, value in registry.properties.items():
        if key not in _REGISTRY_NUMBERS:
            conf[key] = value
            continue
        try:
            conf[key] = float(value)
        except ValueError:
            raise ConfigError(
                f"schema_registry.properties.{key}: {value!r} is not a number"
            ) from None
    return SchemaRegistryClient.new_client(conf)


def klaviyo_clients(
    settings: Settings, *, transport: httpx.BaseTransport | None = None
) -> dict[str, KlaviyoClient]:
    """One HTTP client per Klaviyo account, each with its own key; its connection pool fits
    the account's delivery threads, so a request never waits for a connection after it took
    its rate-limit slot."""
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
            max_connections=settings.delivery.threads_per_account,
            transport=transport,
        )
        for name, key in keys.items()
    }
