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


def test_rules_section_and_its_variables(tmp_path: Path, monkeypatch) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("rules:\n  dirs: [/etc/rules]\n  metric_names: {Placed Order: Bought}\n")
    settings = load_settings(config)
    assert settings.rules.dirs == (Path("/etc/rules"),)
    assert settings.rules.metric_names == {"Placed Order": "Bought"}
    assert settings.deprecations == ()
    monkeypatch.setenv("KAFKA_KLAVIYO_RULES__DIRS", "/a, /b")
    monkeypatch.setenv("KAFKA_KLAVIYO_RULES__INCLUDE_DEFAULTS", "false")
    settings = load_settings(config)
    assert settings.rules.dirs == (Path("/a"), Path("/b"))
    assert settings.rules.include_defaults is False
    assert settings.deprecations == ()


def test_deprecated_registry_section_maps_onto_rules(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "registry:\n"
        "  rules_dirs: [/etc/rules]\n"
        "  include_defaults: false\n"
        "  metric_names: {Placed Order: Bought}\n"
        "  default_phone_region: GB\n"
    )
    settings = load_settings(config)
    assert settings.rules.dirs == (Path("/etc/rules"),)
    assert settings.rules.include_defaults is False
    assert settings.rules.metric_names == {"Placed Order": "Bought"}
    assert settings.rules.default_phone_region == "GB"
    assert settings.deprecations == (
        "registry.rules_dirs in the config file is deprecated: use rules.dirs",
        "registry.include_defaults in the config file is deprecated: use rules.include_defaults",
        "registry.metric_names in the config file is deprecated: use rules.metric_names",
        "registry.default_phone_region in the config file is deprecated:"
        " use rules.default_phone_region",
    )
    assert not hasattr(settings, "registry")


def test_deprecated_section_merges_with_other_rules_settings(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("rules:\n  default_phone_region: DE\nregistry:\n  rules_dirs: /a,/b\n")
    settings = load_settings(config)
    assert settings.rules.dirs == (Path("/a"), Path("/b"))
    assert settings.rules.default_phone_region == "DE"
    assert settings.deprecations == (
        "registry.rules_dirs in the config file is deprecated: use rules.dirs",
    )


def test_deprecated_variables_map_onto_rules(monkeypatch) -> None:
    monkeypatch.setenv("KAFKA_KLAVIYO_REGISTRY__RULES_DIRS", "/a,/b")
    monkeypatch.setenv("KAFKA_KLAVIYO_REGISTRY__METRIC_NAMES", '{"Placed Order": "Bought"}')
    settings = load_settings()
    assert settings.rules.dirs == (Path("/a"), Path("/b"))
    assert settings.rules.metric_names == {"Placed Order": "Bought"}
    assert settings.deprecations == (
        "KAFKA_KLAVIYO_REGISTRY__METRIC_NAMES is deprecated: use KAFKA_KLAVIYO_RULES__METRIC_NAMES",
        "KAFKA_KLAVIYO_REGISTRY__RULES_DIRS is deprecated: use KAFKA_KLAVIYO_RULES__DIRS",
    )


def test_deprecated_variable_overrides_the_file_like_its_new_name(tmp_path: Path, monkeypatch):
    config = tmp_path / "c.yaml"
    config.write_text("registry:\n  rules_dirs: [/from-file]\n")
    monkeypatch.setenv("KAFKA_KLAVIYO_REGISTRY__RULES_DIRS", "/from-env")
    settings = load_settings(config)
    assert settings.rules.dirs == (Path("/from-env"),)
    assert len(settings.deprecations) == 2


@pytest.mark.parametrize(
    ("file", "variables", "expected"),
    [
        (
            "rules:\n  dirs: [/a]\nregistry:\n  rules_dirs: [/b]\n",
            {},
            "rules.dirs: set both as rules.dirs and as the deprecated registry.rules_dirs;"
            " keep only rules.dirs",
        ),
        (
            "",
            {"KAFKA_KLAVIYO_RULES__DIRS": "/a", "KAFKA_KLAVIYO_REGISTRY__RULES_DIRS": "/b"},
            "rules.dirs: set both as KAFKA_KLAVIYO_RULES__DIRS and as the deprecated"
            " KAFKA_KLAVIYO_REGISTRY__RULES_DIRS; keep only KAFKA_KLAVIYO_RULES__DIRS",
        ),
        (
            "rules:\n  include_defaults: false\n",
            {"KAFKA_KLAVIYO_REGISTRY__INCLUDE_DEFAULTS": "true"},
            "rules.include_defaults: set both as rules.include_defaults and as the deprecated"
            " KAFKA_KLAVIYO_REGISTRY__INCLUDE_DEFAULTS; keep only rules.include_defaults",
        ),
        (
            "registry:\n  metric_names: {A: B}\n",
            {"KAFKA_KLAVIYO_RULES__METRIC_NAMES": '{"A": "C"}'},
            "rules.metric_names: set both as KAFKA_KLAVIYO_RULES__METRIC_NAMES and as the"
            " deprecated registry.metric_names; keep only KAFKA_KLAVIYO_RULES__METRIC_NAMES",
        ),
    ],
)
def test_old_and_new_name_together_is_an_error_naming_the_setting(
    tmp_path: Path, monkeypatch, file: str, variables: dict[str, str], expected: str
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(file)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    assert str(info.value) == expected


def test_unknown_keys_under_the_old_and_new_names(tmp_path: Path, monkeypatch) -> None:
    config = tmp_path / "c.yaml"
    for text, expected in (
        ("registry:\n  rules_dir: [/a]\n", "registry.rules_dir: unknown setting"),
        ("registry:\n  dirs: [/a]\n", "registry.dirs: unknown setting"),
        ("rules:\n  rules_dirs: [/a]\n", "rules.rules_dirs: unknown setting"),
    ):
        config.write_text(text)
        with pytest.raises(ConfigError, match=rf"^{expected}$"):
            load_settings(config)
    monkeypatch.setenv("KAFKA_KLAVIYO_REGISTRY__RULES", "/a")
    with pytest.raises(ConfigError, match=r"^registry\.rules: unknown setting$"):
        load_settings()


def test_a_bad_value_under_the_old_name_is_named_as_written(tmp_path: Path, monkeypatch) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("registry:\n  default_phone_region: gb\n")
    with pytest.raises(ConfigError, match=r"^registry\.default_phone_region: "):
        load_settings(config)
    monkeypatch.setenv("KAFKA_KLAVIYO_REGISTRY__INCLUDE_DEFAULTS", "sometimes")
    with pytest.raises(ConfigError, match=r"^registry\.include_defaults: "):
        load_settings()


def test_the_old_section_must_be_a_mapping_and_its_json_variable_is_gone(
    tmp_path: Path, monkeypatch
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("registry: [/a]\n")
    with pytest.raises(
        ConfigError, match=r"^registry: must be a mapping \(deprecated: use rules\)$"
    ):
        load_settings(config)
    monkeypatch.setenv("KAFKA_KLAVIYO_REGISTRY", '{"rules_dirs": "/a"}')
    with pytest.raises(ConfigError, match=r"^KAFKA_KLAVIYO_REGISTRY: no longer read"):
        load_settings()


def test_schema_registry_client_gets_a_timeout_and_numbers_as_numbers(
    tmp_path: Path, monkeypatch
) -> None:
    """A frozen registry must not hold the poll loop for ever (the client's default has no
    timeout), and numeric client settings must reach it as numbers (strings make it raise)."""
    from consumer import compose

    seen: list[dict] = []
    monkeypatch.setattr(compose.SchemaRegistryClient, "new_client", lambda conf: seen.append(conf))
    config = tmp_path / "c.yaml"
    config.write_text(
        "schema_registry:\n  url: http://registry.test\n"
        "  properties: {max.retries: '0', basic.auth.credentials.source: USER_INFO}\n"
    )
    compose.schema_registry(load_settings(config))
    [conf] = seen
    assert conf["timeout"] == compose._REGISTRY_TIMEOUT_S
    assert conf["max.retries"] == 0.0 and isinstance(conf["max.retries"], float)
    assert conf["basic.auth.credentials.source"] == "USER_INFO"

    config.write_text(
        "schema_registry:\n  url: http://registry.test\n  properties: {timeout: soon}\n"
    )
    with pytest.raises(ConfigError, match=r"^schema_registry\.properties\.timeout: 'soon'"):
        compose.schema_registry(load_settings(config))
