"""Batching keeps per-key state order between batches: later operations wait for earlier ones."""

from __future__ import annotations

import random
import time
from typing import Any

import orjson
import pytest

from consumer.batch import Batch, Batching
from consumer.endpoints import Endpoint
from consumer.messages import EventPayload, Operation
from tests.fakes import Tickets

ACCOUNT = "default"
PREFIX = "$custom:::$default:::"


@pytest.fixture()
def tickets() -> Tickets:
    return Tickets()


# -- operations, shaped as the rules build them ----------------------------------------------


def subscribe(email: str, list_id: str, v: int = 0) -> Operation:
    consent = {"email": {"marketing": {"consent": "SUBSCRIBED", "v": v}}}
    return Operation(
        Endpoint.SUBSCRIBE,
        {"attributes": {"email": email, "subscriptions": consent}},
        dedup_key=(list_id, "email", email.lower()),
        group=list_id,
    )


def unsubscribe(email: str, list_id: str, v: int = 0) -> Operation:
    consent = {"email": {"marketing": {"consent": "UNSUBSCRIBED", "v": v}}}
    return Operation(
        Endpoint.UNSUBSCRIBE,
        {"attributes": {"email": email, "subscriptions": consent}},
        dedup_key=(list_id, "email", email.lower()),
        group=list_id,
    )


def catalog_create(external_id: str, v: int = 0) -> Operation:
    attributes = {"external_id": external_id, "title": "T", "v": v}
    return Operation(
        Endpoint.CATALOG_CREATE, {"attributes": attributes}, dedup_key=(PREFIX + external_id,)
    )


def catalog_update(external_id: str, v: int = 0) -> Operation:
    item_id = PREFIX + external_id
    return Operation(
        Endpoint.CATALOG_UPDATE, {"id": item_id, "attributes": {"v": v}}, dedup_key=(item_id,)
    )


def catalog_delete(external_id: str, v: int = 0) -> Operation:
    item_id = PREFIX + external_id
    return Operation(Endpoint.CATALOG_DELETE, {"id": item_id, "meta": {"v": v}}, (item_id,))


def profile(email: str, v: int = 0) -> Operation:
    return Operation(
        Endpoint.PROFILES,
        {"attributes": {"email": email, "properties": {"v": v}}},
        dedup_key=(email.lower(),),
    )


def event(email: str, unique_id: str, v: int = 0) -> Operation:
    return Operation(
        Endpoint.EVENTS,
        EventPayload({"email": email}, {"unique_id": unique_id, "properties": {"v": v}}),
        dedup_key=(email, "Placed Order", unique_id),
    )


def open_batch(batching: Batching, endpoint: Endpoint) -> Batch:
    (batch,) = [b for b in batching.open() if b.endpoint is endpoint]
    return batch


# -- across endpoints ------------------------------------------------------------------------


def test_unsubscribe_after_subscribe_waits_for_it_and_closes_the_subscribe_batch(tickets) -> None:
    batching = Batching(linger_s=60)
    assert batching.add(ACCOUNT, subscribe("a@x.dev", "L1"), tickets()) == []
    sub = open_batch(batching, Endpoint.SUBSCRIBE)
    closed = batching.add(ACCOUNT, unsubscribe("a@x.dev", "L1"), tickets())
    assert closed == [sub]  # closed there and then: only closed batches are waited for
    unsub = open_batch(batching, Endpoint.UNSUBSCRIBE)
    assert unsub.after == {sub}
    assert sub.dependents == [unsub]
    assert sub not in batching.open()


def test_unsubscribe_of_another_person_or_list_does_not_wait(tickets) -> None:
    batching = Batching(linger_s=60)
    batching.add(ACCOUNT, subscribe("a@x.dev", "L1"), tickets())
    assert batching.add(ACCOUNT, unsubscribe("b@x.dev", "L1"), tickets()) == []
    assert batching.add(ACCOUNT, unsubscribe("a@x.dev", "L2"), tickets()) == []
    assert all(batch.after == set() for batch in batching.open())


def test_same_key_in_another_account_does_not_wait(tickets) -> None:
    batching = Batching(linger_s=60)
    batching.add("one", subscribe("a@x.dev", "L1"), tickets())
    assert batching.add("two", unsubscribe("a@x.dev", "L1"), tickets()) == []
    assert all(batch.after == set() for batch in batching.open())


@pytest.mark.parametrize("first", [catalog_create, catalog_update], ids=["create", "update"])
def test_catalog_delete_after_create_or_update_waits_for_it(tickets, first) -> None:
    batching = Batching(linger_s=60)
    batching.add(ACCOUNT, first("sku-1"), tickets())
    earlier = open_batch(batching, first("sku-1").endpoint)
    assert batching.add(ACCOUNT, catalog_delete("sku-1"), tickets()) == [earlier]
    delete = open_batch(batching, Endpoint.CATALOG_DELETE)
    assert delete.after == {earlier}
    assert earlier.dependents == [delete]


def test_catalog_upsert_after_delete_waits_for_the_delete(tickets) -> None:
    batching = Batching(linger_s=60)
    batching.add(ACCOUNT, catalog_delete("sku-1"), tickets())
    delete = open_batch(batching, Endpoint.CATALOG_DELETE)
    ticket = tickets()
    assert batching.add(ACCOUNT, catalog_create("sku-1"), ticket) == [delete]
    assert batching.add(ACCOUNT, catalog_update("sku-1"), ticket) == []
    assert open_batch(batching, Endpoint.CATALOG_CREATE).after == {delete}
    assert open_batch(batching, Endpoint.CATALOG_UPDATE).after == {delete}


def test_profile_upsert_in_a_later_batch_waits_for_the_earlier_batch(tickets) -> None:
    batching = Batching(linger_s=60)
    batching.add(ACCOUNT, profile("a@x.dev", 1), tickets())
    (first,) = batching.due(now=float("inf"))
    assert batching.add(ACCOUNT, profile("a@x.dev", 2), tickets()) == []
    second = open_batch(batching, Endpoint.PROFILES)
    assert second is not first
    assert second.after == {first}
    assert first.dependents == [second]


def test_two_operations_of_one_message_on_one_key_do_not_wait_for_each_other(tickets) -> None:
    batching = Batching(linger_s=60)
    ticket = tickets()  # a catalog upsert: create + update from one message
    assert batching.add(ACCOUNT, catalog_create("sku-1"), ticket) == []
    assert batching.add(ACCOUNT, catalog_update("sku-1"), ticket) == []
    create = open_batch(batching, Endpoint.CATALOG_CREATE)
    update = open_batch(batching, Endpoint.CATALOG_UPDATE)
    assert create.after == set() and update.after == set()
    assert create.dependents == [] and update.dependents == []


def test_fold_into_the_open_batch_holding_the_key_creates_no_self_dependency(tickets) -> None:
    batching = Batching(linger_s=60)
    batching.add(ACCOUNT, profile("a@x.dev", 1), tickets())
    assert batching.add(ACCOUNT, profile("a@x.dev", 2), tickets()) == []
    assert batching.add(ACCOUNT, profile("a@x.dev", 3), tickets()) == []
    batch = open_batch(batching, Endpoint.PROFILES)
    assert len(batch.entries) == 1
    assert batch.after == set()
    assert batch.dependents == []


def test_fold_after_an_intervening_endpoint_waits_only_for_that_other_batch(tickets) -> None:
    batching = Batching(linger_s=60)
    batching.add(ACCOUNT, subscribe("a@x.dev", "L1", 1), tickets())
    sub = open_batch(batching, Endpoint.SUBSCRIBE)
    batching.add(ACCOUNT, unsubscribe("a@x.dev", "L1", 2), tickets())
    unsub = open_batch(batching, Endpoint.UNSUBSCRIBE)
    # A third message unsubscribes again: it folds into the open unsubscribe batch.
    assert batching.add(ACCOUNT, unsubscribe("a@x.dev", "L1", 3), tickets()) == []
    assert len(unsub.entries) == 1
    assert unsub.after == {sub}
    assert unsub not in unsub.after


def test_events_never_wait(tickets) -> None:
    batching = Batching(linger_s=60)
    batching.add(ACCOUNT, event("a@x.dev", "1", 1), tickets())
    (first,) = batching.due(now=float("inf"))
    for v in range(5):
        assert not batching.add(ACCOUNT, event("a@x.dev", "1", v), tickets())
    batching.add(ACCOUNT, profile("a@x.dev"), tickets())
    assert all(batch.after == set() for batch in [first, *batching.open()])
    assert first.dependents == []
    assert batching.held_keys() == 1  # the profile only


# -- bookkeeping -----------------------------------------------------------------------------


def test_finished_batches_no_longer_hold_their_keys(tickets) -> None:
    batching = Batching(linger_s=60)
    batching.add(ACCOUNT, subscribe("a@x.dev", "L1"), tickets())
    [sub] = batching.add(ACCOUNT, unsubscribe("a@x.dev", "L1"), tickets())
    batching.add(ACCOUNT, profile("b@x.dev"), tickets())
    assert batching.held_keys() == 2
    rest = batching.close_all()
    batching.finished(sub)
    assert batching.held_keys() == 2  # the unsubscribe still holds the consent key
    for batch in rest:
        batching.finished(batch)
    assert batching.held_keys() == 0
    # Nothing unfinished holds the key: a new subscribe waits for nothing.
    batching.add(ACCOUNT, subscribe("a@x.dev", "L1"), tickets())
    assert open_batch(batching, Endpoint.SUBSCRIBE).after == set()


def test_batchers_of_idle_lists_are_dropped(tickets) -> None:
    batching = Batching(linger_s=60)
    for i in range(1000):
        batching.add(ACCOUNT, subscribe("a@x.dev", f"list-{i}"), tickets())
    assert batching.batchers() == 1000
    due = batching.due(now=float("inf"))
    assert len(due) == 1000
    assert batching.batchers() == 0
    for batch in due:
        batching.finished(batch)
    assert batching.held_keys() == 0


def test_equal_dedup_keys_fold_whatever_the_email_case(tickets) -> None:
    batching = Batching(linger_s=60)
    batching.add(ACCOUNT, subscribe("John@Example.dev", "L1"), tickets())
    batching.add(ACCOUNT, subscribe("john@example.dev", "L1"), tickets())
    batch = open_batch(batching, Endpoint.SUBSCRIBE)
    assert len(batch.entries) == 1
    assert len(list(batch.entries[0].all_tickets())) == 2
    assert batch.after == set()
    assert batching.held_keys() == 1
    batching.add(ACCOUNT, subscribe("jane@example.dev", "L1"), tickets())
    assert len(batch.entries) == 2


# -- no cycles, latest state wins ------------------------------------------------------------

_EMAILS = [f"p{i}@x.dev" for i in range(6)]
_LISTS = ["L1", "L2"]
_SKUS = [f"sku-{i}" for i in range(150)]  # enough to fill catalog batches (100 items)


def _random_message(rng: random.Random, v: int) -> list[Operation]:
    kind = rng.randrange(6)
    if kind == 0:
        return [rng.choice([subscribe, unsubscribe])(rng.choice(_EMAILS), rng.choice(_LISTS), v)]
    if kind == 1:
        sku = rng.choice(_SKUS[:4] if rng.random() < 0.7 else _SKUS)
        return [catalog_create(sku, v), catalog_update(sku, v)]  # an upsert
    if kind == 2:
        sku = rng.choice(_SKUS[:4] if rng.random() < 0.7 else _SKUS)
        return [rng.choice([catalog_create, catalog_update, catalog_delete])(sku, v)]
    if kind == 3:
        return [profile(rng.choice(_EMAILS), v)]
    if kind == 4:
        email = rng.choice(_EMAILS)
        return [profile(email, v), subscribe(email, rng.choice(_LISTS), v)]
    return [event(rng.choice(_EMAILS), str(rng.randrange(3)), v)]


def _state_of(operation: Operation) -> tuple[Any, ...] | None:
    state = operation.state_key
    return None if state is None else (ACCOUNT, *state)


def _applied(batch: Batch) -> list[tuple[tuple[Any, ...], str]]:
    """(state key, value) for each item of the batch, as Klaviyo would apply it."""
    out = []
    for entry in batch.entries:
        item = orjson.loads(entry.item.json)
        spec = batch.endpoint.spec
        attributes = item.get("attributes", {})
        if spec.state == "consent":
            consent = attributes["subscriptions"]["email"]["marketing"]
            key = (batch.group, "email", attributes["email"].lower())
            value = f"{consent['consent']}@{consent['v']}"
        elif spec.state == "catalog":
            item_id = item.get("id") or PREFIX + attributes["external_id"]
            key = (item_id,)
            if batch.endpoint is Endpoint.CATALOG_DELETE:
                value = f"deleted@{item['meta']['v']}"
            else:
                value = f"item@{attributes['v']}"
        elif spec.state == "profile":
            key = (attributes["email"].lower(),)
            value = f"profile@{attributes['properties']['v']}"
        else:
            continue
        out.append(((ACCOUNT, spec.state, *key), value))
    return out


def _expected_value(operation: Operation, v: int) -> str:
    endpoint = operation.endpoint
    if endpoint is Endpoint.SUBSCRIBE:
        return f"SUBSCRIBED@{v}"
    if endpoint is Endpoint.UNSUBSCRIBE:
        return f"UNSUBSCRIBED@{v}"
    if endpoint is Endpoint.CATALOG_DELETE:
        return f"deleted@{v}"
    if endpoint in (Endpoint.CATALOG_CREATE, Endpoint.CATALOG_UPDATE):
        return f"item@{v}"
    return f"profile@{v}"


@pytest.mark.parametrize("seed", range(25))
def test_waits_never_form_a_cycle_and_the_last_message_wins(seed: int) -> None:
    rng = random.Random(seed)
    batching = Batching(linger_s=60)
    tickets = Tickets()
    closed: list[Batch] = []
    delivered: set[Batch] = set()
    klaviyo: dict[tuple[Any, ...], str] = {}
    expected: dict[tuple[Any, ...], str] = {}

    def deliver_one() -> bool:
        ready = [b for b in closed if b not in delivered and not b.after]
        if not ready:
            return False
        batch = rng.choice(ready)
        for key, value in _applied(batch):
            klaviyo[key] = value
        delivered.add(batch)
        for dependent in batch.dependents:  # what the scheduler does when it collects
            dependent.after.discard(batch)
        batch.dependents.clear()
        batching.finished(batch)
        return True

    for v in range(600):
        step = rng.random()
        if step < 0.6:
            ticket = tickets()
            for operation in _random_message(rng, v):
                closed += batching.add(ACCOUNT, operation, ticket)
                state = _state_of(operation)
                if state is not None:
                    expected[state] = _expected_value(operation, v)
            open_now = set(batching.open())
            for batch in open_now:
                # Only closed batches are ever waited for.
                assert not (batch.after & open_now)
        elif step < 0.7:
            closed += batching.due(now=float("inf"))
        else:
            deliver_one()
    closed += batching.close_all()
    assert len(set(closed)) == len(closed)  # no batch closed twice
    while len(delivered) < len(closed):
        assert deliver_one(), (
            f"{len(closed) - len(delivered)} batches left and none ready: the waits form a cycle"
        )
    assert batching.held_keys() == 0
    assert klaviyo == expected


# -- holding partly filled batches ---------------------------------------------------------------


def test_a_held_key_keeps_its_lingering_batch_open_and_a_full_one_still_closes(tickets) -> None:
    batching = Batching(linger_s=1)
    batching.add(ACCOUNT, subscribe("a@x.dev", "L1"), tickets())
    batching.add(ACCOUNT, subscribe("b@x.dev", "L2"), tickets())
    later = time.monotonic() + 5
    held = {(ACCOUNT, Endpoint.SUBSCRIBE, "L1")}
    due = batching.due(later, hold=held.__contains__)
    assert [batch.group for batch in due] == ["L2"]
    assert [batch.group for batch in batching.open()] == ["L1"]
    for n in range(Endpoint.SUBSCRIBE.spec.max_items - 1):
        closed = batching.add(ACCOUNT, subscribe(f"p{n}@x.dev", "L1"), tickets())
    assert [len(batch) for batch in closed] == [Endpoint.SUBSCRIBE.spec.max_items]
    assert batching.due(later, hold=lambda key: False) == []
