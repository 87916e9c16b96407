"""The control and read-back API under ``/__emulator/``, for tests and the demo.

Plain JSON over HTTP so that a test in another process can drive the emulator::

    GET    /__emulator/health                  liveness and what is being emulated
    GET    /__emulator/config                  accounts, revision, validation, limits (no keys)
    GET    /__emulator/events                  accepted events (?account= &metric= &unique_id=)
    GET    /__emulator/items/<endpoint>        accepted items of any endpoint (?account=)
    GET    /__emulator/consent                 final consent per account, list, channel, person
                                               (?account= &list_id= &channel= &person=)
    GET    /__emulator/catalog-items           final catalog items (?account= &id=)
    GET    /__emulator/profiles                final imported profiles
                                               (?account= &identifier= &value=)
    GET    /__emulator/categories              final catalog categories (?account= &id=)
    GET    /__emulator/jobs                    jobs, oldest first (?account= &endpoint= &status=)
    GET    /__emulator/jobs/<id>               one job (with its failed items)
    POST   /__emulator/jobs/<id>/cancel        cancel one unfinished job (nothing is stored)
    POST   /__emulator/jobs/<id>/complete      make one unfinished job due now
    POST   /__emulator/jobs/cancel             cancel every unfinished job matching the JSON
                                               {"endpoint": ..., "account": ...} (both optional)
    GET    /__emulator/job-settings            how jobs run now
    POST   /__emulator/job-settings            change it: JSON {"duration_seconds": s,
                                               "queued_seconds": s, "strict_catalog": bool,
                                               "endpoint": name} (with "endpoint", the
                                               duration of that endpoint's jobs only; null
                                               drops that override)
    GET    /__emulator/stats                   counters
    GET    /__emulator/requests                recent request summaries (?limit=)
    GET    /__emulator/rule-violations         refusals by endpoint and RULES.md rule id
    POST   /__emulator/reset                   forget data, counters, faults, rate windows
    GET    /__emulator/faults                  active fault rules
    POST   /__emulator/faults                  add a rule (JSON, see emulator.faults)
    DELETE /__emulator/faults                  clear every rule (releases held requests)
    DELETE /__emulator/faults/<id>             remove one rule

The three final-state read-backs replay accepted items in acceptance order, the way Klaviyo
would end up (see :mod:`kafka_klaviyo_dev.emulator.final_state`).

Answers are ``{"data": ...}``; failures use Klaviyo's error document shape.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from consumer.errors import KafkaKlaviyoError
from kafka_klaviyo_dev.emulator import endpoints as ep
from kafka_klaviyo_dev.emulator.app import EmulatorApp, Request
from kafka_klaviyo_dev.emulator.config import JobSettings
from kafka_klaviyo_dev.emulator.faults import JOB_KINDS, FaultRule, FaultSpecError
from kafka_klaviyo_dev.emulator.responses import Response, json_response, single_error

PREFIX = "/__emulator"


def _normalise_endpoint(name: str) -> str | None:
    return ep.operation_name(name)


_SETTINGS_FIELDS = {"duration_seconds", "queued_seconds", "strict_catalog", "endpoint"}


class ControlApi:
    """Routes ``/__emulator/...`` requests to the app's state and fault book."""

    def __init__(self, app: EmulatorApp) -> None:
        self.app = app
        self._routes: dict[tuple[str, str], Callable[[Request], Response]] = {
            ("GET", "health"): self._health,
            ("GET", "config"): self._config,
            ("GET", "events"): self._events,
            ("GET", "consent"): self._consent,
            ("GET", "catalog-items"): self._catalog_items,
            ("GET", "profiles"): self._profiles,
            ("GET", "categories"): self._categories,
            ("GET", "jobs"): self._jobs,
            ("GET", "job-settings"): self._job_settings,
            ("POST", "job-settings"): self._set_job_settings,
            ("GET", "stats"): self._stats,
            ("GET", "requests"): self._requests,
            ("GET", "rule-violations"): lambda _: json_response(
                200, {"data": self.app.violations.snapshot()}
            ),
            ("POST", "reset"): self._reset,
            ("GET", "faults"): self._faults,
            ("POST", "faults"): self._add_fault,
            ("DELETE", "faults"): self._clear_faults,
        }

    def handle(self, request: Request) -> Response:
        """Answer one control request."""
        # Read-backs see the jobs that are due by now as finished.
        self.app.advance_jobs()
        rest = request.path[len(PREFIX) :].strip("/")
        head, _, tail = rest.partition("/")
        if not tail:
            route = self._routes.get((request.method, head))
            if route is not None:
                return route(request)
        elif head == "jobs":
            return self._job_action(request, tail)
        elif head == "items" and request.method == "GET":
            return self._items(request, tail)
        elif head == "faults" and request.method == "DELETE":
            return self._remove_fault(tail)
        return single_error(404, f"No control route {request.method} {request.path}.")

    # --- read-back ---------------------------------------------------------------------------

    def _summary(self) -> dict[str, Any]:
        config = self.app.config
        return {
            "status": "ok",
            "accounts": list(config.accounts),
            "revision": config.revision,
            "revisions": sorted(config.revisions),
            "schema_validation": self.app.validators is not None,
            "rate_limits": config.rate_limits.enabled,
        }

    def _health(self, request: Request) -> Response:
        return json_response(200, {"data": self._summary()})

    def _config(self, request: Request) -> Response:
        summary = self._summary()
        summary["endpoints"] = [
            {
                "name": e.name,
                "path": e.path,
                "max_items": e.max_items,
                "max_bytes": e.max_bytes,
                "burst": self.app.limits_for(e.name).burst,
                "steady": self.app.limits_for(e.name).steady,
            }
            for e in ep.ENDPOINTS
        ]
        summary["routes"] = [
            {
                "name": r.name,
                "method": r.method,
                "path": r.template,
                "burst": self.app.limits_for(r.name).burst,
                "steady": self.app.limits_for(r.name).steady,
            }
            for r in ep.ROUTES
        ]
        summary["jobs"] = self._settings_json()
        return json_response(200, {"data": summary})

    def _account_param(self, request: Request) -> tuple[str | None, Response | None]:
        account = request.param("account")
        if account is not None and account not in self.app.config.accounts:
            return None, single_error(404, f"Unknown account {account!r}.", parameter="account")
        return account, None

    def _events(self, request: Request) -> Response:
        account, error = self._account_param(request)
        if error is not None:
            return error
        metric = request.param("metric")
        unique_id = request.param("unique_id")

        def where(record: Mapping[str, Any]) -> bool:
            if metric is not None and record.get("metric") != metric:
                return False
            return unique_id is None or record.get("unique_id") == unique_id

        records = self.app.state.records("events", account, where)
        return json_response(200, {"data": records})

    def _items(self, request: Request, name: str) -> Response:
        endpoint = ep.lookup(name)
        if endpoint is None:
            return single_error(404, f"Unknown endpoint {name!r}.")
        account, error = self._account_param(request)
        if error is not None:
            return error
        return json_response(200, {"data": self.app.state.records(endpoint.name, account)})

    def _filtered(
        self,
        request: Request,
        view: Callable[[str | None], list[dict[str, Any]]],
        filters: Mapping[str, bool],
    ) -> Response:
        """A final-state view for ``?account=``, narrowed by ``filters``: query parameter (the
        entry field of the same name) -> whether it compares case-insensitively (people)."""
        account, error = self._account_param(request)
        if error is not None:
            return error
        wanted: dict[str, tuple[str, bool]] = {}
        for name, fold in filters.items():
            value = request.param(name)
            if value is not None:
                wanted[name] = (value.lower() if fold else value, fold)

        def keep(entry: Mapping[str, Any]) -> bool:
            for name, (value, fold) in wanted.items():
                have = str(entry.get(name))
                if (have.lower() if fold else have) != value:
                    return False
            return True

        return json_response(200, {"data": [e for e in view(account) if keep(e)]})

    def _consent(self, request: Request) -> Response:
        filters = {"list_id": False, "channel": True, "person": True}
        return self._filtered(request, self.app.state.consent, filters)

    def _catalog_items(self, request: Request) -> Response:
        return self._filtered(request, self.app.state.catalog_items, {"id": False})

    def _categories(self, request: Request) -> Response:
        return self._filtered(request, self.app.state.categories, {"id": False})

    def _profiles(self, request: Request) -> Response:
        filters = {"identifier": False, "value": True}
        return self._filtered(request, self.app.state.profiles, filters)

    def _stats(self, request: Request) -> Response:
        return json_response(200, {"data": self.app.state.stats()})

    def _requests(self, request: Request) -> Response:
        raw = request.param("limit")
        try:
            limit = int(raw) if raw is not None else None
        except ValueError:
            return single_error(400, "'limit' must be an integer.", parameter="limit")
        return json_response(200, {"data": self.app.state.request_log(limit)})

    def _reset(self, request: Request) -> Response:
        self.app.reset()
        return json_response(200, {"data": {"reset": True}})

    # --- jobs --------------------------------------------------------------------------------

    def _jobs(self, request: Request) -> Response:
        account, error = self._account_param(request)
        if error is not None:
            return error
        endpoint: str | None = None
        raw = request.param("endpoint")
        if raw is not None:
            endpoint = _normalise_endpoint(raw)
            if endpoint is None:
                return single_error(404, f"Unknown endpoint {raw!r}.", parameter="endpoint")
        found = self.app.jobs.jobs(
            account=account, endpoint=endpoint, status=request.param("status")
        )
        return json_response(200, {"data": [self.app.jobs.summary(j) for j in found]})

    def _job_action(self, request: Request, tail: str) -> Response:
        job_id, _, action = tail.partition("/")
        if request.method == "POST" and job_id == "cancel" and not action:
            return self._cancel_matching(request)
        job = self.app.jobs.get(job_id)
        if job is None:
            return single_error(404, f"No job {job_id[:40]!r}.")
        if request.method == "GET" and not action:
            return json_response(200, {"data": self.app.jobs.summary(job)})
        if request.method == "POST" and action == "cancel":
            if not self.app.jobs.cancel([job]):
                return single_error(409, f"Job {job.id} has finished already ({job.status}).")
            return json_response(200, {"data": self.app.jobs.summary(job)})
        if request.method == "POST" and action == "complete":
            if not self.app.jobs.hurry(job):
                return single_error(409, f"Job {job.id} has finished already ({job.status}).")
            self.app.advance_jobs()
            return json_response(200, {"data": self.app.jobs.summary(job)})
        return single_error(404, f"No control route {request.method} {request.path}.")

    def _cancel_matching(self, request: Request) -> Response:
        try:
            doc = orjson.loads(request.body or b"{}")
        except orjson.JSONDecodeError:
            return single_error(400, "The body is not valid JSON.")
        if not isinstance(doc, dict) or set(doc) - {"endpoint", "account"}:
            return single_error(400, "The body may only have 'endpoint' and 'account'.")
        endpoint = doc.get("endpoint")
        name = _normalise_endpoint(str(endpoint)) if endpoint is not None else None
        if endpoint is not None and name is None:
            return single_error(400, f"Unknown endpoint {endpoint!r}.")
        jobs = self.app.jobs.jobs(account=doc.get("account"), endpoint=name)
        return json_response(200, {"data": {"cancelled": self.app.jobs.cancel(jobs)}})

    def _settings_json(self) -> dict[str, Any]:
        settings = self.app.job_settings
        return {
            "duration_seconds": settings.duration_seconds,
            "queued_seconds": settings.queued_seconds,
            "durations": dict(settings.durations),
            "strict_catalog": settings.strict_catalog,
        }

    def _job_settings(self, request: Request) -> Response:
        return json_response(200, {"data": self._settings_json()})

    def _set_job_settings(self, request: Request) -> Response:
        try:
            doc = orjson.loads(request.body or b"{}")
        except orjson.JSONDecodeError:
            return single_error(400, "The job settings are not valid JSON.")
        if not isinstance(doc, dict):
            return single_error(400, "The job settings must be a JSON object.")
        unknown = sorted(set(doc) - _SETTINGS_FIELDS)
        if unknown:
            return single_error(400, f"unknown job setting(s): {', '.join(unknown)}")
        current = self.app.job_settings
        duration = current.duration_seconds
        durations = dict(current.durations)
        try:
            if doc.get("endpoint") is not None:
                name = _normalise_endpoint(str(doc["endpoint"]))
                if name is None or not ep.BY_NAME[name].returns_job:
                    return single_error(400, f"{doc['endpoint']!r} is not a job endpoint.")
                if doc.get("duration_seconds") is None:
                    durations.pop(name, None)
                else:
                    durations[name] = float(doc["duration_seconds"])
            elif "duration_seconds" in doc:
                duration = float(doc["duration_seconds"])
            queued = float(doc.get("queued_seconds", current.queued_seconds))
            strict = doc.get("strict_catalog", current.strict_catalog)
            if not isinstance(strict, bool):
                return single_error(400, "strict_catalog must be true or false.")
            self.app.job_settings = JobSettings(
                duration_seconds=duration,
                queued_seconds=queued,
                durations=durations,
                strict_catalog=strict,
            )
        except (TypeError, ValueError, KafkaKlaviyoError) as exc:
            return single_error(400, f"bad job setting: {exc}")
        return json_response(200, {"data": self._settings_json()})

    # --- faults ------------------------------------------------------------------------------

    def _faults(self, request: Request) -> Response:
        now = self.app.clock()
        return json_response(200, {"data": [r.to_json(now) for r in self.app.faults.rules()]})

    def _add_fault(self, request: Request) -> Response:
        try:
            doc = orjson.loads(request.body or b"{}")
        except orjson.JSONDecodeError:
            return single_error(400, "The fault description is not valid JSON.")
        if not isinstance(doc, dict):
            return single_error(400, "The fault description must be a JSON object.")
        try:
            rule = FaultRule.from_json(doc, _normalise_endpoint)
        except FaultSpecError as exc:
            return single_error(400, str(exc))
        if rule.account is not None and rule.account not in self.app.config.accounts:
            return single_error(400, f"Unknown account {rule.account!r}.")
        if rule.endpoint is not None:
            endpoint = ep.BY_NAME.get(rule.endpoint)
            if rule.kind in JOB_KINDS and (endpoint is None or not endpoint.returns_job):
                return single_error(400, f"a {rule.kind} fault needs a job endpoint")
            if endpoint is None and rule.kind not in (
                "status",
                "latency",
                "timeout",
                "rate_limit_storm",
            ):
                return single_error(400, f"a {rule.kind} fault cannot target {rule.endpoint}")
        self.app.faults.add(rule)
        return json_response(201, {"data": rule.to_json(self.app.clock())})

    def _clear_faults(self, request: Request) -> Response:
        cleared = len(self.app.faults.rules())
        self.app.faults.clear()
        return json_response(200, {"data": {"cleared": cleared}})

    def _remove_fault(self, rule_id: str) -> Response:
        if not self.app.faults.remove(rule_id):
            return single_error(404, f"No fault {rule_id!r}.")
        return json_response(200, {"data": {"removed": rule_id}})
