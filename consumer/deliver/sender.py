"""Sending one batch until it is delivered: retries, Retry-After and per-item rejection.

:meth:`Sender.deliver` runs on a worker thread and blocks until every entry of the batch is
either accepted by Klaviyo or rejected by it as bad data:

- Every request first takes a slot from the (account, endpoint) :class:`RateLimiter`.
- 408, 429, 5xx, timeouts and connection errors are retried without limit, with exponential
  backoff and full jitter; a Retry-After closes the endpoint's limiter for every thread
  until it has elapsed, so no request to that endpoint goes out early.
- A 400 is narrowed to its items through each error's ``source.pointer``; the named entries
  are rejected and the rest resent. Without a usable pointer the batch is bisected until the
  bad entries stand alone.
- 401/403 propagate (AuthenticationError): the process stops.
- Shutdown (the ``stop`` event) abandons the retry loop with :class:`DeliveryAborted`; nothing
  of that batch is reported finished, so its offsets are not committed.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from consumer.batch import Batch, BatchEntry
from consumer.bodies import body_format
from consumer.endpoints import Endpoint
from consumer.errors import BadRequestError, RejectedItemError, TransientDeliveryError

from .client import KlaviyoClient
from .ratelimit import LimiterStopped, RateLimiter

log = logging.getLogger(__name__)


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


class Sender:
    """Delivers batches for any number of accounts; safe to call from several threads."""

    def __init__(
        self,
        clients: dict[str, KlaviyoClient],
        *,
        backoff: Backoff,
        stop: threading.Event,
        rate_limit_share: float | None = 1.0,
    ) -> None:
        """``rate_limit_share`` None turns client-side rate limiting off (Retry-After and
        Klaviyo's RateLimit-* headers are still honoured)."""
        self._clients = clients
        self._backoff = backoff
        self._stop = stop
        self._share = rate_limit_share
        self._limiters: dict[tuple[str, Endpoint], RateLimiter] = {}
        self._limiters_lock = threading.Lock()

    def limiter(self, account: str, endpoint: Endpoint) -> RateLimiter:
        """The shared limiter of one account's endpoint."""
        key = (account, endpoint)
        with self._limiters_lock:
            limiter = self._limiters.get(key)
            if limiter is None:
                spec = endpoint.spec
                if self._share is None:
                    # Limits far above anything reachable: only Klaviyo's signals apply.
                    limiter = RateLimiter(1_000_000, 60_000_000)
                else:
                    limiter = RateLimiter(
                        spec.burst_per_second, spec.steady_per_minute, share=self._share
                    )
                self._limiters[key] = limiter
            return limiter

    def deliver(self, batch: Batch) -> BatchOutcome:
        outcome = BatchOutcome(batch)
        fmt = body_format(batch.endpoint)
        client = self._clients[batch.account]
        work: list[list[BatchEntry]] = [batch.entries]
        while work:
            entries = work.pop()
            body, layout = fmt.assemble(entries, batch.group)
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
        limiter = self.limiter(account, endpoint)
        attempt = 0
        while True:
            try:
                limiter.acquire(self._stop)
            except LimiterStopped:
                raise DeliveryAborted from None
            outcome.requests += 1
            try:
                limiter.observe(client.post(endpoint, body))
                return
            except TransientDeliveryError as exc:
                outcome.retries += 1
                if exc.retry_after is not None:
                    # Honour Retry-After exactly, for every thread on this endpoint: the
                    # limiter holds them all until it has elapsed.
                    limiter.retry_after(exc.retry_after)
                    continue
                delay = self._backoff.delay(attempt)
                attempt += 1
                log.warning("%s; retrying in %.1fs (attempt %d)", exc, delay, attempt)
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
