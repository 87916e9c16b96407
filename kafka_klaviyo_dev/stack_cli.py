"""``produce`` and ``verify``: the demo's journey on a stack that is already running.

``docker compose up`` runs these two as one-shot services around the consumer's own container:
``produce`` creates the topics and publishes what ``make demo`` publishes (the guide's journey,
the generated traffic and one poison message); ``verify`` waits until the emulator holds every
item Klaviyo should accept for them and the poison message is on the dead-letter topic, prints
what arrived, and exits 0, or 1 when something is missing or differs.
"""

from __future__ import annotations

import sys
import time
from collections import Counter

import click
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from consumer.exit_codes import EXIT_CONFIG
from consumer.redact import mask
from kafka_klaviyo_dev.errors import DevstackError

# The demo's names, repeated so `--help` of every dev command does not import the demo (and
# the whole service with it); tests/unit/test_compose.py keeps them equal.
TOPIC = "shop.events"
DEAD_LETTER_TOPIC = "shop.events.dlq"

_BOOTSTRAP = click.option(
    "--bootstrap-servers",
    envvar="KAFKA_BOOTSTRAP_SERVERS",
    show_envvar=True,
    required=True,
    help="The Kafka cluster (host:port[,host:port...]).",
)
_TOPIC = click.option(
    "--topic", default=TOPIC, show_default=True, help="The topic of the shop's events."
)
_DEAD_LETTER_TOPIC = click.option(
    "--dead-letter-topic",
    default=DEAD_LETTER_TOPIC,
    show_default=True,
    help="The consumer's dead-letter topic.",
)
_ORDERS = click.option(
    "--orders",
    default=300,
    show_default=True,
    type=click.IntRange(0, 100_000),
    help="Generated orders besides the guide's journey (the same records `demo --orders` "
    "sends; produce and verify must be given the same number).",
)


@click.command("produce")
@_BOOTSTRAP
@_TOPIC
@_DEAD_LETTER_TOPIC
@_ORDERS
@click.option(
    "--partitions",
    default=3,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Partitions of the events topic when this command creates it.",
)
def produce_command(
    bootstrap_servers: str, topic: str, dead_letter_topic: str, orders: int, partitions: int
) -> None:
    """Create the topics and publish the demo's records to a running broker, then exit.

    The guide's journey, generated traffic around ORDERS orders and one poison message the
    consumer must dead-letter. Existing topics are kept as they are.
    """
    from kafka_klaviyo_dev.demo import POISON_KEY, POISON_VALUE, demo_records, expected_for
    from kafka_klaviyo_dev.produce import produce_records, produce_values

    journey, traffic = demo_records(orders)
    try:
        _create_topics(bootstrap_servers, {topic: partitions, dead_letter_topic: 1})
        produce_records(bootstrap_servers, topic, journey)
        produce_records(bootstrap_servers, topic, traffic)
        produce_values(bootstrap_servers, topic, [(POISON_KEY, POISON_VALUE)])
    except DevstackError as exc:
        click.echo(f"kafka-klaviyo produce: {mask(str(exc))}", err=True)
        sys.exit(EXIT_CONFIG)
    expected = expected_for(journey + traffic)
    click.echo(
        f"produced {len(journey)} journey records, {len(traffic)} generated records and one "
        f"poison message to {topic}; Klaviyo should accept "
        f"{sum(expected.endpoints.values())} items"
    )


@click.command("verify")
@_BOOTSTRAP
@_TOPIC
@_DEAD_LETTER_TOPIC
@_ORDERS
@click.option(
    "--klaviyo-url",
    envvar="KLAVIYO_BASE_URL",
    show_envvar=True,
    required=True,
    help="The Klaviyo emulator the consumer delivers to.",
)
@click.option(
    "--timeout",
    default=300.0,
    show_default=True,
    type=click.FloatRange(1),
    help="Seconds to wait for everything expected; then exit 1.",
)
def verify_command(
    bootstrap_servers: str,
    topic: str,
    dead_letter_topic: str,
    orders: int,
    klaviyo_url: str,
    timeout: float,
) -> None:
    """Wait until the emulator holds what Klaviyo should accept for the produced records.

    Exit 0 when every expected item arrived, no more, and only the poison message was
    dead-lettered; 1 when something is missing or differs after TIMEOUT seconds.
    """
    from kafka_klaviyo_dev.demo import (
        POISON_KEY,
        demo_records,
        differences,
        expected_for,
        shortfall,
    )
    from kafka_klaviyo_dev.emulator.client import EmulatorClient
    from kafka_klaviyo_dev.inspect import read_topic

    journey, traffic = demo_records(orders)
    expected = expected_for(journey + traffic)
    deadline = time.monotonic() + timeout
    with EmulatorClient(klaviyo_url) as client:
        while True:
            missing = shortfall(expected.endpoints, client.stats().accepted)
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        accepted = dict(client.stats().accepted)
        metrics = Counter(event.metric for event in client.events())
    # The dead-letter write and the deliveries race; the poison's is awaited as well.
    dead_letters = read_topic(bootstrap_servers, dead_letter_topic)
    while not dead_letters and time.monotonic() < deadline:
        time.sleep(1.0)
        dead_letters = read_topic(bootstrap_servers, dead_letter_topic)
    click.echo(f"What Klaviyo received ({topic} -> {klaviyo_url}):")
    for name, want in expected.endpoints.items():
        click.echo(f"  {name:<16} {accepted.get(name, 0):>6} of {want}")
    problems = [f"still missing {'; '.join(missing)}"] if missing else []
    if wrong := differences(expected.endpoints, accepted):
        problems.append("other counts than expected: " + ", ".join(wrong))
    if wrong := differences(expected.metrics, metrics):
        problems.append("events per metric differ: " + ", ".join(wrong))
    poison = sum(1 for record in dead_letters if record.key == POISON_KEY)
    if poison != expected.dead_letters or len(dead_letters) != poison:
        problems.append(
            f"{dead_letter_topic} holds {len(dead_letters)} records, {poison} of them the "
            "poison message; expected the poison message only"
        )
    for problem in problems:
        click.echo(f"kafka-klaviyo verify: {mask(problem)}", err=True)
    if problems:
        sys.exit(1)
    click.echo(f"everything expected arrived; {dead_letter_topic} holds the poison message")


def _create_topics(bootstrap_servers: str, topics: dict[str, int]) -> None:
    """Create each topic (replication factor 1) unless it exists."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=n, replication_factor=1) for name, n in topics.items()],
        operation_timeout=30,
        request_timeout=30,
    )
    for name, future in futures.items():
        try:
            future.result(timeout=60)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if not (isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS):
                raise DevstackError(f"could not create topic {name!r}: {exc}") from exc
