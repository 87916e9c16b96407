"""The dead-letter topic: failed messages, unchanged, with headers saying why.

The record keeps the original key, value and headers (so it can be re-driven) and adds the
``dlq.*`` headers of the design document (``docs/DESIGN.md``, section 4). Writes go through an
idempotent producer; the callback that finishes the message (and so lets its offset be
committed) runs only once the broker confirmed the write.

A record too large for the dead-letter topic is written cut: without the original value, key
and headers, with ``dlq.cut`` saying what was left out and the original's coordinates (topic,
partition, offset) to fetch it from, so a poison message can always be dead-lettered and the
partition moves on. Any other failed write is fatal: :meth:`DeadLetterWriter.poll` raises
DeadLetterError and the runner stops without committing past it.

:class:`DeadLetterBudget` is the brake: too many dead-letters in a row, or too high a share of
them, stop the process (bad data at scale is an incident, not something to drain).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from confluent_kafka import KafkaError, KafkaException

from consumer.errors import DeadLetterError, MessageError
from consumer.messages import KafkaMessage, header_pairs
from consumer.redact import mask

log = logging.getLogger(__name__)

Headers = list[tuple[str, str | bytes | None]]
DeliveryCallback = Callable[[KafkaError | None, Any], None]

#: Original key kept in a cut record up to this size.
_CUT_KEY_LIMIT = 1024


class KafkaProducer(Protocol):
    """The part of a Kafka producer the writer uses (confluent_kafka.Producer has it)."""

    def produce(
        self,
        topic: str,
        value: str | bytes | None = None,
        key: str | bytes | None = None,
        partition: int = -1,
        callback: DeliveryCallback | None = None,
        on_delivery: DeliveryCallback | None = None,
        timestamp: int = 0,
        headers: Headers | None = None,
    ) -> None: ...

    def poll(self, timeout: float = -1) -> int: ...

    def flush(self, timeout: float = -1) -> int: ...

    def purge(
        self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True
    ) -> None: ...

    def close(self) -> bool: ...


def attempts_so_far(message: KafkaMessage) -> int:
    """How often this message was dead-lettered before (a re-driven record carries it)."""
    text = _earlier(message).get("dlq.attempts")
    try:
        return max(0, int(text)) if text is not None else 0
    except ValueError:
        return 0


def _earlier(message: KafkaMessage) -> dict[str, str]:
    """The ``dlq.*`` headers an earlier failure left on a re-driven record."""
    return {
        key: value.decode(errors="replace") if isinstance(value, bytes) else value
        for key, value in header_pairs(message.headers())
        if key.startswith("dlq.") and value is not None
    }


def dead_letter_headers(
    message: KafkaMessage,
    error: MessageError,
    *,
    group_id: str,
    rules_version: str,
    now: datetime | None = None,
) -> Headers:
    """The ``dlq.*`` headers for ``message`` failed with ``error`` (after its own headers,
    without the ``dlq.*`` ones of an earlier failure)."""
    _, timestamp = message.timestamp()
    status = getattr(error, "http_status", None)
    earlier = _earlier(message)
    # A re-driven record failing again still points at the message the shop produced.
    original = {
        "dlq.original.topic": message.topic() or "",
        "dlq.original.partition": str(message.partition()),
        "dlq.original.offset": str(message.offset()),
        "dlq.original.timestamp": str(timestamp),
    }
    if "dlq.original.topic" in earlier:
        original = {key: earlier.get(key, "") for key in original}
    context: dict[str, str] = {
        "dlq.stage": error.stage,
        "dlq.error.class": type(error).__name__,
        "dlq.error.message": mask(str(error)),
        # Klaviyo's own error objects may quote the item (an address, a number): masked too.
        "dlq.error.detail": mask(orjson.dumps(error.detail, default=str).decode()),
        "dlq.http.status": str(status) if status is not None else "",
        **original,
        "dlq.consumer.group": group_id,
        "dlq.attempts": str(attempts_so_far(message) + 1),
        "dlq.failed.at": (now or datetime.now(UTC)).isoformat(),
        "dlq.record.name": error.record_name or "",
        # The header's name is part of the record's contract; it carries the rules' version.
        "dlq.registry.version": rules_version,
    }
    headers: Headers = [
        (k, v.encode() if isinstance(v, str) else v)
        for k, v in header_pairs(message.headers())
        if not k.startswith("dlq.")
    ]
    headers += [(k, v.encode()) for k, v in context.items()]
    return headers


class DeadLetterWriter:
    """Writes dead-letter records and reports confirmed writes through callbacks."""

    def __init__(
        self, producer: KafkaProducer, *, topic: str, group_id: str, rules_version: str
    ) -> None:
        self.topic = topic
        self._producer = producer
        self._group_id = group_id
        self._rules_version = rules_version
        self._failure: DeadLetterError | None = None
        self.written = 0
        self.pending = 0

    def send(
        self, message: KafkaMessage, error: MessageError, on_confirmed: Callable[[], None]
    ) -> None:
        """Produce the dead-letter record; ``on_confirmed`` runs once the broker has it."""
        headers = dead_letter_headers(
            message, error, group_id=self._group_id, rules_version=self._rules_version
        )
        self.pending += 1
        self._produce(message, headers, on_confirmed, cut=False)

    def poll(self) -> None:
        """Serve delivery callbacks; raises DeadLetterError if any write failed."""
        self._producer.poll(0)
        if self._failure is not None:
            raise self._failure

    def flush(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for every write to be confirmed: True if all were.

        Raises DeadLetterError only for a write that definitely failed; unconfirmed writes
        just leave their messages unfinished (nothing is committed past them).
        """
        deadline = time.monotonic() + timeout_s
        while self.pending and self._failure is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._producer.flush(min(0.5, remaining))
        if self._failure is not None:
            raise self._failure
        return self.pending == 0

    def close(self, *, abandon: bool = False, timeout_s: float = 5.0) -> None:
        """Release the producer; ``abandon`` drops unconfirmed writes instead of waiting."""
        if abandon:
            self._producer.purge()
        self._producer.flush(0 if abandon else timeout_s)
        # Destroys the client now, not at garbage collection: no reconnects after we stopped.
        self._producer.close()

    # -- internals -----------------------------------------------------------------------

    def _produce(
        self,
        message: KafkaMessage,
        headers: Headers,
        on_confirmed: Callable[[], None],
        *,
        cut: bool,
    ) -> None:
        origin = f"{message.topic()}[{message.partition()}]@{message.offset()}"

        def delivered(err: KafkaError | None, _record: Any) -> None:
            if err is None:
                self.pending -= 1
                self.written += 1
                on_confirmed()
            elif err.code() == KafkaError.MSG_SIZE_TOO_LARGE and not cut:
                self._produce_cut(message, headers, on_confirmed)
            else:
                self.pending -= 1
                self._fail(origin, err.str())

        key, value = message.key(), message.value()
        if cut:
            key = key if key is not None and len(key) <= _CUT_KEY_LIMIT else None
            value = None
        try:
            self._producer.produce(
                self.topic, key=key, value=value, headers=headers, on_delivery=delivered
            )
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            too_large = isinstance(error, KafkaError) and (
                error.code() == KafkaError.MSG_SIZE_TOO_LARGE
            )
            if too_large and not cut:
                self._produce_cut(message, headers, on_confirmed)
                return
            self.pending -= 1
            raise self._fail(origin, str(exc)) from exc
        except BufferError as exc:
            self.pending -= 1
            raise self._fail(origin, f"the producer's queue is full ({exc})") from exc

    def _produce_cut(
        self, message: KafkaMessage, headers: Headers, on_confirmed: Callable[[], None]
    ) -> None:
        value, key = message.value(), message.key()
        left_out = ["value", "headers"]
        if key is not None and len(key) > _CUT_KEY_LIMIT:
            left_out.append("key")
        context = [(k, v) for k, v in headers if k.startswith("dlq.")]
        context += [
            ("dlq.cut", ",".join(left_out).encode()),
            ("dlq.original.size", str(len(value or b"")).encode()),
        ]
        log.warning(
            "dead-letter record of %s[%s]@%s is too large for %s: writing it without its %s",
            message.topic(),
            message.partition(),
            message.offset(),
            self.topic,
            " and ".join(left_out),
        )
        self._produce(message, context, on_confirmed, cut=True)

    def _fail(self, origin: str, reason: str) -> DeadLetterError:
        """Note a failed write (the first one is what :meth:`poll` raises) and return it."""
        failure = DeadLetterError(
            f"cannot write {origin} to dead-letter topic {self.topic}: {reason}"
        )
        if self._failure is None:
            self._failure = failure
        return failure


class DeadLetterBudget:
    """Stops the process when dead-letters pass a limit: bad data at scale is an incident.

    Counts each message's outcome once, when it is finished (in offset order per partition,
    see :mod:`consumer.commit`): a consecutive run of dead-letters, and the share of
    dead-letters among the last ``window`` outcomes. Either limit (None: off) raises
    DeadLetterError before the offset of the message that passed it is committed.
    """

    def __init__(
        self, *, max_consecutive: int | None, max_ratio: float | None, window: int
    ) -> None:
        self._max_consecutive = max_consecutive
        self._max_ratio = max_ratio
        self._window: deque[bool] = deque(maxlen=window)
        self._failed_in_window = 0
        self._consecutive = 0

    def count(self, dead_lettered: bool) -> None:
        """Count one finished message; DeadLetterError if that passes a limit."""
        window = self._window
        if len(window) == window.maxlen and window[0]:
            self._failed_in_window -= 1
        window.append(dead_lettered)
        if not dead_lettered:
            self._consecutive = 0
            return
        self._failed_in_window += 1
        self._consecutive += 1
        if self._max_consecutive is not None and self._consecutive > self._max_consecutive:
            raise DeadLetterError(
                f"{self._consecutive} consecutive messages failed, over the limit of "
                f"{self._max_consecutive} (dead_letter.max_consecutive): stopping"
            )
        if (
            self._max_ratio is not None
            and len(window) == window.maxlen
            and self._failed_in_window / len(window) > self._max_ratio
        ):
            raise DeadLetterError(
                f"{self._failed_in_window} of the last {len(window)} messages failed, over "
                f"the limit of {self._max_ratio:.0%} (dead_letter.max_ratio): stopping"
            )
