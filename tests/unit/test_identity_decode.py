"""Producers still on the Customer schema before browser identity keep decoding.

``tests/unit/data/shop.events.Customer.v1.avsc`` is that schema, kept as it was. Every event
record that embeds a Customer is written with it, in both framings the consumer reads, and
decoded with today's reader schemas: the Confluent wire format (the old schema registered in
confluent-kafka's ``mock://`` registry) and the registry-free single-object encoding (its
fingerprint found among ``schemas/history``). The new fields come back as their default,
null, and the rules translate the record as before.
"""

from __future__ import annotations

import json
import shutil
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from fastavro import schemaless_writer

from consumer.decode import DecodedRecord, Decoder
from consumer.errors import UnknownSchemaError
from consumer.rules import compile_rules
from consumer.schemas import SchemaCatalog
from kafka_klaviyo_dev.encode import encode_confluent, encode_single_object
from kafka_klaviyo_dev.samples import guide_journey

REPO_SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
OLD_CUSTOMER = Path(__file__).resolve().parent / "data" / "shop.events.Customer.v1.avsc"
NEW_FIELDS = ("anonymous_id", "kx")
CATALOG = SchemaCatalog.load(REPO_SCHEMAS)
RULES = compile_rules(catalog=CATALOG)


@pytest.fixture(scope="module")
def old_catalog(tmp_path_factory: pytest.TempPathFactory) -> SchemaCatalog:
    """The schemas as they were: today's files with the old Customer, no history."""
    directory = tmp_path_factory.mktemp("old") / "schemas"
    shutil.copytree(REPO_SCHEMAS, directory, ignore=shutil.ignore_patterns("history"))
    shutil.copy(OLD_CUSTOMER, directory / "shop.events.Customer.avsc")
    return SchemaCatalog.load(directory)


def _old_form(value: Any) -> Any:
    """A record as a producer on the old schema has it: no Customer carries the new fields."""
    if isinstance(value, dict):
        return {k: _old_form(v) for k, v in value.items() if k not in NEW_FIELDS}
    if isinstance(value, list):
        return [_old_form(v) for v in value]
    return value


def _journey_with_customers() -> list[tuple[str, dict[str, Any]]]:
    return [(name, _old_form(record)) for name, record in guide_journey() if "customer" in record]


JOURNEY = _journey_with_customers()
NAMES = sorted({name for name, _ in JOURNEY})


def test_the_old_customer_is_what_the_current_one_was_without_the_new_fields() -> None:
    old = json.loads(OLD_CUSTOMER.read_text())
    new = json.loads((REPO_SCHEMAS / "shop.events.Customer.avsc").read_text())
    assert [f for f in new["fields"] if f["name"] not in NEW_FIELDS] == old["fields"]
    for name in NEW_FIELDS:
        [added] = [f for f in new["fields"] if f["name"] == name]
        assert added["type"] == ["null", "string"] and added["default"] is None


def test_every_record_with_a_customer_is_in_the_journey(old_catalog: SchemaCatalog) -> None:
    changed = {
        n for n in CATALOG.event_names if old_catalog.fingerprint(n) != CATALOG.fingerprint(n)
    }
    assert set(NAMES) == changed and len(changed) == 9


def _check(decoded: DecodedRecord, written: dict[str, Any]) -> None:
    customer = decoded.data["customer"]
    assert {k: customer[k] for k in NEW_FIELDS} == {"anonymous_id": None, "kx": None}
    assert _old_form(decoded.data) == written
    # The rules make of it what they make of the same record written with today's schema.
    today = Decoder(CATALOG).decode(
        encode_single_object(CATALOG, decoded.record_name, decoded.data)
    )
    assert RULES.translate(decoded) == RULES.translate(today) != []


@pytest.mark.parametrize(("name", "record"), JOURNEY, ids=[n for n, _ in JOURNEY])
def test_confluent_framed_old_writer_decodes_with_the_new_reader(
    old_catalog: SchemaCatalog, name: str, record: dict[str, Any]
) -> None:
    registry = SchemaRegistryClient.new_client({"url": "mock://test-identity-decode"})
    schema_id = registry.register_schema(name, Schema(old_catalog.canonical_json(name), "AVRO"))
    value = encode_confluent(schema_id, old_catalog.parsed(name), record)
    decoded = Decoder(CATALOG, registry=registry, mapped_records=RULES.mapped_records).decode(value)
    assert decoded.record_name == name and decoded.schema_id == schema_id
    _check(decoded, record)


@pytest.mark.parametrize(("name", "record"), JOURNEY, ids=[n for n, _ in JOURNEY])
def test_single_object_old_writer_decodes_with_the_new_reader(
    old_catalog: SchemaCatalog, name: str, record: dict[str, Any]
) -> None:
    old_fp = old_catalog.fingerprint(name)
    assert old_fp != CATALOG.fingerprint(name)
    buf = BytesIO()
    buf.write(b"\xc3\x01" + old_fp)
    schemaless_writer(buf, old_catalog.parsed(name), record)
    decoded = Decoder(CATALOG, mapped_records=RULES.mapped_records).decode(buf.getvalue())
    assert decoded.record_name == name and decoded.fingerprint == old_fp
    _check(decoded, record)


def test_without_the_history_files_old_single_object_messages_would_not_decode(
    old_catalog: SchemaCatalog, tmp_path: Path
) -> None:
    directory = tmp_path / "schemas"
    shutil.copytree(REPO_SCHEMAS, directory, ignore=shutil.ignore_patterns("history"))
    name, record = JOURNEY[0]
    buf = BytesIO()
    buf.write(b"\xc3\x01" + old_catalog.fingerprint(name))
    schemaless_writer(buf, old_catalog.parsed(name), record)
    with pytest.raises(UnknownSchemaError):
        Decoder(SchemaCatalog.load(directory)).decode(buf.getvalue())
