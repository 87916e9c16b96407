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
    help="Generated orders to send besides the guide's order 1234.",
)
@click.option(
    "--timeout",
    default=180.0,
    show_default=True,
    type=click.FloatRange(1),
    help="Seconds to wait for every event to reach the emulator.",
)
def demo(orders: int, timeout: float) -> None:
    """Run the whole pipeline locally and show what Klaviyo received.

    Starts a local Kafka broker (Apache Kafka jars from Maven Central; needs Java 17+ and
    Maven) and the Klaviyo emulator, produces the guide's sample order 1234 and generated
    orders, runs the consumer until all are delivered, prints a summary and stops everything.
    """
    from kafka_klaviyo_dev.demo import run_demo

    configure_logging("WARNING")
    try:
        sys.exit(run_demo(orders=orders, timeout_s=timeout))
    except (DevstackError, ConfigError) as exc:
        click.echo(f"kafka-klaviyo demo: {exc}", err=True)
        sys.exit(EXIT_CONFIG)


cli.add_command(emulator_command, "emulator")


def main() -> None:
    """Entry point of ``python -m kafka_klaviyo_dev``."""
    cli(prog_name="python -m kafka_klaviyo_dev")
