"""The alerts and the dashboard name only series the service really exports.

The names come from the registry the service builds (``consumer.metrics.Metrics``), with the
sample names Prometheus gives each family type (a counter's ``_total``, a histogram's
``_bucket``/``_sum``/``_count``), not from a copied list. ``up`` is Prometheus's own series
for each scrape (the only one that exists when a replica has stopped).
"""

from __future__ import annotations

import json
from typing import Any

from tests.helm.chart import CHART, Manifests
from tests.helm.consumer_side import PROMETHEUS_OWN, exported_series, series_in


def unknown_series(exprs: list[str]) -> dict[str, set[str]]:
    known = exported_series().keys() | PROMETHEUS_OWN
    return {e: series_in(e) - known for e in exprs if series_in(e) - known}


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]


def test_the_parser_finds_series_and_only_series() -> None:
    expr = (
        'sum by (topic) (max by (topic, partition) (kafka_klaviyo_consumer_lag_messages'
        '{namespace="crm", job="x"})) > 1000 and deriv(sum(kafka_klaviyo_retries_total)[15m:1m])'
        ' > 0 or histogram_quantile(0.95, rate(kafka_klaviyo_batch_size_items_bucket[5m]))'
    )
    assert series_in(expr) == {
        "kafka_klaviyo_consumer_lag_messages", "kafka_klaviyo_retries_total",
        "kafka_klaviyo_batch_size_items_bucket",
    }
    assert unknown_series(["rate(kafka_klaviyo_messages[5m])", "kafka_klaviyo_lag"]) == {
        "rate(kafka_klaviyo_messages[5m])": {"kafka_klaviyo_messages"},
        "kafka_klaviyo_lag": {"kafka_klaviyo_lag"},
    }


def test_the_registry_is_read_not_copied() -> None:
    names = exported_series()
    assert "kafka_klaviyo_messages_total" in names
    assert "kafka_klaviyo_end_to_end_delay_seconds_bucket" in names  # the bulk histogram
    assert "kafka_klaviyo_paused_partitions" in names
    assert len(set(names.values())) >= 15


def test_alerts_name_exported_series(all_on: Manifests) -> None:
    rules = all_on.one("PrometheusRule")["spec"]["groups"][0]["rules"]
    exprs = [rule["expr"] for rule in rules]
    assert unknown_series(exprs) == {}
    used = set().union(*(series_in(e) for e in exprs))
    for wanted in ("kafka_klaviyo_consumer_lag_messages", "kafka_klaviyo_dead_letters_total",
                   "kafka_klaviyo_paused_partitions", "kafka_klaviyo_throttled_total",
                   "kafka_klaviyo_requests_total", "up"):
        assert wanted in used


def test_dashboard_shows_every_family_and_nothing_else(all_on: Manifests) -> None:
    config_map = all_on.one("ConfigMap", "-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "Shop"}
    dashboard = json.loads(config_map["data"]["kafka-klaviyo.json"])
    assert dashboard == json.loads((CHART / "files" / "dashboard.json").read_text("utf-8"))
    exprs = dashboard_exprs(dashboard)
    assert unknown_series(exprs) == {}
    families = exported_series()
    shown = {families[name] for e in exprs for name in series_in(e) if name in families}
    assert shown == set(families.values()), "families without a panel"


def test_dashboard_is_on_by_default(defaults: Manifests) -> None:
    labels = defaults.one("ConfigMap", "-dashboard")["metadata"]["labels"]
    assert labels["grafana_dashboard"] == "1"
