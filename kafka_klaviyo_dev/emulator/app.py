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
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from consumer.errors import ConfigError
from kafka_klaviyo_dev.emulator import endpoints as ep
from kafka_klaviyo_dev.emulator.config import REVISION_FORMAT, EmulatorConfig, WindowLimits
from kafka_klaviyo_dev.emulator.faults import FaultBook, FaultRule
from kafka_klaviyo_dev.emulator.items import Item, field_pointer, field_view
from kafka_klaviyo_dev.emulator.limits import (
    CheckContext,
    body_strings_fit,
    count_issue,
    run_checks,
)
from kafka_klaviyo_dev.emulator.ratelimit import Decision, FixedWindowLimiter
from kafka_klaviyo_dev.emulator.responses import (
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
        unknown = [k for k in config.rate_limits.overrides if ep.lookup(k) is None]
        if unknown:
            raise ConfigError(f"emulator rate limit overrides name unknown endpoints: {unknown}")

    def limits_for(self, endpoint: str) -> WindowLimits:
        """The rate limits in force for one endpoint."""
        return self._limits[endpoint]

    def reset(self) -> None:
        """Forget accepted data, counters, faults and rate-limit windows."""
        self.faults.clear()
        self.limiter.reset()
        self.state.reset()
        self.violations.reset()

    # --- the bulk endpoints -----------------------------------------------------------------

    def handle_api(self, request: Request) -> Response:
        """Answer one request to ``/api/...``."""
        endpoint = ep.BY_PATH.get(request.path.rstrip("/"))
        if endpoint is None:
            return single_error(404, f"The emulator does not serve {request.path}.")
        if request.method != "POST":
            refused = single_error(405, f'Method "{request.method}" not allowed.')
            refused.headers["Allow"] = "POST"
            self.state.count_request(endpoint.name, None, 405)
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
        self.state.arrival(
            account, endpoint.name, request.arrived, self.config.retry_after_grace_seconds
        )
        selection = self.faults.select(endpoint.name, account)
        if selection.delay_seconds > 0:
            outcome.fault = "latency"
            self.faults.wait(selection.delay_seconds, self.stopping)
        if selection.terminal is not None:
            return self._fault_response(selection.terminal, endpoint, account, outcome)

        decision: Decision | None = None
        if self.config.rate_limits.enabled:
            decision = self.limiter.acquire((account, endpoint.name), self._limits[endpoint.name])
            if not decision.allowed:
                outcome.reason = "rate_limit"
                self.state.owe_retry_after(account, endpoint.name, decision.retry_after)
                return single_error(
                    429,
                    f"Request was throttled. Expected available in {decision.retry_after} "
                    f"second{'s' if decision.retry_after != 1 else ''}.",
                    headers={"Retry-After": str(decision.retry_after)},
                )
        headers = decision.headers() if decision is not None else {}
        response = self._ingest(endpoint, request, account, outcome, selection.item_rules)
        response.headers.update(headers)
        response.headers.update(outcome.headers)
        return response

    def _fault_response(
        self, rule: FaultRule, endpoint: ep.Endpoint, account: str, outcome: _Outcome
    ) -> Response:
        outcome.fault = rule.kind
        if rule.kind == "timeout":
            self.faults.hold(rule.hold_seconds, self.stopping)
            return Response(0, drop=True)
        if rule.kind == "rate_limit_storm":
            seconds = rule.retry_after if rule.retry_after is not None else 1
            self.state.owe_retry_after(account, endpoint.name, seconds)
            return single_error(
                429,
                rule.detail or f"Request was throttled. Expected available in {seconds} seconds.",
                headers={"Retry-After": str(seconds)},
            )
        headers: dict[str, str] = {}
        if rule.retry_after is not None:
            headers["Retry-After"] = str(rule.retry_after)
            self.state.owe_retry_after(account, endpoint.name, rule.retry_after)
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
        item_rules: tuple[FaultRule, ...],
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
        if item_rules:
            rejected = self._reject_items(extracted.items, item_rules)
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
        drop = _is_test_domain if self.config.drop_test_email_domains else None
        # zip(): no (key, record) pair per item to allocate and keep.
        self.state.commit(account, endpoint.name, zip(keys, records, strict=True), drop)
        if endpoint.returns_job:
            base = f"http://{request.headers.get('host', 'localhost')}"
            document = ep.job_document(endpoint, uuid.uuid4().hex[:20], len(extracted.items), base)
            return json_response(202, document, "application/vnd.api+json")
        return empty(202)

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
    #: RULES.md id -> errors, for a refused request (see :mod:`.rules.violations`).
    rules: Counter[str] = field(default_factory=Counter)
    headers: dict[str, str] = field(default_factory=dict)


def _is_test_domain(record: Mapping[str, Any]) -> bool:
    profile = record.get("profile")
    email = profile.get("email") if isinstance(profile, dict) else record.get("email")
    return isinstance(email, str) and email.lower().endswith(_TEST_DOMAINS)


def _job_attributes(body: Any) -> dict[str, Any]:
    """``data.attributes`` of a request body (empty when it has none)."""
    data = body.get("data") if isinstance(body, dict) else None
    attributes = data.get("attributes") if isinstance(data, dict) else None
    return attributes if isinstance(attributes, dict) else {}
