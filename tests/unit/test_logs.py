"""Log lines: JSON or text by terminal, masking, repeats held back, the Kafka error line and
the outage begun/ended lines of the sender."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
from confluent_kafka import KafkaError

from consumer.deliver.sender import Outages
from consumer.endpoints import Endpoint
from consumer.errors import TransientDeliveryError
from consumer.logs import (
    LIBRDKAFKA_LOGGER,
    JsonFormatter,
    KafkaErrorLog,
    RepeatFilter,
    TextFormatter,
    configure_logging,
    formatter_for,
    librdkafka_logger,
)
from consumer.settings import KafkaSettings
from consumer.source import consumer_config, producer_config

SECRETS = "key pk_live_abc123 for ada@example.org, phone +1 617-253-1000"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _record(message: str, *args: object, name: str = "consumer.x") -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, message, args, None)


@pytest.fixture
def root_restored() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_a_terminal_gets_text_anything_else_json() -> None:
    assert isinstance(formatter_for(_Tty()), TextFormatter)
    assert isinstance(formatter_for(io.StringIO()), JsonFormatter)


def test_text_line_is_time_level_logger_message_masked() -> None:
    line = TextFormatter().format(_record("sending %s", SECRETS))
    assert re.fullmatch(r"\d\d:\d\d:\d\d WARNING consumer\.x: sending .*", line), line
    assert "pk_live_abc123" not in line and "ada@example.org" not in line
    assert "253-1000" not in line and "617" not in line
    assert "pk_***" in line and "a***@***" in line and "***00" in line


def test_json_line_is_masked_with_its_exception() -> None:
    try:
        raise ValueError(SECRETS)
    except ValueError:
        import sys

        record = _record("failed for %s", "bob@example.com")
        record.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter().format(record))
    assert entry["level"] == "WARNING" and entry["logger"] == "consumer.x"
    assert entry["message"] == "failed for b***@***"
    assert "ada@example.org" not in entry["exception"]
    assert "pk_live_abc123" not in entry["exception"]


def test_configure_logging_chooses_by_the_stream(root_restored) -> None:
    tty = _Tty()
    configure_logging("INFO", stream=tty)
    logging.getLogger("consumer.test").info("to %s", "ada@example.org")
    assert re.fullmatch(r"\d\d:\d\d:\d\d INFO consumer\.test: to a\*\*\*@\*\*\*\n", tty.getvalue())
    pipe = io.StringIO()
    configure_logging("INFO", stream=pipe)
    logging.getLogger("consumer.test").info("to %s", "ada@example.org")
    assert json.loads(pipe.getvalue())["message"] == "to a***@***"


def test_repeats_are_held_back_for_the_window_then_counted() -> None:
    clock = _Clock()
    repeats = RepeatFilter(window_s=60, clock=clock)
    first = _record("FAIL [rdkafka#consumer-1] Connect to %s failed (after %dms)", "h:1", 0)
    assert repeats.filter(first)
    for ms in range(5):
        clock.now += 1
        assert not repeats.filter(
            _record(f"FAIL [rdkafka#consumer-1] Connect to h:1 failed (after {ms}ms)")
        )
    other = _record("FAIL [rdkafka#consumer-1] something else")
    assert repeats.filter(other)  # another line is not held back by the first
    clock.now += 60
    later = _record("FAIL [rdkafka#consumer-1] Connect to h:1 failed (after 9ms)")
    assert repeats.filter(later)
    assert later.getMessage().endswith("(after 9ms) (5 more like this in the last 65s)")
    clock.now += 61
    quiet = _record("FAIL [rdkafka#consumer-1] Connect to h:1 failed (after 1ms)")
    assert repeats.filter(quiet)
    assert quiet.getMessage() == "FAIL [rdkafka#consumer-1] Connect to h:1 failed (after 1ms)"


def test_every_librdkafka_client_logs_through_the_rate_limited_logger() -> None:
    kafka = KafkaSettings(bootstrap_servers="b1:9092,b2:9092")
    for config in (consumer_config(kafka), producer_config(kafka, timeout_s=5)):
        assert config["logger"] is logging.getLogger(LIBRDKAFKA_LOGGER)
        assert isinstance(config["error_cb"], KafkaErrorLog)
    assert any(isinstance(f, RepeatFilter) for f in librdkafka_logger().filters)


def test_unreachable_brokers_are_one_line_naming_the_bootstrap_servers(caplog) -> None:
    KafkaErrorLog.forget()
    clock = _Clock()
    consumer = KafkaErrorLog("b1:9092,b2:9092", window_s=300, clock=clock)
    producer = KafkaErrorLog("b1:9092,b2:9092", window_s=300, clock=clock)
    with caplog.at_level(logging.INFO):
        consumer(KafkaError(KafkaError._TRANSPORT, "b1:9092/bootstrap: Connect failed"))
        producer(KafkaError(KafkaError._ALL_BROKERS_DOWN, "2/2 brokers are down"))
        clock.now += 299
        consumer(KafkaError(KafkaError._RESOLVE, "b2:9092/bootstrap: Failed to resolve"))
        assert [r.getMessage() for r in caplog.records] == [
            "cannot reach Kafka bootstrap servers b1:9092,b2:9092; retrying "
            "(b1:9092/bootstrap: Connect failed)"
        ]
        clock.now += 2
        producer(KafkaError(KafkaError._ALL_BROKERS_DOWN, "2/2 brokers are down"))
        consumer(KafkaError(KafkaError._MSG_TIMED_OUT, "Local: Message timed out"))
    lines = [r.getMessage() for r in caplog.records]
    assert lines[1] == (
        "cannot reach Kafka bootstrap servers b1:9092,b2:9092; retrying (2/2 brokers are down)"
    )
    assert lines[2] == "_MSG_TIMED_OUT: Local: Message timed out"
    assert caplog.records[2].name == LIBRDKAFKA_LOGGER
    assert {r.levelno for r in caplog.records} == {logging.WARNING}
    fatal = KafkaError(KafkaError._FENCED, "producer fenced", fatal=True)
    with caplog.at_level(logging.INFO):
        consumer(fatal)
    assert caplog.records[-1].levelno == logging.ERROR
    assert caplog.records[-1].getMessage() == "Kafka client failed: _FENCED: producer fenced"
    KafkaErrorLog.forget()


def test_librdkafka_errors_are_logged_as_warnings(caplog) -> None:
    with caplog.at_level(logging.INFO):
        librdkafka_logger().error("%s [%s] %s", "FAIL", "rdkafka#consumer-1", "refused")
        librdkafka_logger().info("%s [%s] %s", "CONFWARN", "rdkafka#consumer-1", "odd")
    levels = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert levels == [
        ("WARNING", "FAIL [rdkafka#consumer-1] refused"),
        ("INFO", "CONFWARN [rdkafka#consumer-1] odd"),
    ]


def test_an_outage_is_one_line_when_it_begins_and_one_when_it_ends(caplog) -> None:
    clock = _Clock()
    outages = Outages(clock=clock)
    down = TransientDeliveryError("POST /api/event-bulk-create-jobs: HTTP 503", http_status=503)
    with caplog.at_level(logging.INFO, logger="consumer.deliver.sender"):
        outages.recovered("acme", Endpoint.EVENTS)  # nothing failing: nothing to say
        for _ in range(4):
            outages.failed("acme", Endpoint.EVENTS, down)
        outages.failed("beta", Endpoint.PROFILES, TransientDeliveryError("x", http_status=429))
        assert outages.failing() == {("acme", Endpoint.EVENTS), ("beta", Endpoint.PROFILES)}
        clock.now += 12.5
        outages.recovered("acme", Endpoint.EVENTS)
        outages.recovered("acme", Endpoint.EVENTS)
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert lines == [
        (
            logging.WARNING,
            "Klaviyo outage begun for account acme, events: "
            "POST /api/event-bulk-create-jobs: HTTP 503; retrying until it answers",
        ),
        (
            logging.INFO,
            "Klaviyo throttling begun for account beta, profiles: x; retrying until it answers",
        ),
        (
            logging.INFO,
            "Klaviyo outage ended for account acme, events: answering again after 12.5s "
            "and 4 failed requests",
        ),
    ]
    assert outages.failing() == {("beta", Endpoint.PROFILES)}
