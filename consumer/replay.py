"""``kafka-klaviyo replay``: backfill a range of topics through the same delivery.

A replay is the service of :func:`consumer.compose.build_service` with another source: a
:class:`RangeSource` that assigns each partition itself (no group membership, so no rebalance
touches the live group) from a start to an end offset (:class:`ReplayPlan`), and stops the
runner once every message below the end is delivered or dead-lettered and committed. Offsets
are committed under the replay's own group id, so:

- the live group's offsets never move (the live group id is refused);
- run again, the same command (same topics, partitions and bounds: the same derived group)
  continues from the replay group's committed offsets, with no gap; the end bound chosen the
  first time travels in the commit's metadata, so "the end offsets when it started" means the
  first start;
- nothing is sent twice except what was in flight when the process died (Klaviyo dedups
  events by ``unique_id``; profile, consent and catalog writes set state).

History is sent as history (:class:`~consumer.bodies.History`): events carry ``backfill:
true`` unless ``--no-backfill-flag``, and subscriptions are a historical import whose consent
times must be in the past (:class:`RangeTranslator`).
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO

import orjson
from confluent_kafka import KafkaException, TopicPartition

from consumer.commit import Committer, PartitionKey
from consumer.decode import Decoder
from consumer.endpoints import Endpoint
from consumer.errors import ConfigError, MessageError, TranslationError
from consumer.messages import DecodedRecord, EventPayload, KafkaMessage, Operation
from consumer.metrics import Metrics
from consumer.pipeline import Translator
from consumer.positions import Bound, TopicMetadata, partitions, resolve, watermarks
from consumer.routing import AccountRouter
from consumer.source import KafkaConsumer, RebalanceCallback, Source

log = logging.getLogger(__name__)

#: Commit metadata of a replay group: where its range ends (kept across restarts).
_METADATA_PREFIX = "kafka-klaviyo.replay.end="


class RangeConsumer(KafkaConsumer, TopicMetadata, Protocol):
    """What a replay needs of confluent_kafka.Consumer beyond the service's part."""

    def assign(self, partitions: list[TopicPartition]) -> None: ...

    def committed(
        self, partitions: list[TopicPartition], timeout: float | None = None
    ) -> list[TopicPartition]: ...

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]: ...


@dataclass(frozen=True, slots=True)
class PartitionRange:
    """The offsets [start, end) of one partition to replay, and where a resumed run begins."""

    topic: str
    partition: int
    start: int
    end: int
    # The replay group's committed offset when this run began (None: a first run).
    resumed_at: int | None = None

    @property
    def key(self) -> PartitionKey:
        return (self.topic, self.partition)

    @property
    def begin(self) -> int:
        """The first offset this run reads."""
        return (
            self.start
            if self.resumed_at is None
            else min(max(self.resumed_at, self.start), self.end)
        )

    @property
    def total(self) -> int:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    """Every partition's range, and the group the replay commits under."""

    group_id: str
    ranges: tuple[PartitionRange, ...]

    @property
    def topics(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.topic for r in self.ranges))

    def metadata(self) -> dict[PartitionKey, str]:
        """Commit metadata per partition: its end bound."""
        return {r.key: f"{_METADATA_PREFIX}{r.end}" for r in self.ranges}

    def remaining(self) -> int:
        return sum(r.end - r.begin for r in self.ranges)


def replay_group_id(
    live_group: str,
    topics: Sequence[str],
    only: Iterable[int] | None,
    start: Bound | None,
    end: Bound | None,
) -> str:
    """A group id derived from what is replayed: the same command resumes the same replay."""
    described = orjson.dumps(
        {
            "topics": sorted(topics),
            "partitions": sorted(only) if only is not None else None,
            "from": _bound_json(start),
            "to": _bound_json(end),
        }
    )
    return f"{live_group}.replay.{hashlib.sha256(described).hexdigest()[:12]}"


def _bound_json(bound: Bound | None) -> list[Any] | None:
    if bound is None:
        return None
    return ["offset", bound.offset] if bound.offset is not None else ["time", bound.time_ms]


def plan_replay(
    metadata: RangeConsumer,
    topics: Sequence[str],
    *,
    group_id: str,
    live_group: str,
    only: Iterable[int] | None = None,
    start: Bound | None = None,
    end: Bound | None = None,
    timeout_s: float = 10.0,
) -> ReplayPlan:
    """Resolve the bounds into offsets and read where an earlier run of the group stopped.

    Without ``start`` a replay begins at the oldest message each partition holds; without
    ``end`` it stops at the end offsets of its first start (kept in the commit metadata)."""
    if group_id == live_group:
        raise ConfigError(
            f"--group: {group_id} is the live consumer group (kafka.group_id); a replay needs "
            "its own group so the live offsets never move"
        )
    keys = partitions(metadata, topics, only=only, timeout_s=timeout_s)
    marks = watermarks(metadata, keys, timeout_s=timeout_s)
    starts = (
        resolve(metadata, start, marks, timeout_s=timeout_s)
        if start is not None
        else {key: low for key, (low, _) in marks.items()}
    )
    ends = (
        resolve(metadata, end, marks, timeout_s=timeout_s)
        if end is not None
        else {key: high for key, (_, high) in marks.items()}
    )
    try:
        committed = metadata.committed(
            [TopicPartition(topic, number) for topic, number in keys], timeout=timeout_s
        )
    except KafkaException as exc:
        raise ConfigError(f"cannot read the committed offsets of group {group_id}: {exc}") from exc
    earlier = {(tp.topic, tp.partition): tp for tp in committed}
    ranges = []
    for key in keys:
        first, last = starts[key], ends[key]
        previous = earlier.get(key)
        resumed_at = None
        if previous is not None and previous.offset >= 0:
            resumed_at = previous.offset
            kept = _kept_end(previous.metadata)
            if end is None and kept is not None:
                last = kept
        ranges.append(PartitionRange(key[0], key[1], first, max(first, last), resumed_at))
    return ReplayPlan(group_id, tuple(ranges))


def _kept_end(metadata: str | None) -> int | None:
    if metadata and metadata.startswith(_METADATA_PREFIX):
        text = metadata[len(_METADATA_PREFIX) :]
        if text.isdigit():
            return int(text)
    return None


class RangeSource(Source):
    """The source of a bounded run (replay, re-drive): fixed ranges, assigned by hand rather
    than by a group, finished at their ends; ``select`` leaves messages out."""

    def __init__(
        self,
        consumer: RangeConsumer,
        plan: ReplayPlan,
        select: Callable[[KafkaMessage], bool] | None = None,
    ) -> None:
        super().__init__(consumer, plan.topics)
        self._range_consumer = consumer
        self.plan = plan
        # Messages it leaves out (a re-drive's selection): never handed on, never sent.
        self._select = select
        self.skipped = 0
        self._ends = {r.key: r.end for r in plan.ranges}
        # Partitions read up to their end: nothing more is fetched from them.
        self._exhausted = {r.key for r in plan.ranges if r.begin >= r.end}

    def subscribe(
        self,
        *,
        on_assign: RebalanceCallback,
        on_revoke: RebalanceCallback,
        on_lost: RebalanceCallback,
    ) -> None:
        # Every partition is assigned, finished ones too, so pausing and resuming any of them
        # (backpressure) is valid; finished ones stay paused.
        self._range_consumer.assign(
            [TopicPartition(r.topic, r.partition, r.begin) for r in self.plan.ranges]
        )
        done = list(self._exhausted)
        self._exhausted.clear()
        for key in done:
            self._exhaust(key)
        on_assign(self.consumer, [TopicPartition(r.topic, r.partition) for r in self.plan.ranges])

    def poll(self, max_messages: int, timeout_s: float) -> Sequence[KafkaMessage]:
        messages = super().poll(max_messages, timeout_s)
        kept = []
        for message in messages:
            if message.error() is not None:
                kept.append(message)
                continue
            key = (message.topic() or "", message.partition() or 0)
            offset = message.offset()
            if offset is not None and offset >= self._ends[key]:
                self._exhaust(key)
                continue
            if offset is not None and offset + 1 >= self._ends[key]:
                self._exhaust(key)
            if self._select is not None and not self._select(message):
                self.skipped += 1
                continue
            kept.append(message)
        return kept

    def resume(self, partitions: Iterable[PartitionKey]) -> None:
        super().resume(key for key in partitions if key not in self._exhausted)

    def finished(self, committer: Committer) -> bool:
        """Every partition read to its end and everything read finished (the runner's drain
        then commits it)."""
        for r in self.plan.ranges:
            key = r.key
            if key not in self._exhausted and not self._reached_end(r):
                return False
            if committer.unfinished([key]):
                return False
        return True

    def _reached_end(self, r: PartitionRange) -> bool:
        # Gaps (compaction, transaction markers) can hide the last offsets: the position says.
        try:
            [position] = self._range_consumer.position([TopicPartition(r.topic, r.partition)])
        except KafkaException:
            return False
        if position.offset >= r.end:
            self._exhaust(r.key)
            return True
        return False

    def _exhaust(self, key: PartitionKey) -> None:
        if key not in self._exhausted:
            self._exhausted.add(key)
            self.pause([key])


class RangeTranslator:
    """The rules as a bounded run uses them: operations counted per Klaviyo metric for its
    progress, and, when consent is sent as history, every consent must carry a past
    ``consented_at`` (a historical import needs one, RULES.md S3)."""

    def __init__(
        self,
        rules: Translator,
        *,
        historical_consent: bool,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._rules = rules
        self._historical = historical_consent
        self._now = clock or (lambda: datetime.now(UTC))
        self.counts: Counter[str] = Counter()

    @property
    def mapped_records(self) -> frozenset[str]:
        return self._rules.mapped_records

    @property
    def version(self) -> str:
        return self._rules.version

    def translate(self, record: DecodedRecord) -> list[Operation]:
        operations = self._rules.translate(record)
        for operation in operations:
            self.counts[operation_label(operation)] += 1
            if self._historical and operation.endpoint is Endpoint.SUBSCRIBE:
                self._check_consent_times(record, operation)
        return operations

    def _check_consent_times(self, record: DecodedRecord, operation: Operation) -> None:
        payload = operation.payload
        attributes = payload.get("attributes", {}) if isinstance(payload, dict) else {}
        now = self._now()
        for channel, kinds in (attributes.get("subscriptions") or {}).items():
            for consent in kinds.values():
                at = consent.get("consented_at") if isinstance(consent, dict) else None
                moment = _parse_moment(at)
                if moment is None or moment >= now:
                    raise TranslationError(
                        f"a replayed {channel} subscription is a historical import and needs "
                        "consented_at in the past" + ("" if at is None else f" (got {at})"),
                        rule="history",
                        field="consented_at",
                        record_name=record.record_name,
                    )


def _parse_moment(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def operation_label(operation: Operation) -> str:
    """What a progress line counts an operation as: its metric's name, or its endpoint."""
    payload = operation.payload
    if isinstance(payload, EventPayload):
        metric = payload.event.get("metric")
        try:
            return str(metric["data"]["attributes"]["name"])  # type: ignore[index]
        except (KeyError, TypeError):
            return "event"
    return operation.endpoint.name.lower()


class ReplayProgress:
    """Progress of a replay on stderr: a bar per partition (a terminal) or a line every
    ``interval_s`` (logs), with rate, ETA and counts per metric; and the closing summary."""

    def __init__(
        self,
        plan: ReplayPlan,
        committer: Committer | None,
        counts: Counter[str],
        metrics: Metrics | None,
        *,
        stream: TextIO | None = None,
        interval_s: float = 10.0,
        dry_run: bool = False,
        kind: str = "replay",
    ) -> None:
        self._kind = kind
        self._plan = plan
        self._committer = committer
        self._counts = counts
        self._metrics = metrics
        self._stream = stream or sys.stderr
        self._interval_s = interval_s
        self._dry_run = dry_run
        self._started = time.monotonic()
        self._last = 0.0
        self._logged_done: int | None = None
        self._bars: list[Any] = []
        self._done: dict[PartitionKey, int] = {r.key: r.begin - r.start for r in plan.ranges}
        if self._stream.isatty():
            from tqdm import tqdm

            self._bars = [
                tqdm(
                    total=r.total,
                    initial=r.begin - r.start,
                    desc=f"{r.topic}[{r.partition}]",
                    unit="msg",
                    position=i,
                    file=self._stream,
                    leave=True,
                    dynamic_ncols=True,
                )
                for i, r in enumerate(plan.ranges)
            ]

    def note(self, key: PartitionKey, done: int) -> None:
        """``done`` messages of the partition's range are finished (dry run: read)."""
        self._done[key] = done

    def turn(self) -> None:
        """Called every loop turn: refresh at most every half second (bars) or interval."""
        now = time.monotonic()
        period = 0.5 if self._bars else self._interval_s
        if now - self._last < period:
            return
        self._last = now
        self._refresh()

    def _refresh(self, *, final: bool = False) -> None:
        if self._committer is not None:
            for r in self._plan.ranges:
                progress = self._committer.committable(r.key)
                if progress is not None:
                    self._done[r.key] = max(self._done[r.key], min(progress, r.end) - r.start)
        if self._bars:
            for bar, r in zip(self._bars, self._plan.ranges, strict=True):
                bar.n = self._done[r.key]
                bar.set_postfix_str(self._counts_text(limit=3), refresh=False)
                bar.refresh()
            return
        done = sum(self._done.values())
        if final and done == self._logged_done:
            return  # the last line already says where it ended
        self._logged_done = done
        log.info("%s: %s", self._kind, self._line())

    def _line(self) -> str:
        done = sum(self._done.values())
        total = sum(r.total for r in self._plan.ranges)
        already = sum(r.begin - r.start for r in self._plan.ranges)
        elapsed = max(time.monotonic() - self._started, 1e-6)
        rate = (done - already) / elapsed
        left = total - done
        eta = f", ETA {left / rate:.0f}s" if rate > 0 and left else ""
        share = f" ({done / total:.0%})" if total else ""
        return (
            f"{done:,} of {total:,} messages{share}, {rate:,.0f}/s{eta}; "
            f"{self._counts_text() or 'nothing translated yet'}"
        )

    def _counts_text(self, limit: int | None = None) -> str:
        top = self._counts.most_common(limit)
        return ", ".join(f"{name} {count:,}" for name, count in top)

    def close(self) -> None:
        self._refresh(final=True)
        for bar in self._bars:
            bar.close()

    def summary(
        self, *, dead_lettered: int, failures: Counter[str] | None = None, skipped: int = 0
    ) -> str:
        """The closing summary: per partition, per metric, per endpoint, dead-letters."""
        elapsed = time.monotonic() - self._started
        lines = [
            (f"dry run of {self._kind} " if self._dry_run else f"{self._kind} ")
            + f"{self._plan.group_id}: {sum(self._done.values()):,} of "
            f"{sum(r.total for r in self._plan.ranges):,} messages in {elapsed:.1f}s"
        ]
        for r in self._plan.ranges:
            resumed = f", resumed at {r.resumed_at}" if r.resumed_at is not None else ""
            lines.append(
                f"  {r.topic}[{r.partition}] offsets {r.start}..{r.end}: "
                f"{self._done[r.key]:,} done{resumed}"
            )
        verb = "would send" if self._dry_run else "translated"
        for name, count in sorted(self._counts.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"  {verb} {name}: {count:,}")
        if self._metrics is not None and not self._dry_run:
            for endpoint in Endpoint:
                value = self._metrics.total(
                    "kafka_klaviyo_outputs_delivered", endpoint=endpoint.name.lower()
                )
                if value:
                    lines.append(f"  delivered to {endpoint.spec.path}: {value:,.0f}")
        for stage, count in sorted((failures or Counter()).items()):
            lines.append(f"  would dead-letter at stage {stage}: {count:,}")
        if skipped:
            lines.append(f"  left alone (not selected): {skipped:,}")
        lines.append(f"  dead-lettered: {dead_lettered:,}")
        return "\n".join(lines)


def dry_run_range(
    consumer: RangeConsumer,
    plan: ReplayPlan,
    *,
    decoder: Decoder,
    translator: RangeTranslator,
    router: AccountRouter,
    progress: ReplayProgress,
    stop: Callable[[], bool],
    select: Callable[[KafkaMessage], bool] | None = None,
    batch_size: int = 1000,
) -> tuple[Counter[str], int]:
    """Read the plan's ranges, decode and translate every (selected) message, send and
    commit nothing; returns how many messages would be dead-lettered, by stage, and how many
    the selection left out."""
    failures: Counter[str] = Counter()
    skipped = 0
    todo = {r.key: r for r in plan.ranges if r.begin < r.end}
    consumer.assign([TopicPartition(r.topic, r.partition, r.begin) for r in todo.values()])
    try:
        while todo and not stop():
            for message in consumer.consume(batch_size, timeout=0.5):
                if message.error() is not None:
                    continue
                key = (message.topic() or "", message.partition() or 0)
                r = todo.get(key)
                offset = message.offset()
                if r is None or offset is None or offset >= r.end:
                    continue
                if select is not None and not select(message):
                    skipped += 1
                    progress.note(key, offset + 1 - r.start)
                    if offset + 1 >= r.end:
                        del todo[key]
                    continue
                try:
                    record = decoder.decode(message.value())
                    translator.translate(record)
                    router.account_for(record)
                except MessageError as error:
                    failures[error.stage] += 1
                progress.note(key, offset + 1 - r.start)
                if offset + 1 >= r.end:
                    del todo[key]
            for key, r in list(todo.items()):
                [position] = consumer.position([TopicPartition(r.topic, r.partition)])
                if position.offset >= r.end:
                    progress.note(key, r.total)
                    del todo[key]
            progress.turn()
    finally:
        consumer.close()
    return failures, skipped


def describe_plan(plan: ReplayPlan, kind: str = "replay") -> str:
    """One line per partition: what will be read (shown before a replay starts)."""
    lines = [f"{kind} under group {plan.group_id}:"]
    for r in plan.ranges:
        state = (
            f"resuming at {r.begin}"
            if r.resumed_at is not None and r.begin > r.start
            else "from its start"
        )
        lines.append(
            f"  {r.topic}[{r.partition}] offsets {r.start}..{r.end} ({r.total:,} messages), {state}"
        )
    return "\n".join(lines)
