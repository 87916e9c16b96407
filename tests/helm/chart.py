"""Running the pinned helm on the chart, and reading what it renders.

helm and promtool are the ones `make helm` and `make promtool` build (``KAFKA_KLAVIYO_HELM``,
``KAFKA_KLAVIYO_PROMTOOL``, set by the Makefile, or their cache paths, whose versions are read
from the Makefile). Without them the chart's tests fail on CI (``CI=true``) and are skipped
elsewhere with the command that builds them.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "kafka-klaviyo"
ALL_ON = CHART / "ci" / "all-on-values.yaml"
RELEASE = "shop"
NAMESPACE = "crm"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest
# kubernetes-validate bundles schemas for.
KUBE_VERSIONS = ("1.25.0", "1.37.0")


def tool_path(name: str) -> Path:
    """A pinned tool the Makefile builds: $KAFKA_KLAVIYO_<NAME>, else the Makefile's cache path
    (``<name>-<NAME_VERSION>`` under ~/.cache/kafka-klaviyo/tools/bin)."""
    given = os.environ.get(f"KAFKA_KLAVIYO_{name.upper()}")
    if given:
        return Path(given)
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    match = re.search(rf"^{name.upper()}_VERSION\s*:=\s*(\S+)", makefile, re.MULTILINE)
    assert match, f"Makefile: {name.upper()}_VERSION is not set"
    return Path.home() / ".cache" / "kafka-klaviyo" / "tools" / "bin" / f"{name}-{match.group(1)}"


def require_tool(name: str) -> Path:
    """The tool's path; a failure on CI when it is missing, a skip elsewhere."""
    path = tool_path(name)
    if path.is_file() and os.access(path, os.X_OK):
        return path
    message = f"{name} not found at {path}: run `make {name}` (needs Go)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class Helm:
    """The pinned helm with its own empty cache, config and data folders."""

    path: Path
    home: Path

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }
        result = subprocess.run(
            [str(self.path), *args], capture_output=True, text=True, env=env, timeout=120
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"helm {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
            )
        return result

    def template_args(
        self, values: list[Path] | None = None, sets: list[str] | None = None
    ) -> list[str]:
        args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
        for path in values or []:
            args += ["--values", str(path)]
        for item in sets or []:
            args += ["--set", item]
        return args

    def render(
        self, values: list[Path] | None = None, sets: list[str] | None = None
    ) -> Manifests:
        out = self.run(*self.template_args(values, sets)).stdout
        return Manifests([doc for doc in yaml.safe_load_all(out) if doc])

    def render_error(self, values: list[Path] | None = None, sets: list[str] | None = None) -> str:
        """The error of a render that must fail (AssertionError if it renders)."""
        result = self.run(*self.template_args(values, sets), check=False)
        assert result.returncode != 0, f"rendered although it should not:\n{result.stdout}"
        return result.stderr


@dataclass
class Manifests:
    """The documents of one render, looked up by kind and name."""

    docs: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def one(self, kind: str, suffix: str = "") -> dict[str, Any]:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"].endswith(suffix)]
        assert len(found) == 1, f"{kind} *{suffix}: {len(found)} rendered"
        return found[0]

    def kinds(self) -> set[str]:
        return {doc["kind"] for doc in self.docs}
