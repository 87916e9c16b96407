"""Prometheus metrics and the health endpoints of a running consumer.

One HTTP server on ``observability.metrics_port`` answers ``/metrics`` (Prometheus text),
``/healthz`` (the poll loop turned recently) and ``/readyz`` (partitions assigned and not
stopped fatally). Each :class:`Metrics` has its own registry, so several consumers in one
process (tests, the demo) never collide.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from consumer.endpoints import Endpoint
from consumer.errors import ConfigError

# The poll loop turns every ~100 ms; a minute without a turn means it is stuck.
HEALTHY_POLL_AGE_S = 60.0


class Metrics:
    """The consumer's counters and gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.messages = Counter(
            "kafka_klaviyo_messages",
            "Kafka messages processed, by outcome (translated or dead_lettered).",
            ["outcome"],
            registry=self.registry,
        )
        self.outputs_delivered = Counter(
            "kafka_klaviyo_outputs_delivered",
            "Klaviyo items accepted, by endpoint.",
            ["endpoint"],
            registry=self.registry,
        )
        self.requests = Counter(
            "kafka_klaviyo_requests",
            "HTTP requests sent to Klaviyo (retries included), by endpoint.",
            ["endpoint"],
            registry=self.registry,
        )
        self.retries = Counter(
            "kafka_klaviyo_retries",
            "Requests retried after 408/429/5xx/timeouts, by endpoint.",
            ["endpoint"],
            registry=self.registry,
        )
        self.rejected_items = Counter(
            "kafka_klaviyo_rejected_items",
            "Items Klaviyo refused with a 400 (their messages are dead-lettered).",
            ["endpoint"],
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "kafka_klaviyo_batch_delivery_seconds",
            "Time from a batch's first item to its delivery.",
            ["endpoint"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "kafka_klaviyo_in_flight_messages",
            "Messages polled and not yet committed.",
            registry=self.registry,
        )
        self.paused = Gauge(
            "kafka_klaviyo_paused",
            "1 while partitions are paused because too much is in flight.",
            registry=self.registry,
        )
        self.last_poll = time.monotonic()
        self.assigned_partitions = 0
        self.fatal = False

    def total(self, name: str, **labels: str) -> float:
        """Current value of one counter sample (for the closing log line)."""
        return self.registry.get_sample_value(f"{name}_total", labels) or 0.0

    def total_delivered(self) -> float:
        """Items Klaviyo accepted, every endpoint together."""
        return sum(
            self.total("kafka_klaviyo_outputs_delivered", endpoint=e.name.lower()) for e in Endpoint
        )

    def polled(self) -> None:
        self.last_poll = time.monotonic()

    def healthy(self) -> bool:
        return not self.fatal and time.monotonic() - self.last_poll < HEALTHY_POLL_AGE_S

    def ready(self) -> bool:
        return self.healthy() and self.assigned_partitions > 0


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
