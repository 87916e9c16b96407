"""Every RULES.md rule the emulator enforces, through its request pipeline with the spec loaded.

Each case takes a valid body of one endpoint, breaks one rule, sends it to the emulator's app in
process and checks the answer the way a client sees it: status, ``code``, ``detail`` and
``source.pointer``, and that the refusal is counted under the rule's id.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from kafka_klaviyo_dev.emulator import endpoints as ep
from kafka_klaviyo_dev.emulator import pointer as jp
from kafka_klaviyo_dev.emulator.app import EmulatorApp, Request
from kafka_klaviyo_dev.emulator.client import EmulatorClient
from kafka_klaviyo_dev.emulator.config import EmulatorConfig, RateLimitSettings
from kafka_klaviyo_dev.emulator.control import ControlApi
from kafka_klaviyo_dev.emulator.limits import rule_of
from kafka_klaviyo_dev.emulator.responses import Response
from kafka_klaviyo_dev.emulator.validation import validators_for

KEYS = {"pk_rules": "acme"}
REPO = Path(__file__).resolve().parents[2]

# --- valid bodies, one per endpoint ------------------------------------------------------------


def events_body() -> dict[str, Any]:
    profile = {
        "type": "profile",
        "attributes": {
            "email": "ada@shop.io",
            "phone_number": "+14155552671",
            "first_name": "Ada",
            "locale": "en-US",
            "location": {"city": "Paris", "timezone": "Europe/Paris"},
            "properties": {"tier": "gold", "free": {"form": ["keys", 1]}},
        },
        "meta": {"patch_properties": {"append": {"tags": ["vip", 3]}, "unappend": {"x": "y"}}},
    }

    def event(unique_id: str) -> dict[str, Any]:
        return {
            "type": "event",
            "attributes": {
                "properties": {"order_id": unique_id, "items": [{"sku": "A", "qty": 2}]},
                "time": "2026-01-02T03:04:05+00:00",
                "value": 12.5,
                "value_currency": "EUR",
                "unique_id": unique_id,
                "metric": {
                    "data": {
                        "type": "metric",
                        "attributes": {"name": "Placed Order", "service": "api"},
                    }
                },
            },
        }

    return {
        "data": {
            "type": "event-bulk-create-job",
            "attributes": {
                "events-bulk-create": {
                    "data": [
                        {
                            "type": "event-bulk-create",
                            "attributes": {
                                "profile": {"data": profile},
                                "events": {"data": [event("o-1"), event("o-2")]},
                            },
                        }
                    ]
                }
            },
        }
    }


def import_body() -> dict[str, Any]:
    return {
        "data": {
            "type": "profile-bulk-import-job",
            "attributes": {
                "profiles": {
                    "data": [
                        {
                            "type": "profile",
                            "attributes": {
                                "email": "ada@shop.io",
                                "external_id": "c-1",
                                "locale": "fr",
                                "location": {"timezone": "UTC"},
                                "properties": {"anything": {"goes": True}},
                            },
                        }
                    ]
                }
            },
            "relationships": {"lists": {"data": [{"type": "list", "id": "L1"}]}},
        }
    }


def subscribe_body() -> dict[str, Any]:
    return {
        "data": {
            "type": "profile-subscription-bulk-create-job",
            "attributes": {
                "custom_source": "checkout",
                "profiles": {
                    "data": [
                        {
                            "type": "profile",
                            "attributes": {
                                "email": "ada@shop.io",
                                "phone_number": "+14155552671",
                                "subscriptions": {
                                    "email": {"marketing": {"consent": "SUBSCRIBED"}},
                                    "sms": {"marketing": {"consent": "SUBSCRIBED"}},
                                },
                            },
                        }
                    ]
                },
            },
            "relationships": {"list": {"data": {"type": "list", "id": "L1"}}},
        }
    }


def unsubscribe_body() -> dict[str, Any]:
    doc = subscribe_body()
    doc["data"]["type"] = "profile-subscription-bulk-delete-job"
    del doc["data"]["attributes"]["custom_source"]
    channels = doc["data"]["attributes"]["profiles"]["data"][0]["attributes"]["subscriptions"]
    for channel in channels.values():
        channel["marketing"]["consent"] = "UNSUBSCRIBED"
    return doc


ITEM_ID = "$custom:::$default:::sku-1"


def catalog_body(operation: str) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "catalog-item"}
    attributes: dict[str, Any] = {
        "title": "Shoe",
        "description": "A shoe",
        "url": "https://shop.io/shoe",
        "image_full_url": "http://img.shop.io/shoe.png",
        "images": ["https://img.shop.io/1.png"],
        "custom_metadata": {"colour": "red", "sizes": [40, 41]},
        "price": 50.0,
    }
    if operation == "create":
        attributes.update(external_id="sku-1", integration_type="$custom", catalog_type="$default")
    else:
        item["id"] = ITEM_ID
    if operation != "delete":
        item["attributes"] = attributes
        item["relationships"] = {
            "categories": {
                "data": [{"type": "catalog-category", "id": "$custom:::$default:::shoes"}]
            }
        }
    return {
        "data": {
            "type": f"catalog-item-bulk-{operation}-job",
            "attributes": {"items": {"data": [item]}},
        }
    }


BODIES: dict[str, Callable[[], dict[str, Any]]] = {
    "events": events_body,
    "profile_import": import_body,
    "subscribe": subscribe_body,
    "unsubscribe": unsubscribe_body,
    "catalog_create": lambda: catalog_body("create"),
    "catalog_update": lambda: catalog_body("update"),
    "catalog_delete": lambda: catalog_body("delete"),
}

# --- driving the app ---------------------------------------------------------------------------


def make_app(spec: Path, **settings: Any) -> EmulatorApp:
    config = EmulatorConfig(
        api_keys=KEYS, spec_path=spec, rate_limits=RateLimitSettings(enabled=False), **settings
    )
    return EmulatorApp(config, validators_for(spec, tuple(e.path for e in ep.ENDPOINTS)))


@pytest.fixture
def app(klaviyo_spec_path: Path) -> EmulatorApp:
    return make_app(klaviyo_spec_path)


def post(app: EmulatorApp, endpoint: str, body: Any) -> Response:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {
        "authorization": "Klaviyo-API-Key pk_rules",
        "revision": app.config.revision,
        "content-type": "application/vnd.api+json",
    }
    return app.handle_api(Request("POST", ep.BY_NAME[endpoint].path, headers, raw))


def errors_of(response: Response) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = orjson.loads(response.body)["errors"]
    return errors


def node(doc: Any, pointer: str) -> tuple[Any, str]:
    """The container of ``pointer``'s last token, and that token."""
    tokens = jp.split(pointer)
    parent = doc
    for token in tokens[:-1]:
        parent = parent[int(token)] if isinstance(parent, list) else parent[token]
    return parent, tokens[-1]


def put(pointer: str, value: Any) -> Callable[[Any], None]:
    def mutate(doc: Any) -> None:
        parent, key = node(doc, pointer)
        if isinstance(parent, list):
            parent[int(key)] = value
        else:
            parent[key] = value

    return mutate


def drop(*pointers: str) -> Callable[[Any], None]:
    def mutate(doc: Any) -> None:
        for pointer in pointers:
            parent, key = node(doc, pointer)
            del parent[key]

    return mutate


def both(*mutations: Callable[[Any], None]) -> Callable[[Any], None]:
    def mutate(doc: Any) -> None:
        for mutation in mutations:
            mutation(doc)

    return mutate


def nested(levels: int) -> dict[str, Any]:
    out: dict[str, Any] = {"leaf": 1}
    for _ in range(levels - 1):
        out = {"a": out}
    return out


# --- the cases ---------------------------------------------------------------------------------

GROUP = "/data/attributes/events-bulk-create/data/0/attributes"
PROFILE = f"{GROUP}/profile/data"
EVENT = f"{GROUP}/events/data/0/attributes"
ITEM = "/data/attributes/profiles/data/0"
CAT = "/data/attributes/items/data/0"
INVALID_PHONE = (
    "Invalid phone number format (Example of a valid phone number format: +12345678901)."
)
SUBSCRIBED = {"consent": "SUBSCRIBED"}


@dataclass(frozen=True)
class Case:
    """One broken rule: which body, how it is broken, and the error Klaviyo answers."""

    rule: str
    endpoint: str
    mutate: Callable[[Any], None]
    pointer: str
    detail: str | re.Pattern[str]
    #: Other errors the same break causes (their rules are counted too).
    also: int = 0

    def __str__(self) -> str:
        return f"{self.rule}-{self.endpoint}"


CASES = [
    # X1 unknown fields, at every level and resource
    Case("X1", "events", put(f"{EVENT}/colour", "red"), f"{EVENT}/colour",
         "'colour' is not a valid field for the resource 'event'."),
    Case("X1", "events", put(f"{PROFILE}/attributes/nickname", "A"),
         f"{PROFILE}/attributes/nickname",
         "'nickname' is not a valid field for the resource 'profile'."),
    Case("X1", "events", put("/data/meta", {}), "/data/meta",
         "'meta' is not a valid field for the resource 'event-bulk-create-job'."),
    Case("X1", "events", put(f"{EVENT}/metric/data/attributes/id", "m"),
         f"{EVENT}/metric/data/attributes/id",
         "'id' is not a valid field for the resource 'metric'."),
    Case("X1", "subscribe", put(f"{ITEM}/attributes/properties", {"a": 1}),
         f"{ITEM}/attributes/properties",
         "'properties' is not a valid field for the resource 'profile'."),
    Case("X1", "subscribe", put("/data/attributes/list_id", "L1"), "/data/attributes/list_id",
         "'list_id' is not a valid field for the resource "
         "'profile-subscription-bulk-create-job'."),
    Case("X1", "subscribe",
         put(f"{ITEM}/attributes/subscriptions/push", {
             "marketing": SUBSCRIBED,
             "tokens": [{"token": "t", "platform": "ios", "vendor": "apns"},
                        {"token": "u", "platform": "ios", "vendor": "apns", "colour": "red"}],
         }),
         f"{ITEM}/attributes/subscriptions/push/tokens/1/colour",
         "'colour' is not a valid field for the resource 'profile'."),
    Case("X1", "catalog_create", put(f"{CAT}/attributes/sku", "1"), f"{CAT}/attributes/sku",
         "'sku' is not a valid field for the resource 'catalog-item'."),
    Case("X1", "catalog_delete", put(f"{CAT}/attributes", {"title": "x"}), f"{CAT}/attributes",
         "'attributes' is not a valid field for the resource 'catalog-item'."),
    # named unknown fields
    Case("P10", "profile_import", put(f"{ITEM}/attributes/anonymous_id", "a-1"),
         f"{ITEM}/attributes/anonymous_id",
         "'anonymous_id' is not a valid field for the resource 'profile'."),
    Case("C11", "catalog_update", put(f"{CAT}/attributes/external_id", "sku-1"),
         f"{CAT}/attributes/external_id",
         "'external_id' is not a valid field for the resource 'catalog-item'."),
    Case("C11", "catalog_update", put(f"{CAT}/attributes/catalog_type", "$default"),
         f"{CAT}/attributes/catalog_type",
         "'catalog_type' is not a valid field for the resource 'catalog-item'."),
    Case("D24", "catalog_create", put(f"{CAT}/id", ITEM_ID), f"{CAT}/id",
         "'id' is not a valid field for the resource 'catalog-item'."),
    # event data
    Case("E4", "events", put(f"{EVENT}/properties/note", "é" * 50_001),
         f"{EVENT}/properties/note", "A string may not exceed 100,000 bytes."),
    Case("E14", "events", put(f"{EVENT}/properties", {f"p{i}": i for i in range(401)}),
         f"{EVENT}/properties", "An event may not have more than 400 properties; got 401."),
    Case("D5", "events", put(f"{EVENT}/properties/ids", list(range(4001))),
         f"{EVENT}/properties/ids",
         "An array in event properties may not have more than 4,000 items; got 4,001."),
    Case("D5", "events", put(f"{EVENT}/properties/deep", nested(10)),
         f"{EVENT}/properties/deep" + "/a" * 9,
         "Event properties may not nest objects more than 10 levels deep."),
    Case("D5", "events", put(f"{EVENT}/properties/big", 2**63), f"{EVENT}/properties/big",
         "Integers in event properties must fit in 64 bits."),
    Case("D5", "events", put(f"{PROFILE}/attributes/properties/blob", "x" * 96_000), PROFILE,
         re.compile(r"An event's profile may not exceed 95,000 bytes; got 96,\d{3}\.")),
    Case("D7", "events", put(f"{EVENT}/unique_id", "u" * 256), f"{EVENT}/unique_id",
         "'unique_id' must be 1 to 255 characters long."),
    Case("D7", "events", put(f"{EVENT}/unique_id", ""), f"{EVENT}/unique_id",
         "'unique_id' must be 1 to 255 characters long."),
    Case("E17", "events", put(f"{EVENT}/value_currency", "eur"), f"{EVENT}/value_currency",
         "'value_currency' must be an ISO 4217 currency code such as 'USD'."),
    Case("E17", "events", put(f"{EVENT}/value_currency", "ABC"), f"{EVENT}/value_currency",
         "'value_currency' must be an ISO 4217 currency code such as 'USD'."),
    Case("E18", "events", put(f"{EVENT}/metric/data/attributes/name", "n" * 128),
         f"{EVENT}/metric/data/attributes/name", "Metric name must be less than 128 characters."),
    Case("E19", "events", put(f"{EVENT}/metric/data/attributes/service", "shopify"),
         f"{EVENT}/metric/data/attributes/service",
         "'service' must be 'api' (the default) for API requests."),
    Case("E16", "events", put(f"{EVENT}/time", "1999-12-31T23:59:59+00:00"), f"{EVENT}/time",
         "'time' must be between the year 2000 and one year from now."),
    Case("E20", "events", put(f"{GROUP}/events/data/1/attributes/unique_id", "o-1"),
         f"{GROUP}/events/data/1/attributes/unique_id",
         "Duplicate event: the same profile, metric and unique_id appear earlier in this "
         "request."),
    Case("E1", "events", put(f"{PROFILE}/attributes", {"first_name": "Nobody"}),
         f"{PROFILE}/attributes",
         "A profile identifier is required: one of email, phone_number, external_id or id."),
    # profiles: identifiers and contact data
    Case("D3", "events", put(f"{PROFILE}/attributes/email", "ada.shop.io"),
         f"{PROFILE}/attributes/email", "Invalid email address."),
    Case("D3", "profile_import", put(f"{ITEM}/attributes/email", "a" * 92 + "@shop.io"),
         f"{ITEM}/attributes/email",
         "Invalid email address: it must be less than 100 characters."),
    Case("D3", "unsubscribe", put(f"{ITEM}/attributes/email", "ada@shop"),
         f"{ITEM}/attributes/email", "Invalid email address."),
    Case("D4", "events",
         both(drop(f"{PROFILE}/attributes/email"),
              put(f"{PROFILE}/attributes/phone_number", "555")),
         f"{PROFILE}/attributes/phone_number", INVALID_PHONE),
    Case("D4", "profile_import",
         both(drop(f"{ITEM}/attributes/email", f"{ITEM}/attributes/external_id"),
              put(f"{ITEM}/attributes/phone_number", "+15555555555")),
         f"{ITEM}/attributes/phone_number", INVALID_PHONE),
    Case("D4", "subscribe",
         both(drop(f"{ITEM}/attributes/email", f"{ITEM}/attributes/subscriptions/email"),
              put(f"{ITEM}/attributes/phone_number", "0612345678")),
         f"{ITEM}/attributes/phone_number", INVALID_PHONE),
    Case("U6", "unsubscribe", put(f"{ITEM}/attributes/phone_number", "0612345678"),
         f"{ITEM}/attributes/phone_number", INVALID_PHONE),
    Case("E9", "events", put(f"{PROFILE}/attributes/locale", "english"),
         f"{PROFILE}/attributes/locale",
         "'locale' must be an IETF BCP 47 language tag like 'en' or 'en-US'."),
    Case("E9", "profile_import", put(f"{ITEM}/attributes/locale", "en_US"),
         f"{ITEM}/attributes/locale",
         "'locale' must be an IETF BCP 47 language tag like 'en' or 'en-US'."),
    Case("E11", "events", put(f"{PROFILE}/attributes/location/timezone", "Mars/Olympus"),
         f"{PROFILE}/attributes/location/timezone",
         "'timezone' must be a time zone name of the IANA Time Zone Database."),
    Case("E11", "profile_import", put(f"{ITEM}/attributes/location/timezone", "../../etc/passwd"),
         f"{ITEM}/attributes/location/timezone",
         "'timezone' must be a time zone name of the IANA Time Zone Database."),
    Case("E13", "events", put(f"{PROFILE}/meta/patch_properties/append/tags", {"a": 1}),
         f"{PROFILE}/meta/patch_properties/append/tags",
         "'append' takes a simple value or an array of simple values."),
    Case("E13", "profile_import",
         put(f"{ITEM}/meta", {"patch_properties": {"unappend": {"t": [[1]]}}}),
         f"{ITEM}/meta/patch_properties/unappend/t",
         "'unappend' takes a simple value or an array of simple values."),
    Case("P3", "profile_import",
         put(f"{ITEM}/attributes/properties", {"a": "x" * 60_000, "b": "y" * 60_000}),
         ITEM, "A profile may not exceed 100,000 bytes."),
    Case("E1", "profile_import", drop(f"{ITEM}/attributes/email", f"{ITEM}/attributes/external_id"),
         f"{ITEM}/attributes",
         "A profile identifier is required: one of email, phone_number, external_id or id."),
    # (un)subscribe channels
    Case("S10", "subscribe",
         both(drop(f"{ITEM}/attributes/email", f"{ITEM}/attributes/phone_number"),
              put(f"{ITEM}/attributes/subscriptions", {"push": {"marketing": SUBSCRIBED}})),
         f"{ITEM}/attributes",
         "Either email or phone_number is required (push-only profiles: "
         "subscriptions.push.anonymous_id)."),
    Case("S11", "subscribe", drop(f"{ITEM}/attributes/email"), f"{ITEM}/attributes/email",
         "'email' is required for the email channel."),
    Case("S12", "subscribe", drop(f"{ITEM}/attributes/phone_number"),
         f"{ITEM}/attributes/phone_number", "'phone_number' is required for the sms channel."),
    Case("S12", "subscribe",
         both(drop(f"{ITEM}/attributes/phone_number", f"{ITEM}/attributes/subscriptions/sms"),
              put(f"{ITEM}/attributes/subscriptions/whatsapp", {"marketing": SUBSCRIBED})),
         f"{ITEM}/attributes/phone_number",
         "'phone_number' is required for the whatsapp channel."),
    Case("S2", "subscribe",
         put(f"{ITEM}/attributes/subscriptions/email/marketing/consented_at",
             "2025-01-01T00:00:00Z"),
         f"{ITEM}/attributes/subscriptions/email/marketing/consented_at",
         "consented_at may only be provided with historical_import set to true."),
    Case("U4", "unsubscribe", drop(f"{ITEM}/attributes/email"), f"{ITEM}/attributes/email",
         "'email' is required for the email channel."),
    Case("U4", "unsubscribe", drop(f"{ITEM}/attributes/phone_number"),
         f"{ITEM}/attributes/phone_number", "'phone_number' is required for the sms channel."),
    # catalog
    Case("C5", "catalog_create", put(f"{CAT}/attributes/catalog_type", "shop"),
         f"{CAT}/attributes/catalog_type",
         "'catalog_type' must be '$default': only the default catalog is supported."),
    Case("C6", "catalog_create", put(f"{CAT}/attributes/custom_metadata/size", {"eu": 40}),
         f"{CAT}/attributes/custom_metadata/size",
         "'custom_metadata' must be a flat JSON object: no nested objects."),
    Case("C6", "catalog_update",
         put(f"{CAT}/attributes/custom_metadata", {"a": "x" * 60_000, "b": "y" * 60_000}),
         f"{CAT}/attributes/custom_metadata", "'custom_metadata' may not exceed 100,000 bytes."),
    Case("C7", "catalog_create", put(f"{CAT}/relationships/categories/data/0/id", "shoes"),
         f"{CAT}/relationships/categories/data/0/id",
         "A catalog category ID must have the format $custom:::$default:::{external_id}."),
    Case("C8", "catalog_update", put(f"{CAT}/id", "sku-1"), f"{CAT}/id",
         "A catalog item ID must have the format $custom:::$default:::{external_id}."),
    Case("C8", "catalog_delete", put(f"{CAT}/id", "$shopify:::$default:::1"), f"{CAT}/id",
         "A catalog item ID must have the format $custom:::$default:::{external_id}."),
    Case("C10", "catalog_create", put(f"{CAT}/attributes/url", "ftp://shop.io/shoe"),
         f"{CAT}/attributes/url", "'url' must be an http(s) URL."),
    Case("C10", "catalog_update", put(f"{CAT}/attributes/images/0", "/img/1.png"),
         f"{CAT}/attributes/images/0", "'images' must be http(s) URLs."),
]  # fmt: skip


@pytest.mark.parametrize("endpoint", list(BODIES))
def test_a_valid_body_passes_every_rule(app: EmulatorApp, endpoint: str) -> None:
    response = post(app, endpoint, BODIES[endpoint]())
    assert response.status == 202, response.body
    assert "X-Klaviyo-Partial-Failure" not in response.headers
    assert app.violations.snapshot() == {}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_a_broken_rule_is_refused_as_klaviyo_does(app: EmulatorApp, case: Case) -> None:
    doc = copy.deepcopy(BODIES[case.endpoint]())
    case.mutate(doc)
    response = post(app, case.endpoint, doc)
    assert response.status == 400, response.body
    errors = errors_of(response)
    assert len(errors) == 1 + case.also, errors
    [error] = [e for e in errors if e["source"]["pointer"] == case.pointer]
    assert error["status"] == 400
    assert error["code"] == "invalid"
    assert error["title"] == "Invalid input."
    if isinstance(case.detail, str):
        assert error["detail"] == case.detail
    else:
        assert case.detail.fullmatch(error["detail"]), error["detail"]
    assert app.violations.snapshot() == {case.endpoint: {case.rule: 1}}


def test_an_invalid_phone_beside_a_valid_email_is_ignored_and_named_in_a_header(
    app: EmulatorApp,
) -> None:
    for endpoint, pointer in [
        ("events", f"{PROFILE}/attributes/phone_number"),
        ("profile_import", f"{ITEM}/attributes/phone_number"),
        ("subscribe", f"{ITEM}/attributes/phone_number"),
    ]:
        doc = BODIES[endpoint]()
        put(pointer, "+1555")(doc)
        response = post(app, endpoint, doc)
        assert response.status == 202, (endpoint, response.body)
        assert response.headers["X-Klaviyo-Partial-Failure"] == "phone_number"
    assert app.violations.snapshot() == {}


def test_free_form_objects_take_any_key(app: EmulatorApp) -> None:
    doc = events_body()
    put(f"{EVENT}/properties/$extra", {"any": {"key": [{"at": "all"}]}})(doc)
    put(f"{PROFILE}/meta/patch_properties/append/new_list", "v")(doc)
    assert post(app, "events", doc).status == 202
    doc = catalog_body("create")
    put(f"{CAT}/attributes/custom_metadata/anything", "goes")(doc)
    assert post(app, "catalog_create", doc).status == 202


def test_a_push_only_subscriber_is_identified_by_its_anonymous_id(app: EmulatorApp) -> None:
    doc = subscribe_body()
    attributes = doc["data"]["attributes"]["profiles"]["data"][0]["attributes"]
    attributes.clear()
    attributes["subscriptions"] = {
        "push": {
            "marketing": {"consent": "SUBSCRIBED"},
            "anonymous_id": "device-1",
            "tokens": [{"token": "t", "platform": "ios", "vendor": "apns"}],
        }
    }
    assert post(app, "subscribe", doc).status == 202, post(app, "subscribe", doc).body


def test_test_domain_events_are_accepted_then_dropped(klaviyo_spec_path: Path) -> None:
    """D2 (opt-in: ``drop_test_email_domains``, since tests send @example.com addresses): an
    @example.com or @test.com profile's events get a 202 but are not kept."""
    app = make_app(klaviyo_spec_path, drop_test_email_domains=True)
    doc = events_body()
    put(f"{PROFILE}/attributes/email", "someone@example.com")(doc)
    assert post(app, "events", doc).status == 202
    assert app.state.records("events") == []
    assert app.state.stats()["test_domain_dropped"] == {"events": 2}
    assert app.violations.snapshot() == {}


def test_count_size_schema_and_json_refusals_are_counted_by_rule(app: EmulatorApp) -> None:
    doc = events_body()
    group = doc["data"]["attributes"]["events-bulk-create"]["data"][0]["attributes"]
    template = group["events"]["data"][0]
    group["events"]["data"] = [
        {**template, "attributes": {**template["attributes"], "unique_id": f"u{i}"}}
        for i in range(1001)
    ]
    assert post(app, "events", doc).status == 400
    assert post(app, "profile_import", b"{" + b" " * 5_000_001 + b"}").status == 413
    wrong_type = import_body()
    wrong_type["data"]["type"] = "profile"
    assert post(app, "profile_import", wrong_type).status == 400
    assert post(app, "catalog_delete", b"{not json").status == 400
    assert app.violations.snapshot() == {
        "events": {"E2": 1},
        "profile_import": {"P2": 1, "schema": 1},
        "catalog_delete": {"json": 1},
    }


def test_unknown_fields_come_in_body_order(app: EmulatorApp) -> None:
    doc = events_body()
    groups = doc["data"]["attributes"]["events-bulk-create"]["data"]
    groups[0]["attributes"]["events"]["data"] = [
        {**groups[0]["attributes"]["events"]["data"][0], "extra": i} for i in range(11)
    ]
    for i, event in enumerate(groups[0]["attributes"]["events"]["data"]):
        event["attributes"] = {**event["attributes"], "unique_id": f"u{i}"}
    response = post(app, "events", doc)
    pointers = [e["source"]["pointer"] for e in errors_of(response)]
    assert pointers == [f"{GROUP}/events/data/{i}/extra" for i in range(11)]
    assert app.violations.snapshot() == {"events": {"X1": 11}}


def test_several_broken_rules_are_each_counted(app: EmulatorApp) -> None:
    doc = events_body()
    put(f"{EVENT}/value_currency", "eur")(doc)
    put(f"{GROUP}/events/data/1/attributes/value_currency", "usd")(doc)
    put(f"{PROFILE}/attributes/locale", "EN")(doc)
    response = post(app, "events", doc)
    assert response.status == 400
    assert len(errors_of(response)) == 3
    assert app.violations.snapshot() == {"events": {"E17": 2, "E9": 1}}


def test_the_control_api_and_client_read_and_reset_the_counts(app: EmulatorApp) -> None:
    doc = catalog_body("delete")
    put(f"{CAT}/id", "sku-1")(doc)
    post(app, "catalog_delete", doc)
    control = ControlApi(app)

    def handler(request: httpx.Request) -> httpx.Response:
        response = control.handle(
            Request(request.method, request.url.path, dict(request.headers), request.content)
        )
        return httpx.Response(response.status, content=response.body, headers=response.headers)

    with EmulatorClient("http://emulator", transport=httpx.MockTransport(handler)) as client:
        assert client.rule_violations() == {"catalog_delete": {"C8": 1}}
        client.reset()
        assert client.rule_violations() == {}


def _readme_rule_ids() -> set[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## What the emulator enforces", 1)[1].split("\n## ", 1)[0]
    table = section.split("cannot enforce", 1)[0]
    return set(re.findall(r"^\| ([A-Z]+\d*|schema|json) \|", table, re.MULTILINE))


def test_the_readme_lists_every_rule_that_has_a_check_and_a_test() -> None:
    listed = _readme_rule_ids()
    tagged = {
        rule_of(check)
        for endpoint in ep.ENDPOINTS
        for check in (*endpoint.item_checks, *endpoint.request_checks)
    }
    assert "?" not in tagged  # every check names its rule
    tested = {case.rule for case in CASES} | {"E2", "P2", "D2", "schema", "json"}
    assert tagged <= tested, tagged - tested
    assert tested <= listed, tested - listed
