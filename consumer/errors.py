"""The exception tree of kafka-klaviyo.

Every error the service raises on purpose derives from :class:`KafkaKlaviyoError`.
Third-party exceptions (librdkafka, fastavro, httpx, pydantic) are translated at the
boundary where they happen (``raise ... from exc``) so callers only ever see these types::

    KafkaKlaviyoError
    ├── ConfigError            bad configuration: stop with one line naming the setting
    ├── MessageError           one message is bad data: dead-letter it, the partition moves on
    │   ├── DecodeError        stage "decode"
    │   │   ├── NotAvroError          not Avro in a framing we know
    │   │   ├── UnknownSchemaError    schema id / fingerprint nobody knows
    │   │   ├── SchemaMismatchError   unreadable with our reader schema, or a corrupt body
    │   │   └── UnmappedRecordError   a record type no translation rule maps
    │   ├── TranslationError   stage "translate": carries the rule and the output field
    │   └── RejectedItemError  stage "deliver": Klaviyo refused this item (400, or 413 alone)
    │       └── JobItemError   stage "job": the job Klaviyo accepted failed this item later
    ├── DeliveryError          talking to Klaviyo failed
    │   ├── TransientDeliveryError    408/429/5xx/timeout/connection: retry, never dead-letter
    │   ├── BadRequestError           a 400 about items: narrowed to the offending items
    │   ├── PayloadTooLargeError      413: the batch is split; an item too big alone is bad data
    │   ├── RequestRejectedError      the request as a whole refused (an unserved revision, a
    │   │                             wrong URL, 404/405/415): fatal, nothing dead-lettered
    │   └── AuthenticationError       401/403: fatal, stop with one clear line
    ├── SchemaRegistryUnavailableError   the Schema Registry cannot be asked: an outage, retry
    └── DeadLetterError        dead-letter topic not writable or its limit passed: fatal

Fatal errors (:data:`FATAL_ERRORS`) stop the process without committing past unfinished work.

Messages never contain API keys, e-mail addresses or phone numbers: callers pass masked values.
"""

from __future__ import annotations

from typing import Any


class KafkaKlaviyoError(Exception):
    """Base class of every error kafka-klaviyo raises on purpose."""


class ConfigError(KafkaKlaviyoError):
    """Configuration is invalid; ``str(err)`` is one line naming the setting."""


class MessageError(KafkaKlaviyoError):
    """One Kafka message cannot be processed; it goes to the dead-letter topic.

    ``stage`` is the pipeline step that failed (decode | translate | deliver) and
    ``detail`` is JSON-serialisable context for the ``dlq.error.detail`` header.
    """

    stage: str = "decode"

    def __init__(
        self,
        message: str,
        *,
        record_name: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.record_name = record_name
        self.detail: dict[str, Any] = detail or {}


class DecodeError(MessageError):
    """The message value could not be decoded into an Avro record."""

    stage = "decode"


class NotAvroError(DecodeError):
    """The bytes carry neither the Confluent wire header nor the single-object marker."""


class UnknownSchemaError(DecodeError):
    """The schema id (registry) or fingerprint (single-object) is not known."""


class SchemaMismatchError(DecodeError):
    """The writer schema cannot be resolved against our reader schema, or the body is corrupt."""


class UnmappedRecordError(DecodeError):
    """The record decoded fine but no translation rule maps its type."""


class TranslationError(MessageError):
    """A rule could not produce a valid Klaviyo payload from this record."""

    stage = "translate"

    def __init__(
        self,
        message: str,
        *,
        rule: str,
        field: str,
        record_name: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            f"rule {rule!r}, field {field!r}: {message}",
            record_name=record_name,
            detail={"rule": rule, "field": field, **(detail or {})},
        )
        self.rule = rule
        self.field = field


class RejectedItemError(MessageError):
    """Klaviyo answered 400 for this item; ``detail`` carries its error code and pointer."""

    stage = "deliver"

    def __init__(
        self,
        message: str,
        *,
        http_status: int = 400,
        record_name: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, record_name=record_name, detail=detail)
        self.http_status = http_status


class JobItemError(RejectedItemError):
    """Klaviyo accepted the request (202), and its job then failed this item (or was
    cancelled, or gave no outcome in time); ``detail`` names the job and Klaviyo's error."""

    stage = "job"


class DeliveryError(KafkaKlaviyoError):
    """A request to Klaviyo failed as a whole."""


class TransientDeliveryError(DeliveryError):
    """Worth retrying: 408, 429, 5xx, a timeout or a connection error."""

    def __init__(
        self, message: str, *, http_status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.retry_after = retry_after


class BadRequestError(DeliveryError):
    """Klaviyo refused items of the request; ``errors`` is its JSON:API error list.

    At least one error carries a ``source.pointer`` (a refusal about the body); the sender
    narrows the batch to the items the pointers name, or bisects it when they name none.
    """

    def __init__(self, message: str, *, http_status: int, errors: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.errors = errors


class PayloadTooLargeError(DeliveryError):
    """413: the body is too big for Klaviyo (or a proxy in front of it); split the batch."""

    def __init__(self, message: str, *, http_status: int = 413) -> None:
        super().__init__(message)
        self.http_status = http_status


class RequestRejectedError(DeliveryError):
    """Klaviyo refused the request as a whole, whatever its items (configuration, not data).

    An unserved revision, a wrong base URL (404), a method or media type it does not take
    (405, 415), a 400 whose errors name a request parameter or no source at all, or every item
    of a batch refused alone with the same pointerless error. Nothing is dead-lettered: the
    process stops with one line naming the cause.
    """

    def __init__(self, message: str, *, http_status: int | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status


class AuthenticationError(DeliveryError):
    """Klaviyo refused the API key (401) or its scopes (403); the process must stop."""


class SchemaRegistryUnavailableError(KafkaKlaviyoError):
    """The Schema Registry could not be asked for a writer schema; retry, never dead-letter.

    Deliberately not a :class:`MessageError`: an outage is not bad data. The pipeline parks
    the partition and retries the message with backoff. ``http_status`` is None for connection
    errors and timeouts.
    """

    def __init__(self, message: str, *, schema_id: int, http_status: int | None = None) -> None:
        super().__init__(message)
        self.schema_id = schema_id
        self.http_status = http_status


class DeadLetterError(KafkaKlaviyoError):
    """The dead-letter topic could not be written, or the dead-letter limit was passed."""


#: Errors that stop the process at once: no retry can mend them and no message is to blame.
FATAL_ERRORS: tuple[type[KafkaKlaviyoError], ...] = (
    AuthenticationError,
    RequestRejectedError,
    DeadLetterError,
)
