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

from kafka_klaviyo_dev.emulator import endpoints as ep
from kafka_klaviyo_dev.emulator.app import EmulatorApp, Request
from kafka_klaviyo_dev.emulator.faults import FaultRule, FaultSpecError
from kafka_klaviyo_dev.emulator.responses import Response, json_response, single_error

PREFIX = "/__emulator"


def _normalise_endpoint(name: str) -> str | None:
    endpoint = ep.lookup(name)
    return endpoint.name if endpoint is not None else None


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
        rest = request.path[len(PREFIX) :].strip("/")
        head, _, tail = rest.partition("/")
        if not tail:
            route = self._routes.get((request.method, head))
            if route is not None:
                return route(request)
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
