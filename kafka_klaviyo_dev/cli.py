"""``python -m kafka_klaviyo_dev``: the development commands, apart from the service's CLI.

``demo`` runs the whole pipeline on this machine; ``emulator`` serves the local Klaviyo. The
service's own command (``kafka-klaviyo``) knows nothing of them, so the production image can
leave this package out.
"""

from __future__ import annotations

import sys

import click

from consumer.errors import ConfigError
from consumer.exit_codes import EXIT_CONFIG
from consumer.logs import configure_logging
from kafka_klaviyo_dev.emulator.cli import emulator_command
from kafka_klaviyo_dev.errors import DevstackError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Development tools of kafka-klaviyo: the local demo and the Klaviyo emulator."""


@cli.command()
@click.option(
    "--orders",
    default=300,
    show_default=True,
    type=click.IntRange(0, 100_000),
    help=(
        "Generated orders to send besides the guide's journey, with the traffic around them "
        "(visits, views, carts, checkouts, shipments, cancellations, refunds, profiles, "
        "subscriptions)."
    ),
)
@click.option(
    "--timeout",
    default=180.0,
    show_default=True,
    type=click.FloatRange(1),
    help="Seconds to wait for everything expected to reach the emulator; then exit 1.",
)
@click.option(
    "--registry/--no-registry",
    default=False,
    show_default=True,
    help=(
        "Also start a real Schema Registry (Apicurio Registry with Confluent's API, from Maven "
        "Central) and send the records in the Confluent wire format instead of single-object "
        "encoding."
    ),
)
def demo(orders: int, timeout: float, registry: bool) -> None:
    """Run the guide's whole journey through the pipeline locally and show what Klaviyo got.

    Starts a local Kafka broker (Apache Kafka jars from Maven Central; needs Java 17+ and
    Maven) and the Klaviyo emulator, produces the guide's journey (John Smith's visit, view,
    cart, checkout, order 1234, its fulfilment, cancellation and refund, his profile and
    subscription, the two books), generated traffic and one poison message, runs the consumer
    until Klaviyo holds everything expected, prints what it received per endpoint and metric
    and what it holds, shows the dead-letter record and stops everything.

    Exit 0 when everything expected arrived and only the poison message was dead-lettered,
    1 when something did not arrive in time or differs, 2 when the stack could not start.
    """
    from kafka_klaviyo_dev.demo import run_demo

    configure_logging("WARNING")
    try:
        sys.exit(run_demo(orders=orders, timeout_s=timeout, registry=registry))
    except (DevstackError, ConfigError) as exc:
        click.echo(f"kafka-klaviyo demo: {exc}", err=True)
        sys.exit(EXIT_CONFIG)


cli.add_command(emulator_command, "emulator")


def main() -> None:
    """Entry point of ``python -m kafka_klaviyo_dev``."""
    cli(prog_name="python -m kafka_klaviyo_dev")
