"""docker-compose.yml's two one-shots on the real broker and emulator, around a real consumer.

``python -m kafka_klaviyo_dev produce`` and ``verify`` run as their own processes, as compose
runs them, with the consumer (``python -m consumer run``) between them; the broker is the
session's Apache Kafka, Klaviyo the emulator validating every body against the spec.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from kafka_klaviyo_dev.demo import POISON_KEY
from kafka_klaviyo_dev.inspect import read_topic
from kafka_klaviyo_dev.kafka import LocalKafka
from tests.fixtures_emulator import RunningEmulator
from tests.support import REPO, ConsumerProcess, consumer_env

pytestmark = pytest.mark.integration

ORDERS = 20


def dev_tool(*args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kafka_klaviyo_dev", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def test_produce_then_verify_around_the_consumer(
    kafka_broker: LocalKafka, emulator: RunningEmulator, topic_name: str, tmp_path: Path
) -> None:
    dead_letters = f"{topic_name}.dlq"
    where = [
        "--bootstrap-servers", kafka_broker.bootstrap_servers,
        "--topic", topic_name,
        "--dead-letter-topic", dead_letters,
        "--orders", str(ORDERS),
    ]  # fmt: skip
    produced = dev_tool("produce", *where, "--partitions", "3")
    assert produced.returncode == 0, produced.stderr
    assert "one poison message" in produced.stdout
    env = consumer_env(
        bootstrap_servers=kafka_broker.bootstrap_servers,
        base_url=emulator.base_url,
        api_key=emulator.api_key,
        topic=topic_name,
        group_id=f"compose-{uuid.uuid4().hex[:8]}",
        dead_letter_topic=dead_letters,
    )
    with ConsumerProcess(env, tmp_path / "consumer.log") as consumer:
        checked = dev_tool("verify", *where, "--klaviyo-url", emulator.base_url, "--timeout", "240")
        assert checked.returncode == 0, checked.stdout + checked.stderr + consumer.output()
        assert consumer.stop() == 0, consumer.output()
    assert "everything expected arrived" in checked.stdout
    # What verify judged is what is there: the emulator's counts and the dead-letter topic.
    accepted = emulator.client.stats().accepted
    for line in checked.stdout.splitlines()[1:-1]:
        name, got, _of, want = line.split()
        assert accepted[name] == int(got) == int(want)
    assert [r.key for r in read_topic(kafka_broker.bootstrap_servers, dead_letters)] == [
        POISON_KEY
    ]
    # Producing again keeps the topics: a second run of the one-shot is no error.
    again = dev_tool("produce", *where, "--orders", "0")
    assert again.returncode == 0, again.stderr


def test_verify_fails_when_klaviyo_did_not_get_everything(
    kafka_broker: LocalKafka, emulator: RunningEmulator, topic_name: str
) -> None:
    # Nothing consumed the topic: the emulator holds nothing, the dead-letter topic is empty.
    kafka_broker.create_topic(f"{topic_name}.dlq", partitions=1)
    checked = dev_tool(
        "verify",
        "--bootstrap-servers", kafka_broker.bootstrap_servers,
        "--topic", topic_name,
        "--dead-letter-topic", f"{topic_name}.dlq",
        "--orders", "0",
        "--klaviyo-url", emulator.base_url,
        "--timeout", "3",
    )  # fmt: skip
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "still missing" in checked.stderr
    assert "expected the poison message only" in checked.stderr
