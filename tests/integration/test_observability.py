"""What the consumer process writes on stderr, read from the outside.

* An unreachable Kafka: one clear line naming the bootstrap servers, librdkafka's messages as
  JSON log lines (never raw ``%3|...|FAIL|...``), and its repeats held back.
* A run with a Klaviyo outage and a refused item whose error text carries an e-mail address,
  a phone number and an API key: the outage is one line when it begins and one when it ends,
  and nothing personal or secret is in the log.
"""

from __future__ import annotations

import json
import re
import socket
import struct
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kafka_klaviyo_dev.samples import generated_orders
from tests.support import ConsumerProcess, consumer_env, free_port, produce_orders, wait_for

EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")
SECRET_DETAIL = "profile ada.lovelace@example.org (+1 617-253-1000) refused for pk_leaked_123"


def _lines(output: str) -> list[dict[str, str]]:
    """Every line of the output as a JSON log entry (the test fails on any other line)."""
    return [json.loads(line) for line in output.splitlines() if line.strip()]


class _ResettingBroker:
    """A TCP port that accepts connections and resets them at once, counting them: a Kafka
    nobody can talk to, with each of librdkafka's attempts visible to the test."""

    def __init__(self) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(16)
        self.address = f"127.0.0.1:{self._socket.getsockname()[1]}"
        self.attempts = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            self.attempts += 1
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            connection.close()

    def close(self) -> None:
        self._socket.close()


@pytest.fixture
def resetting_broker() -> Iterator[_ResettingBroker]:
    broker = _ResettingBroker()
    try:
        yield broker
    finally:
        broker.close()


def _env(bootstrap: str, emulator, topic: str = "shop.events") -> dict[str, str]:  # type: ignore[no-untyped-def]
    return consumer_env(
        bootstrap_servers=bootstrap,
        base_url=emulator.base_url,
        api_key=emulator.api_key,
        topic=topic,
        group_id=f"group-{uuid.uuid4().hex[:8]}",
        dead_letter_topic=f"{topic}.dlq",
    )


def test_a_refused_bootstrap_server_is_one_clear_line_and_no_raw_librdkafka_output(
    emulator, tmp_path: Path
) -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    with ConsumerProcess(_env(bootstrap, emulator), tmp_path / "consumer.log") as consumer:
        wait_for(
            lambda: f"cannot reach Kafka bootstrap servers {bootstrap}" in consumer.output(),
            60,
            "the unreachable-Kafka line",
        )
        assert consumer.stop() == 0, consumer.output()
    output = consumer.output()
    assert "%3|" not in output and "|FAIL|" not in output, output
    entries = _lines(output)
    clear = [e for e in entries if e["message"].startswith("cannot reach Kafka")]
    assert len(clear) == 1, output
    assert clear[0]["level"] == "WARNING" and clear[0]["logger"] == "consumer.kafka"
    assert any(e["logger"] == "consumer.librdkafka" for e in entries), output
    # librdkafka retries by itself: its lines are warnings at most, never the one error line
    # a fatal stop writes.
    assert [e for e in entries if e["level"] == "ERROR"] == [], output


def test_librdkafka_repeats_are_held_back_while_kafka_stays_unreachable(
    emulator, resetting_broker: _ResettingBroker, tmp_path: Path
) -> None:
    env = _env(resetting_broker.address, emulator)
    with ConsumerProcess(env, tmp_path / "consumer.log") as consumer:
        # Consumer and dead-letter producer together: many more attempts than log lines.
        wait_for(lambda: resetting_broker.attempts >= 12, 120, "librdkafka's reconnects")
        assert consumer.stop() == 0, consumer.output()
    output = consumer.output()
    assert "%3|" not in output and "%4|" not in output and "%7|" not in output, output
    entries = _lines(output)
    clear = [e for e in entries if e["message"].startswith("cannot reach Kafka")]
    assert len(clear) == 1, output
    assert resetting_broker.address in clear[0]["message"]
    from_librdkafka = [e["message"] for e in entries if e["logger"] == "consumer.librdkafka"]
    # Each kind of line once (digits aside), though librdkafka logged it on every attempt.
    shapes = [re.sub(r"\d+", "#", message) for message in from_librdkafka]
    assert len(shapes) == len(set(shapes)), "\n".join(from_librdkafka)
    assert len(from_librdkafka) < resetting_broker.attempts


def test_logs_of_an_outage_and_a_refused_item_hold_nothing_personal_or_secret(
    kafka_broker, emulator, topic_name: str, tmp_path: Path
) -> None:
    kafka_broker.create_topic(topic_name, partitions=2)
    kafka_broker.create_topic(f"{topic_name}.dlq", partitions=1)
    orders = list(generated_orders(20, prefix=topic_name))
    refused = orders[3]["customer"]["email"]
    client = emulator.client
    client.reject_items("profile.email", equals=refused, detail=SECRET_DETAIL)
    client.fail_with_status(503, requests=1, endpoint="events")
    produce_orders(kafka_broker.bootstrap_servers, topic_name, orders)
    env = _env(kafka_broker.bootstrap_servers, emulator, topic_name)
    env["KAFKA_KLAVIYO_OBSERVABILITY__LOG_LEVEL"] = "INFO"
    expected = (
        sum(1 + len(order["line_items"]) for order in orders) - 1 - len(orders[3]["line_items"])
    )
    with ConsumerProcess(env, tmp_path / "consumer.log") as consumer:
        wait_for(lambda: len(client.events()) >= expected, 90, "the good orders delivered")
        wait_for(lambda: "Klaviyo outage ended" in consumer.output(), 30, "the outage's end line")
        wait_for(lambda: "dead-lettering" in consumer.output(), 30, "the dead-letter line")
        assert consumer.stop() == 0, consumer.output()
    output = consumer.output()
    messages = [entry["message"] for entry in _lines(output)]
    for edge in ("begun", "ended"):
        start = f"Klaviyo outage {edge} for account default, events"
        assert sum(m.startswith(start) for m in messages) == 1, output
    refusal = [m for m in messages if m.startswith("dead-lettering")]
    assert len(refusal) == 1 and "refused for pk_***" in refusal[0], output
    assert EMAIL.findall(output) == [], output
    for raw in (refused, emulator.api_key, "pk_leaked_123", "617-253-1000", "253-1000"):
        assert raw not in output, raw
