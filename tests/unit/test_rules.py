"""The translation rules at load time: files, layering, checks and their problems."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from consumer.errors import ConfigError
from consumer.rules import CompiledRules, RulesError, compile_rules
from consumer.rules.expressions import ExprSyntaxError, parse, unparse
from consumer.schemas import SchemaCatalog
from kafka_klaviyo_dev.samples import guide_order
from tests.unit.test_rules_translate import record


@pytest.fixture(scope="module")
def catalog() -> SchemaCatalog:
    return SchemaCatalog.load()


@pytest.fixture(scope="module")
def defaults(catalog: SchemaCatalog) -> CompiledRules:
    return compile_rules(catalog=catalog)


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def problems_of(excinfo: pytest.ExceptionInfo[RulesError]) -> list[str]:
    return [str(problem) for problem in excinfo.value.problems]


# --- defaults ---------------------------------------------------------------------------------


def test_defaults_cover_every_event_record_of_the_schemas(
    defaults: CompiledRules, catalog: SchemaCatalog
) -> None:
    assert defaults.mapped_records == catalog.event_names
    assert len(catalog.event_names) == 12


def test_default_rules_are_package_data(defaults: CompiledRules) -> None:
    assert defaults.files == (
        "default_rules/browsing.yaml",
        "default_rules/catalog.yaml",
        "default_rules/customers.yaml",
        "default_rules/orders.yaml",
    )


def test_version_is_a_short_stable_hash_of_rules_and_settings(catalog: SchemaCatalog) -> None:
    first = compile_rules(catalog=catalog)
    again = compile_rules(catalog=catalog)
    renamed = compile_rules(catalog=catalog, metric_names={"Placed Order": "Order Placed"})
    other_region = compile_rules(catalog=catalog, default_phone_region="GB")
    assert first.version == again.version and len(first.version) == 12
    assert len({first.version, renamed.version, other_region.version}) == 3


def test_rules_error_is_a_config_error() -> None:
    assert issubclass(RulesError, ConfigError)


# --- layering ---------------------------------------------------------------------------------

REPLACE_PLACED = """
    rules:
      - name: placed-order
        record: shop.events.OrderPlaced
        event:
          metric: Order Placed
          profile: {email: customer.email}
          unique_id: order_id
          properties: {Total: money(total)}
"""


def test_operator_rule_with_the_same_record_and_name_replaces_the_default_in_place(
    catalog: SchemaCatalog, tmp_path: Path
) -> None:
    write(tmp_path, "orders.yaml", REPLACE_PLACED)
    compiled = compile_rules([tmp_path], catalog=catalog)
    placed, *ordered = compiled.translate(record(guide_order()))
    assert placed.payload.event["metric"]["data"]["attributes"]["name"] == "Order Placed"
    assert placed.payload.event["properties"] == {"Total": 29.98}
    assert [op.payload.event["unique_id"] for op in ordered] == [
        "1234_WINNIEPOOH",
        "1234_TALEOFTWO",
    ]


def test_operator_rules_are_added_after_the_defaults(
    catalog: SchemaCatalog, tmp_path: Path
) -> None:
    write(
        tmp_path,
        "extra.yaml",
        """
        rules:
          - name: big-order
            record: shop.events.OrderPlaced
            when: total.amount > 20
            event:
              metric: Big Order
              profile: {email: customer.email}
              unique_id: order_id
        """,
    )
    compiled = compile_rules([tmp_path], catalog=catalog)
    names = [
        op.payload.event["metric"]["data"]["attributes"]["name"]
        for op in compiled.translate(record(guide_order()))
    ]
    assert names == ["Placed Order", "Ordered Product", "Ordered Product", "Big Order"]
    small = guide_order()
    small["total"] = {"amount": small["total"]["amount"] / 10, "currency": "USD"}
    assert len(compiled.translate(record(small))) == 3


def test_enabled_false_removes_a_default_rule(catalog: SchemaCatalog, tmp_path: Path) -> None:
    write(
        tmp_path,
        "off.yaml",
        """
        rules:
          - {name: ordered-product, record: shop.events.OrderPlaced, enabled: false}
          - {name: active-on-site, record: shop.events.SiteVisited, enabled: false}
        """,
    )
    compiled = compile_rules([tmp_path], catalog=catalog)
    assert len(compiled.translate(record(guide_order()))) == 1
    assert "shop.events.SiteVisited" not in compiled.mapped_records


def test_disabling_a_rule_that_does_not_exist_is_a_problem(
    catalog: SchemaCatalog, tmp_path: Path
) -> None:
    write(
        tmp_path,
        "off.yaml",
        "rules:\n  - {name: nope, record: shop.events.OrderPlaced, enabled: false}\n",
    )
    with pytest.raises(RulesError) as info:
        compile_rules([tmp_path], catalog=catalog)
    assert "disables no earlier rule" in str(info.value)


def test_later_directories_win_and_duplicates_within_one_layer_are_problems(
    catalog: SchemaCatalog, tmp_path: Path
) -> None:
    write(tmp_path / "a", "orders.yaml", REPLACE_PLACED)
    write(tmp_path / "b", "orders.yaml", REPLACE_PLACED.replace("Order Placed", "Second"))
    compiled = compile_rules([tmp_path / "a", tmp_path / "b"], catalog=catalog)
    first = compiled.translate(record(guide_order()))[0]
    assert first.payload.event["metric"]["data"]["attributes"]["name"] == "Second"
    write(tmp_path / "c", "one.yaml", REPLACE_PLACED)
    write(tmp_path / "c", "two.yaml", REPLACE_PLACED)
    with pytest.raises(RulesError) as info:
        compile_rules([tmp_path / "c"], catalog=catalog)
    assert "is already defined at" in str(info.value) and "one.yaml:2" in str(info.value)


def test_without_defaults_only_the_operator_rules_load(
    catalog: SchemaCatalog, tmp_path: Path
) -> None:
    write(tmp_path, "orders.yaml", REPLACE_PLACED)
    compiled = compile_rules([tmp_path], catalog=catalog, include_defaults=False)
    assert compiled.mapped_records == {"shop.events.OrderPlaced"}


def test_metric_names_rename_metrics_and_unknown_ones_are_problems(catalog: SchemaCatalog) -> None:
    compiled = compile_rules(catalog=catalog, metric_names={"Ordered Product": "Bought Item"})
    ops = compiled.translate(record(guide_order()))
    assert ops[1].payload.event["metric"]["data"]["attributes"]["name"] == "Bought Item"
    assert ops[1].dedup_key == ("email:john.smith@test.com", "Bought Item", "1234_WINNIEPOOH")
    with pytest.raises(RulesError) as info:
        compile_rules(catalog=catalog, metric_names={"Placed Ordr": "X"})
    assert "'Placed Ordr' is not the metric of any rule" in str(info.value)


def test_bad_phone_region_is_a_problem(catalog: SchemaCatalog) -> None:
    with pytest.raises(RulesError, match="default_phone_region 'XX'"):
        compile_rules(catalog=catalog, default_phone_region="XX")


def test_missing_rule_directory_is_a_problem(catalog: SchemaCatalog, tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="rule directory does not exist"):
        compile_rules([tmp_path / "missing"], catalog=catalog)


# --- checks: each problem names file, line, rule and field ----------------------------------


def check(catalog: SchemaCatalog, tmp_path: Path, text: str) -> list[str]:
    write(tmp_path, "rules.yaml", text)
    with pytest.raises(RulesError) as info:
        compile_rules([tmp_path], catalog=catalog, include_defaults=False)
    return problems_of(info)


def test_path_missing_from_the_avro_schema(catalog: SchemaCatalog, tmp_path: Path) -> None:
    [problem] = check(
        catalog,
        tmp_path,
        """
        rules:
          - name: placed
            record: shop.events.OrderPlaced
            event:
              metric: Placed Order
              profile:
                email: customer.emial
              unique_id: order_id
        """,
    )
    assert problem.startswith(
        f"{tmp_path / 'rules.yaml'}:7: rule 'placed': field 'event.profile.email':"
    )
    assert "shop.events.Customer has no field 'emial' (did you mean 'email'?)" in problem


def test_wrong_types_for_value_time_and_identifiers(catalog: SchemaCatalog, tmp_path: Path) -> None:
    found = check(
        catalog,
        tmp_path,
        """
        rules:
          - name: placed
            record: shop.events.OrderPlaced
            event:
              metric: Placed Order
              profile:
                email: customer.email
                first_name: line_items
              unique_id: order_id
              time: total.amount
              value: total
              value_currency: total.amount
        """,
    )
    text = "\n".join(found)
    assert "field 'event.profile.first_name': 'line_items' must be text" in text
    assert "field 'event.time': 'total.amount' must be a timestamp (or ISO 8601 text)" in text
    assert "field 'event.value': 'total' must be a number, not record shop.events.Money;" in text
    assert "use money(...)" in text
    assert "field 'event.value_currency': 'total.amount' must be text, not decimal" in text


def test_outputs_that_cannot_satisfy_klaviyo_are_problems(
    catalog: SchemaCatalog, tmp_path: Path
) -> None:
    found = check(
        catalog,
        tmp_path,
        """
        rules:
          - name: no-identifier
            record: shop.events.OrderPlaced
            event:
              metric: Placed Order
              profile: {first_name: customer.first_name}
              unique_id: order_id
          - name: no-unique-id
            record: shop.events.OrderPlaced
            event:
              metric: Placed Order
              profile: {email: customer.email}
          - name: item-without-title
            record: shop.events.ProductUpserted
            catalog_item:
              external_id: product_id
              description: description
              url: url
          - name: email-without-address
            record: shop.events.SubscriptionChanged
            subscription:
              action: action
              channel: channel
              list_id: list_id
              phone_number: e164(phone)
        """,
    )
    text = "\n".join(found)
    assert "rule 'no-identifier': field 'event.profile': a profile needs an identifier" in text
    assert "rule 'no-unique-id': field 'event.unique_id': missing (Klaviyo deduplicates" in text
    assert "rule 'item-without-title': field 'catalog_item.title': missing" in text
    assert "rule 'email-without-address': field 'subscription.email': missing" in text


def test_unknown_keys_everywhere_are_problems(catalog: SchemaCatalog, tmp_path: Path) -> None:
    found = check(
        catalog,
        tmp_path,
        """
        version: 1
        colour: blue
        rules:
          - name: placed
            record: shop.events.OrderPlaced
            wehn: true
            event:
              metric: Placed Order
              profile: {email: customer.email, firstname: customer.first_name}
              unique_id: order_id
              valeu: money(total)
        """,
    )
    text = "\n".join(found)
    assert ":2: unknown key 'colour'" in text
    assert "field 'wehn': unknown key 'wehn' (did you mean 'when'?)" in text
    assert "unknown profile attribute 'firstname' (did you mean 'first_name'?)" in text
    assert "field 'event.valeu': unknown key 'valeu' (did you mean 'value'?)" in text


def test_expression_problems(catalog: SchemaCatalog, tmp_path: Path) -> None:
    found = check(
        catalog,
        tmp_path,
        """
        rules:
          - name: placed
            record: shop.events.OrderPlaced
            event:
              metric: Placed Order
              profile: {email: customer.email}
              unique_id: order_id
              properties:
                A: money(
                B: sumo(line_items[].quantity)
                C: lower(total)
                D: f'{line_items}'
                E: order_id < total.amount
          - name: subscription
            record: shop.events.SubscriptionChanged
            when: channel == 'EMAL'
            subscription: {action: action, channel: channel, list_id: list_id, email: email,
                           phone_number: phone}
        """,
    )
    text = "\n".join(found)
    assert "field 'event.properties.A': expression 'money(' does not parse" in text
    assert "unknown function sumo() (did you mean 'sum'?)" in text
    assert "lower() takes text, not record shop.events.Money" in text
    assert "template placeholder {line_items} is array of record shop.events.LineItem" in text
    assert "cannot order string against decimal" in text
    assert "'EMAL' is not a symbol of shop.events.SubscriptionChannel (EMAIL, SMS)" in text


def test_unknown_record_and_yaml_problems(catalog: SchemaCatalog, tmp_path: Path) -> None:
    write(
        tmp_path,
        "a.yaml",
        "rules:\n  - name: x\n    record: shop.events.OrderPlacd\n    event: {}\n",
    )
    write(tmp_path, "b.yaml", "rules:\n  - name: x\n    name: y\n")
    write(tmp_path, "c.yaml", "rules: [\n")
    write(tmp_path, "d.yaml", "just text\n")
    with pytest.raises(RulesError) as info:
        compile_rules([tmp_path], catalog=catalog, include_defaults=False)
    text = str(info.value)
    assert "a.yaml:3: rule 'x': field 'record': record 'shop.events.OrderPlacd' is not in" in text
    assert "(did you mean 'shop.events.OrderPlaced'?)" in text
    assert "b.yaml:3: key 'name' appears twice" in text
    assert "c.yaml:2: not valid YAML" in text
    assert "d.yaml:1: the top level must be a mapping" in text
    assert text.startswith("translation rules: 4 problems")


def test_every_problem_is_reported_at_once(catalog: SchemaCatalog, tmp_path: Path) -> None:
    rules = "\n".join(
        f"""
          - name: r{n}
            record: shop.events.OrderPlaced
            event: {{metric: M{n}, profile: {{email: customer.nope{n}}}, unique_id: order_id}}
        """
        for n in range(5)
    )
    found = check(catalog, tmp_path, "rules:" + rules)
    assert len(found) == 5 and all("has no field 'nope" in p for p in found)


def test_static_values_and_directives_are_checked(catalog: SchemaCatalog, tmp_path: Path) -> None:
    found = check(
        catalog,
        tmp_path,
        """
        rules:
          - name: placed
            record: shop.events.OrderPlaced
            event:
              metric: Placed Order
              profile: {email: customer.email}
              unique_id: order_id
              properties:
                A: [1, 2]
                B: {$const: {x: 1}, y: 2}
                C: {$fro: {line: line_items}}
                D: {$for: {line: order_id}, $emit: line}
                E: {$for: {order_id: line_items}, $emit: order_id}
        """,
    )
    text = "\n".join(found)
    assert "a YAML list is not a value here" in text
    assert "$const stands alone in its mapping" in text
    assert "unknown directive '$fro'" in text
    assert "must be a list to iterate, not string" in text
    assert "variable 'order_id' would hide a field" in text


# --- expressions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "customer.email",
        "line_items[].sku",
        "line_items[].(line_id or sku)",
        "unique(flatten(line_items[].categories))",
        "(refund_total ?? total).currency",
        "f'{cart_id}_{unix(occurred_at)}'",
        "channel == 'SMS' and not published",
        "a ?? b ?? 'x'",
        "x in ['a', 'b']",
        "x not in ['a']",
        "if(a > 1, 'big', 'small')",
        "[1, 2.5, true, null]",
        "not (a or b)",
        "f'{{literal}} {a}'",
    ],
)
def test_expressions_round_trip(text: str) -> None:
    assert unparse(parse(text)) == text
    assert parse(unparse(parse(text))) == parse(text)


def test_precedence_or_and_not_comparison_coalesce() -> None:
    node = parse("a or b and not c == d ?? e")
    assert unparse(node) == "a or b and not c == d ?? e"
    assert type(node).__name__ == "BoolOp"


@pytest.mark.parametrize(
    ("text", "column"),
    [("a..b", 3), ("money(", 7), ("'open", 1), ("a b", 3), ("f'{a'", 3), ("x +", 3)],
)
def test_syntax_errors_give_a_column(text: str, column: int) -> None:
    with pytest.raises(ExprSyntaxError) as info:
        parse(text)
    assert info.value.column == column


def test_rules_from_settings_reads_the_settings_section(
    catalog: SchemaCatalog, tmp_path: Path
) -> None:
    from dataclasses import dataclass, field

    from consumer.rules import rules_from_settings

    @dataclass(frozen=True)
    class Section:  # the shape of the settings' `rules` section
        dirs: tuple[Path, ...] = ()
        include_defaults: bool = True
        metric_names: dict[str, str] = field(default_factory=dict)
        default_phone_region: str = "US"

    write(tmp_path, "orders.yaml", REPLACE_PLACED)
    configured = rules_from_settings(
        Section(dirs=(tmp_path,), metric_names={"Order Placed": "Placed"}),
        catalog=catalog,
    )
    placed = configured.translate(record(guide_order()))[0]
    assert placed.payload.event["metric"]["data"]["attributes"]["name"] == "Placed"
    assert (
        rules_from_settings(None, catalog=catalog).version == compile_rules(catalog=catalog).version
    )
