"""Client-side rate limiting per (account, endpoint), so Klaviyo rarely has to say 429.

Klaviyo limits each account per endpoint with a burst window (requests per second) and a
steady window (requests per minute). :class:`RateLimiter` keeps a sliding log of this
process's sends and lets a request go only when both windows have room, scaled by the share
of the account this deployment may use. A sliding log is never looser than Klaviyo's own
windows, and a small margin absorbs the difference between our send time and its arrival.

Two signals from Klaviyo tighten it further:

- ``Retry-After`` on a 429 closes the limiter until it has elapsed, for every thread;
- ``RateLimit-Remaining``/``RateLimit-Reset`` on success show the account-wide budget, which
  other replicas share: when little is left, requests are spread over the time to the reset.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from consumer.deliver.client import RateLimitState

Clock = Callable[[], float]

# Seconds added to each window: a request sent just after the window rolled over can still
# arrive inside it on Klaviyo's clock.
_MARGIN_S = 0.05


def wait_any(
    events: tuple[threading.Event, ...], seconds: float, clock: Clock = time.monotonic
) -> bool:
    """Wait up to ``seconds`` for any of ``events``; True if one is set."""
    if len(events) == 1:
        return events[0].wait(seconds)
    deadline = clock() + seconds
    while not any(event.is_set() for event in events):
        remaining = deadline - clock()
        if remaining <= 0:
            return False
        # Woken at once by the first event; the others are looked at every 0.1 s.
        events[0].wait(min(remaining, 0.1))
    return True


class LimiterStopped(Exception):
    """The stop event was set while waiting for the limiter."""


class RateLimiter:
    """Burst and steady windows of one (account, endpoint), shared by all delivery threads."""

    def __init__(
        self,
        burst_per_second: int,
        steady_per_minute: int,
        *,
        share: float = 1.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self.burst = max(1, int(burst_per_second * share))
        self.steady = max(1, int(steady_per_minute * share))
        self._clock = clock
        self._lock = threading.Lock()
        self._sent: deque[float] = deque()
        self._not_before = 0.0

    def acquire(self, *stops: threading.Event) -> None:
        """Block until one request may be sent now, and count it as sent; LimiterStopped if
        any of ``stops`` is set meanwhile."""
        while True:
            with self._lock:
                wait = self._wait_locked(self._clock())
                if wait <= 0:
                    self._sent.append(self._clock())
                    return
            if wait_any(stops, wait, self._clock):
                raise LimiterStopped

    def paced(self) -> bool:
        """Whether one more request now keeps to the steady pace (one per ``60 / steady``
        seconds since the last) and nothing holds the limiter closed. The burst is for full
        requests: a partly filled one sent ahead of the pace spends the minute's budget on
        few items, and what arrives later waits for the next minute."""
        with self._lock:
            now = self._clock()
            if now < self._not_before:
                return False
            return not self._sent or now - self._sent[-1] >= 60.0 / self.steady

    def delay(self) -> float:
        """Seconds until a request could go (0 if now); does not take a slot."""
        with self._lock:
            return max(0.0, self._wait_locked(self._clock()))

    def retry_after(self, seconds: float) -> None:
        """Klaviyo said 429 with Retry-After: nobody sends before it has elapsed."""
        with self._lock:
            self._not_before = max(self._not_before, self._clock() + seconds)

    def observe(self, state: RateLimitState) -> None:
        """Pace by the account-wide budget Klaviyo reports (shared with other replicas)."""
        if state.remaining is None or state.reset_s is None:
            return
        if state.remaining <= 0:
            pause = state.reset_s
        elif state.remaining < self.burst:
            pause = state.reset_s / state.remaining
        else:
            return
        with self._lock:
            self._not_before = max(self._not_before, self._clock() + pause)

    def _wait_locked(self, now: float) -> float:
        sent = self._sent
        while sent and sent[0] <= now - 60.0 - _MARGIN_S:
            sent.popleft()
        wait = self._not_before - now
        if len(sent) >= self.steady:
            wait = max(wait, sent[-self.steady] + 60.0 + _MARGIN_S - now)
        if len(sent) >= self.burst:
            wait = max(wait, sent[-self.burst] + 1.0 + _MARGIN_S - now)
        return wait
