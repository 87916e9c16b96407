"""``kafka-klaviyo group reset`` on the real broker: refused with members, moves a stopped group.

The command runs as its own process (``python -m consumer group reset``) configured through the
environment like the service; what it did is read back with separate clients (the committed
offsets through a plain consumer, the group's members through the admin API). Every run's
output is checked for the API key, e-mail addresses and phone numbers.
"""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from consumer.groups import GroupBusyError, apply_plan, plan_reset
from consumer.positions import format_time
from consumer.redact import mask
from kafka_klaviyo_dev.inspect import committed_offsets
from kafka_klaviyo_dev.kafka import LocalKafka
from tests.support import REPO, consumer_env, free_port, wait_for

pytestmark = pytest.mark.integration

API_KEY = "pk_groupreset0123456789abcdef"
PER_PARTITION = 10
STEP_MS = 1000


@dataclass
class Cluster:
    """A 2-partition topic of known timestamps, and a group that committed offsets 7 and 8."""

    bootstrap: str
    topic: str
    group: str
    base_ms: int  # message n of each partition has timestamp base_ms + n * STEP_MS

    def env(self, **extra: str) -> dict[str, str]:
        return consumer_env(
            bootstrap_servers=self.bootstrap,
            base_url="http://127.0.0.1:9",
            api_key=API_KEY,
            topic=self.topic,
            group_id=self.group,
            dead_letter_topic=f"{self.topic}.dlq",
            **extra,
        )

    def committed(self) -> dict[int, int]:
        return committed_offsets(self.bootstrap, self.group, self.topic)

    def reset(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """``python -m consumer group reset ARGS`` without a terminal; its output is clean."""
        done = subprocess.run(
            [sys.executable, "-m", "consumer", "group", "reset", *args],
            env=self.env(**env),
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return _clean(done)

    def reset_at_terminal(self, answer: str, *args: str) -> subprocess.CompletedProcess[str]:
        """The same with a terminal as stdin, on which ``answer`` is typed."""
        typing, terminal = pty.openpty()
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "consumer", "group", "reset", *args],
                env=self.env(),
                cwd=REPO,
                stdin=terminal,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            # The terminal keeps the line until the prompt reads it.
            os.write(typing, f"{answer}\n".encode())
            stdout, stderr = process.communicate(timeout=120)
        finally:
            os.close(terminal)
            os.close(typing)
        return _clean(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))


def _clean(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    output = done.stdout + done.stderr
    assert API_KEY not in output and "pk_" not in output
    # Nothing in it looks like an e-mail address, a phone number or a key to the masker.
    assert mask(output) == output, output
    return done


def _produce_with_timestamps(bootstrap: str, topic: str, base_ms: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    failures: list[str] = []

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    for partition in (0, 1):
        for n in range(PER_PARTITION):
            producer.produce(
                topic,
                value=f"{partition}-{n}".encode(),
                partition=partition,
                timestamp=base_ms + n * STEP_MS,
                on_delivery=delivered,
            )
    assert producer.flush(30) == 0 and failures == []


def _commit(bootstrap: str, group: str, offsets: list[TopicPartition]) -> None:
    """Commit as a stopped group would have: no member is left afterwards."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    try:
        consumer.commit(offsets=offsets, asynchronous=False)
    finally:
        consumer.close()


def _members(bootstrap: str, group: str) -> int:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    described = admin.describe_consumer_groups([group], request_timeout=10)[group].result(15)
    return len(described.members)


@pytest.fixture
def cluster(kafka_broker: LocalKafka, topic_name: str) -> Cluster:
    kafka_broker.create_topic(topic_name, partitions=2, config={"retention.ms": "-1"})
    # Whole seconds an hour ago: the times below name messages exactly.
    base_ms = (int(time.time()) - 3600) * 1000
    _produce_with_timestamps(kafka_broker.bootstrap_servers, topic_name, base_ms)
    group = f"reset-{uuid.uuid4().hex[:10]}"
    _commit(
        kafka_broker.bootstrap_servers,
        group,
        [TopicPartition(topic_name, 0, 7), TopicPartition(topic_name, 1, 8)],
    )
    found = Cluster(kafka_broker.bootstrap_servers, topic_name, group, base_ms)
    assert found.committed() == {0: 7, 1: 8}
    return found


@pytest.fixture
def live_member(cluster: Cluster) -> Iterator[Consumer]:
    """A member of the group holding its partitions (it heartbeats from librdkafka's thread)."""
    member = Consumer(
        {
            "bootstrap.servers": cluster.bootstrap,
            "group.id": cluster.group,
            "enable.auto.commit": False,
        }
    )
    member.subscribe([cluster.topic])

    def joined() -> bool:
        member.poll(0.2)
        return bool(member.assignment())

    try:
        wait_for(joined, 60, "the member to be assigned the partitions")
        yield member
    finally:
        member.close()


def test_a_group_with_a_member_is_refused_and_its_offsets_stay(
    cluster: Cluster, live_member: Consumer
) -> None:
    assert _members(cluster.bootstrap, cluster.group) == 1
    done = cluster.reset("--to-offset", "0", "--yes")
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        f"kafka-klaviyo: group {cluster.group} has 1 member (state stable): stop its consumers"
        " first; a member would overwrite the new offsets\n"
    )
    assert done.stdout == ""
    assert cluster.committed() == {0: 7, 1: 8}

    # A dry run still shows the plan of a running group, and says it would be refused.
    dry = cluster.reset("--to-offset", "0", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "15 messages read again" in dry.stdout
    assert f"note: group {cluster.group} has 1 member" in dry.stderr
    assert cluster.committed() == {0: 7, 1: 8}


def test_the_broker_refusal_of_a_group_that_gained_a_member_is_typed(
    cluster: Cluster, live_member: Consumer
) -> None:
    # What a member joining between the check and the move meets: the broker's own refusal.
    marks = {(cluster.topic, 0): (0, 10), (cluster.topic, 1): (0, 10)}
    current = {(cluster.topic, 0): 7, (cluster.topic, 1): 8}
    plan = plan_reset(cluster.group, "offset 0", marks, current, dict.fromkeys(marks, 0))
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    with pytest.raises(GroupBusyError, match=f"group {cluster.group} has members again"):
        apply_plan(admin, plan, bootstrap_servers=cluster.bootstrap, timeout_s=10)
    assert cluster.committed() == {0: 7, 1: 8}


def test_a_stopped_group_moves_to_an_offset_and_to_a_time(cluster: Cluster) -> None:
    done = cluster.reset("--to-offset", "3", "--yes")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert lines[0] == f"Reset group {cluster.group} to offset 3:"
    assert lines[2].split() == [cluster.topic, "0", "7", "3", "4", "read", "again"]
    assert lines[3].split() == [cluster.topic, "1", "8", "3", "5", "read", "again"]
    assert lines[4] == "2 of 2 partitions change; 9 messages read again, 0 skipped"
    assert lines[5] == f"Committed offsets of group {cluster.group} now:"
    assert [line.split() for line in lines[7:]] == [
        [cluster.topic, "0", "3"],
        [cluster.topic, "1", "3"],
    ]
    assert cluster.committed() == {0: 3, 1: 3}

    # Half a second after message 5's timestamp: message 6 is the first at or after it.
    at = format_time(cluster.base_ms + 5 * STEP_MS).replace("+00:00", ".500Z")
    done = cluster.reset("--to-time", at, "--yes")
    assert done.returncode == 0, done.stderr
    assert "2 of 2 partitions change; 0 messages read again, 6 skipped" in done.stdout
    assert cluster.committed() == {0: 6, 1: 6}

    # Epoch milliseconds, one partition only; a time after every message is the end.
    done = cluster.reset(
        "--to-time", str(cluster.base_ms + 60 * STEP_MS), "--partitions", "1", "--yes"
    )
    assert done.returncode == 0, done.stderr
    assert cluster.committed() == {0: 6, 1: PER_PARTITION}

    done = cluster.reset("--to-earliest", "--yes")
    assert done.returncode == 0, done.stderr
    assert cluster.committed() == {0: 0, 1: 0}


def test_a_dry_run_and_a_run_without_yes_or_terminal_change_nothing(cluster: Cluster) -> None:
    dry = cluster.reset("--to-latest", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stderr == ""
    assert dry.stdout.splitlines()[-2:] == [
        "2 of 2 partitions change; 0 messages read again, 5 skipped",
        "Dry run: nothing changed.",
    ]
    assert cluster.committed() == {0: 7, 1: 8}

    unconfirmed = cluster.reset("--to-latest")
    assert unconfirmed.returncode == 2
    assert unconfirmed.stderr == (
        "kafka-klaviyo: group reset: no terminal to confirm at; pass --yes to apply"
        " (or --dry-run)\n"
    )
    assert "5 skipped" in unconfirmed.stdout  # the plan was shown before the refusal
    assert cluster.committed() == {0: 7, 1: 8}


def test_a_group_that_never_committed_is_moved_from_none(cluster: Cluster) -> None:
    fresh = Cluster(cluster.bootstrap, cluster.topic, f"fresh-{uuid.uuid4().hex[:8]}", 0)
    done = fresh.reset("--to-offset", "4", "--yes")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[2].split() == [cluster.topic, "0", "none", "4", "4", "skipped"]
    assert fresh.committed() == {0: 4, 1: 4}


def test_unknown_topics_partitions_and_brokers_are_one_line_each(cluster: Cluster) -> None:
    missing = cluster.reset("--topic", f"{cluster.topic}-nope", "--to-latest", "--dry-run")
    assert missing.returncode == 2
    assert missing.stderr == f"kafka-klaviyo: topic {cluster.topic}-nope does not exist\n"

    partition = cluster.reset("--partitions", "0,5", "--to-latest", "--dry-run")
    assert partition.returncode == 2
    assert partition.stderr == f"kafka-klaviyo: --partitions: 5 not in {cluster.topic}\n"

    nobody = f"127.0.0.1:{free_port()}"
    unreachable = cluster.reset(
        "--to-latest", "--dry-run", "--timeout", "2", KAFKA_BOOTSTRAP_SERVERS=nobody
    )
    assert unreachable.returncode == 2
    assert unreachable.stderr.startswith(
        f"kafka-klaviyo: cannot reach the Kafka brokers at {nobody} within 2s"
    )
    assert unreachable.stderr.count("\n") == 1
    assert cluster.committed() == {0: 7, 1: 8}


def test_at_a_terminal_the_plan_is_applied_only_when_confirmed(cluster: Cluster) -> None:
    declined = cluster.reset_at_terminal("n", "--to-offset", "2")
    assert declined.returncode == 0, declined.stderr
    assert f"Move the committed offsets of group {cluster.group}? [y/N]" in declined.stdout
    assert declined.stdout.endswith("Not confirmed: nothing changed.\n")
    assert cluster.committed() == {0: 7, 1: 8}

    confirmed = cluster.reset_at_terminal("y", "--to-offset", "2")
    assert confirmed.returncode == 0, confirmed.stderr
    assert f"Committed offsets of group {cluster.group} now:" in confirmed.stdout
    assert cluster.committed() == {0: 2, 1: 2}
