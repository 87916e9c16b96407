"""Klaviyo's ingestion limits beyond the schema, and where their errors point."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from kafka_klaviyo_dev.emulator.endpoints import BY_NAME
from kafka_klaviyo_dev.emulator.items import (
    extract_catalog_items,
    extract_events,
    extract_profiles,
    field_pointer,
    field_view,
)
from kafka_klaviyo_dev.emulator.limits import CheckContext, count_issue, is_e164, run_checks

NOW = datetime(2026, 7, 20, 12, 0, tzinfo=UTC)
CTX = CheckContext(now=NOW, received_at=NOW.timestamp())
EVENTS = "/data/attributes/events-bulk-create/data"


def event(unique_id: str | None = "u-1", **attrs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "properties": {},
        "metric": {"data": {"type": "metric", "attributes": {"name": "Placed Order"}}},
    }
    if unique_id is not None:
        out["unique_id"] = unique_id
    out.update(attrs)
    return {"type": "event", "attributes": out}


def body(*groups: tuple[dict[str, Any], list[dict[str, Any]]]) -> dict[str, Any]:
    return {
        "data": {
            "type": "event-bulk-create-job",
            "attributes": {
                "events-bulk-create": {
                    "data": [
                        {
                            "type": "event-bulk-create",
                            "attributes": {
                                "profile": {"data": {"type": "profile", "attributes": p}},
                                "events": {"data": evs},
                            },
                        }
                        for p, evs in groups
                    ]
                }
            },
        }
    }


def check_events(doc: dict[str, Any]) -> list[tuple[str, str]]:
    endpoint = BY_NAME["events"]
    items = extract_events(doc).items
    issues = run_checks(items, CTX, endpoint.item_checks, endpoint.request_checks)
    return [(i.pointer, i.detail) for i in issues]


def test_a_valid_body_has_no_issue() -> None:
    doc = body(({"email": "a@b.io", "phone_number": "+14155552671"}, [event("1"), event("2")]))
    assert check_events(doc) == []


def test_count_limit_points_at_the_array() -> None:
    assert count_issue(1000, 1000, EVENTS, "events") is None
    issue = count_issue(1001, 1000, EVENTS, "events")
    assert issue is not None
    assert issue.pointer == EVENTS
    assert "1,000" in issue.detail


@pytest.mark.parametrize(
    ("number", "valid"),
    [
        ("+14155552671", True),
        ("+447911123456", True),
        ("+15005550006", True),  # the spec's own example
        ("4155552671", False),  # no country code
        ("+1 415 555 2671", False),  # formatted, not E.164
        ("+1555123", False),  # too short to be a number
        ("+15555555555", False),  # shaped right, but no such number
        ("+0123456789", False),
    ],
)
def test_e164(number: str, valid: bool) -> None:
    assert is_e164(number) is valid


def test_bad_phone_points_at_the_profile_phone_number() -> None:
    doc = body(({"email": "a@b.io"}, [event("1")]), ({"phone_number": "555-0100"}, [event("2")]))
    assert check_events(doc) == [
        (
            f"{EVENTS}/1/attributes/profile/data/attributes/phone_number",
            "Invalid phone number format (Example of a valid phone number format: +12345678901).",
        ),
    ]


def test_strings_over_100_kb_are_refused_counting_utf8_bytes() -> None:
    ok = "é" * 50_000  # 100,000 bytes exactly
    too_long = "é" * 50_001
    doc = body(
        ({"email": "a@b.io"}, [event("1", properties={"ok": ok, "deep": [{"x": too_long}]})])
    )
    pointers = [p for p, _ in check_events(doc)]
    assert pointers == [f"{EVENTS}/0/attributes/events/data/0/attributes/properties/deep/0/x"]


def test_event_time_must_be_from_2000_to_one_year_ahead() -> None:
    cases = [
        ("ok-2000", "2000-01-01T00:00:00Z"),
        ("bad-1999", "1999-12-31T23:59:59Z"),
        ("ok-within-a-year", "2027-07-19T12:00:00+00:00"),
        ("bad-beyond-a-year", "2027-07-21T12:00:00+00:00"),
        ("bad-not-a-time", "yesterday"),
        ("ok-absent", None),
    ]
    doc = body(({"email": "a@b.io"}, [event(uid, time=t) for uid, t in cases]))
    flagged = {
        cases[int(p.split("/events/data/")[1].split("/")[0])][0] for p, _ in check_events(doc)
    }
    assert flagged == {"bad-1999", "bad-beyond-a-year", "bad-not-a-time"}


def test_a_repeated_event_in_one_request_points_at_the_repetition() -> None:
    doc = body(
        ({"email": "A@b.io"}, [event("1"), event("2")]),
        ({"email": "a@B.io", "first_name": "again"}, [event("2")]),  # same profile
        ({"email": "c@b.io"}, [event("2")]),  # another profile: fine
    )
    assert [p for p, _ in check_events(doc)] == [
        f"{EVENTS}/1/attributes/events/data/0/attributes/unique_id"
    ]


def test_a_profile_without_identifier_is_refused() -> None:
    doc = body(({"first_name": "Nobody"}, [event("1")]))
    assert [p for p, _ in check_events(doc)] == [f"{EVENTS}/0/attributes/profile/data/attributes"]


def test_profile_issues_come_once_per_group_in_body_order() -> None:
    # The profile checks run once per group; groups without any profile share one empty
    # mapping, and each still gets its own issue.
    doc = body(
        ({"phone_number": "555"}, [event("1", time="x"), event("2")]),
        ({}, [event("3")]),
        ({}, [event("4"), event("5", time="y")]),
    )
    groups = doc["data"]["attributes"]["events-bulk-create"]["data"]
    for group in groups[1:]:
        del group["attributes"]["profile"]
    assert [p for p, _ in check_events(doc)] == [
        f"{EVENTS}/0/attributes/profile/data/attributes/phone_number",
        f"{EVENTS}/0/attributes/events/data/0/attributes/time",
        f"{EVENTS}/1/attributes/profile/data/attributes",
        f"{EVENTS}/2/attributes/profile/data/attributes",
        f"{EVENTS}/2/attributes/events/data/1/attributes/time",
    ]


def test_extraction_reports_structure_problems_instead_of_failing() -> None:
    assert extract_events({}).issues[0].pointer == "/data"
    broken = extract_events({"data": {"attributes": {"events-bulk-create": {"data": {}}}}})
    assert broken.issues[0].pointer == EVENTS
    assert (
        extract_profiles({"data": {"attributes": {"profiles": {"data": [{}, {}]}}}})
        .items[1]
        .pointer
        == "/data/attributes/profiles/data/1"
    )
    assert (
        extract_catalog_items({"data": {"attributes": {"items": {"data": [1]}}}})
        .items[0]
        .attributes
        == {}
    )


def test_field_view_and_pointer_resolve_event_and_profile_fields() -> None:
    doc = body(({"email": "a@b.io"}, [event("u-9", properties={"poison": True})]))
    item = extract_events(doc).items[0]
    view = field_view(item)
    assert view["unique_id"] == "u-9"
    assert view["profile"]["email"] == "a@b.io"
    assert field_pointer(item, ("properties", "poison")) == (
        f"{EVENTS}/0/attributes/events/data/0/attributes/properties/poison"
    )
    assert field_pointer(item, ("profile", "email")) == (
        f"{EVENTS}/0/attributes/profile/data/attributes/email"
    )
    assert field_pointer(item, ("type",)) == f"{EVENTS}/0/attributes/events/data/0/type"


def _subscribe(*consents: dict[str, Any], historical: bool | None) -> list[tuple[str, str]]:
    attributes: dict[str, Any] = {
        "profiles": {
            "data": [
                {
                    "type": "profile",
                    "attributes": {
                        "email": f"p{i}@example.org",
                        "subscriptions": {"email": {"marketing": consent}},
                    },
                }
                for i, consent in enumerate(consents)
            ]
        }
    }
    if historical is not None:
        attributes["historical_import"] = historical
    doc = {"data": {"type": "profile-subscription-bulk-create-job", "attributes": attributes}}
    endpoint = BY_NAME["subscribe"]
    ctx = CheckContext(now=NOW, received_at=NOW.timestamp(), job=attributes)
    issues = run_checks(extract_profiles(doc).items, ctx, endpoint.item_checks, ())
    return [(i.pointer, i.detail) for i in issues]


CONSENT_AT = (
    "/data/attributes/profiles/data/{}/attributes/subscriptions/email/marketing/consented_at"
)


@pytest.mark.parametrize("historical", [None, False])
def test_consented_at_without_historical_import_is_refused(historical: bool | None) -> None:
    issues = _subscribe(
        {"consent": "SUBSCRIBED"},
        {"consent": "SUBSCRIBED", "consented_at": "2026-01-01T00:00:00+00:00"},
        historical=historical,
    )
    assert [pointer for pointer, _ in issues] == [CONSENT_AT.format(1)]
    assert "historical_import" in issues[0][1]


def test_a_historical_import_needs_a_past_consented_at_on_every_consent() -> None:
    issues = _subscribe(
        {"consent": "SUBSCRIBED", "consented_at": "2026-01-01T00:00:00+00:00"},
        {"consent": "SUBSCRIBED"},
        {"consent": "SUBSCRIBED", "consented_at": "2026-07-20T13:00:00+00:00"},
        historical=True,
    )
    assert [pointer for pointer, _ in issues] == [CONSENT_AT.format(1), CONSENT_AT.format(2)]
    assert all("valid consented_at" in detail for _, detail in issues)


def test_live_consent_without_times_and_past_historical_consent_pass() -> None:
    assert _subscribe({"consent": "SUBSCRIBED"}, historical=None) == []
    past = {"consent": "SUBSCRIBED", "consented_at": "2025-12-31T23:59:59Z"}
    assert _subscribe(past, historical=True) == []
