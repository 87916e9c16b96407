"""helm lint --strict, helm template and the Kubernetes schemas of the rendered manifests.

Every built-in resource must validate (strict: unknown fields are errors) against the
Kubernetes versions in KUBE_VERSIONS, offline, with kubernetes-validate's bundled schemas. It
has no schema for custom resources and only warns about them, so a missing schema is a
failure here unless the kind is one of CUSTOM_KINDS, which test_helm_custom_resources checks
against pydantic models generated from their CRDs.
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from tests.helm.chart import ALL_ON, CHART, KUBE_VERSIONS, NAMESPACE, RELEASE, Helm, Manifests

CUSTOM_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}


def test_helm_is_the_pinned_version(helm: Helm) -> None:
    out = helm.run("version", "--template", "{{.Version}}").stdout.strip()
    assert out == helm.path.name.removeprefix("helm-")


@pytest.mark.parametrize("values", [[], [ALL_ON]], ids=["defaults", "all-on"])
def test_lint_strict(helm: Helm, values: list[Any]) -> None:
    args = ["lint", "--strict", str(CHART), "--namespace", NAMESPACE]
    for path in values:
        args += ["--values", str(path)]
    result = helm.run(*args)
    assert "0 chart(s) failed" in result.stdout
    # lint reports a template's `fail` as INFO and passes; a render that fails is a failure.
    assert "Fail:" not in result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_renders_for_every_supported_kubernetes(helm: Helm, kube_version: str) -> None:
    out = helm.run(
        "template", RELEASE, str(CHART), "--values", str(ALL_ON), "--kube-version", kube_version
    ).stdout
    assert "kind: Deployment" in out


def test_older_kubernetes_is_refused(helm: Helm) -> None:
    result = helm.run("template", RELEASE, str(CHART), "--kube-version", "1.24.0", check=False)
    assert result.returncode != 0
    assert "kubeVersion" in result.stderr or "incompatible" in result.stderr


def test_what_each_render_holds(defaults: Manifests, all_on: Manifests) -> None:
    assert defaults.kinds() == {
        "ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "ServiceAccount",
    }
    assert all_on.kinds() == {
        "ConfigMap", "CronJob", "Deployment", "Job", "PodDisruptionBudget", "PrometheusRule",
        "ScaledObject", "Secret", "Service", "ServiceAccount", "ServiceMonitor",
        "TriggerAuthentication",
    }
    assert len(all_on.of_kind("Job")) == 2
    assert {d["metadata"]["name"] for d in all_on.of_kind("ConfigMap")} == {
        f"{RELEASE}-kafka-klaviyo-{suffix}" for suffix in ("config", "rules", "dashboard")
    }


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_manifests_validate_against_kubernetes_schemas(
    rendered: Manifests, kube_version: str
) -> None:
    checked = 0
    for doc in rendered.docs:
        key = (doc["apiVersion"], doc["kind"])
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            assert key in CUSTOM_KINDS, f"no Kubernetes {kube_version} schema for {key}"
            continue
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{doc['kind']} {doc['metadata']['name']}: {exc}") from exc
        checked += 1
    assert checked >= 5


def test_validation_catches_an_unknown_field(defaults: Manifests) -> None:
    """The check above can fail: a typo in a container is refused."""
    deployment = defaults.one("Deployment")
    container = dict(deployment["spec"]["template"]["spec"]["containers"][0], bogusField=1)
    broken = {**deployment, "spec": {**deployment["spec"], "template": {
        **deployment["spec"]["template"],
        "spec": {**deployment["spec"]["template"]["spec"], "containers": [container]},
    }}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBE_VERSIONS[-1], strict=True)
