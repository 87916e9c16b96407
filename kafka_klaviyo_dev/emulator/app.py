"""The request pipeline: what happens to one request, in the order Klaviyo would do it.

Transport-neutral: :class:`EmulatorApp` takes a :class:`Request` and returns a
:class:`~kafka_klaviyo_dev.emulator.responses.Response`;
:mod:`kafka_klaviyo_dev.emulator.server` does the HTTP.

For an ``/api/...`` bulk endpoint::

    route -> authenticate (401) -> revision (400) -> note Retry-After violations
      -> injected faults (latency, status, timeout, 429 storm)
      -> rate limits (429 + Retry-After) -> media type (415) -> size (413) -> JSON (400)
      -> item count (400) -> OpenAPI schema (400) -> ingestion limits (400)
      -> injected per-item rejections (400) -> dedup + store -> 202

A job endpoint (profile import, catalog and category jobs) creates a job instead of storing
at once: its items are stored when the job completes (:mod:`kafka_klaviyo_dev.emulator.jobs`,
at once with the default duration of 0), except those that fail inside it. The other routes
(GET of jobs, import errors and categories; PATCH and DELETE of a category) go through
authentication, the faults that name them and their own rate limits.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from consumer.errors import ConfigError
from kafka_klaviyo_dev.emulator import endpoints as ep
from kafka_klaviyo_dev.emulator import jobs as jb
from kafka_klaviyo_dev.emulator import lists
from kafka_klaviyo_dev.emulator.catalog import OPERATIONS as CATALOG_OPERATIONS
from kafka_klaviyo_dev.emulator.catalog import CatalogIndex, resource_id
from kafka_klaviyo_dev.emulator.config import (
    REVISION_FORMAT,
    EmulatorConfig,
    JobSettings,
    WindowLimits,
)
from kafka_klaviyo_dev.emulator.faults import FaultBook, FaultRule, Selection
from kafka_klaviyo_dev.emulator.items import Item, field_pointer, field_view
from kafka_klaviyo_dev.emulator.limits import (
    CheckContext,
    body_strings_fit,
    count_issue,
    run_checks,
)
from kafka_klaviyo_dev.emulator.ratelimit import Decision, FixedWindowLimiter
from kafka_klaviyo_dev.emulator.responses import (
    JSON_API,
    ApiError,
    Response,
    empty,
    error_response,
    invalid,
    json_response,
    single_error,
)
from kafka_klaviyo_dev.emulator.rules.violations import COUNT_RULES, SIZE_RULES, RuleViolations
from kafka_klaviyo_dev.emulator.state import EmulatorState
from kafka_klaviyo_dev.emulator.validation import SpecValidators

logger = logging.getLogger(__name__)

_AUTH_SCHEME = "klaviyo-api-key"
_TEST_DOMAINS = ("@example.com", "@test.com")


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request as the pipeline sees it (header names lower-case)."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes = b""
    query: Mapping[str, Sequence[str]] = field(default_factory=dict)
    arrived: float = field(default_factory=time.monotonic)

    def param(self, name: str) -> str | None:
        """The first value of query parameter ``name``."""
        values = self.query.get(name)
        return values[0] if values else None


class EmulatorApp:
    """Klaviyo's bulk endpoints for a set of accounts, with faults and read-back state."""

    def __init__(
        self,
        config: EmulatorConfig,
        validators: SpecValidators | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        #: The clock of Retry-After debts, fault expiry and rate-limit windows (monotonic
        #: seconds); tests pass a manual one to step time instead of sleeping.
        self.clock = clock
        self.validators = validators if config.validate else None
        self.state = EmulatorState(
            config.accounts, request_log_size=config.request_log_size, clock=clock
        )
        self.faults = FaultBook(clock=clock)
        self.limiter = FixedWindowLimiter(clock=clock)
        self.jobs = jb.JobBook(clock=clock)
        #: How jobs run now; the control API replaces it, :meth:`reset` restores the config's.
        self.job_settings: JobSettings = config.jobs
        # Check-then-store of catalog operations is atomic: two creates of one id never both
        # succeed.
        self._catalog_lock = threading.Lock()
        #: Refusals by RULES.md id (``GET /__emulator/rule-violations``).
        self.violations = RuleViolations()
        #: Set when the server stops: held and delayed requests give up at once.
        self.stopping = threading.Event()
        self._accounts_by_key = dict(config.api_keys)
        self._limits: dict[str, WindowLimits] = {}
        for endpoint in ep.ENDPOINTS:
            override = config.rate_limits.overrides.get(endpoint.name)
            if override is None:
                override = config.rate_limits.overrides.get(endpoint.path)
            self._limits[endpoint.name] = override or endpoint.limits
        for route in ep.ROUTES:
            self._limits[route.name] = config.rate_limits.overrides.get(route.name) or route.limits
        unknown = [
            k
            for k in config.rate_limits.overrides
            if ep.lookup(k) is None and k not in ep.ROUTES_BY_NAME
        ]
        if unknown:
            raise ConfigError(f"emulator rate limit overrides name unknown endpoints: {unknown}")

    def limits_for(self, endpoint: str) -> WindowLimits:
        """The rate limits in force for one endpoint or route (``profile_import_job``...)."""
        return self._limits[endpoint]

    def reset(self) -> None:
        """Forget accepted data, counters, faults, rate-limit windows and jobs; job settings
        go back to the configuration's."""
        self.faults.clear()
        self.limiter.reset()
        self.jobs.reset()
        self.job_settings = self.config.jobs
        self.state.reset()
        self.violations.reset()

    def advance_jobs(self) -> list[jb.Job]:
        """Finish the jobs that are due by the clock; the jobs finished now."""
        return self.jobs.advance(self._finish_job)

    # --- the bulk endpoints -----------------------------------------------------------------

    def handle_api(self, request: Request) -> Response:
        """Answer one request to ``/api/...``."""
        self.advance_jobs()
        endpoint = ep.BY_PATH.get(request.path.rstrip("/"))
        if endpoint is None or request.method != "POST":
            routed = ep.route_for(request.method, request.path)
            if routed is not None:
                return self._handle_route(routed[0], routed[1], request)
            allowed = ep.methods_at(request.path)
            if not allowed:
                return single_error(404, f"The emulator does not serve {request.path}.")
            refused = single_error(405, f'Method "{request.method}" not allowed.')
            refused.headers["Allow"] = ", ".join(allowed)
            name = endpoint.name if endpoint is not None else request.path
            self.state.count_request(name, None, 405, method=request.method)
            return refused
        outcome = _Outcome()
        account: str | None = None
        try:
            account, denied = self._authenticate(request)
            if denied is not None or account is None:
                response = denied or single_error(401, "Missing or invalid private key.")
                outcome.reason = "authentication" if response.status == 401 else "revision"
            else:
                response = self._process(endpoint, request, account, outcome)
        except Exception as exc:
            # Internal failure: say so the way Klaviyo would rather than hang the client. The
            # log has the exception type and the frames but not its message, which may quote
            # body values (e-mails, phone numbers).
            logger.error(
                "emulator: %s failed with %s\n%s",
                endpoint.path,
                type(exc).__name__,
                "".join(traceback.format_tb(exc.__traceback__)),
            )
            response = single_error(500, "The emulator failed to process the request.")
            outcome.reason = "emulator_error"
        self.state.count_request(
            endpoint.name,
            account,
            "dropped" if response.drop else response.status,
            items=outcome.items,
            size=len(request.body),
            reason=outcome.reason,
            fault=outcome.fault,
            job=outcome.job,
        )
        self.violations.add(endpoint.name, outcome.rules)
        return response

    def _authenticate(self, request: Request) -> tuple[str | None, Response | None]:
        header = request.headers.get("authorization")
        if not header:
            return None, single_error(401, "Missing or invalid private key.")
        scheme, _, key = header.strip().partition(" ")
        account = self._accounts_by_key.get(key.strip()) if scheme.lower() == _AUTH_SCHEME else None
        if account is None:
            return None, single_error(
                401,
                "Missing or invalid private key.",
                code="authentication_failed",
                title="Incorrect authentication credentials.",
            )
        revision = request.headers.get("revision")
        if not revision:
            return account, single_error(
                400,
                "Missing required header 'revision' (format: YYYY-MM-DD[.suffix]).",
                parameter="revision",
            )
        if revision.strip() not in self.config.revisions:
            shape = (
                "is not a valid revision"
                if REVISION_FORMAT.match(revision.strip())
                else ("is not of the form YYYY-MM-DD[.suffix]")
            )
            return account, single_error(
                400,
                f"Revision {revision.strip()[:40]!r} {shape}; this server serves "
                f"{', '.join(sorted(self.config.revisions))}.",
                parameter="revision",
            )
        return account, None

    def _process(
        self, endpoint: ep.Endpoint, request: Request, account: str, outcome: _Outcome
    ) -> Response:
        refused, decision, selection = self._gate(endpoint.name, request, account, outcome)
        if refused is not None:
            return refused
        headers = decision.headers() if decision is not None else {}
        response = self._ingest(endpoint, request, account, outcome, selection)
        response.headers.update(headers)
        response.headers.update(outcome.headers)
        return response

    def _gate(
        self, name: str, request: Request, account: str, outcome: _Outcome, named_only: bool = False
    ) -> tuple[Response | None, Decision | None, Selection]:
        """Retry-After bookkeeping, injected faults and rate limits of one request: the
        refusal if any, the rate limiter's decision and the faults that apply."""
        self.state.arrival(account, name, request.arrived, self.config.retry_after_grace_seconds)
        selection = self.faults.select(name, account, named_only=named_only)
        if selection.delay_seconds > 0:
            outcome.fault = "latency"
            self.faults.wait(selection.delay_seconds, self.stopping)
        if selection.terminal is not None:
            return self._fault_response(selection.terminal, name, account, outcome), None, selection
        decision: Decision | None = None
        if self.config.rate_limits.enabled:
            decision = self.limiter.acquire((account, name), self._limits[name])
            if not decision.allowed:
                outcome.reason = "rate_limit"
                self.state.owe_retry_after(account, name, decision.retry_after)
                refused = single_error(
                    429,
                    f"Request was throttled. Expected available in {decision.retry_after} "
                    f"second{'s' if decision.retry_after != 1 else ''}.",
                    headers={"Retry-After": str(decision.retry_after)},
                )
                return refused, decision, selection
        return None, decision, selection

    def _fault_response(
        self, rule: FaultRule, name: str, account: str, outcome: _Outcome
    ) -> Response:
        outcome.fault = rule.kind
        if rule.kind == "timeout":
            self.faults.hold(rule.hold_seconds, self.stopping)
            return Response(0, drop=True)
        if rule.kind == "rate_limit_storm":
            seconds = rule.retry_after if rule.retry_after is not None else 1
            self.state.owe_retry_after(account, name, seconds)
            return single_error(
                429,
                rule.detail or f"Request was throttled. Expected available in {seconds} seconds.",
                headers={"Retry-After": str(seconds)},
            )
        headers: dict[str, str] = {}
        if rule.retry_after is not None:
            headers["Retry-After"] = str(rule.retry_after)
            self.state.owe_retry_after(account, name, rule.retry_after)
        return single_error(
            rule.status,
            rule.detail or "Injected fault: the emulator is failing on purpose.",
            headers=headers,
        )

    def _ingest(
        self,
        endpoint: ep.Endpoint,
        request: Request,
        account: str,
        outcome: _Outcome,
        selection: Selection,
    ) -> Response:
        content_type = request.headers.get("content-type", "")
        if "json" not in content_type.lower():
            outcome.reason = "media_type"
            return single_error(
                415,
                f'Unsupported media type "{content_type[:60]}" in request; send '
                "application/vnd.api+json.",
            )
        if len(request.body) > endpoint.max_bytes:
            outcome.reason = "too_large"
            outcome.rules[SIZE_RULES.get(endpoint.name, "size")] += 1
            return single_error(
                413,
                f"The payload may not exceed {endpoint.max_bytes:,} bytes; got "
                f"{len(request.body):,}.",
                pointer="/data",
            )
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            outcome.reason = "validation"
            outcome.rules["json"] += 1
            return single_error(
                400,
                "The request body is not valid JSON.",
                code="parse_error",
                title="Malformed request.",
            )
        extracted = endpoint.extract(body)
        outcome.items = len(extracted.items)
        too_many = count_issue(
            len(extracted.items), endpoint.max_items, extracted.array_pointer, endpoint.noun
        )
        if too_many is not None:
            outcome.reason = "validation"
            outcome.rules[COUNT_RULES.get(endpoint.name, "count")] += 1
            return invalid([too_many])
        if self.validators is not None:
            schema_issues = self.validators.for_path(endpoint.path).issues(body)
            if schema_issues:
                outcome.reason = "validation"
                outcome.rules["schema"] += len(schema_issues)
                return invalid([(i.pointer, i.detail) for i in schema_issues])
        received_at = time.time()
        ctx = CheckContext(
            now=datetime.now(UTC),
            received_at=received_at,
            strings_fit=body_strings_fit(request.body),
            job=_job_attributes(body),
            body=body,
            schema=self.validators.for_path(endpoint.path).schema if self.validators else None,
        )
        issues = list(extracted.issues)
        outcome.rules["schema"] += len(issues)
        issues += run_checks(
            extracted.items, ctx, endpoint.item_checks, endpoint.request_checks, outcome.rules
        )
        if issues:
            outcome.reason = "validation"
            return invalid(issues)
        if ctx.partial_failures:
            outcome.headers["X-Klaviyo-Partial-Failure"] = ",".join(sorted(ctx.partial_failures))
        if selection.item_rules:
            rejected = self._reject_items(extracted.items, selection.item_rules)
            if rejected:
                outcome.fault = "reject_items"
                return rejected

        records = []
        for item in extracted.items:
            record = endpoint.record(item, body, received_at)
            record["account"] = account
            records.append(record)
        dedup_key = endpoint.dedup_key
        keys = [dedup_key(item, received_at) if dedup_key else None for item in extracted.items]
        base = f"http://{request.headers.get('host', 'localhost')}"
        if endpoint.creates_resource:
            return self._create_resource(endpoint, extracted.items[0], records[0], account, base)
        if endpoint.returns_job:
            job = self._new_job(
                endpoint, account, body, extracted.items, records, keys, selection.job_rules
            )
            outcome.job = job.id
            if job.cancel:
                outcome.fault = "cancel_job"
            elif any(p.failure is not None for p in job.items):
                outcome.fault = "fail_in_job"
            # The answer shows the job as created (queued), as Klaviyo's does; a job of
            # duration 0 is complete by the time the client can ask.
            document = self.jobs.document(job, base, as_created=True)
            self.jobs.add(job)
            self.advance_jobs()
            return json_response(202, document, JSON_API)
        # zip(): no (key, record) pair per item to allocate and keep.
        self.state.commit(account, endpoint.name, zip(keys, records, strict=True), self._drop())
        return empty(202)

    def _drop(self) -> Callable[[Mapping[str, Any]], bool] | None:
        return _is_test_domain if self.config.drop_test_email_domains else None

    # --- jobs --------------------------------------------------------------------------------

    def _new_job(
        self,
        endpoint: ep.Endpoint,
        account: str,
        body: Any,
        items: Sequence[Item],
        records: Sequence[dict[str, Any]],
        keys: Sequence[Any],
        rules: tuple[FaultRule, ...],
    ) -> jb.Job:
        """A job for the request's items, failures and cancellation by fault rules decided
        now (the rules in force when it was posted)."""
        fired: list[FaultRule] = []
        pending = [
            jb.PendingItem(item.position, item.pointer, item.resource, record, key)
            for item, record, key in zip(items, records, keys, strict=True)
        ]
        cancel = False
        for rule in rules:
            if rule.kind == "cancel_job":
                if rule.match is None or any(rule.match.matches(field_view(i)) for i in items):
                    cancel = True
                    fired.append(rule)
                continue
            assert rule.match is not None  # guaranteed for fail_in_job rules
            hit = False
            for item, entry in zip(items, pending, strict=True):
                if entry.failure is None and rule.match.matches(field_view(item)):
                    hit = True
                    entry.failure = jb.ItemFailure(
                        rule.code or "invalid",
                        "Invalid input.",
                        rule.detail or "Injected fault: this item fails inside the job on purpose.",
                        field_pointer(item, rule.match.tokens),
                    )
            if hit:
                fired.append(rule)
        if fired:
            self.faults.fired(fired)
        settings = self.job_settings
        duration = settings.duration_for(endpoint.name)
        now = self.clock()
        lists = _get(body, "data", "relationships", "lists", "data")
        return jb.Job(
            id=jb.new_id(),
            endpoint=endpoint.name,
            job_type=endpoint.job_type,
            path=endpoint.path,
            account=account,
            total=len(items),
            created=now,
            started=now + min(settings.queued_seconds, duration),
            due=now + duration,
            items=pending,
            lists=tuple(
                str(x.get("id")) for x in lists or () if isinstance(x, dict) and x.get("id")
            ),
            cancel=cancel,
        )

    def _finish_job(self, job: jb.Job) -> None:
        """Apply a completed job: store its items that do not fail, count and keep the rest."""
        operation = CATALOG_OPERATIONS.get(job.endpoint)
        with self._catalog_lock:
            index: CatalogIndex | None = None
            if operation is not None and self.job_settings.strict_catalog:
                index = CatalogIndex.of(
                    self.state.catalog_items(job.account), self.state.categories(job.account)
                )
            stored: list[jb.PendingItem] = []
            for entry in job.items:
                failure = entry.failure
                if failure is None and index is not None:
                    failure = index.check(job.endpoint, entry.resource, entry.pointer)
                if failure is None:
                    stored.append(entry)
                    continue
                attributes = entry.resource.get("attributes")
                payload = dict(attributes) if isinstance(attributes, dict) else {}
                job.failed.append(
                    jb.FailedItem(jb.new_error_id(), entry.position, failure, payload)
                )
            self.state.commit(
                job.account, job.endpoint, ((e.key, e.record) for e in stored), self._drop()
            )
        job.completed_count = len(stored)
        job.failed_count = len(job.failed)
        if operation is not None:
            touched = (resource_id(e.resource, operation[1]) for e in stored)
            job.touched = [t for t in touched if t is not None]

    # --- catalog categories (synchronous) ----------------------------------------------------

    def _create_resource(
        self,
        endpoint: ep.Endpoint,
        item: Item,
        record: dict[str, Any],
        account: str,
        base: str,
    ) -> Response:
        """Create Catalog Category: 409 if it exists, else stored and answered 201."""
        with self._catalog_lock:
            index = CatalogIndex.of((), self.state.categories(account))
            failure = index.check(endpoint.name, item.resource, item.pointer)
            if failure is None:
                self.state.commit(account, endpoint.name, [(None, record)])
        if failure is not None:
            return _job_failure_response(409, failure)
        category_id = resource_id(item.resource, "create") or ""
        entry = self._category(account, category_id)
        assert entry is not None  # just stored
        return json_response(201, _one(category_resource(entry, base)), JSON_API)

    def _category(self, account: str, category_id: str) -> dict[str, Any] | None:
        for entry in self.state.categories(account):
            if entry["id"] == category_id and entry["exists"]:
                return entry
        return None

    # --- the other routes --------------------------------------------------------------------

    def _handle_route(self, route: ep.Route, ident: str, request: Request) -> Response:
        outcome = _Outcome()
        account: str | None = None
        try:
            account, denied = self._authenticate(request)
            if denied is not None or account is None:
                response = denied or single_error(401, "Missing or invalid private key.")
                outcome.reason = "authentication" if response.status == 401 else "revision"
            else:
                refused, decision, _ = self._gate(route.name, request, account, outcome, True)
                if refused is not None:
                    response = refused
                else:
                    response = self._serve(route, ident, request, account, outcome)
                    if decision is not None:
                        response.headers.update(decision.headers())
        except Exception as exc:
            logger.error(
                "emulator: %s %s failed with %s\n%s",
                request.method,
                route.template,
                type(exc).__name__,
                "".join(traceback.format_tb(exc.__traceback__)),
            )
            response = single_error(500, "The emulator failed to process the request.")
            outcome.reason = "emulator_error"
        self.state.count_request(
            route.name,
            account,
            "dropped" if response.drop else response.status,
            size=len(request.body),
            reason=outcome.reason,
            fault=outcome.fault,
            method=request.method,
            job=outcome.job,
        )
        return response

    def _serve(
        self, route: ep.Route, ident: str, request: Request, account: str, outcome: _Outcome
    ) -> Response:
        base = f"http://{request.headers.get('host', 'localhost')}"
        url = base + request.path.rstrip("/")
        query = {k: v[0] for k, v in request.query.items() if v}
        if route.name == "profile_import_errors":
            job = self._job_of(account, route, ident)
            if job is None:
                return single_error(404, f"No profile import job {ident[:40]!r}.")
            outcome.job = job.id
            errors = [jb.import_error(f) for f in job.failed]
            return _paged(errors, request, url, query, default=20)
        if route.name.endswith("_job"):
            job = self._job_of(account, route, ident)
            if job is None:
                return single_error(404, f"No job {ident[:40]!r}.")
            outcome.job = job.id
            return json_response(200, self.jobs.document(job, base), JSON_API)
        if route.name.endswith("_jobs"):
            found = self.jobs.jobs(account=account, endpoint=route.endpoint)
            resources = [self.jobs.resource(j, base) for j in found]
            sized = route.endpoint == "profile_import"
            return _paged(resources, request, url, query, default=20 if sized else 100, sized=sized)
        if route.name == "list_profiles":
            return _list_profiles(self.state.consent(account), ident, request, url, query)
        if route.name == "category_list":
            entries = [e for e in self.state.categories(account) if e["exists"]]
            resources = [category_resource(e, base) for e in entries]
            return _paged(resources, request, url, query, default=100)
        if route.name == "category_get":
            entry = self._category(account, ident)
            if entry is None:
                return single_error(404, f"No catalog category {ident[:80]!r}.")
            return json_response(200, _one(category_resource(entry, base)), JSON_API)
        if route.name == "category_update":
            return self._update_category(ident, request, account, base, outcome)
        if route.name == "category_delete":
            with self._catalog_lock:
                if self._category(account, ident) is None:
                    return single_error(404, f"No catalog category {ident[:80]!r}.")
                record: dict[str, Any] = {
                    "id": ident,
                    "attributes": {},
                    "relationships": None,
                    "received_at": time.time(),
                    "account": account,
                }
                self.state.commit(account, "category_delete", [(None, record)])
            return empty(204)
        return single_error(404, f"The emulator does not serve {request.path}.")

    def _job_of(self, account: str, route: ep.Route, ident: str) -> jb.Job | None:
        job = self.jobs.get(ident)
        if job is None or job.account != account or job.endpoint != route.endpoint:
            return None
        return job

    def _update_category(
        self, ident: str, request: Request, account: str, base: str, outcome: _Outcome
    ) -> Response:
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            outcome.reason = "validation"
            return single_error(400, "The request body is not valid JSON.", code="parse_error")
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict) or data.get("type") != "catalog-category":
            outcome.reason = "validation"
            return single_error(400, "'data' must be a catalog-category.", pointer="/data")
        if data.get("id") != ident:
            outcome.reason = "validation"
            return single_error(
                409, "The id in the body does not match the id in the path.", pointer="/data/id"
            )
        attributes = data.get("attributes")
        if not isinstance(attributes, dict):
            outcome.reason = "validation"
            return single_error(400, "'attributes' is required.", pointer="/data/attributes")
        extra = sorted(set(attributes) - {"name"})
        if extra:
            outcome.reason = "validation"
            return invalid(
                [
                    (f"/data/attributes/{k}", f"'{k}' is not a valid field for the resource.")
                    for k in extra
                ]
            )
        with self._catalog_lock:
            if self._category(account, ident) is None:
                return single_error(404, f"No catalog category {ident[:80]!r}.")
            record = {
                "id": ident,
                "attributes": dict(attributes),
                "relationships": data.get("relationships"),
                "received_at": time.time(),
                "account": account,
            }
            self.state.commit(account, "category_update", [(None, record)])
        entry = self._category(account, ident)
        assert entry is not None
        return json_response(200, _one(category_resource(entry, base)), JSON_API)

    def _reject_items(self, items: Sequence[Item], rules: tuple[FaultRule, ...]) -> Response | None:
        errors: list[ApiError] = []
        matched: list[FaultRule] = []
        for rule in rules:
            assert rule.match is not None  # guaranteed for reject_items rules
            hit = False
            for item in items:
                if rule.match.matches(field_view(item)):
                    hit = True
                    errors.append(
                        ApiError(
                            400,
                            rule.detail or "Injected fault: this item is rejected on purpose.",
                            "invalid",
                            "Invalid input.",
                            pointer=field_pointer(item, rule.match.tokens),
                        )
                    )
            if hit:
                matched.append(rule)
        if not matched:
            return None
        self.faults.fired(matched)
        return error_response(400, errors)


@dataclass(slots=True)
class _Outcome:
    """What the request log says about one request besides its status."""

    items: int = 0
    reason: str | None = None
    fault: str | None = None
    job: str | None = None
    #: RULES.md id -> errors, for a refused request (see :mod:`.rules.violations`).
    rules: Counter[str] = field(default_factory=Counter)
    headers: dict[str, str] = field(default_factory=dict)


def _get(node: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _one(resource: dict[str, Any]) -> dict[str, Any]:
    return {"data": resource, "links": {"self": resource["links"]["self"]}}


def category_resource(entry: Mapping[str, Any], base: str) -> dict[str, Any]:
    """A final-state category as the spec's ``CatalogCategoryResponseObjectResource``."""
    category_id = str(entry["id"])
    attributes = entry.get("attributes") or {}
    external_id = attributes.get("external_id") or category_id.rpartition(":::")[2]
    updated = entry.get("updated_at")
    self_link = f"{base}/api/catalog-categories/{category_id}"
    return {
        "type": "catalog-category",
        "id": category_id,
        "attributes": {
            "external_id": external_id,
            "name": attributes.get("name"),
            "updated": (
                datetime.fromtimestamp(updated, UTC).isoformat()
                if isinstance(updated, (int, float))
                else None
            ),
        },
        "relationships": {
            "items": {
                "links": {
                    "self": f"{self_link}/relationships/items",
                    "related": f"{self_link}/items",
                }
            }
        },
        "links": {"self": self_link},
    }


def _job_failure_response(status: int, failure: jb.ItemFailure) -> Response:
    return error_response(
        status,
        [ApiError(status, failure.detail, failure.code, failure.title, pointer=failure.pointer)],
    )


def _paged(
    entries: Sequence[Any],
    request: Request,
    url: str,
    query: Mapping[str, str],
    *,
    default: int,
    sized: bool = True,
) -> Response:
    """A collection document of ``entries``: ``page[cursor]`` and (``sized``) ``page[size]``
    (1 to 100) as the spec's collection GETs take them."""
    size = default
    raw = request.param("page[size]")
    if sized and raw is not None:
        if not raw.isdigit() or not 1 <= int(raw) <= 100:
            return single_error(
                400, "page[size] must be an integer from 1 to 100.", parameter="page[size]"
            )
        size = int(raw)
    try:
        offset = jb.decode_cursor(request.param("page[cursor]"))
    except jb.CursorError as exc:
        return single_error(400, str(exc), parameter="page[cursor]")
    chunk, links = jb.page(entries, offset, size, url, query)
    return json_response(200, {"data": list(chunk), "links": links}, JSON_API)


def _list_profiles(
    consent: list[dict[str, Any]],
    list_id: str,
    request: Request,
    url: str,
    query: Mapping[str, str],
) -> Response:
    """Get Profiles for List: the members ``filter`` names, a page of ``page[size]`` (20)."""
    raw = request.param("page[size]")
    if raw is not None and (not raw.isdigit() or not 1 <= int(raw) <= 100):
        return single_error(
            400, "page[size] must be an integer from 1 to 100.", parameter="page[size]"
        )
    try:
        wanted = lists.parse_filter(request.param("filter"))
    except lists.FilterError as exc:
        return single_error(400, str(exc), parameter="filter")
    resources = lists.members(consent, list_id, wanted)
    try:
        body = lists.document(
            resources, url, query, int(raw or 20), request.param("page[cursor]")
        )
    except jb.CursorError as exc:
        return single_error(400, str(exc), parameter="page[cursor]")
    return json_response(200, body, JSON_API)


def _is_test_domain(record: Mapping[str, Any]) -> bool:
    profile = record.get("profile")
    email = profile.get("email") if isinstance(profile, dict) else record.get("email")
    return isinstance(email, str) and email.lower().endswith(_TEST_DOMAINS)


def _job_attributes(body: Any) -> dict[str, Any]:
    """``data.attributes`` of a request body (empty when it has none)."""
    data = body.get("data") if isinstance(body, dict) else None
    attributes = data.get("attributes") if isinstance(data, dict) else None
    return attributes if isinstance(attributes, dict) else {}
