"""``kafka-klaviyo dlq redrive``: selected dead-letter records back through the current rules
and delivery.

A re-drive is a bounded run (:func:`consumer.replay_command.run_range`) over the dead-letter
topic: the same service as ``run``, the records' original values (and keys and headers) as
the messages, and the selection leaving the others out. It commits under its own group,
derived from the topic and the selection, so:

- the same command run again after an interruption continues after the last record it
  finished, and never re-sends one it already re-drove; run again after it finished, it
  sends nothing (its range ends where the topic ended when it first started);
- a record that fails again is dead-lettered again, with ``dlq.attempts`` one higher and the
  coordinates of the shop's original message; it lands after the range's end, so this
  re-drive does not take it up again;
- records past ``--max-attempts`` and cut records (written without their value: fetch the
  original from its coordinates) are left alone.

Consent is sent live (the time of the re-drive is the consent time) and events without
``backfill``: they never reached Klaviyo, so no flow fired for them yet.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import click

from consumer.bodies import LIVE
from consumer.dlq.cli import dlq_group, dlq_options, load_context
from consumer.dlq.records import parse_record
from consumer.dlq.selection import Selection, selection_from_options, selection_options
from consumer.errors import ConfigError
from consumer.exit_codes import EXIT_CONFIG, EXIT_FATAL, finish
from consumer.messages import KafkaMessage
from consumer.redact import mask
from consumer.replay import RangeConsumer, plan_replay
from consumer.replay_command import open_consumer, range_settings, run_range
from consumer.source import consumer_config

log = logging.getLogger(__name__)

#: Records dead-lettered more often than this are left alone unless --max-attempts says.
DEFAULT_MAX_ATTEMPTS = 5


def redrive_group_id(live_group: str, topic: str, selection: Selection) -> str:
    """The group of a re-drive: the same topic and selection continue the same re-drive."""
    described = f"{topic}\n{selection.describe()}".encode()
    return f"{live_group}.redrive.{hashlib.sha256(described).hexdigest()[:12]}"


def selector(selection: Selection) -> Callable[[KafkaMessage], bool]:
    """The predicate of the messages a re-drive sends: selected, and not cut."""

    def select(message: KafkaMessage) -> bool:
        record = parse_record(message)
        return not record.cut and record.value is not None and selection.matches(record)

    return select


@dlq_group.command("redrive")
@dlq_options
@selection_options
@click.option(
    "--group",
    "group_id",
    help="Consumer group of the re-drive (default: derived from the topic and the selection;"
    " the live group is refused).",
)
@click.option("--dry-run", is_flag=True, help="Decode, translate and count; send nothing.")
@click.option(
    "--rate-share",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.5,
    show_default=True,
    help="Share of each endpoint's Klaviyo rate limit the re-drive may use.",
)
def redrive_command(
    config_file: Path | None,
    topic: str | None,
    group_id: str | None,
    dry_run: bool,
    rate_share: float,
    **options: Any,
) -> None:
    """Send selected dead-letter records back through the current rules and delivery.

    Takes the records of the dead-letter topic up to its end when the re-drive first
    started, selected with the same options as `dlq list` (records dead-lettered more than
    --max-attempts times, default 5, are left alone), and delivers them as `run` would. A
    record that fails again is dead-lettered again with dlq.attempts one higher.
    Interrupted, the same command continues where it stopped and re-sends nothing it
    already re-drove. Progress goes to stderr, the summary to stdout.
    """
    if options.get("max_attempts") is None:
        options["max_attempts"] = DEFAULT_MAX_ATTEMPTS
    selection = selection_from_options(**options)
    context = load_context(config_file, topic)
    settings = range_settings(context.settings, rate_share=rate_share)
    kafka = settings.kafka
    group = group_id or redrive_group_id(kafka.group_id, context.topic, selection)
    code = EXIT_FATAL
    try:
        planner = cast(RangeConsumer, open_consumer(consumer_config(kafka, group_id=group)))
        try:
            plan = plan_replay(planner, [context.topic], group_id=group, live_group=kafka.group_id)
        finally:
            planner.close()
        code = run_range(
            settings,
            plan,
            history=LIVE,
            dry_run=dry_run,
            select=selector(selection),
            kind="re-drive",
        )
    except ConfigError as exc:
        click.echo(f"kafka-klaviyo: configuration error: {exc}", err=True)
        code = EXIT_CONFIG
    except Exception as exc:
        log.error("re-drive failed: %s", mask(f"{type(exc).__name__}: {exc}"), exc_info=exc)
        code = EXIT_FATAL
    finally:
        finish(code)
