"""Dead-letter records: their headers, confirmation before finishing, failures, cut records."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from confluent_kafka import KafkaError, KafkaException

from consumer.dead_letter import DeadLetterWriter, dead_letter_headers
from consumer.errors import DeadLetterError, RejectedItemError, TranslationError
from tests.fakes import FakeMessage
from tests.support import DEAD_LETTER_HEADERS

TOPIC = "shop.events.dlq"


def Msg(
    *,
    key: bytes | None = b"order-1",
    value: bytes | None = b"\x00\x00\x00\x00\x07avro",
    headers: Any = None,
    topic: str = "shop.events",
    partition: int = 3,
    offset: int = 42,
    timestamp: int = 1_700_000_000_000,
) -> FakeMessage:
    """A consumed message with the coordinates the headers are checked against."""
    return FakeMessage(topic, partition, offset, key, value, headers, timestamp)


HOLD = "hold"
# What the fake broker does with one write: confirm (None), hold it unconfirmed, report a
# KafkaError, or (a KafkaException / BufferError) refuse it in produce() itself.
Verdict = None | str | KafkaError | KafkaException | BufferError


class FakeProducer:
    """A producer whose broker confirms, holds or refuses each write as ``decide`` says."""

    def __init__(self, decide: Callable[[dict[str, Any]], Verdict] | None = None) -> None:
        self.decide = decide or (lambda record: None)
        self.records: list[dict[str, Any]] = []
        self._reports: list[tuple[Callable[..., None], KafkaError | None]] = []
        self.held: list[dict[str, Any]] = []
        self.purged = False
        self.closed = False
        self.flushes: list[float] = []

    def produce(self, topic: str, value: Any = None, key: Any = None, **kwargs: Any) -> None:
        record = {"topic": topic, "value": value, "key": key, "headers": kwargs.get("headers")}
        verdict = self.decide(record)
        if isinstance(verdict, (KafkaException, BufferError)):
            raise verdict
        self.records.append(record)
        callback = kwargs.get("on_delivery") or kwargs.get("callback")
        if isinstance(verdict, str):  # KafkaError cannot be compared with a str
            self.held.append(record)
        else:
            self._reports.append((callback, verdict))  # type: ignore[arg-type]

    def poll(self, timeout: float = -1) -> int:
        reports, self._reports = self._reports, []
        for callback, error in reports:
            callback(error, None)
        return len(reports)

    def flush(self, timeout: float = -1) -> int:
        self.flushes.append(timeout)
        while self._reports:
            self.poll(0)
        if self.held:
            time.sleep(min(max(timeout, 0), 0.01))
        return len(self.held)

    def purge(self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True) -> None:
        self.purged = True
        self.held.clear()

    def close(self) -> bool:
        self.closed = True
        return True


def _writer(producer: FakeProducer) -> DeadLetterWriter:
    return DeadLetterWriter(producer, topic=TOPIC, group_id="kafka-klaviyo", rules_version="v7")


def _rejected(text: str = "Klaviyo rejected the item: invalid email") -> RejectedItemError:
    return RejectedItemError(
        text,
        http_status=400,
        record_name="shop.Order",
        detail={"code": "invalid", "pointer": "/data/attributes/profiles/data/0"},
    )


def _headers(headers: list[tuple[str, Any]]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for name, value in headers:
        assert name not in out, f"header {name} twice"
        out[name] = value
    return out


class Confirmations:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


# -- headers ---------------------------------------------------------------------------------


def test_headers_carry_every_dlq_field_after_the_original_headers() -> None:
    message = Msg(headers=[("trace-id", b"abc"), ("source", "web")])
    now = datetime(2026, 7, 15, 12, 0, tzinfo=UTC)
    headers = dead_letter_headers(
        message, _rejected(), group_id="kafka-klaviyo", rules_version="v7", now=now
    )
    assert headers[:2] == [("trace-id", b"abc"), ("source", b"web")]
    named = _headers(headers)
    assert {name for name in named if name.startswith("dlq.")} == set(DEAD_LETTER_HEADERS)
    assert named["dlq.stage"] == b"deliver"
    assert named["dlq.error.class"] == b"RejectedItemError"
    assert named["dlq.error.message"] == b"Klaviyo rejected the item: invalid email"
    assert orjson.loads(named["dlq.error.detail"]) == {
        "code": "invalid",
        "pointer": "/data/attributes/profiles/data/0",
    }
    assert named["dlq.http.status"] == b"400"
    assert named["dlq.original.topic"] == b"shop.events"
    assert named["dlq.original.partition"] == b"3"
    assert named["dlq.original.offset"] == b"42"
    assert named["dlq.original.timestamp"] == b"1700000000000"
    assert named["dlq.consumer.group"] == b"kafka-klaviyo"
    assert named["dlq.attempts"] == b"1"
    assert named["dlq.failed.at"] == now.isoformat().encode()
    assert named["dlq.record.name"] == b"shop.Order"
    assert named["dlq.registry.version"] == b"v7"


def test_headers_of_a_translation_failure_name_its_stage_and_no_status() -> None:
    error = TranslationError("not a number", rule="orders", field="value", record_name="shop.Order")
    named = _headers(dead_letter_headers(Msg(), error, group_id="g", rules_version="v1"))
    assert named["dlq.stage"] == b"translate"
    assert named["dlq.http.status"] == b""
    assert orjson.loads(named["dlq.error.detail"]) == {"rule": "orders", "field": "value"}


def test_redriven_record_drops_earlier_dlq_headers_and_counts_one_more_attempt() -> None:
    message = Msg(
        headers=[
            ("trace-id", b"abc"),
            ("dlq.stage", b"decode"),
            ("dlq.attempts", b"2"),
            ("dlq.error.class", b"NotAvroError"),
            ("dlq.something.old", b"x"),
        ]
    )
    headers = dead_letter_headers(message, _rejected(), group_id="g", rules_version="v1")
    named = _headers(headers)  # fails on any header present twice
    assert named["dlq.attempts"] == b"3"
    assert named["dlq.stage"] == b"deliver"
    assert named["dlq.error.class"] == b"RejectedItemError"
    assert "dlq.something.old" not in named
    assert headers[0] == ("trace-id", b"abc")


def test_a_redriven_record_failing_again_keeps_the_coordinates_of_the_shops_message() -> None:
    redriven = Msg(
        topic="shop.events.dlq",
        partition=0,
        offset=7,
        timestamp=1_800_000_000_000,
        headers=[
            ("dlq.original.topic", b"shop.events"),
            ("dlq.original.partition", b"2"),
            ("dlq.original.offset", b"1234"),
            ("dlq.original.timestamp", b"1700000000000"),
            ("dlq.attempts", b"1"),
        ],
    )
    named = _headers(dead_letter_headers(redriven, _rejected(), group_id="g", rules_version="v"))
    assert named["dlq.original.topic"] == b"shop.events"
    assert named["dlq.original.partition"] == b"2"
    assert named["dlq.original.offset"] == b"1234"
    assert named["dlq.original.timestamp"] == b"1700000000000"
    assert named["dlq.attempts"] == b"2"


def test_original_headers_are_kept_unchanged_including_null_values() -> None:
    original = [("trace-id", b"abc"), ("empty", b""), ("flag", None)]
    headers = dead_letter_headers(
        Msg(headers=original), _rejected(), group_id="g", rules_version="v1"
    )
    assert headers[:3] == original


def test_unreadable_attempts_header_counts_as_the_first_attempt() -> None:
    message = Msg(headers=[("dlq.attempts", b"many")])
    named = _headers(dead_letter_headers(message, _rejected(), group_id="g", rules_version="v1"))
    assert named["dlq.attempts"] == b"1"


@pytest.mark.parametrize(
    "secret",
    [
        "john.doe@example.com",
        "jöhn@exämple.de",
        "+1 415 555 2671",
        "+14155552671",
        "pk_live_0123abcdEF.gh-ij",
    ],
)
def test_error_message_and_detail_are_masked(secret: str) -> None:
    error = RejectedItemError(
        f"Klaviyo rejected {secret} as invalid",
        detail={"code": "invalid", "value": secret, "nested": {"quoted": f"'{secret}'"}},
    )
    named = _headers(dead_letter_headers(Msg(), error, group_id="g", rules_version="v1"))
    message = named["dlq.error.message"].decode()
    detail = named["dlq.error.detail"].decode()
    for text in (message, detail):
        assert secret not in text
        assert secret.encode("unicode_escape").decode() not in text
        if "@" in secret:
            assert secret.split("@")[1] not in text
        elif secret.startswith("pk_"):
            assert "0123abcd" not in text
        else:
            assert "555" not in text
    assert message.startswith("Klaviyo rejected ")
    assert orjson.loads(detail)["code"] == "invalid"  # still JSON


# -- confirmation ----------------------------------------------------------------------------


def test_on_confirmed_runs_only_once_the_broker_confirms() -> None:
    producer = FakeProducer()
    writer = _writer(producer)
    confirmed = Confirmations()
    writer.send(Msg(), _rejected(), confirmed)
    assert confirmed.count == 0  # sent is not confirmed
    assert writer.pending == 1
    (record,) = producer.records
    assert record["topic"] == TOPIC
    assert record["key"] == b"order-1" and record["value"] == b"\x00\x00\x00\x00\x07avro"
    writer.poll()
    assert confirmed.count == 1
    assert (writer.pending, writer.written) == (0, 1)
    writer.poll()
    assert confirmed.count == 1


def test_unconfirmed_write_never_runs_on_confirmed() -> None:
    producer = FakeProducer(lambda record: HOLD)
    writer = _writer(producer)
    confirmed = Confirmations()
    writer.send(Msg(), _rejected(), confirmed)
    writer.poll()
    assert writer.flush(0.1) is False
    assert confirmed.count == 0
    assert writer.pending == 1


def test_failed_write_makes_poll_raise_naming_the_topic() -> None:
    producer = FakeProducer(lambda record: KafkaError(KafkaError._MSG_TIMED_OUT))
    writer = _writer(producer)
    confirmed = Confirmations()
    writer.send(Msg(), _rejected(), confirmed)
    with pytest.raises(DeadLetterError) as caught:
        writer.poll()
    assert TOPIC in str(caught.value)
    assert "shop.events[3]@42" in str(caught.value)
    assert confirmed.count == 0
    with pytest.raises(DeadLetterError):
        writer.poll()  # and keeps failing: nothing may be committed past it


def test_produce_refusing_the_write_fails_the_writer() -> None:
    producer = FakeProducer(lambda record: KafkaException(KafkaError(KafkaError._UNKNOWN_TOPIC)))
    writer = _writer(producer)
    with pytest.raises(DeadLetterError) as caught:
        writer.send(Msg(), _rejected(), Confirmations())
    assert TOPIC in str(caught.value)
    with pytest.raises(DeadLetterError):
        writer.poll()


def test_full_producer_queue_fails_the_writer() -> None:
    writer = _writer(FakeProducer(lambda record: BufferError("Local: Queue full")))
    with pytest.raises(DeadLetterError) as caught:
        writer.send(Msg(), _rejected(), Confirmations())
    assert TOPIC in str(caught.value)


def test_flush_returns_false_without_raising_when_writes_are_only_unconfirmed() -> None:
    verdicts = iter([None, HOLD])
    producer = FakeProducer(lambda record: next(verdicts))
    writer = _writer(producer)
    first, second = Confirmations(), Confirmations()
    writer.send(Msg(offset=1), _rejected(), first)
    writer.send(Msg(offset=2), _rejected(), second)
    assert writer.flush(0.2) is False
    assert (first.count, second.count) == (1, 0)


def test_flush_returns_true_once_every_write_is_confirmed() -> None:
    writer = _writer(FakeProducer())
    confirmations = [Confirmations() for _ in range(3)]
    for offset, confirmed in enumerate(confirmations):
        writer.send(Msg(offset=offset), _rejected(), confirmed)
    assert writer.flush(5.0) is True
    assert [c.count for c in confirmations] == [1, 1, 1]


def test_flush_raises_when_a_write_failed() -> None:
    verdicts = iter([HOLD, KafkaError(KafkaError._MSG_TIMED_OUT)])
    writer = _writer(FakeProducer(lambda record: next(verdicts)))
    writer.send(Msg(offset=1), _rejected(), Confirmations())
    writer.send(Msg(offset=2), _rejected(), Confirmations())
    with pytest.raises(DeadLetterError) as caught:
        writer.flush(5.0)
    assert TOPIC in str(caught.value)


# -- records too large -----------------------------------------------------------------------


def _too_large_unless_cut(how: str) -> Callable[[dict[str, Any]], Verdict]:
    def decide(record: dict[str, Any]) -> Verdict:
        if record["value"] is None:
            return None
        error = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)
        return error if how == "report" else KafkaException(error)

    return decide


def _assert_cut(record: dict[str, Any], original: FakeMessage) -> None:
    assert record["topic"] == TOPIC
    assert record["value"] is None
    assert record["key"] == original.key()
    named = _headers(record["headers"])
    assert not [name for name in named if not name.startswith("dlq.")]  # originals left out
    assert set(named) == set(DEAD_LETTER_HEADERS) | {"dlq.cut", "dlq.original.size"}
    assert named["dlq.cut"] == b"value,headers"
    assert named["dlq.original.size"] == str(len(original.value() or b"")).encode()
    assert named["dlq.original.topic"] == b"shop.events"
    assert named["dlq.original.partition"] == b"3"
    assert named["dlq.original.offset"] == b"42"


@pytest.mark.parametrize("how", ["report", "produce"])
def test_record_too_large_for_the_topic_is_written_cut_and_still_confirms(how: str) -> None:
    producer = FakeProducer(_too_large_unless_cut(how))
    writer = _writer(producer)
    original = Msg(value=b"v" * 50_000, headers=[("trace-id", b"abc")])
    confirmed = Confirmations()
    writer.send(original, _rejected(), confirmed)
    assert writer.flush(5.0) is True
    assert confirmed.count == 1
    assert (writer.pending, writer.written) == (0, 1)
    _assert_cut(producer.records[-1], original)
    writer.poll()  # no failure recorded


def test_cut_record_leaves_out_a_key_too_large_to_keep() -> None:
    producer = FakeProducer(_too_large_unless_cut("report"))
    writer = _writer(producer)
    writer.send(Msg(key=b"k" * 5000, value=b"v" * 10), _rejected(), Confirmations())
    assert writer.flush(5.0) is True
    record = producer.records[-1]
    assert record["key"] is None and record["value"] is None
    assert _headers(record["headers"])["dlq.cut"] == b"value,headers,key"


@pytest.mark.parametrize("how", ["report", "produce"])
def test_cut_record_that_is_refused_too_fails_the_writer(how: str) -> None:
    def decide(record: dict[str, Any]) -> Verdict:
        error = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)
        return error if how == "report" else KafkaException(error)

    producer = FakeProducer(decide)
    writer = _writer(producer)
    confirmed = Confirmations()
    with pytest.raises(DeadLetterError) as caught:
        writer.send(Msg(), _rejected(), confirmed)
        writer.flush(5.0)
    assert TOPIC in str(caught.value)
    with pytest.raises(DeadLetterError):
        writer.poll()
    assert confirmed.count == 0


# -- closing ---------------------------------------------------------------------------------


def test_close_with_abandon_purges_unconfirmed_writes() -> None:
    producer = FakeProducer(lambda record: HOLD)
    writer = _writer(producer)
    writer.send(Msg(), _rejected(), Confirmations())
    writer.close(abandon=True)
    assert producer.purged
    assert producer.flushes[-1] == 0
    assert producer.closed  # the client is destroyed, not left to reconnect


def test_close_without_abandon_waits_and_keeps_writes() -> None:
    producer = FakeProducer(lambda record: HOLD)
    writer = _writer(producer)
    writer.send(Msg(), _rejected(), Confirmations())
    writer.close(timeout_s=0.05)
    assert not producer.purged
    assert producer.flushes[-1] == 0.05
    assert producer.closed
