"""Following Klaviyo's asynchronous jobs to their outcome, and acting on it.

A 202 from profile import or a catalog item endpoint only says Klaviyo took the request; the
job it started says later which items failed. Once a batch's requests are accepted, its
messages count as delivered (so a slow job never holds back the commits of other messages)
and the pipeline hands the batch's jobs to the :class:`JobTracker`. The tracker polls each job
(``GET {endpoint}/{job_id}``, under that GET's own rate limit, backing off from
``poll_initial_s`` to ``poll_max_s``) until it is complete or cancelled, then reports the batch
as :class:`JobsDone`:

- items the job failed, with Klaviyo's code, detail and pointer, are reported failed: the
  pipeline dead-letters their messages at stage ``job``;
- a catalog delete of an item that does not exist is done (the item is gone, as asked);
- catalog updates of items that do not exist have their fallback (the full item, see
  :attr:`consumer.messages.Operation.fallback`) created in a job of its own, followed the same
  way: an upsert, which costs one item write when the item exists;
- a cancelled job's items are sent again in a new job (``resubmits`` times), then failed;
- a job without an outcome after ``timeout_s`` has its items failed: re-driving them is safe,
  since profile import and catalog writes set state.

The batch stays unfinished for :class:`~consumer.batch.Batching` until then, so a later
message about the same profile or catalog item waits for it: the latest state still wins.

One thread per account follows that account's jobs: one account's outage never delays
another's. Memory is bounded by :meth:`JobTracker.room`: the scheduler starts no batch of a job
endpoint while ``max_pending_items`` items wait for their jobs.

A process that dies with jobs pending has already committed their messages: the jobs still
run in Klaviyo, but items they fail are not dead-lettered (README, "Asynchronous jobs").
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from consumer.batch import Batch, BatchEntry
from consumer.bodies import EncodedItem, body_format
from consumer.deliver.client import Answer, KlaviyoClient
from consumer.deliver.sender import DeliveryAborted, Sender, SubmittedJob
from consumer.endpoints import Endpoint
from consumer.errors import BadRequestError, JobItemError, RequestRejectedError
from consumer.settings import JobsSettings

log = logging.getLogger(__name__)

_RUNNING = frozenset({"queued", "processing"})
# How Klaviyo says an update's item does not exist (the upsert then creates it). Klaviyo
# documents no code for it; these cover the codes and wording seen for missing resources.
_MISSING_CODES = frozenset({"not_found", "not-found", "does_not_exist", "missing"})
_MISSING_WORDS = ("not found", "does not exist", "doesn't exist", "no such")


@dataclass(slots=True)
class JobsDone:
    """Every job of one batch has an outcome: the entries whose items failed, and figures."""

    batch: Batch
    failed: list[tuple[BatchEntry, JobItemError]] = field(default_factory=list)
    # (endpoint, seconds from acceptance to outcome) of each job followed.
    latencies: list[tuple[Endpoint, float]] = field(default_factory=list)
    # Upserted items that did not exist and were created by a fallback job.
    created: int = 0
    polls: int = 0


@dataclass(eq=False, slots=True)
class _Batch:
    done: JobsDone
    open_jobs: int


@dataclass(eq=False, slots=True)
class _Job:
    owner: _Batch
    account: str
    submitted: SubmittedJob
    due: float
    polls: int = 0
    resubmits: int = 0

    @property
    def path(self) -> str:
        return f"{self.submitted.endpoint.spec.path}/{self.submitted.job_id}"


class JobTracker:
    """Follows the jobs of accepted batches; the pipeline collects the outcomes."""

    def __init__(
        self,
        sender: Sender,
        settings: JobsSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sender = sender
        self._settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queues: dict[str, list[tuple[float, int, _Job]]] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._seq = itertools.count()
        self._done: list[JobsDone] = []
        self._pending_items = 0
        self._open_jobs = 0
        self._fatal: BaseException | None = None
        self._stopped = threading.Event()

    # -- the pipeline's side -------------------------------------------------------------

    def follow(self, batch: Batch, jobs: list[SubmittedJob]) -> None:
        """Follow ``jobs``, the accepted requests of ``batch``; it is reported done once all
        of them (and any fallback or resubmitted job) have an outcome."""
        items = sum(len(job.entries) for job in jobs)
        owner = _Batch(JobsDone(batch), len(jobs))
        # The first poll waits too: a job just accepted is still queued.
        now = self._clock() + self._settings.poll_initial_s
        with self._lock:
            self._pending_items += items
            self._open_jobs += len(jobs)
            for submitted in jobs:
                self._push(_Job(owner, batch.account, submitted, now))

    def collect(self) -> list[JobsDone]:
        """Batches whose jobs all have an outcome since the last call. Raises what stopped
        following (authentication, a bug): those stop the process."""
        with self._lock:
            if self._fatal is not None:
                raise self._fatal
            done, self._done = self._done, []
        return done

    def room(self) -> bool:
        """Whether another batch of a job endpoint may start (pending items under the cap)."""
        return self._pending_items < self._settings.max_pending_items

    def pending_items(self) -> int:
        return self._pending_items

    def pending_jobs(self) -> int:
        return self._open_jobs

    def idle(self) -> bool:
        """No job without an outcome, and every outcome collected."""
        with self._lock:
            return self._open_jobs == 0 and not self._done

    def pending(self) -> Iterator[tuple[str, str, int]]:
        """(endpoint path, job id, items) of every job without an outcome yet."""
        with self._lock:
            jobs = [job for queue in self._queues.values() for _, _, job in queue]
        for job in jobs:
            yield job.submitted.endpoint.spec.path, job.submitted.job_id, len(job.submitted.entries)

    def close(self) -> None:
        """Stop following: threads end at their next wait; outcomes not known are dropped."""
        self._stopped.set()
        with self._lock:
            self._wake.notify_all()

    # -- the account threads -------------------------------------------------------------

    def _push(self, job: _Job) -> None:
        """Queue ``job`` for its next poll (the lock is held)."""
        queue = self._queues.setdefault(job.account, [])
        heapq.heappush(queue, (job.due, next(self._seq), job))
        if job.account not in self._threads:
            thread = threading.Thread(
                target=self._run, args=(job.account,), name=f"jobs-{job.account}", daemon=True
            )
            self._threads[job.account] = thread
            thread.start()
        self._wake.notify_all()

    def _run(self, account: str) -> None:
        queue = self._queues[account]
        while True:
            with self._lock:
                while not self._stopped.is_set():
                    wait = queue[0][0] - self._clock() if queue else None
                    if wait is not None and wait <= 0:
                        break
                    self._wake.wait(timeout=wait)
                if self._stopped.is_set():
                    return
                _, _, job = heapq.heappop(queue)
            try:
                self._poll(job)
            except DeliveryAborted:
                return
            except BaseException as exc:  # handed to the poll loop, which stops
                log.debug("following jobs of %s stopped", account, exc_info=True)
                with self._lock:
                    self._fatal = exc
                return

    def _poll(self, job: _Job) -> None:
        submitted = job.submitted
        spec = submitted.endpoint.spec.job
        assert spec is not None
        job.polls += 1
        job.owner.done.polls += 1
        try:
            answer = self._get(job.account, submitted.endpoint, job.path, None)
        except RequestRejectedError as exc:
            # The job is unknown to Klaviyo (expired, or never existed): no outcome to wait for.
            self._fail_all(job, f"Klaviyo does not know the job: {exc}", "unknown")
            return
        attributes = _attributes(answer.document)
        status = attributes.get("status")
        if status == "complete":
            self._complete(job, attributes, answer.document or {})
        elif status == "cancelled":
            self._cancelled(job)
        elif time.time() - submitted.accepted_at > self._settings.timeout_s:
            self._fail_all(
                job,
                f"Klaviyo's job has no outcome after {self._settings.timeout_s:g}s "
                f"(status {status})",
                "timeout",
            )
        else:
            if status not in _RUNNING:
                log.warning("%s: unknown job status %r; following it still", job.path, status)
            delay = min(
                self._settings.poll_max_s,
                self._settings.poll_initial_s * 2 ** min(job.polls - 1, 20),
            )
            job.due = self._clock() + delay
            with self._lock:
                self._push(job)

    def _complete(self, job: _Job, attributes: dict[str, Any], document: dict[str, Any]) -> None:
        submitted = job.submitted
        spec = submitted.endpoint.spec.job
        assert spec is not None
        failed_count = attributes.get("failed_count") or 0
        errors: list[dict[str, Any]] = []
        if failed_count:
            if spec.import_errors:
                errors = list(self._import_errors(job))
            else:
                raw = attributes.get("errors")
                errors = [e for e in raw if isinstance(e, dict)] if isinstance(raw, list) else []
        failed = self._failed_entries(job, errors)
        if failed_count and len(failed) < failed_count:
            log.warning(
                "%s: %d items failed, %d of them could be matched to messages",
                job.path,
                failed_count,
                len(failed),
            )
        missing = []
        for entry, error in failed:
            if _is_missing(error):
                if submitted.endpoint is Endpoint.CATALOG_DELETE:
                    continue  # already gone: the state the message asks for
                if submitted.endpoint is Endpoint.CATALOG_UPDATE and entry.item.fallback:
                    missing.append(entry)
                    continue
            job.owner.done.failed.append((entry, _job_error(job, error)))
        self._record_latency(job)
        if missing:
            self._create_missing(job, missing)
        self._finish_job(job)

    def _create_missing(self, job: _Job, missing: list[BatchEntry]) -> None:
        """Create the upserted items the update found missing, in a job of their own."""
        entries = [
            BatchEntry(EncodedItem(entry.item.fallback or b""), entry.tickets, entry.twins)
            for entry in missing
        ]
        submitted = self._submit(job, Endpoint.CATALOG_CREATE, entries)
        if submitted is None:
            return
        job.owner.done.created += len(entries)
        self._chain(job, submitted)

    def _cancelled(self, job: _Job) -> None:
        """Klaviyo cancelled the job: nothing of it was applied. Send it again, or give up."""
        if job.resubmits >= self._settings.resubmits:
            self._fail_all(job, "Klaviyo cancelled the job", "cancelled")
            return
        log.warning(
            "%s: Klaviyo cancelled the job; sending its %d items again",
            job.path,
            len(job.submitted.entries),
        )
        submitted = self._submit(job, job.submitted.endpoint, job.submitted.entries)
        if submitted is not None:
            self._chain(job, submitted, resubmits=job.resubmits + 1)
        self._finish_job(job)

    def _chain(self, job: _Job, submitted: SubmittedJob, resubmits: int = 0) -> None:
        """Follow a job started on behalf of ``job``'s batch."""
        with self._lock:
            job.owner.open_jobs += 1
            self._open_jobs += 1
            self._pending_items += len(submitted.entries)
            due = self._clock() + self._settings.poll_initial_s
            follow = _Job(job.owner, job.account, submitted, due, resubmits=resubmits)
            self._push(follow)

    def _submit(
        self, job: _Job, endpoint: Endpoint, entries: list[BatchEntry]
    ) -> SubmittedJob | None:
        """POST ``entries`` to ``endpoint`` as a new job; None if Klaviyo refused them (they
        are failed with its errors)."""
        fmt = body_format(endpoint, job.owner.done.batch.history)
        body, layout = fmt.assemble(entries, job.owner.done.batch.group)
        limiter = self._sender.limiter(job.account, endpoint)
        try:
            answer = self._sender.call(
                job.account,
                endpoint,
                limiter,
                lambda client: client.post(endpoint, body),
                self._stopped,
            )
        except BadRequestError as exc:
            errors = exc.errors or [{"detail": str(exc)}]
            for entry in entries:
                job.owner.done.failed.append((entry, _job_error(job, errors[0], endpoint)))
            return None
        job_id = answer.job_id
        if job_id is None:
            log.warning("%s: the 202 named no job; its outcome is not followed", endpoint.spec.path)
            return None
        return SubmittedJob(endpoint, job_id, entries, layout, time.time())

    def _fail_all(self, job: _Job, reason: str, outcome: str) -> None:
        log.warning(
            "%s: %s; dead-lettering its %d items", job.path, reason, len(job.submitted.entries)
        )
        error = {"code": outcome, "detail": reason}
        for entry in job.submitted.entries:
            job.owner.done.failed.append((entry, _job_error(job, error)))
        self._record_latency(job)
        self._finish_job(job)

    def _record_latency(self, job: _Job) -> None:
        seconds = max(0.0, time.time() - job.submitted.accepted_at)
        job.owner.done.latencies.append((job.submitted.endpoint, seconds))

    def _finish_job(self, job: _Job) -> None:
        owner = job.owner
        with self._lock:
            self._pending_items -= len(job.submitted.entries)
            self._open_jobs -= 1
            owner.open_jobs -= 1
            if owner.open_jobs == 0:
                self._done.append(owner.done)

    def _failed_entries(
        self, job: _Job, errors: list[dict[str, Any]]
    ) -> list[tuple[BatchEntry, dict[str, Any]]]:
        """The entries the job's errors name (by pointer, else by the original payload)."""
        submitted = job.submitted
        fmt = body_format(submitted.endpoint, job.owner.done.batch.history)
        found: dict[int, dict[str, Any]] = {}
        by_identity: dict[tuple[str, str], int] | None = None
        for error in errors:
            pointer = _pointer(error)
            indexes = fmt.entries_for_pointer(pointer, submitted.layout) if pointer else None
            if not indexes:
                payload = error.get("original_payload")
                if isinstance(payload, dict):
                    if by_identity is None:
                        by_identity = _identities(submitted.entries)
                    index = next(
                        (by_identity[k] for k in _identity_keys(payload) if k in by_identity),
                        None,
                    )
                    indexes = [index] if index is not None else None
            for index in indexes or ():
                found.setdefault(index, error)
        return [(submitted.entries[index], error) for index, error in sorted(found.items())]

    def _import_errors(self, job: _Job) -> Iterator[dict[str, Any]]:
        """The failed profiles of a profile import job, every page."""
        path: str | None = f"{job.path}/import-errors"
        params: dict[str, str] | None = {"page[size]": "100"}
        while path is not None:
            answer = self._get(job.account, job.submitted.endpoint, path, params)
            document = answer.document or {}
            data = document.get("data")
            for resource in data if isinstance(data, list) else ():
                attributes = resource.get("attributes") if isinstance(resource, dict) else None
                if isinstance(attributes, dict):
                    yield attributes
            links = document.get("links")
            following = links.get("next") if isinstance(links, dict) else None
            # links.next is a whole URL with its cursor: no more parameters of ours.
            path = following if isinstance(following, str) and following else None
            params = None

    def _get(
        self, account: str, endpoint: Endpoint, path: str, params: dict[str, str] | None
    ) -> Answer:
        spec = endpoint.spec.job
        assert spec is not None
        limiter = self._sender.limiter_for(
            (account, f"GET {endpoint.spec.path}"), spec.burst_per_second, spec.steady_per_minute
        )

        def request(client: KlaviyoClient) -> Answer:
            return client.get(path, params)

        return self._sender.call(account, endpoint, limiter, request, self._stopped)


def _attributes(document: dict[str, Any] | None) -> dict[str, Any]:
    data = document.get("data") if document is not None else None
    attributes = data.get("attributes") if isinstance(data, dict) else None
    return attributes if isinstance(attributes, dict) else {}


def _pointer(error: dict[str, Any]) -> str | None:
    source = error.get("source")
    pointer = source.get("pointer") if isinstance(source, dict) else None
    return pointer if isinstance(pointer, str) and pointer else None


def _is_missing(error: dict[str, Any]) -> bool:
    code = str(error.get("code") or "").lower()
    if code in _MISSING_CODES:
        return True
    text = f"{error.get('title') or ''} {error.get('detail') or ''}".lower()
    return any(words in text for words in _MISSING_WORDS)


def _job_error(job: _Job, error: dict[str, Any], endpoint: Endpoint | None = None) -> JobItemError:
    """Klaviyo's error about one item of ``job``, as the dead-letter record carries it."""
    endpoint = endpoint or job.submitted.endpoint
    detail = {
        "code": error.get("code"),
        "title": error.get("title"),
        "pointer": _pointer(error),
        "job": job.submitted.job_id,
        "endpoint": endpoint.spec.path,
    }
    text = error.get("detail") or error.get("title") or error.get("code") or "no detail"
    # orjson round trip keeps only JSON-safe values in the dead-letter detail header.
    return JobItemError(
        f"Klaviyo's job failed the item: {text}",
        detail=orjson.loads(orjson.dumps(detail, default=str)),
    )


_IDENTIFIERS = ("email", "phone_number", "external_id")


def _identity_keys(attributes: dict[str, Any]) -> Iterator[tuple[str, str]]:
    inner = attributes.get("attributes")
    if isinstance(inner, dict):  # a whole resource object rather than its attributes
        attributes = inner
    for name in _IDENTIFIERS:
        value = attributes.get(name)
        if isinstance(value, str) and value:
            yield name, value.lower() if name == "email" else value


def _identities(entries: list[BatchEntry]) -> dict[tuple[str, str], int]:
    """Profile identifiers -> entry index, to match import errors without a pointer."""
    found: dict[tuple[str, str], int] = {}
    for index, entry in enumerate(entries):
        try:
            resource = orjson.loads(entry.item.json)
        except orjson.JSONDecodeError:
            continue
        if isinstance(resource, dict):
            for key in _identity_keys(resource):
                found.setdefault(key, index)
    return found
