"""The component tier: the real service in one process, fakes only at its edges.

* ``klaviyo``: the Klaviyo emulator's app (validation against the OpenAPI spec on, rate limits
  off) behind ``httpx.MockTransport``; the service's HTTP client and the test's
  :class:`~kafka_klaviyo_dev.emulator.EmulatorClient` both talk to it through that transport.
* ``stack``: a :class:`Stack` — a :class:`~tests.fakes.FakeBroker` with a topic and a
  dead-letter topic, and a builder of the real service (:func:`consumer.compose.build_service`)
  over fake Kafka clients and the emulator's transport; :meth:`Stack.start` runs the real
  :class:`~consumer.runner.Runner` loop on a thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from consumer.compose import Service, build_service
from consumer.runner import Runner
from consumer.settings import Settings
from kafka_klaviyo_dev.emulator import EmulatorClient, EmulatorConfig, EmulatorServer
from kafka_klaviyo_dev.emulator.app import Request
from kafka_klaviyo_dev.emulator.config import RateLimitSettings
from kafka_klaviyo_dev.emulator.control import PREFIX
from tests.fakes import FakeBroker, FakeConsumer, FakeProducer
from tests.support import wait_for

API_KEYS = {"pk_component_acme": "acme", "pk_component_beta": "beta"}
BASE_URL = "http://klaviyo.test"
TOPIC = "shop.events"
DLQ = "shop.events.dlq"
GROUP = "component"


@dataclass
class Klaviyo:
    """The in-process emulator, its transport and its control client."""

    server: EmulatorServer
    transport: httpx.MockTransport
    client: EmulatorClient
    # Requests the transport answered, in order: (path, status).
    log: list[tuple[str, int]] = field(default_factory=list)


def emulator_transport(server: EmulatorServer, log: list[tuple[str, int]]) -> httpx.MockTransport:
    """``httpx.MockTransport`` answering as the emulator's HTTP server would."""

    def handle(request: httpx.Request) -> httpx.Response:
        url = urlsplit(str(request.url))
        emulated = Request(
            method=request.method,
            path=url.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=request.read(),
            query=parse_qs(url.query),
            arrived=server.app.clock(),
        )
        if url.path == PREFIX or url.path.startswith(PREFIX + "/"):
            response = server.control.handle(emulated)
        else:
            response = server.app.handle_api(emulated)
            log.append((url.path, 0 if response.drop else response.status))
        if response.drop:
            raise httpx.ReadTimeout("the emulator dropped the request", request=request)
        return httpx.Response(response.status, headers=response.headers, content=response.body)

    return httpx.MockTransport(handle)


@pytest.fixture(scope="session")
def _emulator_server(klaviyo_spec_path: Path) -> EmulatorServer:
    return EmulatorServer(
        EmulatorConfig(
            api_keys=API_KEYS,
            spec_path=klaviyo_spec_path,
            validate=True,
            rate_limits=RateLimitSettings(enabled=False),
        )
    )


@pytest.fixture
def klaviyo(_emulator_server: EmulatorServer) -> Iterator[Klaviyo]:
    _emulator_server.app.reset()
    log: list[tuple[str, int]] = []
    transport = emulator_transport(_emulator_server, log)
    client = EmulatorClient(BASE_URL, transport=transport)
    try:
        yield Klaviyo(_emulator_server, transport, client, log)
    finally:
        client.close()
        _emulator_server.app.faults.clear()


def settings(**sections: Mapping[str, Any]) -> Settings:
    """Settings for a component test: fast linger, backoff and commits, the emulator's key."""
    base: dict[str, dict[str, Any]] = {
        "kafka": {
            "topics": (TOPIC,),
            "group_id": GROUP,
            "dead_letter_topic": DLQ,
            "commit_interval_ms": 10,
        },
        "klaviyo": {"api_key": "pk_component_acme", "base_url": BASE_URL},
        "batch": {"linger_ms": 5},
        "delivery": {"backoff_initial_s": 0.01, "backoff_max_s": 0.05, "shutdown_grace_s": 5},
        "dead_letter": {"flush_min_s": 0.2},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return Settings(**base)  # type: ignore[arg-type]


class Stack:
    """A fake broker, the emulator, and the real service built over them."""

    def __init__(self, klaviyo: Klaviyo, partitions: int = 3) -> None:
        self.klaviyo = klaviyo
        self.broker = FakeBroker()
        self.broker.create(TOPIC, partitions)
        self.broker.create(DLQ, 1)
        self.consumers: list[FakeConsumer] = []
        self.producers: list[FakeProducer] = []
        self.producer_setup: Callable[[FakeProducer], None] = lambda producer: None
        self._threads: list[tuple[Runner, threading.Thread, list[int]]] = []

    @property
    def consumer(self) -> FakeConsumer:
        return self.consumers[-1]

    @property
    def producer(self) -> FakeProducer:
        return self.producers[-1]

    def service(self, config: Settings | None = None, **kwargs: Any) -> Service:
        def consumer(conf: dict[str, Any]) -> FakeConsumer:
            made = FakeConsumer(conf, self.broker)
            self.consumers.append(made)
            return made

        def producer(conf: dict[str, Any]) -> FakeProducer:
            made = FakeProducer(conf, self.broker)
            self.producer_setup(made)
            self.producers.append(made)
            return made

        return build_service(
            config or settings(),
            consumer_factory=consumer,
            producer_factory=producer,
            transport=self.klaviyo.transport,
            **kwargs,
        )

    def produce(self, value: bytes | None, *, partition: int = 0, key: bytes | None = None) -> int:
        """Append one record to the topic; its offset."""
        return self.broker.append(TOPIC, partition, value, key).offset()

    def start(self, config: Settings | None = None) -> Runner:
        """The real runner on a thread (``stop`` or its own fatal stop ends it)."""
        runner = Runner(self.service(config))
        code: list[int] = []
        thread = threading.Thread(target=lambda: code.append(runner.run()), daemon=True)
        thread.start()
        self._threads.append((runner, thread, code))
        return runner

    def stop(self, runner: Runner, timeout_s: float = 60.0) -> int:
        runner.request_stop()
        return self.wait(runner, timeout_s)

    def wait(self, runner: Runner, timeout_s: float = 60.0) -> int:
        for candidate, thread, code in self._threads:
            if candidate is runner:
                thread.join(timeout_s)
                assert not thread.is_alive(), f"the runner did not stop within {timeout_s}s"
                return code[0]
        raise AssertionError("not a runner of this stack")

    def committed(self, partition: int = 0) -> int | None:
        return self.broker.committed_offset(GROUP, TOPIC, partition)

    def dead_letters(self) -> list[Any]:
        return self.broker.records(DLQ)

    def close(self) -> None:
        for runner, thread, _ in self._threads:
            if thread.is_alive():
                runner.request_stop()
                thread.join(30)


@pytest.fixture
def stack(klaviyo: Klaviyo) -> Iterator[Stack]:
    made = Stack(klaviyo)
    try:
        yield made
    finally:
        made.close()


def wait_until(predicate: Callable[[], Any], timeout_s: float = 30.0, what: str = "") -> Any:
    """Poll ``predicate`` until truthy; fail after ``timeout_s`` (generous: a loaded box)."""
    return wait_for(predicate, timeout_s, what, interval_s=0.01)
