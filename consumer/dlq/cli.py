"""``kafka-klaviyo dlq``: inspect the dead-letter topic (stats, list, show, export).

Read-only: the topic is read to its end as of the start, under a throwaway group id that never
commits. Personal data (e-mail addresses, phone numbers) is masked unless ``--reveal``, and a
``--reveal`` is logged as a WARNING naming who used it and on which records (never the data).
Registered by :mod:`consumer.cli` with ``cli.add_command(dlq_group, "dlq")``.

Exit codes: 0 done (an empty topic or selection too), 2 bad options or configuration, a missing
topic or a record that is not there, 3 the broker could not be read.
"""

from __future__ import annotations

import getpass
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn, TypeVar

import click
import orjson

from consumer.dlq.reader import (
    DeadLetterReader,
    DeadLetterReadError,
    DeadLetterTopicError,
    RecordNotFoundError,
)
from consumer.dlq.records import DeadLetterRecord
from consumer.dlq.render import decoded_value, record_document, table
from consumer.dlq.selection import Selection, selection_from_options, selection_options
from consumer.dlq.stats import Stats
from consumer.errors import ConfigError
from consumer.exit_codes import EXIT_CONFIG, EXIT_FATAL
from consumer.redact import mask
from consumer.settings import Settings

if TYPE_CHECKING:
    from consumer.decode import Decoder

log = logging.getLogger("consumer.dlq")

_F = TypeVar("_F", bound=Callable[..., Any])

config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="KAFKA_KLAVIYO_CONFIG",
    help="YAML configuration file (env: KAFKA_KLAVIYO_CONFIG). Environment variables override it.",
)
topic_option = click.option(
    "--topic",
    metavar="TOPIC",
    help="Dead-letter topic to read [default: the setting kafka.dead_letter_topic].",
)
reveal_option = click.option(
    "--reveal",
    is_flag=True,
    help="Show e-mail addresses and phone numbers unmasked (logged as a WARNING).",
)


def dlq_options(function: _F) -> _F:
    """Click decorator: ``--config`` and ``--topic``, as every ``dlq`` command takes them."""
    return config_option(topic_option(function))


@dataclass(frozen=True, slots=True)
class DlqContext:
    """Settings loaded once per command, and the dead-letter topic it reads."""

    settings: Settings
    topic: str

    def reader(self) -> DeadLetterReader:
        return DeadLetterReader(self.settings.kafka, self.topic)

    def decoder(self) -> Decoder:
        """The project's decoder (every record, not only mapped ones) with the configured
        Schema Registry."""
        from consumer.compose import schema_registry
        from consumer.decode import Decoder
        from consumer.schemas import SchemaCatalog

        try:
            return Decoder(SchemaCatalog.load(), registry=schema_registry(self.settings))
        except ConfigError:
            raise
        except Exception as exc:  # the registry client refuses its settings with ValueError
            raise ConfigError(f"schema_registry: {exc}") from exc


def load_context(config_file: Path | None, topic: str | None) -> DlqContext:
    """Settings and topic for a ``dlq`` command; a configuration error ends it (exit 2)."""
    from consumer.logs import configure_logging
    from consumer.settings import load_settings

    try:
        settings = load_settings(config_file)
    except ConfigError as exc:
        fail(f"configuration error: {exc}", EXIT_CONFIG)
    configure_logging(settings.observability.log_level)
    for note in settings.deprecations:
        logging.getLogger("consumer.settings").warning("%s", note)
    return DlqContext(settings, topic or settings.kafka.dead_letter_topic)


def fail(message: str, code: int) -> NoReturn:
    """One line on stderr, then exit with ``code``."""
    click.echo(f"kafka-klaviyo: {message}", err=True)
    sys.exit(code)


def log_reveal(command: str, what: str) -> None:
    """The WARNING a ``--reveal`` leaves: who, which command, which records; never data."""
    log.warning(
        "dlq %s --reveal: %s shown with personal data unmasked, by user %s",
        command,
        what,
        _user(),
    )


def reading(function: Callable[..., None]) -> Callable[..., None]:
    """Turn the reader's errors into one line and the exit code they mean."""

    def run(*args: Any, **kwargs: Any) -> None:
        try:
            function(*args, **kwargs)
        except (DeadLetterTopicError, RecordNotFoundError) as exc:
            fail(str(exc), EXIT_CONFIG)
        except ConfigError as exc:
            fail(f"configuration error: {exc}", EXIT_CONFIG)
        except DeadLetterReadError as exc:
            fail(str(exc), EXIT_FATAL)
        except click.ClickException:
            raise
        except BrokenPipeError:
            # The reader of our stdout stopped (``| head``): nothing left to tell anyone.
            os._exit(0)
        except Exception as exc:  # a bug must not print a traceback holding record data
            fail(mask(f"unexpected error: {type(exc).__name__}: {exc}"), EXIT_FATAL)

    run.__name__ = function.__name__
    run.__doc__ = function.__doc__
    return run


@click.group("dlq", context_settings={"help_option_names": ["-h", "--help"]})
def dlq_group() -> None:
    """Inspect the dead-letter topic.

    Read-only: records are read up to the topic's end as of the start, without joining or
    moving any consumer group. E-mail addresses and phone numbers are masked unless
    --reveal. Records are selected by the same options in every command (--stage,
    --error-class, --record-name, --since/--until, --source-topic, --source-partition,
    --from-offset/--to-offset, --max-attempts).
    """


@dlq_group.command("stats")
@dlq_options
@selection_options
@click.option("--json", "as_json", is_flag=True, help="Print the counts as one JSON object.")
def stats_command(
    config_file: Path | None, topic: str | None, as_json: bool, **options: Any
) -> None:
    """Count dead-letter records by stage, error class, record, source topic, Klaviyo
    error code and hour, with a bar chart of the hours."""
    selection = selection_from_options(**options)
    context = load_context(config_file, topic)
    reading(_stats)(context, selection, as_json)


def _stats(context: DlqContext, selection: Selection, as_json: bool) -> None:
    stats = Stats()
    with context.reader() as reader:
        for record in reader.select(selection, progress=_interactive()):
            stats.add(record)
    if as_json:
        click.echo(orjson.dumps({"topic": context.topic, **stats.to_json()}).decode())
    else:
        click.echo(stats.render(context.topic), nl=False)


@dlq_group.command("list")
@dlq_options
@selection_options
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="Show at most this many records (the first, by partition and offset); 0: all.",
)
def list_command(config_file: Path | None, topic: str | None, limit: int, **options: Any) -> None:
    """List dead-letter records as a table: where each sits (PARTITION:OFFSET, what show
    takes), when and why it failed, where it came from; messages masked and shortened."""
    selection = selection_from_options(**options)
    context = load_context(config_file, topic)
    reading(_list)(context, selection, limit)


def _list(context: DlqContext, selection: Selection, limit: int) -> None:
    shown: list[DeadLetterRecord] = []
    matched = 0
    with context.reader() as reader:
        for record in reader.select(selection, progress=_interactive()):
            matched += 1
            if not limit or len(shown) < limit:
                shown.append(record)
    if not matched:
        which = " match the selection" if selection != Selection() else ""
        click.echo(f"kafka-klaviyo: no dead-letter records in {context.topic}{which}", err=True)
        return
    click.echo(table(shown), nl=False)
    if len(shown) < matched:
        click.echo(f"{len(shown)} of {matched} matching records shown (--limit {limit})", err=True)


@dlq_group.command("show")
@dlq_options
@click.argument("coordinates", metavar="PARTITION:OFFSET", required=False)
@click.option(
    "--source",
    metavar="TOPIC:PARTITION:OFFSET",
    help="Find the record by the original message's coordinates instead (the latest one if"
    " it was dead-lettered more than once).",
)
@reveal_option
def show_command(
    config_file: Path | None,
    topic: str | None,
    coordinates: str | None,
    source: str | None,
    reveal: bool,
) -> None:
    """Show one dead-letter record as JSON: its headers and its value decoded as Avro.

    PARTITION:OFFSET are the record's coordinates in the dead-letter topic (the first
    column of 'dlq list'). A value that does not decode shows the error and its bytes.
    """
    if (coordinates is None) == (source is None):
        raise click.UsageError("give PARTITION:OFFSET or --source TOPIC:PARTITION:OFFSET")
    find: Callable[[DeadLetterReader], DeadLetterRecord]
    if coordinates is not None:
        _, partition, offset = _coordinates(coordinates, "PARTITION:OFFSET", 2)
        find = lambda reader: reader.record_at(partition, offset)  # noqa: E731
    else:
        assert source is not None
        wanted = _coordinates(source, "--source", 3)
        find = lambda reader: _by_source(reader, wanted)  # noqa: E731
    context = load_context(config_file, topic)
    reading(_show)(context, find, reveal)


def _show(
    context: DlqContext, find: Callable[[DeadLetterReader], DeadLetterRecord], reveal: bool
) -> None:
    click.echo(_document(context, find, reveal))


def show_record(context: DlqContext, partition: int, offset: int) -> str:
    """What ``dlq show PARTITION:OFFSET`` prints (masked): the record's JSON document."""
    return _document(context, lambda reader: reader.record_at(partition, offset), reveal=False)


def _document(
    context: DlqContext, find: Callable[[DeadLetterReader], DeadLetterRecord], reveal: bool
) -> str:
    with context.reader() as reader:
        record = find(reader)
    decoder = context.decoder()
    if reveal:
        log_reveal("show", f"{context.topic}[{record.partition}]@{record.offset}")
    document = record_document(record, decoded_value(decoder, record, reveal=reveal), reveal=reveal)
    return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode()


def _by_source(reader: DeadLetterReader, wanted: tuple[str, int, int]) -> DeadLetterRecord:
    topic, partition, offset = wanted
    selection = Selection(
        source_topics=(topic,),
        source_partitions=(partition,),
        from_offset=offset,
        to_offset=offset,
    )
    found = list(reader.select(selection, progress=_interactive()))
    if not found:
        raise RecordNotFoundError(
            f"no dead-letter record of {topic}[{partition}]@{offset} in {reader.topic}"
        )
    latest = max(found, key=lambda r: (r.attempts, r.when is not None, r.when, r.offset))
    if len(found) > 1:
        others = ", ".join(r.coordinates for r in found if r is not latest)
        click.echo(
            f"kafka-klaviyo: {topic}[{partition}]@{offset} was dead-lettered {len(found)}"
            f" times; showing the latest ({latest.coordinates}); others: {others}",
            err=True,
        )
    return latest


@dlq_group.command("export")
@dlq_options
@selection_options
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write to FILE (replaced atomically once complete) instead of stdout.",
)
@reveal_option
def export_command(
    config_file: Path | None,
    topic: str | None,
    output: Path | None,
    reveal: bool,
    **options: Any,
) -> None:
    """Export the selected records as JSON Lines: one object per record, its headers and
    its value decoded as Avro (the same object 'dlq show' prints)."""
    selection = selection_from_options(**options)
    context = load_context(config_file, topic)
    reading(_export)(context, selection, output, reveal)


def _export(context: DlqContext, selection: Selection, output: Path | None, reveal: bool) -> None:
    decoder = context.decoder()
    if reveal:
        where = str(output) if output is not None else "stdout"
        log_reveal(
            "export", f"records of {context.topic} ({selection.describe()}) written to {where}"
        )

    def lines(reader: DeadLetterReader) -> Iterator[bytes]:
        for record in reader.select(selection, progress=_interactive() and output is not None):
            value = decoded_value(decoder, record, reveal=reveal)
            document = record_document(record, value, reveal=reveal)
            yield orjson.dumps(document, option=orjson.OPT_APPEND_NEWLINE)

    with context.reader() as reader:
        if output is None:
            count = _write(sys.stdout.buffer, lines(reader))
            sys.stdout.flush()
        else:
            count = _write_atomically(output, lines(reader))
    target = f" to {output}" if output is not None else ""
    click.echo(
        f"kafka-klaviyo: exported {count} record{'s' if count != 1 else ''}{target}", err=True
    )


def _write(stream: IO[bytes], lines: Iterator[bytes]) -> int:
    count = 0
    for line in lines:
        stream.write(line)
        count += 1
    return count


def _write_atomically(path: Path, lines: Iterator[bytes]) -> int:
    """Write to a temporary file beside ``path``, then rename it over: readers of ``path``
    see the old file or the whole new one, never a partial export. The file is private to
    its owner (mkstemp's mode 0600): it may hold personal data."""
    directory = path.resolve().parent
    try:
        descriptor, name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise click.BadParameter(
            f"cannot write in {directory}: {exc}", param_hint="--output"
        ) from None
    try:
        with os.fdopen(descriptor, "wb") as handle:
            count = _write(handle, lines)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return count


def _coordinates(text: str, option: str, parts: int) -> tuple[str, int, int]:
    """``[TOPIC:]PARTITION:OFFSET`` as (topic, partition, offset); BadParameter otherwise."""
    pieces = text.rsplit(":", 2) if parts == 3 else text.split(":")
    if len(pieces) != parts or (parts == 3 and not pieces[0]):
        shape = "TOPIC:PARTITION:OFFSET" if parts == 3 else "PARTITION:OFFSET"
        raise click.BadParameter(f"{text!r} is not {shape}", param_hint=option)
    try:
        partition, offset = int(pieces[-2]), int(pieces[-1])
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: partition and offset must be whole numbers", param_hint=option
        ) from None
    if partition < 0 or offset < 0:
        raise click.BadParameter(f"{text!r}: negative partition or offset", param_hint=option)
    return (pieces[0] if parts == 3 else "", partition, offset)


def _interactive() -> bool:
    return sys.stderr.isatty()


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, as in some containers
        return f"uid {os.getuid()}"
