"""The Avro schema files and the SchemaCatalog that indexes them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from fastavro.schema import fingerprint as fastavro_fingerprint
from fastavro.schema import parse_schema, to_parsing_canonical_form

from consumer.errors import ConfigError
from consumer.schemas import SCHEMAS_DIR_ENV, SchemaCatalog, default_schemas_dir, encoding_form

REPO_SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"

EVENTS = {
    "shop.events.OrderPlaced",
    "shop.events.OrderFulfilled",
    "shop.events.OrderCancelled",
    "shop.events.OrderRefunded",
    "shop.events.ProductViewed",
    "shop.events.CartItemAdded",
    "shop.events.CheckoutStarted",
    "shop.events.SiteVisited",
    "shop.events.CustomerUpserted",
    "shop.events.SubscriptionChanged",
    "shop.events.ProductUpserted",
    "shop.events.ProductDeleted",
}
SHARED = {
    "shop.events.Money",
    "shop.events.Address",
    "shop.events.Customer",
    "shop.events.LineItem",
    "shop.events.ProductSummary",
    "shop.events.SubscriptionChannel",
    "shop.events.SubscriptionAction",
}
ORDER_EVENTS = sorted(n for n in EVENTS if n.startswith("shop.events.Order"))


@pytest.fixture(scope="module")
def catalog() -> SchemaCatalog:
    return SchemaCatalog.load(REPO_SCHEMAS)


def _raw_files() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, json.loads(p.read_text())) for p in sorted(REPO_SCHEMAS.glob("*.avsc"))]


def _crc64_avro(data: bytes) -> int:
    """The Avro spec's reference CRC-64-AVRO (Rabin) fingerprint, written out independently."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


# -- the files ---------------------------------------------------------------------------


def test_catalog_holds_every_event_and_shared_type(catalog: SchemaCatalog) -> None:
    assert catalog.event_names == EVENTS
    assert catalog.names == EVENTS | SHARED
    assert catalog.file("shop.events.Money").name == "shop.events.Money.avsc"


def test_every_type_and_field_has_a_doc() -> None:
    def walk(schema: Any, where: str) -> None:
        if isinstance(schema, list):
            for branch in schema:
                walk(branch, where)
        elif isinstance(schema, dict):
            if schema.get("type") in ("record", "enum"):
                assert schema.get("doc"), f"{where}: type {schema['name']} has no doc"
            for field in schema.get("fields", ()):
                assert field.get("doc", "").strip(), f"{where}: field {field['name']} has no doc"
                walk(field["type"], where)
            walk(schema.get("items"), where)
            walk(schema.get("values"), where)

    for path, raw in _raw_files():
        walk(raw, path.name)


def test_optional_fields_are_null_first_with_a_null_default() -> None:
    for path, raw in _raw_files():
        for field in raw.get("fields", ()):
            if isinstance(field["type"], list) and "null" in field["type"]:
                assert field["type"][0] == "null", f"{path.name}: {field['name']}"
                assert "default" in field and field["default"] is None, (
                    f"{path.name}: optional {field['name']} needs default null"
                )


def test_namespace_and_file_names(catalog: SchemaCatalog) -> None:
    for path, raw in _raw_files():
        assert raw["namespace"] == "shop.events"
        assert path.name == f"shop.events.{raw['name']}.avsc"


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_every_event_carries_id_store_and_time(catalog: SchemaCatalog, name: str) -> None:
    assert catalog.field(name, "event_id").type_name == "string"  # type: ignore[union-attr]
    assert catalog.field(name, "store_id").type_name == "string"  # type: ignore[union-attr]
    occurred = catalog.field(name, "occurred_at")
    assert occurred is not None and occurred.type_name == "timestamp-millis"
    assert not occurred.nullable


def test_money_and_times_use_the_shared_types(catalog: SchemaCatalog) -> None:
    records = [n for n in catalog.names if catalog.parsed(n)["type"] == "record"]
    for name in records:
        for path, info in catalog.fields(name).items():
            leaf = path.rsplit(".", 1)[-1]
            if leaf.endswith(("price", "total")) and name != "shop.events.Money":
                assert info.type_name == "shop.events.Money", f"{name}.{path} is {info.type_name}"
            if leaf.endswith("_at"):
                assert info.type_name == "timestamp-millis", f"{name}.{path} is {info.type_name}"


def test_order_events_share_the_placed_order_facts(catalog: SchemaCatalog) -> None:
    placed = catalog.parsed("shop.events.OrderPlaced")["fields"]
    facts = {f["name"] for f in placed} - {"event_id", "store_id", "occurred_at"}
    for name in ORDER_EVENTS:
        paths = catalog.fields(name)
        for path, info in catalog.fields("shop.events.OrderPlaced").items():
            if path.split(".")[0].split("[")[0] in facts:
                assert paths[path].type_name == info.type_name, f"{name}.{path}"
    fulfilled = catalog.fields("shop.events.OrderFulfilled")
    assert {"carrier", "tracking_number", "tracking_url"} <= set(fulfilled)
    assert catalog.field("shop.events.OrderCancelled", "reason") is not None
    refund = catalog.field("shop.events.OrderRefunded", "refund_total")
    assert refund is not None and refund.nullable and refund.type_name == "shop.events.Money"


def test_original_schemas_keep_their_fields(catalog: SchemaCatalog) -> None:
    placed = [f["name"] for f in catalog.parsed("shop.events.OrderPlaced")["fields"]]
    assert placed == [
        "event_id",
        "store_id",
        "occurred_at",
        "order_id",
        "customer",
        "line_items",
        "subtotal",
        "discount_code",
        "discount_total",
        "shipping_total",
        "tax_total",
        "total",
    ]
    money = catalog.field("shop.events.OrderPlaced", "total.amount")
    assert money is not None and money.schema["scale"] == 4 and money.schema["precision"] == 18


# -- field introspection -----------------------------------------------------------------


def test_field_paths_through_records_arrays_and_unions(catalog: SchemaCatalog) -> None:
    email = catalog.field("shop.events.OrderPlaced", "customer.email")
    assert email is not None and email.type_name == "string" and email.nullable
    assert email.has_default and email.doc == "E-mail address."
    city = catalog.field("shop.events.OrderPlaced", "customer.address.city")
    assert city is not None and city.nullable
    items = catalog.field("shop.events.OrderPlaced", "line_items")
    assert items is not None and items.type_name == "array"
    item = catalog.field("shop.events.OrderPlaced", "line_items[]")
    assert item is not None and item.type_name == "shop.events.LineItem"
    sku = catalog.field("shop.events.OrderPlaced", "line_items[].sku")
    assert sku is not None and sku.type_name == "string" and not sku.nullable
    amount = catalog.field("shop.events.CheckoutStarted", "items[].unit_price.amount")
    assert amount is not None and amount.type_name == "decimal"
    cats = catalog.field("shop.events.OrderPlaced", "line_items[].categories[]")
    assert cats is not None and cats.type_name == "string"
    channel = catalog.field("shop.events.SubscriptionChanged", "channel")
    assert channel is not None and channel.type_name == "shop.events.SubscriptionChannel"
    assert channel.schema["symbols"] == ["EMAIL", "SMS"]
    props = catalog.field("shop.events.CustomerUpserted", "properties")
    assert props is not None and props.type_name == "map" and props.has_default
    published = catalog.field("shop.events.ProductUpserted", "published")
    assert published is not None and published.type_name == "boolean" and published.has_default
    assert catalog.field("shop.events.OrderPlaced", "customer.nope") is None
    assert catalog.field("shop.events.OrderPlaced", "line_items.sku") is None


def test_second_use_of_a_named_type_is_expanded_too(catalog: SchemaCatalog) -> None:
    # subtotal defines Money inline; total only names it. Both must be navigable.
    for path in ("subtotal.amount", "total.currency", "discount_total.amount"):
        assert catalog.field("shop.events.OrderPlaced", path) is not None, path


# -- fingerprints and registry JSON ------------------------------------------------------


def test_reference_fingerprint_vector() -> None:
    # Avro's own tests (Java TestBinaryMessageEncoding, Ruby test_single_object_encoding_header):
    # "int" -> 0x7275d51a3f395c8f, written c3 01 8f 5c 39 3f 1a d5 75 72.
    assert _crc64_avro(b'"int"') == 0x7275D51A3F395C8F
    assert _crc64_avro(b'"int"').to_bytes(8, "little").hex() == "8f5c393f1ad57572"


@pytest.mark.parametrize("name", sorted(EVENTS | SHARED))
def test_fingerprint_is_crc64_of_the_canonical_form_little_endian(
    catalog: SchemaCatalog, name: str
) -> None:
    canonical = to_parsing_canonical_form(catalog.parsed(name))
    fp = catalog.fingerprint(name)
    assert len(fp) == 8
    assert fp == _crc64_avro(canonical.encode()).to_bytes(8, "little")
    assert fp.hex() == fastavro_fingerprint(canonical, "CRC-64-AVRO")
    assert catalog.by_fingerprint(fp) == name


def test_unknown_fingerprint(catalog: SchemaCatalog) -> None:
    assert catalog.by_fingerprint(b"\0" * 8) is None
    assert catalog.writer_by_fingerprint(b"\0" * 8) is None


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_canonical_json_is_self_contained_and_complete(catalog: SchemaCatalog, name: str) -> None:
    text = catalog.canonical_json(name)
    assert "__fastavro" not in text
    standalone = parse_schema(json.loads(text))  # no named_schemas: must not need any
    assert to_parsing_canonical_form(standalone) == to_parsing_canonical_form(catalog.parsed(name))
    assert encoding_form(standalone) == encoding_form(catalog.parsed(name))
    assert '"doc"' in text and '"logicalType":"timestamp-millis"' in text


def test_encoding_form_sees_logical_types_but_not_docs(catalog: SchemaCatalog) -> None:
    raw = json.loads(catalog.canonical_json("shop.events.OrderPlaced"))
    base = encoding_form(parse_schema(raw))
    reworded = json.loads(json.dumps(raw).replace("The buyer.", "Who bought."))
    assert encoding_form(parse_schema(reworded)) == base
    rescaled = json.loads(json.dumps(raw).replace('"scale": 4', '"scale": 2'))
    assert encoding_form(parse_schema(rescaled)) != base
    assert to_parsing_canonical_form(parse_schema(rescaled)) == to_parsing_canonical_form(
        parse_schema(raw)
    )


# -- loading: directories, history, bad files --------------------------------------------


def _copy_schemas(tmp_path: Path) -> Path:
    target = tmp_path / "schemas"
    shutil.copytree(REPO_SCHEMAS, target)
    return target


def test_default_directory_and_env_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SCHEMAS_DIR_ENV, raising=False)
    assert default_schemas_dir() in (REPO_SCHEMAS, REPO_SCHEMAS.parent / "consumer" / "_schemas")
    assert SchemaCatalog.load().event_names == EVENTS
    directory = tmp_path / "only"
    directory.mkdir()
    shutil.copy(REPO_SCHEMAS / "shop.events.Money.avsc", directory)
    monkeypatch.setenv(SCHEMAS_DIR_ENV, str(directory))
    assert SchemaCatalog.load().names == {"shop.events.Money"}


def test_missing_or_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        SchemaCatalog.load(tmp_path / "nope")
    with pytest.raises(ConfigError, match=r"no \*\.avsc"):
        SchemaCatalog.load(tmp_path)


@pytest.mark.parametrize(
    ("file_name", "content", "expected"),
    [
        ("shop.events.Broken.avsc", "{not json", "not readable JSON"),
        (
            "shop.events.Wrong.avsc",
            json.dumps(
                {"type": "record", "name": "Right", "namespace": "shop.events", "fields": []}
            ),
            "must be named shop.events.Right.avsc",
        ),
        (
            "shop.events.Dangling.avsc",
            json.dumps(
                {
                    "type": "record",
                    "name": "Dangling",
                    "namespace": "shop.events",
                    "fields": [{"name": "x", "type": "shop.events.Nowhere"}],
                }
            ),
            "Nowhere",
        ),
        (
            "shop.events.Bad.avsc",
            json.dumps(
                {
                    "type": "record",
                    "name": "Bad",
                    "namespace": "shop.events",
                    "fields": [{"name": "x", "type": "strnig"}],
                }
            ),
            "strnig",
        ),
        ("shop.events.Prim.avsc", json.dumps("string"), "one named type"),
    ],
)
def test_bad_schema_files_name_the_file(
    tmp_path: Path, file_name: str, content: str, expected: str
) -> None:
    directory = _copy_schemas(tmp_path)
    (directory / file_name).write_text(content)
    with pytest.raises(ConfigError) as info:
        SchemaCatalog.load(directory)
    assert file_name in str(info.value)
    assert expected in str(info.value)


def test_history_versions_resolve_by_fingerprint_only(tmp_path: Path) -> None:
    directory = _copy_schemas(tmp_path)
    raw = json.loads((directory / "shop.events.OrderPlaced.avsc").read_text())
    raw["fields"] = [f for f in raw["fields"] if f["name"] != "discount_code"]
    (directory / "history").mkdir(exist_ok=True)
    (directory / "history" / "OrderPlaced-v1.avsc").write_text(json.dumps(raw))
    catalog = SchemaCatalog.load(directory)
    assert catalog.event_names == EVENTS  # history adds no names
    current = json.loads(catalog.canonical_json("shop.events.OrderPlaced"))
    older = {**current, "fields": [f for f in current["fields"] if f["name"] != "discount_code"]}
    old_fp = bytes.fromhex(
        fastavro_fingerprint(to_parsing_canonical_form(parse_schema(older)), "CRC-64-AVRO")
    )
    assert old_fp != catalog.fingerprint("shop.events.OrderPlaced")
    assert catalog.by_fingerprint(old_fp) == "shop.events.OrderPlaced"
    found = catalog.writer_by_fingerprint(old_fp)
    assert found is not None
    assert "discount_code" not in {f["name"] for f in found[1]["fields"]}


def test_aliases_resolve_to_the_catalog_name(tmp_path: Path) -> None:
    directory = _copy_schemas(tmp_path)
    path = directory / "shop.events.OrderPlaced.avsc"
    raw = json.loads(path.read_text())
    raw["aliases"] = ["com.acme.orders.OrderPlaced", "LegacyOrderPlaced"]
    path.write_text(json.dumps(raw))
    catalog = SchemaCatalog.load(directory)
    assert catalog.resolve_name("com.acme.orders.OrderPlaced") == "shop.events.OrderPlaced"
    assert catalog.resolve_name("shop.events.LegacyOrderPlaced") == "shop.events.OrderPlaced"
    assert catalog.resolve_name("shop.events.OrderPlaced") == "shop.events.OrderPlaced"
    assert catalog.resolve_name("com.acme.Other") is None
