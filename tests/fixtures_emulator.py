"""pytest plugin: the Klaviyo emulator, a real HTTP server, for any test that talks to Klaviyo.

Registered with ``pytest_plugins = ["tests.fixtures_emulator"]`` (or
``-p tests.fixtures_emulator``).

* ``klaviyo_spec_path`` (session): Klaviyo's OpenAPI spec, from ``KLAVIYO_OPENAPI_SPEC`` or
  ``<repo>/../shared/klaviyo/stable.json``. Missing: the test fails on CI (``CI=true``) and is
  skipped elsewhere.
* ``emulator`` (function): one emulator per session with schema validation on and rate limits
  off, reset (data, counters, faults, windows) before each test so tests stay independent and
  fast. Yields a :class:`RunningEmulator` (URL, API keys per account, control client).
* ``emulator_factory`` (function): builds extra emulators with other settings (rate limits on,
  no spec...), each stopped when the test ends; ``clock=ManualClock()`` gives one whose time
  (Retry-After debts, fault expiry, rate-limit windows) moves only when the test steps it.

Two accounts exist by default, ``acme`` and ``beta``, each with its own key.

After each test, every emulator it used must have refused no body for breaking a Klaviyo rule
(``EmulatorClient.rule_violations()``: RULES.md ids, schema, JSON): a consumer that sends bad
bodies fails its tests even when its dead-letter handling hides the 400s. A test that sends bad
bodies on purpose opts out with ``@pytest.mark.emulator_violations_expected``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from kafka_klaviyo_dev.emulator import (
    EmulatorClient,
    EmulatorConfig,
    EmulatorServer,
    RateLimitSettings,
)

REPO = Path(__file__).resolve().parents[1]
VIOLATIONS_EXPECTED = "emulator_violations_expected"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{VIOLATIONS_EXPECTED}: the test sends bodies that break Klaviyo's rules on purpose; "
        "the emulator fixtures do not assert that none were refused",
    )


def _assert_no_violations(request: pytest.FixtureRequest, running: RunningEmulator) -> None:
    """Fail the test if ``running`` refused a body for a rule, unless the test expects it."""
    if request.node.get_closest_marker(VIOLATIONS_EXPECTED) is not None:
        return
    violations = running.client.rule_violations()
    assert not violations, (
        f"the emulator refused bodies that break Klaviyo's rules (endpoint -> rule -> count): "
        f"{violations}; mark the test @pytest.mark.{VIOLATIONS_EXPECTED} if it sends them on "
        "purpose"
    )


#: key -> account. Fake keys: nothing secret, and never valid against the real Klaviyo.
DEFAULT_API_KEYS: Mapping[str, str] = {
    "pk_emulator_test_acme": "acme",
    "pk_emulator_test_beta": "beta",
}


@dataclass(frozen=True)
class RunningEmulator:
    """A started emulator: where it is, which keys it accepts, and its control client."""

    server: EmulatorServer
    client: EmulatorClient
    base_url: str
    api_keys: Mapping[str, str]

    @property
    def api_key(self) -> str:
        """The key of the first account."""
        return next(iter(self.api_keys))

    @property
    def account(self) -> str:
        """The first account's name."""
        return self.api_keys[self.api_key]

    @property
    def revision(self) -> str:
        """The revision the emulator serves."""
        return self.server.config.revision

    def key_for(self, account: str) -> str:
        """The API key of ``account``."""
        for key, name in self.api_keys.items():
            if name == account:
                return key
        raise KeyError(account)

    def headers(self, account: str | None = None) -> dict[str, str]:
        """Authorization, revision and content type for ``account`` (default: the first)."""
        key = self.key_for(account) if account is not None else self.api_key
        return {
            "Authorization": f"Klaviyo-API-Key {key}",
            "revision": self.revision,
            "Content-Type": "application/vnd.api+json",
            "Accept": "application/vnd.api+json",
        }


def _find_spec() -> Path | None:
    env = os.environ.get("KLAVIYO_OPENAPI_SPEC")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "klaviyo" / "stable.json")
    return next((p for p in candidates if p.is_file()), None)


@pytest.fixture(scope="session")
def klaviyo_spec_path() -> Path:
    """Klaviyo's OpenAPI spec (stable.json)."""
    path = _find_spec()
    if path is None:
        message = (
            "Klaviyo's OpenAPI spec not found: set KLAVIYO_OPENAPI_SPEC or provide "
            f"{REPO.parent / 'shared' / 'klaviyo' / 'stable.json'}"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


class ManualClock:
    """Monotonic seconds that move only when the test says so (``advance``): an emulator
    built with it answers by the test's time, not the machine's, so no test sleeps to let a
    fault expire or a Retry-After pass, and no rate-limit window ends mid-test."""

    def __init__(self, start: float = 600.0) -> None:
        # The start of a one-second and a one-minute rate-limit window: a test has the whole
        # of both before either ends.
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


def _start(config: EmulatorConfig, clock: Callable[[], float] | None = None) -> RunningEmulator:
    server = EmulatorServer(config) if clock is None else EmulatorServer(config, clock=clock)
    url = server.start()
    return RunningEmulator(server, EmulatorClient(url), url, dict(config.api_keys))


def _stop(running: RunningEmulator) -> None:
    running.client.close()
    running.server.stop()


@pytest.fixture(scope="session")
def _emulator_session(klaviyo_spec_path: Path) -> Iterator[RunningEmulator]:
    running = _start(
        EmulatorConfig(
            api_keys=DEFAULT_API_KEYS,
            spec_path=klaviyo_spec_path,
            validate=True,
            rate_limits=RateLimitSettings(enabled=False),
        )
    )
    try:
        yield running
    finally:
        _stop(running)


@pytest.fixture
def emulator(
    _emulator_session: RunningEmulator, request: pytest.FixtureRequest
) -> Iterator[RunningEmulator]:
    """The session's emulator (validation on, rate limits off), reset for this test."""
    _emulator_session.client.reset()
    yield _emulator_session
    _assert_no_violations(request, _emulator_session)


@pytest.fixture
def emulator_factory(
    klaviyo_spec_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., RunningEmulator]]:
    """``emulator_factory(**config_fields)``: a new emulator, stopped after the test.

    Defaults: the two test accounts, the spec, validation on, rate limits ON (Klaviyo's
    numbers). Pass ``spec_path=None`` to run without the spec, ``clock=ManualClock()`` for an
    emulator on the test's time.
    """
    started: list[RunningEmulator] = []
    base = EmulatorConfig(api_keys=DEFAULT_API_KEYS, spec_path=klaviyo_spec_path)

    def make(clock: Callable[[], float] | None = None, **fields: Any) -> RunningEmulator:
        running = _start(replace(base, **fields), clock)
        started.append(running)
        return running

    try:
        yield make
        for running in started:
            _assert_no_violations(request, running)
    finally:
        for running in started:
            _stop(running)
