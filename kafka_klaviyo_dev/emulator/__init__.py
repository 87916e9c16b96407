"""A local Klaviyo: Klaviyo's bulk endpoints on a real HTTP server, for tests and the demo.

It validates bodies against Klaviyo's OpenAPI spec (when given), enforces Klaviyo's ingestion
limits, dedups events like Klaviyo, rate-limits per account with 429 + Retry-After, injects
faults on demand and shows what it accepted, per account, under ``/__emulator/``.

Modules, one job each::

    config      EmulatorConfig (frozen)            endpoints   the endpoint table
    server      HTTP/1.1 server, start/stop         app         the request pipeline
    control     /__emulator/ control + read-back    client      typed client of the control API
    validation  OpenAPI request-body schemas        limits      ingestion limits beyond the schema
    items       where the items are in a body       dedup       Klaviyo's event identity
    ratelimit   burst/steady fixed windows          faults      injected faults
    state       accepted data and counters          responses   Klaviyo error documents
    final_state the end state (consent, catalog, profiles)
    pointer     JSON pointers                       cli         ``... emulator`` command
"""

from kafka_klaviyo_dev.emulator.client import (
    AcceptedEvent,
    CatalogItemState,
    ConsentState,
    EmulatorClient,
    EmulatorStats,
    ProfileState,
)
from kafka_klaviyo_dev.emulator.config import EmulatorConfig, RateLimitSettings, WindowLimits
from kafka_klaviyo_dev.emulator.server import EmulatorServer

__all__ = [
    "AcceptedEvent",
    "CatalogItemState",
    "ConsentState",
    "EmulatorClient",
    "EmulatorConfig",
    "EmulatorServer",
    "EmulatorStats",
    "ProfileState",
    "RateLimitSettings",
    "WindowLimits",
]
