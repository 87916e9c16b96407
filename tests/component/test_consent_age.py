"""Old consent in a live run: a historical import of its own, and the last consent still wins.

The real service (``build_service``, the runner, batching, scheduler, sender) over the fake
broker and the emulator's app (schema validation and Klaviyo's consent rules on: a
``consented_at`` outside a historical import, or a historical import without one, is refused).
``rules.consent.historical_after_s`` is an hour here.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from consumer.exit_codes import EXIT_OK
from tests.component import records
from tests.component.conftest import Stack, settings, wait_until

LIST = "LIST1"
SUBSCRIBE_PATH = "/api/profile-subscription-bulk-create-jobs"
CONFIG = settings(rules={"consent": {"historical_after_s": 3600}})


def subscription(action: str, email: str, consented: datetime) -> bytes:
    return records.encode(
        "SubscriptionChanged",
        {
            "event_id": uuid.uuid4().hex,
            "store_id": "acme",
            "occurred_at": consented,
            "customer_id": None,
            "email": email,
            "phone": None,
            "channel": "EMAIL",
            "action": action,
            "list_id": LIST,
            "consented_at": consented,
            "source": "footer",
        },
    )


def subscribed_items(stack: Stack, email: str) -> list[dict[str, Any]]:
    """The Subscribe items accepted for ``email``, in the order Klaviyo accepted them."""
    items = [i for i in stack.klaviyo.client.items("subscribe") if i["email"] == email]
    return sorted(items, key=lambda item: int(item["seq"]))


def test_live_and_old_consent_go_in_two_requests_of_their_kinds(stack: Stack) -> None:
    now = datetime.now(UTC)
    old = (now - timedelta(days=3)).replace(microsecond=0)
    stack.produce(subscription("SUBSCRIBE", "old@shop.example", old))
    stack.produce(subscription("SUBSCRIBE", "new@shop.example", now - timedelta(minutes=1)))
    runner = stack.start(CONFIG)
    wait_until(lambda: stack.committed(0) == 2, what="both committed")
    assert stack.stop(runner) == EXIT_OK

    assert stack.dead_letters() == []
    assert [path for path, _ in stack.klaviyo.log if path == SUBSCRIBE_PATH] == [SUBSCRIBE_PATH] * 2
    assert all(status == 202 for path, status in stack.klaviyo.log if path == SUBSCRIBE_PATH)
    [historical] = subscribed_items(stack, "old@shop.example")
    assert historical["historical_import"] is True
    marketing = historical["subscriptions"]["email"]["marketing"]
    assert datetime.fromisoformat(marketing["consented_at"]) == old
    [live] = subscribed_items(stack, "new@shop.example")
    assert live["historical_import"] is None
    assert live["subscriptions"]["email"]["marketing"] == {"consent": "SUBSCRIBED"}
    assert stack.klaviyo.client.consent_of(LIST, "old@shop.example") == "SUBSCRIBED"
    assert stack.klaviyo.client.consent_of(LIST, "new@shop.example") == "SUBSCRIBED"


def test_the_last_consent_of_a_person_wins_across_the_two_kinds(stack: Stack) -> None:
    client = stack.klaviyo.client
    # The first Subscribe request (erin's old consent) is slow: a later request that did not
    # wait for it would be accepted first.
    client.add_latency(0.5, requests=1, endpoint="subscribe")
    now = datetime.now(UTC)
    week_ago = now - timedelta(days=7)
    stack.produce(subscription("SUBSCRIBE", "erin@shop.example", week_ago))
    stack.produce(subscription("SUBSCRIBE", "erin@shop.example", now - timedelta(seconds=30)))
    # Old consent, then an unsubscribe, then old consent again: subscribed in the end.
    stack.produce(subscription("SUBSCRIBE", "fay@shop.example", week_ago))
    stack.produce(subscription("UNSUBSCRIBE", "fay@shop.example", now))
    stack.produce(subscription("SUBSCRIBE", "fay@shop.example", week_ago + timedelta(hours=1)))
    # Live consent, then an unsubscribe: unsubscribed in the end.
    stack.produce(subscription("SUBSCRIBE", "gus@shop.example", now - timedelta(seconds=30)))
    stack.produce(subscription("UNSUBSCRIBE", "gus@shop.example", now))
    runner = stack.start(CONFIG)
    wait_until(lambda: stack.committed(0) == 7, what="all seven committed")
    assert stack.stop(runner) == EXIT_OK

    assert stack.dead_letters() == []
    erin = subscribed_items(stack, "erin@shop.example")
    assert [item["historical_import"] for item in erin] == [True, None]
    [state] = client.consent(list_id=LIST, person="erin@shop.example")
    assert state.subscribed and state.seq == erin[-1]["seq"]  # the live one, last
    assert client.consent_of(LIST, "fay@shop.example") == "SUBSCRIBED"
    assert [step["consent"] for step in client.consent(person="fay@shop.example")[0].history] == [
        "SUBSCRIBED",
        "UNSUBSCRIBED",
        "SUBSCRIBED",
    ]
    assert client.consent_of(LIST, "gus@shop.example") == "UNSUBSCRIBED"
