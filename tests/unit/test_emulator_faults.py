"""Fault rules: what they match, when they fire, when they expire."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from kafka_klaviyo_dev.emulator.endpoints import lookup
from kafka_klaviyo_dev.emulator.faults import (
    FaultBook,
    FaultRule,
    FaultSpecError,
    ItemMatch,
    resolve,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def normalise(name: str) -> str | None:
    endpoint = lookup(name)
    return endpoint.name if endpoint else None


VIEW: dict[str, Any] = {
    "unique_id": "order-42",
    "value": 10,
    "properties": {"poison": True, "items": [{"sku": "A-1"}], "note": "x/y"},
    "profile": {"email": "bad@shop.io"},
}


def test_resolve_follows_keys_and_list_indexes() -> None:
    assert resolve(VIEW, ("properties", "items", "0", "sku")) == (True, "A-1")
    assert resolve(VIEW, ("properties", "missing")) == (False, None)
    assert resolve(VIEW, ("properties", "items", "3")) == (False, None)


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        (ItemMatch("properties.poison", equals=True), True),
        (ItemMatch("properties.poison", equals=1), False),  # a bool is not the number 1
        (ItemMatch("value", equals=10.0), True),  # JSON numbers: 10 == 10.0
        (ItemMatch("unique_id", regex=r"^order-4\d$"), True),
        (ItemMatch("unique_id", regex=r"^refund-"), False),
        (ItemMatch("profile.email", regex=r"^bad@"), True),
        (ItemMatch("properties.absent", equals=None), False),  # absent is not null
        (ItemMatch("value", regex="10"), False),  # regex matches strings only
    ],
)
def test_item_match(match: ItemMatch, expected: bool) -> None:
    assert match.matches(VIEW) is expected


def test_item_match_needs_exactly_one_criterion() -> None:
    with pytest.raises(FaultSpecError):
        ItemMatch("x")
    with pytest.raises(FaultSpecError):
        ItemMatch("x", equals=1, regex="1")
    with pytest.raises(FaultSpecError):
        ItemMatch("x", regex="(")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"kind": "nope"}, "kind must be one of"),
        ({"kind": "status", "status": 200}, "status must be"),
        ({"kind": "status", "endpoint": "/api/nope"}, "unknown endpoint"),
        ({"kind": "status", "bogus": 1}, "unknown fault field"),
        ({"kind": "latency"}, "delay_seconds must be positive"),
        ({"kind": "reject_items"}, "needs 'match'"),
        ({"kind": "status", "requests": 0}, "requests must be at least 1"),
        ({"kind": "status", "seconds": "soon"}, "bad fault field value"),
    ],
)
def test_from_json_names_what_is_wrong(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(FaultSpecError, match=message):
        FaultRule.from_json(doc, normalise)


def test_from_json_accepts_endpoint_paths_and_names() -> None:
    rule = FaultRule.from_json(
        {"kind": "status", "endpoint": "/api/event-bulk-create-jobs", "requests": 2}, normalise
    )
    assert rule.endpoint == "events"
    assert rule.to_json()["status"] == 503
    storm = FaultRule.from_json({"kind": "rate_limit_storm", "endpoint": "events"}, normalise)
    assert storm.retry_after == 1


def test_a_counted_rule_fires_its_number_of_times() -> None:
    book = FaultBook(Clock())
    book.add(FaultRule(kind="status", status=500, requests=2))
    fired = [book.select("events", "acme").terminal for _ in range(3)]
    assert [r.status if r else None for r in fired] == [500, 500, None]


def test_a_timed_rule_expires() -> None:
    clock = Clock()
    book = FaultBook(clock)
    book.add(FaultRule(kind="rate_limit_storm", retry_after=3, seconds=2.0))
    assert book.select("events", "acme").terminal is not None
    clock.now += 2.0
    assert book.select("events", "acme").terminal is None
    assert book.rules() == []


def test_rules_can_target_one_endpoint_and_one_account() -> None:
    book = FaultBook(Clock())
    book.add(FaultRule(kind="status", endpoint="events", account="beta"))
    assert book.select("events", "acme").terminal is None
    assert book.select("subscribe", "beta").terminal is None
    assert book.select("events", "beta").terminal is not None


def test_latencies_add_up_and_the_first_terminal_rule_wins() -> None:
    book = FaultBook(Clock())
    book.add(FaultRule(kind="latency", delay_seconds=0.2))
    first = book.add(FaultRule(kind="status", status=500))
    book.add(FaultRule(kind="status", status=503))
    book.add(FaultRule(kind="latency", delay_seconds=0.3))
    poison = book.add(FaultRule(kind="reject_items", match=ItemMatch("x", equals=1)))
    selection = book.select("events", None)
    assert selection.delay_seconds == pytest.approx(0.5)
    assert selection.terminal is first
    assert selection.item_rules == (poison,)
    assert poison.fired == 0  # reject_items fire only when an item matches
    book.fired([poison])
    assert poison.fired == 1


def test_clear_releases_held_requests() -> None:
    book = FaultBook()
    stopping = threading.Event()
    done = threading.Event()

    def held() -> None:
        book.hold(30.0, stopping)
        done.set()

    threading.Thread(target=held, daemon=True).start()
    time.sleep(0.1)
    assert not done.is_set()
    book.clear()
    assert done.wait(2.0)


def test_remove_one_rule() -> None:
    book = FaultBook()
    rule = book.add(FaultRule(kind="status"))
    assert book.remove(rule.id)
    assert not book.remove(rule.id)
