"""The ``kafka-klaviyo`` command line (also ``python -m consumer``).

Every command has help text (``kafka-klaviyo COMMAND --help``). Configuration errors end the
process with exit code 2 and one line naming the setting; fatal runtime errors with exit code 3.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from consumer import __version__
from consumer.errors import ConfigError
from consumer.exit_codes import EXIT_CONFIG, EXIT_FATAL, finish
from consumer.logs import configure_logging
from consumer.redact import mask

if TYPE_CHECKING:
    from consumer.positions import Bound

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
        finish(code)


def _bound(offset: int | None, moment: str | None, name: str) -> Bound | None:
    from consumer.positions import Bound, parse_time

    if offset is not None and moment is not None:
        raise click.UsageError(f"give --{name}-offset or --{name}-time, not both")
    if offset is not None:
        if offset < 0:
            raise click.BadParameter("must be 0 or more", param_hint=f"--{name}-offset")
        return Bound(offset=offset)
    if moment is not None:
        try:
            return Bound(time_ms=parse_time(moment))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint=f"--{name}-time") from exc
    return None


def _partition_numbers(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        numbers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: a comma-separated list of partition numbers", param_hint="--partitions"
        ) from None
    if not numbers or any(n < 0 for n in numbers):
        raise click.BadParameter(
            f"{text!r}: partition numbers are 0 or more", param_hint="--partitions"
        )
    return numbers


@cli.command()
@_CONFIG_OPTION
@click.option(
    "--topic",
    "topics",
    multiple=True,
    help="Topic to replay (repeat for several). Default: kafka.topics.",
)
@click.option("--partitions", "partitions_text", help="Only these partitions, e.g. 0,2,5.")
@click.option("--from-offset", type=int, help="First offset of every partition (inclusive).")
@click.option(
    "--from-time",
    help="Start at the first message at or after this time (ISO-8601, UTC unless a zone is "
    "given, or epoch ms).",
)
@click.option("--to-offset", type=int, help="End before this offset in every partition.")
@click.option("--to-time", help="End before the first message at or after this time.")
@click.option(
    "--group",
    "group_id",
    help="Consumer group of the replay (default: derived from topics, partitions and range; "
    "the live group is refused).",
)
@click.option(
    "--dry-run", is_flag=True, help="Decode, translate and count; send and commit nothing."
)
@click.option(
    "--no-backfill-flag",
    is_flag=True,
    help="Send events without backfill: true (they may trigger flows).",
)
@click.option(
    "--rate-share",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.5,
    show_default=True,
    help="Share of each endpoint's Klaviyo rate limit this replay may use (the rest is left "
    "to live traffic).",
)
def replay(
    config_file: Path | None,
    topics: tuple[str, ...],
    partitions_text: str | None,
    from_offset: int | None,
    from_time: str | None,
    to_offset: int | None,
    to_time: str | None,
    group_id: str | None,
    dry_run: bool,
    no_backfill_flag: bool,
    rate_share: float,
) -> None:
    """Backfill a range of topics into Klaviyo, then stop.

    Reads from --from-offset/--from-time (default: the oldest message kept) to
    --to-offset/--to-time (default: the end offsets when the replay first started), through
    the same rules and delivery as `run`, committing under its own consumer group: the live
    group's offsets never move. Events carry backfill: true (recorded without triggering
    flows) and subscriptions are a historical import with their consent times. Interrupted,
    the same command continues where it stopped. Progress goes to stderr, the summary to
    stdout.
    """
    only = _partition_numbers(partitions_text)
    start = _bound(from_offset, from_time, "from")
    end = _bound(to_offset, to_time, "to")
    from consumer.replay_command import run_replay
    from consumer.settings import load_settings

    code = EXIT_FATAL
    try:
        settings = load_settings(config_file)
        configure_logging(settings.observability.log_level)
        code = run_replay(
            settings,
            topics=topics,
            only=only,
            start=start,
            end=end,
            group_id=group_id,
            dry_run=dry_run,
            backfill=not no_backfill_flag,
            rate_share=rate_share,
        )
    except ConfigError as exc:
        click.echo(f"kafka-klaviyo: configuration error: {exc}", err=True)
        code = EXIT_CONFIG
    except Exception as exc:
        logging.getLogger(__name__).error(
            "replay failed: %s", mask(f"{type(exc).__name__}: {exc}"), exc_info=exc
        )
    finally:
        finish(code)


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


def _register_group() -> None:
    from consumer.groups_cli import group_cli

    cli.add_command(group_cli, "group")


_register_group()


def _register_dlq() -> None:
    # `dlq redrive` delivers, so it lives apart from the read-only commands and adds itself.
    import consumer.dlq.redrive  # noqa: F401
    from consumer.dlq.cli import dlq_group
    cli.add_command(dlq_group, "dlq")


_register_dlq()


def _register_catalog_feed() -> None:
    from consumer.catalog_feed_cli import catalog_feed_command

    cli.add_command(catalog_feed_command, "catalog-feed")


_register_catalog_feed()


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="kafka-klaviyo")
