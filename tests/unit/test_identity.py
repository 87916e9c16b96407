"""Browser identity through the default rules: ``anonymous_id`` and ``kx`` of a Customer.

Event profiles carry both (as ``anonymous_id`` and ``_kx``) beside the e-mail address; the
profile import carries ``_kx`` only (Klaviyo removed ``anonymous_id`` there, RULES.md P10), and
a rule that puts ``anonymous_id`` into a profile import is refused when the rules load. Every
body validates against Klaviyo's OpenAPI spec.
"""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from fastavro import schemaless_reader, schemaless_writer

from consumer.decode import DecodedRecord
from consumer.endpoints import Endpoint
from consumer.errors import TranslationError
from consumer.messages import EventPayload, Operation
from consumer.rules import CompiledRules, RulesError, compile_rules
from consumer.schemas import SchemaCatalog
from kafka_klaviyo_dev.emulator.validation import SpecValidators
from kafka_klaviyo_dev.samples import (
    GUIDE_ANONYMOUS_ID,
    GUIDE_EMAIL,
    GUIDE_KX,
    customer_upserted,
    guide_journey,
    guide_order,
    site_visited,
)
from tests.unit.test_golden_guide import request_body, spec_issues, spec_validators  # noqa: F401

CATALOG = SchemaCatalog.load()
ANON = "anon-4d1f0c"
KX = "Zq3kX9vLm2Pw"


@pytest.fixture(scope="module")
def compiled() -> CompiledRules:
    return compile_rules(catalog=CATALOG)


def decoded(name: str, data: dict[str, Any]) -> DecodedRecord:
    """``data`` written and read back with the current schema (defaults filled in)."""
    schema = CATALOG.parsed(name)
    buf = BytesIO()
    schemaless_writer(buf, schema, data)
    buf.seek(0)
    return DecodedRecord(name, schemaless_reader(buf, schema, None), None, b"\0" * 8)


def browser(**changes: Any) -> dict[str, Any]:
    base = {
        "customer_id": None,
        "email": "ada@example.org",
        "phone": None,
        "first_name": "Ada",
        "last_name": None,
        "address": None,
        "anonymous_id": ANON,
        "kx": KX,
    }
    return base | changes


def visit(customer: dict[str, Any]) -> DecodedRecord:
    return decoded(
        "shop.events.SiteVisited",
        site_visited("v-1", customer, "https://shop.example/", occurred_at=datetime.now(UTC)),
    )


def order(customer: dict[str, Any]) -> DecodedRecord:
    return decoded("shop.events.OrderPlaced", guide_order() | {"customer": customer})


def profile_import(customer: dict[str, Any]) -> DecodedRecord:
    return decoded("shop.events.CustomerUpserted", customer_upserted("cu-1", customer))


def profile_of(op: Operation) -> dict[str, Any]:
    assert isinstance(op.payload, EventPayload)
    return op.payload.profile


def test_event_profiles_carry_anonymous_id_and_kx_beside_the_email(
    compiled: CompiledRules,
) -> None:
    [event] = compiled.translate(visit(browser()))
    assert profile_of(event) == {
        "email": "ada@example.org",
        "anonymous_id": ANON,
        "_kx": KX,
        "first_name": "Ada",
    }
    # The e-mail address still names the profile: dedup and state keys do not change.
    assert event.dedup_key is not None and event.dedup_key[0] == "email:ada@example.org"
    operations = compiled.translate(order(browser()))
    assert len(operations) == 3  # Placed Order + two Ordered Product
    for op in operations:
        assert (profile_of(op)["anonymous_id"], profile_of(op)["_kx"]) == (ANON, KX)


def test_without_them_the_event_profile_is_what_it_was(compiled: CompiledRules) -> None:
    [event] = compiled.translate(visit(browser(anonymous_id=None, kx="")))
    assert profile_of(event) == {"email": "ada@example.org", "first_name": "Ada"}


def test_a_visitor_known_only_by_the_browser_is_an_event_profile(compiled: CompiledRules) -> None:
    [by_anon] = compiled.translate(visit(browser(email=None, kx=None)))
    assert profile_of(by_anon) == {"anonymous_id": ANON, "first_name": "Ada"}
    assert by_anon.dedup_key is not None and by_anon.dedup_key[0] == f"anonymous_id:{ANON}"
    [by_kx] = compiled.translate(visit(browser(email=None, anonymous_id=None)))
    assert profile_of(by_kx) == {"_kx": KX, "first_name": "Ada"}
    with pytest.raises(TranslationError, match="_kx"):
        compiled.translate(visit(browser(email=None, anonymous_id=None, kx=None)))


def test_the_profile_import_carries_kx_and_never_anonymous_id(compiled: CompiledRules) -> None:
    [op] = compiled.translate(profile_import(browser(customer_id="c-9")))
    assert op.endpoint is Endpoint.PROFILES
    assert isinstance(op.payload, dict)
    attributes = op.payload["attributes"]
    assert attributes["_kx"] == KX and attributes["email"] == "ada@example.org"
    assert "anonymous_id" not in attributes
    # An anonymous_id alone does not identify a profile import: nothing of it is sent.
    with pytest.raises(TranslationError):
        compiled.translate(profile_import(browser(email=None, kx=None)))


def test_bodies_with_browser_identity_validate_against_the_spec(
    compiled: CompiledRules,
    spec_validators: SpecValidators,  # noqa: F811 - the fixture
) -> None:
    events = [
        *compiled.translate(visit(browser())),
        *compiled.translate(visit(browser(email=None, kx=None))),
        *compiled.translate(order(browser(customer_id="c-9"))),
    ]
    imports = compiled.translate(profile_import(browser(customer_id="c-9")))
    assert spec_issues(spec_validators, [*events, *imports]) == []
    body = request_body(imports)
    [profile] = body["data"]["attributes"]["profiles"]["data"]
    assert profile["attributes"]["_kx"] == KX and "anonymous_id" not in profile["attributes"]


def test_the_guides_browsing_carries_his_browser_and_his_profile_the_kx(
    compiled: CompiledRules,
) -> None:
    by_name: dict[str, list[Operation]] = {}
    for name, record in guide_journey():
        by_name.setdefault(name.rsplit(".", 1)[1], []).extend(
            compiled.translate(decoded(name, record))
        )
    for name in ("SiteVisited", "ProductViewed"):
        [event] = by_name[name]
        profile = profile_of(event)
        assert (profile["email"], profile["anonymous_id"], profile["_kx"]) == (
            GUIDE_EMAIL,
            GUIDE_ANONYMOUS_ID,
            GUIDE_KX,
        )
    [imported] = by_name["CustomerUpserted"]
    assert isinstance(imported.payload, dict)
    assert imported.payload["attributes"]["_kx"] == GUIDE_KX
    assert "anonymous_id" not in imported.payload["attributes"]


def _rule_file(tmp_path: Path, body: str) -> Path:
    (tmp_path / "mine.yaml").write_text(textwrap.dedent(body).lstrip(), encoding="utf-8")
    return tmp_path


def test_anonymous_id_in_a_profile_import_rule_is_refused_at_load(tmp_path: Path) -> None:
    rules = _rule_file(
        tmp_path,
        """
        version: 1
        rules:
          - name: customer-profile
            record: shop.events.CustomerUpserted
            profile_upsert:
              email: customer.email
              anonymous_id?: customer.anonymous_id
        """,
    )
    with pytest.raises(RulesError) as info:
        compile_rules([rules], catalog=CATALOG)
    [problem] = [str(p) for p in info.value.problems]
    assert "profile_upsert.anonymous_id" in problem and "2026-01-15" in problem


def test_kx_alone_identifies_an_event_rule_at_load(tmp_path: Path) -> None:
    rules = _rule_file(
        tmp_path,
        """
        version: 1
        rules:
          - name: tracked-visit
            record: shop.events.SiteVisited
            event:
              metric: Tracked Visit
              profile:
                _kx: customer.kx
              unique_id: event_id
        """,
    )
    compiled = compile_rules([rules], catalog=CATALOG, include_defaults=False)
    [event] = compiled.translate(visit(browser()))
    assert profile_of(event) == {"_kx": KX}
