"""The ``kafka-klaviyo`` command line (also ``python -m consumer``).

Every command has help text (``kafka-klaviyo COMMAND --help``). Configuration errors end the
process with exit code 2 and one line naming the setting; fatal runtime errors with exit code 3.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from consumer import __version__
from consumer.errors import ConfigError
from consumer.exit_codes import EXIT_CONFIG, EXIT_FATAL
from consumer.logs import configure_logging
from consumer.redact import mask

_CONFIG_OPTION = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="KAFKA_KLAVIYO_CONFIG",
    help="YAML configuration file (env: KAFKA_KLAVIYO_CONFIG). Environment variables override it.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kafka-klaviyo")
def cli() -> None:
    """Deliver Avro order-domain events from Kafka to Klaviyo.

    Reads order, cart, browsing, customer, subscription and catalog events from Kafka,
    translates them into Klaviyo API payloads, posts them in batches and dead-letters what
    cannot be delivered.
    """


@cli.command()
@_CONFIG_OPTION
def run(config_file: Path | None) -> None:
    """Join the consumer group and deliver to Klaviyo until SIGTERM.

    Offsets are committed only once every output of a message is delivered or
    dead-lettered. SIGTERM drains in-flight batches within the grace period, commits and
    leaves the group.
    """
    from consumer.compose import build_service
    from consumer.runner import Runner
    from consumer.settings import load_settings

    code = EXIT_FATAL
    try:
        try:
            settings = load_settings(config_file)
            configure_logging(settings.observability.log_level)
            for note in settings.deprecations:
                logging.getLogger("consumer.settings").warning("%s", note)
            runner = Runner(build_service(settings))
        except ConfigError as exc:
            _fail_config(exc)
        runner.install_signal_handlers()
        code = runner.run()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else EXIT_CONFIG
    except Exception as exc:  # building the service failed in a way nobody translated
        logging.getLogger(__name__).error(
            "cannot start: %s", mask(f"{type(exc).__name__}: {exc}"), exc_info=exc
        )
    finally:
        # Everything is committed or abandoned by now; delivery threads may still sit in an
        # HTTP request to a hanging Klaviyo, and the interpreter would wait for them at exit.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _fail_config(exc: ConfigError) -> None:
    click.echo(f"kafka-klaviyo: configuration error: {exc}", err=True)
    sys.exit(EXIT_CONFIG)


def _register_rules() -> None:
    from consumer.rules.cli import deprecated_registry_group, rules_group, translate_command

    cli.add_command(rules_group, "rules")
    # Hidden, deprecated alias of `rules check`: one line to stderr, then the same.
    cli.add_command(deprecated_registry_group, "registry")
    cli.add_command(translate_command, "translate")


_register_rules()


def _register_dlq() -> None:
    from consumer.dlq.cli import dlq_group

    cli.add_command(dlq_group, "dlq")


_register_dlq()


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="kafka-klaviyo")
