"""``kafka-klaviyo rules check`` and ``kafka-klaviyo translate``.

``rules check`` loads and compiles the translation rules exactly as ``run`` does and prints
either a summary or every problem (exit code 2). ``translate`` shows what the service would send
for one event, read from a JSON file or from Kafka, inside the bulk body of its endpoint;
``--explain`` traces every output field to the rule text that produced it.

Rules settings come from the configuration file's ``rules`` section when a file is given; the
options here override it. Its deprecation notes (settings under their old names) are printed to
stderr, one line each. ``registry check`` is the deprecated, hidden alias of ``rules check``:
one line to stderr saying so, then the same. Registered by :mod:`consumer.cli` with
``cli.add_command(rules_group, "rules")``, ``cli.add_command(deprecated_registry_group,
"registry")`` and ``cli.add_command(translate_command, "translate")``.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from consumer.bodies import EncodedItem, body_format
from consumer.decode import DecodedRecord
from consumer.errors import ConfigError, KafkaKlaviyoError, MessageError
from consumer.exit_codes import EXIT_BAD_DATA, EXIT_CONFIG
from consumer.messages import EventPayload, Operation
from consumer.rules.avrojson import JsonInputError, record_from_json
from consumer.rules.compiled import CompiledRules, compile_rules
from consumer.rules.problems import RulesError
from consumer.schemas import SchemaCatalog

if TYPE_CHECKING:
    from consumer.settings import RulesSettings

DEPRECATED_CHECK = (
    "kafka-klaviyo: 'kafka-klaviyo registry check' is deprecated; use 'kafka-klaviyo rules check'"
)

_F = TypeVar("_F", bound=Callable[..., Any])

_CONFIG = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="KAFKA_KLAVIYO_CONFIG",
    help="YAML configuration file (env: KAFKA_KLAVIYO_CONFIG); its rules section, if any,"
    " gives defaults for the options below.",
)
_RULES = click.option(
    "--rules",
    "rule_dirs",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory of rule files layered over the defaults (repeatable; later ones win).",
)
_NO_DEFAULTS = click.option(
    "--no-defaults",
    is_flag=True,
    help="Load only the --rules directories, not the default rules shipped with the package.",
)
_METRIC = click.option(
    "--metric-name",
    "metric_names",
    multiple=True,
    metavar="DEFAULT=NAME",
    help="Send metric DEFAULT under NAME, e.g. 'Placed Order=Order Placed' (repeatable).",
)
_REGION = click.option(
    "--phone-region",
    metavar="CC",
    help="Region (ISO 3166 alpha-2) for phone numbers without a country code [default: US].",
)
_SHOW_SOURCE = click.option(
    "--show-source", is_flag=True, help="Also print the generated Python source."
)


def _check_options(function: _F) -> _F:
    """The options of ``rules check`` (and of its deprecated alias ``registry check``)."""
    for option in reversed((_CONFIG, _RULES, _NO_DEFAULTS, _METRIC, _REGION, _SHOW_SOURCE)):
        function = option(function)
    return function


@dataclass(frozen=True, slots=True)
class _Entry:
    """A batch entry as the body formats want it (just the encoded item)."""

    item: EncodedItem


@click.group("rules", context_settings={"help_option_names": ["-h", "--help"]})
def rules_group() -> None:
    """Inspect the translation rules (YAML rules compiled at load)."""


@rules_group.command("check")
@_check_options
def check_command(
    config_file: Path | None,
    rule_dirs: tuple[Path, ...],
    no_defaults: bool,
    metric_names: tuple[str, ...],
    phone_region: str | None,
    show_source: bool,
) -> None:
    """Load, check and compile the rules against the Avro schemas.

    Prints OK with what the rules map, or every problem with its file, line, rule and field
    (exit code 2). With rules that fail here the service never starts consuming.
    """
    compiled, _ = _load(config_file, rule_dirs, no_defaults, metric_names, phone_region, False)
    counts: dict[str, int] = {}
    for rule in compiled.rules:
        counts[rule.kind] = counts.get(rule.kind, 0) + 1
    kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(counts.items()))
    click.echo(
        f"OK: {_count(len(compiled.rules), 'rule')} ({kinds}) for"
        f" {_count(len(compiled.mapped_records), 'record')} from"
        f" {_count(len(compiled.files), 'file')}; version {compiled.version}"
    )
    for record in sorted(compiled.mapped_records):
        names = ", ".join(rule.name for rule in compiled.rules_for(record))
        click.echo(f"  {record}: {names}")
    if show_source:
        click.echo(compiled.source)


@click.group("registry", hidden=True, context_settings={"help_option_names": ["-h", "--help"]})
def deprecated_registry_group() -> None:
    """Deprecated: use 'kafka-klaviyo rules'."""


@deprecated_registry_group.command("check")
@_check_options
@click.pass_context
def deprecated_check_command(ctx: click.Context, /, **options: Any) -> None:
    """Deprecated: use 'kafka-klaviyo rules check' (the same options and output)."""
    click.echo(DEPRECATED_CHECK, err=True)
    ctx.invoke(check_command, **options)


@click.command("translate", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument(
    "event_file",
    required=False,
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
)
@click.option("--topic", help="Read the event from this Kafka topic (with --partition, --offset).")
@click.option("--partition", type=click.IntRange(0), help="Partition of the message to read.")
@click.option("--offset", type=click.IntRange(0), help="Offset of the message to read.")
@click.option(
    "--timeout",
    default=15.0,
    show_default=True,
    type=click.FloatRange(0.1),
    help="Seconds to wait for the message from Kafka.",
)
@click.option("--explain", is_flag=True, help="Trace every output field to its rule and source.")
@click.option(
    "--backfill", is_flag=True, help="Mark events backfill: true, as replay does by default."
)
@_CONFIG
@_RULES
@_NO_DEFAULTS
@_METRIC
@_REGION
def translate_command(
    event_file: Path | None,
    topic: str | None,
    partition: int | None,
    offset: int | None,
    timeout: float,
    explain: bool,
    backfill: bool,
    config_file: Path | None,
    rule_dirs: tuple[Path, ...],
    no_defaults: bool,
    metric_names: tuple[str, ...],
    phone_region: str | None,
) -> None:
    """Show the Klaviyo payloads for one event.

    EVENT_FILE is JSON ('-' for stdin): {"record": "shop.events.OrderPlaced", "value":
    {...}} with the record in Avro's JSON form (unions tagged or plain, decimals as text or
    numbers, timestamps as epoch milliseconds or ISO 8601). Or read one message with
    --topic/--partition/--offset from KAFKA_BOOTSTRAP_SERVERS and decode it as the service
    does. Prints each operation inside the bulk request body its endpoint takes, as JSON;
    with --explain, a table of every field, its value and the rule text that produced it.
    Exit codes: 1 if the event is bad data (it would be dead-lettered), 2 for usage or
    configuration errors.
    """
    from_kafka = topic is not None or partition is not None or offset is not None
    if from_kafka and event_file is not None:
        raise click.UsageError("give EVENT_FILE or --topic/--partition/--offset, not both")
    if not from_kafka and event_file is None:
        raise click.UsageError("give EVENT_FILE (or -) or --topic/--partition/--offset")
    if from_kafka and (topic is None or partition is None or offset is None):
        raise click.UsageError("--topic, --partition and --offset go together")
    compiled, catalog = _load(
        config_file, rule_dirs, no_defaults, metric_names, phone_region, backfill
    )
    if event_file is not None:
        record = _record_from_file(event_file, catalog)
    else:
        assert topic is not None and partition is not None and offset is not None
        record = _record_from_kafka(config_file, catalog, topic, partition, offset, timeout)
    try:
        if explain:
            from consumer.rules.explain import explain as explain_record
            from consumer.rules.explain import render

            click.echo(render(explain_record(compiled, record), record))
            return
        operations = compiled.translate(record)
    except MessageError as exc:
        click.echo(f"kafka-klaviyo: {type(exc).__name__}: {exc}", err=True)
        sys.exit(EXIT_BAD_DATA)
    click.echo(json.dumps(_bodies(compiled, record, operations), indent=2, ensure_ascii=False))


def bodies(
    operations: Sequence[Operation], rules: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Each operation inside the request body its endpoint takes (for display and tests)."""
    out: list[dict[str, Any]] = []
    for index, operation in enumerate(operations):
        endpoint = operation.endpoint
        entry: dict[str, Any] = {"rule": rules[index]} if rules is not None else {}
        entry |= {
            "endpoint": endpoint.name,
            "path": endpoint.spec.path,
            "dedup_key": list(operation.dedup_key) if operation.dedup_key is not None else None,
        }
        if operation.group is not None:
            entry["group"] = operation.group
        try:
            fmt = body_format(endpoint)
        except NotImplementedError:
            payload = operation.payload
            entry["item"] = (
                {"profile": payload.profile, "event": payload.event}
                if isinstance(payload, EventPayload)
                else payload
            )
        else:
            body, _ = fmt.assemble([_Entry(fmt.encode(operation))], operation.group)
            entry["body"] = json.loads(body)
        out.append(entry)
    return out


def _bodies(
    compiled: CompiledRules, record: DecodedRecord, operations: list[Operation]
) -> list[dict[str, Any]]:
    traced = compiled.traced(record)
    return bodies(operations, [t.rule.name for t in traced for _ in t.operations])


def _load(
    config_file: Path | None,
    rule_dirs: tuple[Path, ...],
    no_defaults: bool,
    metric_names: tuple[str, ...],
    phone_region: str | None,
    backfill: bool,
) -> tuple[CompiledRules, SchemaCatalog]:
    dirs: list[Path] = list(rule_dirs)
    names: dict[str, str] = {}
    region = phone_region
    include_defaults = not no_defaults
    configured = _configured_rules(config_file)
    if configured is not None:
        if not dirs:
            dirs = list(configured.dirs)
        names.update(configured.metric_names)
        region = region or configured.default_phone_region
        include_defaults = include_defaults and configured.include_defaults
    for item in metric_names:
        default, separator, name = item.partition("=")
        if not separator or not default.strip() or not name.strip():
            raise click.BadParameter(f"{item!r} is not DEFAULT=NAME", param_hint="--metric-name")
        names[default.strip()] = name.strip()
    try:
        catalog = SchemaCatalog.load()
        compiled = compile_rules(
            dirs,
            catalog=catalog,
            metric_names=names,
            default_phone_region=(region or "US").upper(),
            include_defaults=include_defaults,
            force_backfill=backfill,
        )
    except RulesError as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_CONFIG)
    except ConfigError as exc:
        _fail(f"configuration error: {exc}")
    return compiled, catalog


def _configured_rules(config_file: Path | None) -> RulesSettings | None:
    """The settings' ``rules`` section when a config file is given; deprecation notes to stderr."""
    if config_file is None:
        return None
    from consumer.settings import load_settings

    try:
        settings = load_settings(config_file)
    except ConfigError as exc:
        _fail(f"configuration error: {exc}")
    for note in settings.deprecations:
        click.echo(f"kafka-klaviyo: {note}", err=True)
    return settings.rules


def _record_from_file(path: Path, catalog: SchemaCatalog) -> DecodedRecord:
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except OSError as exc:
        _fail(f"cannot read {path}: {exc.strerror}")
    try:
        document = json.loads(text)
    except ValueError as exc:
        _fail(f"{path} is not JSON: {exc}")
    try:
        return record_from_json(document, catalog)
    except JsonInputError as exc:
        _fail(f"{path}: {exc}")


def _record_from_kafka(
    config_file: Path | None,
    catalog: SchemaCatalog,
    topic: str,
    partition: int,
    offset: int,
    timeout: float,
) -> DecodedRecord:
    """One message read by offset (never committing) and decoded as the service does."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    from consumer.compose import schema_registry
    from consumer.decode import Decoder
    from consumer.settings import load_settings
    from consumer.source import consumer_config

    try:
        settings = load_settings(config_file)
        config = consumer_config(
            settings.kafka,
            # A throwaway group that never commits: reading must not move anyone's offsets.
            group_id=f"kafka-klaviyo-translate-{uuid.uuid4().hex[:12]}",
            # An offset the partition does not have is an error now, not a silent jump.
            overrides={"auto.offset.reset": "error"},
        )
        registry = schema_registry(settings)
        consumer = Consumer(config)
    except ConfigError as exc:
        _fail(f"configuration error: {exc}")
    except KafkaException as exc:
        _fail(f"configuration error: kafka.properties: {exc}")
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + timeout
        message = None
        while time.monotonic() < deadline:
            polled = consumer.poll(min(1.0, max(0.0, deadline - time.monotonic())))
            if polled is None:
                continue
            if polled.error() is not None:
                _fail(f"reading {topic}[{partition}]@{offset}: {polled.error()}")
            position = polled.offset()
            if position == offset:
                message = polled
                break
            if position is not None and position > offset:
                _fail(f"{topic}[{partition}] has no message at offset {offset}")
        if message is None:
            _fail(
                f"no message at {topic}[{partition}]@{offset} within {timeout:g}s"
                f" (bootstrap servers {settings.kafka.bootstrap_servers})"
            )
    except KafkaException as exc:
        _fail(f"reading {topic}[{partition}]@{offset}: {exc}")
    finally:
        consumer.close()
    try:
        return Decoder(catalog, registry=registry).decode(message.value())
    except KafkaKlaviyoError as exc:
        click.echo(f"kafka-klaviyo: cannot decode the message: {exc}", err=True)
        sys.exit(EXIT_BAD_DATA)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _fail(message: str) -> NoReturn:
    click.echo(f"kafka-klaviyo: {message}", err=True)
    sys.exit(EXIT_CONFIG)
