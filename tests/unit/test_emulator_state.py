"""The emulator's memory: per-account stores, dedup, counters and Retry-After debts."""

from __future__ import annotations

from kafka_klaviyo_dev.emulator.state import EmulatorState


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_commit_dedups_per_account() -> None:
    state = EmulatorState(["acme", "beta"])
    first = state.commit("acme", "events", [("k1", {"n": 1}), ("k2", {"n": 2}), ("k1", {"n": 3})])
    assert (first.accepted, first.duplicates) == (2, 1)
    again = state.commit("acme", "events", [("k2", {"n": 4})])
    assert (again.accepted, again.duplicates) == (0, 1)
    other = state.commit("beta", "events", [("k1", {"n": 5})])
    assert other.accepted == 1  # another account, another dedup index
    assert [r["n"] for r in state.records("events")] == [1, 2, 5]
    assert [r["n"] for r in state.records("events", "acme")] == [1, 2]
    stats = state.stats()
    assert stats["accepted"] == {"events": 3}
    assert stats["duplicates_dropped"] == {"events": 2}
    assert stats["accounts"]["beta"]["accepted"] == {"events": 1}


def test_records_without_key_are_never_duplicates_and_drop_filters() -> None:
    state = EmulatorState(["acme"])
    result = state.commit(
        "acme",
        "catalog_delete",
        [(None, {"id": "a"}), (None, {"id": "a"}), (None, {"id": "test"})],
        drop=lambda r: r["id"] == "test",
    )
    assert (result.accepted, result.duplicates, result.test_domain_dropped) == (2, 0, 1)


def test_retry_after_debts() -> None:
    clock = Clock()
    state = EmulatorState(["acme"], clock=clock)
    state.owe_retry_after("acme", "events", 2)  # issued at 50.0, due at 52.0
    assert not state.arrival("acme", "events", 50.1, grace=0.25)  # was in flight
    assert state.arrival("acme", "events", 50.5, grace=0.25)  # ignored it
    assert not state.arrival("acme", "subscribe", 50.5, grace=0.25)  # another endpoint
    assert not state.arrival("acme", "events", 52.0, grace=0.25)  # waited: debt settled
    assert not state.arrival("acme", "events", 52.1, grace=0.25)
    stats = state.stats()
    assert stats["retry_after_violations"] == 1
    assert stats["retry_after_violation_log"][0]["early_by_seconds"] == 1.5


def test_a_later_retry_after_extends_the_debt() -> None:
    clock = Clock()
    state = EmulatorState(["acme"], clock=clock)
    state.owe_retry_after("acme", "events", 10)
    clock.now = 51.0
    state.owe_retry_after("acme", "events", 1)  # does not shorten the first one
    assert state.arrival("acme", "events", 55.0, grace=0.25)


def test_counters_and_request_log_and_reset() -> None:
    state = EmulatorState(["acme"], request_log_size=2)
    state.count_request("events", "acme", 202, items=3, size=10)
    state.count_request("events", "acme", 400, reason="validation")
    state.count_request("events", None, 401)
    state.count_request("events", "acme", 429, reason="rate_limit", fault="rate_limit_storm")
    stats = state.stats()
    assert stats["requests"] == {"events": {"202": 1, "400": 1, "401": 1, "429": 1}}
    assert stats["validation_failures"] == {"events": 1}
    assert stats["rate_limited"] == {"events": 1}
    assert stats["faults_fired"] == {"rate_limit_storm": 1}
    assert [r["status"] for r in state.request_log()] == [401, 429]  # bounded
    state.reset()
    assert state.stats()["requests"] == {}
    assert state.request_log() == []
