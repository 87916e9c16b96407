"""Property tests: events generated from the Avro schemas, through the default rules.

For every event record: each output, inside its bulk body, validates against Klaviyo's OpenAPI
spec, or the translation fails with a typed TranslationError naming rule and field (never the
value); translating the same input twice gives the same operations and unique ids. Events are
written and read back with fastavro, so the rules see exactly what decoding would give.
For OrderPlaced the rules and the hand-written OrderTranslator must agree on everything.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from decimal import Decimal
from io import BytesIO
from typing import Any

import pytest
from fastavro import schemaless_reader, schemaless_writer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.decode import DecodedRecord
from consumer.errors import TranslationError
from consumer.messages import EventPayload, Operation
from consumer.rules import compile_rules
from consumer.schemas import SchemaCatalog
from kafka_klaviyo_dev.emulator.validation import SpecValidators
from kafka_klaviyo_dev.handwritten import OrderTranslator
from tests.unit.test_golden_guide import spec_issues, spec_validators  # noqa: F401 - fixture

CATALOG = SchemaCatalog.load()
COMPILED = compile_rules(catalog=CATALOG)
EVENTS = sorted(CATALOG.event_names)
PROPERTY_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# Realistic values mixed with arbitrary text: valid, fictional, formatted and junk numbers.
PHONES = st.sampled_from(
    ["+1 617 253 1000", "(617) 253-1000", "5551234567", "+44 20 7946 0958", "", "call me", "+1"]
)
EMAILS = st.sampled_from(["ada@example.org", "JOHN.SMITH@test.com", "", " x@y.z "])
TEXT = st.text(max_size=12)


def _text_for(name: str) -> st.SearchStrategy[str]:
    if name == "phone":
        return PHONES | TEXT
    if name == "email":
        return EMAILS | TEXT
    return TEXT


def values(schema: Any, named: dict[str, Any], name: str = "") -> st.SearchStrategy[Any]:
    """Python values (as fastavro writes them) of an Avro schema."""
    if isinstance(schema, str):
        if schema in named:
            return values(named[schema], named, name)
        primitive: dict[str, st.SearchStrategy[Any]] = {
            "null": st.none(),
            "boolean": st.booleans(),
            "int": st.integers(-(2**31), 2**31 - 1),
            "long": st.integers(-(2**40), 2**40),
            "float": st.floats(allow_nan=False, allow_infinity=False, width=32),
            "double": st.floats(allow_nan=False, allow_infinity=False),
            "string": _text_for(name),
            "bytes": st.binary(max_size=8),
        }
        return primitive[schema]
    if isinstance(schema, list):
        return st.one_of(*(values(branch, named, name) for branch in schema))
    logical = schema.get("logicalType")
    if logical == "decimal":
        bound = Decimal(10) ** (schema["precision"] - schema["scale"] - 1)
        return st.decimals(-bound, bound, places=schema["scale"], allow_nan=False)
    if logical == "timestamp-millis":
        return st.datetimes(datetime(1990, 1, 1), datetime(2060, 1, 1), timezones=st.just(UTC)).map(
            lambda moment: moment.replace(microsecond=moment.microsecond // 1000 * 1000)
        )
    kind = schema["type"]
    if kind == "record":
        return st.fixed_dictionaries(
            {f["name"]: values(f["type"], named, f["name"]) for f in schema["fields"]}
        )
    if kind == "array":
        return st.lists(values(schema["items"], named, name), max_size=4)
    if kind == "map":
        return st.dictionaries(TEXT, values(schema["values"], named, name), max_size=3)
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    return values(kind, named, name)


def events(name: str) -> st.SearchStrategy[DecodedRecord]:
    schema = CATALOG.parsed(name)
    named = dict(schema.get("__named_schemas", {}))

    def decoded(data: dict[str, Any]) -> DecodedRecord:
        buffer = BytesIO()
        schemaless_writer(buffer, schema, data)
        buffer.seek(0)
        return DecodedRecord(name, schemaless_reader(buffer, schema, None), None, b"\0" * 8)

    return values(schema, named).map(decoded)


def unique_ids(operations: list[Operation]) -> list[Any]:
    return [
        op.payload.event.get("unique_id") if isinstance(op.payload, EventPayload) else op.dedup_key
        for op in operations
    ]


def secrets_of(event: DecodedRecord) -> list[str]:
    """E-mail addresses and phone numbers in the event (they must not reach error messages)."""
    found: list[str] = []

    def walk(value: Any, key: str = "") -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, k)
        elif isinstance(value, list):
            for v in value:
                walk(v, key)
        elif key in ("email", "phone") and isinstance(value, str) and len(value.strip()) > 3:
            found.append(value)

    walk(event.data)
    return found


@pytest.mark.parametrize("record_name", EVENTS)
def test_outputs_validate_or_fail_typed_and_ids_are_deterministic(
    record_name: str,
    spec_validators: SpecValidators,  # noqa: F811 - the imported fixture
) -> None:
    @PROPERTY_SETTINGS
    @given(event=events(record_name))
    def check(event: DecodedRecord) -> None:
        try:
            operations = COMPILED.translate(event)
        except TranslationError as error:
            assert error.rule and error.field and error.record_name == record_name
            for secret in secrets_of(event):
                assert secret not in str(error)
            with pytest.raises(TranslationError):
                COMPILED.translate(copy.deepcopy(event))
            return
        assert operations, "every default rule produces at least one operation"
        assert spec_issues(spec_validators, operations) == []
        again = COMPILED.translate(copy.deepcopy(event))
        assert again == operations
        assert unique_ids(again) == unique_ids(operations)

    check()


@PROPERTY_SETTINGS
@given(event=events("shop.events.OrderPlaced"))
def test_order_placed_agrees_with_order_translator(event: DecodedRecord) -> None:
    handwritten = OrderTranslator()
    try:
        theirs = handwritten.translate(copy.deepcopy(event))
    except TranslationError as error:
        with pytest.raises(TranslationError) as ours:
            COMPILED.translate(event)
        assert ours.value.field == error.field
        return
    assert COMPILED.translate(event) == theirs
