"""The Klaviyo emulator over real HTTP: what a client of Klaviyo sees, and what tests read back."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from kafka_klaviyo_dev.emulator import EmulatorClient, RateLimitSettings, WindowLimits
from tests.fixtures_emulator import REPO, ManualClock, RunningEmulator
from tests.support import wait_for

pytestmark = pytest.mark.integration

EVENTS = "/api/event-bulk-create-jobs"
GROUPS = "/data/attributes/events-bulk-create/data"


def event(unique_id: str, metric: str = "Placed Order", **attrs: Any) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "properties": {"ItemNames": ["A"]},
        "time": "2025-01-01T00:00:00+00:00",
        "value": 29.98,
        "value_currency": "USD",
        "unique_id": unique_id,
        "metric": {"data": {"type": "metric", "attributes": {"name": metric}}},
    }
    attributes.update(attrs)
    return {"type": "event", "attributes": attributes}


def group(profile: dict[str, Any], *events: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "event-bulk-create",
        "attributes": {
            "profile": {"data": {"type": "profile", "attributes": profile}},
            "events": {"data": list(events)},
        },
    }


def events_body(*groups: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {
            "data": {
                "type": "event-bulk-create-job",
                "attributes": {"events-bulk-create": {"data": list(groups)}},
            }
        }
    )


def one_event_body(email: str = "john.smith@gmail.com", unique_id: str = "1234") -> bytes:
    return events_body(group({"email": email, "first_name": "John"}, event(unique_id)))


def many_events_body(count: int, prefix: str = "o") -> bytes:
    return events_body(
        *(group({"email": f"c{i}@shop.io"}, event(f"{prefix}-{i}")) for i in range(count))
    )


@pytest.fixture
def http(emulator: RunningEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.base_url, timeout=10) as client:
        yield client


def post(
    http: httpx.Client, emulator: RunningEmulator, body: bytes, account: str | None = None
) -> httpx.Response:
    return http.post(EVENTS, content=body, headers=emulator.headers(account))


def pointers(response: httpx.Response) -> list[str]:
    return [e["source"]["pointer"] for e in response.json()["errors"]]


def assert_klaviyo_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    [error] = response.json()["errors"]
    assert error["status"] == status
    assert error["code"] == code
    assert {"id", "title", "detail", "source"} <= set(error)
    return dict(error)


# --- accepted data ---------------------------------------------------------------------------


def test_a_valid_body_is_accepted_and_read_back(
    emulator: RunningEmulator, http: httpx.Client
) -> None:
    response = post(http, emulator, one_event_body())
    assert response.status_code == 202
    assert response.content == b""
    [accepted] = emulator.client.events()
    assert accepted.account == "acme"
    assert accepted.email == "john.smith@gmail.com"
    assert accepted.profile["first_name"] == "John"
    assert (accepted.metric, accepted.unique_id) == ("Placed Order", "1234")
    assert (accepted.time, accepted.value, accepted.value_currency) == (
        "2025-01-01T00:00:00+00:00",
        29.98,
        "USD",
    )
    assert accepted.properties == {"ItemNames": ["A"]}
    assert accepted.backfill is False
    stats = emulator.client.stats()
    assert stats.accepted == {"events": 1}
    assert stats.responses("events", 202) == 1


def test_each_account_has_its_own_data_and_dedup(
    emulator: RunningEmulator, http: httpx.Client
) -> None:
    assert post(http, emulator, one_event_body(), account="beta").status_code == 202
    assert post(http, emulator, one_event_body(), account="acme").status_code == 202
    assert [e.account for e in emulator.client.events(account="beta")] == ["beta"]
    assert [e.account for e in emulator.client.events(account="acme")] == ["acme"]
    assert emulator.client.stats().total_duplicates_dropped == 0  # not a duplicate across accounts


def test_read_back_filters_by_metric_and_unique_id(
    emulator: RunningEmulator, http: httpx.Client
) -> None:
    body = events_body(
        group({"email": "a@shop.io"}, event("o-1"), event("o-1", "Ordered Product"), event("o-2"))
    )
    assert post(http, emulator, body).status_code == 202
    assert len(emulator.client.events(metric="Placed Order")) == 2
    assert [e.metric for e in emulator.client.events(unique_id="o-1")] == [
        "Placed Order",
        "Ordered Product",
    ]


def test_a_repeated_event_across_requests_is_dropped_silently(
    emulator: RunningEmulator, http: httpx.Client
) -> None:
    assert post(http, emulator, one_event_body("Ann@Shop.io")).status_code == 202
    assert post(http, emulator, one_event_body("ann@shop.io")).status_code == 202
    assert len(emulator.client.events()) == 1
    stats = emulator.client.stats()
    assert stats.duplicates_dropped == {"events": 1}
    assert stats.accounts["acme"]["duplicates_dropped"] == {"events": 1}


# --- validation ------------------------------------------------------------------------------


@pytest.mark.emulator_violations_expected
def test_a_schema_violation_is_a_400_pointing_at_the_item(
    emulator: RunningEmulator, http: httpx.Client
) -> None:
    body = events_body(
        group({"email": "a@shop.io"}, event("o-1")),
        group({"email": "b@shop.io"}, event("o-2"), event("o-3", value="12.50")),
    )
    response = post(http, emulator, body)
    error = assert_klaviyo_error(response, 400, "invalid")
    assert error["source"]["pointer"] == f"{GROUPS}/1/attributes/events/data/1/attributes/value"
    assert emulator.client.events() == []  # Klaviyo refuses the whole request
    assert emulator.client.stats().validation_failures == {"events": 1}


@pytest.mark.emulator_violations_expected
def test_1001_events_are_refused(emulator: RunningEmulator, http: httpx.Client) -> None:
    assert post(http, emulator, many_events_body(1000)).status_code == 202
    response = post(http, emulator, many_events_body(1001, prefix="x"))
    error = assert_klaviyo_error(response, 400, "invalid")
    assert error["source"]["pointer"] == GROUPS
    assert len(emulator.client.events()) == 1000


@pytest.mark.emulator_violations_expected
def test_a_duplicate_inside_one_request_fails_the_request(
    emulator: RunningEmulator, http: httpx.Client
) -> None:
    body = events_body(
        group({"email": "a@shop.io"}, event("o-1"), event("o-2")),
        group({"email": "a@shop.io"}, event("o-2")),
    )
    response = post(http, emulator, body)
    assert_klaviyo_error(response, 400, "invalid")
    assert pointers(response) == [f"{GROUPS}/1/attributes/events/data/0/attributes/unique_id"]
    assert emulator.client.events() == []


@pytest.mark.emulator_violations_expected
def test_ingestion_limits_point_at_each_bad_item(
    emulator: RunningEmulator, http: httpx.Client
) -> None:
    body = events_body(
        group({"phone_number": "555-0100"}, event("o-1")),
        group({"email": "b@shop.io"}, event("o-2", time="1999-06-01T00:00:00Z")),
        group({"email": "c@shop.io"}, event("o-3", properties={"blob": "x" * 100_001})),
        group({"email": "d@shop.io"}, event("o-4")),
    )
    response = post(http, emulator, body)
    assert response.status_code == 400
    assert pointers(response) == [
        f"{GROUPS}/0/attributes/profile/data/attributes/phone_number",
        f"{GROUPS}/1/attributes/events/data/0/attributes/time",
        f"{GROUPS}/2/attributes/events/data/0/attributes/properties/blob",
    ]


@pytest.mark.emulator_violations_expected
def test_long_strings_are_found_however_they_are_written(
    emulator: RunningEmulator, http: httpx.Client
) -> None:
    # The emulator clears most bodies from their raw bytes; a long string, escaped or not,
    # must still get its issue, once for a profile that several events share.
    body = events_body(
        group({"email": "a@shop.io", "first_name": "x" * 100_001}, event("o-1"), event("o-2")),
        group({"email": "b@shop.io"}, event("o-3", properties={"q": '"' * 100_000})),
        group({"email": "c@shop.io"}, event("o-4", properties={"q": "\\" * 100_001})),
    )
    response = post(http, emulator, body)
    assert response.status_code == 400
    assert pointers(response) == [
        f"{GROUPS}/0/attributes/profile/data/attributes/first_name",
        f"{GROUPS}/0/attributes/profile/data",  # and the profile is over 95 KB (RULES.md D5)
        f"{GROUPS}/2/attributes/events/data/0/attributes/properties/q",
    ]


@pytest.mark.emulator_violations_expected
def test_bodies_over_5_mb_are_refused(emulator: RunningEmulator, http: httpx.Client) -> None:
    big = events_body(
        *(
            group({"email": f"c{i}@shop.io"}, event(f"o-{i}", properties={"pad": "x" * 90_000}))
            for i in range(60)
        )
    )
    assert len(big) > 5_000_000
    assert_klaviyo_error(post(http, emulator, big), 413, "request_too_large")


@pytest.mark.emulator_violations_expected
def test_malformed_json_and_wrong_media_type(emulator: RunningEmulator, http: httpx.Client) -> None:
    assert_klaviyo_error(post(http, emulator, b"{nope"), 400, "parse_error")
    response = http.post(
        EVENTS,
        content=one_event_body(),
        headers={**emulator.headers(), "Content-Type": "text/plain"},
    )
    assert_klaviyo_error(response, 415, "unsupported_media_type")


def test_unknown_paths_and_methods(emulator: RunningEmulator, http: httpx.Client) -> None:
    assert_klaviyo_error(http.post("/api/nope", headers=emulator.headers()), 404, "not_found")
    response = http.get(EVENTS, headers=emulator.headers())
    assert_klaviyo_error(response, 405, "method_not_allowed")
    assert response.headers["Allow"] == "POST"


# --- authentication and revision ---------------------------------------------------------------


def test_missing_or_unknown_api_key_is_401(emulator: RunningEmulator, http: httpx.Client) -> None:
    headers = emulator.headers()
    del headers["Authorization"]
    assert_klaviyo_error(
        http.post(EVENTS, content=one_event_body(), headers=headers), 401, "not_authenticated"
    )
    headers["Authorization"] = "Klaviyo-API-Key pk_not_a_key"
    error = assert_klaviyo_error(
        http.post(EVENTS, content=one_event_body(), headers=headers),
        401,
        "authentication_failed",
    )
    assert "pk_not_a_key" not in error["detail"]
    headers["Authorization"] = f"Bearer {emulator.api_key}"  # right key, wrong scheme
    assert http.post(EVENTS, content=one_event_body(), headers=headers).status_code == 401
    assert emulator.client.events() == []


@pytest.mark.parametrize("revision", [None, "2099-01-15", "july"])
def test_missing_or_unknown_revision_is_400(
    emulator: RunningEmulator, http: httpx.Client, revision: str | None
) -> None:
    headers = emulator.headers()
    if revision is None:
        del headers["revision"]
    else:
        headers["revision"] = revision
    error = assert_klaviyo_error(
        http.post(EVENTS, content=one_event_body(), headers=headers), 400, "invalid"
    )
    assert error["source"] == {"parameter": "revision"}


# --- rate limits -----------------------------------------------------------------------------


def test_rate_limit_429_retry_after_and_violations(
    emulator_factory: Callable[..., RunningEmulator],
) -> None:
    # On the test's clock: no window ends mid-test, and "later" is a step, not a sleep.
    clock = ManualClock()
    emu = emulator_factory(
        clock=clock,
        rate_limits=RateLimitSettings(overrides={"events": WindowLimits(burst=10, steady=3)}),
    )
    with httpx.Client(base_url=emu.base_url) as http:
        ok = post(http, emu, one_event_body(unique_id="1"))
        assert ok.status_code == 202
        assert ok.headers["RateLimit-Limit"] == "3"
        assert ok.headers["RateLimit-Remaining"] == "2"
        assert 1 <= int(ok.headers["RateLimit-Reset"]) <= 60
        # another account has its own budget
        for i in range(3):
            assert post(http, emu, one_event_body(unique_id=f"b{i}"), "beta").status_code == 202
        statuses = [
            post(http, emu, one_event_body(unique_id=f"x{i}")).status_code for i in range(2)
        ]
        assert statuses == [202, 202]  # the steady window (3 a minute) is now used up
        throttled = post(http, emu, one_event_body(unique_id="x3"))
        error = assert_klaviyo_error(throttled, 429, "throttled")
        assert "RateLimit-Remaining" not in throttled.headers
        retry_after = int(throttled.headers["Retry-After"])
        assert 1 <= retry_after <= 60
        assert f"{retry_after} second" in error["detail"]
        assert emu.client.stats().retry_after_violations == 0
        # Past the in-flight grace (0.25 s), long before the Retry-After: it ignores it.
        clock.advance(0.5)
        post(http, emu, one_event_body(unique_id="rude"))
        stats = emu.client.stats()
        assert stats.retry_after_violations == 1
        assert stats.retry_after_violation_log[0]["account"] == "acme"
        assert stats.rate_limited == {"events": 1} or stats.rate_limited == {"events": 2}


def test_waiting_out_retry_after_is_not_a_violation(
    emulator_factory: Callable[..., RunningEmulator],
) -> None:
    clock = ManualClock()
    emu = emulator_factory(
        clock=clock,
        rate_limits=RateLimitSettings(overrides={"events": WindowLimits(burst=1, steady=100)}),
    )
    with httpx.Client(base_url=emu.base_url) as http:
        statuses = []
        for i in range(3):
            response = post(http, emu, one_event_body(unique_id=str(i)))
            while response.status_code == 429:
                clock.advance(float(response.headers["Retry-After"]))  # waits it out
                response = post(http, emu, one_event_body(unique_id=str(i)))
            statuses.append(response.status_code)
        assert statuses == [202, 202, 202]
        stats = emu.client.stats()
        assert stats.retry_after_violations == 0
        # One burst window a second: the 2nd and 3rd request each met a full one first.
        assert stats.rate_limited["events"] == 2


# --- faults ----------------------------------------------------------------------------------


def test_status_fault_for_n_requests(emulator: RunningEmulator, http: httpx.Client) -> None:
    emulator.client.fail_with_status(503, requests=2, retry_after=0)
    first, second, third = (
        post(http, emulator, one_event_body(unique_id=str(i))) for i in range(3)
    )
    assert_klaviyo_error(first, 503, "service_unavailable")
    assert second.status_code == 503
    assert third.status_code == 202
    assert first.headers["Retry-After"] == "0"
    assert [e.unique_id for e in emulator.client.events()] == ["2"]
    assert emulator.client.stats().faults_fired == {"status": 2}


def test_status_fault_for_n_seconds_on_one_endpoint(
    emulator_factory: Callable[..., RunningEmulator],
) -> None:
    clock = ManualClock()
    emulator = emulator_factory(clock=clock, rate_limits=RateLimitSettings(enabled=False))
    http = httpx.Client(base_url=emulator.base_url, timeout=10)
    emulator.client.fail_with_status(500, seconds=0.5, endpoint="events")
    assert_klaviyo_error(post(http, emulator, one_event_body()), 500, "error")
    other = http.post(
        "/api/catalog-item-bulk-delete-jobs",
        content=orjson.dumps(
            {
                "data": {
                    "type": "catalog-item-bulk-delete-job",
                    "attributes": {
                        "items": {
                            "data": [{"type": "catalog-item", "id": "$custom:::$default:::x"}]
                        }
                    },
                }
            }
        ),
        headers=emulator.headers(),
    )
    assert other.status_code == 202  # another endpoint is unaffected
    clock.advance(0.6)  # the fault has expired
    assert post(http, emulator, one_event_body()).status_code == 202
    http.close()


def test_fault_for_one_account_only(emulator: RunningEmulator, http: httpx.Client) -> None:
    emulator.client.fail_with_status(503, account="beta")
    assert post(http, emulator, one_event_body(), "beta").status_code == 503
    assert post(http, emulator, one_event_body(), "acme").status_code == 202


def test_latency_fault(emulator: RunningEmulator, http: httpx.Client) -> None:
    emulator.client.add_latency(0.4, requests=1)
    started = time.monotonic()
    assert post(http, emulator, one_event_body()).status_code == 202
    assert time.monotonic() - started >= 0.4
    assert post(http, emulator, one_event_body(unique_id="2")).status_code == 202
    # Only the first was delayed (said by the emulator, not by a stopwatch on a busy box).
    assert [r["fault"] for r in emulator.client.requests()] == ["latency", None]
    assert emulator.client.stats().faults_fired == {"latency": 1}


def test_timeout_fault_holds_then_drops_the_connection(
    emulator: RunningEmulator, http: httpx.Client
) -> None:
    emulator.client.hold_requests(30.0, requests=1)
    with pytest.raises(httpx.ReadTimeout):
        http.post(EVENTS, content=one_event_body(), headers=emulator.headers(), timeout=0.5)
    emulator.client.clear_faults()  # releases the held request at once
    emulator.client.hold_requests(0.3, requests=1)
    started = time.monotonic()
    with pytest.raises(httpx.RemoteProtocolError):  # held 0.3 s, then hung up without answer
        http.post(EVENTS, content=one_event_body(), headers=emulator.headers(), timeout=5)
    assert time.monotonic() - started >= 0.3
    assert post(http, emulator, one_event_body()).status_code == 202
    # The first request, released by clear_faults, is counted by its own handler thread.
    wait_for(
        lambda: emulator.client.stats().responses("events", "dropped") == 2,
        30,
        "both held requests counted as dropped",
    )


@pytest.fixture
def clocked(
    emulator_factory: Callable[..., RunningEmulator],
) -> Iterator[tuple[RunningEmulator, ManualClock, httpx.Client]]:
    """An emulator on the test's clock (rate limits off), and an HTTP client of it."""
    clock = ManualClock()
    emu = emulator_factory(clock=clock, rate_limits=RateLimitSettings(enabled=False))
    with httpx.Client(base_url=emu.base_url, timeout=10) as http:
        yield emu, clock, http


def test_rate_limit_storm(clocked: tuple[RunningEmulator, ManualClock, httpx.Client]) -> None:
    emulator, clock, http = clocked
    emulator.client.rate_limit_storm(retry_after=1, seconds=1.0)
    response = post(http, emulator, one_event_body())
    assert_klaviyo_error(response, 429, "throttled")
    assert response.headers["Retry-After"] == "1"
    clock.advance(1.05)  # the storm is over and the Retry-After waited out
    assert post(http, emulator, one_event_body()).status_code == 202
    assert emulator.client.stats().retry_after_violations == 0


def test_ignoring_a_storm_retry_after_is_counted(
    clocked: tuple[RunningEmulator, ManualClock, httpx.Client],
) -> None:
    emulator, clock, http = clocked
    emulator.client.rate_limit_storm(retry_after=5, requests=1)
    assert post(http, emulator, one_event_body()).status_code == 429
    # At once: indistinguishable from a request already in flight, so not counted yet.
    assert post(http, emulator, one_event_body("x@shop.io")).status_code == 202
    assert emulator.client.stats().retry_after_violations == 0
    clock.advance(0.4)  # past the in-flight grace (0.25 s), long before the 5 s are up
    assert post(http, emulator, one_event_body()).status_code == 202  # storm over, but early
    assert emulator.client.stats().retry_after_violations == 1


def test_reject_items_points_at_each_match_so_the_rest_can_be_resent(
    emulator: RunningEmulator, http: httpx.Client
) -> None:
    emulator.client.reject_items("properties.poison", equals=True)
    emulator.client.reject_items("unique_id", regex="^bad-")
    groups = [
        group({"email": "a@shop.io"}, event("o-1"), event("o-2", properties={"poison": True})),
        group({"email": "b@shop.io"}, event("bad-3"), event("o-4")),
    ]
    response = post(http, emulator, events_body(*groups))
    assert response.status_code == 400
    assert sorted(pointers(response)) == [
        f"{GROUPS}/0/attributes/events/data/1/attributes/properties/poison",
        f"{GROUPS}/1/attributes/events/data/0/attributes/unique_id",
    ]
    clean = events_body(
        group({"email": "a@shop.io"}, event("o-1")), group({"email": "b@shop.io"}, event("o-4"))
    )
    assert post(http, emulator, clean).status_code == 202
    assert sorted(e.unique_id or "" for e in emulator.client.events()) == ["o-1", "o-4"]
    assert {f["kind"]: f["fired"] for f in emulator.client.faults()} == {"reject_items": 1}


def test_clear_faults_and_fault_listing(emulator: RunningEmulator, http: httpx.Client) -> None:
    fault_id = emulator.client.fail_with_status(503)
    assert [f["id"] for f in emulator.client.faults()] == [fault_id]
    emulator.client.remove_fault(fault_id)
    emulator.client.fail_with_status(503)
    emulator.client.clear_faults()
    assert emulator.client.faults() == []
    assert post(http, emulator, one_event_body()).status_code == 202


def test_bad_fault_descriptions_are_refused(emulator: RunningEmulator) -> None:
    from kafka_klaviyo_dev.emulator.client import EmulatorControlError

    with pytest.raises(EmulatorControlError, match="unknown endpoint"):
        emulator.client.fail_with_status(503, endpoint="/api/nope")
    with pytest.raises(EmulatorControlError, match="Unknown account"):
        emulator.client.fail_with_status(503, account="nobody")


# --- the other endpoints ---------------------------------------------------------------------


def test_profile_import_returns_a_job_and_records_profiles(
    emulator: RunningEmulator, http: httpx.Client
) -> None:
    body = {
        "data": {
            "type": "profile-bulk-import-job",
            "attributes": {
                "profiles": {
                    "data": [
                        {
                            "type": "profile",
                            "attributes": {"email": "a@shop.io", "first_name": "A"},
                        },
                        {"type": "profile", "attributes": {"phone_number": "+14155552671"}},
                    ]
                }
            },
        }
    }
    response = http.post(
        "/api/profile-bulk-import-jobs", content=orjson.dumps(body), headers=emulator.headers()
    )
    assert response.status_code == 202
    job = response.json()["data"]
    assert job["type"] == "profile-bulk-import-job"
    assert job["attributes"]["total_count"] == 2
    records = emulator.client.items("profile_import")
    assert [r["attributes"].get("email") for r in records] == ["a@shop.io", None]


@pytest.mark.emulator_violations_expected
def test_subscribe_and_catalog_limits(emulator: RunningEmulator, http: httpx.Client) -> None:
    subscribe = {
        "data": {
            "type": "profile-subscription-bulk-create-job",
            "attributes": {
                "profiles": {
                    "data": [
                        {
                            "type": "profile",
                            "attributes": {
                                "email": "a@shop.io",
                                "subscriptions": {
                                    "email": {"marketing": {"consent": "SUBSCRIBED"}}
                                },
                            },
                        }
                    ]
                }
            },
            "relationships": {"list": {"data": {"type": "list", "id": "L1"}}},
        }
    }
    response = http.post(
        "/api/profile-subscription-bulk-create-jobs",
        content=orjson.dumps(subscribe),
        headers=emulator.headers(),
    )
    assert response.status_code == 202, response.text
    assert emulator.client.items("/api/profile-subscription-bulk-create-jobs")[0]["list_id"] == "L1"
    items = [{"type": "catalog-item", "id": f"$custom:::$default:::{i}"} for i in range(101)]
    delete = {
        "data": {"type": "catalog-item-bulk-delete-job", "attributes": {"items": {"data": items}}}
    }
    response = http.post(
        "/api/catalog-item-bulk-delete-jobs",
        content=orjson.dumps(delete),
        headers=emulator.headers(),
    )
    error = assert_klaviyo_error(response, 400, "invalid")
    assert error["source"]["pointer"] == "/data/attributes/items/data"


def test_final_state_read_back_over_http(emulator: RunningEmulator, http: httpx.Client) -> None:
    def job(path: str, kind: str, collection: str, items: list[Any], **data: Any) -> None:
        body = {"data": {"type": kind, "attributes": {collection: {"data": items}}, **data}}
        response = http.post(path, content=orjson.dumps(body), headers=emulator.headers())
        assert response.status_code == 202, response.text

    in_list = {"relationships": {"list": {"data": {"type": "list", "id": "L1"}}}}
    for kind, consent in (("create", "SUBSCRIBED"), ("delete", "UNSUBSCRIBED")):
        profile = {
            "type": "profile",
            "attributes": {
                "email": "a@shop.io",
                "subscriptions": {"email": {"marketing": {"consent": consent}}},
            },
        }
        job(
            f"/api/profile-subscription-bulk-{kind}-jobs",
            f"profile-subscription-bulk-{kind}-job",
            "profiles",
            [profile],
            **in_list,
        )
    item = {
        "type": "catalog-item",
        "attributes": {
            "external_id": "42",
            "integration_type": "$custom",
            "catalog_type": "$default",
            "title": "Mug",
            "description": "A mug",
            "url": "https://shop.io/42",
        },
    }
    job("/api/catalog-item-bulk-create-jobs", "catalog-item-bulk-create-job", "items", [item])
    profile = {"type": "profile", "attributes": {"email": "b@shop.io", "first_name": "Bo"}}
    job("/api/profile-bulk-import-jobs", "profile-bulk-import-job", "profiles", [profile])

    client = emulator.client
    assert client.consent_of("L1", "A@shop.io") == "UNSUBSCRIBED"
    assert client.consent_of("L2", "a@shop.io") is None
    [consent] = client.consent(account="acme")
    assert not consent.subscribed and [h["endpoint"] for h in consent.history] == [
        "subscribe",
        "unsubscribe",
    ]
    mug = client.catalog_item("$custom:::$default:::42")
    assert mug is not None and mug.exists and mug.attributes["title"] == "Mug"
    [bo] = client.profiles(identifier="email", value="b@shop.io")
    assert bo.attributes["first_name"] == "Bo"
    client.reset()
    assert client.consent() == [] and client.catalog_items() == [] and client.profiles() == []


# --- transport -------------------------------------------------------------------------------


def test_keep_alive_reuses_one_connection(emulator: RunningEmulator) -> None:
    local_ports = set()
    with httpx.Client(base_url=emulator.base_url) as http:
        for i in range(5):
            response = post(http, emulator, one_event_body(unique_id=str(i)))
            assert response.status_code == 202
            assert response.http_version == "HTTP/1.1"
            stream = response.extensions["network_stream"]
            local_ports.add(stream.get_extra_info("client_addr")[1])
    assert len(local_ports) == 1  # all five went over one kept-alive connection


def test_a_body_cut_off_by_a_dying_client_is_neither_answered_nor_counted(
    emulator: RunningEmulator, http: httpx.Client
) -> None:
    # A consumer killed mid-request leaves half a body behind; Klaviyo never sees a request.
    body = one_event_body(unique_id="cut")
    url = httpx.URL(emulator.base_url)
    head = "".join(f"{k}: {v}\r\n" for k, v in emulator.headers(None).items())
    with socket.create_connection((url.host, url.port), timeout=10) as sock:
        sock.sendall(
            f"POST {EVENTS} HTTP/1.1\r\nHost: x\r\n{head}"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[: len(body) // 2]
        )
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(65536) == b""  # closed without an answer, once the handler is done
    assert post(http, emulator, one_event_body()).status_code == 202
    stats = emulator.client.stats()
    assert stats.validation_failures == {}
    assert stats.responses("events", 400) == 0
    assert [e.unique_id for e in emulator.client.events()] == ["1234"]


def test_a_1000_event_request_is_fast(emulator: RunningEmulator, http: httpx.Client) -> None:
    body = many_events_body(1000)
    post(http, emulator, body)  # warm-up (and the first acceptance)
    started = time.perf_counter()
    rounds = 5
    for _ in range(rounds):
        assert post(http, emulator, body).status_code == 202  # duplicates: still parsed, checked
    per_request = (time.perf_counter() - started) / rounds
    # A regression guard, not a benchmark: the fast path takes ~50 ms here, the plain
    # OAS30Validator walk alone ~300 ms.
    assert per_request < 1.0


@pytest.mark.emulator_violations_expected
def test_without_spec_it_still_enforces_limits(
    emulator_factory: Callable[..., RunningEmulator],
) -> None:
    emu = emulator_factory(spec_path=None, rate_limits=RateLimitSettings(enabled=False))
    assert emu.client.health()["schema_validation"] is False
    with httpx.Client(base_url=emu.base_url) as http:
        wrong_type = events_body(group({"email": "a@shop.io"}, event("1", value="12")))
        assert post(http, emu, wrong_type).status_code == 202  # no schema: accepted
        assert post(http, emu, many_events_body(1001)).status_code == 400
        assert post(http, emu, b'{"data": {}}').status_code == 400  # no items array


# --- the command -----------------------------------------------------------------------------


def test_cli_serves_until_sigterm_and_never_prints_keys(klaviyo_spec_path: Path) -> None:
    secret = "pk_cli_secret_should_not_show"
    env = {**os.environ, "KLAVIYO_API_KEY": f"{secret}=shop"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kafka_klaviyo_dev.emulator",
            "--port",
            "0",
            "--spec",
            str(klaviyo_spec_path),
            "--log-level",
            "INFO",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("Klaviyo emulator ready at http://127.0.0.1:"), line
        url = line.rsplit(" ", 1)[-1]
        with EmulatorClient(url) as client:
            assert client.health()["accounts"] == ["shop"]
        response = httpx.post(
            f"{url}{EVENTS}",
            content=one_event_body(),
            headers={
                "Authorization": f"Klaviyo-API-Key {secret}",
                "revision": "2026-07-15",
                "Content-Type": "application/vnd.api+json",
            },
        )
        assert response.status_code == 202
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert secret not in line + out + err
    assert "schema validation on" in err
