"""Sender.deliver: retries, Retry-After, narrowing of refusals to the items they are about."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr

from consumer.batch import Batch, Batcher
from consumer.commit import MessageTicket
from consumer.deliver.client import KlaviyoClient
from consumer.deliver.sender import (
    Backoff,
    BatchOutcome,
    DeliveryAborted,
    RetryAfterBounds,
    Sender,
)
from consumer.endpoints import Endpoint
from consumer.errors import RejectedItemError, RequestRejectedError
from consumer.messages import EventPayload, Operation
from tests.fakes import Tickets

ACCOUNT = "default"
PROFILES_POINTER = "/data/attributes/profiles/data/{}/attributes/email"
EVENTS_POINTER = "/data/attributes/events-bulk-create/data/{}/attributes/events/data/{}"


class Klaviyo:
    """A canned Klaviyo: ``answer(request, document)`` decides each response."""

    def __init__(self, answer: Callable[[httpx.Request, Any], httpx.Response]) -> None:
        self.answer = answer
        self.bodies: list[bytes] = []
        self.times: list[float] = []
        self.first = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.times.append(time.monotonic())
            self.bodies.append(request.content)
        self.first.set()
        return self.answer(request, orjson.loads(request.content))

    @property
    def requests(self) -> int:
        return len(self.bodies)


def accepted(*_: object) -> httpx.Response:
    return httpx.Response(202)


def bad_request(
    *pointers: str, detail: str = "Invalid input.", code: str = "invalid"
) -> httpx.Response:
    errors = [
        {
            "id": f"e{i}",
            "status": 400,
            "code": code,
            "title": "Invalid input.",
            "detail": detail,
            "source": {"pointer": pointer},
        }
        for i, pointer in enumerate(pointers)
    ]
    return httpx.Response(400, content=orjson.dumps({"errors": errors}))


class RecordingBackoff(Backoff):
    """Backoff whose delays are tiny (or fixed) and whose attempts are recorded."""

    def __init__(self, delay_s: float = 0.001) -> None:
        super().__init__(delay_s, delay_s)
        self.delay_s = delay_s
        self.attempts: list[int] = []

    def delay(self, attempt: int) -> float:
        self.attempts.append(attempt)
        return self.delay_s


def _sender(
    klaviyo: Klaviyo,
    *,
    backoff: Backoff | None = None,
    stop: threading.Event | None = None,
    bounds: RetryAfterBounds | None = None,
) -> Sender:
    client = KlaviyoClient(
        base_url="https://klaviyo.test",
        api_key=SecretStr("pk_test"),
        revision="2026-07-15",
        timeout_s=5.0,
        transport=httpx.MockTransport(klaviyo),
    )
    return Sender(
        {ACCOUNT: client},
        backoff=backoff or RecordingBackoff(),
        stop=stop or threading.Event(),
        rate_limit_share=None,
        retry_after=bounds or RetryAfterBounds(min_s=0.01, max_s=300.0),
    )


# -- batches -----------------------------------------------------------------------------------


def profile(email: str, **properties: Any) -> Operation:
    return Operation(
        Endpoint.PROFILES,
        {"attributes": {"email": email, "properties": properties}},
        dedup_key=(email,),
    )


def event(email: str, unique_id: str, **properties: Any) -> Operation:
    return Operation(
        Endpoint.EVENTS,
        EventPayload(
            {"email": email},
            {
                "properties": properties,
                "unique_id": unique_id,
                "metric": {"data": {"type": "metric", "attributes": {"name": "Placed Order"}}},
            },
        ),
        dedup_key=(email, "Placed Order", unique_id),
    )


def batch_of(
    operations: list[Operation], tickets: Callable[[], MessageTicket] | None = None
) -> tuple[Batch, list[MessageTicket]]:
    tickets = tickets or Tickets()
    batcher = Batcher(ACCOUNT, operations[0].endpoint, linger_s=60)
    issued = []
    for operation in operations:
        ticket = tickets()
        issued.append(ticket)
        assert batcher.add(operation, ticket) is None
    batch = batcher.take_open()
    assert batch is not None
    return batch, issued


def profiles_in(document: Any) -> list[str]:
    return [p["attributes"]["email"] for p in document["data"]["attributes"]["profiles"]["data"]]


def emails_of(body: bytes) -> list[str]:
    return profiles_in(orjson.loads(body))


def deliver(sender: Sender, batch: Batch) -> BatchOutcome:
    return sender.deliver(batch, threading.Event())


def deliver_in_thread(
    sender: Sender, batch: Batch, cancelled: threading.Event
) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["outcome"] = sender.deliver(batch, cancelled)
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


# -- retries -----------------------------------------------------------------------------------


def test_503_is_retried_with_growing_backoff_until_accepted_and_counted() -> None:
    answers = iter([503, 503, 503])

    def answer(*_: object) -> httpx.Response:
        return httpx.Response(next(answers, 202))

    klaviyo = Klaviyo(answer)
    backoff = RecordingBackoff()
    batch, _ = batch_of([profile(f"u{i}@x.dev") for i in range(3)])
    outcome = deliver(_sender(klaviyo, backoff=backoff), batch)
    assert klaviyo.requests == 4
    assert len(set(klaviyo.bodies)) == 1  # the same body each time
    assert backoff.attempts == [0, 1, 2]
    assert (outcome.requests, outcome.retries, outcome.throttled) == (4, 3, 0)
    assert outcome.delivered == batch.entries
    assert outcome.rejected == []


def test_backoff_is_full_jitter_under_a_doubling_ceiling_capped_at_max() -> None:
    backoff = Backoff(0.1, 1.0, rng=random.Random(7))
    for attempt, ceiling in [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (40, 1.0)]:
        delays = [backoff.delay(attempt) for _ in range(400)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.9  # uses the whole range, not a fixed fraction
        assert min(delays) < ceiling * 0.1


def test_429_with_retry_after_holds_the_next_request_at_least_that_long() -> None:
    answers = iter([httpx.Response(429, headers={"Retry-After": "0.3"})])

    def answer(*_: object) -> httpx.Response:
        return next(answers, httpx.Response(202))

    klaviyo = Klaviyo(answer)
    backoff = RecordingBackoff()
    batch, _ = batch_of([profile("a@x.dev")])
    outcome = deliver(_sender(klaviyo, backoff=backoff), batch)
    assert klaviyo.requests == 2
    assert klaviyo.times[1] - klaviyo.times[0] >= 0.3
    assert backoff.attempts == []  # Retry-After replaces the backoff
    assert (outcome.requests, outcome.retries, outcome.throttled) == (2, 1, 1)
    assert outcome.delivered == batch.entries


def test_retry_after_closes_the_limiter_for_every_thread_of_the_endpoint() -> None:
    answers = iter([httpx.Response(429, headers={"Retry-After": "5"})])
    released = threading.Event()

    def answer(*_: object) -> httpx.Response:
        return next(answers, httpx.Response(202))

    klaviyo = Klaviyo(answer)
    sender = _sender(klaviyo)
    batch, _ = batch_of([profile("a@x.dev")])
    thread, _ = deliver_in_thread(sender, batch, released)
    try:
        deadline = time.monotonic() + 10
        limiter = sender.limiter(ACCOUNT, Endpoint.PROFILES)
        while limiter.delay() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        # Any other thread asking for this endpoint now has to wait too.
        assert limiter.delay() > 1.0
        assert sender.limiter(ACCOUNT, Endpoint.EVENTS).delay() == 0
    finally:
        released.set()
        thread.join(10)


def test_retry_after_of_zero_is_raised_to_the_minimum_with_one_warning(caplog) -> None:
    answers = iter([httpx.Response(429, headers={"Retry-After": "0"})])

    def answer(*_: object) -> httpx.Response:
        return next(answers, httpx.Response(202))

    klaviyo = Klaviyo(answer)
    batch, _ = batch_of([profile("a@x.dev")])
    sender = _sender(klaviyo, bounds=RetryAfterBounds(min_s=0.25, max_s=0.5))
    with caplog.at_level(logging.WARNING, logger="consumer.deliver.sender"):
        outcome = deliver(sender, batch)
    assert klaviyo.times[1] - klaviyo.times[0] >= 0.25
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and "Retry-After" in r.message
    ]
    assert len(warnings) == 1
    assert "Retry-After" in warnings[0].getMessage()
    assert outcome.delivered == batch.entries


def test_huge_retry_after_is_lowered_to_the_maximum_with_one_warning(caplog) -> None:
    answers = iter([httpx.Response(429, headers={"Retry-After": "86400"})])

    def answer(*_: object) -> httpx.Response:
        return next(answers, httpx.Response(202))

    klaviyo = Klaviyo(answer)
    batch, _ = batch_of([profile("a@x.dev")])
    sender = _sender(klaviyo, bounds=RetryAfterBounds(min_s=0.01, max_s=0.3))
    cancelled = threading.Event()
    with caplog.at_level(logging.WARNING, logger="consumer.deliver.sender"):
        thread, result = deliver_in_thread(sender, batch, cancelled)
        thread.join(10)  # generous: the clamped wait is 0.3 s
        cancelled.set()
        thread.join(5)
    assert "outcome" in result, result
    assert klaviyo.times[1] - klaviyo.times[0] >= 0.3
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and "Retry-After" in r.message
    ]
    assert len(warnings) == 1
    assert "86400" in warnings[0].getMessage()


def test_retry_after_within_bounds_is_obeyed_without_a_warning(caplog) -> None:
    answers = iter([httpx.Response(429, headers={"Retry-After": "0.1"})])

    def answer(*_: object) -> httpx.Response:
        return next(answers, httpx.Response(202))

    batch, _ = batch_of([profile("a@x.dev")])
    with caplog.at_level(logging.WARNING, logger="consumer.deliver.sender"):
        deliver(_sender(Klaviyo(answer)), batch)
    assert [r for r in caplog.records if "Retry-After" in r.getMessage()] == []


# -- 400: narrowing --------------------------------------------------------------------------


def test_400_pointing_at_two_of_five_items_rejects_exactly_those_and_resends_the_rest() -> None:
    emails = [f"u{i}@x.dev" for i in range(5)]

    def answer(request: httpx.Request, document: Any) -> httpx.Response:
        if len(profiles_in(document)) == 5:
            return bad_request(PROFILES_POINTER.format(1), PROFILES_POINTER.format(3))
        return httpx.Response(202)

    klaviyo = Klaviyo(answer)
    batch, _ = batch_of([profile(email) for email in emails])
    outcome = deliver(_sender(klaviyo), batch)
    entries = batch.entries
    assert [entry for entry, _ in outcome.rejected] == [entries[1], entries[3]]
    for (_, error), index in zip(outcome.rejected, (1, 3), strict=True):
        assert isinstance(error, RejectedItemError)
        assert error.http_status == 400
        assert error.detail["code"] == "invalid"
        assert error.detail["pointer"] == PROFILES_POINTER.format(index)
    assert outcome.delivered == [entries[0], entries[2], entries[4]]
    assert klaviyo.requests == 2
    assert emails_of(klaviyo.bodies[1]) == ["u0@x.dev", "u2@x.dev", "u4@x.dev"]


def test_400_pointing_into_a_profile_group_rejects_every_event_of_that_profile() -> None:
    operations = [event("a@x.dev", "1"), event("b@x.dev", "2"), event("a@x.dev", "3")]

    def answer(request: httpx.Request, document: Any) -> httpx.Response:
        groups = document["data"]["attributes"]["events-bulk-create"]["data"]
        emails = [g["attributes"]["profile"]["data"]["attributes"]["email"] for g in groups]
        if "a@x.dev" in emails:
            index = emails.index("a@x.dev")
            pointer = f"/data/attributes/events-bulk-create/data/{index}/attributes/profile"
            return bad_request(pointer)
        return httpx.Response(202)

    batch, _ = batch_of(operations)
    outcome = deliver(_sender(Klaviyo(answer)), batch)
    entries = batch.entries
    assert [entry for entry, _ in outcome.rejected] == [entries[0], entries[2]]
    assert outcome.delivered == [entries[1]]


def test_400_whose_pointer_names_no_item_is_bisected_down_to_the_bad_item() -> None:
    emails = [f"u{i}@x.dev" for i in range(8)]

    def answer(request: httpx.Request, document: Any) -> httpx.Response:
        if b"POISON" in request.content:
            return bad_request("/data/", detail="Something in there is wrong.")
        return httpx.Response(202)

    klaviyo = Klaviyo(answer)
    operations = [
        profile(email, note="POISON" if i == 5 else "fine") for i, email in enumerate(emails)
    ]
    batch, _ = batch_of(operations)
    outcome = deliver(_sender(klaviyo), batch)
    entries = batch.entries
    assert [entry for entry, _ in outcome.rejected] == [entries[5]]
    ((_, error),) = outcome.rejected
    assert error.http_status == 400 and error.detail["code"] == "invalid"
    assert sorted(outcome.delivered, key=entries.index) == [
        e for i, e in enumerate(entries) if i != 5
    ]
    accepted_emails = [
        email for body in klaviyo.bodies if b"POISON" not in body for email in emails_of(body)
    ]
    assert sorted(accepted_emails) == sorted(e for i, e in enumerate(emails) if i != 5)


def test_every_item_refused_alone_with_the_same_pointerless_error_is_a_request_refusal() -> None:
    klaviyo = Klaviyo(lambda *_: bad_request("/data/", detail="This revision is not served."))
    batch, _ = batch_of([profile(f"u{i}@x.dev") for i in range(4)])
    with pytest.raises(RequestRejectedError) as caught:
        deliver(_sender(klaviyo), batch)
    # Each item was tried on its own before the request was blamed (and nothing was
    # reported rejected: deliver raised instead of returning an outcome).
    alone = {tuple(emails_of(body)) for body in klaviyo.bodies if len(emails_of(body)) == 1}
    assert alone == {(f"u{i}@x.dev",) for i in range(4)}
    assert "This revision is not served." in str(caught.value)


def test_request_refusal_is_recognised_when_some_entries_were_left_out_as_released() -> None:
    # Three live items of four (one from a revoked partition), each refused alone with the
    # same error naming no item: the request is to blame, not the three items.
    ours, theirs = Tickets(0), Tickets(1)
    batcher = Batcher(ACCOUNT, Endpoint.PROFILES, linger_s=60)
    for i, source in enumerate([ours, ours, theirs, ours]):
        batcher.add(profile(f"u{i}@x.dev"), source())
    batch = batcher.take_open()
    assert batch is not None
    theirs.progress.released = True
    klaviyo = Klaviyo(lambda *_: bad_request("/data/", detail="This revision is not served."))
    with pytest.raises(RequestRejectedError):
        outcome = deliver(_sender(klaviyo), batch)
        pytest.fail(f"{len(outcome.rejected)} live items dead-lettered for a request refusal")


def test_items_refused_alone_with_different_pointerless_errors_are_each_rejected() -> None:
    def answer(request: httpx.Request, document: Any) -> httpx.Response:
        emails = profiles_in(document)
        return bad_request("/data/", detail=f"Problem number {len(emails)}-{emails[0][1]}")

    batch, _ = batch_of([profile(f"u{i}@x.dev") for i in range(4)])
    outcome = deliver(_sender(Klaviyo(answer)), batch)
    assert (
        sorted((entry for entry, _ in outcome.rejected), key=batch.entries.index) == batch.entries
    )
    assert outcome.delivered == []


def test_batch_of_one_refused_with_a_pointerless_error_is_rejected_not_fatal() -> None:
    klaviyo = Klaviyo(lambda *_: bad_request("/data/", detail="Nope."))
    batch, _ = batch_of([profile("a@x.dev")])
    outcome = deliver(_sender(klaviyo), batch)
    assert [entry for entry, _ in outcome.rejected] == batch.entries
    assert outcome.rejected[0][1].http_status == 400
    assert outcome.delivered == []
    assert klaviyo.requests == 1


# -- 413 -------------------------------------------------------------------------------------


def test_413_splits_the_batch_and_rejects_only_the_item_too_large_alone() -> None:
    limit = 1500

    def answer(request: httpx.Request, document: Any) -> httpx.Response:
        return httpx.Response(413 if len(request.content) > limit else 202)

    klaviyo = Klaviyo(answer)
    operations = [profile(f"u{i}@x.dev", pad="x" * (3000 if i == 2 else 150)) for i in range(6)]
    batch, _ = batch_of(operations)
    outcome = deliver(_sender(klaviyo), batch)
    entries = batch.entries
    assert [entry for entry, _ in outcome.rejected] == [entries[2]]
    ((_, error),) = outcome.rejected
    assert isinstance(error, RejectedItemError) and error.http_status == 413
    assert sorted(outcome.delivered, key=entries.index) == [
        e for i, e in enumerate(entries) if i != 2
    ]
    accepted_emails = sorted(
        email for body in klaviyo.bodies if len(body) <= limit for email in emails_of(body)
    )
    assert accepted_emails == sorted(f"u{i}@x.dev" for i in range(6) if i != 2)


# -- folded twins ----------------------------------------------------------------------------


def test_refused_latest_profile_state_sends_the_older_twin_alone_and_rejects_only_its_own() -> None:
    def answer(request: httpx.Request, document: Any) -> httpx.Response:
        if b'"v":2' in request.content:
            return bad_request(PROFILES_POINTER.format(0))
        return httpx.Response(202)

    klaviyo = Klaviyo(answer)
    batch, (older, newer) = batch_of([profile("a@x.dev", v=1), profile("a@x.dev", v=2)])
    assert len(batch.entries) == 1 and batch.entries[0].twins  # folded, bytes differ
    outcome = deliver(_sender(klaviyo), batch)
    assert [entry.tickets for entry, _ in outcome.rejected] == [[newer]]
    assert [entry.tickets for entry in outcome.delivered] == [[older]]
    assert outcome.delivered[0].twins == []
    assert klaviyo.requests == 2
    second = orjson.loads(klaviyo.bodies[1])["data"]["attributes"]["profiles"]["data"]
    assert [p["attributes"]["properties"] for p in second] == [{"v": 1}]


def test_refused_first_event_sends_the_later_twin_alone_and_rejects_only_its_own() -> None:
    def answer(request: httpx.Request, document: Any) -> httpx.Response:
        if b'"v":1' in request.content:
            return bad_request(EVENTS_POINTER.format(0, 0))
        return httpx.Response(202)

    klaviyo = Klaviyo(answer)
    batch, (first, later) = batch_of([event("a@x.dev", "7", v=1), event("a@x.dev", "7", v=2)])
    assert len(batch.entries) == 1 and batch.entries[0].twins
    outcome = deliver(_sender(klaviyo), batch)
    assert [entry.tickets for entry, _ in outcome.rejected] == [[first]]
    assert [entry.tickets for entry in outcome.delivered] == [[later]]
    assert klaviyo.requests == 2
    assert b'"v":2' in klaviyo.bodies[1] and b'"v":1' not in klaviyo.bodies[1]


def test_accepted_item_with_twins_is_sent_once() -> None:
    klaviyo = Klaviyo(accepted)
    batch, _ = batch_of([profile("a@x.dev", v=1), profile("a@x.dev", v=2)])
    outcome = deliver(_sender(klaviyo), batch)
    assert klaviyo.requests == 1
    assert outcome.delivered == batch.entries and outcome.rejected == []


# -- released partitions ---------------------------------------------------------------------


def test_entries_of_released_partitions_are_left_out_of_the_request() -> None:
    ours, theirs = Tickets(0), Tickets(1)
    batcher = Batcher(ACCOUNT, Endpoint.PROFILES, linger_s=60)
    for i, source in enumerate([ours, theirs, ours, theirs]):
        batcher.add(profile(f"u{i}@x.dev"), source())
    batch = batcher.take_open()
    assert batch is not None
    theirs.progress.released = True
    klaviyo = Klaviyo(accepted)
    outcome = deliver(_sender(klaviyo), batch)
    assert [emails_of(body) for body in klaviyo.bodies] == [["u0@x.dev", "u2@x.dev"]]
    assert outcome.delivered == [batch.entries[0], batch.entries[2]]


def test_a_retry_leaves_out_entries_released_since_the_failed_attempt() -> None:
    ours, theirs = Tickets(0), Tickets(1)
    batcher = Batcher(ACCOUNT, Endpoint.PROFILES, linger_s=60)
    for i, source in enumerate([ours, theirs, ours]):
        batcher.add(profile(f"u{i}@x.dev"), source())
    batch = batcher.take_open()
    assert batch is not None

    def outage_then_ok(request: httpx.Request, document: Any) -> httpx.Response:
        if len(klaviyo.bodies) == 1:
            theirs.progress.released = True  # a rebalance while the first attempt fails
            return httpx.Response(503)
        return httpx.Response(202)

    klaviyo = Klaviyo(outage_then_ok)
    outcome = deliver(_sender(klaviyo), batch)
    assert [emails_of(body) for body in klaviyo.bodies] == [
        ["u0@x.dev", "u1@x.dev", "u2@x.dev"],
        ["u0@x.dev", "u2@x.dev"],
    ]
    assert outcome.delivered == [batch.entries[0], batch.entries[2]]


def test_batch_whose_entries_are_all_released_is_not_sent() -> None:
    tickets = Tickets(0)
    batch, _ = batch_of([profile(f"u{i}@x.dev") for i in range(3)], tickets)
    tickets.progress.released = True
    klaviyo = Klaviyo(accepted)
    try:
        outcome: BatchOutcome | None = deliver(_sender(klaviyo), batch)
    except DeliveryAborted:
        outcome = None
    assert klaviyo.requests == 0
    if outcome is not None:  # nothing of it may be reported delivered or rejected
        assert outcome.delivered == [] and outcome.rejected == []
        assert outcome.requests == 0


# -- cancelling ------------------------------------------------------------------------------


def _waiting_sender(wait: str, stop: threading.Event) -> tuple[Sender, Klaviyo]:
    """A sender whose first request leaves it waiting a minute: in backoff after a 503, or
    in the limiter after a 429 with Retry-After."""
    if wait == "backoff":
        klaviyo = Klaviyo(lambda *_: httpx.Response(503))
    else:
        klaviyo = Klaviyo(lambda *_: httpx.Response(429, headers={"Retry-After": "60"}))
    return _sender(klaviyo, backoff=RecordingBackoff(60.0), stop=stop), klaviyo


@pytest.mark.parametrize("wait", ["backoff", "retry-after"])
def test_cancelling_a_waiting_batch_aborts_it_without_another_request(wait: str) -> None:
    stop = threading.Event()
    sender, klaviyo = _waiting_sender(wait, stop)
    batch, _ = batch_of([profile("a@x.dev")])
    cancelled = threading.Event()
    thread, result = deliver_in_thread(sender, batch, cancelled)
    try:
        assert klaviyo.first.wait(10)
        time.sleep(0.05)  # into the wait
        cancelled.set()
        thread.join(10)  # generous: it should end at once, not after the 60 s wait
        assert not thread.is_alive()
        assert isinstance(result.get("error"), DeliveryAborted), result
        assert klaviyo.requests == 1
    finally:
        cancelled.set()
        thread.join(5)


@pytest.mark.parametrize("wait", ["backoff", "retry-after"])
def test_stopping_the_sender_aborts_a_waiting_batch_without_another_request(wait: str) -> None:
    stop = threading.Event()
    sender, klaviyo = _waiting_sender(wait, stop)
    batch, _ = batch_of([profile("a@x.dev")])
    cancelled = threading.Event()
    thread, result = deliver_in_thread(sender, batch, cancelled)
    try:
        assert klaviyo.first.wait(10)
        time.sleep(0.05)
        stop.set()
        thread.join(10)  # generous: it should end at once, not after the 60 s wait
        assert not thread.is_alive(), "the sender's stop did not end a batch waiting to retry"
        assert isinstance(result.get("error"), DeliveryAborted), result
        assert klaviyo.requests == 1
    finally:
        cancelled.set()
        thread.join(5)


def test_a_stopped_sender_sends_nothing() -> None:
    stop = threading.Event()
    stop.set()
    klaviyo = Klaviyo(accepted)
    batch, _ = batch_of([profile("a@x.dev")])
    with pytest.raises(DeliveryAborted):
        deliver(_sender(klaviyo, stop=stop), batch)
    assert klaviyo.requests == 0
