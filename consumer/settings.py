"""Typed, frozen configuration: one YAML file plus environment overrides.

Precedence, highest first:

1. the conventional variables ``KAFKA_BOOTSTRAP_SERVERS``, ``SCHEMA_REGISTRY_URL``,
   ``KLAVIYO_API_KEY``, ``KLAVIYO_BASE_URL``, ``KLAVIYO_REVISION``;
2. ``KAFKA_KLAVIYO_<SECTION>__<FIELD>`` variables (e.g. ``KAFKA_KLAVIYO_KAFKA__GROUP_ID``);
3. the YAML file named by ``--config`` or ``KAFKA_KLAVIYO_CONFIG``;
4. the defaults below.

Unknown keys are errors. The API key comes only from the environment or a mounted file,
is held as a :class:`pydantic.SecretStr` and is never printed. Any problem becomes a
:class:`~consumer.errors.ConfigError` whose text is one line naming the setting.

Deprecated names are still read: the file's ``registry`` section (now ``rules``, with
``rules_dirs`` now ``dirs``) and the ``KAFKA_KLAVIYO_REGISTRY__*`` variables (now
``KAFKA_KLAVIYO_RULES__*``). Each one in use adds a line to :attr:`Settings.deprecations`;
a setting given under both its old and its new name is an error.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from consumer.errors import ConfigError
from consumer.messages import DEFAULT_ACCOUNT

DEFAULT_REVISION = "2026-07-15"
CONFIG_FILE_VARIABLE = "KAFKA_KLAVIYO_CONFIG"
ENV_PREFIX = "KAFKA_KLAVIYO_"

# Conventional variable -> (section, field). These are what operators and tests set first.
CONVENTIONAL_VARIABLES: dict[str, tuple[str, str]] = {
    "KAFKA_BOOTSTRAP_SERVERS": ("kafka", "bootstrap_servers"),
    "SCHEMA_REGISTRY_URL": ("schema_registry", "url"),
    "KLAVIYO_API_KEY": ("klaviyo", "api_key"),
    "KLAVIYO_BASE_URL": ("klaviyo", "base_url"),
    "KLAVIYO_REVISION": ("klaviyo", "revision"),
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(_Section):
    """Where to read from and how to behave as a consumer-group member."""

    bootstrap_servers: str = Field("localhost:9092", min_length=1)
    group_id: str = Field("kafka-klaviyo", min_length=1)
    # NoDecode + the validator below: KAFKA_KLAVIYO_KAFKA__TOPICS="a,b" (or a YAML list).
    topics: Annotated[tuple[str, ...], NoDecode] = Field(("shop.events",), min_length=1)
    dead_letter_topic: str = Field("shop.events.dlq", min_length=1)
    # librdkafka properties passed through under their own names (security.protocol, sasl.*, ...).
    properties: dict[str, str | int | float | bool] = Field(default_factory=dict)
    poll_batch_size: int = Field(500, ge=1, le=100_000)
    commit_interval_ms: int = Field(1000, ge=10)

    @field_validator("topics", mode="before")
    @classmethod
    def _split_topics(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(topic.strip() for topic in value.split(",") if topic.strip())
        return value


class SchemaRegistrySettings(_Section):
    """Confluent Schema Registry; without a URL only single-object encoding is decoded."""

    url: str | None = None
    properties: dict[str, str] = Field(default_factory=dict)


class KlaviyoSettings(_Section):
    """How to reach Klaviyo (or the local emulator)."""

    api_key: SecretStr | None = None
    api_key_file: Path | None = None
    base_url: str = "https://a.klaviyo.com"
    revision: str = Field(DEFAULT_REVISION, pattern=r"^\d{4}-\d{2}-\d{2}(\.pre|\.beta)?$")
    timeout_s: float = Field(30.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    def resolved_api_key(self) -> SecretStr:
        """The API key from the environment or the mounted file; ConfigError if neither."""
        if self.api_key is not None and self.api_key.get_secret_value():
            return self.api_key
        if self.api_key_file is not None:
            return _read_key_file(self.api_key_file, "klaviyo.api_key_file")
        raise ConfigError("klaviyo.api_key: not set (set KLAVIYO_API_KEY or klaviyo.api_key_file)")


class AccountSettings(_Section):
    """One more Klaviyo account (a store or brand) with its own key, limits and batches."""

    api_key_env: str | None = Field(None, min_length=1)
    api_key_file: Path | None = None
    base_url: str | None = None

    def resolved_api_key(self, name: str) -> SecretStr:
        """The account's key from its environment variable or mounted file."""
        if self.api_key_env:
            value = os.environ.get(self.api_key_env, "").strip()
            if value:
                return SecretStr(value)
            raise ConfigError(f"accounts.{name}.api_key_env: {self.api_key_env} is not set")
        if self.api_key_file is not None:
            return _read_key_file(self.api_key_file, f"accounts.{name}.api_key_file")
        raise ConfigError(f"accounts.{name}: set api_key_env or api_key_file")


class RoutingSettings(_Section):
    """Which account a message goes to: the value of one top-level record field."""

    field: str = Field("store_id", min_length=1)
    accounts: dict[str, str] = Field(default_factory=dict)
    # Messages whose field value is not mapped go here; None dead-letters them.
    default_account: str | None = None


class DeadLetterSettings(_Section):
    """When too much goes to the dead-letter topic, stop instead of draining the stream."""

    max_consecutive: int | None = Field(1000, ge=1)
    max_ratio: float | None = Field(0.5, gt=0, le=1)
    ratio_window: int = Field(1000, ge=10)
    # Time the dead-letter producer always gets to confirm its writes when a revoke or a
    # shutdown flushes it, even once the deliveries used up the grace period.
    flush_min_s: float = Field(5.0, gt=0, le=120)
    # A dead-letter write the broker has not confirmed in this time failed (librdkafka's
    # message.timeout.ms): long enough to ride out a broker restart.
    write_timeout_s: float = Field(120.0, ge=1, le=3600)


class ConsentSettings(_Section):
    """How a run that sends consent live (``run``, ``dlq redrive``) sends old consent."""

    # A subscription whose consent (consented_at) is older than this many seconds when it is
    # batched goes as a historical import with its consented_at: no double opt-in, no "Added
    # to list" flows (RULES.md S5). Newer consent, or consent without an offset-bearing time,
    # goes live. null: all consent live. env: KAFKA_KLAVIYO_RULES__CONSENT__HISTORICAL_AFTER_S
    historical_after_s: float | None = Field(86400.0, gt=0)

    @field_validator("historical_after_s", mode="before")
    @classmethod
    def _none_from_text(cls, value: object) -> object:
        # The environment has no null: "null" or "none" turns it off there too.
        if isinstance(value, str) and value.strip().lower() in ("null", "none"):
            return None
        return value


class RulesSettings(_Section):
    """The translation rules: operator rule files layered over the packaged defaults."""

    # Directories of *.yaml rule files (e.g. a ConfigMap mount), layered in order over the
    # defaults; env: KAFKA_KLAVIYO_RULES__DIRS=/etc/rules,/etc/more-rules
    dirs: Annotated[tuple[Path, ...], NoDecode] = ()
    include_defaults: bool = True
    # Default metric name -> the name sent to Klaviyo, e.g. {"Placed Order": "Order Placed"}.
    metric_names: dict[str, str] = Field(default_factory=dict)
    # ISO 3166 alpha-2 region for phone numbers written without a country code.
    default_phone_region: str = Field("US", pattern=r"^[A-Z]{2}$")
    consent: ConsentSettings = Field(default_factory=ConsentSettings)  # type: ignore[arg-type]

    @field_validator("dirs", mode="before")
    @classmethod
    def _split_dirs(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(Path(part.strip()) for part in value.split(",") if part.strip())
        return value


# The rules section was called ``registry`` before: its old field names -> the new ones.
DEPRECATED_RULES_SECTION = "registry"
DEPRECATED_RULES_FIELDS: dict[str, str] = {
    "rules_dirs": "dirs",
    "include_defaults": "include_defaults",
    "metric_names": "metric_names",
    "default_phone_region": "default_phone_region",
}


class BatchSettings(_Section):
    """How long a partly filled batch may wait for more items before it is sent."""

    linger_ms: int = Field(250, ge=0, le=60_000)


class DeliverySettings(_Section):
    """Concurrency, memory bound and shutdown of delivery to Klaviyo."""

    # Requests in flight at once per (account, endpoint, list).
    max_concurrent_requests: int = Field(4, ge=1, le=64)
    # Delivery threads (and HTTP connections) per Klaviyo account: an account in an outage
    # or a 429 storm holds at most these, never another account's.
    threads_per_account: int = Field(32, ge=1, le=256)
    # Share of the account's Klaviyo rate limits this deployment may use (several
    # deployments on one account split it; replicas of one deployment adapt through
    # Klaviyo's RateLimit-* headers).
    rate_limit_share: float = Field(1.0, gt=0, le=1)
    # Off only against an emulator without limits (benchmarks): Retry-After still applies.
    client_rate_limit: bool = True
    # In-flight messages (polled, not yet committed) above which partitions are paused.
    max_in_flight_messages: int = Field(10_000, ge=1)
    shutdown_grace_s: float = Field(30.0, ge=0)
    backoff_initial_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(30.0, gt=0)
    # Klaviyo's Retry-After is obeyed within these bounds (a 0 would spin, a huge value would
    # stop the endpoint for good); a clamped value is logged.
    retry_after_min_s: float = Field(0.5, gt=0)
    retry_after_max_s: float = Field(300.0, gt=0)

    @model_validator(mode="after")
    def _bounds_in_order(self) -> DeliverySettings:
        if self.retry_after_min_s > self.retry_after_max_s:
            raise ValueError("delivery.retry_after_min_s: must not exceed retry_after_max_s")
        if self.backoff_initial_s > self.backoff_max_s:
            raise ValueError("delivery.backoff_initial_s: must not exceed backoff_max_s")
        return self


class JobsSettings(_Section):
    """How the outcomes of Klaviyo's asynchronous jobs (profile import, catalog items) are
    followed (consumer.deliver.jobs)."""

    # Polls of one job back off from the first to the last figure.
    poll_initial_s: float = Field(1.0, gt=0, le=600)
    poll_max_s: float = Field(30.0, gt=0, le=3600)
    # A job without an outcome after this long has its items dead-lettered.
    timeout_s: float = Field(3600.0, gt=0)
    # Items waiting for their job's outcome above which no new job batch starts.
    max_pending_items: int = Field(100_000, ge=1)
    # Times the items of a job Klaviyo cancelled are sent again before they are dead-lettered.
    resubmits: int = Field(2, ge=0, le=100)

    @model_validator(mode="after")
    def _bounds_in_order(self) -> JobsSettings:
        if self.poll_initial_s > self.poll_max_s:
            raise ValueError("jobs.poll_initial_s: must not exceed poll_max_s")
        return self


class CatalogSettings(_Section):
    """How the shop's catalog reaches Klaviyo: the Catalog API (``run`` sends the catalog
    rules' items) or a custom catalog feed Klaviyo fetches (``catalog-feed``). Klaviyo takes
    one or the other for a custom catalog, never both (RULES.md D21)."""

    source: Literal["api", "feed"] = "api"


class ObservabilitySettings(_Section):
    """Logs and the metrics/health HTTP endpoint."""

    metrics_port: int | None = Field(None, ge=0, le=65535)
    log_level: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")


class Settings(BaseSettings):
    """All settings of one kafka-klaviyo process."""

    model_config = SettingsConfigDict(
        env_prefix="KAFKA_KLAVIYO_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)  # type: ignore[arg-type]
    schema_registry: SchemaRegistrySettings = Field(default_factory=SchemaRegistrySettings)
    klaviyo: KlaviyoSettings = Field(default_factory=KlaviyoSettings)  # type: ignore[arg-type]
    batch: BatchSettings = Field(default_factory=BatchSettings)  # type: ignore[arg-type]
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)  # type: ignore[arg-type]
    jobs: JobsSettings = Field(default_factory=JobsSettings)  # type: ignore[arg-type]
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)  # type: ignore[arg-type]
    dead_letter: DeadLetterSettings = Field(default_factory=DeadLetterSettings)  # type: ignore[arg-type]
    rules: RulesSettings = Field(default_factory=RulesSettings)  # type: ignore[arg-type]
    catalog: CatalogSettings = Field(default_factory=CatalogSettings)
    # Extra Klaviyo accounts by name; without them everything goes to one account
    # ("default", keyed by KLAVIYO_API_KEY).
    accounts: dict[str, AccountSettings] = Field(default_factory=dict)
    routing: RoutingSettings | None = None
    # Filled by load_settings(): one note per deprecated setting name in use.
    _deprecations: tuple[str, ...] = PrivateAttr(default=())

    @property
    def deprecations(self) -> tuple[str, ...]:
        """One line per deprecated setting in use, naming it and the setting to use instead."""
        return self._deprecations

    @model_validator(mode="after")
    def _routing_names_known_accounts(self) -> Settings:
        known = set(self.accounts) | {DEFAULT_ACCOUNT}
        if self.routing is not None:
            targets = dict(self.routing.accounts)
            if self.routing.default_account is not None:
                targets["<default_account>"] = self.routing.default_account
            for value, account in targets.items():
                if account not in known:
                    raise ValueError(
                        f"routing.accounts.{value}: unknown account {account!r} "
                        f"(known: {', '.join(sorted(known))})"
                    )
        elif self.accounts:
            raise ValueError("routing: required when accounts are configured")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        layers = _LAYERS.get() or _Layers({}, {})
        if layers.env_renames:
            env_settings = _RenamedEnvSource(settings_cls, layers.env_renames)
        return (
            init_settings,
            InitSettingsSource(settings_cls, init_kwargs=layers.conventional),
            env_settings,
            InitSettingsSource(settings_cls, init_kwargs=layers.config_file),
        )


class _RenamedEnvSource(EnvSettingsSource):
    """The environment, with deprecated variables read under their new names."""

    def __init__(self, settings_cls: type[BaseSettings], renames: Mapping[str, str]) -> None:
        self._renames = dict(renames)  # old -> new, lower case like the parsed variables
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        variables = dict(super()._load_env_vars())
        for old, new in self._renames.items():
            if old in variables:
                variables[new] = variables.pop(old)
        return variables


@dataclass(frozen=True)
class _Layers:
    conventional: dict[str, Any]
    config_file: dict[str, Any]
    env_renames: dict[str, str] = field(default_factory=dict)


@dataclass
class _Deprecated:
    """Deprecated setting names found while loading: notes, renames, names for errors."""

    notes: list[str] = field(default_factory=list)
    # Deprecated variable -> its new name, both lower case.
    env_renames: dict[str, str] = field(default_factory=dict)
    # New setting -> its old name, so an error in a value names what the operator wrote.
    old_names: dict[str, str] = field(default_factory=dict)


# Settings sources are chosen by a classmethod without arguments; the layers of one
# load_settings() call reach it through this context variable.
_LAYERS: ContextVar[_Layers | None] = ContextVar("settings_layers", default=None)


def load_settings(config_file: Path | None = None) -> Settings:
    """Read the YAML file (if any) and the environment into frozen Settings.

    Raises ConfigError with one line naming the offending setting.
    """
    if config_file is None and os.environ.get(CONFIG_FILE_VARIABLE):
        config_file = Path(os.environ[CONFIG_FILE_VARIABLE])
    data: dict[str, Any] = _read_yaml(config_file) if config_file else {}
    klaviyo_section = data.get("klaviyo")
    if isinstance(klaviyo_section, dict) and "api_key" in klaviyo_section:
        raise ConfigError(
            "klaviyo.api_key: secrets are not read from the config file; "
            "use KLAVIYO_API_KEY or klaviyo.api_key_file"
        )
    deprecated = _map_deprecated_rules(data)
    conventional: dict[str, Any] = {}
    for variable, (section, name) in CONVENTIONAL_VARIABLES.items():
        value = os.environ.get(variable)
        if value:
            conventional.setdefault(section, {})[name] = value
    token = _LAYERS.set(_Layers(conventional, data, deprecated.env_renames))
    try:
        settings = Settings()
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, deprecated.old_names)) from exc
    except SettingsError as exc:
        raise ConfigError(f"environment: {exc}") from exc
    finally:
        _LAYERS.reset(token)
    settings._deprecations = tuple(deprecated.notes)
    return settings


def _map_deprecated_rules(data: dict[str, Any]) -> _Deprecated:
    """Read the old ``registry`` section and ``KAFKA_KLAVIYO_REGISTRY__*`` as ``rules``.

    The file's section is merged into ``data["rules"]`` here; the variables are renamed when
    the environment is read. A setting given under its old and its new name is a ConfigError.
    """
    out = _Deprecated()
    old_section_name = DEPRECATED_RULES_SECTION
    old_given: dict[str, list[str]] = {}  # new field -> where it is set under its old name
    new_given: dict[str, list[str]] = {}  # new field -> where it is set under its new name
    new_section = data.get("rules")
    if isinstance(new_section, dict):
        for key in new_section:
            new_given.setdefault(str(key), []).append(f"rules.{key}")
    if old_section_name in data:
        old_section = data.pop(old_section_name)
        if not isinstance(old_section, dict):
            raise ConfigError(f"{old_section_name}: must be a mapping (deprecated: use rules)")
        mapped: dict[str, Any] = {}
        for key, value in old_section.items():
            new = DEPRECATED_RULES_FIELDS.get(str(key))
            if new is None:
                raise ConfigError(f"{old_section_name}.{key}: unknown setting")
            mapped[new] = value
            old_given.setdefault(new, []).append(f"{old_section_name}.{key}")
            out.notes.append(
                f"{old_section_name}.{key} in the config file is deprecated: use rules.{new}"
            )
        if not old_section:
            out.notes.append(
                f"the {old_section_name} section of the config file is deprecated: use rules"
            )
        if new_section is None and mapped:
            data["rules"] = mapped
        elif isinstance(new_section, dict):
            data["rules"] = {**mapped, **new_section}
    new_prefix = f"{ENV_PREFIX}RULES".lower()
    old_prefix = f"{ENV_PREFIX}{old_section_name}".lower()
    for variable in sorted(os.environ):
        lower = variable.lower()
        if lower == new_prefix:  # the whole section as JSON
            try:
                document = json.loads(os.environ[variable])
            except ValueError:
                document = None  # pydantic-settings reports it
            if isinstance(document, dict):
                for key in document:
                    new_given.setdefault(str(key), []).append(variable)
        elif lower.startswith(f"{new_prefix}__"):
            key = lower[len(new_prefix) + 2 :].partition("__")[0]
            new_given.setdefault(key, []).append(variable)
        elif lower == old_prefix:
            raise ConfigError(
                f"{variable}: no longer read (deprecated); set {ENV_PREFIX}RULES__<SETTING>"
                " variables instead"
            )
        elif lower.startswith(f"{old_prefix}__"):
            old_key, separator, rest = variable[len(old_prefix) + 2 :].partition("__")
            new = DEPRECATED_RULES_FIELDS.get(old_key.lower())
            if new is None:
                raise ConfigError(f"{old_section_name}.{old_key.lower()}: unknown setting")
            replacement = f"{ENV_PREFIX}RULES__{new.upper()}{separator}{rest}"
            out.env_renames[lower] = replacement.lower()
            old_given.setdefault(new, []).append(variable)
            out.notes.append(f"{variable} is deprecated: use {replacement}")
    old_keys = {new: old for old, new in DEPRECATED_RULES_FIELDS.items()}
    for new, olds in old_given.items():
        out.old_names[f"rules.{new}"] = f"{old_section_name}.{old_keys[new]}"
        if new in new_given:
            raise ConfigError(
                f"rules.{new}: set both as {new_given[new][0]} and as the deprecated {olds[0]};"
                f" keep only {new_given[new][0]}"
            )
    return out


def _read_key_file(path: Path, setting: str) -> SecretStr:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {path} ({exc.strerror})") from exc
    if not text:
        raise ConfigError(f"{setting}: {path} is empty")
    return SecretStr(text)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from exc
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}: not valid YAML ({_yaml_position(exc)})") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping")
    return loaded


def _yaml_position(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or "syntax error"
    if mark is None:
        return str(problem)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def _one_line(exc: ValidationError, old_names: Mapping[str, str] | None = None) -> str:
    errors = exc.errors()
    first = errors[0]
    location = ".".join(str(part) for part in first["loc"])
    # A value given under a deprecated name: name it as written.
    for new, old in (old_names or {}).items():
        if location == new or location.startswith(f"{new}."):
            location = old + location[len(new) :]
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown setting"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    # Cross-field checks name their setting inside the message.
    return f"{location}: {message}{more}" if location else f"{message}{more}"
