"""Old consent in a live run goes as a historical import, in requests of its own.

``consent_is_older`` decides by each consent's ``consented_at``; ``Batching`` with
``consent_historical_after_s`` puts a Subscribe item older than that age in a batch keyed
apart (``HistoricalImport``), whose body is a historical import keeping ``consented_at``,
while newer consent stays live without it. The state order of one person's consent holds
across the two kinds.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from consumer.batch import Batch, Batching, HistoricalImport, batch_key
from consumer.bodies import LIVE, History, body_format, consent_is_older
from consumer.endpoints import Endpoint
from consumer.errors import ConfigError
from consumer.messages import Operation
from consumer.settings import load_settings
from tests.fakes import Tickets

ACCOUNT = "default"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
DAY = 86400.0


def subscribe(email: str, at: Any, list_id: str = "L1", *, channels: int = 1) -> Operation:
    consent: dict[str, Any] = {"consent": "SUBSCRIBED"}
    if at is not None:
        consent["consented_at"] = at.isoformat() if isinstance(at, datetime) else at
    subscriptions = {"email": {"marketing": consent}}
    if channels == 2:
        subscriptions["sms"] = {"marketing": {"consent": "SUBSCRIBED"}}
    return Operation(
        Endpoint.SUBSCRIBE,
        {"attributes": {"email": email, "subscriptions": subscriptions}},
        dedup_key=(list_id, "email", email),
        group=list_id,
    )


def unsubscribe(email: str, list_id: str = "L1") -> Operation:
    return Operation(
        Endpoint.UNSUBSCRIBE,
        {
            "attributes": {
                "email": email,
                "subscriptions": {"email": {"marketing": {"consent": "UNSUBSCRIBED"}}},
            }
        },
        dedup_key=(list_id, "email", email),
        group=list_id,
    )


def batching(after_s: float | None = DAY, history: History = LIVE) -> Batching:
    return Batching(
        linger_s=60,
        history=history,
        consent_historical_after_s=after_s,
        wall_clock=NOW.timestamp,
    )


def body(batch: Batch) -> dict[str, Any]:
    fmt = body_format(batch.endpoint, batch.history)
    raw, _ = fmt.assemble(batch.entries, batch.group)
    decoded: dict[str, Any] = orjson.loads(raw)
    return decoded


def consents(batch: Batch) -> list[dict[str, Any]]:
    return [
        p["attributes"]["subscriptions"]["email"]["marketing"]
        for p in body(batch)["data"]["attributes"]["profiles"]["data"]
    ]


# -- the age ---------------------------------------------------------------------------------


def test_older_is_strictly_before_the_cutoff() -> None:
    cutoff = NOW - timedelta(seconds=DAY)
    assert consent_is_older(subscribe("a@x.dev", cutoff - timedelta(seconds=1)), cutoff)
    assert not consent_is_older(subscribe("a@x.dev", cutoff), cutoff)
    assert not consent_is_older(subscribe("a@x.dev", cutoff + timedelta(seconds=1)), cutoff)


@pytest.mark.parametrize(
    "at",
    [None, "2013-12-17T17:47:03", "yesterday", 1387302423],
    ids=["no consented_at", "no UTC offset", "not a time", "a number"],
)
def test_consent_without_a_usable_time_is_never_older(at: Any) -> None:
    assert not consent_is_older(subscribe("a@x.dev", at), NOW)


def test_every_consent_of_the_item_must_be_older() -> None:
    old = NOW - timedelta(days=30)
    assert consent_is_older(subscribe("a@x.dev", old), NOW)
    assert not consent_is_older(subscribe("a@x.dev", old, channels=2), NOW)  # sms has no time


def test_only_subscribe_items_are_ever_older() -> None:
    assert not consent_is_older(unsubscribe("a@x.dev"), NOW)


@pytest.mark.parametrize(
    ("age", "historical"),
    [(DAY + 1, True), (DAY, False), (DAY - 1, False)],
    ids=["a second past the age", "exactly the age", "a second younger"],
)
def test_the_age_boundary_picks_the_batch(age: float, historical: bool) -> None:
    b = batching()
    b.add(ACCOUNT, subscribe("a@x.dev", NOW - timedelta(seconds=age)), Tickets()())
    [batch] = b.open()
    assert batch.history.historical_consent is historical
    assert isinstance(batch.key[2], HistoricalImport) is historical


# -- the split ---------------------------------------------------------------------------------


def test_old_and_new_consent_for_one_list_go_in_two_requests_of_their_kinds() -> None:
    b = batching()
    tickets = Tickets()
    old = NOW - timedelta(days=3)
    b.add(ACCOUNT, subscribe("old@x.dev", old), tickets())
    b.add(ACCOUNT, subscribe("new@x.dev", NOW - timedelta(minutes=5)), tickets())
    b.add(ACCOUNT, subscribe("older@x.dev", old - timedelta(days=1)), tickets())
    historical, live = sorted(b.open(), key=lambda batch: not batch.history.historical_consent)
    assert historical.key == (ACCOUNT, Endpoint.SUBSCRIBE, HistoricalImport("L1"))
    assert live.key == (ACCOUNT, Endpoint.SUBSCRIBE, "L1")
    assert historical.group == live.group == "L1"  # both go to the list

    sent = body(historical)
    assert sent["data"]["attributes"]["historical_import"] is True
    assert sent["data"]["relationships"]["list"]["data"]["id"] == "L1"
    assert [c["consented_at"] for c in consents(historical)] == [
        old.isoformat(),
        (old - timedelta(days=1)).isoformat(),
    ]
    sent = body(live)
    assert "historical_import" not in sent["data"]["attributes"]
    assert consents(live) == [{"consent": "SUBSCRIBED"}]  # live: no consented_at


def test_the_batch_key_tells_the_kinds_apart_only_for_subscribe() -> None:
    historical = History(historical_consent=True)
    assert batch_key("a", Endpoint.SUBSCRIBE, "L1", historical) != batch_key(
        "a", Endpoint.SUBSCRIBE, "L1", LIVE
    )
    assert batch_key("a", Endpoint.SUBSCRIBE, "L1", historical) == batch_key(
        "a", Endpoint.SUBSCRIBE, "L1", History(backfill=True, historical_consent=True)
    )
    assert batch_key("a", Endpoint.UNSUBSCRIBE, "L1", historical) == (
        "a",
        Endpoint.UNSUBSCRIBE,
        "L1",
    )


def test_a_later_consent_of_the_same_person_waits_for_the_earlier_kind() -> None:
    b = batching()
    tickets = Tickets()
    b.add(ACCOUNT, subscribe("a@x.dev", NOW - timedelta(days=3)), tickets())
    [historical] = b.open()
    # The same person again, consent given just now: live, and after the old one.
    closed = b.add(ACCOUNT, subscribe("a@x.dev", NOW - timedelta(seconds=10)), tickets())
    assert closed == [historical]  # closed there and then, so the wait has no cycle
    [live] = b.open()
    assert not live.history.historical_consent
    assert live.after == {historical} and historical.dependents == [live]
    # And an unsubscribe after both waits for the live one.
    b.add(ACCOUNT, unsubscribe("a@x.dev"), tickets())
    [unsub] = [batch for batch in b.open() if batch.endpoint is Endpoint.UNSUBSCRIBE]
    assert live in unsub.after


def test_an_older_consent_arriving_later_still_waits_for_the_earlier_message() -> None:
    b = batching()
    tickets = Tickets()
    b.add(ACCOUNT, subscribe("a@x.dev", NOW - timedelta(seconds=10)), tickets())
    [live] = b.open()
    b.add(ACCOUNT, subscribe("a@x.dev", NOW - timedelta(days=9)), tickets())
    [historical] = b.open()
    assert historical.history.historical_consent and historical.after == {live}


def test_off_everything_is_live_and_a_replay_is_all_history() -> None:
    off = batching(after_s=None)
    off.add(ACCOUNT, subscribe("a@x.dev", NOW - timedelta(days=300)), Tickets()())
    [batch] = off.open()
    assert not batch.history.historical_consent

    replay = batching(history=History(backfill=True, historical_consent=True))
    tickets = Tickets()
    replay.add(ACCOUNT, subscribe("a@x.dev", NOW - timedelta(days=300)), tickets())
    replay.add(ACCOUNT, subscribe("b@x.dev", NOW - timedelta(seconds=5)), tickets())
    [batch] = replay.open()
    assert batch.history.historical_consent and len(batch.entries) == 2


# -- the setting -------------------------------------------------------------------------------


def test_the_setting_defaults_to_a_day_and_can_be_turned_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KAFKA_KLAVIYO_RULES__CONSENT__HISTORICAL_AFTER_S", raising=False)
    monkeypatch.delenv("KAFKA_KLAVIYO_CONFIG", raising=False)
    assert load_settings().rules.consent.historical_after_s == DAY
    config = tmp_path / "c.yaml"
    config.write_text("rules:\n  consent:\n    historical_after_s: null\n")
    assert load_settings(config).rules.consent.historical_after_s is None
    monkeypatch.setenv("KAFKA_KLAVIYO_RULES__CONSENT__HISTORICAL_AFTER_S", "3600")
    assert load_settings(config).rules.consent.historical_after_s == 3600
    monkeypatch.setenv("KAFKA_KLAVIYO_RULES__CONSENT__HISTORICAL_AFTER_S", "null")
    assert load_settings().rules.consent.historical_after_s is None
    monkeypatch.setenv("KAFKA_KLAVIYO_RULES__CONSENT__HISTORICAL_AFTER_S", "0")
    with pytest.raises(ConfigError, match=r"^rules\.consent\.historical_after_s: "):
        load_settings()
