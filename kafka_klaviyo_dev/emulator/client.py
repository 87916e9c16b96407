"""A small typed client of the emulator's control API, for tests and the demo.

>>> with EmulatorClient("http://127.0.0.1:8080") as emu:
...     emu.reset()
...     emu.fail_with_status(503, requests=2, endpoint="events")
...     ...                                   # run the service
...     assert emu.stats().retry_after_violations == 0
...     placed = emu.events(account="acme", metric="Placed Order")

It speaks only to ``/__emulator/...``; the service under test talks to ``/api/...`` itself.
Failures raise :class:`EmulatorControlError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

import httpx

from kafka_klaviyo_dev.emulator.endpoints import lookup
from kafka_klaviyo_dev.errors import DevstackError

FaultKind = Literal[
    "status", "latency", "timeout", "rate_limit_storm", "reject_items", "fail_in_job", "cancel_job"
]
_UNSET: Any = object()


class EmulatorControlError(DevstackError):
    """The emulator's control API refused a call or could not be reached."""


@dataclass(frozen=True, slots=True)
class AcceptedEvent:
    """One event the emulator accepted, as Klaviyo would have stored it."""

    account: str
    profile: Mapping[str, Any]
    metric: str
    unique_id: str | None
    time: str
    value: float | None
    value_currency: str | None
    properties: Mapping[str, Any]
    backfill: bool
    received_at: float
    seq: int

    @property
    def email(self) -> str | None:
        """The profile's e-mail address, if it has one."""
        value = self.profile.get("email")
        return value if isinstance(value, str) else None

    @property
    def phone_number(self) -> str | None:
        """The profile's phone number, if it has one."""
        value = self.profile.get("phone_number")
        return value if isinstance(value, str) else None

    @property
    def external_id(self) -> str | None:
        """The profile's external id, if it has one."""
        value = self.profile.get("external_id")
        return value if isinstance(value, str) else None

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> AcceptedEvent:
        """From one record of ``GET /__emulator/events``."""
        return cls(
            account=str(doc["account"]),
            profile=doc.get("profile") or {},
            metric=str(doc.get("metric", "")),
            unique_id=doc.get("unique_id"),
            time=str(doc.get("time", "")),
            value=doc.get("value"),
            value_currency=doc.get("value_currency"),
            properties=doc.get("properties") or {},
            backfill=bool(doc.get("backfill", False)),
            received_at=float(doc.get("received_at", 0.0)),
            seq=int(doc.get("seq", 0)),
        )


@dataclass(frozen=True, slots=True)
class ConsentState:
    """Where one person's consent on one list and channel ended (``GET /__emulator/consent``).

    ``consent`` is ``SUBSCRIBED`` or ``UNSUBSCRIBED``: the last accepted Subscribe or
    Unsubscribe item for (account, list, channel, person). ``history`` lists every accepted
    item for that key, oldest first (``endpoint``, ``seq``, ``consent``).
    ``globally_unsubscribed``: the last change was an Unsubscribe, on this list or another,
    of the person while they were not in that list, which Klaviyo applies to every list
    (RULES.md U1; those history steps carry ``global``).
    """

    account: str
    list_id: str | None
    channel: str
    person: str
    consent: str
    types: tuple[str, ...]
    seq: int
    history: tuple[Mapping[str, Any], ...]
    globally_unsubscribed: bool = False

    @property
    def subscribed(self) -> bool:
        """True if the last accepted item subscribed the person."""
        return self.consent == "SUBSCRIBED"

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ConsentState:
        """From one entry of ``GET /__emulator/consent``."""
        return cls(
            account=str(doc["account"]),
            list_id=doc.get("list_id"),
            channel=str(doc["channel"]),
            person=str(doc["person"]),
            consent=str(doc["consent"]),
            types=tuple(doc.get("types") or ()),
            seq=int(doc.get("seq") or 0),
            history=tuple(doc.get("history") or ()),
            globally_unsubscribed=bool(doc.get("globally_unsubscribed")),
        )


@dataclass(frozen=True, slots=True)
class CatalogItemState:
    """Where one catalog item ended (``GET /__emulator/catalog-items``).

    ``exists`` is False once the last accepted operation on the item was a delete;
    ``operation`` is that last operation (``create``, ``update`` or ``delete``) and
    ``attributes`` the item's latest attributes (kept, for a deleted item, as they were).
    """

    account: str
    id: str
    exists: bool
    operation: str
    attributes: Mapping[str, Any]
    relationships: Mapping[str, Any] | None
    seq: int
    history: tuple[Mapping[str, Any], ...]

    @property
    def deleted(self) -> bool:
        """True if the last accepted operation deleted the item."""
        return not self.exists

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> CatalogItemState:
        """From one entry of ``GET /__emulator/catalog-items``."""
        return cls(
            account=str(doc["account"]),
            id=str(doc["id"]),
            exists=bool(doc["exists"]),
            operation=str(doc.get("operation", "")),
            attributes=doc.get("attributes") or {},
            relationships=doc.get("relationships"),
            seq=int(doc.get("seq") or 0),
            history=tuple(doc.get("history") or ()),
        )


@dataclass(frozen=True, slots=True)
class ProfileState:
    """One imported profile as the last accepted import left it (``GET /__emulator/profiles``).

    ``identifier`` names the identifier the profile is known by (``email``, ``phone_number``,
    ``external_id`` or ``id``) and ``value`` its value (e-mail addresses lower-cased).
    """

    account: str
    identifier: str
    value: str
    id: str | None
    attributes: Mapping[str, Any]
    lists: tuple[str, ...]
    seq: int
    history: tuple[Mapping[str, Any], ...]

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ProfileState:
        """From one entry of ``GET /__emulator/profiles``."""
        return cls(
            account=str(doc["account"]),
            identifier=str(doc["identifier"]),
            value=str(doc["value"]),
            id=doc.get("id"),
            attributes=doc.get("attributes") or {},
            lists=tuple(str(x) for x in doc.get("lists") or ()),
            seq=int(doc.get("seq") or 0),
            history=tuple(doc.get("history") or ()),
        )


@dataclass(frozen=True, slots=True)
class JobState:
    """One asynchronous job as the emulator holds it (``GET /__emulator/jobs``).

    ``status`` is ``queued``, ``processing``, ``complete`` or ``cancelled``; ``endpoint`` the
    emulator's endpoint name (``profile_import``, ``catalog_create``...). ``errors`` are the
    failed items, each with ``code``, ``title``, ``detail``, ``source.pointer``, ``position``
    (index in the request) and ``original_payload`` (the item's attributes).
    """

    id: str
    type: str
    endpoint: str
    account: str
    status: str
    total_count: int
    completed_count: int
    failed_count: int
    created_at: str
    completed_at: str | None
    due_in_seconds: float
    errors: tuple[Mapping[str, Any], ...]

    @property
    def done(self) -> bool:
        """True once complete or cancelled."""
        return self.status in ("complete", "cancelled")

    @property
    def failed_positions(self) -> tuple[int, ...]:
        """Indexes, in the request, of the items that failed."""
        return tuple(int(e["position"]) for e in self.errors)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> JobState:
        """From one entry of ``GET /__emulator/jobs``."""
        return cls(
            id=str(doc["id"]),
            type=str(doc["type"]),
            endpoint=str(doc["endpoint"]),
            account=str(doc["account"]),
            status=str(doc["status"]),
            total_count=int(doc.get("total_count") or 0),
            completed_count=int(doc.get("completed_count") or 0),
            failed_count=int(doc.get("failed_count") or 0),
            created_at=str(doc.get("created_at", "")),
            completed_at=doc.get("completed_at"),
            due_in_seconds=float(doc.get("due_in_seconds") or 0.0),
            errors=tuple(doc.get("errors") or ()),
        )


@dataclass(frozen=True, slots=True)
class EmulatorStats:
    """The emulator's counters (``GET /__emulator/stats``); dicts are keyed by endpoint name
    (``events``, ``profile_import``, ``subscribe``, ``unsubscribe``, ``catalog_create``...)."""

    requests: Mapping[str, Mapping[str, int]]
    accepted: Mapping[str, int]
    duplicates_dropped: Mapping[str, int]
    validation_failures: Mapping[str, int]
    rate_limited: Mapping[str, int]
    faults_fired: Mapping[str, int]
    test_domain_dropped: Mapping[str, int]
    retry_after_violations: int
    retry_after_violation_log: list[Mapping[str, Any]] = field(default_factory=list)
    accounts: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> EmulatorStats:
        """From the ``data`` of ``GET /__emulator/stats``."""
        return cls(
            requests=doc.get("requests", {}),
            accepted=doc.get("accepted", {}),
            duplicates_dropped=doc.get("duplicates_dropped", {}),
            validation_failures=doc.get("validation_failures", {}),
            rate_limited=doc.get("rate_limited", {}),
            faults_fired=doc.get("faults_fired", {}),
            test_domain_dropped=doc.get("test_domain_dropped", {}),
            retry_after_violations=int(doc.get("retry_after_violations", 0)),
            retry_after_violation_log=list(doc.get("retry_after_violation_log", [])),
            accounts=doc.get("accounts", {}),
        )

    def responses(self, endpoint: str = "events", status: int | str | None = None) -> int:
        """How many requests to ``endpoint`` were answered (with ``status``, if given)."""
        by_status = self.requests.get(endpoint, {})
        if status is None:
            return sum(by_status.values())
        return int(by_status.get(str(status), 0))

    @property
    def total_accepted(self) -> int:
        """Items accepted over all endpoints and accounts."""
        return sum(self.accepted.values())

    @property
    def total_duplicates_dropped(self) -> int:
        """Items dropped as duplicates over all endpoints and accounts."""
        return sum(self.duplicates_dropped.values())


class EmulatorClient:
    """Drives one emulator over HTTP: read back, reset, inject and clear faults."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url + "/__emulator", timeout=timeout, transport=transport
        )

    # --- plumbing ----------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> Any:
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(method, path, params=clean, json=json)
        except httpx.HTTPError as exc:
            raise EmulatorControlError(
                f"the Klaviyo emulator at {self.base_url} cannot be reached: {exc}"
            ) from exc
        if response.status_code >= 400:
            raise EmulatorControlError(
                f"{method} /__emulator{path}: HTTP {response.status_code}: {_detail(response)}"
            )
        return response.json().get("data")

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    def __enter__(self) -> EmulatorClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- read-back ---------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """Accounts, revision, whether schema validation and rate limits are on."""
        result: dict[str, Any] = self._call("GET", "/health")
        return result

    def config(self) -> dict[str, Any]:
        """``health()`` plus every endpoint's limits."""
        result: dict[str, Any] = self._call("GET", "/config")
        return result

    def events(
        self,
        account: str | None = None,
        metric: str | None = None,
        unique_id: str | None = None,
    ) -> list[AcceptedEvent]:
        """Accepted events, oldest first, optionally for one account/metric/unique_id."""
        data = self._call(
            "GET", "/events", params={"account": account, "metric": metric, "unique_id": unique_id}
        )
        return [AcceptedEvent.from_json(d) for d in data]

    def items(self, endpoint: str, account: str | None = None) -> list[dict[str, Any]]:
        """Accepted items of any endpoint (name such as ``profile_import``, or its path)."""
        known = lookup(endpoint)
        name = known.name if known is not None else endpoint
        data: list[dict[str, Any]] = self._call(
            "GET", f"/items/{name}", params={"account": account}
        )
        return data

    # --- the state Klaviyo would end in (kafka_klaviyo_dev.emulator.final_state) -------------

    def consent(
        self,
        *,
        account: str | None = None,
        list_id: str | None = None,
        channel: str | None = None,
        person: str | None = None,
    ) -> list[ConsentState]:
        """Final consent per (account, list, channel, person), optionally narrowed (``person``
        is an e-mail address or a phone number; e-mails compare case-insensitively)."""
        data = self._call(
            "GET",
            "/consent",
            params={"account": account, "list_id": list_id, "channel": channel, "person": person},
        )
        return [ConsentState.from_json(d) for d in data]

    def consent_of(
        self, list_id: str, person: str, channel: str = "email", *, account: str | None = None
    ) -> str | None:
        """``SUBSCRIBED`` or ``UNSUBSCRIBED`` for one person on one list and channel; None if
        no Subscribe or Unsubscribe of them was accepted."""
        found = self.consent(account=account, list_id=list_id, channel=channel, person=person)
        if len(found) > 1:
            raise EmulatorControlError(
                f"{len(found)} accounts hold consent for that person: pass account="
            )
        return found[0].consent if found else None

    def catalog_items(
        self, *, account: str | None = None, item_id: str | None = None
    ) -> list[CatalogItemState]:
        """Final catalog items per (account, item id) (ids like ``$custom:::$default:::42``)."""
        data = self._call("GET", "/catalog-items", params={"account": account, "id": item_id})
        return [CatalogItemState.from_json(d) for d in data]

    def catalog_item(self, item_id: str, *, account: str | None = None) -> CatalogItemState | None:
        """One catalog item's final state; None if no operation on it was accepted."""
        found = self.catalog_items(account=account, item_id=item_id)
        if len(found) > 1:
            raise EmulatorControlError(
                f"{len(found)} accounts hold item {item_id!r}: pass account="
            )
        return found[0] if found else None

    def profiles(
        self,
        *,
        account: str | None = None,
        identifier: str | None = None,
        value: str | None = None,
    ) -> list[ProfileState]:
        """Final imported profiles per (account, identifier), optionally narrowed
        (``identifier="email", value="a@shop.io"``)."""
        data = self._call(
            "GET",
            "/profiles",
            params={"account": account, "identifier": identifier, "value": value},
        )
        return [ProfileState.from_json(d) for d in data]

    def categories(
        self, *, account: str | None = None, category_id: str | None = None
    ) -> list[CatalogItemState]:
        """Final catalog categories per (account, id) (ids like ``$custom:::$default:::toys``);
        same fields as catalog items."""
        data = self._call("GET", "/categories", params={"account": account, "id": category_id})
        return [CatalogItemState.from_json(d) for d in data]

    def category(self, category_id: str, *, account: str | None = None) -> CatalogItemState | None:
        """One category's final state; None if no operation on it was stored."""
        found = self.categories(account=account, category_id=category_id)
        if len(found) > 1:
            raise EmulatorControlError(
                f"{len(found)} accounts hold category {category_id!r}: pass account="
            )
        return found[0] if found else None

    # --- asynchronous jobs (kafka_klaviyo_dev.emulator.jobs) ---------------------------------

    def jobs(
        self,
        *,
        account: str | None = None,
        endpoint: str | None = None,
        status: str | None = None,
    ) -> list[JobState]:
        """Jobs, oldest first, optionally of one account, endpoint (name or path) or status."""
        data = self._call(
            "GET", "/jobs", params={"account": account, "endpoint": endpoint, "status": status}
        )
        return [JobState.from_json(d) for d in data]

    def job(self, job_id: str) -> JobState:
        """One job by id."""
        return JobState.from_json(self._call("GET", f"/jobs/{job_id}"))

    def cancel_job(self, job_id: str) -> JobState:
        """Cancel one unfinished job now: status ``cancelled``, none of its items stored."""
        return JobState.from_json(self._call("POST", f"/jobs/{job_id}/cancel"))

    def complete_job(self, job_id: str) -> JobState:
        """Finish one unfinished job now, whatever its duration."""
        return JobState.from_json(self._call("POST", f"/jobs/{job_id}/complete"))

    def cancel_jobs(self, *, endpoint: str | None = None, account: str | None = None) -> list[str]:
        """Cancel every unfinished job (of ``endpoint``/``account``); the ids cancelled."""
        doc = {k: v for k, v in (("endpoint", endpoint), ("account", account)) if v is not None}
        data = self._call("POST", "/jobs/cancel", json=doc)
        return [str(x) for x in data["cancelled"]]

    def job_settings(self) -> dict[str, Any]:
        """``duration_seconds``, ``queued_seconds``, ``durations`` (per endpoint) and
        ``strict_catalog``."""
        result: dict[str, Any] = self._call("GET", "/job-settings")
        return result

    def set_job_duration(
        self,
        seconds: float | None,
        *,
        endpoint: str | None = None,
        queued_seconds: float | None = None,
    ) -> dict[str, Any]:
        """Jobs posted from now on complete ``seconds`` after their POST (0: at once), queued
        for the first ``queued_seconds`` of it; with ``endpoint`` only that endpoint's jobs
        (``seconds=None`` then drops its override)."""
        doc: dict[str, Any] = {"duration_seconds": seconds}
        if endpoint is not None:
            doc["endpoint"] = endpoint
        elif seconds is None:
            raise EmulatorControlError("set_job_duration: seconds is required without endpoint")
        if queued_seconds is not None:
            doc["queued_seconds"] = queued_seconds
        result: dict[str, Any] = self._call("POST", "/job-settings", json=doc)
        return result

    def set_strict_catalog(self, on: bool = True) -> dict[str, Any]:
        """Klaviyo's catalog rules inside jobs on or off (create of an existing item, update or
        delete of a missing one, a missing category: that item fails)."""
        result: dict[str, Any] = self._call("POST", "/job-settings", json={"strict_catalog": on})
        return result

    def stats(self) -> EmulatorStats:
        """Every counter."""
        return EmulatorStats.from_json(self._call("GET", "/stats"))

    def requests(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Summaries of recent requests (endpoint, account, status, items, bytes, reason)."""
        data: list[dict[str, Any]] = self._call("GET", "/requests", params={"limit": limit})
        return data

    def rule_violations(self) -> dict[str, dict[str, int]]:
        """Refusals since the last reset: endpoint -> RULES.md rule id (or ``schema``) -> count."""
        data: dict[str, dict[str, int]] = self._call("GET", "/rule-violations")
        return data

    def reset(self) -> None:
        """Forget accepted data, counters, faults and rate-limit windows."""
        self._call("POST", "/reset")

    # --- faults ------------------------------------------------------------------------------

    def add_fault(
        self,
        kind: FaultKind,
        *,
        endpoint: str | None = None,
        account: str | None = None,
        seconds: float | None = None,
        requests: int | None = None,
        status: int | None = None,
        retry_after: int | None = None,
        delay_seconds: float | None = None,
        hold_seconds: float | None = None,
        match: Mapping[str, Any] | None = None,
        detail: str | None = None,
        code: str | None = None,
    ) -> str:
        """Add a fault rule (see :mod:`kafka_klaviyo_dev.emulator.faults`); returns its id."""
        doc: dict[str, Any] = {"kind": kind}
        for key, value in (
            ("endpoint", endpoint),
            ("account", account),
            ("seconds", seconds),
            ("requests", requests),
            ("status", status),
            ("retry_after", retry_after),
            ("delay_seconds", delay_seconds),
            ("hold_seconds", hold_seconds),
            ("match", dict(match) if match is not None else None),
            ("detail", detail),
            ("code", code),
        ):
            if value is not None:
                doc[key] = value
        data = self._call("POST", "/faults", json=doc)
        return str(data["id"])

    def fail_with_status(
        self,
        status: int = 503,
        *,
        seconds: float | None = None,
        requests: int | None = None,
        endpoint: str | None = None,
        account: str | None = None,
        retry_after: int | None = None,
    ) -> str:
        """Answer ``status`` (e.g. 503, 500) for ``seconds`` or ``requests`` requests."""
        return self.add_fault(
            "status",
            status=status,
            seconds=seconds,
            requests=requests,
            endpoint=endpoint,
            account=account,
            retry_after=retry_after,
        )

    def add_latency(
        self,
        delay_seconds: float,
        *,
        seconds: float | None = None,
        requests: int | None = None,
        endpoint: str | None = None,
        account: str | None = None,
    ) -> str:
        """Delay requests by ``delay_seconds`` before handling them normally."""
        return self.add_fault(
            "latency",
            delay_seconds=delay_seconds,
            seconds=seconds,
            requests=requests,
            endpoint=endpoint,
            account=account,
        )

    def hold_requests(
        self,
        hold_seconds: float = 30.0,
        *,
        seconds: float | None = None,
        requests: int | None = None,
        endpoint: str | None = None,
        account: str | None = None,
    ) -> str:
        """Timeouts: hold requests unanswered for ``hold_seconds``, then drop the connection."""
        return self.add_fault(
            "timeout",
            hold_seconds=hold_seconds,
            seconds=seconds,
            requests=requests,
            endpoint=endpoint,
            account=account,
        )

    def rate_limit_storm(
        self,
        retry_after: int = 1,
        *,
        seconds: float | None = None,
        requests: int | None = None,
        endpoint: str | None = None,
        account: str | None = None,
    ) -> str:
        """Answer every request 429 with ``Retry-After: retry_after``."""
        return self.add_fault(
            "rate_limit_storm",
            retry_after=retry_after,
            seconds=seconds,
            requests=requests,
            endpoint=endpoint,
            account=account,
        )

    def reject_items(
        self,
        field: str,
        *,
        equals: Any = _UNSET,
        regex: str | None = None,
        seconds: float | None = None,
        requests: int | None = None,
        endpoint: str | None = None,
        account: str | None = None,
        detail: str | None = None,
    ) -> str:
        """400 for requests with items whose ``field`` (dotted path, e.g.
        ``properties.poison``, ``unique_id``, ``profile.email``) equals ``equals`` or matches
        ``regex``; each error's ``source.pointer`` names a matching item."""
        match: dict[str, Any] = {"field": field}
        if equals is not _UNSET:
            match["equals"] = equals
        if regex is not None:
            match["regex"] = regex
        return self.add_fault(
            "reject_items",
            match=match,
            seconds=seconds,
            requests=requests,
            endpoint=endpoint,
            account=account,
            detail=detail,
        )

    def fail_in_job(
        self,
        field: str,
        *,
        equals: Any = _UNSET,
        regex: str | None = None,
        code: str | None = None,
        detail: str | None = None,
        seconds: float | None = None,
        requests: int | None = None,
        endpoint: str | None = None,
        account: str | None = None,
    ) -> str:
        """Accept requests (202) but fail, inside their job, the items whose ``field`` equals
        ``equals`` or matches ``regex``: they count in ``failed_count``, are listed in the
        job's errors (import errors for profiles) with ``code`` (default ``invalid``) and
        ``detail``, and are not stored."""
        return self.add_fault(
            "fail_in_job",
            match=_match(field, equals, regex),
            seconds=seconds,
            requests=requests,
            endpoint=endpoint,
            account=account,
            detail=detail,
            code=code,
        )

    def cancel_new_jobs(
        self,
        *,
        requests: int | None = None,
        seconds: float | None = None,
        endpoint: str | None = None,
        account: str | None = None,
        field: str | None = None,
        equals: Any = _UNSET,
        regex: str | None = None,
    ) -> str:
        """Cancel the jobs of the next ``requests`` requests (or for ``seconds``), optionally
        only those with an item whose ``field`` matches: they end ``cancelled`` when they
        would have completed, and store nothing."""
        return self.add_fault(
            "cancel_job",
            match=_match(field, equals, regex) if field is not None else None,
            seconds=seconds,
            requests=requests,
            endpoint=endpoint,
            account=account,
        )

    def faults(self) -> list[dict[str, Any]]:
        """The active fault rules, with how often each fired."""
        data: list[dict[str, Any]] = self._call("GET", "/faults")
        return data

    def remove_fault(self, fault_id: str) -> None:
        """Deactivate one fault rule."""
        self._call("DELETE", f"/faults/{fault_id}")

    def clear_faults(self) -> None:
        """Deactivate every fault rule and release requests held by timeout faults."""
        self._call("DELETE", "/faults")


def _match(field: str, equals: Any, regex: str | None) -> dict[str, Any]:
    match: dict[str, Any] = {"field": field}
    if equals is not _UNSET:
        match["equals"] = equals
    if regex is not None:
        match["regex"] = regex
    return match


def _detail(response: httpx.Response) -> str:
    try:
        errors = response.json().get("errors") or []
        return "; ".join(str(e.get("detail")) for e in errors) or response.text[:200]
    except ValueError:
        return response.text[:200]
