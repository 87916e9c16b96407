"""``unsubscribe_scope`` end to end: a real broker, the consumer as its own process, the
emulator as a real HTTP server (Get Profiles for List from its consent state; an Unsubscribe of
a person not in the list unsubscribes them from every list, RULES.md U1).

Ann is subscribed to another list, Bob to the list; then both are unsubscribed from the list.
With ``list`` only Bob's unsubscribe is sent (Ann keeps her other list) and the membership
GET's outage is retried; with ``global`` Ann is unsubscribed everywhere.
"""

from __future__ import annotations

import textwrap
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kafka_klaviyo_dev.kafka import LocalKafka
from kafka_klaviyo_dev.samples import GENERATED_EMAIL_DOMAIN, subscription_changed
from tests.fixtures_emulator import RunningEmulator
from tests.support import Stack, wait_for_commits, wait_until_alive

pytestmark = pytest.mark.integration

SUBSCRIPTION = "shop.events.SubscriptionChanged"
START = datetime(2026, 1, 1, tzinfo=UTC)
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
      unsubscribe_scope: {scope}
"""


@pytest.fixture
def stack(
    kafka_broker: LocalKafka, emulator: RunningEmulator, topic_name: str, tmp_path: Path
) -> Stack:
    return Stack(kafka_broker, emulator, topic_name, tmp_path, partitions=1)


@pytest.mark.parametrize("scope", ["list", "global"])
def test_list_scope_leaves_non_members_alone_and_global_unsubscribes_them_everywhere(
    stack: Stack, tmp_path: Path, scope: str
) -> None:
    run = uuid.uuid4().hex[:8]
    ann, bob = f"ann-{run}@{GENERATED_EMAIL_DOMAIN}", f"bob-{run}@{GENERATED_EMAIL_DOMAIN}"
    the_list, other = f"Scope{run}", f"Other{run}"
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "subscription.yaml").write_text(
        textwrap.dedent(RULE.format(scope=scope)), encoding="utf-8"
    )
    client = stack.klaviyo.client
    if scope == "list":
        client.fail_with_status(503, requests=2, endpoint="list_profiles")

    def change(
        number: int, email: str, list_id: str, action: str
    ) -> tuple[bytes, str, dict[str, Any]]:
        at = START + timedelta(minutes=number)
        record = subscription_changed(
            f"{run}-{number}", list_id, email=email, action=action, occurred_at=at
        )
        return (email.encode(), SUBSCRIPTION, record)

    stack.produce_records(
        [change(0, ann, other, "SUBSCRIBE"), change(1, bob, the_list, "SUBSCRIBE")], partition=0
    )
    with stack.consumer(scope, KAFKA_KLAVIYO_RULES__DIRS=str(rules)) as consumer:
        # Ann's consent on the other list and her unsubscribe from this one are different state
        # keys, which the consumer does not order: the unsubscribes come once both are in.
        wait_until_alive(
            consumer,
            lambda: len(client.consent(person=ann) + client.consent(person=bob)) == 2,
            90,
            "both subscribes accepted",
        )
        stack.produce_records(
            [
                change(2, ann, the_list, "UNSUBSCRIBE"),
                change(3, bob.upper(), the_list, "UNSUBSCRIBE"),
            ],
            partition=0,
        )
        wait_until_alive(
            consumer,
            lambda: client.consent_of(the_list, bob) == "UNSUBSCRIBED",
            90,
            "Bob unsubscribed",
        )
        wait_for_commits(stack, consumer, 60, "all four committed")
        assert consumer.stop() == 0, consumer.output()[-5000:]

    assert stack.dead_letters() == []
    states = {state.list_id: state for state in client.consent(person=ann)}
    unsubscribed = [item["email"] for item in client.items("unsubscribe")]
    lookups = [
        entry["status"] for entry in client.requests() if entry["endpoint"] == "list_profiles"
    ]
    if scope == "list":
        assert unsubscribed == [bob.upper()]
        # Two 503s, then the answer: retried, never dead-lettered.
        assert lookups == [503, 503, 200]
        assert list(states) == [other]
        assert states[other].subscribed and not states[other].globally_unsubscribed
    else:
        assert sorted(unsubscribed) == sorted([ann, bob.upper()])
        assert lookups == []
        assert states[other].consent == "UNSUBSCRIBED" and states[other].globally_unsubscribed
        assert states[the_list].consent == "UNSUBSCRIBED"
    [bob_state] = client.consent(person=bob)
    assert bob_state.list_id == the_list and not bob_state.globally_unsubscribed
