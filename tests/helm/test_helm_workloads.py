"""The consumer group's workloads as rendered: hardening, probes, selectors, rolling on
changes, the grace period, the Jobs' names, and the values the chart refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helm.chart import ALL_ON, Helm, Manifests
from tests.helm.conftest import values_file


def pods(manifests: Manifests) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(kind/name, pod metadata, pod spec) of every workload."""
    out = []
    for doc in manifests.docs:
        spec = doc.get("spec", {})
        if doc["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        if "template" in spec:
            out.append((f"{doc['kind']}/{doc['metadata']['name']}",
                        spec["template"]["metadata"], spec["template"]["spec"]))
    return out


def test_every_pod_is_hardened(rendered: Manifests) -> None:
    for where, _meta, pod in pods(rendered):
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert pod["automountServiceAccountToken"] is False, where
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            assert context["runAsNonRoot"] is True, where
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, where
            # The only writable path is the emptyDir.
            writable = [m for m in container["volumeMounts"] if not m.get("readOnly")]
            assert [m["mountPath"] for m in writable] == ["/tmp"], where
            assert {"name": "HOME", "value": "/tmp"} in container["env"], where
        assert {"name": "tmp", "emptyDir": pod["volumes"][-1]["emptyDir"]} in pod["volumes"]


def test_probes_and_the_metrics_service(rendered: Manifests) -> None:
    deployment = rendered.one("Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["run"]
    [port] = container["ports"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    service = rendered.one("Service", "-metrics")
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    assert service["spec"]["ports"][0]["port"] == port["containerPort"]
    assert service["spec"]["publishNotReadyAddresses"] is True
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_selectors_pick_the_group_and_not_the_jobs(all_on: Manifests) -> None:
    deployment = all_on.one("Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert all_on.one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector
    assert all_on.one("Service", "-metrics")["spec"]["selector"] == selector
    for where, meta, _pod in pods(all_on):
        if not where.startswith("Deployment/"):
            assert not selector.items() <= meta["labels"].items(), f"{where} joins the group"
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in spread] == [
        "topology.kubernetes.io/zone", "kubernetes.io/hostname"]
    assert all(c["labelSelector"]["matchLabels"] == selector for c in spread)


def test_replicas_and_disruption_budget(defaults: Manifests, all_on: Manifests) -> None:
    assert defaults.one("Deployment")["spec"]["replicas"] == 2
    assert defaults.one("PodDisruptionBudget")["spec"] == {
        "maxUnavailable": 1, "selector": defaults.one("PodDisruptionBudget")["spec"]["selector"]}
    assert all_on.one("PodDisruptionBudget")["spec"]["minAvailable"] == 2
    strategy = defaults.one("Deployment")["spec"]["strategy"]["rollingUpdate"]
    assert strategy == {"maxSurge": 1, "maxUnavailable": 0}


def checksums(manifests: Manifests) -> dict[str, str]:
    annotations = manifests.one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    return {k: v for k, v in annotations.items() if k.startswith("checksum/")}


def test_pods_roll_when_settings_rules_or_keys_change(helm: Helm, all_on: Manifests) -> None:
    before = checksums(all_on)
    assert set(before) == {"checksum/config", "checksum/rules", "checksum/api-keys"}
    changes = {
        "checksum/config": "config.batch.linger_ms=900",
        "checksum/rules": "rules.extra\\.yaml=version: 1",
        "checksum/api-keys": "klaviyo.apiKeys.brand-a=pk_other",
    }
    for annotation, change in changes.items():
        after = checksums(helm.render([ALL_ON], [change]))
        assert {k for k in before if before[k] != after[k]} == {annotation}, change
    # The same values render the same checksums (no roll on a no-op upgrade).
    assert checksums(helm.render([ALL_ON])) == before


def test_grace_period(helm: Helm, defaults: Manifests) -> None:
    pod = defaults.one("Deployment")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 30 + 5 + 15
    error = helm.render_error(sets=["terminationGracePeriodSeconds=35"])
    assert "terminationGracePeriodSeconds: 35 must be above the drain's 35 s" in error
    more = helm.render(sets=["config.delivery.shutdown_grace_s=100"]).one("Deployment")
    assert more["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 120


def test_job_names_follow_their_arguments(helm: Helm, all_on: Manifests) -> None:
    names = {d["metadata"]["name"] for d in all_on.of_kind("Job")}
    assert names == {d["metadata"]["name"] for d in helm.render([ALL_ON]).of_kind("Job")}
    changed = helm.render([ALL_ON], ["replay.toOffset=260000"]).of_kind("Job")
    assert len(names - {d["metadata"]["name"] for d in changed}) == 1
    for job in all_on.of_kind("Job"):
        assert len(job["metadata"]["name"]) <= 63
        assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


REFUSED = [
    ("config: {observability: {metrics_port: 1}}",
     "config.observability.metrics_port: set by the chart"),
    ("config: {rules: {dirs: [/x]}}", "config.rules.dirs: set by the chart"),
    ("config: {klaviyo: {api_key_file: /x}}",
     "config.klaviyo: the API key is mounted by the chart"),
    ("config: {accounts: {b: {api_key_env: K}}, routing: {accounts: {s: b}}}",
     "config.accounts.b: its API key is mounted by the chart"),
    ("config: {kafka: {properties: {security.protocol: SSL}}}",
     "config.kafka.properties.security.protocol: set by the chart"),
    ("klaviyo: {apiKeys: {brand-a: k}}\n"
     "config: {accounts: {brand-a: {}},"
     " routing: {accounts: {s: brand-a}, default_account: default}}",
     "klaviyo.apiKeys.default: the account default needs a key"),
    # The schema refuses it before the template would.
    ("rules: {notes.txt: x}", "'notes.txt' does not match pattern"),
]


@pytest.mark.parametrize("text,message", REFUSED)
def test_refused_values(helm: Helm, tmp_path: Path, text: str, message: str) -> None:
    assert message in helm.render_error([values_file(tmp_path, text)])


def test_routing_without_the_default_account_mounts_only_named_keys(
    helm: Helm, tmp_path: Path
) -> None:
    values = values_file(
        tmp_path,
        "config: {accounts: {a: {}, b: {}}, routing: {accounts: {x: a, y: b}}}\n"
        "klaviyo: {existingSecret: keys, existingSecretKeys: {a: key-a}}",
    )
    pod = helm.render([values]).one("Deployment")["spec"]["template"]["spec"]
    [keys] = [v for v in pod["volumes"] if v["name"] == "api-keys"]
    assert keys["secret"]["secretName"] == "keys"
    assert keys["secret"]["items"] == [{"key": "key-a", "path": "a"}, {"key": "b", "path": "b"}]
