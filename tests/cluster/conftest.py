"""The cluster tier: the chart on a real kube-apiserver (``make test-cluster``).

Collected only when tests/cluster (or a file in it) is named on the command line: `make test`
and a bare `pytest` run the tiers of tests/README.md and skip this folder's minutes-long
set-up and its prerequisites (Go-built etcd and kube-apiserver).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.apiserver import ApiServer, running_apiserver

HERE = Path(__file__).resolve().parent


def _names_this_folder(config: pytest.Config) -> bool:
    for arg in config.args:
        path = Path(arg.split("::", 1)[0]).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Leave this folder out unless it was asked for."""
    if collection_path.name == "conftest.py" or _names_this_folder(config):
        return None
    return True


@pytest.fixture(scope="session")
def apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """etcd and kube-apiserver for the whole session (they take seconds to start)."""
    with running_apiserver(tmp_path_factory.mktemp("cluster")) as server:
        yield server
