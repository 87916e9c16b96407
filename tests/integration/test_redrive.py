"""``kafka-klaviyo dlq redrive`` on the real broker and emulator, every part its own process.

The live consumer dead-letters orders Klaviyo refuses (the emulator's reject-items fault
stands in for a rule that produced a body Klaviyo refuses) and one message that is not
Avro. Then the "rule is fixed" (the fault removed for all but one order) and a re-drive of
the deliver-stage records runs; what is checked is read from the outside: the events Klaviyo
accepted, the dead-letter topic's records and their headers, the re-drive group's offsets.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kafka_klaviyo_dev.inspect import committed_offsets, read_topic
from kafka_klaviyo_dev.kafka import LocalKafka
from kafka_klaviyo_dev.produce import produce_values
from tests.fixtures_emulator import RunningEmulator
from tests.support import Stack, expected_event_ids, wait_for, wait_for_commits

pytest_plugins = ["tests.fixtures_kafka", "tests.fixtures_emulator"]


@pytest.fixture
def stack(
    kafka_broker: LocalKafka, emulator: RunningEmulator, topic_name: str, tmp_path: Path
) -> Stack:
    return Stack(kafka_broker, emulator, topic_name, tmp_path)


def _run(stack: Stack, name: str, *args: str) -> tuple[int, str]:
    process = stack.command(name, ["dlq", "redrive", *args])
    code = process.wait(180)
    return code, process.output()


def _group_of(output: str) -> str:
    match = re.search(r"re-drive under group (\S+):", output)
    assert match, output
    return match.group(1)


def test_redrive_after_a_fix_delivers_the_selected_records_once(stack: Stack) -> None:
    orders = stack.produce(40)
    refused = [o for i, o in enumerate(orders) if i % 8 == 0]  # 5 orders
    still_refused = refused[0]
    fault = stack.klaviyo.client.reject_items(
        "unique_id", regex="^(" + "|".join(re.escape(o["order_id"]) for o in refused) + ")$"
    )
    produce_values(stack.bootstrap, stack.topic, [(b"poison", b"not avro at all")])
    with stack.consumer("live") as live:
        wait_for_commits(stack, live, 120, "the live group to finish")
        assert live.stop() == 0
    first = read_topic(stack.bootstrap, stack.dlq, timeout_s=5)
    stages = sorted(r.headers["dlq.stage"].decode() for r in first)
    assert stages == ["decode"] + ["deliver"] * len(refused), stages

    # The fix: Klaviyo takes every order again but one.
    stack.klaviyo.client.remove_fault(fault)
    stack.klaviyo.client.reject_items("unique_id", equals=still_refused["order_id"])
    code, output = _run(stack, "redrive-1", "--stage", "deliver")
    assert code == 0, output
    group = _group_of(output)

    got = [(e.metric, e.unique_id or "") for e in stack.klaviyo.client.events()]
    # Only the Placed Order events were refused (their unique_id is the order id).
    assert set(got) == expected_event_ids(orders) - {("Placed Order", still_refused["order_id"])}
    assert len(got) == len(set(got))
    # The order refused again is dead-lettered again: one more attempt, same origin.
    records = read_topic(stack.bootstrap, stack.dlq, timeout_s=5)
    assert len(records) == len(first) + 1
    again = records[-1]
    before = next(
        r
        for r in first
        if r.headers["dlq.original.offset"] == again.headers["dlq.original.offset"]
        and r.headers["dlq.original.partition"] == again.headers["dlq.original.partition"]
    )
    assert again.headers["dlq.attempts"] == b"2"
    assert again.headers["dlq.original.topic"] == stack.topic.encode()
    assert again.value == before.value
    assert again.headers["dlq.consumer.group"] == group.encode()
    assert "left alone (not selected): 1" in output  # the decode-stage poison

    # Run again: it sends nothing (the re-dead-lettered record is past its range).
    requests_before = len(stack.klaviyo.client.requests())
    code, output = _run(stack, "redrive-2", "--stage", "deliver")
    assert code == 0, output
    assert _group_of(output) == group
    assert len(stack.klaviyo.client.requests()) == requests_before
    assert len(read_topic(stack.bootstrap, stack.dlq, timeout_s=5)) == len(records)
    assert "@" not in output.replace("re-drive", ""), "an e-mail address in the output"


def test_redrive_killed_midway_continues_without_resending(stack: Stack) -> None:
    orders = stack.produce(300)
    fault = stack.klaviyo.client.reject_items("unique_id", regex=r"^[^_]*$")  # every Placed Order
    with stack.consumer("live") as live:
        wait_for_commits(stack, live, 120, "the live group to finish")
        assert live.stop() == 0
    dead = read_topic(stack.bootstrap, stack.dlq, timeout_s=5)
    assert len(dead) == len(orders)
    stack.klaviyo.client.remove_fault(fault)
    slow = stack.klaviyo.client.add_latency(0.5)

    # Small steps, one request at a time: the kill lands midway.
    first = stack.command(
        "redrive-1",
        ["dlq", "redrive"],
        KAFKA_KLAVIYO_DELIVERY__MAX_IN_FLIGHT_MESSAGES="20",
        KAFKA_KLAVIYO_DELIVERY__MAX_CONCURRENT_REQUESTS="1",
    )
    group = str(
        wait_for(
            lambda: (m := re.search(r"re-drive under group (\S+):", first.output())) and m.group(1),
            60,
            "the re-drive to print its plan",
        )
    )
    wait_for(
        lambda: any(o > 0 for o in _committed(stack, group).values()),
        120,
        "the re-drive to commit part of its range",
    )
    first.kill()
    stack.klaviyo.client.remove_fault(slow)
    placed_before = _placed(stack)
    code, output = _run(stack, "redrive-2")
    assert code == 0, output
    assert "resuming at" in output
    assert _committed(stack, group) == {0: len(orders)}
    placed = _placed(stack)
    assert set(placed) == {o["order_id"] for o in orders}
    # Every order's Placed Order accepted once; the resumed run re-sent at most what was in
    # flight at the kill (Klaviyo's dedup drops those: they never show twice).
    assert len(placed) == len(set(placed))
    assert len(placed_before) < len(orders)


def _placed(stack: Stack) -> list[str]:
    return [e.unique_id or "" for e in stack.klaviyo.client.events(metric="Placed Order")]


def _committed(stack: Stack, group: str) -> dict[int, int]:
    return committed_offsets(stack.bootstrap, group, stack.dlq)
