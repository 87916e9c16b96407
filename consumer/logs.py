"""How the service logs: one masked line per event, on stderr, librdkafka's messages included.

Lines are JSON objects when stderr is not a terminal (a container's log collector) and
``HH:MM:SS LEVEL logger: message`` text on one; both mask e-mail addresses, phone numbers and
API keys (:func:`consumer.redact.mask`). librdkafka's own messages come through the
``consumer.librdkafka`` logger (the ``logger`` key of every client's settings, see
:mod:`consumer.source`) instead of raw ``%3|...|FAIL|...`` lines, with repeats held back; its
errors come through :class:`KafkaErrorLog`, which says once, in plain words, which bootstrap
servers cannot be reached.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, ClassVar

import orjson
from confluent_kafka import KafkaError

from consumer.redact import mask

#: The logger librdkafka's messages go to.
LIBRDKAFKA_LOGGER = "consumer.librdkafka"
# A repeated librdkafka line (a broker refusing connections logs one every second or so) is
# shown once per this many seconds, with the count of those held back.
REPEAT_WINDOW_S = 60.0
# "cannot reach Kafka" again at most this often while it stays unreachable.
UNREACHABLE_WINDOW_S = 300.0


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (masked), exception (masked)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": mask(record.getMessage()),
        }
        if record.exc_info:
            entry["exception"] = mask(self.formatException(record.exc_info))
        return orjson.dumps(entry).decode()


class TextFormatter(logging.Formatter):
    """``HH:MM:SS LEVEL logger: message`` for a person at a terminal, masked like JSON."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{stamp} {record.levelname} {record.name}: {mask(record.getMessage())}"
        if record.exc_info:
            line += "\n" + mask(self.formatException(record.exc_info))
        return line


def formatter_for(stream: IO[str]) -> logging.Formatter:
    """Text on a terminal, JSON lines anywhere else."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream
        tty = False
    return TextFormatter() if tty else JsonFormatter()


class RepeatFilter(logging.Filter):
    """Lets a line through once per ``window_s``; the next one after the window says how many
    like it were held back. Lines are alike when they differ only in their digits (ports,
    milliseconds, counters)."""

    def __init__(
        self, window_s: float = REPEAT_WINDOW_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        # line shape -> (when it was last let through, lines held back since)
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        key = (record.name, record.levelno, _DIGITS.sub("#", text))
        now = self._clock()
        with self._lock:
            shown = self._seen.get(key)
            if shown is not None and now - shown[0] < self._window_s:
                self._seen[key] = (shown[0], shown[1] + 1)
                return False
            if len(self._seen) > 1000:  # forget shapes not seen for a window
                self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self._window_s}
            self._seen[key] = (now, 0)
        held = shown[1] if shown is not None else 0
        if held:
            record.msg = f"{text} ({held} more like this in the last {now - shown[0]:.0f}s)"  # type: ignore[index]
            record.args = None
        return True


_DIGITS = re.compile(r"\d+")


def _at_most_warning(record: logging.LogRecord) -> bool:
    """librdkafka logs a broker it cannot reach at error level and retries by itself; what
    does stop the service is raised where it is used and logged once, at error level."""
    if record.levelno > logging.WARNING:
        record.levelno, record.levelname = logging.WARNING, "WARNING"
    return True


_repeat_filter = RepeatFilter()


def librdkafka_logger() -> logging.Logger:
    """The logger for librdkafka's messages (the ``logger`` key of a client's settings)."""
    logger = logging.getLogger(LIBRDKAFKA_LOGGER)
    if _repeat_filter not in logger.filters:
        logger.addFilter(_at_most_warning)
        logger.addFilter(_repeat_filter)
    return logger


# librdkafka's error codes for "no broker answers": refused, unresolvable, timed out.
_UNREACHABLE = frozenset({KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._RESOLVE})


_kafka_log = logging.getLogger("consumer.kafka")


class KafkaErrorLog:
    """librdkafka's error callback (``error_cb``) for one client.

    Brokers that cannot be reached become one line naming the bootstrap servers, repeated at
    most every ``window_s`` while it lasts, shared by every client of those servers (the
    consumer and the dead-letter producer), a warning: librdkafka keeps trying. A fatal error
    is an error line; any other goes to the librdkafka logger.
    """

    _reported: ClassVar[dict[str, float]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        window_s: float = UNREACHABLE_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._servers = bootstrap_servers
        self._window_s = window_s
        self._clock = clock
        self._log = librdkafka_logger()

    def __call__(self, error: KafkaError) -> None:
        if error.code() in _UNREACHABLE:
            now = self._clock()
            with self._lock:
                last = self._reported.get(self._servers)
                if last is not None and now - last < self._window_s:
                    return
                self._reported[self._servers] = now
            _kafka_log.warning(
                # The reason after a ";": a port next to an address in parentheses reads as
                # a phone number to the masking.
                "cannot reach Kafka bootstrap servers %s; retrying (%s)",
                self._servers,
                error.str(),
            )
        elif error.fatal():
            _kafka_log.error("Kafka client failed: %s: %s", error.name(), error.str())
        else:
            self._log.warning("%s: %s", error.name(), error.str())

    @classmethod
    def forget(cls) -> None:
        """Forget what was reported (tests)."""
        with cls._lock:
            cls._reported.clear()


def configure_logging(level: str = "INFO", stream: IO[str] | None = None) -> None:
    """Route every logger through one masked handler on ``stream`` (stderr): JSON lines, or
    text on a terminal."""
    out = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter_for(out))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request line at INFO; keep it for DEBUG.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))
    librdkafka_logger()
