"""pytest plugin: a real Schema Registry (Apicurio, Confluent's API) for the integration tests.

Registered from ``tests/conftest.py`` next to ``tests.fixtures_kafka``.

* ``schema_registry`` (session): one started :class:`~kafka_klaviyo_dev.registry.LocalRegistry`
  shared by every test; its ``registry.log`` lives under pytest's basetemp. Its storage is in
  memory and shared: register under subjects of your own, or leave it as you found it.

Missing Java or Maven fails the tests with one line saying how to install them, on CI
(``CI=true``) and locally alike: a green run must mean the real registry was exercised.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from kafka_klaviyo_dev.errors import DevstackError
from kafka_klaviyo_dev.registry import LocalRegistry, require_registry_tools


def _fail_without_tools() -> None:
    try:
        require_registry_tools()
    except DevstackError as exc:
        problem = str(exc)
    else:
        return
    where = "on CI (CI=true)" if os.environ.get("CI", "").lower() == "true" else "locally"
    pytest.fail(
        f"the Schema Registry integration tests cannot run {where}: {problem}; "
        "they are never skipped",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def schema_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    """A started in-memory Apicurio Registry on 127.0.0.1, stopped at the end of the session."""
    _fail_without_tools()
    registry = LocalRegistry(work_dir=tmp_path_factory.mktemp("registry"))
    problem = None
    try:
        registry.start()
    except DevstackError as exc:
        registry.stop()
        problem = str(exc)
    if problem is not None:
        pytest.fail(f"the local Schema Registry did not start: {problem}", pytrace=False)
    try:
        yield registry
    finally:
        registry.stop()
