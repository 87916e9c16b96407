"""The custom resources of the chart, field by field: KEDA's ScaledObject and
TriggerAuthentication, the Prometheus Operator's ServiceMonitor and PrometheusRule.

Each is parsed by the pydantic model generated from its CRD (cloudcoil-models-keda,
cloudcoil-models-prometheus-operator): types, required fields and enums. Those models drop
unknown fields silently, so a field the model dropped fails here too (``unknown_fields``).
Then the references: names match the Deployment and the metrics Service, the group and topics
match the consumer's settings, and the replica ceiling is the partition count.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from cloudcoil.models.keda.v1alpha1 import ScaledObject, TriggerAuthentication
from cloudcoil.models.prometheus_operator.v1 import PrometheusRule, ServiceMonitor
from pydantic import BaseModel

from tests.helm.chart import ALL_ON, NAMESPACE, Helm, Manifests
from tests.helm.conftest import values_file

MODELS: dict[str, type[BaseModel]] = {
    "ScaledObject": ScaledObject,
    "TriggerAuthentication": TriggerAuthentication,
    "ServiceMonitor": ServiceMonitor,
    "PrometheusRule": PrometheusRule,
}
ALL_ON_VALUES: dict[str, Any] = yaml.safe_load(ALL_ON.read_text(encoding="utf-8"))


def unknown_fields(given: Any, kept: Any, path: str = "") -> list[str]:
    """Paths of the fields of ``given`` the model dropped while parsing (``kept``: its dump
    by CRD names): fields the CRD does not have."""
    found: list[str] = []
    if isinstance(given, dict) and isinstance(kept, dict):
        for key, value in given.items():
            if key not in kept:
                found.append(f"{path}.{key}")
            else:
                found += unknown_fields(value, kept[key], f"{path}.{key}")
    elif isinstance(given, list) and isinstance(kept, list):
        for index, (value, dumped) in enumerate(zip(given, kept, strict=True)):
            found += unknown_fields(value, dumped, f"{path}[{index}]")
    return found


def parsed(doc: dict[str, Any]) -> BaseModel:
    """The document parsed by its CRD's model; AssertionError naming any unknown field."""
    model = MODELS[doc["kind"]].model_validate(doc)
    kept = model.model_dump(by_alias=True, exclude_unset=True)
    assert unknown_fields(doc, kept) == [], f"{doc['kind']}: fields its CRD does not have"
    return model


def test_every_custom_resource_matches_its_crd(all_on: Manifests) -> None:
    kinds = [doc for doc in all_on.docs if doc["kind"] in MODELS]
    assert sorted(doc["kind"] for doc in kinds) == sorted(MODELS)
    for doc in kinds:
        parsed(doc)


def test_the_crd_check_can_fail(all_on: Manifests) -> None:
    scaled = all_on.one("ScaledObject")
    typo = {**scaled, "spec": {**scaled["spec"], "pollingIntervl": 30}}
    kept = ScaledObject.model_validate(typo).model_dump(by_alias=True, exclude_unset=True)
    assert unknown_fields(typo, kept) == [".spec.pollingIntervl"]
    with pytest.raises(AssertionError, match="fields its CRD does not have"):
        parsed(typo)
    missing = {**scaled, "spec": {k: v for k, v in scaled["spec"].items() if k != "scaleTargetRef"}}
    with pytest.raises(ValueError):
        ScaledObject.model_validate(missing)


def test_scaled_object_targets_the_group(all_on: Manifests) -> None:
    deployment = all_on.one("Deployment")
    spec = all_on.one("ScaledObject")["spec"]
    config = ALL_ON_VALUES["config"]["kafka"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"],
    }
    assert "replicas" not in deployment["spec"], "KEDA owns the count"
    assert spec["minReplicaCount"] == ALL_ON_VALUES["autoscaling"]["minReplicas"]
    assert spec["maxReplicaCount"] <= ALL_ON_VALUES["partitions"]
    assert spec["maxReplicaCount"] == ALL_ON_VALUES["autoscaling"]["maxReplicas"]
    auth = all_on.one("TriggerAuthentication")["metadata"]["name"]
    assert [t["metadata"]["topic"] for t in spec["triggers"]] == config["topics"]
    for trigger in spec["triggers"]:
        assert trigger["type"] == "kafka"
        metadata = trigger["metadata"]
        assert metadata["consumerGroup"] == config["group_id"]
        assert metadata["bootstrapServers"] == config["bootstrap_servers"]
        assert metadata["lagThreshold"] == str(ALL_ON_VALUES["autoscaling"]["lagThreshold"])
        assert metadata["offsetResetPolicy"] == "earliest"
        assert metadata["sasl"] == "scram_sha512"
        assert metadata["tls"] == "enable"
        assert trigger["authenticationRef"] == {"name": auth}


def test_trigger_authentication_reads_the_kafka_secrets(all_on: Manifests) -> None:
    refs = {
        ref["parameter"]: (ref["name"], ref["key"])
        for ref in all_on.one("TriggerAuthentication")["spec"]["secretTargetRef"]
    }
    kafka = ALL_ON_VALUES["kafka"]
    sasl, tls = kafka["sasl"]["existingSecret"], kafka["tls"]["existingSecret"]
    assert refs == {
        "username": (sasl, "username"), "password": (sasl, "password"),
        "ca": (tls, "ca.crt"), "cert": (tls, "tls.crt"), "key": (tls, "tls.key"),
    }


def test_max_replicas_defaults_to_the_partition_count(helm: Helm) -> None:
    spec = helm.render(sets=["autoscaling.enabled=true", "partitions=4"]).one("ScaledObject")
    assert spec["spec"]["maxReplicaCount"] == 4
    assert "authenticationRef" not in spec["spec"]["triggers"][0]


def test_more_replicas_than_partitions_is_refused(helm: Helm) -> None:
    error = helm.render_error(sets=["autoscaling.enabled=true", "partitions=4",
                                    "autoscaling.maxReplicas=5"])
    assert "autoscaling.maxReplicas: 5 is more than partitions (4)" in error
    error = helm.render_error(sets=["replicas=5", "partitions=4"])
    assert "replicas: 5 is more than partitions (4)" in error


def test_plain_sasl_is_keda_plaintext(helm: Helm, tmp_path: Any) -> None:
    values = values_file(tmp_path, """
autoscaling: {enabled: true}
kafka: {securityProtocol: SASL_PLAINTEXT, sasl: {mechanism: PLAIN, existingSecret: creds}}
""")
    manifests = helm.render([values])
    trigger = manifests.one("ScaledObject")["spec"]["triggers"][0]["metadata"]
    assert trigger["sasl"] == "plaintext"
    assert "tls" not in trigger
    parsed(manifests.one("TriggerAuthentication"))


def test_service_monitor_scrapes_the_metrics_service(all_on: Manifests) -> None:
    service = all_on.one("Service", "-metrics")
    spec = all_on.one("ServiceMonitor")["spec"]
    labels = service["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    # ...and no other Service of the chart (there is none today; the component label says so).
    assert spec["selector"]["matchLabels"]["app.kubernetes.io/component"] == "metrics"
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    [endpoint] = spec["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["interval"] == ALL_ON_VALUES["metrics"]["serviceMonitor"]["interval"]
    assert all_on.one("ServiceMonitor")["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_prometheus_rule_alerts(all_on: Manifests) -> None:
    rule = all_on.one("PrometheusRule")
    [group] = rule["spec"]["groups"]
    alerts = {r["alert"]: r for r in group["rules"]}
    assert set(alerts) == {
        "KafkaKlaviyoLagGrowing", "KafkaKlaviyoDeadLettersHigh", "KafkaKlaviyoPartitionsPaused",
        "KafkaKlaviyoStopped", "KafkaKlaviyoThrottled",
    }
    service = all_on.one("Service", "-metrics")["metadata"]["name"]
    settings = ALL_ON_VALUES["metrics"]["prometheusRule"]
    for name, alert in alerts.items():
        assert f'job="{service}"' in alert["expr"], name
        assert f'namespace="{NAMESPACE}"' in alert["expr"], name
        assert alert["labels"]["severity"] in ("warning", "critical")
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
    assert alerts["KafkaKlaviyoStopped"]["labels"]["severity"] == "critical"
    assert alerts["KafkaKlaviyoPartitionsPaused"]["for"] == settings["pausedFor"]
    assert alerts["KafkaKlaviyoLagGrowing"]["for"] == settings["lagGrowingFor"]
    assert f"> {settings['lagThreshold']}" in alerts["KafkaKlaviyoLagGrowing"]["expr"]
    assert f"> {settings['deadLetterRate']}" in alerts["KafkaKlaviyoDeadLettersHigh"]["expr"]
    assert f"> {settings['throttledShare']}" in alerts["KafkaKlaviyoThrottled"]["expr"]
