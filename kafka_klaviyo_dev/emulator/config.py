"""The emulator's configuration: one frozen value, checked once when it is built.

API keys map to account names. Each account is a separate Klaviyo account in the emulator:
its own store of accepted data, its own dedup index and its own rate-limit windows, so
multi-account tests can assert which account an event reached. Keys are secrets: ``repr`` of
the config shows only account names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from consumer.errors import ConfigError

#: The revision whose OpenAPI spec the emulator validates against by default.
DEFAULT_REVISION = "2026-07-15"

#: Klaviyo's documented revision format (the ``revision`` header parameter's description).
REVISION_FORMAT = re.compile(r"^\d{4}-\d{2}-\d{2}(\.[A-Za-z0-9_-]+)?$")

#: Bodies larger than this are refused before they are read (HTTP layer protection only;
#: each endpoint's own Klaviyo limit, 5 MB for events, is enforced separately and is smaller).
DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class WindowLimits:
    """A rate limit as Klaviyo documents it: requests per 1-second and per 1-minute window."""

    burst: int
    steady: int

    def __post_init__(self) -> None:
        if self.burst < 1 or self.steady < 1:
            raise ConfigError(
                f"rate limits must be at least 1 request (got burst={self.burst}, "
                f"steady={self.steady})"
            )


@dataclass(frozen=True, slots=True)
class RateLimitSettings:
    """Rate limiting on or off, and per-endpoint overrides of Klaviyo's numbers.

    ``overrides`` keys are endpoint names (``events``, ``profile_import``...) or paths.
    """

    enabled: bool = True
    overrides: Mapping[str, WindowLimits] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "overrides", MappingProxyType(dict(self.overrides)))


@dataclass(frozen=True, slots=True)
class JobSettings:
    """How the emulator runs Klaviyo's asynchronous jobs (profile import, catalog jobs).

    ``duration_seconds`` is the time from the POST to the job's completion; 0 completes it
    during the POST, so its items are stored at once (the emulator's behaviour before it had
    jobs). For the first ``queued_seconds`` of that time the job is ``queued``, then
    ``processing``. ``durations`` overrides the duration per endpoint name
    (``catalog_create``...). ``strict_catalog`` applies Klaviyo's catalog rules inside the
    jobs: a create of an existing item or category fails that item, an update or delete of a
    missing one fails it, and so does an item naming a category that does not exist. Off, the
    last accepted operation wins (what the consumer's upsert needs without categories).
    """

    duration_seconds: float = 0.0
    queued_seconds: float = 0.0
    durations: Mapping[str, float] = field(default_factory=dict)
    strict_catalog: bool = True

    def __post_init__(self) -> None:
        if self.duration_seconds < 0 or any(v < 0 for v in self.durations.values()):
            raise ConfigError("emulator job duration must not be negative")
        if self.queued_seconds < 0:
            raise ConfigError("emulator job queued_seconds must not be negative")
        object.__setattr__(self, "durations", MappingProxyType(dict(self.durations)))

    def duration_for(self, endpoint: str) -> float:
        """Seconds from the POST to completion for a job of ``endpoint``."""
        return self.durations.get(endpoint, self.duration_seconds)


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    """Everything the emulator needs to start.

    Attributes:
        host: interface to listen on; loopback by default.
        port: TCP port; 0 picks a free one (read it back from ``EmulatorServer.base_url``).
        api_keys: private API key -> account name. At least one is required.
        revision: the API revision served (and the one the spec describes).
        accepted_revisions: further revisions the emulator accepts in the ``revision`` header.
        spec_path: Klaviyo's OpenAPI spec (``stable.json``); None runs without schema checks.
        validate: check bodies against the spec when ``spec_path`` is given.
        rate_limits: Klaviyo's burst/steady limits per account and endpoint, or overrides.
        max_request_bytes: transport cap; larger bodies get 413 and the connection is closed.
        retry_after_grace_seconds: a request arriving this soon after a 429 was issued is
            taken to have been in flight already when the client got the 429 (concurrent
            workers, a busy 2-core machine), so it is not counted as ignoring Retry-After.
            A client that really ignores it retries again and is counted then, since a
            Retry-After is at least 1 second.
        drop_test_email_domains: behave like real Klaviyo and silently drop (202, counted as
            ``test_domain_dropped``) events of profiles whose email is at example.com/test.com.
            Off by default because test suites use exactly those addresses.
        request_log_size: how many request summaries ``/__emulator/requests`` keeps.
        jobs: how asynchronous jobs run (:class:`JobSettings`); the control API changes
            them at run time.
    """

    api_keys: Mapping[str, str]
    host: str = "127.0.0.1"
    port: int = 0
    revision: str = DEFAULT_REVISION
    accepted_revisions: tuple[str, ...] = ()
    spec_path: Path | None = None
    validate: bool = True
    rate_limits: RateLimitSettings = field(default_factory=RateLimitSettings)
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    retry_after_grace_seconds: float = 0.25
    drop_test_email_domains: bool = False
    request_log_size: int = 10_000
    jobs: JobSettings = field(default_factory=JobSettings)

    def __post_init__(self) -> None:
        keys = dict(self.api_keys)
        if not keys:
            raise ConfigError("emulator api_keys: at least one API key is required")
        for key, account in keys.items():
            if not key or any(c.isspace() for c in key):
                # Never echo the key itself: name the account it belongs to.
                raise ConfigError(
                    f"emulator api_keys: the key of account {account!r} is empty or has spaces"
                )
            if not account:
                raise ConfigError("emulator api_keys: every key needs a non-empty account name")
        object.__setattr__(self, "api_keys", MappingProxyType(keys))
        for revision in (self.revision, *self.accepted_revisions):
            if not REVISION_FORMAT.match(revision):
                raise ConfigError(f"emulator revision {revision!r} is not YYYY-MM-DD[.suffix]")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"emulator port {self.port} is out of range")
        if self.max_request_bytes < 1:
            raise ConfigError("emulator max_request_bytes must be positive")
        if self.spec_path is not None:
            object.__setattr__(self, "spec_path", Path(self.spec_path))

    @property
    def accounts(self) -> tuple[str, ...]:
        """Account names, without duplicates, in configuration order."""
        return tuple(dict.fromkeys(self.api_keys.values()))

    @property
    def revisions(self) -> frozenset[str]:
        """Every revision the ``revision`` header may carry."""
        return frozenset((self.revision, *self.accepted_revisions))

    @property
    def schema_validation(self) -> bool:
        """True when request bodies are checked against the OpenAPI spec."""
        return self.validate and self.spec_path is not None

    def __repr__(self) -> str:
        # The generated repr would print the API keys.
        return (
            f"EmulatorConfig(host={self.host!r}, port={self.port}, accounts={self.accounts!r}, "
            f"revision={self.revision!r}, spec_path={self.spec_path!r}, "
            f"validate={self.validate}, rate_limits={self.rate_limits!r})"
        )
