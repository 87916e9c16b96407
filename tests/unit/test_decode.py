"""Decoding both framings (Confluent wire format, single-object), evolution and every error."""

from __future__ import annotations

import copy
import json
import shutil
import socket
from datetime import UTC, datetime
from decimal import Decimal
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import (
    Schema,
    SchemaReference,
    SchemaRegistryClient,
    SchemaRegistryError,
)
from fastavro import schemaless_writer
from fastavro.schema import parse_schema

from consumer.decode import DecodedRecord, Decoder
from consumer.errors import (
    ConfigError,
    MessageError,
    NotAvroError,
    SchemaMismatchError,
    SchemaRegistryUnavailableError,
    UnknownSchemaError,
    UnmappedRecordError,
)
from consumer.schemas import SchemaCatalog
from kafka_klaviyo_dev.encode import (
    encode_confluent,
    encode_single_object,
    record_subject,
    register_schemas,
    topic_subject,
)

REPO_SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
EMAIL = "john.smith@test.com"
WHEN = datetime(2013, 12, 17, 17, 47, 3, tzinfo=UTC)


# -- sample records, one per event type (the seed guide's example order) ----------------


def _money(amount: str, currency: str = "USD") -> dict[str, Any]:
    return {"amount": Decimal(amount), "currency": currency}


def _customer() -> dict[str, Any]:
    return {
        "customer_id": "C-42",
        "email": EMAIL,
        "phone": "5551234567",
        "first_name": "John",
        "last_name": "Smith",
        "address": {
            "address1": "123 Abc st",
            "address2": "Suite 1",
            "city": "Boston",
            "region": "MA",
            "zip": "02110",
            "country": "USA",
        },
        "anonymous_id": None,
        "kx": None,
    }


def _line(
    product_id: str, sku: str, name: str, price: str, cats: list[str], brand: str
) -> dict[str, Any]:
    return {
        "line_id": f"L-{sku}",
        "product_id": product_id,
        "sku": sku,
        "name": name,
        "quantity": 1,
        "unit_price": _money(price),
        "row_total": _money(price),
        "categories": cats,
        "brand": brand,
        "product_url": f"http://www.example.com/path/to/{sku}",
        "image_url": f"http://www.example.com/path/to/{sku}.png",
    }


WINNIE = _line(
    "1111", "WINNIEPOOH", "Winnie the Pooh", "9.99", ["Fiction", "Children"], "Kids Books"
)
TALE = _line(
    "1112",
    "TALEOFTWO",
    "A Tale of Two Cities",
    "19.99",
    ["Fiction", "Classics"],
    "Harcourt Classics",
)


def _header(event_id: str) -> dict[str, Any]:
    return {"event_id": event_id, "store_id": "store-1", "occurred_at": WHEN}


def _order(event_id: str) -> dict[str, Any]:
    return {
        **_header(event_id),
        "order_id": "1234",
        "customer": _customer(),
        "line_items": [WINNIE, TALE, {**WINNIE, "line_id": "L-3", "quantity": 2}],
        "subtotal": _money("49.97"),
        "discount_code": "Free Shipping",
        "discount_total": _money("5"),
        "shipping_total": _money("0"),
        "tax_total": _money("2.50"),
        "total": _money("47.47"),
    }


SAMPLES: dict[str, dict[str, Any]] = {
    "shop.events.OrderPlaced": _order("e-placed"),
    "shop.events.OrderFulfilled": {
        **_order("e-fulfilled"),
        "carrier": "UPS",
        "tracking_number": "1Z999",
        "tracking_url": "https://ups.example.com/1Z999",
    },
    "shop.events.OrderCancelled": {**_order("e-cancelled"), "reason": "No longer needed"},
    "shop.events.OrderRefunded": {
        **_order("e-refunded"),
        "reason": "Damaged",
        "refund_total": _money("47.47"),
    },
    "shop.events.ProductViewed": {
        **_header("e-viewed"),
        "customer": _customer(),
        "product": {
            "product_id": "1111",
            "sku": None,
            "name": "Winnie the Pooh",
            "categories": ["Fiction", "Children"],
            "brand": "Kids Books",
            "url": "http://www.example.com/path/to/product",
            "image_url": "http://www.example.com/path/to/product/image.png",
            "price": _money("9.99"),
            "compare_at_price": _money("14.99"),
        },
    },
    "shop.events.CartItemAdded": {
        **_header("e-added"),
        "cart_id": "cart-9",
        "customer": _customer(),
        "added_item": TALE,
        "items": [WINNIE, TALE],
        "total": _money("29.98"),
        "checkout_url": "http://www.example.com/path/to/checkout",
    },
    "shop.events.CheckoutStarted": {
        **_header("e-checkout"),
        "cart_id": "cart-9",
        "customer": _customer(),
        "items": [WINNIE, TALE],
        "total": _money("29.98"),
        "checkout_url": "http://www.example.com/path/to/checkout",
    },
    "shop.events.SiteVisited": {
        **_header("e-visit"),
        "customer": _customer(),
        "page_url": "http://www.example.com/",
        "referrer": None,
        "session_id": "sess-1",
    },
    "shop.events.CustomerUpserted": {
        **_header("e-customer"),
        "customer": _customer(),
        "organization": "Acme",
        "title": "Buyer",
        "locale": "en-US",
        "properties": {"loyalty_tier": "gold"},
    },
    "shop.events.SubscriptionChanged": {
        **_header("e-sub"),
        "customer_id": "C-42",
        "email": EMAIL,
        "phone": None,
        "channel": "EMAIL",
        "action": "SUBSCRIBE",
        "list_id": "LIST1",
        "consented_at": datetime(2013, 12, 1, tzinfo=UTC),
        "source": "footer form",
    },
    "shop.events.ProductUpserted": {
        **_header("e-product"),
        "product_id": "1111",
        "title": "Winnie the Pooh",
        "description": "A bear of very little brain.",
        "url": "http://www.example.com/path/to/product",
        "image_url": None,
        "price": _money("9.99"),
        "categories": ["Fiction"],
        "brand": "Kids Books",
        "sku": "WINNIEPOOH",
        "inventory_quantity": 12,
        "published": False,
    },
    "shop.events.ProductDeleted": {**_header("e-deleted"), "product_id": "1111"},
}


@pytest.fixture(scope="module")
def catalog() -> SchemaCatalog:
    return SchemaCatalog.load(REPO_SCHEMAS)


@pytest.fixture
def registry() -> SchemaRegistryClient:
    # new_client picks the in-memory mock for mock:// URLs; each call gets an empty store.
    return SchemaRegistryClient.new_client({"url": "mock://test-decode"})


def _body(schema: Any, record: dict[str, Any]) -> bytes:
    buf = BytesIO()
    schemaless_writer(buf, schema, record)
    return buf.getvalue()


def _older(catalog: SchemaCatalog, name: str, *drop: str, **replace: Any) -> dict[str, Any]:
    """The registry JSON of ``name`` as an older (or newer) writer would have had it."""
    raw = json.loads(catalog.canonical_json(name))
    raw["fields"] = [f for f in raw["fields"] if f["name"] not in drop]
    raw.update(replace)
    return raw


# -- round trips -------------------------------------------------------------------------


def test_samples_cover_every_event(catalog: SchemaCatalog) -> None:
    assert set(SAMPLES) == catalog.event_names


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_single_object_round_trip(catalog: SchemaCatalog, name: str) -> None:
    value = encode_single_object(catalog, name, SAMPLES[name])
    assert value[:2] == b"\xc3\x01" and value[2:10] == catalog.fingerprint(name)
    decoded = Decoder(catalog).decode(value)
    assert decoded == DecodedRecord(name, SAMPLES[name], None, catalog.fingerprint(name))


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_confluent_round_trip(
    catalog: SchemaCatalog, registry: SchemaRegistryClient, name: str
) -> None:
    ids = register_schemas(registry, catalog)
    assert set(ids) == catalog.event_names and len(set(ids.values())) == len(ids)
    value = encode_confluent(ids[name], catalog.parsed(name), SAMPLES[name])
    assert value[0] == 0 and int.from_bytes(value[1:5], "big") == ids[name]
    decoded = Decoder(catalog, registry=registry).decode(value)
    assert decoded == DecodedRecord(name, SAMPLES[name], ids[name], None)


def test_value_types_a_translator_sees(catalog: SchemaCatalog) -> None:
    name = "shop.events.SubscriptionChanged"
    data = Decoder(catalog).decode(encode_single_object(catalog, name, SAMPLES[name])).data
    assert data["occurred_at"] == WHEN and data["occurred_at"].tzinfo is not None
    assert data["occurred_at"].utcoffset().total_seconds() == 0
    assert data["channel"] == "EMAIL" and type(data["channel"]) is str
    order = (
        Decoder(catalog)
        .decode(
            encode_single_object(
                catalog, "shop.events.OrderPlaced", SAMPLES["shop.events.OrderPlaced"]
            )
        )
        .data
    )
    amount = order["total"]["amount"]
    assert isinstance(amount, Decimal) and str(amount) == "47.4700"
    assert order["customer"]["address"]["zip"] == "02110"


def test_register_schemas_subject_strategies(
    catalog: SchemaCatalog, registry: SchemaRegistryClient
) -> None:
    ids = register_schemas(registry, catalog)
    assert set(registry.get_subjects()) == catalog.event_names
    assert register_schemas(registry, catalog) == ids  # idempotent
    assert record_subject("shop.events.OrderPlaced") == "shop.events.OrderPlaced"
    other = SchemaRegistryClient.new_client({"url": "mock://test-topic-strategy"})
    only = register_schemas(
        other, catalog, topic_subject("orders"), names=["shop.events.OrderPlaced"]
    )
    assert list(only) == ["shop.events.OrderPlaced"]
    assert other.get_subjects() == ["orders-value"]


def test_writer_schema_is_fetched_once_per_id(
    catalog: SchemaCatalog, registry: SchemaRegistryClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = register_schemas(registry, catalog)
    calls: list[int] = []
    original = registry.get_schema

    def counting(schema_id: int, *args: Any, **kwargs: Any) -> Any:
        calls.append(schema_id)
        return original(schema_id, *args, **kwargs)

    monkeypatch.setattr(registry, "get_schema", counting)
    decoder = Decoder(catalog, registry=registry)
    name = "shop.events.OrderPlaced"
    value = encode_confluent(ids[name], catalog.parsed(name), SAMPLES[name])
    for _ in range(5):
        decoder.decode(value)
    assert calls == [ids[name]]


def test_schema_with_registry_references(
    catalog: SchemaCatalog, registry: SchemaRegistryClient
) -> None:
    # How many shops register: shared types as subjects of their own, events referencing them.
    # OrderPlaced -> Customer -> Address, and Money both directly and through LineItem.
    def ref(name: str) -> SchemaReference:
        return SchemaReference(name, name, 1)

    uses = {
        "shop.events.Money": [],
        "shop.events.Address": [],
        "shop.events.Customer": [ref("shop.events.Address")],
        "shop.events.LineItem": [ref("shop.events.Money")],
        "shop.events.OrderPlaced": [
            ref("shop.events.Customer"),
            ref("shop.events.LineItem"),
            ref("shop.events.Money"),
        ],
    }
    ids = {
        name: registry.register_schema(
            name, Schema((REPO_SCHEMAS / f"{name}.avsc").read_text(), "AVRO", refs)
        )
        for name, refs in uses.items()
    }
    name = "shop.events.OrderPlaced"
    value = encode_confluent(ids[name], catalog.parsed(name), SAMPLES[name])
    decoded = Decoder(catalog, registry=registry).decode(value)
    assert decoded.data == SAMPLES[name] and decoded.record_name == name


# -- schema evolution --------------------------------------------------------------------


def test_older_writer_fields_get_reader_defaults(
    catalog: SchemaCatalog, registry: SchemaRegistryClient
) -> None:
    name = "shop.events.OrderPlaced"
    older = _older(catalog, name, "discount_code", "tax_total")
    schema_id = registry.register_schema(name, Schema(json.dumps(older), "AVRO"))
    record = {k: v for k, v in SAMPLES[name].items() if k not in ("discount_code", "tax_total")}
    value = encode_confluent(schema_id, parse_schema(older), record)
    decoded = Decoder(catalog, registry=registry).decode(value)
    assert decoded.data["discount_code"] is None and decoded.data["tax_total"] is None
    assert decoded.data["total"] == SAMPLES[name]["total"]
    assert decoded.record_name == name and decoded.schema_id == schema_id


def test_newer_writer_fields_are_skipped(
    catalog: SchemaCatalog, registry: SchemaRegistryClient
) -> None:
    name = "shop.events.ProductDeleted"
    newer = _older(catalog, name)
    newer["fields"].append(
        {"name": "deleted_by", "type": ["null", "string"], "default": None, "doc": "Who."}
    )
    schema_id = registry.register_schema(name, Schema(json.dumps(newer), "AVRO"))
    value = encode_confluent(schema_id, parse_schema(newer), {**SAMPLES[name], "deleted_by": "ann"})
    assert Decoder(catalog, registry=registry).decode(value).data == SAMPLES[name]


def test_identical_writer_skips_resolution_but_different_one_resolves(
    catalog: SchemaCatalog, registry: SchemaRegistryClient
) -> None:
    name = "shop.events.OrderPlaced"
    reworded = _older(catalog, name, doc="Reworded, same bytes.")
    same_id = registry.register_schema(name, Schema(json.dumps(reworded), "AVRO"))
    older_id = registry.register_schema(
        name, Schema(json.dumps(_older(catalog, name, "discount_code")), "AVRO")
    )
    decoder = Decoder(catalog, registry=registry)
    decoder.decode(encode_confluent(same_id, catalog.parsed(name), SAMPLES[name]))
    plans = decoder._by_id  # white-box: which schemas the cached plan reads with
    assert plans[same_id].writer is catalog.parsed(name) and plans[same_id].reader is None
    record = {k: v for k, v in SAMPLES[name].items() if k != "discount_code"}
    older = parse_schema(_older(catalog, name, "discount_code"))
    decoder.decode(encode_confluent(older_id, older, record))
    assert plans[older_id].reader is catalog.parsed(name)


def test_single_object_history_version_decodes_with_current_reader(tmp_path: Path) -> None:
    directory = tmp_path / "schemas"
    shutil.copytree(REPO_SCHEMAS, directory)
    (directory / "history").mkdir(exist_ok=True)
    name = "shop.events.OrderRefunded"
    raw = json.loads((directory / f"{name}.avsc").read_text())
    raw["fields"] = [f for f in raw["fields"] if f["name"] not in ("refund_total", "reason")]
    (directory / "history" / "OrderRefunded.v1.avsc").write_text(json.dumps(raw))
    catalog = SchemaCatalog.load(directory)
    current = json.loads(catalog.canonical_json(name))
    older = parse_schema(
        {
            **current,
            "fields": [f for f in current["fields"] if f["name"] not in ("refund_total", "reason")],
        }
    )
    from fastavro.schema import fingerprint, to_parsing_canonical_form

    old_fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(older), "CRC-64-AVRO"))
    record = {k: v for k, v in SAMPLES[name].items() if k not in ("refund_total", "reason")}
    value = b"\xc3\x01" + old_fp + _body(older, record)
    decoded = Decoder(catalog).decode(value)
    assert decoded.record_name == name and decoded.fingerprint == old_fp
    assert decoded.data["refund_total"] is None and decoded.data["reason"] is None
    assert decoded.data["order_id"] == "1234"


def test_writer_under_an_alias_resolves_to_our_record(
    tmp_path: Path, registry: SchemaRegistryClient
) -> None:
    directory = tmp_path / "schemas"
    shutil.copytree(REPO_SCHEMAS, directory)
    path = directory / "shop.events.ProductDeleted.avsc"
    raw = json.loads(path.read_text())
    raw["aliases"] = ["com.acme.catalog.ProductRemoved"]
    path.write_text(json.dumps(raw))
    catalog = SchemaCatalog.load(directory)
    theirs = {
        **_older(catalog, "shop.events.ProductDeleted"),
        "name": "com.acme.catalog.ProductRemoved",
    }
    theirs.pop("aliases", None)
    schema_id = registry.register_schema("x", Schema(json.dumps(theirs), "AVRO"))
    record = SAMPLES["shop.events.ProductDeleted"]
    value = encode_confluent(schema_id, parse_schema(theirs), record)
    decoded = Decoder(
        catalog, registry=registry, mapped_records=frozenset({"shop.events.ProductDeleted"})
    ).decode(value)
    assert decoded.record_name == "shop.events.ProductDeleted" and decoded.data == record


def test_record_unknown_to_the_catalog_decodes_with_its_writer_when_unfiltered(
    catalog: SchemaCatalog, registry: SchemaRegistryClient
) -> None:
    theirs = {
        "type": "record",
        "name": "Ping",
        "namespace": "com.acme",
        "fields": [{"name": "n", "type": "int"}],
    }
    schema_id = registry.register_schema("ping", Schema(json.dumps(theirs), "AVRO"))
    value = encode_confluent(schema_id, parse_schema(theirs), {"n": 7})
    decoded = Decoder(catalog, registry=registry).decode(value)
    assert decoded == DecodedRecord("com.acme.Ping", {"n": 7}, schema_id, None)
    with pytest.raises(UnmappedRecordError, match=r"com\.acme\.Ping"):
        Decoder(catalog, registry=registry, mapped_records=frozenset()).decode(value)


# -- errors ------------------------------------------------------------------------------


def _no_pii(err: BaseException) -> None:
    text = str(err) + json.dumps(getattr(err, "detail", {}), default=str)
    assert "john" not in text.lower() and "5551234567" not in text


@pytest.mark.parametrize("value", [None, b""])
def test_missing_value_is_not_avro(catalog: SchemaCatalog, value: bytes | None) -> None:
    with pytest.raises(NotAvroError, match="has no value"):
        Decoder(catalog).decode(value)


def test_json_value_is_not_avro(catalog: SchemaCatalog) -> None:
    value = json.dumps({"email": EMAIL}).encode()
    with pytest.raises(NotAvroError) as info:
        Decoder(catalog).decode(value)
    assert str(info.value) == (
        "value is not Avro: first bytes 7b 22 65 6d ... (neither Confluent magic byte 0 nor"
        " single-object marker C3 01)"
    )
    assert info.value.detail == {"first_bytes": "7b22656d", "length": len(value)}
    assert info.value.stage == "decode" and isinstance(info.value, MessageError)
    _no_pii(info.value)


@pytest.mark.parametrize(
    ("value", "header"),
    [(b"\x00\x00\x01", "5-byte Confluent"), (b"\xc3\x01\x8f\x5c", "10-byte single-object")],
)
def test_truncated_header_is_not_avro(catalog: SchemaCatalog, value: bytes, header: str) -> None:
    with pytest.raises(NotAvroError, match=header):
        Decoder(catalog).decode(value)


def test_unknown_schema_id(catalog: SchemaCatalog, registry: SchemaRegistryClient) -> None:
    value = b"\x00" + (999).to_bytes(4, "big") + b"\x02"
    with pytest.raises(
        UnknownSchemaError, match="schema id 999 is not in the Schema Registry"
    ) as info:
        Decoder(catalog, registry=registry).decode(value)
    assert info.value.detail["schema_id"] == 999 and info.value.record_name is None


def test_confluent_framing_without_a_registry(catalog: SchemaCatalog) -> None:
    value = b"\x00\x00\x00\x00\x07\x02"
    with pytest.raises(UnknownSchemaError, match=r"schema id 7\b.*no Schema Registry") as info:
        Decoder(catalog).decode(value)
    assert info.value.detail == {"schema_id": 7}


def test_unknown_fingerprint(catalog: SchemaCatalog) -> None:
    fp = bytes.fromhex("0011223344556677")
    with pytest.raises(UnknownSchemaError, match="fingerprint 0011223344556677") as info:
        Decoder(catalog).decode(b"\xc3\x01" + fp + b"\x02")
    assert info.value.detail == {"fingerprint": "0011223344556677"}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_registry_is_not_bad_data(catalog: SchemaCatalog) -> None:
    registry = SchemaRegistryClient(
        {"url": f"http://127.0.0.1:{_closed_port()}", "max.retries": 0, "timeout": 2}
    )
    decoder = Decoder(catalog, registry=registry)
    value = b"\x00\x00\x00\x00\x05\x02"
    for _ in range(2):  # nothing is cached: the next attempt asks again
        with pytest.raises(
            SchemaRegistryUnavailableError, match=r"unreachable.*schema id 5\b"
        ) as info:
            decoder.decode(value)
        assert not isinstance(info.value, MessageError)
        assert info.value.schema_id == 5 and info.value.http_status is None


class _FailingRegistry:
    def __init__(self, status: int) -> None:
        self.status = status

    def get_schema(self, schema_id: int, *args: Any, **kwargs: Any) -> Any:
        raise SchemaRegistryError(self.status, self.status * 100 + 1, "nope")


def test_registry_5xx_is_unavailable_and_401_is_fatal(catalog: SchemaCatalog) -> None:
    value = b"\x00\x00\x00\x00\x05\x02"
    with pytest.raises(SchemaRegistryUnavailableError, match="HTTP 503") as info:
        Decoder(catalog, registry=_FailingRegistry(503)).decode(value)  # type: ignore[arg-type]
    assert info.value.http_status == 503
    with pytest.raises(ConfigError, match="HTTP 401"):
        Decoder(catalog, registry=_FailingRegistry(401)).decode(value)  # type: ignore[arg-type]


def test_non_avro_registry_schema(catalog: SchemaCatalog, registry: SchemaRegistryClient) -> None:
    schema_id = registry.register_schema("j", Schema('{"type": "object"}', "JSON"))
    with pytest.raises(NotAvroError, match=f"schema id {schema_id} is a JSON schema"):
        Decoder(catalog, registry=registry).decode(b"\x00" + schema_id.to_bytes(4, "big") + b"{}")


def test_unparseable_registry_schema(
    catalog: SchemaCatalog, registry: SchemaRegistryClient
) -> None:
    broken = {"type": "record", "name": "X", "fields": [{"name": "a", "type": "Nope"}]}
    schema_id = registry.register_schema("b", Schema(json.dumps(broken), "AVRO"))
    with pytest.raises(SchemaMismatchError, match=f"writer schema id {schema_id}.*does not parse"):
        Decoder(catalog, registry=registry).decode(b"\x00" + schema_id.to_bytes(4, "big") + b"\x02")


def test_truncated_body(catalog: SchemaCatalog) -> None:
    name = "shop.events.OrderPlaced"
    value = encode_single_object(catalog, name, SAMPLES[name])
    with pytest.raises(SchemaMismatchError, match="body does not decode") as info:
        Decoder(catalog).decode(value[:60])
    assert info.value.record_name == name
    assert info.value.detail == {"fingerprint": catalog.fingerprint(name).hex()}
    _no_pii(info.value)


def test_trailing_bytes(catalog: SchemaCatalog) -> None:
    name = "shop.events.ProductDeleted"
    value = encode_single_object(catalog, name, SAMPLES[name]) + b"\x00\x00"
    with pytest.raises(SchemaMismatchError, match="2 bytes left after the record") as info:
        Decoder(catalog).decode(value)
    assert info.value.record_name == name


def test_body_written_with_another_schema(catalog: SchemaCatalog) -> None:
    # OrderPlaced bytes behind ProductDeleted's fingerprint: the strings decode, the rest is
    # left over or garbage - never silently accepted.
    order = _body(catalog.parsed("shop.events.OrderPlaced"), SAMPLES["shop.events.OrderPlaced"])
    value = b"\xc3\x01" + catalog.fingerprint("shop.events.ProductDeleted") + order
    with pytest.raises(SchemaMismatchError) as info:
        Decoder(catalog).decode(value)
    _no_pii(info.value)


def test_resolution_failure_unknown_enum_symbol(
    catalog: SchemaCatalog, registry: SchemaRegistryClient
) -> None:
    name = "shop.events.SubscriptionChanged"
    newer = _older(catalog, name)
    for field in newer["fields"]:
        if field["name"] == "channel":
            field["type"] = {**field["type"], "symbols": ["EMAIL", "SMS", "WHATSAPP"]}
    schema_id = registry.register_schema(name, Schema(json.dumps(newer), "AVRO"))
    value = encode_confluent(
        schema_id, parse_schema(newer), {**SAMPLES[name], "channel": "WHATSAPP"}
    )
    with pytest.raises(SchemaMismatchError, match="with our reader schema") as info:
        Decoder(catalog, registry=registry).decode(value)
    assert info.value.record_name == name and info.value.detail == {"schema_id": schema_id}
    _no_pii(info.value)


def test_resolution_failure_missing_required_field(
    catalog: SchemaCatalog, registry: SchemaRegistryClient
) -> None:
    name = "shop.events.OrderPlaced"
    older = _older(catalog, name, "order_id")
    schema_id = registry.register_schema(name, Schema(json.dumps(older), "AVRO"))
    record = {k: v for k, v in SAMPLES[name].items() if k != "order_id"}
    value = encode_confluent(schema_id, parse_schema(older), record)
    with pytest.raises(SchemaMismatchError, match="order_id"):
        Decoder(catalog, registry=registry).decode(value)


def test_unmapped_record(catalog: SchemaCatalog, registry: SchemaRegistryClient) -> None:
    mapped = frozenset({"shop.events.OrderPlaced"})
    name = "shop.events.ProductDeleted"
    decoder = Decoder(catalog, registry=registry, mapped_records=mapped)
    single = encode_single_object(catalog, name, SAMPLES[name])
    for _ in range(2):  # the second hit comes from the cached plan
        with pytest.raises(UnmappedRecordError) as info:
            decoder.decode(single)
        assert str(info.value) == (
            f"record {name} (fingerprint {catalog.fingerprint(name).hex()}) is not mapped by"
            " any translation rule"
        )
        assert info.value.record_name == name
    ids = register_schemas(registry, catalog)
    with pytest.raises(UnmappedRecordError, match=f"schema id {ids[name]}") as info:
        decoder.decode(encode_confluent(ids[name], catalog.parsed(name), SAMPLES[name]))
    assert info.value.detail == {"schema_id": ids[name]}
    placed = "shop.events.OrderPlaced"
    assert (
        decoder.decode(encode_single_object(catalog, placed, SAMPLES[placed])).record_name == placed
    )


def test_samples_are_not_mutated_by_decoding(catalog: SchemaCatalog) -> None:
    before = copy.deepcopy(SAMPLES)
    decoder = Decoder(catalog)
    for name, record in SAMPLES.items():
        decoder.decode(encode_single_object(catalog, name, record))
    assert before == SAMPLES
