"""One dead-letter record as the inspection tools see it: the ``dlq.*`` headers typed.

:func:`parse_record` never fails on a record's content: a missing or garbled header leaves its
field None (or 0 attempts, not cut), so a topic written by an older version, by hand or by
another tool can still be listed. The original key, value and non-``dlq`` headers are kept
unchanged (bytes), as the writer (:mod:`consumer.dead_letter`) left them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from consumer.messages import KafkaMessage

Header = tuple[str, bytes | None]

_DLQ_PREFIX = "dlq."


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """A parsed dead-letter record: where it sits, why it failed, where it came from.

    ``partition``/``offset``/``timestamp`` (epoch ms) are the record's own place in the
    dead-letter topic; ``original_*`` the failed message's. ``error_detail`` is the parsed
    ``dlq.error.detail`` JSON object (None if absent or not an object). A cut record
    (``cut``) has no value; ``cut_parts`` names what was left out and ``original_size`` the
    value's size.
    """

    topic: str | None
    partition: int
    offset: int
    timestamp: int | None
    stage: str | None
    error_class: str | None
    error_message: str | None
    error_detail: dict[str, Any] | None
    http_status: int | None
    original_topic: str | None
    original_partition: int | None
    original_offset: int | None
    original_timestamp: int | None
    consumer_group: str | None
    attempts: int
    failed_at: datetime | None
    record_name: str | None
    rules_version: str | None
    cut: bool
    cut_parts: tuple[str, ...]
    original_size: int | None
    headers: tuple[Header, ...]
    key: bytes | None
    value: bytes | None
    message: Any

    @property
    def when(self) -> datetime | None:
        """When it failed: ``dlq.failed.at``, else the dead-letter record's own timestamp."""
        if self.failed_at is not None:
            return self.failed_at.astimezone(UTC)
        if self.timestamp is not None:
            return datetime.fromtimestamp(self.timestamp / 1000, UTC)
        return None

    @property
    def klaviyo_error_code(self) -> str | None:
        """Klaviyo's error code (``code`` in the detail of a refused item), if there is one."""
        code = self.error_detail.get("code") if self.error_detail else None
        return code if isinstance(code, str) and code else None

    @property
    def coordinates(self) -> str:
        """``PARTITION:OFFSET`` of the record in the dead-letter topic (what ``show`` takes)."""
        return f"{self.partition}:{self.offset}"

    @property
    def source(self) -> str:
        """The original message as ``topic[partition]@offset`` (``?`` for what is unknown)."""

        def part(value: object) -> str:
            return "?" if value is None else str(value)

        return (
            f"{part(self.original_topic)}[{part(self.original_partition)}]"
            f"@{part(self.original_offset)}"
        )


def parse_record(message: KafkaMessage) -> DeadLetterRecord:
    """The :class:`DeadLetterRecord` of a message read from the dead-letter topic."""
    context: dict[str, str] = {}
    original: list[Header] = []
    raw_headers = message.headers()
    pairs = raw_headers.items() if isinstance(raw_headers, dict) else raw_headers or ()
    for name, raw in pairs:
        data = raw.encode() if isinstance(raw, str) else raw
        if name.startswith(_DLQ_PREFIX):
            # The first of a repeated header wins, as the writer never repeats one.
            if data and name not in context:
                context[name] = data.decode(errors="replace")
        else:
            original.append((name, data))
    get = context.get
    kind, timestamp = message.timestamp()
    cut = get("dlq.cut")
    key, value = message.key(), message.value()
    return DeadLetterRecord(
        topic=message.topic(),
        partition=message.partition() or 0,
        offset=message.offset() or 0,
        # Type 0 is librdkafka's TIMESTAMP_NOT_AVAILABLE.
        timestamp=timestamp if kind != 0 and timestamp >= 0 else None,
        stage=get("dlq.stage"),
        error_class=get("dlq.error.class"),
        error_message=get("dlq.error.message"),
        error_detail=_json_object(get("dlq.error.detail")),
        http_status=_integer(get("dlq.http.status")),
        original_topic=get("dlq.original.topic"),
        original_partition=_integer(get("dlq.original.partition")),
        original_offset=_integer(get("dlq.original.offset")),
        original_timestamp=_integer(get("dlq.original.timestamp")),
        consumer_group=get("dlq.consumer.group"),
        attempts=max(0, _integer(get("dlq.attempts")) or 0),
        failed_at=_datetime(get("dlq.failed.at")),
        record_name=get("dlq.record.name"),
        rules_version=get("dlq.registry.version"),
        cut=cut is not None,
        cut_parts=tuple(part for part in (cut or "").split(",") if part),
        original_size=_integer(get("dlq.original.size")),
        headers=tuple(original),
        key=key.encode() if isinstance(key, str) else key,
        value=value.encode() if isinstance(value, str) else value,
        message=message,
    )


def _integer(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _json_object(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _datetime(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
