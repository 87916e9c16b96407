"""``kafka-klaviyo group reset``: move a stopped consumer group's committed offsets.

The command shows its plan first (topic, partition, committed offset, new offset, and how many
messages the group will read again or skip), then applies it only when told to: ``--yes``, or
an answer at the terminal; ``--dry-run`` shows the plan and stops. A group with members is
refused (exit 2, one line naming it and its member count), as is one in a state other than
Empty or Dead. After the move the offsets are read back from the broker and printed.

Registered by :mod:`consumer.cli` with ``cli.add_command(group_cli, "group")``.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from consumer.errors import ConfigError
from consumer.exit_codes import EXIT_CONFIG, EXIT_FATAL
from consumer.groups import (
    GroupBusyError,
    GroupState,
    Plan,
    Target,
    apply_plan,
    committed_offsets,
    describe_group,
    describe_target,
    plan_reset,
    render_offsets,
    render_plan,
    target_offsets,
)
from consumer.positions import Bound, parse_time, partitions, watermarks
from consumer.redact import mask

if TYPE_CHECKING:
    from confluent_kafka import Consumer
    from confluent_kafka.admin import AdminClient

    from consumer.settings import KafkaSettings

# librdkafka would print every failed connection attempt to stderr; the one line this command
# ends with says what failed, naming the bootstrap servers.
_QUIET = {"log_level": 0}


@click.group("group", context_settings={"help_option_names": ["-h", "--help"]})
def group_cli() -> None:
    """Inspect and move consumer groups' committed offsets."""


@group_cli.command("reset")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="KAFKA_KLAVIYO_CONFIG",
    help="YAML configuration file (env: KAFKA_KLAVIYO_CONFIG); gives the brokers, the group"
    " and the topics.",
)
@click.option("--group", "group_id", help="Consumer group to move [default: kafka.group_id].")
@click.option(
    "--topic",
    "topics",
    multiple=True,
    help="Topic whose offsets to move (repeatable) [default: kafka.topics].",
)
@click.option(
    "--partitions",
    "partitions_text",
    metavar="0,2",
    help="Only these partition numbers (comma-separated) [default: all].",
)
@click.option(
    "--to-offset",
    "to_offset",
    type=int,
    help="Move to this offset (clamped to what each partition holds).",
)
@click.option(
    "--to-time",
    "to_time",
    metavar="TIME",
    help="Move to the first message at or after TIME: ISO-8601 (UTC unless it names a zone)"
    " or epoch milliseconds.",
)
@click.option(
    "--to-earliest", is_flag=True, help="Move to the oldest message each partition holds."
)
@click.option("--to-latest", is_flag=True, help="Move to the end: skip everything not yet read.")
@click.option("--dry-run", is_flag=True, help="Only print the plan; change nothing.")
@click.option("--yes", is_flag=True, help="Apply without asking (needed without a terminal).")
@click.option(
    "--timeout",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds to wait for the brokers on each request.",
)
def reset_command(
    config_file: Path | None,
    group_id: str | None,
    topics: tuple[str, ...],
    partitions_text: str | None,
    to_offset: int | None,
    to_time: str | None,
    to_earliest: bool,
    to_latest: bool,
    dry_run: bool,
    yes: bool,
    timeout: float,
) -> None:
    """Move a stopped group's committed offsets to an offset, a time, or either end.

    Exactly one of --to-offset, --to-time, --to-earliest and --to-latest. The plan (committed
    and new offset per partition, and the messages read again or skipped) is printed first;
    the offsets move only with --yes or after confirming at the terminal. Refused while the
    group has members. Offsets and times mean what they mean for replay.
    """
    target = _target(to_offset, to_time, to_earliest, to_latest)
    only = _partition_numbers(partitions_text)
    if timeout <= 0:
        _fail("--timeout: must be more than 0 seconds")
    from consumer.settings import load_settings

    try:
        kafka = load_settings(config_file).kafka
    except ConfigError as exc:
        _fail(f"configuration error: {exc}")
    group = group_id or kafka.group_id
    wanted = list(topics) or list(kafka.topics)
    bootstrap = kafka.bootstrap_servers
    try:
        with _clients(kafka) as (admin, metadata):
            state = describe_group(admin, group, bootstrap_servers=bootstrap, timeout_s=timeout)
            if not dry_run:
                _refuse_unless_stopped(state)
            keys = partitions(metadata, wanted, only=only, timeout_s=timeout)
            marks = watermarks(metadata, keys, timeout_s=timeout)
            new = target_offsets(metadata, target, marks, timeout_s=timeout)
            current = committed_offsets(
                admin, group, keys, bootstrap_servers=bootstrap, timeout_s=timeout
            )
            plan = plan_reset(group, describe_target(target), marks, current, new)
            for line in render_plan(plan):
                click.echo(line)
            if dry_run:
                if not state.stopped:
                    click.echo(f"kafka-klaviyo: note: {state.refusal()}", err=True)
                click.echo("Dry run: nothing changed.")
                return
            _confirm(plan, yes)
            # The group may have gained members while the plan was read; the broker refuses
            # then too, but this says it with the member count.
            _refuse_unless_stopped(
                describe_group(admin, group, bootstrap_servers=bootstrap, timeout_s=timeout)
            )
            after = apply_plan(admin, plan, bootstrap_servers=bootstrap, timeout_s=timeout)
    except ConfigError as exc:
        _fail(str(exc))
    for line in render_offsets(group, after):
        click.echo(line)
    differ = [key for key, offset in plan.offsets.items() if after.get(key) != offset]
    if differ:
        where = ", ".join(f"{topic}[{number}]" for topic, number in differ)
        click.echo(
            f"kafka-klaviyo: the broker holds other offsets than planned for {where}", err=True
        )
        sys.exit(EXIT_FATAL)


def _target(
    to_offset: int | None, to_time: str | None, to_earliest: bool, to_latest: bool
) -> Target:
    given = [
        name
        for name, value in (
            ("--to-offset", to_offset is not None),
            ("--to-time", to_time is not None),
            ("--to-earliest", to_earliest),
            ("--to-latest", to_latest),
        )
        if value
    ]
    if len(given) != 1:
        said = f" (got {' and '.join(given)})" if given else ""
        _fail(f"give exactly one of --to-offset, --to-time, --to-earliest, --to-latest{said}")
    if to_offset is not None:
        if to_offset < 0:
            _fail(f"--to-offset: {to_offset} is negative; offsets start at 0")
        return Bound(offset=to_offset)
    if to_time is not None:
        try:
            return Bound(time_ms=parse_time(to_time))
        except ValueError as exc:
            _fail(f"--to-time: {exc}")
    return "earliest" if to_earliest else "latest"


def _partition_numbers(text: str | None) -> list[int] | None:
    if text is None:
        return None
    parts = [part.strip() for part in text.split(",")]
    if not parts or not all(part.isdigit() for part in parts):
        _fail(f"--partitions: {text!r} is not a comma-separated list of partition numbers")
    return sorted({int(part) for part in parts})


def _refuse_unless_stopped(state: GroupState) -> None:
    if not state.stopped:
        raise GroupBusyError(state.refusal())


def _confirm(plan: Plan, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        _fail("group reset: no terminal to confirm at; pass --yes to apply (or --dry-run)")
    if not click.confirm(f"Move the committed offsets of group {plan.group_id}?", default=False):
        click.echo("Not confirmed: nothing changed.")
        sys.exit(0)


def _ignore(_error: object) -> None:
    return None


@contextmanager
def _clients(kafka: KafkaSettings) -> Iterator[tuple[AdminClient, Consumer]]:
    """An admin client for the group, and a consumer that never joins a group for metadata."""
    from confluent_kafka import Consumer, KafkaException
    from confluent_kafka.admin import AdminClient

    from consumer.source import admin_config, consumer_config

    try:
        admin = AdminClient({**admin_config(kafka), **_QUIET})
        config = consumer_config(
            kafka,
            # Throwaway: it only asks for metadata and watermarks, never joins or commits.
            group_id=f"kafka-klaviyo-group-reset-{uuid.uuid4().hex[:12]}",
            overrides=_QUIET,
        )
        # An unreachable cluster is the command's own one-line error, not the service's
        # "cannot reach" warning as well.
        config["error_cb"] = _ignore
        metadata = Consumer(config)
    except KafkaException as exc:
        raise ConfigError(f"kafka.properties: {exc}") from exc
    try:
        yield admin, metadata
    finally:
        metadata.close()


def _fail(message: str) -> NoReturn:
    click.echo(f"kafka-klaviyo: {mask(message)}", err=True)
    sys.exit(EXIT_CONFIG)
