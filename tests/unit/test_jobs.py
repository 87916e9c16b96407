"""JobTracker: following Klaviyo's jobs to their outcome; Categories: created once each.

A scripted Klaviyo (an httpx handler) plays the job API as the spec describes it: a 202 with
the job document, ``GET {endpoint}/{id}`` with its status, catalog ``errors`` with pointers and
profile ``import-errors`` pages with the original payloads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr

from consumer.batch import Batch, Batcher
from consumer.bodies import body_format
from consumer.deliver.client import KlaviyoClient
from consumer.deliver.jobs import JobsDone, JobTracker
from consumer.deliver.sender import Backoff, RetryAfterBounds, Sender
from consumer.endpoints import Endpoint
from consumer.errors import AuthenticationError
from consumer.messages import Operation
from consumer.settings import JobsSettings
from tests.fakes import Tickets
from tests.support import wait_for

ACCOUNT = "default"
PREFIX = "$custom:::$default:::"


class JobKlaviyo:
    """Klaviyo's job API, scripted: ``statuses[job]`` are the answers of successive GETs."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.posts: list[tuple[str, Any]] = []
        self.gets: list[str] = []
        self.jobs: dict[str, dict[str, Any]] = {}
        # The status each new job goes through, GET by GET (the last one repeats).
        self.script: Callable[[str, Any], list[str]] = lambda path, body: ["complete"]
        # Errors of each new job: (path, body) -> catalog errors or import errors.
        self.errors: Callable[[str, Any], list[dict[str, Any]]] = lambda path, body: []
        self.categories: dict[str, int] = {}
        self.category_status: Callable[[str], int] = lambda external_id: 201
        self.answer_get: Callable[[str], httpx.Response | None] = lambda path: None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        with self.lock:
            if request.method == "POST":
                body = orjson.loads(request.content)
                self.posts.append((path, body))
                if path == "/api/catalog-categories":
                    external_id = body["data"]["attributes"]["external_id"]
                    self.categories[external_id] = self.categories.get(external_id, 0) + 1
                    status = self.category_status(external_id)
                    if status == 400:
                        return _error(400, "invalid", "Name too long.", "/data/attributes/name")
                    return httpx.Response(status, json={"data": {"id": external_id}})
                job_id = f"job{len(self.jobs)}"
                self.jobs[job_id] = {
                    "path": path,
                    "statuses": self.script(path, body),
                    "errors": self.errors(path, body),
                    "body": body,
                }
                return httpx.Response(202, json=_job(job_id, "queued", 0))
            self.gets.append(str(request.url))
            special = self.answer_get(path)
            if special is not None:
                return special
            if path.endswith("/import-errors"):
                return self._import_errors(request)
            job_id = path.rsplit("/", 1)[1]
            job = self.jobs[job_id]
            status = job["statuses"][0]
            if len(job["statuses"]) > 1:
                job["statuses"].pop(0)
            failed = len(job["errors"]) if status == "complete" else 0
            document = _job(job_id, status, failed)
            if not job["path"].startswith("/api/profile-bulk-import-jobs") and failed:
                document["data"]["attributes"]["errors"] = job["errors"]
            return httpx.Response(200, json=document)

    def _import_errors(self, request: httpx.Request) -> httpx.Response:
        job_id = request.url.path.split("/")[-2]
        errors = self.jobs[job_id]["errors"]
        page = int(request.url.params.get("page[cursor]", "0"))
        data = [
            {"type": "import-error", "id": f"e{i}", "attributes": error}
            for i, error in enumerate(errors[page : page + 1])
        ]
        links: dict[str, Any] = {"self": str(request.url)}
        if page + 1 < len(errors):
            links["next"] = (
                f"https://klaviyo.test/api/profile-bulk-import-jobs/{job_id}/import-errors"
                f"?page%5Bcursor%5D={page + 1}"
            )
        return httpx.Response(200, json={"data": data, "links": links})

    def created_items(self) -> list[str]:
        return [
            item["attributes"]["external_id"]
            for path, body in self.posts
            if path == "/api/catalog-item-bulk-create-jobs"
            for item in body["data"]["attributes"]["items"]["data"]
        ]


def _job(job_id: str, status: str, failed: int) -> dict[str, Any]:
    return {
        "data": {
            "type": "catalog-item-bulk-update-job",
            "id": job_id,
            "attributes": {
                "status": status,
                "total_count": 2,
                "completed_count": 0,
                "failed_count": failed,
            },
            "links": {"self": f"https://klaviyo.test/jobs/{job_id}"},
        }
    }


def _error(status: int, code: str, detail: str, pointer: str) -> httpx.Response:
    error = {"status": status, "code": code, "title": code, "detail": detail}
    error["source"] = {"pointer": pointer}
    return httpx.Response(status, json={"errors": [error]})


def item_error(index: int, code: str, detail: str, collection: str = "items") -> dict[str, Any]:
    return {
        "id": f"err{index}",
        "code": code,
        "title": code,
        "detail": detail,
        "source": {"pointer": f"/data/attributes/{collection}/data/{index}"},
    }


def sender(klaviyo: JobKlaviyo, stop: threading.Event | None = None) -> Sender:
    client = KlaviyoClient(
        base_url="https://klaviyo.test",
        api_key=SecretStr("pk_test"),
        revision="2026-07-15",
        timeout_s=5.0,
        transport=httpx.MockTransport(klaviyo),
    )
    return Sender(
        {ACCOUNT: client},
        backoff=Backoff(0.001, 0.001),
        stop=stop or threading.Event(),
        rate_limit_share=None,
        retry_after=RetryAfterBounds(min_s=0.01, max_s=1.0),
    )


def upsert(external_id: str, categories: tuple[str, ...] = ()) -> Operation:
    relationships = {
        "categories": {
            "data": [{"type": "catalog-category", "id": PREFIX + c} for c in categories]
        }
    }
    attributes = {"title": external_id, "description": "", "url": "https://shop.test/p"}
    update: dict[str, Any] = {"id": PREFIX + external_id, "attributes": attributes}
    create: dict[str, Any] = {
        "attributes": {
            "external_id": external_id,
            "integration_type": "$custom",
            "catalog_type": "$default",
            **attributes,
        }
    }
    if categories:
        update["relationships"] = create["relationships"] = relationships
    return Operation(Endpoint.CATALOG_UPDATE, update, (PREFIX + external_id,), fallback=create)


def profile(email: str) -> Operation:
    return Operation(Endpoint.PROFILES, {"attributes": {"email": email}}, (email,))


def batch_of(operations: list[Operation]) -> Batch:
    tickets = Tickets()
    batcher = Batcher(ACCOUNT, operations[0].endpoint, linger_s=60)
    for operation in operations:
        batcher.add(operation, tickets())
    batch = batcher.take_open()
    assert batch is not None
    return batch


def settings(**overrides: Any) -> JobsSettings:
    values: dict[str, Any] = {"poll_initial_s": 0.01, "poll_max_s": 0.02, **overrides}
    return JobsSettings(**values)


def deliver_and_follow(
    klaviyo: JobKlaviyo, operations: list[Operation], jobs: JobsSettings | None = None
) -> tuple[JobsDone, JobTracker]:
    """Deliver one batch like the scheduler does, then follow its jobs to the outcome."""
    the_sender = sender(klaviyo)
    tracker = JobTracker(the_sender, jobs or settings())
    batch = batch_of(operations)
    outcome = the_sender.deliver(batch, threading.Event())
    assert outcome.jobs, "a job endpoint's accepted request names its job"
    tracker.follow(batch, outcome.jobs)
    done: list[JobsDone] = []
    wait_for(lambda: done.extend(tracker.collect()) or bool(done), 30, "the jobs' outcome", 0.01)
    tracker.close()
    [result] = done
    assert result.batch is batch
    return result, tracker


# -- catalog upserts ---------------------------------------------------------------------------


def test_an_upsert_of_an_existing_item_costs_one_write_and_reports_nothing() -> None:
    klaviyo = JobKlaviyo()
    done, tracker = deliver_and_follow(klaviyo, [upsert("A"), upsert("B")])
    assert done.failed == [] and done.created == 0
    assert [path for path, _ in klaviyo.posts] == ["/api/catalog-item-bulk-update-jobs"]
    assert tracker.idle() and tracker.pending_items() == 0


def test_the_items_an_update_finds_missing_are_created_and_other_failures_reported() -> None:
    klaviyo = JobKlaviyo()

    def errors(path: str, body: Any) -> list[dict[str, Any]]:
        if path.endswith("update-jobs"):
            return [
                item_error(1, "not_found", "Catalog item not found."),
                item_error(2, "invalid", "Price must be positive."),
            ]
        return []

    klaviyo.errors = errors
    done, _ = deliver_and_follow(klaviyo, [upsert("A"), upsert("B"), upsert("C")])
    assert klaviyo.created_items() == ["B"]  # only the missing one, with its full item
    assert done.created == 1
    [(entry, error)] = done.failed
    assert orjson.loads(entry.item.json)["id"] == PREFIX + "C"
    assert error.stage == "job"
    assert error.detail["code"] == "invalid"
    assert error.detail["pointer"] == "/data/attributes/items/data/2"
    assert error.detail["job"] == "job0"
    assert "Price must be positive." in str(error)
    assert len(done.latencies) == 2  # the update job and the create job


def test_a_fallback_create_that_fails_in_its_job_is_reported_at_stage_job() -> None:
    klaviyo = JobKlaviyo()

    def errors(path: str, body: Any) -> list[dict[str, Any]]:
        if path.endswith("update-jobs"):
            return [item_error(0, "not_found", "Catalog item not found.")]
        return [item_error(0, "invalid", "The url is not valid.")]

    klaviyo.errors = errors
    done, _ = deliver_and_follow(klaviyo, [upsert("A")])
    [(entry, error)] = done.failed
    assert error.detail["endpoint"] == "/api/catalog-item-bulk-create-jobs"
    assert orjson.loads(entry.item.json)["attributes"]["external_id"] == "A"


# -- status and its changes --------------------------------------------------------------------


def test_a_job_is_polled_until_it_is_complete() -> None:
    klaviyo = JobKlaviyo()
    klaviyo.script = lambda path, body: ["queued", "processing", "processing", "complete"]
    done, _ = deliver_and_follow(klaviyo, [upsert("A")])
    assert done.polls == 4 and done.failed == []


def test_a_cancelled_job_is_sent_again_and_then_given_up() -> None:
    klaviyo = JobKlaviyo()
    klaviyo.script = lambda path, body: ["cancelled"] if len(klaviyo.jobs) == 0 else ["complete"]
    done, _ = deliver_and_follow(klaviyo, [upsert("A"), upsert("B")])
    assert done.failed == []
    assert [path for path, _ in klaviyo.posts] == ["/api/catalog-item-bulk-update-jobs"] * 2
    assert klaviyo.posts[0][1] == klaviyo.posts[1][1]  # the same items again

    always = JobKlaviyo()
    always.script = lambda path, body: ["cancelled"]
    done, _ = deliver_and_follow(always, [upsert("A"), upsert("B")], settings(resubmits=1))
    assert len(always.posts) == 2
    assert [error.detail["code"] for _, error in done.failed] == ["cancelled", "cancelled"]


def test_a_job_without_an_outcome_in_time_fails_its_items() -> None:
    klaviyo = JobKlaviyo()
    klaviyo.script = lambda path, body: ["processing"]
    done, _ = deliver_and_follow(klaviyo, [upsert("A")], settings(timeout_s=0.05))
    [(_, error)] = done.failed
    assert error.detail["code"] == "timeout" and "no outcome" in str(error)


def test_a_job_klaviyo_does_not_know_fails_its_items() -> None:
    klaviyo = JobKlaviyo()
    klaviyo.answer_get = lambda path: _error(404, "not_found", "Not found.", "/")
    done, _ = deliver_and_follow(klaviyo, [upsert("A")])
    [(_, error)] = done.failed
    assert error.detail["code"] == "unknown"


def test_job_polls_ride_out_an_outage() -> None:
    klaviyo = JobKlaviyo()
    outage = {"left": 3}

    def answer_get(path: str) -> httpx.Response | None:
        if outage["left"]:
            outage["left"] -= 1
            return httpx.Response(503)
        return None

    klaviyo.answer_get = answer_get
    done, _ = deliver_and_follow(klaviyo, [upsert("A")])
    assert done.failed == [] and outage["left"] == 0


def test_an_api_key_refused_while_following_stops_the_process() -> None:
    klaviyo = JobKlaviyo()
    klaviyo.answer_get = lambda path: httpx.Response(401, json={"errors": []})
    the_sender = sender(klaviyo)
    tracker = JobTracker(the_sender, settings())
    batch = batch_of([upsert("A")])
    tracker.follow(batch, the_sender.deliver(batch, threading.Event()).jobs)

    def raised() -> bool:
        try:
            tracker.collect()
        except AuthenticationError:
            return True
        return False

    wait_for(raised, 30, "the authentication error handed to the poll loop", 0.01)


# -- profile import errors ---------------------------------------------------------------------


def test_profile_import_errors_are_read_page_by_page_and_matched_to_their_messages() -> None:
    klaviyo = JobKlaviyo()

    def errors(path: str, body: Any) -> list[dict[str, Any]]:
        by_pointer = item_error(0, "invalid", "Invalid phone number.", "profiles")
        # No pointer: matched by the original payload's e-mail address.
        by_payload = {
            "code": "invalid",
            "title": "Invalid",
            "detail": "Invalid location.",
            "source": {"pointer": None},
            "original_payload": {"email": "C@shop.test"},
        }
        return [by_pointer, by_payload]

    klaviyo.errors = errors
    done, _ = deliver_and_follow(
        klaviyo, [profile("a@shop.test"), profile("b@shop.test"), profile("c@shop.test")]
    )
    emails = sorted(
        orjson.loads(entry.item.json)["attributes"]["email"] for entry, _ in done.failed
    )
    assert emails == ["a@shop.test", "c@shop.test"]
    pages = [url for url in klaviyo.gets if "/import-errors" in url]
    assert len(pages) == 2  # links.next followed


# -- memory bound ------------------------------------------------------------------------------


def test_room_closes_while_too_many_items_wait_for_their_jobs() -> None:
    klaviyo = JobKlaviyo()
    klaviyo.script = lambda path, body: ["processing"]
    the_sender = sender(klaviyo)
    tracker = JobTracker(the_sender, settings(max_pending_items=2))
    batch = batch_of([upsert("A"), upsert("B")])
    assert tracker.room()
    tracker.follow(batch, the_sender.deliver(batch, threading.Event()).jobs)
    assert not tracker.room() and tracker.pending_items() == 2
    assert tracker.pending_jobs() == 1
    tracker.close()


# -- categories --------------------------------------------------------------------------------


def test_categories_are_created_once_each_before_the_items_that_name_them() -> None:
    klaviyo = JobKlaviyo()
    klaviyo.category_status = lambda external_id: 409 if external_id == "Old" else 201
    the_sender = sender(klaviyo)
    first = batch_of([upsert("A", ("Fiction", "Old")), upsert("B", ("Fiction",))])
    the_sender.deliver(first, threading.Event())
    second = batch_of([upsert("C", ("Fiction", "Old"))])
    the_sender.deliver(second, threading.Event())
    assert klaviyo.categories == {"Fiction": 1, "Old": 1}
    paths = [path for path, _ in klaviyo.posts]
    assert paths[:2] == ["/api/catalog-categories"] * 2  # before the first item refers to them
    assert paths[2:] == ["/api/catalog-item-bulk-update-jobs"] * 2


def test_an_item_naming_a_category_klaviyo_refuses_is_refused_with_it() -> None:
    klaviyo = JobKlaviyo()
    klaviyo.category_status = lambda external_id: 400 if external_id == "Bad" else 201
    the_sender = sender(klaviyo)
    batch = batch_of([upsert("A", ("Bad",)), upsert("B", ("Good",))])
    outcome = the_sender.deliver(batch, threading.Event())
    [(entry, error)] = outcome.rejected
    assert orjson.loads(entry.item.json)["id"] == PREFIX + "A"
    assert error.detail["category"] == "Bad" and "Name too long." in str(error)
    [job] = outcome.jobs
    items = klaviyo.posts[-1][1]["data"]["attributes"]["items"]["data"]
    assert [item["id"] for item in items] == [PREFIX + "B"]
    assert job.entries == [e for e in batch.entries if e is not entry]


@pytest.mark.parametrize("endpoint", [Endpoint.CATALOG_UPDATE, Endpoint.CATALOG_CREATE])
def test_catalog_items_carry_the_categories_they_require(endpoint: Endpoint) -> None:
    op = upsert("A", ("Fiction", "Children"))
    if endpoint is Endpoint.CATALOG_CREATE:
        assert op.fallback is not None
        op = Operation(endpoint, op.fallback, op.dedup_key)
    item = body_format(endpoint).encode(op)
    assert item.requires == (PREFIX + "Fiction", PREFIX + "Children")
    assert (item.fallback is not None) is (endpoint is Endpoint.CATALOG_UPDATE)
