"""Prometheus metrics and the health endpoints of a running consumer.

One HTTP server on ``observability.metrics_port`` answers ``/metrics`` (Prometheus text),
``/healthz`` (the poll loop turned recently) and ``/readyz`` (partitions assigned and not
stopped fatally). Each :class:`Metrics` has its own registry, so several consumers in one
process (tests, the demo) never collide.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from confluent_kafka import KafkaException
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from consumer.errors import ConfigError

# The poll loop turns every ~100 ms; a minute without a turn means it is stuck.
HEALTHY_POLL_AGE_S = 60.0


class Metrics:
    """The consumer's counters, gauges and histograms (names and labels: README, Operations).

    The poll-loop thread updates them once per loop turn or per finished batch, never per
    message: each Prometheus update takes a lock.
    """

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.messages = Counter(
            "kafka_klaviyo_messages",
            "Kafka messages by the stage they reached and its outcome "
            "(translate/translated; decode, translate, deliver or job/dead_lettered).",
            ["stage", "outcome"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "kafka_klaviyo_dead_letters",
            "Messages sent to the dead-letter topic, by stage and error class.",
            ["stage", "error_class"],
            registry=registry,
        )
        self.outputs_delivered = Counter(
            "kafka_klaviyo_outputs_delivered",
            "Klaviyo items accepted, by endpoint and account.",
            ["endpoint", "account"],
            registry=registry,
        )
        self.rejected_items = Counter(
            "kafka_klaviyo_rejected_items",
            "Items Klaviyo refused (their messages are dead-lettered), by endpoint and account.",
            ["endpoint", "account"],
            registry=registry,
        )
        self.unsubscribes_skipped = Counter(
            "kafka_klaviyo_unsubscribes_skipped",
            "Unsubscribes of people not in the rule's list, left unsent (unsubscribe_scope: "
            "list), by account.",
            ["account"],
            registry=registry,
        )
        self.requests = Counter(
            "kafka_klaviyo_requests",
            "HTTP requests sent to Klaviyo (retries included), by endpoint and account.",
            ["endpoint", "account"],
            registry=registry,
        )
        self.retries = Counter(
            "kafka_klaviyo_retries",
            "Requests retried after 408/429/5xx/timeouts, by endpoint and account.",
            ["endpoint", "account"],
            registry=registry,
        )
        self.throttled = Counter(
            "kafka_klaviyo_throttled",
            "HTTP 429 answers from Klaviyo, by endpoint and account.",
            ["endpoint", "account"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "kafka_klaviyo_request_duration_seconds",
            "Duration of one HTTP request to Klaviyo (any answer), by endpoint.",
            ["endpoint"],
            buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
            registry=registry,
        )
        self.batch_items = Histogram(
            "kafka_klaviyo_batch_size_items",
            "Items per delivered batch, by endpoint.",
            ["endpoint"],
            buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000),
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "kafka_klaviyo_batch_delivery_seconds",
            "Time from a batch's first item to its delivery, by endpoint.",
            ["endpoint"],
            registry=registry,
        )
        self.end_to_end = BulkHistogram(
            "kafka_klaviyo_end_to_end_delay_seconds",
            "Time from a message's Kafka timestamp to Klaviyo accepting its item.",
            "endpoint",
            buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0),
        )
        registry.register(self.end_to_end)
        self.commit_seconds = Histogram(
            "kafka_klaviyo_commit_latency_seconds",
            "Time from an offset commit request to the broker's confirmation.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "kafka_klaviyo_consumer_lag_messages",
            "Per assigned partition: the high watermark minus the offset this group committed.",
            ["topic", "partition"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "kafka_klaviyo_in_flight_messages",
            "Messages polled and not yet committed.",
            registry=registry,
        )
        self.paused = Gauge(
            "kafka_klaviyo_paused_partitions",
            "Partitions paused (too much in flight, or waiting for the Schema Registry).",
            registry=registry,
        )
        self.job_seconds = Histogram(
            "kafka_klaviyo_job_duration_seconds",
            "Time from Klaviyo accepting a job (profile import, catalog items) to its outcome, "
            "by endpoint.",
            ["endpoint"],
            buckets=(0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0),
            registry=registry,
        )
        self.job_failed_items = Counter(
            "kafka_klaviyo_job_failed_items",
            "Items Klaviyo's jobs failed after accepting them (their messages are "
            "dead-lettered at stage job), by endpoint and account.",
            ["endpoint", "account"],
            registry=registry,
        )
        self.job_created_items = Counter(
            "kafka_klaviyo_job_created_items",
            "Upserted catalog items that did not exist, created after their update job said so.",
            ["account"],
            registry=registry,
        )
        self.jobs_pending = Gauge(
            "kafka_klaviyo_jobs_pending",
            "Klaviyo jobs accepted and followed, without an outcome yet.",
            registry=registry,
        )
        self.last_poll = time.monotonic()
        self.assigned_partitions = 0
        self.fatal = False

    def total(self, name: str, **labels: str) -> float:
        """The sum of a counter's samples matching ``labels`` (for the closing log line)."""
        wanted = f"{name}_total"
        return sum(
            sample.value
            for family in self.registry.collect()
            for sample in family.samples
            if sample.name == wanted
            and all(sample.labels.get(key) == value for key, value in labels.items())
        )

    def total_delivered(self) -> float:
        """Items Klaviyo accepted, every endpoint and account together."""
        return self.total("kafka_klaviyo_outputs_delivered")

    def polled(self) -> None:
        self.last_poll = time.monotonic()

    def healthy(self) -> bool:
        return not self.fatal and time.monotonic() - self.last_poll < HEALTHY_POLL_AGE_S

    def ready(self) -> bool:
        return self.healthy() and self.assigned_partitions > 0


class BulkHistogram(Collector):
    """A histogram with one label that takes many observations per call, under one lock.

    prometheus_client's Histogram locks once per observation; the end-to-end delay has one per
    delivered item, so the pipeline adds a whole batch's delays at once here.
    """

    def __init__(self, name: str, documentation: str, label: str, buckets: Sequence[float]):
        self._name = name
        self._documentation = documentation
        self._label = label
        self._bounds = tuple(buckets)
        self._labels = (*map(floatToGoString, self._bounds), "+Inf")
        self._lock = threading.Lock()
        # label value -> (count per bucket, the last one +Inf; sum)
        self._series: dict[str, tuple[list[int], list[float]]] = {}

    def observe_many(self, label: str, values: Iterable[float]) -> None:
        """Observe every value of ``values`` in the series ``label``."""
        bounds = self._bounds
        local = [0] * (len(bounds) + 1)
        total = 0.0
        for value in values:
            local[bisect_left(bounds, value)] += 1
            total += value
        self._add(label, local, total)

    def observe_ages(self, label: str, now_ms: float, stamps_ms: list[int]) -> None:
        """Observe ``(now_ms - stamp) / 1000`` seconds for every stamp of ``stamps_ms``
        (ascending; stamps <= 0 mean none and are left out; ages below 0 count as 0).

        Per batch, not per value: usually a batch's items all fall in one bucket (found from
        the oldest and the newest), else one bisection per bucket bound."""
        first = bisect_right(stamps_ms, 0) if stamps_ms and stamps_ms[0] <= 0 else 0
        size = len(stamps_ms) - first
        if size <= 0:
            return
        newest = stamps_ms[-1]
        if newest <= now_ms:
            total = (size * now_ms - sum(stamps_ms[first:] if first else stamps_ms)) / 1000.0
        else:  # stamps after now (another clock) count as age 0
            past = bisect_right(stamps_ms, now_ms)
            total = ((past - first) * now_ms - sum(stamps_ms[first:past])) / 1000.0
        bounds = self._bounds
        oldest_bucket = bisect_left(bounds, (now_ms - stamps_ms[first]) / 1000.0)
        if oldest_bucket == bisect_left(bounds, (now_ms - newest) / 1000.0):
            self._add_to_bucket(label, oldest_bucket, size, total)
            return
        local, below, count = [], 0, len(stamps_ms)
        for bound in bounds:  # ages <= bound  <=>  stamps >= now - bound
            within = count - max(first, bisect_left(stamps_ms, now_ms - bound * 1000.0))
            local.append(within - below)
            below = within
        local.append(size - below)
        self._add(label, local, total)

    def _add_to_bucket(self, label: str, index: int, count: int, total: float) -> None:
        with self._lock:
            series = self._series.get(label)
            if series is None:
                series = self._series[label] = ([0] * (len(self._bounds) + 1), [0.0])
            series[0][index] += count
            series[1][0] += total

    def _add(self, label: str, local: list[int], total: float) -> None:
        with self._lock:
            series = self._series.get(label)
            if series is None:
                series = self._series[label] = ([0] * len(local), [0.0])
            counts, summed = series
            for index, count in enumerate(local):
                counts[index] += count
            summed[0] += total

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=[self._label])
        with self._lock:
            snapshot = [(key, list(c), s[0]) for key, (c, s) in self._series.items()]
        for key, counts, summed in snapshot:
            cumulative, buckets = 0, []
            for bound, count in zip(self._labels, counts, strict=True):
                cumulative += count
                buckets.append((bound, float(cumulative)))
            family.add_metric([key], buckets, summed)
        yield family


class LagSampler:
    """Sets the consumer-lag gauge of every assigned partition every ``interval_s``.

    The high watermark is librdkafka's cached one (no broker round trip on the poll loop): it
    moves with each fetch, so a partition paused for long shows the lag as of its last fetch.
    """

    def __init__(
        self,
        metrics: Metrics,
        watermarks: Callable[[str, int], tuple[int, int]],
        committed: Callable[[tuple[str, int]], int | None],
        *,
        interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._gauge = metrics.consumer_lag
        self._watermarks = watermarks
        self._committed = committed
        self._interval_s = interval_s
        self._clock = clock
        self._next = 0.0
        self._shown: set[tuple[str, int]] = set()

    def sample(self, partitions: Iterable[tuple[str, int]], *, force: bool = False) -> None:
        """Update the gauges of ``partitions`` if the interval passed (or ``force``); the
        series of partitions no longer among them are removed."""
        now = self._clock()
        if not force and now < self._next:
            return
        self._next = now + self._interval_s
        current = set(partitions)
        for key in self._shown - current:
            self._gauge.remove(key[0], str(key[1]))
        self._shown = set()
        for key in current:
            committed = self._committed(key)
            try:
                _low, high = self._watermarks(*key)
            except KafkaException:
                continue  # not fetched yet
            if committed is None or high < 0:
                continue
            self._gauge.labels(key[0], str(key[1])).set(max(0, high - committed))
            self._shown.add(key)


class MetricsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on a background thread."""

    def __init__(self, metrics: Metrics, port: int, host: str = "0.0.0.0") -> None:
        routes: dict[str, Callable[[], tuple[int, bytes, str]]] = {
            "/metrics": lambda: (200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST),
            "/healthz": lambda: _check(metrics.healthy()),
            "/readyz": lambda: _check(metrics.ready()),
        }

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                route = routes.get(self.path.split("?", 1)[0])
                status, body, content_type = (
                    route() if route else (404, b"not found\n", "text/plain")
                )
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                return  # probes every few seconds would drown the logs

        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise ConfigError(
                f"observability.metrics_port: cannot listen on {port} ({exc.strerror})"
            ) from exc
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()  # waits for serve_forever, which only a started one runs
        self._server.server_close()


def _check(ok: bool) -> tuple[int, bytes, str]:
    return (200, b"ok\n", "text/plain") if ok else (503, b"not ok\n", "text/plain")
