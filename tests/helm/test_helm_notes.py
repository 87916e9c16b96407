"""NOTES.txt: what `helm install` prints names real objects, commands and series.

helm renders NOTES.txt only on install, which needs a cluster; the engine holds it as a named
template though, so a copy of the chart with one more template (a ConfigMap including it)
renders it with `helm template`.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
import yaml

from tests.helm.chart import ALL_ON, CHART, NAMESPACE, RELEASE, Helm, Manifests
from tests.helm.consumer_side import exported_series, parse_args

PROBE = """apiVersion: v1
kind: ConfigMap
metadata: {name: notes}
data:
  notes: {{ include "kafka-klaviyo/templates/NOTES.txt" . | quote }}
"""


@pytest.fixture(scope="module")
def notes_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("chart") / "kafka-klaviyo"
    shutil.copytree(CHART, copy)
    (copy / "templates" / "zz-notes-probe.yaml").write_text(PROBE, encoding="utf-8")
    return copy


def notes(helm: Helm, chart: Path, values: list[Path]) -> str:
    args = ["template", RELEASE, str(chart), "--namespace", NAMESPACE,
            "--show-only", "templates/zz-notes-probe.yaml"]
    for path in values:
        args += ["--values", str(path)]
    return str(yaml.safe_load(helm.run(*args).stdout)["data"]["notes"])


@pytest.mark.parametrize("values", [[], [ALL_ON]], ids=["defaults", "all-on"])
def test_notes_name_what_the_chart_renders(
    helm: Helm, notes_chart: Path, values: list[Path], defaults: Manifests, all_on: Manifests
) -> None:
    manifests = all_on if values else defaults
    text = notes(helm, notes_chart, values)
    deployment = manifests.one("Deployment")["metadata"]["name"]
    service = manifests.one("Service", "-metrics")
    assert f"svc/{service['metadata']['name']} {service['spec']['ports'][0]['port']}" in text
    assert f"exec deploy/{deployment} --" in text
    config = yaml.safe_load(manifests.one("ConfigMap", "-config")["data"]["config.yaml"])
    assert f"--group {config['kafka']['group_id']}" in text
    assert f"dead-letter topic {config['kafka']['dead_letter_topic']}" in text
    # The commands it suggests parse with the CLI; the series it greps for exist.
    commands = re.findall(r"-- kafka-klaviyo (.+)", text)
    assert {parse_args(shlex.split(c))[0] for c in commands} == {"dlq stats", "dlq list"}
    [pattern] = re.findall(r"grep -E '\^kafka_klaviyo_\(([^)]*)\)'", text)
    for name in pattern.split("|"):
        assert f"kafka_klaviyo_{name}" in exported_series()
    if values:
        assert "create secret" not in text  # the chart made it from apiKeys
        for component in ("replay", "redrive", "dlq-stats"):
            assert f"app.kubernetes.io/component={component}" in text
    else:
        assert "create secret generic shop-kafka-klaviyo-klaviyo --from-literal=default=" in text
