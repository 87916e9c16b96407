"""``rules check`` and ``translate`` (JSON input; Kafka input is exercised end to end).

Also the deprecated ``registry check`` alias and the deprecated settings names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from consumer.rules.cli import (
    DEPRECATED_CHECK,
    deprecated_registry_group,
    rules_group,
    translate_command,
)

CLI = click.Group(
    commands={
        "rules": rules_group,
        "registry": deprecated_registry_group,
        "translate": translate_command,
    }
)

GUIDE_EVENT: dict[str, Any] = {
    "record": "shop.events.OrderPlaced",
    "value": {
        "event_id": "guide-order-1234-placed",
        "store_id": "default",
        "occurred_at": "2013-12-17T17:47:03Z",
        "order_id": "1234",
        "customer": {
            "email": "john.smith@test.com",
            "phone": {"string": "5551234567"},
            "first_name": "John",
            "last_name": "Smith",
            "address": {"shop.events.Address": {"city": "Boston", "zip": "02110"}},
        },
        "line_items": [
            {
                "product_id": "1111",
                "sku": "WINNIEPOOH",
                "name": "Winnie the Pooh",
                "quantity": 1,
                "unit_price": {"amount": "9.99", "currency": "USD"},
                "row_total": {"amount": 9.99, "currency": "USD"},
                "categories": ["Fiction", "Children"],
                "brand": "Kids Books",
            }
        ],
        "subtotal": {"amount": "9.99", "currency": "USD"},
        "total": {"amount": "9.99", "currency": "USD"},
    },
}


def run(*args: str, input: str | None = None) -> Any:
    return CliRunner().invoke(CLI, list(args), input=input, catch_exceptions=False)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("KAFKA_", "KLAVIYO_", "SCHEMA_REGISTRY")):
            monkeypatch.delenv(name)


@pytest.fixture()
def event_file(tmp_path: Path) -> Path:
    path = tmp_path / "event.json"
    path.write_text(json.dumps(GUIDE_EVENT), encoding="utf-8")
    return path


def test_check_prints_ok_with_counts() -> None:
    result = run("rules", "check")
    assert result.exit_code == 0
    assert result.output.startswith("OK: 13 rules (1 catalog_delete, 1 catalog_item, 9 event,")
    assert "shop.events.OrderPlaced: placed-order, ordered-product" in result.output


def test_check_lists_every_problem_and_exits_2(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "rules:\n"
        "  - name: placed-order\n"
        "    record: shop.events.OrderPlaced\n"
        "    event: {metric: X, profile: {email: customer.mail}, unique_id: order_id, vlue: 1}\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(CLI, ["rules", "check", "--rules", str(tmp_path)])
    assert result.exit_code == 2
    assert "translation rules: 2 problems" in result.output
    assert "bad.yaml:4: rule 'placed-order': field 'event.profile.email'" in result.output
    assert "field 'event.vlue': unknown key 'vlue'" in result.output


def test_translate_prints_each_operation_in_its_bulk_body(event_file: Path) -> None:
    result = run("translate", str(event_file))
    assert result.exit_code == 0, result.output
    placed, ordered = json.loads(result.output)
    assert placed["rule"] == "placed-order" and ordered["rule"] == "ordered-product"
    assert placed["path"] == "/api/event-bulk-create-jobs"
    assert placed["dedup_key"] == ["email:john.smith@test.com", "Placed Order", "1234"]
    group = placed["body"]["data"]["attributes"]["events-bulk-create"]["data"][0]["attributes"]
    assert group["profile"]["data"]["attributes"]["location"] == {"city": "Boston", "zip": "02110"}
    assert group["events"]["data"][0]["attributes"]["value"] == 9.99
    assert group["events"]["data"][0]["attributes"]["time"] == "2013-12-17T17:47:03+00:00"


def test_translate_reads_stdin_and_renames_metrics() -> None:
    result = run(
        "translate",
        "-",
        "--metric-name",
        "Placed Order=Order Placed",
        input=json.dumps(GUIDE_EVENT),
    )
    assert result.exit_code == 0, result.output
    placed = json.loads(result.output)[0]
    assert placed["dedup_key"][1] == "Order Placed"


def test_translate_explain_names_rule_and_source(event_file: Path) -> None:
    result = run("translate", "--explain", str(event_file))
    assert result.exit_code == 0, result.output
    out = result.output
    assert "[1/2] EVENTS /api/event-bulk-create-jobs  rule 'placed-order'" in out
    assert "default_rules/orders.yaml:" in out
    assert "event.properties.Items[0].SKU" in out and "<- line.sku" in out
    assert "event.unique_id" in out and "<- f'{order_id}_{line_key}'" in out
    assert "one per: line in line_items, line_key in number_repeats(" in out
    assert "event.metric.data.type" in out and "(fixed by Klaviyo's API)" in out


def test_translate_other_endpoints(tmp_path: Path) -> None:
    event = {
        "record": "shop.events.SubscriptionChanged",
        "value": {
            "event_id": "e",
            "store_id": "s",
            "occurred_at": 1700000000000,
            "email": "ada@example.org",
            "channel": "EMAIL",
            "action": "SUBSCRIBE",
            "list_id": "LIST1",
            "consented_at": 1700000000000,
        },
    }
    path = tmp_path / "sub.json"
    path.write_text(json.dumps(event), encoding="utf-8")
    [entry] = json.loads(run("translate", str(path)).output)
    assert entry["endpoint"] == "SUBSCRIBE" and entry["group"] == "LIST1"
    assert entry["body"]["data"]["relationships"]["list"]["data"]["id"] == "LIST1"
    assert entry["body"]["data"]["attributes"]["profiles"]["data"][0]["attributes"] == {
        "email": "ada@example.org",
        # Live consent leaves consented_at out: Klaviyo refuses it without historical_import.
        "subscriptions": {"email": {"marketing": {"consent": "SUBSCRIBED"}}},
    }


def test_bad_data_exits_1_without_the_value(tmp_path: Path) -> None:
    event = json.loads(json.dumps(GUIDE_EVENT))
    event["value"]["customer"] = {"phone": "not a phone"}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(event), encoding="utf-8")
    result = CliRunner().invoke(CLI, ["translate", str(path)])
    assert result.exit_code == 1
    assert "TranslationError" in result.output and "profile.phone_number" in result.output
    assert "not a phone" not in result.output


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("{", "is not JSON"),
        ('{"value": {}}', 'expected {"record"'),
        ('{"record": "shop.events.Nope", "value": {}}', "is not in the schema catalog"),
        ('{"record": "shop.events.ProductDeleted", "value": {}}', "value.event_id: required"),
        (
            '{"record": "shop.events.ProductDeleted", "value": {"event_id": "e", "store_id": "s",'
            ' "occurred_at": "yesterday", "product_id": "p"}}',
            "is not an ISO 8601 timestamp",
        ),
    ],
)
def test_bad_input_exits_2(tmp_path: Path, document: str, message: str) -> None:
    path = tmp_path / "in.json"
    path.write_text(document, encoding="utf-8")
    result = CliRunner().invoke(CLI, ["translate", str(path)])
    assert result.exit_code == 2 and message in result.output


def test_usage_errors() -> None:
    assert CliRunner().invoke(CLI, ["translate"]).exit_code == 2
    assert CliRunner().invoke(CLI, ["translate", "--topic", "t"]).exit_code == 2
    assert CliRunner().invoke(CLI, ["translate", "x.json", "--topic", "t"]).exit_code == 2


def test_every_command_and_option_has_help() -> None:
    for args in (
        ["rules", "--help"],
        ["rules", "check", "--help"],
        ["registry", "--help"],
        ["registry", "check", "--help"],
        ["translate", "--help"],
    ):
        result = run(*args)
        assert result.exit_code == 0
    for command in (
        rules_group,
        rules_group.commands["check"],
        deprecated_registry_group,
        deprecated_registry_group.commands["check"],
        translate_command,
    ):
        assert command.help
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"{command.name} {param.name} has no help"


def test_config_file_without_a_rules_section_uses_the_defaults(
    event_file: Path, tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("kafka:\n  group_id: inspect\n", encoding="utf-8")
    result = run("translate", "--config", str(config), str(event_file))
    assert result.exit_code == 0, result.output
    assert [entry["rule"] for entry in json.loads(result.output)] == [
        "placed-order",
        "ordered-product",
    ]


# --- deprecated names -------------------------------------------------------------------------


def test_registry_check_is_a_deprecated_alias_of_rules_check(tmp_path: Path) -> None:
    rules = CliRunner().invoke(CLI, ["rules", "check", "--metric-name", "Placed Order=Bought"])
    alias = CliRunner().invoke(CLI, ["registry", "check", "--metric-name", "Placed Order=Bought"])
    assert alias.exit_code == rules.exit_code == 0
    assert alias.stderr == DEPRECATED_CHECK + "\n"
    assert "deprecated" in DEPRECATED_CHECK and "kafka-klaviyo rules check" in DEPRECATED_CHECK
    assert alias.stdout == rules.stdout
    assert rules.stderr == ""
    # Problems too: the same report and exit code, after the one deprecation line.
    (tmp_path / "bad.yaml").write_text("rules: [\n", encoding="utf-8")
    rules = CliRunner().invoke(CLI, ["rules", "check", "--rules", str(tmp_path)])
    alias = CliRunner().invoke(CLI, ["registry", "check", "--rules", str(tmp_path)])
    assert alias.exit_code == rules.exit_code == 2
    assert alias.stderr == DEPRECATED_CHECK + "\n" + rules.stderr
    assert "translation rules: 1 problem" in rules.stderr


def test_the_alias_is_hidden() -> None:
    from consumer.cli import cli

    listing = CliRunner().invoke(cli, ["--help"]).output
    assert "  rules " in listing and "  translate " in listing
    assert "registry" not in listing
    assert CliRunner().invoke(cli, ["registry", "check", "--help"]).exit_code == 0


def test_deprecated_settings_names_are_noted_on_stderr(tmp_path: Path, event_file: Path) -> None:
    rule_dir = tmp_path / "rules"
    rule_dir.mkdir()
    (rule_dir / "extra.yaml").write_text(
        "rules:\n"
        "  - name: active-on-site\n"
        "    record: shop.events.SiteVisited\n"
        "    enabled: false\n",
        encoding="utf-8",
    )
    config = tmp_path / "config.yaml"
    config.write_text(
        f"registry:\n  rules_dirs: [{rule_dir}]\n  metric_names: {{Placed Order: Order Placed}}\n",
        encoding="utf-8",
    )
    result = run("rules", "check", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "kafka-klaviyo: registry.rules_dirs in the config file is deprecated: use rules.dirs",
        "kafka-klaviyo: registry.metric_names in the config file is deprecated:"
        " use rules.metric_names",
    ]
    # The old section still takes effect: the operator's file disables a default rule.
    assert "shop.events.SiteVisited" not in result.stdout
    assert "from 5 files" in result.stdout
    translated = run("translate", "--config", str(config), str(event_file))
    assert translated.exit_code == 0, translated.output
    assert json.loads(translated.stdout)[0]["dedup_key"][1] == "Order Placed"
    assert len(translated.stderr.splitlines()) == 2


def test_deprecated_variable_is_noted_on_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("kafka:\n  group_id: inspect\n", encoding="utf-8")
    monkeypatch.setenv("KAFKA_KLAVIYO_REGISTRY__DEFAULT_PHONE_REGION", "GB")
    result = run("rules", "check", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert result.stderr == (
        "kafka-klaviyo: KAFKA_KLAVIYO_REGISTRY__DEFAULT_PHONE_REGION is deprecated:"
        " use KAFKA_KLAVIYO_RULES__DEFAULT_PHONE_REGION\n"
    )
    assert result.stdout.startswith("OK: ")


def test_old_and_new_name_together_is_a_configuration_error(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("rules:\n  dirs: [/a]\nregistry:\n  rules_dirs: [/b]\n", encoding="utf-8")
    for command in (["rules", "check"], ["registry", "check"]):
        result = CliRunner().invoke(CLI, [*command, "--config", str(config)])
        assert result.exit_code == 2
        assert result.stderr.splitlines()[-1] == (
            "kafka-klaviyo: configuration error: rules.dirs: set both as rules.dirs and as the"
            " deprecated registry.rules_dirs; keep only rules.dirs"
        )
