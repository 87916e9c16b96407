"""Shared pytest set-up: the real Kafka broker, Klaviyo emulator and Schema Registry fixtures."""

pytest_plugins = ["tests.fixtures_kafka", "tests.fixtures_emulator", "tests.fixtures_registry"]
