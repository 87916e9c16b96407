"""Fixtures of the chart's tests: the pinned helm and the two renders every test reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helm.chart import ALL_ON, Helm, Manifests, require_tool


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(require_tool("helm"), tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="session")
def defaults(helm: Helm) -> Manifests:
    """The chart rendered with its default values."""
    return helm.render()


@pytest.fixture(scope="session")
def all_on(helm: Helm) -> Manifests:
    """The chart rendered with every option on (ci/all-on-values.yaml)."""
    return helm.render([ALL_ON])


@pytest.fixture(params=["defaults", "all_on"])
def rendered(request: pytest.FixtureRequest) -> Manifests:
    """Each of the two renders in turn."""
    manifests: Manifests = request.getfixturevalue(request.param)
    return manifests


def values_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "values.yaml"
    path.write_text(text, encoding="utf-8")
    return path
