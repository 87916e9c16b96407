"""Dead-letter records rendered: decoded Avro as JSON-safe data, masked unless revealed."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime

import orjson
import pytest

from consumer.dead_letter import dead_letter_headers
from consumer.decode import Decoder
from consumer.dlq.records import DeadLetterRecord, parse_record
from consumer.dlq.render import MESSAGE_WIDTH, decoded_value, json_safe, record_document, table
from consumer.errors import MessageError, NotAvroError, RejectedItemError, TranslationError
from consumer.schemas import SchemaCatalog
from kafka_klaviyo_dev.encode import encode_single_object
from kafka_klaviyo_dev.samples import guide_order
from tests.fakes import FakeMessage

CATALOG = SchemaCatalog.load()
EMAIL = "john.smith@test.com"
PHONE = "5551234567"


@pytest.fixture(scope="module")
def decoder() -> Decoder:
    return Decoder(CATALOG)


def record_of(
    value: bytes | None,
    error: MessageError,
    *,
    key: bytes | None = b"order-1234",
    headers: list[tuple[str, bytes | str | None]] | None = None,
    extra: tuple[tuple[str, bytes | str | None], ...] = (),
) -> DeadLetterRecord:
    original = FakeMessage("shop.events", 1, 99, key, value, headers, 1_387_302_423_000)
    written = dead_letter_headers(
        original, error, group_id="g", rules_version="r", now=datetime(2026, 12, 1, tzinfo=UTC)
    )
    return parse_record(FakeMessage("shop.events.dlq", 0, 4, key, value, [*written, *extra], 1))


def guide_value() -> bytes:
    return encode_single_object(CATALOG, "shop.events.OrderPlaced", guide_order())


def refused() -> RejectedItemError:
    # What Klaviyo put in its error, as the sender passes it on (the writer masks it).
    return RejectedItemError(
        f"Klaviyo rejected the item: {EMAIL} is not a valid email",
        record_name="shop.events.OrderPlaced",
        detail={"code": "invalid", "title": f"bad {EMAIL}", "pointer": "/data/0"},
    )


def test_the_value_decodes_to_json_safe_data_with_personal_data_masked(decoder: Decoder) -> None:
    record = record_of(guide_value(), refused(), headers=[("reply-to", EMAIL.encode())])
    value = decoded_value(decoder, record, reveal=False)
    assert value["record_name"] == "shop.events.OrderPlaced"
    assert value["fingerprint"] == CATALOG.fingerprint("shop.events.OrderPlaced").hex()
    data = value["data"]
    assert data["order_id"] == "1234"
    assert data["customer"]["email"] == "j***@***"
    assert data["customer"]["phone"] == "***67"
    # Decimals stay exact as text, timestamps ISO-8601: readable, never masked as numbers.
    assert data["total"]["amount"] in ("29.98", "29.9800")
    assert data["occurred_at"] == "2013-12-17T17:47:03+00:00"
    assert data["customer"]["address"]["zip"] == "02110"
    document = record_document(record, value, reveal=False)
    text = orjson.dumps(document).decode()
    assert EMAIL not in text and PHONE not in text and "test.com" not in text
    assert document["headers"] == [["reply-to", "j***@***"]]
    assert document["failure"]["error_detail"]["title"] == "bad j***@***"
    assert document["source"] == {
        "topic": "shop.events",
        "partition": 1,
        "offset": 99,
        "timestamp": "2013-12-17T17:47:03.000+00:00",
    }
    assert document["dead_letter"]["partition"] == 0 and document["dead_letter"]["offset"] == 4
    assert document["failure"]["stage"] == "deliver"


def test_reveal_shows_the_data_unmasked(decoder: Decoder) -> None:
    record = record_of(guide_value(), refused(), headers=[("reply-to", EMAIL.encode())])
    value = decoded_value(decoder, record, reveal=True)
    assert value["data"]["customer"]["email"] == EMAIL
    assert value["data"]["customer"]["phone"] == PHONE
    document = record_document(record, value, reveal=True)
    assert document["headers"] == [["reply-to", EMAIL]]
    # The writer masked the message before it was stored: reveal cannot bring it back.
    assert EMAIL not in document["failure"]["error_message"]


def test_a_value_that_does_not_decode_shows_the_error_and_its_bytes(decoder: Decoder) -> None:
    raw = b"\x00\x00\x00\x00\x07 some body"
    value = decoded_value(decoder, record_of(raw, NotAvroError("x")), reveal=False)
    assert value["error"].startswith("UnknownSchemaError: value uses the Confluent wire format")
    assert value["raw"] == {"length": len(raw), "base64": base64.b64encode(raw).decode()}


def test_undecodable_bytes_holding_personal_data_are_withheld_unless_revealed(
    decoder: Decoder,
) -> None:
    raw = f'{{"email": "{EMAIL}", "phone": "+1 555 123 4567"}}'.encode()
    record = record_of(raw, NotAvroError("value is not Avro"))
    masked = decoded_value(decoder, record, reveal=False)
    assert masked["error"].startswith("NotAvroError: value is not Avro")
    assert masked["raw"]["base64"] is None
    assert masked["raw"]["text"] == '{"email": "j***@***", "phone": "***67"}'
    shown = orjson.dumps(masked).decode()
    assert EMAIL not in shown and base64.b64encode(raw).decode() not in shown
    revealed = decoded_value(decoder, record, reveal=True)
    assert base64.b64decode(revealed["raw"]["base64"]) == raw


def test_a_cut_record_says_what_is_missing_and_where_to_fetch_it(decoder: Decoder) -> None:
    record = record_of(
        None,
        refused(),
        extra=(("dlq.cut", b"value,headers"), ("dlq.original.size", b"2000000")),
    )
    assert decoded_value(decoder, record, reveal=False) == {
        "cut": ["value", "headers"],
        "original_size": 2_000_000,
        "fetch_from": "shop.events[1]@99",
    }
    assert record_document(record, None, reveal=False)["failure"]["cut"] is True


def test_keys_and_headers_that_are_not_text_are_base64() -> None:
    record = record_of(b"v", NotAvroError("x"), key=b"\xff\x00", headers=[("bin", b"\xfe")])
    document = record_document(record, None, reveal=False)
    assert document["key"] == {"length": 2, "base64": "/wA="}
    assert document["headers"] == [["bin", {"length": 1, "base64": "/g=="}]]
    assert "value" not in document


def test_json_safe_handles_every_avro_value() -> None:
    from decimal import Decimal
    from uuid import UUID

    value = {
        "d": Decimal("1.50"),
        "b": b"\x01\x02",
        "u": UUID(int=1),
        "t": datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC),
        "l": [1, 2.5, None, True],
        "m": {EMAIL: "x"},
    }
    assert json_safe(value, reveal=False) == {
        "d": "1.50",
        "b": "AQI=",
        "u": "00000000-0000-0000-0000-000000000001",
        "t": "2026-01-02T03:04:05.600000+00:00",
        "l": [1, 2.5, None, True],
        "m": {"j***@***": "x"},
    }


def test_the_table_has_a_row_per_record_with_short_masked_messages() -> None:
    long = TranslationError(
        "no identifier " + "x" * 100, rule="placed-order", field="profile.email"
    )
    records = [record_of(b"v", refused()), record_of(b"v", long)]
    lines = table(records).splitlines()
    cells = [re.split(r"\s{2,}", line) for line in lines]
    assert cells[0] == ["dlq", "failed at", "stage", "error", "record", "source", "att", "message"]
    assert len(cells) == 3
    assert cells[1] == [
        "0:4",
        "2026-12-01 00:00:00",
        "deliver",
        "RejectedItemError",
        "shop.events.OrderPlaced",
        "shop.events[1]@99",
        "1",
        "Klaviyo rejected the item: j***@*** is not a valid email",
    ]
    assert cells[2][2:5] == ["translate", "TranslationError", "-"]
    assert len(cells[2][-1]) == MESSAGE_WIDTH and cells[2][-1].endswith("…")
