"""Klaviyo's event identity: (profile identifier, metric name, unique_id)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kafka_klaviyo_dev.emulator.dedup import event_key, implicit_unique_id, profile_identity
from kafka_klaviyo_dev.emulator.items import extract_events

RECEIVED = datetime(2026, 3, 1, 12, 0, 0, 700000, tzinfo=UTC).timestamp()


def profile(**attributes: Any) -> dict[str, Any]:
    pid = attributes.pop("id", None)
    out: dict[str, Any] = {"type": "profile", "attributes": attributes}
    if pid is not None:
        out["id"] = pid
    return out


def test_identity_follows_klaviyo_precedence() -> None:
    full = profile(email="A@X.io", phone_number="+14155552671", external_id="c-1", id="01H")
    assert profile_identity(full) == ("email", "a@x.io")  # e-mail, case-insensitive
    assert profile_identity(profile(phone_number="+14155552671", external_id="c-1")) == (
        "phone_number",
        "+14155552671",
    )
    assert profile_identity(profile(external_id="c-1", id="01H")) == ("external_id", "c-1")
    assert profile_identity(profile(id="01H")) == ("id", "01H")
    assert profile_identity(profile(anonymous_id="anon")) == ("anonymous_id", "anon")


def test_no_identifier_means_no_identity() -> None:
    assert profile_identity(profile(first_name="Ann", email=None, external_id="  ")) is None
    assert profile_identity(None) is None
    assert profile_identity({}) is None


def test_missing_unique_id_falls_back_to_the_event_time_to_the_second() -> None:
    assert implicit_unique_id({"time": "2025-01-01T10:00:00.900+02:00"}, RECEIVED) == (
        "2025-01-01T08:00:00+00:00"
    )
    # no time either: the time the request arrived
    assert implicit_unique_id({}, RECEIVED) == "2026-03-01T12:00:00+00:00"


def _events_body(*groups: tuple[dict[str, Any], list[dict[str, Any]]]) -> dict[str, Any]:
    return {
        "data": {
            "type": "event-bulk-create-job",
            "attributes": {
                "events-bulk-create": {
                    "data": [
                        {
                            "type": "event-bulk-create",
                            "attributes": {
                                "profile": {"data": p},
                                "events": {
                                    "data": [{"type": "event", "attributes": e} for e in evs]
                                },
                            },
                        }
                        for p, evs in groups
                    ]
                }
            },
        }
    }


def metric(name: str) -> dict[str, Any]:
    return {"data": {"type": "metric", "attributes": {"name": name}}}


def test_event_key_combines_profile_metric_and_unique_id() -> None:
    body = _events_body(
        (
            profile(email="Ann@Example.com"),
            [
                {"metric": metric("Placed Order"), "unique_id": "o-1", "properties": {}},
                {"metric": metric("Ordered Product"), "unique_id": "o-1", "properties": {}},
            ],
        ),
        (
            profile(email="ann@example.com"),
            [{"metric": metric("Placed Order"), "properties": {}, "time": "2025-01-01T00:00:00Z"}],
        ),
    )
    items = extract_events(body).items
    keys = [event_key(item, RECEIVED) for item in items]
    assert keys == [
        (("email", "ann@example.com"), "Placed Order", "o-1"),
        (("email", "ann@example.com"), "Ordered Product", "o-1"),
        (("email", "ann@example.com"), "Placed Order", "2025-01-01T00:00:00+00:00"),
    ]
