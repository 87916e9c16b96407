"""Dead-letter records parsed from the headers the real writer produces, and selections."""

from __future__ import annotations

from datetime import UTC, datetime

import click
import pytest

from consumer.dead_letter import dead_letter_headers
from consumer.dlq.records import DeadLetterRecord, parse_record
from consumer.dlq.selection import Selection, parse_time, selection_from_options
from consumer.errors import MessageError, NotAvroError, RejectedItemError, TranslationError
from tests.fakes import FakeMessage

FAILED_AT = datetime(2026, 12, 1, 19, 30, 5, 123456, tzinfo=UTC)


def dead_letter(
    error: MessageError,
    *,
    offset: int = 7,
    source_offset: int = 42,
    source_partition: int = 3,
    headers: list[tuple[str, bytes | str | None]] | None = None,
    now: datetime = FAILED_AT,
    dl_timestamp: int = 1_764_617_405_200,
) -> DeadLetterRecord:
    """The record the writer would put in the dead-letter topic for ``error``."""
    original = FakeMessage(
        "shop.events",
        source_partition,
        source_offset,
        b"order-1",
        b"\x00value",
        headers,
        1_764_617_000_000,
    )
    dlq_headers = dead_letter_headers(
        original, error, group_id="kafka-klaviyo", rules_version="r-1", now=now
    )
    return parse_record(
        FakeMessage(
            "shop.events.dlq", 0, offset, b"order-1", b"\x00value", dlq_headers, dl_timestamp
        )
    )


def rejected(code: str = "invalid_email") -> RejectedItemError:
    return RejectedItemError(
        "Klaviyo rejected the item: invalid email",
        http_status=400,
        record_name="shop.events.OrderPlaced",
        detail={"code": code, "pointer": "/data/attributes/events/data/0"},
    )


def test_every_header_of_the_writer_becomes_a_typed_field() -> None:
    record = dead_letter(rejected(), headers=[("trace-id", b"abc"), ("source", "web")])
    assert (record.topic, record.partition, record.offset) == ("shop.events.dlq", 0, 7)
    assert record.timestamp == 1_764_617_405_200
    assert record.stage == "deliver" and record.error_class == "RejectedItemError"
    assert record.error_message == "Klaviyo rejected the item: invalid email"
    assert record.error_detail == {
        "code": "invalid_email",
        "pointer": "/data/attributes/events/data/0",
    }
    assert record.klaviyo_error_code == "invalid_email"
    assert record.http_status == 400
    assert (record.original_topic, record.original_partition, record.original_offset) == (
        "shop.events",
        3,
        42,
    )
    assert record.original_timestamp == 1_764_617_000_000
    assert record.consumer_group == "kafka-klaviyo" and record.rules_version == "r-1"
    assert record.attempts == 1 and record.failed_at == FAILED_AT
    assert record.record_name == "shop.events.OrderPlaced"
    assert not record.cut and record.cut_parts == () and record.original_size is None
    # The original headers, unchanged and without the dlq.* ones.
    assert record.headers == (("trace-id", b"abc"), ("source", b"web"))
    assert record.key == b"order-1" and record.value == b"\x00value"
    assert record.coordinates == "0:7" and record.source == "shop.events[3]@42"


def test_decode_and_translate_failures_have_no_status_or_code() -> None:
    record = dead_letter(NotAvroError("value is not Avro", detail={"length": 0}))
    assert record.stage == "decode" and record.http_status is None
    assert record.klaviyo_error_code is None and record.record_name is None
    translated = dead_letter(
        TranslationError(
            "no identifier",
            rule="placed-order",
            field="profile",
            record_name="shop.events.OrderPlaced",
        )
    )
    assert translated.stage == "translate"
    assert translated.error_detail == {"rule": "placed-order", "field": "profile"}


def test_a_redriven_record_counts_its_attempts() -> None:
    first = dead_letter(rejected())
    again = dead_letter(rejected(), headers=[*list(first.headers), ("dlq.attempts", b"2")])
    assert again.attempts == 3


def test_a_record_without_dlq_headers_still_parses() -> None:
    record = parse_record(FakeMessage("x.dlq", 2, 5, None, None, None, 0))
    assert record.stage is None and record.error_class is None and record.error_detail is None
    assert record.original_topic is None and record.original_offset is None
    assert record.attempts == 0 and record.failed_at is None and not record.cut
    assert record.source == "?[?]@?"
    assert record.when == datetime.fromtimestamp(0, UTC)


def test_garbled_headers_leave_their_fields_empty() -> None:
    headers: list[tuple[str, bytes | str | None]] = [
        ("dlq.stage", b"deliver"),
        ("dlq.http.status", b"four hundred"),
        ("dlq.original.offset", b"\xff\xfe"),
        ("dlq.attempts", b"-3"),
        ("dlq.failed.at", b"yesterday"),
        ("dlq.error.detail", b"{not json"),
        ("dlq.original.partition", None),
        ("dlq.record.name", ""),
    ]
    record = parse_record(FakeMessage("x.dlq", 0, 1, None, b"v", headers, 1000))
    assert record.stage == "deliver"
    assert record.http_status is None and record.original_offset is None
    assert record.original_partition is None and record.record_name is None
    assert record.attempts == 0 and record.failed_at is None and record.error_detail is None
    assert record.when == datetime.fromtimestamp(1, UTC)  # the record's own timestamp


def test_a_naive_failed_at_is_utc_and_a_cut_record_says_what_is_missing() -> None:
    headers: list[tuple[str, bytes | str | None]] = [
        ("dlq.failed.at", b"2026-12-01T19:30:00"),
        ("dlq.cut", b"value,headers"),
        ("dlq.original.size", b"2000000"),
    ]
    record = parse_record(FakeMessage("x.dlq", 0, 1, None, None, headers, 0))
    assert record.failed_at == datetime(2026, 12, 1, 19, 30, tzinfo=UTC)
    assert record.cut and record.cut_parts == ("value", "headers")
    assert record.original_size == 2_000_000 and record.value is None


# -- selection ----------------------------------------------------------------------------


def test_an_empty_selection_matches_everything() -> None:
    assert Selection().matches(dead_letter(rejected()))
    assert Selection().matches(parse_record(FakeMessage("x", 0, 0, None, None, None, 0)))


@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        (Selection(stages=("deliver",)), True),
        (Selection(stages=("decode", "translate")), False),
        (Selection(error_classes=("RejectedItemError",)), True),
        (Selection(error_classes=("NotAvroError",)), False),
        (Selection(record_names=("shop.events.OrderPlaced",)), True),
        (Selection(record_names=("OrderPlaced",)), True),
        (Selection(record_names=("Placed",)), False),
        (Selection(since=FAILED_AT), True),
        (Selection(since=datetime(2026, 12, 1, 19, 31, tzinfo=UTC)), False),
        (Selection(until=FAILED_AT), False),
        (Selection(until=datetime(2026, 12, 1, 19, 31, tzinfo=UTC)), True),
        (Selection(source_topics=("shop.events",)), True),
        (Selection(source_topics=("other",)), False),
        (Selection(source_partitions=(3,)), True),
        (Selection(source_partitions=(0, 1)), False),
        (Selection(from_offset=42, to_offset=42), True),
        (Selection(from_offset=43), False),
        (Selection(to_offset=41), False),
        (Selection(max_attempts=1), True),
    ],
)
def test_each_filter(selection: Selection, expected: bool) -> None:
    assert selection.matches(dead_letter(rejected())) is expected


def test_max_attempts_drops_records_that_failed_too_often() -> None:
    first = dead_letter(rejected())
    again = dead_letter(rejected(), headers=[*list(first.headers), ("dlq.attempts", b"1")])
    assert again.attempts == 2
    assert not Selection(max_attempts=1).matches(again)
    assert Selection(max_attempts=2).matches(again)


def test_a_field_the_record_lacks_passes_no_filter_on_it() -> None:
    bare = parse_record(FakeMessage("x", 0, 0, None, None, None, 0))
    assert not Selection(stages=("decode",)).matches(bare)
    assert not Selection(from_offset=0).matches(bare)
    assert not Selection(source_partitions=(0,)).matches(bare)


def test_times_are_iso_or_epoch_milliseconds_and_naive_is_utc() -> None:
    expected = datetime(2026, 12, 1, 19, 0, tzinfo=UTC)
    assert parse_time("2026-12-01T19:00:00Z", "--since") == expected
    assert parse_time("2026-12-01T20:00:00+01:00", "--since") == expected
    assert parse_time("2026-12-01 19:00", "--since") == expected
    assert parse_time(str(int(expected.timestamp() * 1000)), "--since") == expected
    assert parse_time("2026-12-01", "--since") == datetime(2026, 12, 1, tzinfo=UTC)


def test_a_bad_time_is_one_line_naming_the_option() -> None:
    with pytest.raises(click.BadParameter) as caught:
        parse_time("last tuesday", "--until")
    assert caught.value.param_hint == "--until"
    assert "\n" not in caught.value.format_message()
    assert "'last tuesday'" in caught.value.format_message()


def test_selection_from_options_ignores_other_keys_and_checks_bounds() -> None:
    selection = selection_from_options(
        stages=("deliver",), since="2026-12-01", from_offset=3, limit=10, reveal=True
    )
    assert selection == Selection(
        stages=("deliver",), since=datetime(2026, 12, 1, tzinfo=UTC), from_offset=3
    )
    assert selection.describe() == "stages=deliver since=2026-12-01T00:00:00+00:00 from_offset=3"
    assert Selection().describe() == "all records"
    with pytest.raises(click.BadParameter) as caught:
        selection_from_options(from_offset=5, to_offset=4)
    assert caught.value.param_hint == "--to-offset"
    with pytest.raises(click.BadParameter) as caught:
        selection_from_options(since="2026-12-02", until="2026-12-01")
    assert caught.value.param_hint == "--until"
