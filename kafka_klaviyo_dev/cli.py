"""``python -m kafka_klaviyo_dev``: the development commands, apart from the service's CLI.

``demo`` runs the whole pipeline on this machine; ``emulator`` serves the local Klaviyo;
``registry`` runs a local Schema Registry with Confluent's API. The
service's own command (``kafka-klaviyo``) knows nothing of them, so the production image can
leave this package out.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import click

from consumer.errors import ConfigError
from consumer.exit_codes import EXIT_CONFIG
from consumer.logs import configure_logging
from kafka_klaviyo_dev.emulator.cli import emulator_command
from kafka_klaviyo_dev.errors import DevstackError
from kafka_klaviyo_dev.stack_cli import produce_command, verify_command


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
# For a stack that is already up (docker-compose.yml): the demo's records and its check.
cli.add_command(produce_command, "produce")
cli.add_command(verify_command, "verify")


@cli.command()
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Port on 127.0.0.1 (default: a free one).",
)
@click.option(
    "--persistent",
    is_flag=True,
    help="Keep the schemas in an H2 file under --work-dir instead of in memory.",
)
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for registry.log (and the data with --persistent); default: a temp dir.",
)
@click.option(
    "--register/--no-register",
    default=True,
    show_default=True,
    help="Register the shop's event schemas under their full names (RecordNameStrategy).",
)
def registry(port: int | None, persistent: bool, work_dir: Path | None, register: bool) -> None:
    """Run a local Schema Registry (Apicurio Registry, Confluent's API) until Ctrl-C.

    Fetched from Maven Central on first use (needs Java 17+ and Maven). Prints the URL to set
    as SCHEMA_REGISTRY_URL and, with --register, the id of every event schema.
    """
    from confluent_kafka.schema_registry import SchemaRegistryClient

    from consumer.schemas import SchemaCatalog
    from kafka_klaviyo_dev.encode import register_schemas
    from kafka_klaviyo_dev.registry import LocalRegistry

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    local = LocalRegistry(work_dir=work_dir, persistent=persistent, port=port)
    try:
        local.start()
        if register:
            client = SchemaRegistryClient.new_client({"url": local.url})
            for name, schema_id in register_schemas(client, SchemaCatalog.load()).items():
                click.echo(f"  {schema_id:>4}  {name}", err=True)
        click.echo(f"Schema Registry ready at {local.url} (log: {local.log_path})")
        sys.stdout.flush()
        while not stop.wait(1.0):
            if local.pid is None:
                raise DevstackError(f"the Schema Registry exited; see {local.log_path}")
    except DevstackError as exc:
        click.echo(f"kafka-klaviyo registry: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    finally:
        local.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo("Schema Registry stopped", err=True)


def main() -> None:
    """Entry point of ``python -m kafka_klaviyo_dev``."""
    cli(prog_name="python -m kafka_klaviyo_dev")
