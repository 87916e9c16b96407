"""Klaviyo's asynchronous jobs: what a profile import or a catalog job does after its 202.

A job is created by the POST with status ``queued``; ``queued_seconds`` later it is
``processing`` and ``duration`` after the POST it is ``complete`` (or ``cancelled``). Only on
completion are its items applied to the emulator's state, and only those that did not fail:
an item fails by a ``fail_in_job`` fault (decided at the POST) or, with strict catalog rules,
by what the catalog holds when the job completes (:mod:`kafka_klaviyo_dev.emulator.catalog`).

Time is the app's clock (monotonic, injectable): jobs move on when the clock is read, on
every request (:meth:`JobBook.advance`), never on a timer, so a test with a manual clock steps
a job to completion without sleeping. Jobs finishing in the same step are applied in the order
they were due, then created; their completion time is the time they were due.

The documents follow the spec's job responses (``PostProfileImportJobResponse``,
``PostCatalogItemCreateJobResponse``...): ``data.type``, ``data.id``, the status and counts,
``created_at``/``completed_at``/``expires_at`` (and ``started_at`` for profile imports),
``errors`` (``APIJobErrorPayload``) for catalog jobs and ``links.self``.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import threading
import time
import uuid
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

JobStatus = Literal["queued", "processing", "complete", "cancelled"]

#: How long a finished job's document stays readable, as ``expires_at`` says. Klaviyo does
#: not document the period; a week is the emulator's guess (jobs never expire here).
EXPIRY = timedelta(days=7)

#: The job types whose documents carry ``errors`` (all but profile import), and the
#: relationship naming the resources they touched.
_RELATED = {
    "catalog_create": ("items", "catalog-item"),
    "catalog_update": ("items", "catalog-item"),
    "catalog_delete": ("items", "catalog-item"),
    "category_bulk_create": ("categories", "catalog-category"),
    "category_bulk_update": ("categories", "catalog-category"),
    "category_bulk_delete": ("categories", "catalog-category"),
}
PROFILE_IMPORT = "profile_import"

#: Finished jobs kept for reading back; older ones are forgotten (a benchmark posts many).
KEEP_FINISHED = 20_000


@dataclass(frozen=True, slots=True)
class ItemFailure:
    """Why one item of a job failed: Klaviyo's error fields, ``pointer`` into the request."""

    code: str
    title: str
    detail: str
    pointer: str

    def to_json(self, error_id: str) -> dict[str, Any]:
        """The ``APIJobErrorPayload`` of a catalog job's ``errors``."""
        return {
            "id": error_id,
            "code": self.code,
            "title": self.title,
            "detail": self.detail,
            "source": {"pointer": self.pointer},
        }


@dataclass(slots=True)
class PendingItem:
    """One item of a job waiting for completion: where it was in the request, what will be
    stored for it and, if a fault already failed it, why."""

    position: int
    pointer: str
    resource: Mapping[str, Any]
    record: dict[str, Any]
    key: Hashable | None = None
    failure: ItemFailure | None = None


@dataclass(frozen=True, slots=True)
class FailedItem:
    """A failed item of a finished job: its error and what the request sent for it."""

    error_id: str
    position: int
    failure: ItemFailure
    original_payload: Mapping[str, Any]


_seqs = itertools.count(1)


@dataclass(slots=True)
class Job:
    """One asynchronous job and, once finished, its outcome."""

    id: str
    endpoint: str
    job_type: str
    path: str
    account: str
    total: int
    created: float
    started: float
    due: float
    items: list[PendingItem]
    lists: tuple[str, ...] = ()
    cancel: bool = False
    status: JobStatus = "queued"
    finished: float | None = None
    completed_count: int = 0
    failed_count: int = 0
    failed: list[FailedItem] = field(default_factory=list)
    touched: list[str] = field(default_factory=list)
    seq: int = field(default_factory=lambda: next(_seqs))

    @property
    def done(self) -> bool:
        """True once complete or cancelled."""
        return self.status in ("complete", "cancelled")

    def status_at(self, now: float) -> JobStatus:
        """The status a GET at ``now`` reports."""
        if self.done:
            return self.status
        return "queued" if now < self.started else "processing"


class JobBook:
    """Every job of one emulator, thread-safe; finished jobs keep their outcome, not items."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time
    ) -> None:
        self._clock = clock
        # Wall time of a clock reading: created_at and completed_at differ by the job's
        # duration on the emulator's clock, a manual one included.
        self._epoch = wall() - clock()
        self._lock = threading.RLock()
        self._jobs: dict[str, Job] = {}
        self._pending: list[Job] = []

    def now(self) -> float:
        """The clock's reading."""
        return self._clock()

    def iso(self, moment: float) -> str:
        """ISO 8601 wall time of a clock reading."""
        return datetime.fromtimestamp(self._epoch + moment, UTC).isoformat()

    def add(self, job: Job) -> None:
        """Start following ``job``."""
        with self._lock:
            self._jobs[job.id] = job
            self._pending.append(job)
            if len(self._jobs) > KEEP_FINISHED + len(self._pending):
                # dicts keep insertion order: the oldest finished jobs come first.
                excess = len(self._jobs) - KEEP_FINISHED - len(self._pending)
                old = [k for k, j in itertools.islice(self._jobs.items(), 2 * excess) if j.done]
                for key in old[:excess]:
                    del self._jobs[key]

    def advance(self, finish: Callable[[Job], None]) -> list[Job]:
        """Finish every job that is due: ``finish`` applies a job's items and sets its counts
        (not called for a cancelled job). Returns the jobs finished now."""
        now = self._clock()
        with self._lock:
            due = sorted((j for j in self._pending if j.due <= now), key=lambda j: (j.due, j.seq))
            if not due:
                return []
            finished = set(id(j) for j in due)
            self._pending = [j for j in self._pending if id(j) not in finished]
            for job in due:
                if job.cancel:
                    job.status = "cancelled"
                else:
                    finish(job)
                    job.status = "complete"
                job.finished = job.due
                job.items = []  # the stored records are the state's now
            return due

    def get(self, job_id: str) -> Job | None:
        """The job with that id."""
        with self._lock:
            return self._jobs.get(job_id)

    def jobs(
        self,
        *,
        account: str | None = None,
        endpoint: str | None = None,
        status: str | None = None,
    ) -> list[Job]:
        """Jobs, oldest first, optionally of one account, endpoint or status."""
        now = self._clock()
        with self._lock:
            return [
                j
                for j in self._jobs.values()
                if (account is None or j.account == account)
                and (endpoint is None or j.endpoint == endpoint)
                and (status is None or j.status_at(now) == status)
            ]

    def cancel(self, jobs: Iterable[Job]) -> list[str]:
        """Cancel unfinished ``jobs`` now (nothing of theirs is stored); their ids."""
        now = self._clock()
        cancelled: list[str] = []
        with self._lock:
            for job in jobs:
                if job.done:
                    continue
                job.cancel = True
                job.status = "cancelled"
                job.finished = now
                job.items = []
                self._pending = [j for j in self._pending if j is not job]
                cancelled.append(job.id)
        return cancelled

    def hurry(self, job: Job) -> bool:
        """Make an unfinished job due now (it completes on the next :meth:`advance`)."""
        now = self._clock()
        with self._lock:
            if job.done:
                return False
            job.due = min(job.due, now)
            job.started = min(job.started, now)
            return True

    def reset(self) -> None:
        """Forget every job."""
        with self._lock:
            self._jobs.clear()
            self._pending.clear()

    # --- documents ---------------------------------------------------------------------------

    def resource(self, job: Job, base_url: str, *, as_created: bool = False) -> dict[str, Any]:
        """The job as a JSON:API resource object, as a GET of it answers now (``as_created``:
        as the POST that created it answers, ``queued``)."""
        now = self._clock()
        status: JobStatus = "queued" if as_created else job.status_at(now)
        attributes: dict[str, Any] = {
            "status": status,
            "created_at": self.iso(job.created),
            "total_count": job.total,
            "completed_count": job.completed_count,
            "failed_count": job.failed_count,
            "completed_at": self.iso(job.finished) if job.finished is not None else None,
            "expires_at": (
                (datetime.fromtimestamp(self._epoch + job.finished, UTC) + EXPIRY).isoformat()
                if job.finished is not None
                else None
            ),
        }
        self_link = f"{base_url}{job.path}/{job.id}"
        relationships: dict[str, Any] = {}
        if job.endpoint == PROFILE_IMPORT:
            # A job cancelled before it started never started.
            began = not as_created and job.started <= (
                job.finished if job.finished is not None else now
            )
            attributes["started_at"] = self.iso(job.started) if began else None
            relationships = {
                "lists": {
                    "data": [{"type": "list", "id": list_id} for list_id in job.lists],
                    "links": {
                        "self": f"{self_link}/relationships/lists",
                        "related": f"{self_link}/lists",
                    },
                },
                "profiles": {
                    "links": {
                        "self": f"{self_link}/relationships/profiles",
                        "related": f"{self_link}/profiles",
                    }
                },
                "import-errors": {"links": {"related": f"{self_link}/import-errors"}},
            }
        else:
            attributes["errors"] = [f.failure.to_json(f.error_id) for f in job.failed]
            related = _RELATED.get(job.endpoint)
            if related is not None:
                name, kind = related
                relationships = {
                    name: {
                        "data": [{"type": kind, "id": i} for i in job.touched],
                        "links": {
                            "self": f"{self_link}/relationships/{name}",
                            "related": f"{self_link}/{name}",
                        },
                    }
                }
        out: dict[str, Any] = {
            "type": job.job_type,
            "id": job.id,
            "attributes": attributes,
            "links": {"self": self_link},
        }
        if relationships:
            out["relationships"] = relationships
        return out

    def document(self, job: Job, base_url: str, *, as_created: bool = False) -> dict[str, Any]:
        """The body of a GET of one job, or (``as_created``) of the POST that created it."""
        resource = self.resource(job, base_url, as_created=as_created)
        return {"data": resource, "links": {"self": resource["links"]["self"]}}

    def summary(self, job: Job) -> dict[str, Any]:
        """What the control API shows of a job: its state plus its endpoint and account."""
        now = self._clock()
        return {
            "id": job.id,
            "type": job.job_type,
            "endpoint": job.endpoint,
            "account": job.account,
            "status": job.status_at(now),
            "total_count": job.total,
            "completed_count": job.completed_count,
            "failed_count": job.failed_count,
            "created_at": self.iso(job.created),
            "completed_at": self.iso(job.finished) if job.finished is not None else None,
            "due_in_seconds": max(0.0, job.due - now) if not job.done else 0.0,
            "errors": [
                {
                    **f.failure.to_json(f.error_id),
                    "position": f.position,
                    "original_payload": f.original_payload,
                }
                for f in job.failed
            ],
        }


def import_error(failed: FailedItem) -> dict[str, Any]:
    """One failed profile as ``GET /api/profile-bulk-import-jobs/{id}/import-errors`` lists it
    (``ImportErrorResponseObjectResource``)."""
    return {
        "type": "import-error",
        "id": failed.error_id,
        "attributes": {
            "code": failed.failure.code,
            "title": failed.failure.title,
            "detail": failed.failure.detail,
            "source": {"pointer": failed.failure.pointer},
            "original_payload": dict(failed.original_payload),
        },
    }


def new_id() -> str:
    """A job id (Klaviyo's are opaque strings)."""
    return uuid.uuid4().hex[:20]


def new_error_id() -> str:
    """An error id (a UUID, as in the spec's examples)."""
    return str(uuid.uuid4())


class CursorError(ValueError):
    """``page[cursor]`` is not one the emulator handed out."""


def encode_cursor(offset: int) -> str:
    """An opaque ``page[cursor]`` for the entry at ``offset``."""
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    """The offset a cursor names (0 without one); raises :class:`CursorError`."""
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise CursorError("page[cursor] is not a valid cursor") from exc
    kind, _, number = text.partition(":")
    if kind != "o" or not number.isdigit():
        raise CursorError("page[cursor] is not a valid cursor")
    return int(number)


def page(
    entries: Sequence[Any], offset: int, size: int, url: str, query: Mapping[str, str]
) -> tuple[Sequence[Any], dict[str, str]]:
    """One page of ``entries`` from ``offset`` and its ``links`` (``self``; ``prev``/``next``
    when there is such a page), cursors in ``page[cursor]`` of ``url``."""
    chunk = entries[offset : offset + size]

    def link(at: int | None) -> str:
        params = {k: v for k, v in query.items() if k != "page[cursor]"}
        if at:
            params["page[cursor]"] = encode_cursor(at)
        if not params:
            return url
        return url + "?" + "&".join(f"{k}={v}" for k, v in params.items())

    links = {"self": link(offset)}
    if offset + size < len(entries):
        links["next"] = link(offset + size)
    if offset > 0:
        links["prev"] = link(max(0, offset - size))
    return chunk, links
