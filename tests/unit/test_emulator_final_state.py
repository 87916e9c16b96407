"""The emulator's read-back of the state Klaviyo would end in: consent, catalog items, profiles.

Requests go through the emulator's own pipeline (extraction, recording, acceptance order) and
the control API, in process and without a spec; the replay rules are those of
:mod:`kafka_klaviyo_dev.emulator.final_state`.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from kafka_klaviyo_dev.emulator import final_state
from kafka_klaviyo_dev.emulator.app import EmulatorApp, Request
from kafka_klaviyo_dev.emulator.config import EmulatorConfig, JobSettings, RateLimitSettings
from kafka_klaviyo_dev.emulator.control import ControlApi
from kafka_klaviyo_dev.emulator.faults import FaultRule

KEYS = {"pk_acme": "acme", "pk_beta": "beta"}
ITEM = "$custom:::$default:::42"


@pytest.fixture
def app() -> EmulatorApp:
    # Lenient catalog: these tests are about which accepted write lands last, not about
    # Klaviyo's catalog rules inside jobs (tests/unit/test_emulator_jobs.py has those).
    config = EmulatorConfig(
        api_keys=KEYS,
        rate_limits=RateLimitSettings(enabled=False),
        jobs=JobSettings(strict_catalog=False),
    )
    return EmulatorApp(config)


def send(app: EmulatorApp, path: str, body: dict[str, Any], account: str = "acme") -> int:
    key = next(k for k, name in KEYS.items() if name == account)
    request = Request(
        "POST",
        path,
        {
            "authorization": f"Klaviyo-API-Key {key}",
            "revision": app.config.revision,
            "content-type": "application/vnd.api+json",
        },
        orjson.dumps(body),
    )
    return app.handle_api(request).status


def control(app: EmulatorApp, route: str, **query: str) -> Any:
    request = Request("GET", f"/__emulator/{route}", {}, query={k: [v] for k, v in query.items()})
    response = ControlApi(app).handle(request)
    assert response.status == 200, response.body
    return orjson.loads(response.body)["data"]


def subscription(
    action: str,
    list_id: str,
    *,
    email: str | None = None,
    phone: str | None = None,
    channels: tuple[str, ...] = ("email",),
) -> tuple[str, dict[str, Any]]:
    kind = "create" if action == "subscribe" else "delete"
    consent = "SUBSCRIBED" if action == "subscribe" else "UNSUBSCRIBED"
    attributes: dict[str, Any] = {
        "subscriptions": {channel: {"marketing": {"consent": consent}} for channel in channels}
    }
    if email is not None:
        attributes["email"] = email
    if phone is not None:
        attributes["phone_number"] = phone
    body = {
        "data": {
            "type": f"profile-subscription-bulk-{kind}-job",
            "attributes": {"profiles": {"data": [{"type": "profile", "attributes": attributes}]}},
            "relationships": {"list": {"data": {"type": "list", "id": list_id}}},
        }
    }
    return f"/api/profile-subscription-bulk-{kind}-jobs", body


def catalog(operation: str, *items: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    body = {
        "data": {
            "type": f"catalog-item-bulk-{operation}-job",
            "attributes": {"items": {"data": [{"type": "catalog-item", **i} for i in items]}},
        }
    }
    return f"/api/catalog-item-bulk-{operation}-jobs", body


def created(external_id: str = "42", **attributes: Any) -> dict[str, Any]:
    return {
        "attributes": {
            "external_id": external_id,
            "integration_type": "$custom",
            "catalog_type": "$default",
            "title": "Mug",
            "description": "A mug",
            "url": "https://shop.example/42",
            **attributes,
        }
    }


def profile_import(*profiles: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    body = {
        "data": {
            "type": "profile-bulk-import-job",
            "attributes": {
                "profiles": {"data": [{"type": "profile", "attributes": p} for p in profiles]}
            },
        }
    }
    return "/api/profile-bulk-import-jobs", body


# --- consent ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "final"),
    [
        ("subscribe", "unsubscribe", "UNSUBSCRIBED"),
        ("unsubscribe", "subscribe", "SUBSCRIBED"),
    ],
)
def test_the_last_accepted_consent_wins(
    app: EmulatorApp, first: str, second: str, final: str
) -> None:
    assert send(app, *subscription(first, "L1", email="Ann@Shop.io")) == 202
    assert send(app, *subscription(second, "L1", email="ann@shop.io")) == 202
    [entry] = control(app, "consent")
    assert entry["consent"] == final
    assert (entry["account"], entry["list_id"], entry["channel"], entry["person"]) == (
        "acme",
        "L1",
        "email",
        "ann@shop.io",  # one person: Klaviyo matches e-mail addresses case-insensitively
    )
    assert [step["endpoint"] for step in entry["history"]] == [first, second]
    assert entry["types"] == ["marketing"]


def test_consent_is_kept_per_account_list_channel_and_person(app: EmulatorApp) -> None:
    send(app, *subscription("subscribe", "L1", email="a@shop.io"))
    send(app, *subscription("subscribe", "L2", email="a@shop.io"))
    send(app, *subscription("unsubscribe", "L2", email="a@shop.io"))
    send(app, *subscription("subscribe", "L1", email="b@shop.io"))
    send(app, *subscription("unsubscribe", "L1", email="a@shop.io"), account="beta")
    send(app, *subscription("subscribe", "L1", phone="+14155552671", channels=("sms",)))
    got = {
        (e["account"], e["list_id"], e["channel"], e["person"]): e["consent"]
        for e in control(app, "consent")
    }
    assert got == {
        ("acme", "L1", "email", "a@shop.io"): "SUBSCRIBED",
        ("acme", "L2", "email", "a@shop.io"): "UNSUBSCRIBED",
        ("acme", "L1", "email", "b@shop.io"): "SUBSCRIBED",
        ("beta", "L1", "email", "a@shop.io"): "UNSUBSCRIBED",
        ("acme", "L1", "sms", "+14155552671"): "SUBSCRIBED",
    }
    narrowed = control(app, "consent", account="acme", list_id="L1", person="A@shop.io")
    assert [(e["channel"], e["consent"]) for e in narrowed] == [("email", "SUBSCRIBED")]
    assert control(app, "consent", channel="sms")[0]["person"] == "+14155552671"


def test_an_item_without_the_channel_identifier_changes_no_consent(app: EmulatorApp) -> None:
    # An sms subscription of a profile given only by e-mail names nobody on the sms channel.
    send(app, *subscription("subscribe", "L1", email="a@shop.io", channels=("sms",)))
    assert control(app, "consent") == []


def test_refused_requests_change_nothing(app: EmulatorApp) -> None:
    send(app, *subscription("subscribe", "L1", email="a@shop.io"))
    app.faults.add(FaultRule(kind="status", status=503, endpoint="unsubscribe", requests=1))
    assert send(app, *subscription("unsubscribe", "L1", email="a@shop.io")) == 503
    [entry] = control(app, "consent")
    assert entry["consent"] == "SUBSCRIBED"


# --- catalog items ---------------------------------------------------------------------------


def test_upsert_then_delete_ends_deleted_and_delete_then_upsert_ends_existing(
    app: EmulatorApp,
) -> None:
    send(app, *catalog("create", created()))
    send(app, *catalog("update", {"id": ITEM, "attributes": {"title": "Mug"}}))
    send(app, *catalog("delete", {"id": ITEM}))
    [item] = control(app, "catalog-items")
    assert (item["id"], item["exists"], item["operation"]) == (ITEM, False, "delete")
    assert [s["operation"] for s in item["history"]] == ["create", "update", "delete"]
    assert item["attributes"]["title"] == "Mug"  # the last known attributes stay visible

    send(app, *catalog("update", {"id": ITEM, "attributes": {"title": "New mug"}}))
    [item] = control(app, "catalog-items")
    assert item["exists"] is True
    assert item["attributes"] == {"title": "New mug"}  # nothing survives the delete


def test_catalog_create_replaces_and_update_merges(app: EmulatorApp) -> None:
    send(app, *catalog("create", created(price=10.0, custom_metadata={"SKU": "M-1"})))
    send(app, *catalog("update", {"id": ITEM, "attributes": {"price": 12.5}}))
    [item] = control(app, "catalog-items", id=ITEM)
    assert item["exists"] is True and item["operation"] == "update"
    assert item["attributes"]["price"] == 12.5
    assert item["attributes"]["title"] == "Mug"  # kept from the create
    send(app, *catalog("create", created(title="Cup")))
    [item] = control(app, "catalog-items", id=ITEM)
    assert item["attributes"]["title"] == "Cup" and "price" not in item["attributes"]


def test_catalog_items_are_kept_per_account_and_id(app: EmulatorApp) -> None:
    send(app, *catalog("create", created("1"), created("2")))
    send(app, *catalog("delete", {"id": "$custom:::$default:::2"}))
    send(app, *catalog("delete", {"id": "$custom:::$default:::1"}), account="beta")
    got = {(i["account"], i["id"]): i["exists"] for i in control(app, "catalog-items")}
    assert got == {
        ("acme", "$custom:::$default:::1"): True,
        ("acme", "$custom:::$default:::2"): False,
        ("beta", "$custom:::$default:::1"): False,
    }
    assert [i["account"] for i in control(app, "catalog-items", account="beta")] == ["beta"]


def test_catalog_item_id_of_a_create() -> None:
    assert final_state.catalog_item_id(created("7")) == "$custom:::$default:::7"
    assert final_state.catalog_item_id({"id": "x"}) == "x"
    assert final_state.catalog_item_id({"attributes": {}}) is None


# --- profiles --------------------------------------------------------------------------------


def test_the_last_accepted_profile_import_wins(app: EmulatorApp) -> None:
    send(app, *profile_import({"email": "A@shop.io", "first_name": "Ann", "title": "Dr"}))
    send(app, *profile_import({"phone_number": "+14155552671", "first_name": "Bo"}))
    send(app, *profile_import({"email": "a@shop.io", "first_name": "Anne"}))
    got = {(p["identifier"], p["value"]): p["attributes"] for p in control(app, "profiles")}
    assert got == {
        ("email", "a@shop.io"): {"email": "a@shop.io", "first_name": "Anne"},
        ("phone_number", "+14155552671"): {"phone_number": "+14155552671", "first_name": "Bo"},
    }
    [ann] = control(app, "profiles", identifier="email", value="A@SHOP.IO")
    assert len(ann["history"]) == 2


# --- acceptance order and reset --------------------------------------------------------------


def test_order_is_acceptance_order_across_endpoints_and_reset_forgets_it(
    app: EmulatorApp,
) -> None:
    # Unsubscribe and subscribe are different endpoints: the order is the shared sequence.
    send(app, *subscription("unsubscribe", "L1", email="a@shop.io"))
    send(app, *subscription("subscribe", "L1", email="a@shop.io"))
    send(app, *subscription("unsubscribe", "L1", email="a@shop.io"))
    [entry] = control(app, "consent")
    assert entry["consent"] == "UNSUBSCRIBED"
    seqs = [step["seq"] for step in entry["history"]]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    send(app, *catalog("create", created()))
    send(app, *profile_import({"email": "a@shop.io"}))
    app.reset()
    assert control(app, "consent") == []
    assert control(app, "catalog-items") == []
    assert control(app, "profiles") == []


def test_unknown_account_is_refused(app: EmulatorApp) -> None:
    request = Request("GET", "/__emulator/consent", {}, query={"account": ["nobody"]})
    assert ControlApi(app).handle(request).status == 404
