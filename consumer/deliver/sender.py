"""Sending one batch until every entry is delivered or refused: retries, Retry-After, narrowing.

:meth:`Sender.deliver` runs on a delivery thread and blocks until every entry of the batch is
either accepted by Klaviyo or refused by it as bad data:

- Every request first takes a slot from the (account, endpoint) :class:`RateLimiter`, right
  before it goes out.
- 408, 429, 5xx, timeouts and connection errors are retried without limit, with exponential
  backoff and full jitter; a Retry-After (bounded below and above, a clamped value is logged)
  closes the endpoint's limiter for every thread until it has elapsed.
- A 400 about items is narrowed through each error's ``source.pointer``: the named entries are
  refused and the rest resent. When the pointers name no item the batch is bisected until the
  bad entries stand alone; if every entry of the batch then fails alone with the same
  pointerless error, no item is to blame and the request is refused as a whole
  (RequestRejectedError: stop, nothing dead-lettered).
- A 413 splits the batch in halves; an entry too large on its own is refused (stage deliver).
- A refused entry with folded twins (repeats with other bytes, see :mod:`consumer.batch`) has
  its twin sent next, on its own: a message is refused only for its own item.
- 401/403 and requests refused as a whole propagate: the process stops.
- A list-only Unsubscribe batch (rule ``unsubscribe_scope: list``) first asks Klaviyo which
  of its people are in the list (:mod:`consumer.deliver.membership`); the others are finished
  unsent (``BatchOutcome.skipped``), since Klaviyo would unsubscribe them from every list.
- Before each attempt, entries of revoked or lost partitions are left out; a batch with none
  left, a cancelled batch or a stop of the whole sender ends with :class:`DeliveryAborted`,
  and nothing of that batch is reported finished.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import orjson

from consumer.batch import Batch, BatchEntry
from consumer.bodies import BodyFormat, body_format
from consumer.endpoints import Endpoint
from consumer.errors import (
    BadRequestError,
    PayloadTooLargeError,
    RejectedItemError,
    RequestRejectedError,
    TransientDeliveryError,
)
from consumer.redact import mask

from . import categories, membership
from .categories import Categories
from .client import Answer, KlaviyoClient
from .membership import Membership
from .ratelimit import LimiterStopped, RateLimiter, wait_any

log = logging.getLogger(__name__)


class DeliveryAborted(Exception):
    """The batch was cancelled (or the sender stopped) before it was delivered."""


@dataclass(slots=True)
class SubmittedJob:
    """One accepted request to a job endpoint: Klaviyo's job id, and the entries it carried
    with their layout in the body (the job's error pointers name them)."""

    endpoint: Endpoint
    job_id: str
    entries: list[BatchEntry]
    layout: list[list[int]]
    accepted_at: float


@dataclass(slots=True)
class BatchOutcome:
    """What became of each entry of one batch."""

    batch: Batch
    delivered: list[BatchEntry] = field(default_factory=list)
    rejected: list[tuple[BatchEntry, RejectedItemError]] = field(default_factory=list)
    requests: int = 0
    retries: int = 0
    throttled: int = 0
    # Seconds each request took (any answer), and the wall-clock time of the last 2xx: the
    # pipeline turns them into metrics on the poll-loop thread.
    request_seconds: list[float] = field(default_factory=list)
    accepted_at: float = 0.0
    # Accepted requests whose job says later which items failed (consumer.deliver.jobs).
    jobs: list[SubmittedJob] = field(default_factory=list)
    # List-only unsubscribes of people not in the list: finished, nothing sent.
    skipped: list[BatchEntry] = field(default_factory=list)


class Backoff:
    """Exponential backoff with full jitter (sleep uniformly in [0, min(cap, base * 2^n)])."""

    def __init__(self, initial_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self._initial = initial_s
        self._max = max_s
        self._rng = rng or random.Random()

    def delay(self, attempt: int) -> float:
        ceiling = min(self._max, self._initial * (2 ** min(attempt, 30)))
        return self._rng.uniform(0.0, ceiling)


@dataclass(frozen=True, slots=True)
class RetryAfterBounds:
    """Klaviyo's Retry-After is obeyed within [min_s, max_s]."""

    min_s: float = 0.5
    max_s: float = 300.0

    def clamp(self, seconds: float) -> float:
        return min(self.max_s, max(self.min_s, seconds))


class Sender:
    """Delivers batches for any number of accounts; safe to call from several threads."""

    def __init__(
        self,
        clients: dict[str, KlaviyoClient],
        *,
        backoff: Backoff,
        stop: threading.Event,
        rate_limit_share: float | None = 1.0,
        retry_after: RetryAfterBounds | None = None,
    ) -> None:
        """``rate_limit_share`` None turns client-side rate limiting off (Retry-After and
        Klaviyo's RateLimit-* headers are still honoured). ``stop`` aborts every batch."""
        self._clients = clients
        self._backoff = backoff
        self._stop = stop
        self._share = rate_limit_share
        self._retry_after = retry_after or RetryAfterBounds()
        self._limiters: dict[tuple[str, Endpoint], RateLimiter] = {}
        self._other_limiters: dict[tuple[str, str], RateLimiter] = {}
        self._limiters_lock = threading.Lock()
        self._outages = Outages()
        self.categories = Categories(self._call_categories)
        self.membership = Membership(self._call_membership)

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

    def limiter_for(self, key: tuple[str, str], burst: int, steady: int) -> RateLimiter:
        """A shared limiter of one account's other requests (job GETs, category creates),
        keyed by (account, what), under the same share as the bulk endpoints."""
        with self._limiters_lock:
            limiter = self._other_limiters.get(key)
            if limiter is None:
                if self._share is None:
                    limiter = RateLimiter(1_000_000, 60_000_000)
                else:
                    limiter = RateLimiter(burst, steady, share=self._share)
                self._other_limiters[key] = limiter
            return limiter

    def call(
        self,
        account: str,
        endpoint: Endpoint,
        limiter: RateLimiter,
        request: Callable[[KlaviyoClient], Answer],
        cancelled: threading.Event,
    ) -> Answer:
        """One request of ``account`` about ``endpoint`` (a job GET, a category create),
        retried through outages and 429s exactly like a bulk POST; a refusal propagates.
        DeliveryAborted if ``cancelled`` or the sender's stop is set meanwhile."""
        client = self._clients[account]
        attempt = 0
        while True:
            try:
                limiter.acquire(cancelled, self._stop)
            except LimiterStopped:
                raise DeliveryAborted from None
            try:
                answer = request(client)
            except TransientDeliveryError as exc:
                self._outages.failed(account, endpoint, exc)
                if self._wait_to_retry(exc, limiter, attempt, cancelled):
                    raise DeliveryAborted from exc
                attempt += 1
                continue
            limiter.observe(answer.rate_limit)
            self._outages.recovered(account, endpoint)
            return answer

    def _wait_to_retry(
        self,
        exc: TransientDeliveryError,
        limiter: RateLimiter,
        attempt: int,
        cancelled: threading.Event,
    ) -> bool:
        """Wait before retrying after ``exc``: Retry-After for every thread of the limiter,
        else backoff; True if stopped meanwhile."""
        if exc.retry_after is not None:
            # Honour Retry-After for every thread on this endpoint: the limiter holds them
            # all until it has elapsed.
            wait = self._retry_after.clamp(exc.retry_after)
            if wait != exc.retry_after:
                log.warning(
                    "%s: Retry-After %gs is outside [%g, %g]s; waiting %gs",
                    exc,
                    exc.retry_after,
                    self._retry_after.min_s,
                    self._retry_after.max_s,
                    wait,
                )
            limiter.retry_after(wait)
            return False
        delay = self._backoff.delay(attempt)
        # One line when the outage begins and one when it ends (Outages): each retry only at
        # DEBUG.
        log.debug("%s; retrying in %.1fs (attempt %d)", exc, delay, attempt + 1)
        return wait_any((cancelled, self._stop), delay)

    def _call_categories(
        self,
        account: str,
        request: Callable[[KlaviyoClient], Answer],
        cancelled: threading.Event,
    ) -> Answer:
        limiter = self.limiter_for(
            (account, categories.PATH), categories.BURST_PER_SECOND, categories.STEADY_PER_MINUTE
        )
        return self.call(account, Endpoint.CATALOG_CREATE, limiter, request, cancelled)

    def _call_membership(
        self,
        account: str,
        request: Callable[[KlaviyoClient], Answer],
        cancelled: threading.Event,
    ) -> Answer:
        limiter = self.limiter_for(
            (account, membership.PATH), membership.BURST_PER_SECOND, membership.STEADY_PER_MINUTE
        )
        return self.call(account, Endpoint.UNSUBSCRIBE, limiter, request, cancelled)

    def paced(self, account: str, endpoint: Endpoint) -> bool:
        """Whether a partly filled request to ``endpoint`` may go now (see
        :meth:`RateLimiter.paced`)."""
        return self.limiter(account, endpoint).paced()

    def deliver(self, batch: Batch, cancelled: threading.Event) -> BatchOutcome:
        """Deliver ``batch``; ``cancelled`` (set by the scheduler, or the sender's stop)
        abandons it between attempts."""
        outcome = BatchOutcome(batch)
        fmt = body_format(batch.endpoint, batch.history)
        client = self._clients[batch.account]
        live = _live(batch, batch.entries)
        if not live:
            raise DeliveryAborted  # nothing of it is ours any more
        live = self._with_categories(batch, live, outcome, cancelled)
        if batch.list_only and batch.group is not None and live:
            live, outcome.skipped = self.membership.split(
                batch.account, batch.group, live, cancelled
            )
        work: list[list[BatchEntry]] = [live] if live else []
        # Entries refused alone with an error that names no item, and that error's identity.
        pointerless: list[tuple[BatchEntry, RejectedItemError, str]] = []
        size = len(live)
        first = True
        while work or pointerless:
            if not work:
                self._resolve_pointerless(pointerless, size, batch, outcome, work)
                continue
            entries = work.pop()
            if not first:  # a later request of this batch: leave out what is no longer ours
                entries = _live(batch, entries)
                if not entries:
                    continue
            first = False
            if cancelled.is_set() or self._stop.is_set():
                raise DeliveryAborted
            entries, layout, refusal = self._post(client, batch, fmt, entries, outcome, cancelled)
            if isinstance(refusal, BadRequestError):
                bad = _narrow(refusal, entries, layout, fmt.entries_for_pointer)
                if bad:
                    for index, error in bad.items():
                        self._refuse(entries[index], error, batch, outcome, work)
                    rest = [entry for i, entry in enumerate(entries) if i not in bad]
                    if rest:
                        work.append(rest)
                elif len(entries) == 1:
                    pointerless.append((entries[0], rejection(refusal, None), _signature(refusal)))
                else:
                    work += _halves(entries)
            elif isinstance(refusal, PayloadTooLargeError):
                if len(entries) == 1:
                    error = RejectedItemError(
                        "Klaviyo refused the item: too large for one request (HTTP 413)",
                        http_status=refusal.http_status,
                        detail={"reason": "payload too large"},
                    )
                    self._refuse(entries[0], error, batch, outcome, work)
                else:
                    work += _halves(entries)
            else:
                outcome.delivered += entries
        return outcome

    def _with_categories(
        self,
        batch: Batch,
        entries: list[BatchEntry],
        outcome: BatchOutcome,
        cancelled: threading.Event,
    ) -> list[BatchEntry]:
        """Create the categories the items name before they refer to them; the entries
        naming a category Klaviyo refused are refused with its error."""
        required = [category for entry in entries for category in entry.item.requires]
        if not required:
            return entries
        refused = self.categories.ensure(batch.account, required, cancelled)
        if not refused:
            return entries
        kept = []
        for entry in entries:
            error = next((refused[c] for c in entry.item.requires if c in refused), None)
            if error is None:
                kept.append(entry)
            else:
                outcome.rejected.append((entry, error))
        return kept

    def _resolve_pointerless(
        self,
        pointerless: list[tuple[BatchEntry, RejectedItemError, str]],
        size: int,
        batch: Batch,
        outcome: BatchOutcome,
        work: list[list[BatchEntry]],
    ) -> None:
        """Every entry refused alone, all with one error naming no item: the request is at
        fault, not the items. Otherwise each such entry is refused for itself."""
        signatures = {signature for _, _, signature in pointerless}
        if size > 1 and len(pointerless) == size and len(signatures) == 1:
            raise RequestRejectedError(
                f"Klaviyo refused every item of a {batch.endpoint.spec.path} request alone "
                f"with the same error, which names no item: {mask(pointerless[0][1].args[0])}"
            )
        refused = list(pointerless)
        pointerless.clear()
        for entry, error, _ in refused:
            self._refuse(entry, error, batch, outcome, work)

    def _refuse(
        self,
        entry: BatchEntry,
        error: RejectedItemError,
        batch: Batch,
        outcome: BatchOutcome,
        work: list[list[BatchEntry]],
    ) -> None:
        outcome.rejected.append((entry, error))
        successor = entry.successor(keep_latest=batch.keep_latest)
        if successor is not None:
            work.append([successor])

    def _post(
        self,
        client: KlaviyoClient,
        batch: Batch,
        fmt: BodyFormat,
        entries: list[BatchEntry],
        outcome: BatchOutcome,
        cancelled: threading.Event,
    ) -> tuple[list[BatchEntry], list[list[int]], BadRequestError | PayloadTooLargeError | None]:
        """POST ``entries`` until Klaviyo answers with anything but an outage.

        Returns the entries of the last attempt (after a failed attempt, those of revoked or
        lost partitions are left out), their layout in the body, and Klaviyo's refusal of
        them, if it refused them."""
        limiter = self.limiter(batch.account, batch.endpoint)
        body, layout = fmt.assemble(entries, batch.group)
        attempt = 0
        while True:
            try:
                limiter.acquire(cancelled, self._stop)
            except LimiterStopped:
                raise DeliveryAborted from None
            outcome.requests += 1
            started = time.perf_counter()
            try:
                answer = client.post(batch.endpoint, body)
                limiter.observe(answer.rate_limit)
                outcome.request_seconds.append(time.perf_counter() - started)
                outcome.accepted_at = time.time()
                self._outages.recovered(batch.account, batch.endpoint)
                if batch.endpoint.spec.job is not None:
                    self._follow(answer, batch, entries, layout, outcome)
                return entries, layout, None
            except (BadRequestError, PayloadTooLargeError) as refusal:
                outcome.request_seconds.append(time.perf_counter() - started)
                self._outages.recovered(batch.account, batch.endpoint)
                return entries, layout, refusal
            except TransientDeliveryError as exc:
                outcome.request_seconds.append(time.perf_counter() - started)
                self._outages.failed(batch.account, batch.endpoint, exc)
                outcome.retries += 1
                if exc.http_status == 429:
                    outcome.throttled += 1
                if self._wait_to_retry(exc, limiter, attempt, cancelled):
                    raise DeliveryAborted from exc
                if exc.retry_after is None:
                    attempt += 1
            # Work of partitions revoked or lost meanwhile is not sent again.
            live = _live(batch, entries)
            if not live:
                raise DeliveryAborted
            if len(live) != len(entries):
                entries = live
                body, layout = fmt.assemble(entries, batch.group)

    @staticmethod
    def _follow(
        answer: Answer,
        batch: Batch,
        entries: list[BatchEntry],
        layout: list[list[int]],
        outcome: BatchOutcome,
    ) -> None:
        job_id = answer.job_id
        if job_id is None:
            # Klaviyo always names the job; an answer without one cannot be followed.
            log.warning(
                "%s: the 202 named no job; the outcome of its %d items is not followed",
                batch.endpoint.spec.path,
                len(entries),
            )
            return
        outcome.jobs.append(
            SubmittedJob(batch.endpoint, job_id, entries, layout, outcome.accepted_at)
        )


class Outages:
    """One log line when an account's endpoint starts failing (408, 5xx, timeouts: an outage,
    a warning; 429: throttling, expected under load, info), one when it answers again; shared
    by every delivery thread."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        # (account, endpoint) -> (what it is, since, failed requests)
        self._failing: dict[tuple[str, Endpoint], tuple[str, float, int]] = {}

    def failed(self, account: str, endpoint: Endpoint, exc: TransientDeliveryError) -> None:
        key = (account, endpoint)
        kind = "throttling" if exc.http_status == 429 else "outage"
        with self._lock:
            state = self._failing.get(key)
            if state is None:
                self._failing[key] = (kind, self._clock(), 1)
            else:
                self._failing[key] = (state[0], state[1], state[2] + 1)
        if state is None:
            log.log(
                logging.INFO if kind == "throttling" else logging.WARNING,
                "Klaviyo %s begun for account %s, %s: %s; retrying until it answers",
                kind,
                account,
                endpoint.name.lower(),
                mask(str(exc)),
            )

    def recovered(self, account: str, endpoint: Endpoint) -> None:
        if not self._failing:
            return  # the usual case: no lock
        with self._lock:
            state = self._failing.pop((account, endpoint), None)
        if state is not None:
            kind, since, failures = state
            log.info(
                "Klaviyo %s ended for account %s, %s: answering again after %.1fs "
                "and %d failed requests",
                kind,
                account,
                endpoint.name.lower(),
                self._clock() - since,
                failures,
            )

    def failing(self) -> set[tuple[str, Endpoint]]:
        """The (account, endpoint) pairs failing now."""
        with self._lock:
            return set(self._failing)


def _live(batch: Batch, entries: list[BatchEntry]) -> list[BatchEntry]:
    """``entries`` without those of revoked or lost partitions (no scan when none is)."""
    if not batch.touches_released:
        return entries
    return [entry for entry in entries if entry.live]


def _halves(entries: list[BatchEntry]) -> list[list[BatchEntry]]:
    middle = len(entries) // 2
    # Second half first on the stack, so the first half goes out first.
    return [entries[middle:], entries[:middle]]


def _narrow(
    exc: BadRequestError,
    entries: Sequence[BatchEntry],
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
        for index in entries_for_pointer(pointer, layout) or ():
            bad.setdefault(index, rejection(exc, error))
    return bad


def _signature(exc: BadRequestError) -> str:
    """What identifies an error that names no item (its code and detail)."""
    return orjson.dumps(
        [(e.get("code"), e.get("detail")) for e in exc.errors], default=str
    ).decode()


def rejection(exc: BadRequestError, error: dict[str, object] | None) -> RejectedItemError:
    if error is None:
        first = exc.errors[0] if exc.errors else {}
        detail: dict[str, object] = {
            "code": first.get("code"),
            "title": first.get("title"),
            "errors": len(exc.errors),
        }
        text = f"Klaviyo rejected the item: {first.get('detail') or first.get('title')}"
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
