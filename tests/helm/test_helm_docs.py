"""The chart's documentation and types: every value typed and described in values.schema.json,
the schema's `config` the consumer's own settings model, the README's values table current."""

from __future__ import annotations

import json
import re
import runpy
import shlex
from pathlib import Path
from typing import Any

import yaml

from tests.helm.chart import CHART, ROOT, Helm

generate = runpy.run_path(str(ROOT / "helm" / "generate.py"))
SCHEMA: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
VALUES: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))


def leaves(values: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of values.yaml's values (a mapping with entries is walked into)."""
    paths = []
    for key, value in values.items():
        if isinstance(value, dict) and value and key not in ("config", "resources"):
            paths += leaves(value, f"{prefix}{key}.")
        else:
            paths.append(f"{prefix}{key}")
    return paths


def schema_node(path: str) -> dict[str, Any] | None:
    node: dict[str, Any] | None = SCHEMA
    for part in path.split("."):
        node = (node or {}).get("properties", {}).get(part)
    return node


def test_every_value_is_typed_and_described() -> None:
    for path in leaves(VALUES):
        if path.startswith(("podSecurityContext.", "securityContext.")):
            continue  # Kubernetes' own objects, typed by the Kubernetes schemas
        node = schema_node(path)
        assert node is not None, f"{path}: not in values.schema.json"
        assert node.get("description", "").strip(), f"{path}: no description"
        assert "type" in node or "$ref" in node or "anyOf" in node, f"{path}: no type"


def test_the_schema_refuses_unknown_values() -> None:
    assert SCHEMA["additionalProperties"] is False
    for name, node in SCHEMA["properties"].items():
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, name


def test_config_schema_is_the_consumers_settings_model() -> None:
    config, defs = generate["config_schema"]()
    assert SCHEMA["properties"]["config"] == config
    assert SCHEMA["$defs"] == defs
    assert set(SCHEMA["$defs"]) >= {"KafkaSettings", "DeliverySettings", "AccountSettings"}


def test_generated_files_are_current() -> None:
    for path, text in generate["outputs"]().items():
        assert Path(path).read_text(encoding="utf-8") == text, f"{path}: run `make helm-docs`"


def test_readme_lists_every_value() -> None:
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    for path in leaves(VALUES):
        top = path.split(".")[0]
        if top in ("podSecurityContext", "securityContext"):
            path = top
        assert f"| `{path}` |" in readme, f"{path}: not in the README's values table"


def test_helm_enforces_the_schema(helm: Helm) -> None:
    """Bad values stop helm itself, the consumer's config included."""
    assert "got string, want integer" in helm.render_error(sets=["replicas=three"])
    assert "'bogus' not allowed" in helm.render_error(sets=["config.kafka.bogus=1"])
    assert "/config/delivery/shutdown_grace_s" in helm.render_error(
        sets=["config.delivery.shutdown_grace_s=-1"]
    )
    assert "/kafka/securityProtocol" in helm.render_error(sets=["kafka.securityProtocol=TLS"])


def test_readme_render_is_current(helm: Helm) -> None:
    """The rendered output quoted in README.md's "Deploy to Kubernetes" is what helm renders."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Deploy to Kubernetes", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"\(`helm (template [^`]+)`\):\n\n```yaml\n(.*?)\n```", section, re.DOTALL)
    assert match, "README.md: the quoted helm template command and its output"
    args = shlex.split(match.group(1).replace("helm/kafka-klaviyo", str(CHART)))
    assert helm.run(*args).stdout.strip("\n") == match.group(2)
