"""Configuration: precedence, unknown keys and one-line errors naming the setting."""

from pathlib import Path

import pytest

from consumer.errors import ConfigError
from consumer.settings import load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith(("KAFKA_", "KLAVIYO_", "SCHEMA_REGISTRY")):
            monkeypatch.delenv(name)


def test_precedence_conventional_over_prefixed_over_file(tmp_path: Path, monkeypatch) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("kafka:\n  bootstrap_servers: file:1\n  group_id: from-file\n")
    monkeypatch.setenv("KAFKA_KLAVIYO_KAFKA__GROUP_ID", "from-env")
    monkeypatch.setenv("KAFKA_KLAVIYO_KAFKA__BOOTSTRAP_SERVERS", "prefixed:1")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "conventional:1")
    settings = load_settings(config)
    assert settings.kafka.group_id == "from-env"
    assert settings.kafka.bootstrap_servers == "conventional:1"


def test_unknown_key_names_the_setting(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("kafka:\n  group_idd: x\n")
    with pytest.raises(ConfigError, match=r"^kafka\.group_idd: unknown setting$"):
        load_settings(config)


def test_bad_revision_names_the_setting(monkeypatch) -> None:
    monkeypatch.setenv("KLAVIYO_REVISION", "latest")
    with pytest.raises(ConfigError, match=r"^klaviyo\.revision: "):
        load_settings()


def test_api_key_is_secret_and_never_in_the_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("KLAVIYO_API_KEY", "pk_very_secret")
    settings = load_settings()
    assert "pk_very_secret" not in repr(settings)
    assert settings.klaviyo.resolved_api_key().get_secret_value() == "pk_very_secret"
    config = tmp_path / "c.yaml"
    config.write_text("klaviyo:\n  api_key: pk_in_file\n")
    with pytest.raises(ConfigError, match=r"^klaviyo\.api_key: secrets are not read"):
        load_settings(config)


def test_missing_api_key_names_both_sources() -> None:
    with pytest.raises(ConfigError, match=r"KLAVIYO_API_KEY or klaviyo\.api_key_file"):
        load_settings().klaviyo.resolved_api_key()


def test_api_key_file(tmp_path: Path, monkeypatch) -> None:
    secret = tmp_path / "key"
    secret.write_text("pk_from_file\n")
    monkeypatch.setenv("KAFKA_KLAVIYO_KLAVIYO__API_KEY_FILE", str(secret))
    assert load_settings().klaviyo.resolved_api_key().get_secret_value() == "pk_from_file"


def test_invalid_yaml_reports_the_line(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("kafka:\n  topics: [a\n")
    with pytest.raises(ConfigError, match=r"not valid YAML \(line \d+"):
        load_settings(config)


def test_topics_from_a_comma_separated_variable(monkeypatch) -> None:
    monkeypatch.setenv("KAFKA_KLAVIYO_KAFKA__TOPICS", "orders, carts")
    assert load_settings().kafka.topics == ("orders", "carts")


def test_routing_to_an_unknown_account_names_it(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "accounts:\n  brand-a: {api_key_env: KEY_A}\n"
        "routing:\n  field: store_id\n  accounts: {store-1: brand-a, store-2: brand-b}\n"
    )
    expected = r"^routing\.accounts\.store-2: unknown account 'brand-b'"
    with pytest.raises(ConfigError, match=expected):
        load_settings(config)


def test_account_key_from_its_variable(tmp_path: Path, monkeypatch) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "accounts:\n  brand-a: {api_key_env: KEY_A}\nrouting:\n  accounts: {store-1: brand-a}\n"
    )
    settings = load_settings(config)
    with pytest.raises(ConfigError, match=r"^accounts\.brand-a\.api_key_env: KEY_A is not set$"):
        settings.accounts["brand-a"].resolved_api_key("brand-a")
    monkeypatch.setenv("KEY_A", "pk_a")
    assert settings.accounts["brand-a"].resolved_api_key("brand-a").get_secret_value() == "pk_a"
