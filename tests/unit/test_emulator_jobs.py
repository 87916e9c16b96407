"""The emulator's asynchronous jobs: duration and phases, failures inside jobs, import errors,
strict catalog rules and categories, cancellation, the GET routes' rate limits and the client.

The app is driven in process (its own pipeline and control API, no server, no spec) with a
manual clock: jobs move on when the test steps the clock, never by sleeping.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import click
import httpx
import orjson
import pytest

from kafka_klaviyo_dev.emulator import endpoints as ep
from kafka_klaviyo_dev.emulator.app import EmulatorApp, Request
from kafka_klaviyo_dev.emulator.cli import parse_job_durations, parse_rate_limits
from kafka_klaviyo_dev.emulator.client import EmulatorClient, EmulatorControlError
from kafka_klaviyo_dev.emulator.config import EmulatorConfig, JobSettings, RateLimitSettings
from kafka_klaviyo_dev.emulator.control import ControlApi
from kafka_klaviyo_dev.emulator.faults import FaultRule, FaultSpecError, ItemMatch
from kafka_klaviyo_dev.emulator.jobs import decode_cursor, encode_cursor
from kafka_klaviyo_dev.emulator.responses import Response
from kafka_klaviyo_dev.emulator.validation import load_spec

KEYS = {"pk_acme": "acme", "pk_beta": "beta"}
HOST = "klaviyo.test"
ITEM = "$custom:::$default:::42"
TOYS = "$custom:::$default:::TOYS"


class Clock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        # The start of a one-second and a one-minute rate-limit window.
        self.now = 600.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_app(clock: Clock, *, rate_limits: bool = False, **jobs: Any) -> EmulatorApp:
    config = EmulatorConfig(
        api_keys=KEYS,
        rate_limits=RateLimitSettings(enabled=rate_limits),
        jobs=JobSettings(**jobs),
    )
    return EmulatorApp(config, clock=clock)


@pytest.fixture
def app(clock: Clock) -> EmulatorApp:
    return make_app(clock)


def call(
    app: EmulatorApp,
    method: str,
    path: str,
    body: Any = None,
    *,
    account: str = "acme",
    query: dict[str, str] | None = None,
) -> Response:
    key = next(k for k, name in KEYS.items() if name == account)
    headers = {
        "authorization": f"Klaviyo-API-Key {key}",
        "revision": app.config.revision,
        "content-type": "application/vnd.api+json",
        "host": HOST,
    }
    raw = orjson.dumps(body) if body is not None else b""
    params = {k: [v] for k, v in (query or {}).items()}
    return app.handle_api(Request(method, path, headers, raw, params, arrived=app.clock()))


def doc(response: Response) -> Any:
    return orjson.loads(response.body)


def post_job(app: EmulatorApp, path: str, body: Any, account: str = "acme") -> dict[str, Any]:
    response = call(app, "POST", path, body, account=account)
    assert response.status == 202, response.body
    document: dict[str, Any] = doc(response)
    return document


def get_job(app: EmulatorApp, path: str, job_id: str, account: str = "acme") -> dict[str, Any]:
    response = call(app, "GET", f"{path}/{job_id}", account=account)
    assert response.status == 200, response.body
    attributes: dict[str, Any] = doc(response)["data"]["attributes"]
    return attributes


def control(app: EmulatorApp, method: str, route: str, body: Any = None, **query: str) -> Any:
    raw = orjson.dumps(body) if body is not None else b""
    request = Request(
        method, f"/__emulator/{route}", {}, raw, query={k: [v] for k, v in query.items()}
    )
    response = ControlApi(app).handle(request)
    assert response.status in (200, 201), response.body
    return orjson.loads(response.body)["data"]


def profiles(*attributes: dict[str, Any], lists: tuple[str, ...] = ()) -> tuple[str, Any]:
    data: dict[str, Any] = {
        "type": "profile-bulk-import-job",
        "attributes": {
            "profiles": {"data": [{"type": "profile", "attributes": a} for a in attributes]}
        },
    }
    if lists:
        data["relationships"] = {"lists": {"data": [{"type": "list", "id": i} for i in lists]}}
    return "/api/profile-bulk-import-jobs", {"data": data}


def catalog(operation: str, *items: dict[str, Any]) -> tuple[str, Any]:
    body = {
        "data": {
            "type": f"catalog-item-bulk-{operation}-job",
            "attributes": {"items": {"data": [{"type": "catalog-item", **i} for i in items]}},
        }
    }
    return f"/api/catalog-item-bulk-{operation}-jobs", body


def categories_job(operation: str, *categories: dict[str, Any]) -> tuple[str, Any]:
    body = {
        "data": {
            "type": f"catalog-category-bulk-{operation}-job",
            "attributes": {
                "categories": {"data": [{"type": "catalog-category", **c} for c in categories]}
            },
        }
    }
    return f"/api/catalog-category-bulk-{operation}-jobs", body


def created(external_id: str = "42", *categories: str, **attributes: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "attributes": {
            "external_id": external_id,
            "integration_type": "$custom",
            "catalog_type": "$default",
            "title": "Mug",
            "description": "A mug",
            "url": f"https://shop.example/{external_id}",
            **attributes,
        }
    }
    if categories:
        item["relationships"] = {
            "categories": {"data": [{"type": "catalog-category", "id": c} for c in categories]}
        }
    return item


def category(external_id: str = "TOYS", name: str = "Toys") -> dict[str, Any]:
    return {"attributes": {"external_id": external_id, "name": name}}


def iso(text: str) -> datetime:
    return datetime.fromisoformat(text)


# --- the default: duration 0 ----------------------------------------------------------------


def test_with_the_default_duration_a_job_is_stored_at_the_post_and_reads_complete(
    app: EmulatorApp,
) -> None:
    path, body = profiles({"email": "ann@shop.io", "first_name": "Ann"}, lists=("L1",))
    document = post_job(app, path, body)
    data = document["data"]
    assert data["type"] == "profile-bulk-import-job"
    assert data["links"]["self"] == f"http://{HOST}{path}/{data['id']}"
    assert document["links"]["self"] == data["links"]["self"]
    # The 202 shows the job as created, as Klaviyo's does.
    assert data["attributes"]["status"] == "queued"
    assert data["attributes"]["total_count"] == 1
    assert data["attributes"]["completed_at"] is None
    assert [p["attributes"]["first_name"] for p in control(app, "GET", "profiles")] == ["Ann"]

    job = get_job(app, path, data["id"])
    assert job["status"] == "complete"
    assert (job["completed_count"], job["failed_count"], job["total_count"]) == (1, 0, 1)
    assert job["completed_at"] == job["created_at"] == job["started_at"]
    assert iso(job["expires_at"]) > iso(job["completed_at"])
    full = doc(call(app, "GET", f"{path}/{data['id']}"))["data"]
    assert full["relationships"]["lists"]["data"] == [{"type": "list", "id": "L1"}]
    assert full["relationships"]["import-errors"]["links"]["related"].endswith("/import-errors")


def test_without_strict_rules_the_last_accepted_catalog_operation_still_wins(
    clock: Clock,
) -> None:
    app = make_app(clock, strict_catalog=False)
    post_job(app, *catalog("create", created()))
    post_job(app, *catalog("create", created(title="Cup")))  # would fail when strict
    post_job(app, *catalog("update", {"id": "$custom:::$default:::7", "attributes": {}}))
    items = {i["id"]: i for i in control(app, "GET", "catalog-items")}
    assert items[ITEM]["attributes"]["title"] == "Cup"
    assert items["$custom:::$default:::7"]["exists"] is True


# --- duration and phases --------------------------------------------------------------------


def test_a_job_is_queued_then_processing_then_complete_and_stored_only_then(
    clock: Clock,
) -> None:
    app = make_app(clock, duration_seconds=10, queued_seconds=2)
    path, body = catalog("create", created("1"), created("2"))
    job_id = post_job(app, path, body)["data"]["id"]
    attributes = get_job(app, path, job_id)
    assert attributes["status"] == "queued"
    assert (attributes["completed_count"], attributes["failed_count"]) == (0, 0)
    assert attributes["errors"] == [] and attributes["completed_at"] is None

    clock.now += 2
    assert get_job(app, path, job_id)["status"] == "processing"
    clock.now += 7.9
    assert get_job(app, path, job_id)["status"] == "processing"
    assert control(app, "GET", "catalog-items") == []  # nothing applied before completion

    clock.now += 0.1
    attributes = get_job(app, path, job_id)
    assert attributes["status"] == "complete"
    assert attributes["completed_count"] == 2
    elapsed = iso(attributes["completed_at"]) - iso(attributes["created_at"])
    assert elapsed.total_seconds() == pytest.approx(10)
    assert len(control(app, "GET", "catalog-items")) == 2
    related = doc(call(app, "GET", f"{path}/{job_id}"))["data"]["relationships"]["items"]
    assert [r["id"] for r in related["data"]] == [
        "$custom:::$default:::1",
        "$custom:::$default:::2",
    ]


def test_job_settings_change_at_run_time_per_endpoint_and_reset_restores_them(
    clock: Clock, app: EmulatorApp
) -> None:
    settings = control(app, "POST", "job-settings", {"duration_seconds": 5})
    assert settings["duration_seconds"] == 5
    control(app, "POST", "job-settings", {"endpoint": "catalog_update", "duration_seconds": 1})
    create = post_job(app, *catalog("create", created()))["data"]["id"]
    update = post_job(app, *catalog("update", {"id": ITEM, "attributes": {"price": 2}}))
    clock.now += 1
    assert control(app, "GET", f"jobs/{update['data']['id']}")["status"] == "complete"
    assert control(app, "GET", f"jobs/{create}")["status"] == "processing"
    app.reset()
    assert control(app, "GET", "job-settings") == {
        "duration_seconds": 0.0,
        "queued_seconds": 0.0,
        "durations": {},
        "strict_catalog": True,
    }
    assert control(app, "GET", "jobs") == []


def test_jobs_due_together_are_applied_in_the_order_they_were_due(clock: Clock) -> None:
    app = make_app(clock, duration_seconds=5)
    post_job(app, *catalog("create", created(title="First")))
    clock.now += 1
    post_job(app, *catalog("update", {"id": ITEM, "attributes": {"title": "Second"}}))
    clock.now += 10  # both due; the create was due first
    [item] = control(app, "GET", "catalog-items")
    assert item["attributes"]["title"] == "Second"
    assert [s["operation"] for s in item["history"]] == ["create", "update"]


# --- failures inside jobs and import errors -------------------------------------------------


def test_import_errors_list_the_failed_profiles_page_by_page_with_their_payloads(
    app: EmulatorApp,
) -> None:
    rule = app.faults.add(
        FaultRule(
            kind="fail_in_job",
            endpoint="profile_import",
            match=ItemMatch("email", regex="^bad"),
            detail="Invalid email address.",
            code="invalid_email",
        )
    )
    people = [
        {"email": f"{'bad' if i % 2 else 'ok'}{i}@shop.io", "first_name": f"P{i}"}
        for i in range(10)
    ]
    path, body = profiles(*people)
    job_id = post_job(app, path, body)["data"]["id"]
    job = get_job(app, path, job_id)
    assert (job["status"], job["completed_count"], job["failed_count"]) == ("complete", 5, 5)
    assert "errors" not in job  # profile import jobs list failures as import errors
    stored = {p["attributes"]["email"] for p in control(app, "GET", "profiles")}
    assert stored == {f"ok{i}@shop.io" for i in range(0, 10, 2)}
    assert rule.fired == 1

    seen: list[dict[str, Any]] = []
    query = {"page[size]": "2"}
    pages = 0
    while True:
        response = call(app, "GET", f"{path}/{job_id}/import-errors", query=query)
        assert response.status == 200, response.body
        page = doc(response)
        pages += 1
        assert len(page["data"]) <= 2
        seen += page["data"]
        following = page["links"].get("next")
        if following is None:
            break
        query = {k: v[0] for k, v in parse_qs(urlsplit(following).query).items()}
    assert pages == 3
    assert [e["type"] for e in seen] == ["import-error"] * 5
    assert len({e["id"] for e in seen}) == 5
    first = seen[0]["attributes"]
    assert (first["code"], first["title"], first["detail"]) == (
        "invalid_email",
        "Invalid input.",
        "Invalid email address.",
    )
    assert [e["attributes"]["source"]["pointer"] for e in seen] == [
        f"/data/attributes/profiles/data/{i}/attributes/email" for i in (1, 3, 5, 7, 9)
    ]
    assert [e["attributes"]["original_payload"] for e in seen] == [
        people[i] for i in (1, 3, 5, 7, 9)
    ]


def test_import_errors_refuse_bad_paging_and_other_accounts_jobs(app: EmulatorApp) -> None:
    path, body = profiles({"email": "a@shop.io"})
    job_id = post_job(app, path, body)["data"]["id"]
    errors = f"{path}/{job_id}/import-errors"
    empty_page = doc(call(app, "GET", errors))
    assert empty_page["data"] == [] and "next" not in empty_page["links"]
    assert call(app, "GET", errors, query={"page[size]": "0"}).status == 400
    assert call(app, "GET", errors, query={"page[size]": "101"}).status == 400
    assert call(app, "GET", errors, query={"page[cursor]": "nope!"}).status == 400
    assert call(app, "GET", errors, account="beta").status == 404
    assert call(app, "GET", f"{path}/{job_id}", account="beta").status == 404
    assert call(app, "GET", f"{path}/no-such-job").status == 404
    # A job id read through another job type's path is not found either.
    assert call(app, "GET", f"/api/catalog-item-bulk-create-jobs/{job_id}").status == 404


def test_cursors_round_trip() -> None:
    assert decode_cursor(encode_cursor(40)) == 40
    assert decode_cursor(None) == 0


def test_fail_in_job_on_a_catalog_job_puts_the_error_in_the_job(app: EmulatorApp) -> None:
    app.faults.add(
        FaultRule(kind="fail_in_job", match=ItemMatch("external_id", equals="2"), requests=1)
    )
    path, body = catalog("create", created("1"), created("2"))
    job_id = post_job(app, path, body)["data"]["id"]
    job = get_job(app, path, job_id)
    assert (job["completed_count"], job["failed_count"]) == (1, 1)
    [error] = job["errors"]
    assert set(error) == {"id", "code", "title", "detail", "source"}
    assert error["code"] == "invalid"
    assert error["source"] == {"pointer": "/data/attributes/items/data/1/attributes/external_id"}
    assert [i["id"] for i in control(app, "GET", "catalog-items")] == ["$custom:::$default:::1"]
    # requests=1: used up, the next job fails nothing.
    again = post_job(app, *catalog("create", created("3"), created("2")))["data"]["id"]
    assert get_job(app, path, again)["failed_count"] == 0


# --- strict catalog rules -------------------------------------------------------------------


@pytest.fixture
def strict(clock: Clock) -> EmulatorApp:
    return make_app(clock, strict_catalog=True)


def test_strict_create_of_an_existing_item_fails_that_item(strict: EmulatorApp) -> None:
    post_job(strict, *catalog("create", created("42", title="Mug")))
    path, body = catalog("create", created("41"), created("42", title="Cup"), created("41"))
    job_id = post_job(strict, path, body)["data"]["id"]
    job = get_job(strict, path, job_id)
    assert (job["completed_count"], job["failed_count"]) == (1, 2)
    pointers = [e["source"]["pointer"] for e in job["errors"]]
    # The second 41 fails too: the first one of this job created it.
    assert pointers == [
        "/data/attributes/items/data/1/attributes/external_id",
        "/data/attributes/items/data/2/attributes/external_id",
    ]
    assert {e["code"] for e in job["errors"]} == {"conflict"}
    assert "already exists" in job["errors"][0]["detail"]
    items = {i["id"]: i for i in control(strict, "GET", "catalog-items")}
    assert items[ITEM]["attributes"]["title"] == "Mug"  # not replaced


def test_strict_update_or_delete_of_a_missing_item_fails_that_item(strict: EmulatorApp) -> None:
    post_job(strict, *catalog("create", created("1")))
    for operation, extra in (("update", {"attributes": {"price": 3}}), ("delete", {})):
        path, body = catalog(
            operation,
            {"id": "$custom:::$default:::missing", **extra},
            {"id": "$custom:::$default:::1", **extra},
        )
        job = get_job(strict, path, post_job(strict, path, body)["data"]["id"])
        assert (job["completed_count"], job["failed_count"]) == (1, 1), operation
        [error] = job["errors"]
        assert error["code"] == "not_found"
        assert error["source"]["pointer"] == "/data/attributes/items/data/0/id"
    [item] = control(strict, "GET", "catalog-items")
    assert item["exists"] is False and item["attributes"].get("price") == 3


def test_strict_item_naming_a_missing_category_fails_until_the_category_exists(
    strict: EmulatorApp,
) -> None:
    path, body = catalog("create", created("1", TOYS))
    job = get_job(strict, path, post_job(strict, path, body)["data"]["id"])
    [error] = job["errors"]
    assert error["source"]["pointer"] == (
        "/data/attributes/items/data/0/relationships/categories/data/0/id"
    )
    assert control(strict, "GET", "catalog-items") == []

    response = call(
        strict,
        "POST",
        "/api/catalog-categories",
        {"data": {"type": "catalog-category", **category()}},
    )
    assert response.status == 201, response.body
    assert doc(response)["data"]["id"] == TOYS
    job = get_job(strict, path, post_job(strict, path, body)["data"]["id"])
    assert job["failed_count"] == 0
    [item] = control(strict, "GET", "catalog-items")
    assert item["exists"] is True


def test_category_jobs_create_update_and_delete_with_the_same_rules(strict: EmulatorApp) -> None:
    path, body = categories_job("create", category("TOYS"), category("TOYS"))
    job = get_job(strict, path, post_job(strict, path, body)["data"]["id"])
    assert (job["completed_count"], job["failed_count"]) == (1, 1)
    assert job["errors"][0]["source"]["pointer"] == (
        "/data/attributes/categories/data/1/attributes/external_id"
    )
    path, body = categories_job(
        "update",
        {"id": TOYS, "attributes": {"name": "Toys and games"}},
        {"id": "$custom:::$default:::NONE", "attributes": {"name": "x"}},
    )
    job = get_job(strict, path, post_job(strict, path, body)["data"]["id"])
    assert job["errors"][0]["source"]["pointer"] == "/data/attributes/categories/data/1/id"
    [toys] = control(strict, "GET", "categories")
    assert toys["attributes"]["name"] == "Toys and games"
    path, body = categories_job("delete", {"id": TOYS})
    assert get_job(strict, path, post_job(strict, path, body)["data"]["id"])["failed_count"] == 0
    [toys] = control(strict, "GET", "categories", id=TOYS)
    assert toys["exists"] is False


def test_an_update_posted_before_its_create_completed_fails_when_strict(clock: Clock) -> None:
    app = make_app(clock, strict_catalog=True, duration_seconds=5, durations={"catalog_update": 0})
    post_job(app, *catalog("create", created()))
    path, body = catalog("update", {"id": ITEM, "attributes": {"title": "Cup"}})
    job = get_job(app, path, post_job(app, path, body)["data"]["id"])
    assert job["failed_count"] == 1  # the create is not applied yet
    clock.now += 5
    [item] = control(app, "GET", "catalog-items")
    assert item["attributes"]["title"] == "Mug"


# --- catalog categories (synchronous) -------------------------------------------------------


def test_catalog_categories_create_read_update_delete(app: EmulatorApp) -> None:
    body = {"data": {"type": "catalog-category", **category()}}
    created_doc = doc(call(app, "POST", "/api/catalog-categories", body))["data"]
    assert created_doc["attributes"] == {
        "external_id": "TOYS",
        "name": "Toys",
        "updated": created_doc["attributes"]["updated"],
    }
    assert created_doc["links"]["self"] == f"http://{HOST}/api/catalog-categories/{TOYS}"
    duplicate = call(app, "POST", "/api/catalog-categories", body)
    assert duplicate.status == 409
    assert doc(duplicate)["errors"][0]["source"]["pointer"] == "/data/attributes/external_id"

    listed = doc(call(app, "GET", "/api/catalog-categories"))
    assert [c["id"] for c in listed["data"]] == [TOYS]
    assert call(app, "GET", "/api/catalog-categories", account="beta").status == 200
    assert doc(call(app, "GET", "/api/catalog-categories", account="beta"))["data"] == []

    patch = {"data": {"type": "catalog-category", "id": TOYS, "attributes": {"name": "Games"}}}
    updated = call(app, "PATCH", f"/api/catalog-categories/{TOYS}", patch)
    assert updated.status == 200 and doc(updated)["data"]["attributes"]["name"] == "Games"
    wrong = {"data": {"type": "catalog-category", "id": "other", "attributes": {}}}
    assert call(app, "PATCH", f"/api/catalog-categories/{TOYS}", wrong).status == 409
    assert call(app, "DELETE", f"/api/catalog-categories/{TOYS}").status == 204
    assert call(app, "GET", f"/api/catalog-categories/{TOYS}").status == 404
    assert call(app, "DELETE", f"/api/catalog-categories/{TOYS}").status == 404
    [toys] = control(app, "GET", "categories")
    assert [s["operation"] for s in toys["history"]] == ["create", "update", "delete"]
    assert call(app, "PUT", "/api/catalog-categories").status == 405


# --- cancelling -----------------------------------------------------------------------------


def test_a_cancel_job_fault_cancels_the_next_job_which_stores_nothing(clock: Clock) -> None:
    app = make_app(clock, duration_seconds=3)
    app.faults.add(FaultRule(kind="cancel_job", endpoint="catalog_create", requests=1))
    path, body = catalog("create", created("1"))
    cancelled = post_job(app, path, body)["data"]["id"]
    kept = post_job(app, *catalog("create", created("2")))["data"]["id"]
    assert get_job(app, path, cancelled)["status"] == "processing"  # cancelled at its end
    clock.now += 3
    attributes = get_job(app, path, cancelled)
    assert attributes["status"] == "cancelled"
    assert (attributes["completed_count"], attributes["failed_count"]) == (0, 0)
    assert get_job(app, path, kept)["status"] == "complete"
    assert [i["id"] for i in control(app, "GET", "catalog-items")] == ["$custom:::$default:::2"]
    assert app.state.stats()["faults_fired"] == {"cancel_job": 1}


def test_cancel_job_with_a_match_cancels_only_jobs_with_a_matching_item(app: EmulatorApp) -> None:
    app.faults.add(FaultRule(kind="cancel_job", match=ItemMatch("external_id", equals="9")))
    path, body = catalog("create", created("1"))
    assert get_job(app, path, post_job(app, path, body)["data"]["id"])["status"] == "complete"
    path, body = catalog("create", created("2"), created("9"))
    assert get_job(app, path, post_job(app, path, body)["data"]["id"])["status"] == "cancelled"


def test_control_cancels_and_completes_unfinished_jobs(clock: Clock) -> None:
    app = make_app(clock, duration_seconds=60)
    path, body = profiles({"email": "a@shop.io"})
    first = post_job(app, path, body)["data"]["id"]
    second = post_job(app, path, body)["data"]["id"]
    other = post_job(app, path, body, account="beta")["data"]["id"]
    assert control(app, "POST", f"jobs/{first}/cancel")["status"] == "cancelled"
    attributes = get_job(app, path, first)
    assert attributes["status"] == "cancelled" and attributes["started_at"] is not None
    request = Request("POST", f"/__emulator/jobs/{first}/cancel", {})
    assert ControlApi(app).handle(request).status == 409  # finished already
    assert control(app, "POST", f"jobs/{second}/complete")["status"] == "complete"
    assert control(app, "POST", "jobs/cancel", {"account": "beta"}) == {"cancelled": [other]}
    assert [p["account"] for p in control(app, "GET", "profiles")] == ["acme"]
    listed = control(app, "GET", "jobs", status="cancelled")
    assert sorted(j["id"] for j in listed) == sorted([first, other])


# --- the GET routes: rate limits, faults, request log ---------------------------------------


def test_get_routes_have_their_own_rate_limits_with_retry_after(clock: Clock) -> None:
    app = make_app(clock, rate_limits=True)
    path, body = profiles({"email": "a@shop.io"})
    job_id = post_job(app, path, body)["data"]["id"]
    answers = [call(app, "GET", f"{path}/{job_id}") for _ in range(11)]
    assert [a.status for a in answers] == [200] * 10 + [429]  # burst 10/s
    assert answers[0].headers["RateLimit-Limit"] == "150"
    assert answers[-1].headers["Retry-After"] == "1"
    assert doc(answers[-1])["errors"][0]["code"] == "throttled"
    # The POST has its own window, import errors share the GET's limits but not its window.
    assert call(app, "POST", path, body).status == 202
    assert call(app, "GET", f"{path}/{job_id}/import-errors").status == 200
    assert app.state.stats()["rate_limited"] == {"profile_import_job": 1}
    clock.now += 1
    assert call(app, "GET", f"{path}/{job_id}").status == 200
    # Categories and category jobs are read at 350/s.
    assert app.limits_for("category_list").burst == 350
    assert app.limits_for("catalog_delete_job").burst == 350
    assert app.limits_for("catalog_create_job").burst == 75


def test_route_limits_follow_the_spec(klaviyo_spec_path: Path) -> None:
    spec = load_spec(klaviyo_spec_path)
    for route in ep.ROUTES:
        template = route.template
        if template not in spec["paths"]:  # the spec names the path parameter differently
            template = template.replace("{job_id}", "{id}")
        operation = spec["paths"][template][route.method.lower()]
        limits = operation["x-klaviyo-ratelimit"]
        assert limits == {"burst": f"{route.limits.burst}/s", "steady": f"{route.limits.steady}/m"}
    for endpoint in ep.ENDPOINTS:
        limits = spec["paths"][endpoint.path]["post"]["x-klaviyo-ratelimit"]
        assert limits["burst"] == f"{endpoint.limits.burst}/s", endpoint.name


def test_get_routes_are_logged_and_hit_only_by_faults_naming_them(app: EmulatorApp) -> None:
    path, body = profiles({"email": "a@shop.io"})
    job_id = post_job(app, path, body)["data"]["id"]
    app.faults.add(FaultRule(kind="status", status=503))  # no endpoint: the POSTs only
    assert call(app, "GET", f"{path}/{job_id}").status == 200
    app.faults.clear()
    app.faults.add(FaultRule(kind="status", status=503, endpoint="profile_import_job", requests=1))
    assert call(app, "GET", f"{path}/{job_id}").status == 503
    assert call(app, "GET", f"{path}/{job_id}").status == 200
    log = control(app, "GET", "requests")
    assert [(e["method"], e["endpoint"], e["status"]) for e in log] == [
        ("POST", "profile_import", 202),
        ("GET", "profile_import_job", 200),
        ("GET", "profile_import_job", 503),
        ("GET", "profile_import_job", 200),
    ]
    assert {e["job"] for e in log} == {job_id, None}
    assert log[0]["job"] == job_id and log[3]["job"] == job_id
    unauthenticated = Request("GET", f"{path}/{job_id}", {"revision": app.config.revision})
    assert app.handle_api(unauthenticated).status == 401


def test_job_collections_list_the_accounts_jobs(app: EmulatorApp) -> None:
    path, body = catalog("delete", {"id": ITEM})
    ids = [post_job(app, path, body)["data"]["id"] for _ in range(3)]
    post_job(app, path, body, account="beta")
    listed = doc(call(app, "GET", path))
    assert [j["id"] for j in listed["data"]] == ids
    assert {j["type"] for j in listed["data"]} == {"catalog-item-bulk-delete-job"}


# --- fault rules, CLI -----------------------------------------------------------------------


def test_job_fault_rules_need_what_they_act_on(app: EmulatorApp) -> None:
    with pytest.raises(FaultSpecError, match="needs 'match'"):
        FaultRule(kind="fail_in_job")
    add = ControlApi(app).handle
    events = {"kind": "fail_in_job", "endpoint": "events", "match": {"field": "x", "equals": 1}}
    assert add(Request("POST", "/__emulator/faults", {}, orjson.dumps(events))).status == 400
    route = {
        "kind": "reject_items",
        "endpoint": "category_list",
        "match": {"field": "x", "regex": "."},
    }
    assert add(Request("POST", "/__emulator/faults", {}, orjson.dumps(route))).status == 400
    bad = Request("POST", "/__emulator/job-settings", {}, orjson.dumps({"duration": 1}))
    assert add(bad).status == 400
    negative = Request(
        "POST", "/__emulator/job-settings", {}, orjson.dumps({"duration_seconds": -1})
    )
    assert add(negative).status == 400


def test_cli_parses_job_durations_and_route_rate_limits() -> None:
    assert parse_job_durations(["catalog_create=2", "/api/profile-bulk-import-jobs=0.5"]) == {
        "catalog_create": 2.0,
        "profile_import": 0.5,
    }
    with pytest.raises(click.BadParameter):
        parse_job_durations(["events=1"])
    assert parse_rate_limits(["profile_import_job=1/5"])["profile_import_job"].burst == 1


# --- the client -----------------------------------------------------------------------------


@pytest.fixture
def client(app: EmulatorApp) -> Iterator[EmulatorClient]:
    control_api = ControlApi(app)

    def handle(request: httpx.Request) -> httpx.Response:
        url = urlsplit(str(request.url))
        answer = control_api.handle(
            Request(request.method, url.path, {}, request.read(), parse_qs(url.query))
        )
        return httpx.Response(answer.status, headers=answer.headers, content=answer.body)

    with EmulatorClient(f"http://{HOST}", transport=httpx.MockTransport(handle)) as emu:
        yield emu


def test_the_client_drives_jobs(clock: Clock, app: EmulatorApp, client: EmulatorClient) -> None:
    assert client.set_job_duration(4, queued_seconds=1)["duration_seconds"] == 4
    assert client.set_strict_catalog()["strict_catalog"] is True
    client.fail_in_job("external_id", equals="2", endpoint="catalog_create", code="bad", detail="x")
    client.cancel_new_jobs(endpoint="catalog_update", requests=1)
    path, body = catalog("create", created("1"), created("2"))
    job_id = post_job(app, path, body)["data"]["id"]
    update = post_job(app, *catalog("update", {"id": "$custom:::$default:::1", "attributes": {}}))
    [job] = client.jobs(endpoint="catalog_create")
    assert (job.id, job.status, job.done, job.due_in_seconds) == (job_id, "queued", False, 4)
    clock.now += 4
    job = client.job(job_id)
    assert job.status == "complete" and job.failed_positions == (1,)
    assert job.errors[0]["code"] == "bad" and job.errors[0]["original_payload"]["title"] == "Mug"
    assert client.job(update["data"]["id"]).status == "cancelled"
    assert [i.id for i in client.catalog_items()] == ["$custom:::$default:::1"]

    client.set_job_duration(None, endpoint="catalog_create")  # back to the 4 s default
    client.set_job_duration(30, endpoint="category_bulk_create")
    pending = post_job(app, *categories_job("create", category()))["data"]["id"]
    assert client.job(pending).status == "queued"
    assert client.complete_job(pending).status == "complete"
    toys = client.category(TOYS)
    assert toys is not None and toys.exists
    later = post_job(app, *categories_job("create", category("GAMES")))["data"]["id"]
    assert client.cancel_jobs(endpoint="category_bulk_create") == [later]
    with pytest.raises(EmulatorControlError):
        client.cancel_job(later)
    assert client.job_settings()["durations"] == {"category_bulk_create": 30.0}
