"""``kafka-klaviyo replay`` on the real broker and emulator, run as its own process.

What is checked is read from the outside: the events and subscriptions the emulator accepted
(with their ``backfill`` and ``historical_import`` flags), the offsets each group committed,
and the process's output.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from kafka_klaviyo_dev.inspect import committed_offsets
from kafka_klaviyo_dev.kafka import LocalKafka
from kafka_klaviyo_dev.produce import produce_orders
from kafka_klaviyo_dev.samples import GENERATED_EMAIL_DOMAIN, generated_orders, subscription_changed
from tests.fixtures_emulator import RunningEmulator
from tests.support import (
    CommitSampler,
    ConsumerProcess,
    Stack,
    expected_event_ids,
    wait_for,
    wait_for_commits,
)

pytest_plugins = ["tests.fixtures_kafka", "tests.fixtures_emulator"]

EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")


@pytest.fixture
def stack(
    kafka_broker: LocalKafka, emulator: RunningEmulator, topic_name: str, tmp_path: Path
) -> Stack:
    return Stack(kafka_broker, emulator, topic_name, tmp_path)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _between(stack: Stack) -> int:
    """A moment strictly after everything produced so far and before anything produced next."""
    time.sleep(0.05)
    moment = _now_ms()
    time.sleep(0.05)
    return moment


def _no_personal_data(output: str) -> None:
    leaked = [m for m in EMAIL.findall(output) if GENERATED_EMAIL_DOMAIN in m or "shop" in m]
    assert not leaked, f"e-mail addresses in the output: {leaked[:3]}"


def test_a_replay_of_a_time_range_delivers_exactly_that_range_as_history(
    stack: Stack, tmp_path: Path
) -> None:
    before = list(stack.produce(60))
    start = _between(stack)
    inside = list(_orders(stack, 80, prefix="inside"))
    past = datetime.now(UTC) - timedelta(days=30)
    consent = subscription_changed("sub-1", "LIST1", email="replayed@example.org", occurred_at=past)
    stack.produce_records([(b"s1", "shop.events.SubscriptionChanged", consent)])
    end = _between(stack)
    after = list(_orders(stack, 40, prefix="after"))

    with stack.consumer("live") as live:
        total = len(expected_event_ids(before + inside + after))
        wait_for(lambda: stack.accepted() >= total, 120, "the live group to deliver everything")
        wait_for_commits(stack, live, 60, "the live group to commit everything")
        live_offsets = stack.committed()
        stack.klaviyo.client.reset()

        with CommitSampler(stack) as sampler:
            replay = stack.command(
                "replay",
                ["replay", "--from-time", str(start), "--to-time", str(end)],
            )
            code = replay.wait(180)
        output = replay.output()
        assert code == 0, output
        # The live group kept running and its offsets never moved.
        assert live.process.poll() is None, live.output()
        assert stack.committed() == live_offsets
        assert sampler.highest() == live_offsets
        assert live.stop() == 0

    events = stack.klaviyo.client.events()
    got = [(e.metric, e.unique_id or "") for e in events]
    assert set(got) == expected_event_ids(inside) and len(got) == len(set(got))
    assert all(e.backfill for e in events)
    [subscription] = stack.klaviyo.client.items("subscribe")
    assert subscription["historical_import"] is True
    sent = subscription["subscriptions"]["email"]["marketing"]
    assert sent["consent"] == "SUBSCRIBED"
    assert sent["consented_at"].startswith(past.date().isoformat())
    assert sum(stack.klaviyo.client.stats().validation_failures.values()) == 0
    assert "translated Placed Order: 80" in output
    _no_personal_data(output)


def _orders(stack: Stack, count: int, *, prefix: str) -> list[dict[str, Any]]:
    orders = list(generated_orders(count, prefix=f"{stack.topic}-{prefix}", seed=len(prefix)))
    produce_orders(stack.bootstrap, stack.topic, orders)
    return orders


def test_a_replay_killed_midway_and_run_again_finishes_with_no_gap(stack: Stack) -> None:
    orders = stack.produce(1500)
    expected = expected_event_ids(orders)
    # Slow Klaviyo: the first run is still busy when it is killed.
    slow = stack.klaviyo.client.add_latency(0.3)
    args = ["replay", "--from-offset", "0"]
    first = stack.command("replay-1", args)
    group = _group_of(first)

    def some_committed() -> bool:
        offsets = committed_offsets(stack.bootstrap, group, stack.topic)
        return sum(max(o, 0) for o in offsets.values()) > 0

    wait_for(some_committed, 120, "the first run to commit part of the range")
    first.kill()
    halfway = committed_offsets(stack.bootstrap, group, stack.topic)
    ends = _ends(stack)
    assert sum(max(o, 0) for o in halfway.values()) < sum(ends.values()), "nothing was left"
    stack.klaviyo.client.remove_fault(slow)

    second = stack.command("replay-2", args)
    assert second.wait(180) == 0, second.output()
    assert "resuming at" in second.output()
    assert committed_offsets(stack.bootstrap, group, stack.topic) == ends
    got = {(e.metric, e.unique_id or "") for e in stack.klaviyo.client.events()}
    assert got == expected, f"{len(expected - got)} events missing after the resumed replay"


def _group_of(process: ConsumerProcess) -> str:
    def found() -> str | None:
        match = re.search(r"replay under group (\S+):", process.output())
        return match.group(1) if match else None

    return str(wait_for(found, 60, "the replay to print its plan"))


def _ends(stack: Stack) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": stack.bootstrap, "group.id": "ends"})
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(stack.topic, p), timeout=10)[1]
            for p in range(stack.partitions)
        }
    finally:
        consumer.close()


def test_a_dry_run_sends_and_commits_nothing(stack: Stack) -> None:
    orders = stack.produce(50)
    replay = stack.command("dry-run", ["replay", "--dry-run"])
    assert replay.wait(120) == 0, replay.output()
    output = replay.output()
    group = _group_of(replay)
    assert f"would send Placed Order: {len(orders)}" in output
    assert stack.klaviyo.client.stats().total_accepted == 0
    assert stack.klaviyo.client.requests() == []
    assert all(o < 0 for o in committed_offsets(stack.bootstrap, group, stack.topic).values())
    _no_personal_data(output)


def test_a_replay_under_the_live_group_is_refused(stack: Stack) -> None:
    stack.produce(5)
    replay = stack.command("refused", ["replay", "--group", stack.group_id])
    assert replay.wait(60) == 2
    lines = [line for line in replay.output().splitlines() if line.strip()]
    assert len(lines) == 1 and "is the live consumer group" in lines[0], lines
    assert stack.klaviyo.client.requests() == []
