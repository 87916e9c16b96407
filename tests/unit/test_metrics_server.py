"""The metrics server: Prometheus text, liveness, readiness, and a port that is taken."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from consumer.errors import ConfigError
from consumer.metrics import HEALTHY_POLL_AGE_S, Metrics, MetricsServer

HOST = "127.0.0.1"


@pytest.fixture()
def served() -> Iterator[tuple[Metrics, MetricsServer, httpx.Client]]:
    metrics = Metrics()
    server = MetricsServer(metrics, 0, host=HOST)
    server.start()
    client = httpx.Client(base_url=f"http://{HOST}:{server.port}", timeout=10, trust_env=False)
    try:
        yield metrics, server, client
    finally:
        client.close()
        server.stop()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_serves_prometheus_text_with_the_counters(served) -> None:
    metrics, server, client = served
    assert server.port > 0
    metrics.messages.labels("translate", "translated").inc(3)
    metrics.messages.labels("decode", "dead_lettered").inc()
    metrics.outputs_delivered.labels("events", "acme").inc(5)
    metrics.in_flight.set(7)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    samples = _samples(response.text)
    translated = (("outcome", "translated"), ("stage", "translate"))
    assert samples[("kafka_klaviyo_messages_total", translated)] == 3
    dead = (("outcome", "dead_lettered"), ("stage", "decode"))
    assert samples[("kafka_klaviyo_messages_total", dead)] == 1
    delivered = (("account", "acme"), ("endpoint", "events"))
    assert samples[("kafka_klaviyo_outputs_delivered_total", delivered)] == 5
    assert samples[("kafka_klaviyo_in_flight_messages", ())] == 7
    metrics.messages.labels("translate", "translated").inc(2)
    later = _samples(client.get("/metrics").text)
    assert later[("kafka_klaviyo_messages_total", translated)] == 5


def test_healthz_is_ok_while_the_poll_loop_turns_and_503_once_fatal(served) -> None:
    metrics, _, client = served
    metrics.polled()
    assert client.get("/healthz").status_code == 200
    assert client.get("/healthz?probe=1").status_code == 200
    metrics.fatal = True
    assert client.get("/healthz").status_code == 503


def test_healthz_is_503_when_the_poll_loop_stopped_turning(served) -> None:
    metrics, _, client = served
    metrics.last_poll = time.monotonic() - HEALTHY_POLL_AGE_S - 1
    assert client.get("/healthz").status_code == 503
    metrics.polled()
    assert client.get("/healthz").status_code == 200


def test_readyz_needs_assigned_partitions_and_no_fatal_stop(served) -> None:
    metrics, _, client = served
    metrics.polled()
    assert client.get("/readyz").status_code == 503
    metrics.assigned_partitions = 2
    assert client.get("/readyz").status_code == 200
    metrics.fatal = True
    assert client.get("/readyz").status_code == 503


def test_unknown_path_is_404(served) -> None:
    _, _, client = served
    assert client.get("/nope").status_code == 404
    assert client.get("/metrics/extra").status_code == 404


def test_port_in_use_is_a_config_error_naming_the_setting() -> None:
    first = MetricsServer(Metrics(), 0, host=HOST)
    first.start()
    try:
        with pytest.raises(ConfigError) as caught:
            MetricsServer(Metrics(), first.port, host=HOST)
        assert "observability.metrics_port" in str(caught.value)
        assert str(first.port) in str(caught.value)
    finally:
        first.stop()
