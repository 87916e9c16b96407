"""Klaviyo's rate limiter: fixed windows of one second (burst) and one minute (steady).

Klaviyo documents "a fixed-window rate limiting algorithm with two distinct windows: burst
(1-second window) and steady (1-minute window)", per account (and here per endpoint, since each
endpoint has its own numbers). A request is admitted only if both windows have room; admitted
requests count against both, refused ones against neither (a client that waits its Retry-After
gets in). Successful responses report the steady window in ``RateLimit-Limit``,
``RateLimit-Remaining`` and ``RateLimit-Reset`` (seconds until it resets), as Klaviyo does.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from kafka_klaviyo_dev.emulator.config import WindowLimits

BURST_WINDOW = 1.0
STEADY_WINDOW = 60.0


@dataclass(frozen=True, slots=True)
class Decision:
    """The limiter's answer for one request.

    ``retry_after`` (whole seconds, at least 1) is meaningful only when not ``allowed``;
    ``limit``/``remaining``/``reset`` describe the steady window after this request.
    """

    allowed: bool
    retry_after: int
    limit: int
    remaining: int
    reset: int

    def headers(self) -> dict[str, str]:
        """The ``RateLimit-*`` headers of a successful response."""
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset),
        }


class _Windows:
    __slots__ = ("burst_count", "burst_index", "steady_count", "steady_index")

    def __init__(self) -> None:
        self.burst_index = -1
        self.burst_count = 0
        self.steady_index = -1
        self.steady_count = 0


def _until(now: float, window: float) -> float:
    """Seconds from ``now`` to the end of the fixed window containing it."""
    return (math.floor(now / window) + 1) * window - now


class FixedWindowLimiter:
    """Thread-safe burst + steady fixed windows per key (e.g. (account, endpoint))."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[Hashable, _Windows] = {}

    def acquire(self, key: Hashable, limits: WindowLimits) -> Decision:
        """Admit one request for ``key`` if both windows have room."""
        now = self._clock()
        burst_index = math.floor(now / BURST_WINDOW)
        steady_index = math.floor(now / STEADY_WINDOW)
        with self._lock:
            w = self._windows.get(key)
            if w is None:
                w = self._windows[key] = _Windows()
            if w.burst_index != burst_index:
                w.burst_index, w.burst_count = burst_index, 0
            if w.steady_index != steady_index:
                w.steady_index, w.steady_count = steady_index, 0
            burst_full = w.burst_count >= limits.burst
            steady_full = w.steady_count >= limits.steady
            if not burst_full and not steady_full:
                w.burst_count += 1
                w.steady_count += 1
            steady_count = w.steady_count
        reset = max(1, math.ceil(_until(now, STEADY_WINDOW)))
        if burst_full or steady_full:
            wait = max(
                _until(now, BURST_WINDOW) if burst_full else 0.0,
                _until(now, STEADY_WINDOW) if steady_full else 0.0,
            )
            return Decision(False, max(1, math.ceil(wait)), limits.steady, 0, reset)
        return Decision(True, 0, limits.steady, max(0, limits.steady - steady_count), reset)

    def reset(self) -> None:
        """Forget every window (a fresh minute for everyone)."""
        with self._lock:
            self._windows.clear()
