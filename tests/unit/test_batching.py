"""Batch limits, in-batch dedup, body assembly and pointer narrowing for Bulk Create Events."""

import orjson
import pytest

from consumer.batch import Batcher
from consumer.bodies import EventsBodyFormat
from consumer.commit import PartitionProgress
from consumer.endpoints import Endpoint
from consumer.messages import EventPayload, Operation


def _event(email: str, unique_id: str, size: int = 10) -> Operation:
    profile = {"email": email}
    event = {
        "properties": {"pad": "x" * size},
        "unique_id": unique_id,
        "metric": {"data": {"type": "metric", "attributes": {"name": "Placed Order"}}},
    }
    return Operation(
        Endpoint.EVENTS, EventPayload(profile, event), dedup_key=(email, "Placed Order", unique_id)
    )


@pytest.fixture()
def tickets():
    progress = PartitionProgress("t", 0)
    counter = iter(range(1_000_000))
    return lambda: progress.track(next(counter), None)


def test_batch_closes_at_the_item_limit(tickets) -> None:
    batcher = Batcher("default", Endpoint.EVENTS, linger_s=60)
    closed = [batcher.add(_event(f"u{i}@x.dev", str(i)), tickets()) for i in range(1001)]
    full = [batch for batch in closed if batch is not None]
    assert len(full) == 1 and len(full[0]) == 1000
    assert batcher.open_batch is not None and len(batcher.open_batch) == 1


def test_batch_closes_before_passing_the_byte_limit(tickets) -> None:
    batcher = Batcher("default", Endpoint.EVENTS, linger_s=60)
    closed = None
    sent = 0
    while closed is None:
        closed = batcher.add(_event(f"u{sent}@x.dev", str(sent), size=400_000), tickets())
        sent += 1
    body, _ = EventsBodyFormat().assemble(closed.entries)
    assert len(body) <= Endpoint.EVENTS.spec.max_bytes
    assert len(closed) == sent - 1  # the item that did not fit opened the next batch


def test_repeated_dedup_key_rides_on_the_first_item(tickets) -> None:
    batcher = Batcher("default", Endpoint.EVENTS, linger_s=0)
    first, second = tickets(), tickets()
    batcher.add(_event("a@x.dev", "1"), first)
    batcher.add(_event("a@x.dev", "1"), second)
    batch = batcher.take_due(now=float("inf"))
    assert batch is not None and len(batch) == 1
    assert batch.entries[0].tickets == [first, second]


def test_events_group_under_their_profile_and_pointers_map_back(tickets) -> None:
    batcher = Batcher("default", Endpoint.EVENTS, linger_s=0)
    for email, uid in [("a@x.dev", "1"), ("b@x.dev", "2"), ("a@x.dev", "3")]:
        batcher.add(_event(email, uid), tickets())
    batch = batcher.take_open()
    fmt = EventsBodyFormat()
    body, layout = fmt.assemble(batch.entries)
    document = orjson.loads(body)
    groups = document["data"]["attributes"]["events-bulk-create"]["data"]
    assert [g["attributes"]["profile"]["data"]["attributes"]["email"] for g in groups] == [
        "a@x.dev",
        "b@x.dev",
    ]
    assert [
        [e["attributes"]["unique_id"] for e in g["attributes"]["events"]["data"]] for g in groups
    ] == [["1", "3"], ["2"]]
    assert layout == [[0, 2], [1]]
    prefix = "/data/attributes/events-bulk-create/data"
    assert fmt.entries_for_pointer(
        f"{prefix}/0/attributes/events/data/1/attributes/time", layout
    ) == [2]
    assert fmt.entries_for_pointer(
        f"{prefix}/0/attributes/profile/data/attributes/phone_number", layout
    ) == [0, 2]
    assert fmt.entries_for_pointer(f"{prefix}/7/attributes/events/data/0", layout) is None
    assert fmt.entries_for_pointer("/data/type", layout) is None
