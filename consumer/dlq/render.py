"""Dead-letter records as people and programs read them: documents, table rows, masking.

:func:`record_document` is one record as a JSON-safe object (what ``show`` prints and
``export`` writes a line of): where it sits, why it failed, where it came from, the original
key and headers, and the value decoded as Avro. Decimals become text (exact), timestamps and
dates ISO-8601, bytes base64. Unless ``reveal``, every text that came from the data (strings
of the value, key, headers, error message and detail) goes through :func:`consumer.redact.mask`;
numbers and the timestamps we format stay as they are. Bytes that do not decode are shown as
base64 only when their text holds nothing the masking would hide.
"""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime, time
from decimal import Decimal
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from uuid import UUID

from consumer.dlq.records import DeadLetterRecord
from consumer.errors import KafkaKlaviyoError
from consumer.redact import mask

if TYPE_CHECKING:
    from consumer.decode import Decoder

#: Characters of the error message shown in a ``list`` row.
MESSAGE_WIDTH = 60

_COLUMNS = ("dlq", "failed at", "stage", "error", "record", "source", "att", "message")


def json_safe(value: Any, *, reveal: bool) -> Any:
    """``value`` (as fastavro decodes it) made JSON-safe, its strings masked unless ``reveal``."""
    if isinstance(value, str):
        return value if reveal else _mask_value(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, dict):
        return {
            json_safe(str(k), reveal=reveal): json_safe(v, reveal=reveal) for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [json_safe(item, reveal=reveal) for item in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, UUID):
        return str(value)
    return json_safe(str(value), reveal=reveal)


@lru_cache(maxsize=65536)
def _cached_mask(text: str) -> str:
    return mask(text)


def _mask_value(text: str) -> str:
    """:func:`mask` for the strings of a value, fast where it cannot change anything: most
    are short codes, names and currencies, and many repeat from record to record."""
    if len(text) < 7 and "@" not in text and "_" not in text:
        return text  # too short for a phone number (7 digits), no address, no key prefix
    return _cached_mask(text) if len(text) <= 256 else mask(text)


def raw_bytes(data: bytes | None, *, reveal: bool) -> Any:
    """A key or header value: its text when it is UTF-8, else ``{"base64": ...}``."""
    if data is None:
        return None
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return undecoded(data, reveal=reveal)
    return text if reveal else mask(text)


def undecoded(data: bytes, *, reveal: bool) -> dict[str, Any]:
    """Bytes that are not text or not Avro: base64, unless that would show personal data."""
    shown: dict[str, Any] = {"length": len(data)}
    text = data.decode("utf-8", errors="replace")
    if reveal or mask(text) == text:
        shown["base64"] = base64.b64encode(data).decode()
    else:
        shown["base64"] = None
        shown["withheld"] = (
            "looks like it holds an e-mail address or phone number; --reveal shows it"
        )
        shown["text"] = mask(text)
    return shown


def decoded_value(decoder: Decoder, record: DeadLetterRecord, *, reveal: bool) -> dict[str, Any]:
    """The value decoded as Avro, or why it cannot be (with the bytes), or what was cut."""
    if record.cut and record.value is None:
        return {
            "cut": list(record.cut_parts),
            "original_size": record.original_size,
            "fetch_from": record.source,
        }
    if record.value is None:
        return {"error": "the record has no value", "raw": None}
    try:
        decoded = decoder.decode(record.value)
    except KafkaKlaviyoError as exc:
        return {
            "error": mask(f"{type(exc).__name__}: {exc}"),
            "raw": undecoded(record.value, reveal=reveal),
        }
    out: dict[str, Any] = {"record_name": decoded.record_name}
    if decoded.schema_id is not None:
        out["schema_id"] = decoded.schema_id
    if decoded.fingerprint is not None:
        out["fingerprint"] = decoded.fingerprint.hex()
    out["data"] = json_safe(decoded.data, reveal=reveal)
    return out


def record_document(
    record: DeadLetterRecord, value: dict[str, Any] | None, *, reveal: bool
) -> dict[str, Any]:
    """One record as a JSON-safe object; ``value`` is :func:`decoded_value`'s (None: left out)."""
    document: dict[str, Any] = {
        "dead_letter": {
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "timestamp": _iso_ms(record.timestamp),
        },
        "failure": {
            "stage": record.stage,
            "error_class": record.error_class,
            "error_message": _masked(record.error_message, reveal),
            "error_detail": json_safe(record.error_detail, reveal=reveal),
            "http_status": record.http_status,
            "attempts": record.attempts,
            "failed_at": record.failed_at.isoformat() if record.failed_at else None,
            "consumer_group": record.consumer_group,
            "record_name": record.record_name,
            "rules_version": record.rules_version,
            "cut": record.cut,
        },
        "source": {
            "topic": record.original_topic,
            "partition": record.original_partition,
            "offset": record.original_offset,
            "timestamp": _iso_ms(record.original_timestamp),
        },
        "key": raw_bytes(record.key, reveal=reveal),
        "headers": [[name, raw_bytes(data, reveal=reveal)] for name, data in record.headers],
    }
    if value is not None:
        document["value"] = value
    return document


def table(records: list[DeadLetterRecord]) -> str:
    """The ``list`` table: one row per record, messages masked and cut to fit."""
    rows = [_COLUMNS, *(_row(record) for record in records)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths[:-1], strict=True)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines) + "\n"


def _row(record: DeadLetterRecord) -> tuple[str, ...]:
    when = record.when
    message = mask(record.error_message or "")
    if len(message) > MESSAGE_WIDTH:
        message = message[: MESSAGE_WIDTH - 1] + "…"
    return (
        record.coordinates,
        f"{when:%Y-%m-%d %H:%M:%S}" if when else "-",
        record.stage or "-",
        record.error_class or "-",
        record.record_name or "-",
        record.source,
        str(record.attempts),
        message,
    )


def _masked(text: str | None, reveal: bool) -> str | None:
    # The writer masked the message already; records from elsewhere may not have been.
    return text if text is None or reveal else mask(text)


def _iso_ms(epoch_ms: int | None) -> str | None:
    if epoch_ms is None or epoch_ms < 0:
        return None
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="milliseconds")
