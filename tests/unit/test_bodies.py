"""Bodies of the non-event endpoints, and routing of records to accounts."""

import orjson
import pytest

from consumer.batch import Batcher
from consumer.bodies import LIVE, History, body_format
from consumer.commit import PartitionProgress
from consumer.decode import DecodedRecord
from consumer.endpoints import Endpoint
from consumer.errors import TranslationError
from consumer.messages import EventPayload, Operation
from consumer.routing import AccountRouter
from consumer.settings import RoutingSettings


def _batch(
    endpoint: Endpoint, payloads: list, group: str | None = None, history: History = LIVE
):
    progress = PartitionProgress("t", 0)
    batcher = Batcher("default", endpoint, linger_s=0, group=group, history=history)
    for offset, payload in enumerate(payloads):
        batcher.add(Operation(endpoint, payload, group=group), progress.track(offset, None))
    return batcher.take_open()


def test_subscribe_body_carries_the_list_of_its_group() -> None:
    payloads = [
        {
            "attributes": {
                "email": f"u{i}@x.dev",
                "subscriptions": {"email": {"marketing": {"consent": "SUBSCRIBED"}}},
            }
        }
        for i in range(3)
    ]
    batch = _batch(Endpoint.SUBSCRIBE, payloads, group="LIST123")
    body, layout = body_format(Endpoint.SUBSCRIBE).assemble(batch.entries, batch.group)
    document = orjson.loads(body)
    assert document["data"]["type"] == "profile-subscription-bulk-create-job"
    assert document["data"]["relationships"]["list"]["data"] == {"type": "list", "id": "LIST123"}
    profiles = document["data"]["attributes"]["profiles"]["data"]
    assert [p["type"] for p in profiles] == ["profile"] * 3
    assert profiles[2]["attributes"]["email"] == "u2@x.dev"
    fmt = body_format(Endpoint.SUBSCRIBE)
    assert fmt.entries_for_pointer("/data/attributes/profiles/data/2/attributes/email", layout) == [
        2
    ]
    assert fmt.entries_for_pointer("/data/attributes/profiles/data/9", layout) is None


def _consents(at: str) -> list[dict]:
    return [
        {
            "attributes": {
                "email": f"u{i}@x.dev",
                "subscriptions": {
                    "email": {"marketing": {"consent": "SUBSCRIBED", "consented_at": at}},
                    "sms": {"marketing": {"consent": "SUBSCRIBED", "consented_at": at}},
                },
            }
        }
        for i in range(2)
    ]


def test_live_consent_leaves_consented_at_out_and_is_no_historical_import() -> None:
    batch = _batch(Endpoint.SUBSCRIBE, _consents("2026-01-01T00:00:00+00:00"), group="L")
    body, _ = body_format(Endpoint.SUBSCRIBE, batch.history).assemble(batch.entries, "L")
    attributes = orjson.loads(body)["data"]["attributes"]
    assert "historical_import" not in attributes
    for profile in attributes["profiles"]["data"]:
        assert profile["attributes"]["subscriptions"] == {
            "email": {"marketing": {"consent": "SUBSCRIBED"}},
            "sms": {"marketing": {"consent": "SUBSCRIBED"}},
        }


def test_history_sends_consent_as_a_historical_import_with_its_times() -> None:
    history = History(backfill=True, historical_consent=True)
    at = "2026-01-01T00:00:00+00:00"
    batch = _batch(Endpoint.SUBSCRIBE, _consents(at), group="L", history=history)
    body, _ = body_format(Endpoint.SUBSCRIBE, batch.history).assemble(batch.entries, "L")
    data = orjson.loads(body)["data"]
    assert data["attributes"]["historical_import"] is True
    assert data["relationships"]["list"]["data"]["id"] == "L"
    for profile in data["attributes"]["profiles"]["data"]:
        for channel in ("email", "sms"):
            consent = profile["attributes"]["subscriptions"][channel]["marketing"]
            assert consent["consented_at"] == at


@pytest.mark.parametrize("backfill", [False, True])
def test_backfill_marks_every_entry_and_every_event(backfill: bool) -> None:
    history = History(backfill=backfill)
    events = [
        EventPayload({"email": f"u{i % 2}@x.dev"}, {"properties": {}, "unique_id": str(i)})
        for i in range(3)
    ]
    batch = _batch(Endpoint.EVENTS, events, history=history)
    body, layout = body_format(Endpoint.EVENTS, history).assemble(batch.entries)
    entries = orjson.loads(body)["data"]["attributes"]["events-bulk-create"]["data"]
    assert len(entries) == 2 and layout == [[0, 2], [1]]
    for entry in entries:
        assert entry["attributes"].get("backfill") is (True if backfill else None)
        for event in entry["attributes"]["events"]["data"]:
            assert event["attributes"].get("backfill") is (True if backfill else None)
    assert all("backfill" not in e.event for e in events)  # the operations are not changed


@pytest.mark.parametrize(
    ("endpoint", "job", "collection"),
    [
        (Endpoint.PROFILES, "profile-bulk-import-job", "profiles"),
        (Endpoint.CATALOG_CREATE, "catalog-item-bulk-create-job", "items"),
        (Endpoint.CATALOG_UPDATE, "catalog-item-bulk-update-job", "items"),
        (Endpoint.CATALOG_DELETE, "catalog-item-bulk-delete-job", "items"),
    ],
)
def test_resource_list_bodies(endpoint: Endpoint, job: str, collection: str) -> None:
    batch = _batch(endpoint, [{"id": "$custom:::$default:::1"}, {"id": "$custom:::$default:::2"}])
    body, _ = body_format(endpoint).assemble(batch.entries, batch.group)
    document = orjson.loads(body)
    assert document["data"]["type"] == job
    assert "relationships" not in document["data"]
    assert [item["id"] for item in document["data"]["attributes"][collection]["data"]] == [
        "$custom:::$default:::1",
        "$custom:::$default:::2",
    ]


def test_unsubscribe_batches_hold_at_most_100() -> None:
    payloads = [{"attributes": {"email": f"u{i}@x.dev"}} for i in range(150)]
    progress = PartitionProgress("t", 0)
    batcher = Batcher("default", Endpoint.UNSUBSCRIBE, linger_s=60, group="L")
    closed = [
        batcher.add(Operation(Endpoint.UNSUBSCRIBE, p, group="L"), progress.track(i, None))
        for i, p in enumerate(payloads)
    ]
    assert [len(b) for b in closed if b is not None] == [100]


def _record(store: str | None) -> DecodedRecord:
    return DecodedRecord("shop.events.OrderPlaced", {"store_id": store}, None, None)


def test_router_maps_store_ids_to_accounts() -> None:
    router = AccountRouter.from_settings(
        RoutingSettings(field="store_id", accounts={"s1": "brand-a", "s2": "brand-b"})
    )
    assert router.account_for(_record("s1")) == "brand-a"
    assert router.account_for(_record("s2")) == "brand-b"
    with pytest.raises(
        TranslationError, match="no Klaviyo account is configured for this store_id"
    ):
        router.account_for(_record("s3"))
    fallback = AccountRouter.from_settings(
        RoutingSettings(accounts={"s1": "a"}, default_account="b")
    )
    assert fallback.account_for(_record("s9")) == "b"
    assert AccountRouter.from_settings(None).account_for(_record("anything")) == "default"


def test_repeated_upsert_keeps_the_latest_state() -> None:
    progress = PartitionProgress("t", 0)
    batcher = Batcher("default", Endpoint.PROFILES, linger_s=60)
    first, second = progress.track(0, None), progress.track(1, None)
    for ticket, name in ((first, "Old"), (second, "New")):
        operation = Operation(
            Endpoint.PROFILES,
            {"attributes": {"email": "a@x.dev", "first_name": name}},
            dedup_key=("profile", "email:a@x.dev"),
        )
        batcher.add(operation, ticket)
    batch = batcher.take_open()
    # One item, the newer state; the older message rides along as a twin with its own item,
    # so a refusal of the newer item is never pinned on it.
    [entry] = batch.entries
    assert entry.tickets == [second] and [ticket for ticket, _ in entry.twins] == [first]
    body, _ = body_format(Endpoint.PROFILES).assemble(batch.entries, None)
    profile = orjson.loads(body)["data"]["attributes"]["profiles"]["data"][0]
    assert profile["attributes"]["first_name"] == "New"
