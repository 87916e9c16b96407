"""What ``kafka-klaviyo catalog-feed`` does: read the product topic, keep the feed current.

The command reads every partition of the product topic from its beginning with a consumer of
its own that assigns the partitions itself and commits nothing: the feed is the whole catalog,
so every start has to read the whole (ideally compacted) topic again, and a committed offset
would only make a restart miss the products before it. Values are decoded by the service's
:class:`~consumer.decode.Decoder` (both framings, the Schema Registry of the settings) and
applied to a :class:`~consumer.catalog_feed.CatalogState`.

Once every partition is read up to its end offset of the start, the feed is published:
written to ``--output`` atomically, or served over HTTP (``--listen``) with an ``ETag`` and
304 answers to ``If-None-Match``. ``--once`` stops there; otherwise the command keeps
consuming and publishes the new state at most every ``--interval`` seconds while it changes.

A first feed over the size limit ends the command (exit 2, nothing written); a later one is
logged as an error and the last feed that fit stays in place until the catalog fits again.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol, TextIO

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from consumer.catalog_feed import (
    FEED_LIMIT_BYTES,
    PRODUCT_RECORDS,
    CatalogState,
    Feed,
    FeedTooLargeError,
    PublishedFeed,
    matches,
    write_atomically,
)
from consumer.compose import schema_registry
from consumer.decode import Decoder
from consumer.errors import (
    ConfigError,
    DecodeError,
    SchemaRegistryUnavailableError,
    TranslationError,
    UnmappedRecordError,
)
from consumer.exit_codes import EXIT_CONFIG, EXIT_OK
from consumer.messages import DEFAULT_ACCOUNT, DecodedRecord, KafkaMessage
from consumer.positions import PartitionKey, partitions, watermarks
from consumer.redact import mask
from consumer.routing import AccountRouter
from consumer.schemas import SchemaCatalog
from consumer.settings import Settings
from consumer.source import consumer_config

log = logging.getLogger(__name__)

_POLL_BATCH = 1000
_POLL_TIMEOUT_S = 0.2
# New partitions of the topic are looked for this often (they are read from their start).
_DISCOVERY_INTERVAL_S = 30.0


@dataclass(frozen=True)
class FeedOptions:
    """The command's options, as the CLI parsed them."""

    topics: tuple[str, ...]
    output: Path | None
    listen: tuple[str, int] | None
    path: str = "/catalog.json"
    once: bool = False
    account: str = DEFAULT_ACCOUNT
    out_of_stock_policy: int = 1
    max_bytes: int = FEED_LIMIT_BYTES
    interval_s: float = 10.0


class ProductConsumer(Protocol):
    """What the feed needs of confluent_kafka.Consumer."""

    def assign(self, partitions: list[TopicPartition]) -> None: ...

    def incremental_assign(self, partitions: list[TopicPartition]) -> None: ...

    def consume(self, num_messages: int = 1, timeout: float = -1) -> Sequence[KafkaMessage]: ...

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]: ...

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any: ...

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = -1, cached: bool = False
    ) -> tuple[int, int] | None: ...

    def offsets_for_times(
        self, partitions: list[TopicPartition], timeout: float = -1
    ) -> list[TopicPartition]: ...

    def close(self) -> None: ...


class ProductReader:
    """Every partition of the topics from its beginning, and how far the start's end offsets
    are read (the initial build)."""

    def __init__(self, consumer: ProductConsumer, topics: Sequence[str]) -> None:
        self.consumer = consumer
        self.topics = tuple(topics)
        self.starts: dict[PartitionKey, int] = {}
        self.ends: dict[PartitionKey, int] = {}
        self._next: dict[PartitionKey, int] = {}
        self._caught_up: set[PartitionKey] = set()
        self._discovered_at = 0.0

    def start(self) -> None:
        """Assign every partition at its beginning; remember where each ends now."""
        keys = partitions(self.consumer, self.topics)
        for key, (low, high) in watermarks(self.consumer, keys).items():
            self.starts[key] = low
            self.ends[key] = high
            self._next[key] = low
        self.consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in keys])
        self._discovered_at = time.monotonic()

    def poll(self) -> Sequence[KafkaMessage]:
        messages = self.consumer.consume(_POLL_BATCH, timeout=_POLL_TIMEOUT_S)
        for message in messages:
            offset = message.offset()
            if message.error() is None and offset is not None:
                self._next[(message.topic() or "", message.partition() or 0)] = offset + 1
        return messages

    @property
    def total(self) -> int:
        """Offsets to read in the initial build (compaction leaves gaps: an upper bound)."""
        return sum(self.ends[key] - self.starts[key] for key in self.ends)

    def done(self) -> int:
        """Offsets of the initial build read so far."""
        return sum(
            min(self._next[key], end) - self.starts[key] for key, end in self.ends.items()
        )

    def caught_up(self) -> bool:
        """Whether every partition is read up to its end offset of the start."""
        for key, end in self.ends.items():
            if key in self._caught_up:
                continue
            if self._next[key] >= end or self._position(key) >= end:
                self._caught_up.add(key)
            else:
                return False
        return True

    def _position(self, key: PartitionKey) -> int:
        # Gaps (compaction, transaction markers) can hide the last offsets: the position says.
        try:
            [position] = self.consumer.position([TopicPartition(*key)])
        except KafkaException:
            return -1
        return int(position.offset)

    def discover(self) -> list[PartitionKey]:
        """Partitions added to the topics since the start (now read from their beginning)."""
        now = time.monotonic()
        if now - self._discovered_at < _DISCOVERY_INTERVAL_S:
            return []
        self._discovered_at = now
        try:
            keys = partitions(self.consumer, self.topics)
        except ConfigError as exc:
            log.warning("catalog feed: cannot look for new partitions: %s", exc)
            return []
        new = [key for key in keys if key not in self._next]
        if new:
            for key in new:
                self._next[key] = 0
            self.consumer.incremental_assign(
                [TopicPartition(t, p, OFFSET_BEGINNING) for t, p in new]
            )
            log.info(
                "catalog feed: reading new partitions %s", ",".join(f"{t}[{p}]" for t, p in new)
            )
        return new


class FeedBuilder:
    """Messages -> the catalog state: decoded with the service's decoder, routed to one
    account, counted."""

    def __init__(
        self,
        decoder: Decoder,
        router: AccountRouter,
        *,
        account: str,
        out_of_stock_policy: int,
        stop: threading.Event,
    ) -> None:
        self._decoder = decoder
        self._router = router
        self._account = account
        self._stop = stop
        self.state = CatalogState(out_of_stock_policy=out_of_stock_policy)
        self.counts: Counter[str] = Counter()

    def apply(self, message: KafkaMessage) -> None:
        error = message.error()
        if error is not None:
            if error.fatal():
                raise KafkaException(error)
            return  # librdkafka's informational errors are logged by its own logger
        self.counts["messages"] += 1
        value = message.value()
        if value is None:
            # A compacted topic's tombstone: the product keyed by it is gone.
            key = message.key()
            if key is not None:
                self.state.remove(key.decode("utf-8", "replace"))
            self.counts["tombstones"] += 1
            return
        record = self._decode(message, value)
        if record is None:
            return
        try:
            account = self._router.account_for(record)
        except TranslationError:
            self.counts["unrouted"] += 1
            return
        if account != self._account:
            self.counts["other accounts"] += 1
            return
        self.counts[record.record_name.rsplit(".", 1)[-1]] += 1
        self.state.apply(record.record_name, record.data)

    def _decode(self, message: KafkaMessage, value: bytes) -> DecodedRecord | None:
        delay = 0.5
        while True:
            try:
                return self._decoder.decode(value)
            except UnmappedRecordError:
                self.counts["other records"] += 1
                return None
            except DecodeError as exc:
                self.counts["undecodable"] += 1
                log.warning(
                    "catalog feed: skipped %s[%s]@%s: %s",
                    message.topic(),
                    message.partition(),
                    message.offset(),
                    mask(str(exc)),
                )
                return None
            except SchemaRegistryUnavailableError as exc:
                # Not bad data: the message decodes once the registry answers again.
                log.warning("catalog feed: %s; retrying in %.1fs", mask(str(exc)), delay)
                if self._stop.wait(delay):
                    return None
                delay = min(delay * 2, 30.0)


class Publisher(Protocol):
    """Where a rendered feed goes."""

    def publish(self, feed: Feed) -> None: ...

    def describe(self) -> str: ...


class FilePublisher:
    """The feed as a file, replaced atomically."""

    def __init__(self, path: Path) -> None:
        if not path.parent.is_dir():
            raise ConfigError(f"--output: directory {path.parent} does not exist")
        self.path = path

    def publish(self, feed: Feed) -> None:
        write_atomically(self.path, feed.body)

    def describe(self) -> str:
        return str(self.path)


class HttpPublisher:
    """The feed served over HTTP from memory: GET/HEAD of ``path``, ``ETag``, 304."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self.published = PublishedFeed()
        handler = _handler(self.published, path)
        try:
            self.server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise ConfigError(f"--listen: cannot listen on {host}:{port}: {exc.strerror}") from exc
        self.server.daemon_threads = True
        self.path = path
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="catalog-feed-http", daemon=True
        )
        self._thread.start()

    def publish(self, feed: Feed) -> None:
        self.published.publish(feed)

    def describe(self) -> str:
        host, port = self.server.server_address[:2]
        shown = host.decode() if isinstance(host, bytes) else host
        return f"http://{shown}:{port}{self.path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(published: PublishedFeed, path: str) -> type[BaseHTTPRequestHandler]:
    class FeedHandler(BaseHTTPRequestHandler):
        """GET/HEAD of the feed: 200 with its ETag, 304 when If-None-Match names it, 503
        before the first build finished, 404 elsewhere."""

        server_version = "kafka-klaviyo-catalog-feed"

        def do_GET(self) -> None:
            self._answer(body=True)

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def _answer(self, *, body: bool) -> None:
            if self.path.split("?", 1)[0] != path:
                self._plain(404, b"not found\n", body)
                return
            feed = published.current()
            if feed is None:
                self._plain(503, b"the catalog feed is being built\n", body, retry_after=True)
                return
            if matches(self.headers.get("If-None-Match"), feed.etag):
                self.send_response(304)
                self.send_header("ETag", feed.etag)
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(feed.body)))
            self.send_header("ETag", feed.etag)
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            if body:
                self.wfile.write(feed.body)

        def _plain(self, status: int, text: bytes, body: bool, retry_after: bool = False) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(text)))
            if retry_after:
                self.send_header("Retry-After", "10")
            self.end_headers()
            if body:
                self.wfile.write(text)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("catalog feed http: " + format, *args)

    return FeedHandler


class BuildProgress:
    """Progress of the initial build on stderr: a bar on a terminal, a line every
    ``interval_s`` otherwise."""

    def __init__(
        self,
        reader: ProductReader,
        state: CatalogState,
        *,
        stream: TextIO | None = None,
        interval_s: float = 10.0,
    ) -> None:
        self._reader = reader
        self._state = state
        self._stream = stream or sys.stderr
        self._interval_s = interval_s
        self._started = time.monotonic()
        self._last = self._started
        self._bar: Any = None
        if self._stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(
                total=reader.total, desc="catalog feed", unit="msg", file=self._stream
            )

    def turn(self) -> None:
        now = time.monotonic()
        if now - self._last < (0.5 if self._bar is not None else self._interval_s):
            return
        self._last = now
        if self._bar is not None:
            self._bar.n = self._reader.done()
            self._bar.set_postfix_str(f"{len(self._state):,} products", refresh=False)
            self._bar.refresh()
            return
        done, total = self._reader.done(), self._reader.total
        elapsed = max(now - self._started, 1e-6)
        rate = done / elapsed
        eta = f", ETA {(total - done) / rate:.0f}s" if rate > 0 and total > done else ""
        share = f" ({done / total:.0%})" if total else ""
        log.info(
            "catalog feed: read %s of %s messages%s, %s/s%s; %s products",
            f"{done:,}",
            f"{total:,}",
            share,
            f"{rate:,.0f}",
            eta,
            f"{len(self._state):,}",
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.n = self._reader.total
            self._bar.close()

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self._started


def run_catalog_feed(
    settings: Settings,
    options: FeedOptions,
    *,
    consumer_factory: Callable[[dict[str, Any]], ProductConsumer] = Consumer,
) -> int:
    """Build the feed and publish it (and keep it current unless ``--once``); the exit code.
    ConfigError for bad options or settings."""
    kafka = settings.kafka
    known = {*settings.accounts, DEFAULT_ACCOUNT}
    if options.account not in known:
        raise ConfigError(
            f"--account: unknown account {options.account!r} (known: {', '.join(sorted(known))})"
        )
    if settings.catalog.source != "feed":
        log.warning(
            "catalog.source is api: `run` sends the catalog rules' items to Klaviyo's Catalog "
            "API; Klaviyo takes a custom catalog from the feed or the API, not both"
        )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    decoder = Decoder(
        SchemaCatalog.load(), registry=schema_registry(settings), mapped_records=PRODUCT_RECORDS
    )
    builder = FeedBuilder(
        decoder,
        AccountRouter.from_settings(settings.routing),
        account=options.account,
        out_of_stock_policy=options.out_of_stock_policy,
        stop=stop,
    )
    publisher: FilePublisher | HttpPublisher
    if options.output is not None:
        publisher = FilePublisher(options.output)
    else:
        assert options.listen is not None
        publisher = HttpPublisher(*options.listen, options.path)
        log.info("catalog feed: listening on %s (503 until built)", publisher.describe())
    group = f"{kafka.group_id}.catalog-feed"
    try:
        consumer = consumer_factory(consumer_config(kafka, group_id=group))
    except KafkaException as exc:
        raise ConfigError(f"kafka.properties: librdkafka refused the settings: {exc}") from exc
    reader = ProductReader(consumer, options.topics or kafka.topics)
    try:
        reader.start()
        return _loop(reader, builder, publisher, options, stop)
    finally:
        consumer.close()
        if isinstance(publisher, HttpPublisher):
            publisher.close()


def _loop(
    reader: ProductReader,
    builder: FeedBuilder,
    publisher: FilePublisher | HttpPublisher,
    options: FeedOptions,
    stop: threading.Event,
) -> int:
    state = builder.state
    progress = BuildProgress(reader, state)
    while not stop.is_set():
        for message in reader.poll():
            builder.apply(message)
        if reader.caught_up():
            break
        progress.turn()
    else:
        progress.close()
        return EXIT_OK  # stopped before the first build finished: nothing published
    progress.close()
    try:
        feed = Feed.of(state, limit=options.max_bytes)
        publisher.publish(feed)
    except FeedTooLargeError as exc:
        print(f"kafka-klaviyo: {exc}; nothing published", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:
        print(f"kafka-klaviyo: --output: cannot write {options.output}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(_summary(reader, builder, feed, publisher, progress.elapsed_s))
    sys.stdout.flush()
    if options.once:
        return EXIT_OK
    _keep_current(reader, builder, publisher, options, stop, feed)
    return EXIT_OK


def _keep_current(
    reader: ProductReader,
    builder: FeedBuilder,
    publisher: FilePublisher | HttpPublisher,
    options: FeedOptions,
    stop: threading.Event,
    feed: Feed,
) -> None:
    """Keep consuming; publish the new state at most every ``interval_s`` while it changes."""
    state = builder.state
    rendered = state.version
    published_at = time.monotonic()
    too_large = False
    while not stop.is_set():
        for message in reader.poll():
            builder.apply(message)
        reader.discover()
        now = time.monotonic()
        if state.version == rendered or now - published_at < options.interval_s:
            continue
        rendered = state.version
        try:
            candidate = Feed.of(state, limit=options.max_bytes)
        except FeedTooLargeError as exc:
            if not too_large:
                log.error(
                    "%s; still publishing the last feed that fit (%s products)",
                    exc,
                    f"{feed.items:,}",
                )
            too_large = True
            continue
        if too_large:
            log.info("catalog feed fits the limit again: %s bytes", f"{len(candidate.body):,}")
            too_large = False
        if candidate.etag == feed.etag:
            continue
        try:
            publisher.publish(candidate)
        except OSError as exc:
            log.error("catalog feed: cannot write %s: %s; retrying", publisher.describe(), exc)
            rendered = -1  # try again at the next interval
            published_at = now
            continue
        feed = candidate
        published_at = now
        log.info(
            "catalog feed updated: %s products, %s bytes, ETag %s",
            f"{feed.items:,}",
            f"{len(feed.body):,}",
            feed.etag,
        )


def _summary(
    reader: ProductReader,
    builder: FeedBuilder,
    feed: Feed,
    publisher: FilePublisher | HttpPublisher,
    elapsed_s: float,
) -> str:
    counts = builder.counts
    where = "written to" if isinstance(publisher, FilePublisher) else "serving at"
    lines = [
        f"catalog feed: {feed.items:,} products, {len(feed.body):,} bytes, from "
        f"{counts['messages']:,} messages in {elapsed_s:.1f}s; {where} {publisher.describe()}",
        f"  ETag {feed.etag}",
    ]
    for (topic, number), end in reader.ends.items():
        lines.append(f"  {topic}[{number}] offsets {reader.starts[(topic, number)]}..{end}")
    for name in ("ProductUpserted", "ProductDeleted", "tombstones"):
        if counts[name]:
            lines.append(f"  {name}: {counts[name]:,}")
    for name, what in (
        ("other records", "records of other types, left alone"),
        ("other accounts", "product records of other accounts, left alone"),
        ("unrouted", "product records no account is configured for, left alone"),
        ("undecodable", "messages that do not decode, skipped (see the warnings)"),
    ):
        if counts[name]:
            lines.append(f"  {what}: {counts[name]:,}")
    return "\n".join(lines)
