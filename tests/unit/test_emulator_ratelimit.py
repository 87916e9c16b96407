"""Klaviyo's fixed burst (1 s) and steady (1 min) windows, driven by a fake clock."""

from __future__ import annotations

from kafka_klaviyo_dev.emulator.config import WindowLimits
from kafka_klaviyo_dev.emulator.ratelimit import FixedWindowLimiter


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_burst_window_admits_its_limit_then_refuses_until_the_next_second() -> None:
    clock = Clock(1000.25)
    limiter = FixedWindowLimiter(clock)
    limits = WindowLimits(burst=2, steady=100)
    assert limiter.acquire("k", limits).allowed
    assert limiter.acquire("k", limits).allowed
    refused = limiter.acquire("k", limits)
    assert not refused.allowed
    assert refused.retry_after == 1  # 0.75 s left in this second, rounded up
    clock.now = 1001.0  # a new fixed window, not a sliding one
    assert limiter.acquire("k", limits).allowed


def test_steady_window_refuses_with_the_seconds_left_in_the_minute() -> None:
    clock = Clock(1200.0)  # the start of a minute window (1200 = 20 * 60)
    limiter = FixedWindowLimiter(clock)
    limits = WindowLimits(burst=100, steady=3)
    for step in range(3):
        clock.now = 1200.0 + step * 5
        assert limiter.acquire("k", limits).allowed
    clock.now = 1215.5
    refused = limiter.acquire("k", limits)
    assert not refused.allowed
    assert refused.retry_after == 45  # ceil(1260 - 1215.5)
    clock.now = 1260.0
    assert limiter.acquire("k", limits).allowed


def test_refused_requests_do_not_use_up_the_budget() -> None:
    clock = Clock(60.0)
    limiter = FixedWindowLimiter(clock)
    limits = WindowLimits(burst=1, steady=2)
    assert limiter.acquire("k", limits).allowed
    for _ in range(5):
        assert not limiter.acquire("k", limits).allowed
    clock.now = 61.0
    assert limiter.acquire("k", limits).allowed  # the 5 refusals did not count


def test_success_reports_the_steady_window() -> None:
    clock = Clock(130.0)  # 10 s into the minute that started at 120
    limiter = FixedWindowLimiter(clock)
    decision = limiter.acquire("k", WindowLimits(burst=10, steady=150))
    assert decision.headers() == {
        "RateLimit-Limit": "150",
        "RateLimit-Remaining": "149",
        "RateLimit-Reset": "50",
    }


def test_keys_have_independent_windows_and_reset_forgets_them() -> None:
    clock = Clock(5.5)
    limiter = FixedWindowLimiter(clock)
    limits = WindowLimits(burst=1, steady=10)
    assert limiter.acquire(("acme", "events"), limits).allowed
    assert limiter.acquire(("beta", "events"), limits).allowed
    assert limiter.acquire(("acme", "subscribe"), limits).allowed
    assert not limiter.acquire(("acme", "events"), limits).allowed
    limiter.reset()
    assert limiter.acquire(("acme", "events"), limits).allowed
