"""The dead-letter topic: failed messages, unchanged, with headers saying why.

The record keeps the original key, value and headers (so it can be re-driven) and adds the
``dlq.*`` headers of DESIGN.md section 4. Writes go through an idempotent producer; the
callback that finishes the message (and so lets its offset be committed) runs only once the
broker confirmed the write. A failed write is fatal: :meth:`DeadLetterWriter.poll` raises
DeadLetterError and the runner stops without committing past it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Producer

from consumer.errors import DeadLetterError, MessageError
from consumer.redact import mask

Headers = list[tuple[str, str | bytes | None]]


def dead_letter_headers(
    message: Any,
    error: MessageError,
    *,
    group_id: str,
    attempts: int,
    registry_version: str,
    now: datetime | None = None,
) -> Headers:
    """The ``dlq.*`` headers for ``message`` (a confluent_kafka.Message) failed with ``error``."""
    _, timestamp = message.timestamp()
    status = getattr(error, "http_status", None)
    context: dict[str, str] = {
        "dlq.stage": error.stage,
        "dlq.error.class": type(error).__name__,
        "dlq.error.message": mask(str(error)),
        "dlq.error.detail": orjson.dumps(error.detail, default=str).decode(),
        "dlq.http.status": str(status) if status is not None else "",
        "dlq.original.topic": message.topic(),
        "dlq.original.partition": str(message.partition()),
        "dlq.original.offset": str(message.offset()),
        "dlq.original.timestamp": str(timestamp),
        "dlq.consumer.group": group_id,
        "dlq.attempts": str(attempts),
        "dlq.failed.at": (now or datetime.now(UTC)).isoformat(),
        "dlq.record.name": error.record_name or "",
        "dlq.registry.version": registry_version,
    }
    original: Headers = [
        (k, v if isinstance(v, bytes) else (v or "").encode()) for k, v in message.headers() or []
    ]
    # Drop dlq.* headers from an earlier failure (a re-driven record), then add ours.
    kept = [(k, v) for k, v in original if not k.startswith("dlq.")]
    return kept + [(k, v.encode()) for k, v in context.items()]


class DeadLetterWriter:
    """Writes dead-letter records and reports confirmed writes through callbacks."""

    def __init__(
        self,
        *,
        topic: str,
        group_id: str,
        registry_version: str,
        producer_config: dict[str, Any],
    ) -> None:
        self.topic = topic
        self._group_id = group_id
        self._registry_version = registry_version
        config = {
            **producer_config,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            # A write not confirmed in this time is a failure, not a hang; long enough to
            # ride out a broker restart.
            "message.timeout.ms": 120_000,
        }
        self._producer = Producer(config)
        self._failure: DeadLetterError | None = None
        self.written = 0
        self.pending = 0

    def send(
        self, message: Any, error: MessageError, attempts: int, on_confirmed: Callable[[], None]
    ) -> None:
        """Produce the dead-letter record; ``on_confirmed`` runs once the broker has it."""
        headers = dead_letter_headers(
            message,
            error,
            group_id=self._group_id,
            attempts=attempts,
            registry_version=self._registry_version,
        )
        origin = f"{message.topic()}[{message.partition()}]@{message.offset()}"

        def delivered(err: KafkaError | None, _msg: Any) -> None:
            self.pending -= 1
            if err is not None:
                if self._failure is None:
                    self._failure = DeadLetterError(
                        f"cannot write {origin} to dead-letter topic {self.topic}: {err.str()}"
                    )
                return
            self.written += 1
            on_confirmed()

        self.pending += 1
        try:
            self._producer.produce(
                self.topic,
                key=message.key(),
                value=message.value(),
                headers=headers,
                on_delivery=delivered,
            )
        except (KafkaException, BufferError) as exc:
            self.pending -= 1
            raise DeadLetterError(
                f"cannot write {origin} to dead-letter topic {self.topic}: {exc}"
            ) from exc

    def poll(self) -> None:
        """Serve delivery callbacks; raises DeadLetterError if any write failed."""
        self._producer.poll(0)
        if self._failure is not None:
            raise self._failure

    def close(self, *, abandon: bool = False) -> None:
        """Release the producer; ``abandon`` drops unconfirmed writes instead of waiting."""
        if abandon:
            self._producer.purge()
        self._producer.close()

    def flush(self, timeout_s: float) -> None:
        """Wait for every write to be confirmed; DeadLetterError if one failed or timed out."""
        deadline = time.monotonic() + timeout_s
        while self.pending and time.monotonic() < deadline:
            self._producer.flush(min(1.0, max(0.0, deadline - time.monotonic())))
            if self._failure is not None:
                raise self._failure
        if self._failure is not None:
            raise self._failure
        if self.pending:
            raise DeadLetterError(
                f"{self.pending} dead-letter writes to {self.topic} not confirmed "
                f"within {timeout_s:.0f}s"
            )


class DeadLetterBudget:
    """Stops the process when dead-letters pass a limit: bad data at scale is an incident.

    Counts message outcomes in processing order: a consecutive run of dead-letters, and the
    share of dead-letters among the last ``window`` outcomes. Either limit (None: off) raises
    DeadLetterError before the offending record is written, so nothing is committed past it.
    """

    def __init__(
        self, *, max_consecutive: int | None, max_ratio: float | None, window: int
    ) -> None:
        self._max_consecutive = max_consecutive
        self._max_ratio = max_ratio
        self._window: deque[bool] = deque(maxlen=window)
        self._failed_in_window = 0
        self._consecutive = 0

    def succeeded(self) -> None:
        self._consecutive = 0
        self._push(False)

    def dead_lettered(self) -> None:
        """Count one dead-letter; DeadLetterError if that passes a limit."""
        self._consecutive += 1
        self._push(True)
        if self._max_consecutive is not None and self._consecutive > self._max_consecutive:
            raise DeadLetterError(
                f"{self._consecutive} consecutive messages failed, over the limit of "
                f"{self._max_consecutive} (dead_letter.max_consecutive): stopping"
            )
        window = self._window
        if (
            self._max_ratio is not None
            and len(window) == window.maxlen
            and self._failed_in_window / len(window) > self._max_ratio
        ):
            raise DeadLetterError(
                f"{self._failed_in_window} of the last {len(window)} messages failed, over "
                f"the limit of {self._max_ratio:.0%} (dead_letter.max_ratio): stopping"
            )

    def _push(self, failed: bool) -> None:
        window = self._window
        if len(window) == window.maxlen and window[0]:
            self._failed_in_window -= 1
        window.append(failed)
        self._failed_in_window += failed
