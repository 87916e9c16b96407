"""The Helm chart on a real kube-apiserver: strict server-side validation, install, upgrade,
uninstall (``make test-cluster``).

The KEDA and prometheus-operator CRDs are the hand-written ones in tests/cluster/crds/. There is
no kubelet, scheduler or controller-manager: the server validates, defaults and stores every
object, but no Pod is ever created, so nothing here proves the consumer runs in a cluster.
"""

from __future__ import annotations

import base64
import copy
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.apiserver import ApiServer, tool
from tests.support import wait_for

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "kafka-klaviyo"
ALL_ON = CHART / "ci" / "all-on-values.yaml"
CRDS = Path(__file__).resolve().parent / "crds"
NAMESPACE = "shop"
RELEASE = "klaviyo"
DEFAULTS_RELEASE = "klaviyo-defaults"
# What the upgrade changes, and where each change must show on the server.
UPGRADE = [
    "podDisruptionBudget.minAvailable=1",
    "autoscaling.maxReplicas=8",
    "config.delivery.shutdown_grace_s=50",
    "metrics.prometheusRule.lagThreshold=9000",
]

Manifest = dict[str, Any]


class Helm:
    """The pinned helm (KAFKA_KLAVIYO_HELM) with its own homes, talking to the test server."""

    def __init__(self, binary: Path, home: Path, kubeconfig: Path) -> None:
        self.binary = binary
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
            "KUBECONFIG": str(kubeconfig),
        }

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(self.binary), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, f"helm {' '.join(args)}:\n{done.stderr}"
        # The server answers an unknown or duplicate field with a Warning header (its default
        # fieldValidation); helm prints those. None is allowed.
        assert "warning" not in done.stderr.lower(), done.stderr
        return done

    def manifests(self, *args: str) -> list[Manifest]:
        """The objects of `helm template ...` or `helm get manifest ...`."""
        return [doc for doc in yaml.safe_load_all(self(*args).stdout) if doc]


def values(release: str) -> list[str]:
    return ["-f", str(ALL_ON)] if release == RELEASE else []


def contained(want: Any, have: Any, where: str = "") -> list[str]:
    """Where ``have`` (the stored object) lacks or differs from ``want`` (the rendered one);
    the server may add defaults, never drop or change what the chart set."""
    if isinstance(want, Mapping):
        if not isinstance(have, Mapping):
            return [f"{where}: stored {have!r}"]
        problems = []
        for key, value in want.items():
            if key not in have:
                if value in (None, {}, []):
                    continue  # the server leaves empty values out
                problems.append(f"{where}.{key}: dropped by the server")
            else:
                problems.extend(contained(value, have[key], f"{where}.{key}"))
        return problems
    if isinstance(want, list):
        if not isinstance(have, list) or len(want) != len(have):
            return [f"{where}: stored {have!r}"]
        return [p for n, (w, h) in enumerate(zip(want, have, strict=True)) for p in
                contained(w, h, f"{where}[{n}]")]  # fmt: skip
    if want == have or str(want) == str(have):  # int-or-string and quantities
        return []
    return [f"{where}: rendered {want!r}, stored {have!r}"]


def stored_like_rendered(server: ApiServer, manifest: Manifest) -> list[str]:
    answer = server.get(manifest, NAMESPACE)
    name = f"{manifest['kind']}/{manifest['metadata']['name']}"
    if answer.status_code != 200:
        return [f"{name}: GET answered {answer.status_code}"]
    want = copy.deepcopy(manifest)
    if manifest["kind"] == "Secret" and "stringData" in want:
        # The server stores stringData base64-encoded under data.
        strings = want.pop("stringData")
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in strings.items()}
        want["data"] = {**want.get("data", {}), **encoded}
    return [f"{name}{problem}" for problem in contained(want, answer.json())]


def find(manifests: list[Manifest], kind: str) -> Manifest:
    (found,) = [m for m in manifests if m["kind"] == kind]
    return found


@pytest.fixture(scope="module")
def cluster(apiserver: ApiServer) -> Iterator[ApiServer]:
    """The server with the CRDs the chart needs and the release's namespace."""
    for path in sorted(CRDS.glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            answer = apiserver.create(crd, NAMESPACE)
            name = crd["metadata"]["name"]
            assert answer.status_code == 201, f"{path.name} {name}: {answer.text}"
            assert "warning" not in answer.headers, answer.headers["warning"]
            apiserver.wait_established(crd["metadata"]["name"])
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    assert apiserver.create(namespace, NAMESPACE).status_code == 201
    yield apiserver


@pytest.fixture(scope="module")
def helm(cluster: ApiServer, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(tool("KAFKA_KLAVIYO_HELM"), tmp_path_factory.mktemp("helm"), cluster.kubeconfig)


@pytest.mark.parametrize("release", [DEFAULTS_RELEASE, RELEASE])
def test_every_rendered_object_passes_strict_server_validation(
    cluster: ApiServer, helm: Helm, release: str
) -> None:
    rendered = helm.manifests("template", release, str(CHART), "-n", NAMESPACE, *values(release))
    assert rendered
    for manifest in rendered:
        answer = cluster.create(manifest, NAMESPACE, dry_run=True)
        name = f"{manifest['kind']}/{manifest['metadata']['name']}"
        assert answer.status_code == 201, f"{name}: {answer.json().get('message')}"
        assert "warning" not in answer.headers, f"{name}: {answer.headers['warning']}"


def test_the_server_rejects_what_offline_schemas_miss(cluster: ApiServer, helm: Helm) -> None:
    """The controls: the same objects, each with one mistake, are refused by this server."""
    rendered = helm.manifests("template", RELEASE, str(CHART), "-n", NAMESPACE, *values(RELEASE))
    broken: list[tuple[Manifest, str]] = []  # (object, what the refusal must name)
    deployment = copy.deepcopy(find(rendered, "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "Sometimes"
    broken.append((deployment, '"Sometimes"'))
    scaled = copy.deepcopy(find(rendered, "ScaledObject"))
    scaled["spec"]["maxReplicas"] = scaled["spec"].pop("maxReplicaCount")  # HPA's name, not KEDA's
    broken.append((scaled, "spec.maxReplicas"))
    rule = copy.deepcopy(find(rendered, "PrometheusRule"))
    rule["spec"]["groups"][0]["rules"][0]["for"] = "15 minutes"
    broken.append((rule, "for"))
    monitor = copy.deepcopy(find(rendered, "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["scrape_interval"] = "15s"  # Prometheus's name, not the CRD's
    broken.append((monitor, "scrape_interval"))
    for manifest, named in broken:
        answer = cluster.create(manifest, NAMESPACE, dry_run=True)
        # 400: strict decoding refused an unknown field; 422: a value failed the schema.
        assert answer.status_code in (400, 422), f"{manifest['kind']}: {answer.status_code}"
        assert named in answer.json()["message"], answer.json()["message"]


def test_install_upgrade_uninstall(cluster: ApiServer, helm: Helm) -> None:
    chart = str(CHART)
    # -- install: what helm sent is what the server stores -------------------------------
    helm("install", RELEASE, chart, "-n", NAMESPACE, *values(RELEASE), "--dry-run=server")
    helm("install", RELEASE, chart, "-n", NAMESPACE, *values(RELEASE))
    installed = helm.manifests("get", "manifest", RELEASE, "-n", NAMESPACE)
    kinds = {m["kind"] for m in installed}
    assert {"Deployment", "ScaledObject", "ServiceMonitor", "PrometheusRule", "Job"} <= kinds
    problems = [p for m in installed for p in stored_like_rendered(cluster, m)]
    assert not problems, "\n".join(problems)
    before = cluster.get(find(installed, "Deployment"), NAMESPACE).json()

    # -- upgrade: each changed value shows in the server's objects ------------------------
    sets = [arg for change in UPGRADE for arg in ("--set", change)]
    helm("upgrade", RELEASE, chart, "-n", NAMESPACE, *values(RELEASE), *sets)
    upgraded = helm.manifests("get", "manifest", RELEASE, "-n", NAMESPACE)
    problems = [p for m in upgraded for p in stored_like_rendered(cluster, m)]
    assert not problems, "\n".join(problems)
    after = cluster.get(find(upgraded, "Deployment"), NAMESPACE).json()
    assert after["metadata"]["generation"] > before["metadata"]["generation"]
    budget = cluster.get(find(upgraded, "PodDisruptionBudget"), NAMESPACE).json()
    assert budget["spec"]["minAvailable"] == 1
    # The settings changed, so the pods would roll: the checksum annotation moved.
    old_pod, new_pod = (d["spec"]["template"]["metadata"]["annotations"] for d in (before, after))
    assert {k for k in new_pod if new_pod[k] != old_pod.get(k)}, "no pod annotation changed"
    scaled = cluster.get(find(upgraded, "ScaledObject"), NAMESPACE).json()
    assert scaled["spec"]["maxReplicaCount"] == 8
    settings = [
        cluster.get(m, NAMESPACE).json()["data"] for m in upgraded if m["kind"] == "ConfigMap"
    ]
    assert any("shutdown_grace_s: 50" in text for data in settings for text in data.values())
    rule = cluster.get(find(upgraded, "PrometheusRule"), NAMESPACE).json()
    assert "> 9000" in rule["spec"]["groups"][0]["rules"][0]["expr"]
    history = helm("history", RELEASE, "-n", NAMESPACE, "-o", "yaml").stdout
    assert [entry["revision"] for entry in yaml.safe_load(history)] == [1, 2]

    # -- uninstall: every object of the release is gone -----------------------------------
    helm("uninstall", RELEASE, "-n", NAMESPACE)

    def gone() -> bool:
        return all(cluster.get(m, NAMESPACE).status_code == 404 for m in upgraded)

    wait_for(gone, 60, "every object of the release deleted")
    left = cluster.client.get(
        f"/api/v1/namespaces/{NAMESPACE}/secrets", params={"labelSelector": "owner=helm"}
    ).json()["items"]
    assert not [s["metadata"]["name"] for s in left if RELEASE in s["metadata"]["name"]]


def test_the_default_values_install_and_uninstall(cluster: ApiServer, helm: Helm) -> None:
    helm("install", DEFAULTS_RELEASE, str(CHART), "-n", NAMESPACE)
    installed = helm.manifests("get", "manifest", DEFAULTS_RELEASE, "-n", NAMESPACE)
    problems = [p for m in installed for p in stored_like_rendered(cluster, m)]
    assert not problems, "\n".join(problems)
    helm("uninstall", DEFAULTS_RELEASE, "-n", NAMESPACE)
    wait_for(
        lambda: all(cluster.get(m, NAMESPACE).status_code == 404 for m in installed),
        60,
        "every object of the defaults release deleted",
    )
