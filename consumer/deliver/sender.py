"""Sending one batch until it is delivered: retries, Retry-After and per-item rejection.

:meth:`Sender.deliver` runs on a worker thread and blocks until every entry of the batch is
either accepted by Klaviyo or rejected by it as bad data:

- 408, 429, 5xx, timeouts and connection errors are retried without limit, with exponential
  backoff and full jitter; a Retry-After closes the endpoint's gate for every worker until it
  has elapsed, so no request to that endpoint goes out early.
- A 400 is narrowed to its items through each error's ``source.pointer``; the named entries
  are rejected and the rest resent. Without a usable pointer the batch is bisected until the
  bad entries stand alone.
- 401/403 propagate (AuthenticationError): the process stops.
- Shutdown (the ``stop`` event) abandons the retry loop with :class:`DeliveryAborted`; nothing
  of that batch is reported finished, so its offsets are not committed.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from consumer.batch import Batch, BatchEntry
from consumer.bodies import body_format
from consumer.endpoints import Endpoint
from consumer.errors import BadRequestError, RejectedItemError, TransientDeliveryError

from .client import KlaviyoClient

Clock = Callable[[], float]


class DeliveryAborted(Exception):
    """The sender was stopped before the batch was delivered."""


@dataclass(slots=True)
class BatchOutcome:
    """What became of each entry of one batch."""

    batch: Batch
    delivered: list[BatchEntry] = field(default_factory=list)
    rejected: list[tuple[BatchEntry, RejectedItemError]] = field(default_factory=list)
    requests: int = 0
    retries: int = 0


class Backoff:
    """Exponential backoff with full jitter (sleep uniformly in [0, min(cap, base * 2^n)])."""

    def __init__(self, initial_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self._initial = initial_s
        self._max = max_s
        self._rng = rng or random.Random()

    def delay(self, attempt: int) -> float:
        ceiling = min(self._max, self._initial * (2 ** min(attempt, 30)))
        return self._rng.uniform(0.0, ceiling)


class EndpointGate:
    """Earliest time the next request may go to one (account, endpoint): Retry-After, shared."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._not_before: dict[tuple[str, Endpoint], float] = {}
        self._clock = clock

    def close_for(self, key: tuple[str, Endpoint], seconds: float) -> None:
        with self._lock:
            until = self._clock() + seconds
            if until > self._not_before.get(key, 0.0):
                self._not_before[key] = until

    def wait(self, key: tuple[str, Endpoint], stop: threading.Event) -> None:
        while True:
            with self._lock:
                remaining = self._not_before.get(key, 0.0) - self._clock()
            if remaining <= 0:
                return
            if stop.wait(remaining):
                raise DeliveryAborted


class Sender:
    """Delivers batches for any number of accounts; safe to call from several threads."""

    def __init__(
        self,
        clients: dict[str, KlaviyoClient],
        *,
        backoff: Backoff,
        stop: threading.Event,
        gate: EndpointGate | None = None,
    ) -> None:
        self._clients = clients
        self._backoff = backoff
        self._stop = stop
        self._gate = gate or EndpointGate()

    def deliver(self, batch: Batch) -> BatchOutcome:
        outcome = BatchOutcome(batch)
        fmt = body_format(batch.endpoint)
        client = self._clients[batch.account]
        work: list[list[BatchEntry]] = [batch.entries]
        while work:
            entries = work.pop()
            body, layout = fmt.assemble(entries)
            try:
                self._post(client, batch.account, batch.endpoint, body, outcome)
            except BadRequestError as exc:
                bad = _narrow(exc, entries, layout, fmt.entries_for_pointer)
                if bad:
                    outcome.rejected += [(entries[i], error) for i, error in bad.items()]
                    rest = [entry for i, entry in enumerate(entries) if i not in bad]
                    if rest:
                        work.append(rest)
                elif len(entries) == 1:
                    outcome.rejected.append((entries[0], _rejection(exc, None)))
                else:
                    middle = len(entries) // 2
                    work += [entries[middle:], entries[:middle]]
                continue
            outcome.delivered += entries
        return outcome

    def _post(
        self,
        client: KlaviyoClient,
        account: str,
        endpoint: Endpoint,
        body: bytes,
        outcome: BatchOutcome,
    ) -> None:
        key = (account, endpoint)
        attempt = 0
        while True:
            self._gate.wait(key, self._stop)
            if self._stop.is_set():
                raise DeliveryAborted
            outcome.requests += 1
            try:
                client.post(endpoint, body)
                return
            except TransientDeliveryError as exc:
                delay = self._backoff.delay(attempt)
                if exc.retry_after is not None:
                    # Honour Retry-After exactly, for every worker on this endpoint.
                    self._gate.close_for(key, exc.retry_after)
                    delay = min(delay, 1.0)
                attempt += 1
                outcome.retries += 1
                if self._stop.wait(delay):
                    raise DeliveryAborted from exc


def _narrow(
    exc: BadRequestError,
    entries: list[BatchEntry],
    layout: list[list[int]],
    entries_for_pointer: Callable[[str, list[list[int]]], list[int] | None],
) -> dict[int, RejectedItemError]:
    """Entry index -> its rejection, for every error whose pointer names items."""
    bad: dict[int, RejectedItemError] = {}
    for error in exc.errors:
        source = error.get("source")
        pointer = source.get("pointer") if isinstance(source, dict) else None
        if not isinstance(pointer, str):
            continue
        indexes = entries_for_pointer(pointer, layout)
        for index in indexes or ():
            bad.setdefault(index, _rejection(exc, error))
    return bad


def _rejection(exc: BadRequestError, error: dict[str, object] | None) -> RejectedItemError:
    if error is None:
        detail: dict[str, object] = {"errors": exc.errors[:5]}
        text = "Klaviyo rejected the item"
    else:
        source = error.get("source")
        detail = {
            "code": error.get("code"),
            "title": error.get("title"),
            "pointer": source.get("pointer") if isinstance(source, dict) else None,
        }
        text = f"Klaviyo rejected the item: {error.get('detail') or error.get('title')}"
    # orjson round trip keeps only JSON-safe values in the dead-letter detail header.
    return RejectedItemError(
        text, http_status=exc.http_status, detail=orjson.loads(orjson.dumps(detail, default=str))
    )
