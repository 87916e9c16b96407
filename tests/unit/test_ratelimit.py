"""The client-side limiter never lets more than Klaviyo's windows allow through."""

import threading

import pytest

from consumer.deliver.client import RateLimitState
from consumer.deliver.ratelimit import LimiterStopped, RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ClockStop(threading.Event):
    """A stop event whose wait() advances the fake clock instead of sleeping."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock

    def wait(self, timeout: float | None = None) -> bool:
        self.clock.now += timeout or 0
        return self.is_set()


def _sends(limiter: RateLimiter, clock: FakeClock, count: int) -> list[float]:
    stop = ClockStop(clock)
    times = []
    for _ in range(count):
        limiter.acquire(stop)
        times.append(clock.now)
    return times


def _max_in_window(times: list[float], window: float) -> int:
    return max(sum(1 for t in times if start <= t < start + window) for start in times)


def test_burst_and_steady_windows_hold() -> None:
    clock = FakeClock()
    times = _sends(RateLimiter(10, 150, clock=clock), clock, 450)
    assert _max_in_window(times, 1.0) <= 10
    assert _max_in_window(times, 60.0) <= 150
    # ... and it is not wasteful: 450 requests take about three minutes, not more.
    assert times[-1] - times[0] < 3 * 60 + 2


def test_share_scales_both_windows() -> None:
    limiter = RateLimiter(10, 150, share=0.5)
    assert (limiter.burst, limiter.steady) == (5, 75)


def test_retry_after_holds_everyone() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, 150, clock=clock)
    limiter.retry_after(7)
    assert limiter.delay() == pytest.approx(7)
    [sent] = _sends(limiter, clock, 1)
    assert sent >= 1007


def test_klaviyo_budget_headers_slow_down_when_little_is_left() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, 150, clock=clock)
    limiter.observe(RateLimitState(limit=150, remaining=100, reset_s=30))
    assert limiter.delay() == 0
    limiter.observe(RateLimitState(limit=150, remaining=4, reset_s=20))
    assert limiter.delay() == pytest.approx(5)
    limiter.observe(RateLimitState(limit=150, remaining=0, reset_s=40))
    assert limiter.delay() == pytest.approx(40)


def test_stop_interrupts_a_wait() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, 1, clock=clock)
    stop = ClockStop(clock)
    limiter.acquire(stop)
    stop.set()
    with pytest.raises(LimiterStopped):
        limiter.acquire(stop)


def test_partly_filled_requests_keep_to_the_steady_pace() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, 150, share=0.5, clock=clock)  # 5/s burst, 75/min: one per 0.8 s
    assert limiter.paced()
    limiter.acquire()
    assert not limiter.paced()  # the burst would allow more; the pace does not
    clock.now += 0.79
    assert not limiter.paced()
    clock.now += 0.02
    assert limiter.paced()
    limiter.retry_after(5)
    assert not limiter.paced()  # a 429's Retry-After holds partly filled requests too
