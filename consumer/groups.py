"""A consumer group seen from outside: its state, its committed offsets, and moving them.

``kafka-klaviyo group reset`` (:mod:`consumer.groups_cli`) is built from these parts:

- :func:`describe_group` and :func:`committed_offsets` ask the group coordinator through an
  admin client; :func:`apply_plan` writes the new offsets and reads them back;
- :func:`target_offsets` turns ``--to-offset``/``--to-time`` (through :mod:`consumer.positions`,
  so they mean what they mean for ``replay``) or ``--to-earliest``/``--to-latest`` into one
  offset per partition;
- :func:`plan_reset` and :func:`render_plan` are pure: the moves, and the table shown before
  anything changes.

A group is moved only while it has no members and is Empty (or Dead: it never committed, or
its offsets expired); a member would overwrite the new offsets with its next commit, so the
broker refuses it too. A partition without a committed offset (or with one the partition no
longer holds) is read from its low watermark: the service pins ``auto.offset.reset`` to
``earliest``, so that is where a restarted group starts and what its difference counts from.

librdkafka's KafkaException never leaves this module: it becomes a :class:`ConfigError` (one
line), or :class:`GroupBusyError` when the group has members.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition

from consumer.errors import ConfigError
from consumer.positions import Bound, PartitionKey, TopicMetadata, resolve

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient

#: Where ``group reset`` moves the offsets: a bound, or either end of each partition.
Target = Bound | Literal["earliest", "latest"]

#: Group states in which offsets may be moved (lower-case names of ConsumerGroupState).
STOPPED_STATES = frozenset({"empty", "dead"})

# Broker answers to an offset commit for a group that has (or is getting) members.
_BUSY_CODES = frozenset(
    {
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.FENCED_INSTANCE_ID,
    }
)
# Local answers meaning no broker could be asked in time.
_UNREACHABLE_CODES = frozenset(
    {KafkaError._TIMED_OUT, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN}
)


class GroupBusyError(ConfigError):
    """The group has members or is rebalancing: its offsets cannot be moved now."""


@dataclass(frozen=True, slots=True)
class GroupState:
    """What the coordinator says about a group: its state's name and how many members."""

    group_id: str
    state: str
    members: int

    @property
    def stopped(self) -> bool:
        return self.members == 0 and self.state in STOPPED_STATES

    def refusal(self) -> str:
        """One line saying why the group cannot be moved now (empty when it can)."""
        if self.members:
            noun = "member" if self.members == 1 else "members"
            return (
                f"group {self.group_id} has {self.members} {noun} (state {self.state}): stop "
                "its consumers first; a member would overwrite the new offsets"
            )
        if self.state not in STOPPED_STATES:
            return (
                f"group {self.group_id} is in state {self.state}, not empty: wait until it "
                "settles with no members"
            )
        return ""


@dataclass(frozen=True, slots=True)
class Move:
    """One partition's committed offset now (None: none) and where the reset puts it.

    ``start`` is where the group would resume without the reset: the committed offset, or the
    low watermark when there is none or the partition no longer holds it."""

    topic: str
    partition: int
    current: int | None
    new: int
    start: int

    @property
    def difference(self) -> int:
        """Messages skipped (positive) or read again (negative) because of the move."""
        return self.new - self.start


@dataclass(frozen=True, slots=True)
class Plan:
    """The moves of one reset, in topic and partition order, and what they aim at."""

    group_id: str
    target: str
    moves: tuple[Move, ...]

    @property
    def offsets(self) -> dict[PartitionKey, int]:
        return {(m.topic, m.partition): m.new for m in self.moves}


def describe_target(target: Target) -> str:
    """How the plan names its target: "offset 5", "2026-11-30T12:00:00+00:00", "earliest"."""
    return target if isinstance(target, str) else target.describe()


def target_offsets(
    metadata: TopicMetadata,
    target: Target,
    marks: Mapping[PartitionKey, tuple[int, int]],
    *,
    timeout_s: float,
) -> dict[PartitionKey, int]:
    """The offset ``target`` names in each partition of ``marks`` ((low, high) watermarks)."""
    if target == "earliest":
        return {key: low for key, (low, _) in marks.items()}
    if target == "latest":
        return {key: high for key, (_, high) in marks.items()}
    assert isinstance(target, Bound)
    return resolve(metadata, target, dict(marks), timeout_s=timeout_s)


def plan_reset(
    group_id: str,
    target: str,
    marks: Mapping[PartitionKey, tuple[int, int]],
    committed: Mapping[PartitionKey, int | None],
    new: Mapping[PartitionKey, int],
) -> Plan:
    """The moves of every partition of ``marks``, in order (pure)."""
    moves = []
    for key in sorted(marks):
        low, high = marks[key]
        current = committed.get(key)
        start = current if current is not None and low <= current <= high else low
        moves.append(Move(key[0], key[1], current, new[key], start))
    return Plan(group_id, target, tuple(moves))


def render_plan(plan: Plan) -> list[str]:
    """The plan as lines: a heading, a table, a total."""
    rows = [
        (
            m.topic,
            str(m.partition),
            "none" if m.current is None else str(m.current),
            str(m.new),
            _difference(m.difference),
        )
        for m in plan.moves
    ]
    lines = [f"Reset group {plan.group_id} to {plan.target}:"]
    lines += _table(("topic", "partition", "committed", "new", "difference"), rows)
    again = sum(-m.difference for m in plan.moves if m.difference < 0)
    skipped = sum(m.difference for m in plan.moves if m.difference > 0)
    moved = sum(1 for m in plan.moves if m.current != m.new)
    lines.append(
        f"{moved} of {len(plan.moves)} partitions change; {again} messages read again,"
        f" {skipped} skipped"
    )
    return lines


def render_offsets(group_id: str, offsets: Mapping[PartitionKey, int | None]) -> list[str]:
    """Committed offsets as lines: a heading and a table."""
    rows = [
        (topic, str(number), "none" if offset is None else str(offset))
        for (topic, number), offset in sorted(offsets.items())
    ]
    return [
        f"Committed offsets of group {group_id} now:",
        *_table(("topic", "partition", "committed"), rows),
    ]


def describe_group(
    admin: AdminClient, group_id: str, *, bootstrap_servers: str, timeout_s: float
) -> GroupState:
    """The group's state and member count (a group nobody ever used is "dead", no members)."""
    try:
        future = admin.describe_consumer_groups([group_id], request_timeout=timeout_s)[group_id]
        described = _result(future, timeout_s)
    except KafkaException as exc:
        raise _translate(
            exc, f"cannot describe group {group_id}", bootstrap_servers, timeout_s
        ) from exc
    state = getattr(described.state, "name", str(described.state)).lower()
    return GroupState(group_id, state, len(described.members or ()))


def committed_offsets(
    admin: AdminClient,
    group_id: str,
    keys: Iterable[PartitionKey],
    *,
    bootstrap_servers: str,
    timeout_s: float,
) -> dict[PartitionKey, int | None]:
    """The group's committed offset of each partition (None where it committed none)."""
    request = ConsumerGroupTopicPartitions(group_id, [TopicPartition(t, p) for t, p in keys])
    try:
        future = admin.list_consumer_group_offsets([request], request_timeout=timeout_s)
        answer = _result(future[group_id], timeout_s)
    except KafkaException as exc:
        raise _translate(
            exc, f"cannot read the offsets of group {group_id}", bootstrap_servers, timeout_s
        ) from exc
    found: dict[PartitionKey, int | None] = {}
    for tp in answer.topic_partitions:
        if tp.error is not None:
            raise ConfigError(
                f"cannot read the offset of group {group_id} in {tp.topic}[{tp.partition}]:"
                f" {tp.error.str()}"
            )
        # Negative: librdkafka's OFFSET_INVALID, nothing committed.
        found[(tp.topic, tp.partition)] = tp.offset if tp.offset >= 0 else None
    return found


def apply_plan(
    admin: AdminClient, plan: Plan, *, bootstrap_servers: str, timeout_s: float
) -> dict[PartitionKey, int | None]:
    """Commit the plan's offsets for its group, then read them back (what the broker holds).

    GroupBusyError when the broker refuses because the group has members again."""
    request = ConsumerGroupTopicPartitions(
        plan.group_id, [TopicPartition(m.topic, m.partition, m.new) for m in plan.moves]
    )
    try:
        future = admin.alter_consumer_group_offsets([request], request_timeout=timeout_s)
        answer = _result(future[plan.group_id], timeout_s)
    except KafkaException as exc:
        error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        if error is not None and error.code() in _BUSY_CODES:
            raise _busy(plan.group_id, error) from exc
        raise _translate(
            exc, f"cannot move the offsets of group {plan.group_id}", bootstrap_servers, timeout_s
        ) from exc
    for tp in answer.topic_partitions:
        if tp.error is None:
            continue
        if tp.error.code() in _BUSY_CODES:
            raise _busy(plan.group_id, tp.error)
        raise ConfigError(
            f"the broker refused offset {tp.offset} for {tp.topic}[{tp.partition}] of group"
            f" {plan.group_id}: {tp.error.str()}"
        )
    return committed_offsets(
        admin,
        plan.group_id,
        [(m.topic, m.partition) for m in plan.moves],
        bootstrap_servers=bootstrap_servers,
        timeout_s=timeout_s,
    )


def _result(future: Any, timeout_s: float) -> Any:
    try:
        # request_timeout bounds the request; this bounds a client that never answers at all.
        return future.result(timeout=timeout_s + 5)
    except concurrent.futures.TimeoutError as exc:
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT)) from exc


def _translate(
    exc: KafkaException, doing: str, bootstrap_servers: str, timeout_s: float
) -> ConfigError:
    error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
    if error is not None and error.code() in _UNREACHABLE_CODES:
        return ConfigError(
            f"cannot reach the Kafka brokers at {bootstrap_servers} within {timeout_s:g}s"
            " (kafka.bootstrap_servers, and the security settings in kafka.properties)"
        )
    return ConfigError(f"{doing}: {error.str() if error is not None else exc}")


def _busy(group_id: str, error: KafkaError) -> GroupBusyError:
    return GroupBusyError(
        f"group {group_id} has members again (the broker answered {error.name()}): stop its"
        " consumers and run the reset again"
    )


def _difference(difference: int) -> str:
    if difference > 0:
        return f"{difference} skipped"
    if difference < 0:
        return f"{-difference} read again"
    return "0"


def _table(headings: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(cell) for cell in column) for column in zip(headings, *rows, strict=False)]

    # Names left-aligned, numbers right-aligned, as people read them.
    def line(cells: tuple[str, ...]) -> str:
        parts = [
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  " + "  ".join(parts).rstrip()

    return [line(headings), *(line(row) for row in rows)]


__all__ = [
    "STOPPED_STATES",
    "GroupBusyError",
    "GroupState",
    "Move",
    "Plan",
    "Target",
    "apply_plan",
    "committed_offsets",
    "describe_group",
    "describe_target",
    "plan_reset",
    "render_offsets",
    "render_plan",
    "target_offsets",
]
