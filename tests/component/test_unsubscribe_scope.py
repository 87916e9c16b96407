"""``unsubscribe_scope``: list-only unsubscribes leave non-members alone; global ones do not.

The real service over the fake broker and the emulator's app, which answers Get Profiles for
List from its consent state and models RULES.md U1 (an Unsubscribe of a person not in the list
unsubscribes them from every list). Ann is subscribed to two lists, Bob to one; then both are
unsubscribed from LIST1, where only Bob is a member.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from consumer.exit_codes import EXIT_OK
from consumer.settings import Settings
from tests.component import records
from tests.component.conftest import Stack, settings, wait_until

LIST, OTHER = "LIST1", "LIST2"
ANN, BOB = "ann@shop.example", "Bob@Shop.example"
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


def config(tmp_path: Path, scope: str) -> Settings:
    (tmp_path / "subscription.yaml").write_text(
        textwrap.dedent(RULE.format(scope=scope)), encoding="utf-8"
    )
    return settings(rules={"dirs": (tmp_path,)})


def run(stack: Stack, tmp_path: Path, scope: str) -> float:
    """Subscribe, then unsubscribe both from LIST1; the skipped count of the run."""
    stack.produce(records.subscription("SUBSCRIBE", ANN, list_id=OTHER))
    stack.produce(records.subscription("SUBSCRIBE", BOB, list_id=LIST))
    runner = stack.start(config(tmp_path, scope))
    # Ann's LIST2 consent and her LIST1 unsubscribe are different state keys, not ordered by
    # the consumer: the unsubscribes come once the subscribes are in.
    wait_until(lambda: stack.committed(0) == 2, what="the subscribes committed")
    stack.produce(records.subscription("UNSUBSCRIBE", ANN, list_id=LIST, seconds=1))
    stack.produce(records.subscription("UNSUBSCRIBE", BOB.lower(), list_id=LIST, seconds=1))
    wait_until(lambda: stack.committed(0) == 4, what="all four committed")
    skipped = runner.metrics.total("kafka_klaviyo_unsubscribes_skipped", account="default")
    assert stack.stop(runner) == EXIT_OK
    assert stack.dead_letters() == []
    return skipped


def test_list_scope_unsubscribes_members_and_leaves_non_members_untouched(
    stack: Stack, tmp_path: Path
) -> None:
    skipped = run(stack, tmp_path, "list")
    client = stack.klaviyo.client
    assert skipped == 1
    # Only Bob was sent (his address in the case of his own message), after the lookup.
    assert [item["email"] for item in client.items("unsubscribe")] == [BOB.lower()]
    assert [path for path, _ in stack.klaviyo.log if "/api/lists/" in path] == [
        f"/api/lists/{LIST}/profiles"
    ]
    assert client.consent_of(LIST, BOB) == "UNSUBSCRIBED"
    # Ann, not in LIST1, keeps her LIST2 consent and was never unsubscribed anywhere.
    [ann] = client.consent(person=ANN)
    assert (ann.list_id, ann.consent, ann.globally_unsubscribed) == (OTHER, "SUBSCRIBED", False)


def test_global_scope_unsubscribes_a_non_member_from_every_list(
    stack: Stack, tmp_path: Path
) -> None:
    skipped = run(stack, tmp_path, "global")
    client = stack.klaviyo.client
    assert skipped == 0
    assert sorted(item["email"] for item in client.items("unsubscribe")) == [ANN, BOB.lower()]
    assert not [path for path, _ in stack.klaviyo.log if "/api/lists/" in path]
    ann = {state.list_id: state for state in client.consent(person=ANN)}
    assert ann[OTHER].consent == "UNSUBSCRIBED" and ann[OTHER].globally_unsubscribed
    assert ann[LIST].consent == "UNSUBSCRIBED"
    bob = client.consent(person=BOB)
    assert [(s.list_id, s.consent, s.globally_unsubscribed) for s in bob] == [
        (LIST, "UNSUBSCRIBED", False)
    ]
