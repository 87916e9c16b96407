"""``unsubscribe_scope: list``: the rule key, the batch key marker, the membership check and the
sender posting only the list's members (RULES.md U1)."""

from __future__ import annotations

import textwrap
import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest

from consumer.batch import Batch, Batcher, Batching, ListOnly, batch_key
from consumer.bodies import LIVE
from consumer.decode import DecodedRecord
from consumer.deliver import membership
from consumer.endpoints import Endpoint
from consumer.messages import Operation
from consumer.rules import RulesError, compile_rules
from consumer.schemas import SchemaCatalog
from tests.fakes import Tickets
from tests.unit.test_sender import ACCOUNT, Klaviyo, RecordingBackoff, _sender, emails_of

RULE = """
rules:
  - name: subscription
    record: shop.events.SubscriptionChanged
    subscription:
      action: action
      channel: channel
      list_id: list_id
      email: email
      phone_number: e164(phone)
{extra}
"""


@pytest.fixture(scope="module")
def catalog() -> SchemaCatalog:
    return SchemaCatalog.load()


def rules(catalog: SchemaCatalog, tmp_path: Path, extra: str = "") -> Any:
    (tmp_path / "r.yaml").write_text(textwrap.dedent(RULE.format(extra=extra)), encoding="utf-8")
    return compile_rules([tmp_path], catalog=catalog, include_defaults=False)


def changed(action: str, channel: str = "EMAIL") -> DecodedRecord:
    data = {
        "event_id": "e",
        "store_id": "s",
        "occurred_at": None,
        "customer_id": "c-1",
        "email": "Ada@Shop.io",
        "phone": "+1 617 253 1000",
        "channel": channel,
        "action": action,
        "list_id": "L1",
        "consented_at": None,
        "source": "footer",
    }
    return DecodedRecord("shop.events.SubscriptionChanged", data, None, b"\0" * 8)


# -- the rule key ----------------------------------------------------------------------------


def test_list_scope_marks_unsubscribes_only(catalog: SchemaCatalog, tmp_path: Path) -> None:
    compiled = rules(catalog, tmp_path, "      unsubscribe_scope: list")
    [unsub] = compiled.translate(changed("UNSUBSCRIBE"))
    [sms] = compiled.translate(changed("UNSUBSCRIBE", "SMS"))
    [sub] = compiled.translate(changed("SUBSCRIBE"))
    assert unsub.endpoint is Endpoint.UNSUBSCRIBE and unsub.list_only
    assert sms.list_only and sms.payload["attributes"]["phone_number"] == "+16172531000"
    assert sub.endpoint is Endpoint.SUBSCRIBE and not sub.list_only


@pytest.mark.parametrize("extra", ["", "      unsubscribe_scope: global"])
def test_global_is_the_default_and_marks_nothing(
    catalog: SchemaCatalog, tmp_path: Path, extra: str
) -> None:
    [unsub] = rules(catalog, tmp_path, extra).translate(changed("UNSUBSCRIBE"))
    assert unsub.endpoint is Endpoint.UNSUBSCRIBE and not unsub.list_only


# YAML: a misspelt word, an expression quoting the word, a boolean, a list.
@pytest.mark.parametrize("value", ["lists", "\"'list'\"", "true", "[list]"])
def test_other_values_are_refused_naming_the_field(
    catalog: SchemaCatalog, tmp_path: Path, value: str
) -> None:
    with pytest.raises(RulesError) as info:
        rules(catalog, tmp_path, f"      unsubscribe_scope: {value}")
    [problem] = [str(p) for p in info.value.problems]
    assert "field 'subscription.unsubscribe_scope': must be one of global, list" in problem


def test_a_misspelt_key_is_an_unknown_key_with_a_suggestion(
    catalog: SchemaCatalog, tmp_path: Path
) -> None:
    with pytest.raises(RulesError) as info:
        rules(catalog, tmp_path, "      unsubscribe_scop: list")
    assert "did you mean 'unsubscribe_scope'?" in str(info.value.problems[0])


# -- the batch key ---------------------------------------------------------------------------


def unsubscribe(email: str, *, list_only: bool, list_id: str = "L1") -> Operation:
    return Operation(
        Endpoint.UNSUBSCRIBE,
        {
            "attributes": {
                "email": email,
                "subscriptions": {"email": {"marketing": {"consent": "UNSUBSCRIBED"}}},
            }
        },
        dedup_key=(list_id, "email", f"email:{email.lower()}"),
        group=list_id,
        list_only=list_only,
    )


def subscribe(email: str, list_id: str = "L1") -> Operation:
    return Operation(
        Endpoint.SUBSCRIBE,
        {
            "attributes": {
                "email": email,
                "subscriptions": {"email": {"marketing": {"consent": "SUBSCRIBED"}}},
            }
        },
        dedup_key=(list_id, "email", f"email:{email.lower()}"),
        group=list_id,
    )


def test_the_marker_wraps_the_list_for_unsubscribes_only() -> None:
    assert batch_key("a", Endpoint.UNSUBSCRIBE, "L1", LIVE, True) == (
        "a",
        Endpoint.UNSUBSCRIBE,
        ListOnly("L1"),
    )
    assert batch_key("a", Endpoint.UNSUBSCRIBE, "L1", LIVE) == ("a", Endpoint.UNSUBSCRIBE, "L1")
    assert batch_key("a", Endpoint.SUBSCRIBE, "L1", LIVE, True) == ("a", Endpoint.SUBSCRIBE, "L1")
    assert ListOnly("L1") != "L1"


def test_list_only_and_global_unsubscribes_never_share_a_batch_but_keep_the_order() -> None:
    b = Batching(linger_s=60)
    tickets = Tickets()
    b.add(ACCOUNT, subscribe("a@shop.io"), tickets())
    b.add(ACCOUNT, unsubscribe("b@shop.io", list_only=False), tickets())
    b.add(ACCOUNT, unsubscribe("c@shop.io", list_only=True), tickets())
    # The same person's list-only unsubscribe after their subscribe: one state key for both.
    closed = b.add(ACCOUNT, unsubscribe("A@shop.io", list_only=True), tickets())
    [sub] = [batch for batch in closed if batch.endpoint is Endpoint.SUBSCRIBE]
    by_key = {batch.key: batch for batch in b.open()}
    only = by_key[(ACCOUNT, Endpoint.UNSUBSCRIBE, ListOnly("L1"))]
    plain = by_key[(ACCOUNT, Endpoint.UNSUBSCRIBE, "L1")]
    assert only.list_only and not plain.list_only
    assert len(only) == 2 and len(plain) == 1
    assert only.after == {sub} and not plain.after


# -- the membership check --------------------------------------------------------------------


def test_the_filter_names_every_value_as_json_text() -> None:
    assert membership.filter_for("email", ["a@x.io", 'q"@x.io']) == (
        'any(email,["a@x.io","q\\"@x.io"])'
    )
    params = membership.params_for("phone_number", ["+14155552671"])
    assert params == {
        "filter": 'any(phone_number,["+14155552671"])',
        "fields[profile]": "phone_number",
        "page[size]": "100",
    }


def test_long_value_lists_are_cut_into_short_filters() -> None:
    values = [f"{'x' * 60}{n}@shop.io" for n in range(100)]
    runs = membership.chunks(values)
    assert [v for run in runs for v in run] == values
    assert len(runs) > 1
    assert all(
        len(membership.filter_for("email", run)) < membership.MAX_FILTER_CHARS + 40 for run in runs
    )
    assert membership.chunks([f"{n}@x.io" for n in range(150)], 10**9)[0] == [
        f"{n}@x.io" for n in range(100)
    ]


def list_only_batch(*emails: str) -> Batch:
    batcher = Batcher(ACCOUNT, Endpoint.UNSUBSCRIBE, linger_s=60, group="L1", list_only=True)
    tickets = Tickets()
    for email in emails:
        batcher.add(unsubscribe(email, list_only=True), tickets())
    batch = batcher.take_open()
    assert batch is not None and batch.list_only
    return batch


def members_answer(
    members: list[str], gets: list[dict[str, list[str]]], *, fail_first: int = 0
) -> Any:
    failures = [fail_first]

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(202, json={"data": {"id": "job"}})
        if failures[0]:
            failures[0] -= 1
            return httpx.Response(503)
        assert request.url.path == "/api/lists/L1/profiles"
        gets.append(parse_qs(urlsplit(str(request.url)).query))
        data = [
            {"type": "profile", "id": m, "attributes": {"email": m}, "links": {"self": "x"}}
            for m in members
        ]
        return httpx.Response(200, json={"data": data, "links": {"self": "x"}})

    return answer


class Recorder(Klaviyo):
    """Klaviyo answering GETs too (the base class reads every body as JSON)."""

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            if request.method == "POST":
                self.bodies.append(request.content)
        return self.answer(request, None)


def test_only_members_are_posted_and_the_rest_are_skipped() -> None:
    gets: list[dict[str, list[str]]] = []
    # Klaviyo answers with its own case: members are matched without regard to it.
    klaviyo = Recorder(lambda request, _: members_answer(["ann@shop.io"], gets)(request))
    sender = _sender(klaviyo)
    batch = list_only_batch("Ann@Shop.io", "bob@shop.io")
    outcome = sender.deliver(batch, threading.Event())
    [query] = gets
    assert query["filter"] == ['any(email,["Ann@Shop.io","bob@shop.io"])']
    assert query["page[size]"] == ["100"] and query["fields[profile]"] == ["email"]
    assert [emails_of(body) for body in klaviyo.bodies] == [["Ann@Shop.io"]]
    assert [e.item for e in outcome.delivered] == [batch.entries[0].item]
    assert [e.item for e in outcome.skipped] == [batch.entries[1].item]


def test_a_batch_of_non_members_posts_nothing() -> None:
    gets: list[dict[str, list[str]]] = []
    klaviyo = Recorder(lambda request, _: members_answer([], gets)(request))
    outcome = _sender(klaviyo).deliver(list_only_batch("a@shop.io", "b@shop.io"), threading.Event())
    assert klaviyo.bodies == [] and outcome.requests == 0
    assert len(outcome.skipped) == 2 and outcome.delivered == []


def test_an_outage_of_the_membership_get_is_retried_never_refused() -> None:
    gets: list[dict[str, list[str]]] = []
    backoff = RecordingBackoff()
    # One answer for the whole test: its count of failures left runs down.
    answer = members_answer(["a@shop.io"], gets, fail_first=3)
    klaviyo = Recorder(lambda request, _: answer(request))
    outcome = _sender(klaviyo, backoff=backoff).deliver(
        list_only_batch("a@shop.io"), threading.Event()
    )
    assert backoff.attempts == [0, 1, 2] and len(gets) == 1
    assert len(outcome.delivered) == 1 and outcome.skipped == [] and outcome.rejected == []


def test_a_plain_unsubscribe_batch_asks_nothing() -> None:
    gets: list[dict[str, list[str]]] = []
    klaviyo = Recorder(lambda request, _: members_answer([], gets)(request))
    batcher = Batcher(ACCOUNT, Endpoint.UNSUBSCRIBE, linger_s=60, group="L1")
    batcher.add(unsubscribe("a@shop.io", list_only=False), Tickets()())
    batch = batcher.take_open()
    assert batch is not None
    outcome = _sender(klaviyo).deliver(batch, threading.Event())
    assert gets == [] and len(klaviyo.bodies) == 1 and len(outcome.delivered) == 1


def test_members_follow_the_next_page() -> None:
    pages = {
        None: {
            "data": [{"type": "profile", "attributes": {"email": "A@x.io"}}],
            "links": {"next": "https://k/api/lists/L1/profiles?page%5Bcursor%5D=2&filter=f"},
        },
        "2": {"data": [{"type": "profile", "attributes": {"email": "b@x.io"}}], "links": {}},
    }
    seen: list[dict[str, str]] = []

    def call(account: str, request: Any, cancelled: threading.Event) -> Any:
        class Client:
            def get(self, path: str, params: dict[str, str]) -> Any:
                seen.append(params)
                document = pages[params.get("page[cursor]")]
                return httpx.Response(200, json=document), document

        class Answer:
            def __init__(self, document: Any) -> None:
                self.document = document

        _, document = request(Client())
        return Answer(document)

    entries = list_only_batch("a@x.io", "b@x.io", "c@x.io").entries
    inside, outside = membership.Membership(call).split(ACCOUNT, "L1", entries, threading.Event())
    assert len(inside) == 2 and len(outside) == 1 and outside[0] is entries[2]
    assert seen[1] == {"page[cursor]": "2", "filter": "f"}
    assert orjson.loads(entries[2].item.json)["attributes"]["email"] == "c@x.io"
