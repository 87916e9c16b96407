"""pytest plugin: a real Apache Kafka broker for the integration tests.

Registered from ``tests/conftest.py`` with ``pytest_plugins = ["tests.fixtures_kafka"]``.

* ``kafka_broker`` (session): one started :class:`~kafka_klaviyo_dev.kafka.LocalKafka`, shared by
  every test; its work dir (config, ``broker.log``, data) lives under pytest's basetemp so a
  failed run can be inspected.
* ``topic_name`` (function): a topic name no other test uses, so tests sharing the broker
  never see each other's messages.

Missing Java or Maven fails the tests with one line saying how to install them. Integration
tests are never skipped: a green run must mean the real broker was exercised.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator

import pytest

from kafka_klaviyo_dev.errors import DevstackError
from kafka_klaviyo_dev.kafka import LocalKafka, require_tools


def _fail_without_tools() -> None:
    try:
        require_tools()
    except DevstackError as exc:
        problem = str(exc)
    else:
        return
    # Failing outside the except block keeps the report to one line, without the chain.
    where = "on CI (CI=true)" if os.environ.get("CI", "").lower() == "true" else "locally"
    pytest.fail(
        f"the Kafka integration tests cannot run {where}: {problem}; they are never skipped",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A started single-node KRaft broker on 127.0.0.1, stopped at the end of the session."""
    _fail_without_tools()
    broker = LocalKafka(work_dir=tmp_path_factory.mktemp("kafka"))
    problem = None
    try:
        broker.start()
    except DevstackError as exc:
        broker.stop()
        problem = str(exc)
    if problem is not None:
        pytest.fail(f"the local Kafka broker did not start: {problem}", pytrace=False)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def topic_name(request: pytest.FixtureRequest) -> str:
    """A unique, valid topic name derived from the test's name (readable in broker logs)."""
    # Kafka allows [a-zA-Z0-9._-]; it warns when '.' and '_' are mixed, so use '-' only.
    stem = re.sub(r"[^a-zA-Z0-9-]+", "-", request.node.name).strip("-")[:80] or "test"
    return f"{stem}-{uuid.uuid4().hex[:10]}"
