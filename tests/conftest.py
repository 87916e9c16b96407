"""Shared pytest set-up: the real Kafka broker and Klaviyo emulator fixtures."""

pytest_plugins = ["tests.fixtures_kafka", "tests.fixtures_emulator"]
