"""Klaviyo's asynchronous jobs on the real service: outcomes dead-lettered, state order kept.

The emulator's app runs jobs as Klaviyo does (a 202 with the job, items stored when it
completes, failures listed by the job), here behind ``httpx.MockTransport``.
"""

from __future__ import annotations

from consumer.exit_codes import EXIT_OK
from tests.component import records
from tests.component.conftest import Stack, settings, wait_until

FAST_JOBS = {"poll_initial_s": 0.05, "poll_max_s": 0.1}


def test_items_a_job_fails_are_dead_lettered_at_stage_job_and_counted(stack: Stack) -> None:
    client = stack.klaviyo.client
    client.set_job_duration(0.3, endpoint="profile_import")
    client.fail_in_job("first_name", equals="Bad", detail="Invalid location.")
    stack.produce(records.customer("ann@shop.example", first_name="Ann"))
    stack.produce(records.customer("bob@shop.example", first_name="Bad"))
    stack.produce(records.customer("cy@shop.example", first_name="Cy"))
    runner = stack.start(settings(jobs=FAST_JOBS))
    wait_until(lambda: len(stack.dead_letters()) == 1, what="the failed profile dead-lettered")
    wait_until(lambda: stack.committed(0) == 3, what="all three committed")
    [record] = stack.dead_letters()
    assert record.header("dlq.stage") == "job"
    assert record.header("dlq.original.offset") == "1"
    assert "Invalid location." in (record.header("dlq.error.message") or "")
    stored = {p.attributes["first_name"] for p in client.profiles()}
    assert stored == {"Ann", "Cy"}
    metrics = runner.pipeline.metrics
    assert metrics.total("kafka_klaviyo_job_failed_items", endpoint="profiles") == 1
    assert metrics.total("kafka_klaviyo_dead_letters", stage="job") == 1
    assert stack.stop(runner) == EXIT_OK


def test_the_next_change_of_a_profile_waits_for_the_earlier_job(stack: Stack) -> None:
    """Klaviyo may run two jobs at once: the later change of one profile is sent only once
    the earlier job has an outcome, so the latest state wins whatever Klaviyo's job order."""
    client = stack.klaviyo.client
    client.set_job_duration(0.5, endpoint="profile_import")
    stack.produce(records.customer("ann@shop.example", first_name="Old"))
    runner = stack.start(settings(jobs=FAST_JOBS))
    wait_until(lambda: client.jobs(endpoint="profile_import"), what="the first job")
    stack.produce(records.customer("ann@shop.example", first_name="New"))
    wait_until(lambda: stack.committed(0) == 2, what="both committed")
    wait_until(lambda: len(client.jobs(endpoint="profile_import")) == 2, what="the second job")
    first, second = client.jobs(endpoint="profile_import")
    assert first.completed_at is not None and first.completed_at <= second.created_at
    wait_until(
        lambda: [p.attributes["first_name"] for p in client.profiles()] == ["New"],
        what="the latest profile stored",
    )
    assert stack.stop(runner) == EXIT_OK
