"""The emulator's Get Profiles for List and its model of U1 (an unsubscribe of a non-member is
global), through its own pipeline in process."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from kafka_klaviyo_dev.emulator import lists
from kafka_klaviyo_dev.emulator.app import EmulatorApp, Request
from kafka_klaviyo_dev.emulator.config import EmulatorConfig, RateLimitSettings
from tests.unit.test_emulator_final_state import KEYS, control, send, subscription


@pytest.fixture
def app() -> EmulatorApp:
    return EmulatorApp(EmulatorConfig(api_keys=KEYS, rate_limits=RateLimitSettings(enabled=False)))


def get(app: EmulatorApp, path: str, **query: str) -> tuple[int, Any]:
    request = Request(
        "GET",
        path,
        {"authorization": "Klaviyo-API-Key pk_acme", "revision": app.config.revision},
        query={k: [v] for k, v in query.items()},
    )
    response = app.handle_api(request)
    return response.status, orjson.loads(response.body)


def emails(document: Any) -> list[str]:
    return sorted(r["attributes"]["email"] for r in document["data"])


def test_members_are_the_people_subscribed_via_the_list(app: EmulatorApp) -> None:
    send(app, *subscription("subscribe", "L1", email="Ann@Shop.io"))
    send(app, *subscription("subscribe", "L1", email="bob@shop.io"))
    send(app, *subscription("subscribe", "L2", email="cy@shop.io"))
    send(app, *subscription("subscribe", "L1", email="dee@shop.io"))
    send(app, *subscription("unsubscribe", "L1", email="dee@shop.io"))  # removed (U5)
    status, doc = get(
        app,
        "/api/lists/L1/profiles",
        filter='any(email,["ANN@shop.io","cy@shop.io","dee@shop.io","nobody@shop.io"])',
        **{"page[size]": "100"},
    )
    assert status == 200
    assert emails(doc) == ["ann@shop.io"]
    [resource] = doc["data"]
    assert resource["type"] == "profile" and resource["links"]["self"]
    assert resource["attributes"]["joined_group_at"]
    status, doc = get(app, "/api/lists/L1/profiles", filter="equals(email,'bob@shop.io')")
    assert (status, emails(doc)) == (200, ["bob@shop.io"])
    status, doc = get(app, "/api/lists/L1/profiles")
    assert emails(doc) == ["ann@shop.io", "bob@shop.io"]


def test_phone_numbers_name_sms_members_exactly(app: EmulatorApp) -> None:
    send(app, *subscription("subscribe", "L1", phone="+14155552671", channels=("sms",)))
    send(app, *subscription("subscribe", "L1", email="ann@shop.io"))
    status, doc = get(
        app, "/api/lists/L1/profiles", filter='any(phone_number,["+14155552671","+14155550000"])'
    )
    assert status == 200
    assert [r["attributes"]["phone_number"] for r in doc["data"]] == ["+14155552671"]


def test_pages_link_to_the_next_with_the_filter_encoded(app: EmulatorApp) -> None:
    for n in range(3):
        send(app, *subscription("subscribe", "L1", email=f"a+{n}@shop.io"))
    wanted = 'any(email,["a+0@shop.io","a+1@shop.io","a+2@shop.io"])'
    status, doc = get(app, "/api/lists/L1/profiles", filter=wanted, **{"page[size]": "2"})
    assert status == 200 and len(doc["data"]) == 2
    # The consumer follows links.next: it must carry the same filter, '+' intact.
    from consumer.deliver.membership import next_page

    query = next_page(doc)
    assert query is not None and query["filter"] == wanted
    status, rest = get(app, "/api/lists/L1/profiles", **query)
    assert status == 200 and len(rest["data"]) == 1 and "next" not in rest["links"]


@pytest.mark.parametrize(
    "bad",
    [
        "greater-than(email,'x')",
        "any(first_name,['x'])",
        "any(email,[x])",
        "equals(email,['a','b'])",
    ],
)
def test_filters_it_does_not_serve_are_refused_naming_the_parameter(
    app: EmulatorApp, bad: str
) -> None:
    status, doc = get(app, "/api/lists/L1/profiles", filter=bad)
    assert status == 400
    assert doc["errors"][0]["source"]["parameter"] == "filter"


def test_page_size_over_100_is_refused(app: EmulatorApp) -> None:
    status, doc = get(app, "/api/lists/L1/profiles", **{"page[size]": "101"})
    assert status == 400 and doc["errors"][0]["source"]["parameter"] == "page[size]"


def test_the_route_has_the_specs_rate_limits(app: EmulatorApp) -> None:
    limits = app.limits_for("list_profiles")
    assert (limits.burst, limits.steady) == (75, 750)


def test_parse_filter_reads_both_quotes_and_escapes() -> None:
    assert lists.parse_filter('any(email,["A@x.io", "b\\"q@x.io"])') == (
        "email",
        {"a@x.io", 'b"q@x.io'},
    )
    assert lists.parse_filter("equals(phone_number,'+14155552671')") == (
        "phone_number",
        {"+14155552671"},
    )
    assert lists.parse_filter(None) is None


def _consent(app: EmulatorApp) -> dict[tuple[str, str], dict[str, Any]]:
    return {(e["list_id"], e["person"]): e for e in control(app, "consent")}


def test_an_unsubscribe_of_a_non_member_is_global(app: EmulatorApp) -> None:
    send(app, *subscription("subscribe", "L1", email="ann@shop.io"))
    send(app, *subscription("subscribe", "L2", email="ann@shop.io"))
    send(app, *subscription("subscribe", "L1", email="bob@shop.io"))
    # Ann is not in L3: Klaviyo unsubscribes her from every list (U1).
    send(app, *subscription("unsubscribe", "L3", email="ann@shop.io"))
    state = _consent(app)
    for list_id in ("L1", "L2", "L3"):
        entry = state[(list_id, "ann@shop.io")]
        assert entry["consent"] == "UNSUBSCRIBED"
        assert entry["globally_unsubscribed"] is True
        assert entry["history"][-1]["global"] is True
        assert entry["history"][-1]["via_list"] == "L3"
    assert state[("L1", "bob@shop.io")]["consent"] == "SUBSCRIBED"
    assert state[("L1", "bob@shop.io")]["globally_unsubscribed"] is False


def test_an_unsubscribe_of_a_member_ends_only_that_list(app: EmulatorApp) -> None:
    send(app, *subscription("subscribe", "L1", email="ann@shop.io"))
    send(app, *subscription("subscribe", "L2", email="ann@shop.io"))
    send(app, *subscription("unsubscribe", "L2", email="ann@shop.io"))
    state = _consent(app)
    assert state[("L1", "ann@shop.io")]["consent"] == "SUBSCRIBED"
    assert state[("L2", "ann@shop.io")]["consent"] == "UNSUBSCRIBED"
    assert state[("L2", "ann@shop.io")]["globally_unsubscribed"] is False
    assert "global" not in state[("L2", "ann@shop.io")]["history"][-1]


def test_a_global_unsubscribe_keeps_to_its_channel_and_a_later_subscribe_wins(
    app: EmulatorApp,
) -> None:
    send(
        app,
        *subscription(
            "subscribe", "L1", email="ann@shop.io", phone="+14155552671", channels=("email", "sms")
        ),
    )
    send(app, *subscription("unsubscribe", "L9", email="ann@shop.io"))
    state = {(e["list_id"], e["channel"]): e for e in control(app, "consent")}
    assert state[("L1", "email")]["consent"] == "UNSUBSCRIBED"
    assert state[("L1", "sms")]["consent"] == "SUBSCRIBED"
    send(app, *subscription("subscribe", "L1", email="ann@shop.io"))
    again = _consent(app)[("L1", "ann@shop.io")]
    assert again["consent"] == "SUBSCRIBED" and again["globally_unsubscribed"] is False
