"""Klaviyo's bulk endpoints and the per-request limits that shape batching.

One table, read by the batcher, the HTTP client and the rate limiter, so a new endpoint is one
new row. Figures come from Klaviyo's OpenAPI spec (revision 2026-07-15) and its rate-limit docs
(docs/DESIGN.md, section 3).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class JobSpec:
    """How an endpoint's asynchronous job reports its outcome (``GET {path}/{job_id}``).

    The 202 only says Klaviyo took the request: which items failed is known when the job is
    complete. Profile imports list them at ``{job}/import-errors`` (paged, with the original
    payload); catalog jobs carry ``errors`` in the job document, with pointers into the
    request. The GETs have rate limits of their own.
    """

    burst_per_second: int
    steady_per_minute: int
    import_errors: bool = False


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """What Klaviyo allows on one bulk endpoint."""

    path: str
    max_items: int
    max_bytes: int
    burst_per_second: int
    steady_per_minute: int
    # The kind of Klaviyo state the endpoint sets ("profile", "consent", "catalog"): items of
    # one kind and key must reach Klaviyo in Kafka order. None: occurrences (events).
    state: str | None = None
    # Set for endpoints whose 202 starts a job whose outcome comes later.
    job: JobSpec | None = None


_CATALOG_JOB = JobSpec(75, 750)

# Klaviyo's "5 MB", read as the stricter decimal megabytes.
_MB = 5_000_000


class Endpoint(enum.Enum):
    """The Klaviyo bulk endpoints this service posts to."""

    EVENTS = EndpointSpec("/api/event-bulk-create-jobs", 1000, _MB, 10, 150)
    PROFILES = EndpointSpec(
        "/api/profile-bulk-import-jobs",
        10_000,
        _MB,
        10,
        150,
        "profile",
        JobSpec(10, 150, import_errors=True),
    )
    SUBSCRIBE = EndpointSpec(
        "/api/profile-subscription-bulk-create-jobs", 1000, _MB, 75, 750, "consent"
    )
    UNSUBSCRIBE = EndpointSpec(
        "/api/profile-subscription-bulk-delete-jobs", 100, _MB, 75, 750, "consent"
    )
    CATALOG_CREATE = EndpointSpec(
        "/api/catalog-item-bulk-create-jobs", 100, _MB, 75, 750, "catalog", _CATALOG_JOB
    )
    CATALOG_UPDATE = EndpointSpec(
        "/api/catalog-item-bulk-update-jobs", 100, _MB, 75, 750, "catalog", _CATALOG_JOB
    )
    CATALOG_DELETE = EndpointSpec(
        "/api/catalog-item-bulk-delete-jobs", 100, _MB, 75, 750, "catalog", _CATALOG_JOB
    )

    # Members are singletons: identity hashing is right, and C-level (Enum's own __hash__ is
    # Python code, paid on every batch-key lookup).
    __hash__ = object.__hash__

    @property
    def spec(self) -> EndpointSpec:
        return self.value
