"""Which dead-letter records a ``dlq`` command works on, and the options that say so.

Every command that selects records (``stats``, ``list``, ``export``, ``redrive``) takes the
same options through :func:`selection_options` and turns them into one :class:`Selection`
with :func:`selection_from_options`, so a selection means the same to each of them.

Times are ISO-8601 (a naive time is UTC; a date alone is its midnight) or epoch milliseconds;
they are compared with ``dlq.failed.at``, or the dead-letter record's own timestamp when that
header is missing. ``--since`` is inclusive, ``--until`` exclusive.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

from consumer.dlq.records import DeadLetterRecord

STAGES = ("decode", "translate", "deliver", "job")

_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Selection:
    """Filters over dead-letter records; an empty tuple or None leaves that field free.

    ``record_names`` match a full name or its last part (``OrderPlaced`` for
    ``shop.events.OrderPlaced``). ``from_offset``/``to_offset`` bound the original offset,
    both inclusive. ``max_attempts`` keeps records dead-lettered at most that many times.
    """

    stages: tuple[str, ...] = ()
    error_classes: tuple[str, ...] = ()
    record_names: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    source_topics: tuple[str, ...] = ()
    source_partitions: tuple[int, ...] = ()
    from_offset: int | None = None
    to_offset: int | None = None
    max_attempts: int | None = None

    def matches(self, record: DeadLetterRecord) -> bool:
        """Whether ``record`` passes every filter (a field the record lacks passes none)."""
        if self.stages and record.stage not in self.stages:
            return False
        if self.error_classes and record.error_class not in self.error_classes:
            return False
        if self.record_names and not _name_matches(record.record_name, self.record_names):
            return False
        if self.since is not None or self.until is not None:
            when = record.when
            if when is None:
                return False
            if self.since is not None and when < self.since:
                return False
            if self.until is not None and when >= self.until:
                return False
        if self.source_topics and record.original_topic not in self.source_topics:
            return False
        if self.source_partitions and record.original_partition not in self.source_partitions:
            return False
        if self.from_offset is not None or self.to_offset is not None:
            offset = record.original_offset
            if offset is None:
                return False
            if self.from_offset is not None and offset < self.from_offset:
                return False
            if self.to_offset is not None and offset > self.to_offset:
                return False
        return self.max_attempts is None or record.attempts <= self.max_attempts

    def describe(self) -> str:
        """The filters set, as ``name=value`` text (``all records`` when none is)."""
        parts = []
        for name in SELECTION_KEYS:
            value = getattr(self, name)
            if value is None or value == ():
                continue
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, tuple):
                value = ",".join(str(item) for item in value)
            parts.append(f"{name}={value}")
        return " ".join(parts) or "all records"

    @property
    def since_ms(self) -> int | None:
        """``since`` in epoch milliseconds: where a reader may start by time."""
        return None if self.since is None else int(self.since.timestamp() * 1000)


def parse_time(text: str, option: str) -> datetime:
    """``text`` (ISO-8601 or epoch milliseconds) as an aware datetime; BadParameter naming
    ``option`` otherwise."""
    value = text.strip()
    try:
        if value.isdigit():
            return datetime.fromtimestamp(int(value) / 1000, UTC)
        parsed = datetime.fromisoformat(value)
    except (ValueError, OverflowError, OSError):
        raise click.BadParameter(
            f"{text!r} is neither an ISO-8601 time (e.g. 2026-12-01T19:00:00Z) nor epoch"
            " milliseconds",
            param_hint=option,
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _time_option(name: str, help_text: str) -> Callable[[_F], _F]:
    def convert(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
        return None if value is None else parse_time(value, name)

    return click.option(name, metavar="TIME", callback=convert, help=help_text)


_OPTIONS: tuple[Callable[[Any], Any], ...] = (
    click.option(
        "--stage",
        "stages",
        multiple=True,
        type=click.Choice(STAGES),
        help="Only records that failed at this stage (repeatable).",
    ),
    click.option(
        "--error-class",
        "error_classes",
        multiple=True,
        metavar="CLASS",
        help="Only records with this dlq.error.class, e.g. RejectedItemError (repeatable).",
    ),
    click.option(
        "--record-name",
        "record_names",
        multiple=True,
        metavar="NAME",
        help="Only records of this Avro record, full or short name (repeatable).",
    ),
    _time_option("--since", "Only records that failed at or after TIME (ISO-8601 or epoch ms)."),
    _time_option("--until", "Only records that failed before TIME (ISO-8601 or epoch ms)."),
    click.option(
        "--source-topic",
        "source_topics",
        multiple=True,
        metavar="TOPIC",
        help="Only records whose original message came from this topic (repeatable).",
    ),
    click.option(
        "--source-partition",
        "source_partitions",
        multiple=True,
        type=click.IntRange(min=0),
        metavar="N",
        help="Only records whose original message came from this partition (repeatable).",
    ),
    click.option(
        "--from-offset",
        type=click.IntRange(min=0),
        metavar="N",
        help="Only records whose original offset is at least N.",
    ),
    click.option(
        "--to-offset",
        type=click.IntRange(min=0),
        metavar="N",
        help="Only records whose original offset is at most N.",
    ),
    click.option(
        "--max-attempts",
        type=click.IntRange(min=1),
        metavar="N",
        help="Only records dead-lettered at most N times (dlq.attempts).",
    ),
)

#: The keyword arguments :func:`selection_options` adds to a command.
SELECTION_KEYS = (
    "stages",
    "error_classes",
    "record_names",
    "since",
    "until",
    "source_topics",
    "source_partitions",
    "from_offset",
    "to_offset",
    "max_attempts",
)


def selection_options(function: _F) -> _F:
    """Click decorator: the selection options (see :data:`SELECTION_KEYS`)."""
    for option in reversed(_OPTIONS):
        function = option(function)
    return function


def selection_from_options(**options: Any) -> Selection:
    """The :class:`Selection` of a command's keyword arguments; keys that are not selection
    options are ignored, so a command may pass all of its own. Contradictory bounds are a
    BadParameter naming the option."""
    values = {key: options.get(key) for key in SELECTION_KEYS}
    since, until = values["since"], values["until"]
    if isinstance(since, str):
        since = parse_time(since, "--since")
    if isinstance(until, str):
        until = parse_time(until, "--until")
    if since is not None and until is not None and until <= since:
        raise click.BadParameter("must be later than --since", param_hint="--until")
    first, last = values["from_offset"], values["to_offset"]
    if first is not None and last is not None and last < first:
        raise click.BadParameter("must not be below --from-offset", param_hint="--to-offset")
    return Selection(
        stages=tuple(values["stages"] or ()),
        error_classes=tuple(values["error_classes"] or ()),
        record_names=tuple(values["record_names"] or ()),
        since=since,
        until=until,
        source_topics=tuple(values["source_topics"] or ()),
        source_partitions=tuple(values["source_partitions"] or ()),
        from_offset=first,
        to_offset=last,
        max_attempts=values["max_attempts"],
    )


def _name_matches(name: str | None, wanted: tuple[str, ...]) -> bool:
    if name is None:
        return False
    short = name.rsplit(".", 1)[-1]
    return name in wanted or short in wanted
