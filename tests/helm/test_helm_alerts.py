"""The PrometheusRule's alerts, run by Prometheus's own rule engine (`promtool`, pinned and
built by `make promtool` like helm): they parse, and each fires on the series that mean
trouble and stays quiet on the ones that do not.

`promtool test rules` compares annotations exactly, so the rules it runs have theirs left
out; `promtool check rules` checks the full rules, annotation templates included.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helm.chart import NAMESPACE, Manifests, require_tool

JOB = "shop-kafka-klaviyo-metrics"  # the metrics Service of the all-on render
SEL = f'namespace="{NAMESPACE}", job="{JOB}"'

SERIES = [
    # Lag: one topic growing past the threshold (5000), one high but flat.
    (f'kafka_klaviyo_consumer_lag_messages{{{SEL}, pod="p1", topic="shop.events", partition="0"}}',
     "6000+100x60"),
    (f'kafka_klaviyo_consumer_lag_messages{{{SEL}, pod="p2", topic="shop.catalog", partition="0"}}',
     "9000x60"),
    # Dead-letters: 1/s of refused items (above 0.5/s), 0.1/s of decode errors (below).
    (f'kafka_klaviyo_dead_letters_total{{{SEL}, pod="p1", stage="deliver", '
     'error_class="RejectedItemError"}', "0+60x60"),
    (f'kafka_klaviyo_dead_letters_total{{{SEL}, pod="p1", stage="decode", '
     'error_class="NotAvroError"}', "0+6x60"),
    # Paused: p1 from minute 5 on, p2 never.
    (f'kafka_klaviyo_paused_partitions{{{SEL}, pod="p1"}}', "0x5 3x55"),
    (f'kafka_klaviyo_paused_partitions{{{SEL}, pod="p2"}}', "0x60"),
    # Stopped: p1 stops answering at minute 5, p2 answers throughout.
    (f'up{{{SEL}, pod="p1"}}', "1x5 0x55"),
    (f'up{{{SEL}, pod="p2"}}', "1x60"),
    # 429 share: half of the events requests (above 0.25), a tenth of the profiles ones.
    (f'kafka_klaviyo_requests_total{{{SEL}, pod="p1", account="default", endpoint="events"}}',
     "0+600x60"),
    (f'kafka_klaviyo_throttled_total{{{SEL}, pod="p1", account="default", endpoint="events"}}',
     "0+300x60"),
    (f'kafka_klaviyo_requests_total{{{SEL}, pod="p1", account="default", endpoint="profiles"}}',
     "0+600x60"),
    (f'kafka_klaviyo_throttled_total{{{SEL}, pod="p1", account="default", endpoint="profiles"}}',
     "0+60x60"),
]

FIRING_AT_40M = {
    "KafkaKlaviyoLagGrowing": [{"severity": "warning", "topic": "shop.events"}],
    "KafkaKlaviyoDeadLettersHigh": [
        {"severity": "warning", "stage": "deliver", "error_class": "RejectedItemError"}],
    "KafkaKlaviyoPartitionsPaused": [{"severity": "warning", "pod": "p1"}],
    "KafkaKlaviyoStopped": [
        {"severity": "critical", "namespace": NAMESPACE, "job": JOB, "pod": "p1"}],
    "KafkaKlaviyoThrottled": [
        {"severity": "warning", "account": "default", "endpoint": "events"}],
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    path = require_tool("promtool")
    return subprocess.run([str(path), *args], capture_output=True, text=True, timeout=120)


def rule_groups(manifests: Manifests, *, annotations: bool) -> dict[str, Any]:
    groups = manifests.one("PrometheusRule")["spec"]["groups"]
    if not annotations:
        groups = [{**g, "rules": [{k: v for k, v in r.items() if k != "annotations"}
                                  for r in g["rules"]]} for g in groups]
    return {"groups": groups}


def test_rules_pass_promtool_check(all_on: Manifests, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(rule_groups(all_on, annotations=True)), encoding="utf-8")
    result = promtool("check", "rules", str(rules))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout + result.stderr


def test_alerts_fire_on_trouble_only(all_on: Manifests, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(rule_groups(all_on, annotations=False)), encoding="utf-8")
    cases = []
    for alert, firing in FIRING_AT_40M.items():
        # Not before its `for` has passed; then exactly the troubled series.
        cases.append({"eval_time": "3m", "alertname": alert, "exp_alerts": []})
        cases.append({"eval_time": "40m", "alertname": alert,
                      "exp_alerts": [{"exp_labels": labels} for labels in firing]})
    test = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in SERIES],
            "alert_rule_test": cases,
        }],
    }
    spec = tmp_path / "test.yaml"
    spec.write_text(yaml.safe_dump(test, sort_keys=False), encoding="utf-8")
    result = promtool("test", "rules", str(spec))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("alert", sorted(FIRING_AT_40M))
def test_each_alert_can_stay_quiet(all_on: Manifests, tmp_path: Path, alert: str) -> None:
    """The test above can fail: with the troubled series left out, expecting the alert fails."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(rule_groups(all_on, annotations=False)), encoding="utf-8")
    quiet = [(s, "1x60" if s.startswith("up{") else "0x60") for s, _ in SERIES]
    test = {
        "rule_files": [str(rules)], "evaluation_interval": "1m",
        "tests": [{"interval": "1m",
                   "input_series": [{"series": s, "values": v} for s, v in quiet],
                   "alert_rule_test": [{"eval_time": "40m", "alertname": alert,
                                        "exp_alerts": [{"exp_labels": FIRING_AT_40M[alert][0]}]}]}],
    }
    spec = tmp_path / "test.yaml"
    spec.write_text(yaml.safe_dump(test, sort_keys=False), encoding="utf-8")
    result = promtool("test", "rules", str(spec))
    assert result.returncode != 0
    assert alert in result.stdout + result.stderr
