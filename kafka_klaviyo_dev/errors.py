"""The one error type of the development tools."""

from __future__ import annotations

from consumer.errors import KafkaKlaviyoError


class DevstackError(KafkaKlaviyoError):
    """The local Kafka broker or Klaviyo emulator could not be prepared or started."""
