"""Too many dead-letters stop the process instead of emptying the stream into the DLQ.

The budget sees each finished message once (the committer counts it when the committable
offset passes it), so a message Klaviyo refused counts as one dead-letter, not as a success
at translate time and a failure later.
"""

import pytest

from consumer.dead_letter import DeadLetterBudget
from consumer.errors import DeadLetterError


def test_consecutive_limit() -> None:
    budget = DeadLetterBudget(max_consecutive=3, max_ratio=None, window=10)
    for _ in range(3):
        budget.count(dead_lettered=True)
    budget.count(dead_lettered=False)  # a success resets the run
    for _ in range(3):
        budget.count(dead_lettered=True)
    with pytest.raises(DeadLetterError, match=r"4 consecutive messages failed.*max_consecutive"):
        budget.count(dead_lettered=True)


def test_ratio_over_a_full_window() -> None:
    budget = DeadLetterBudget(max_consecutive=None, max_ratio=0.5, window=10)
    for _ in range(5):
        budget.count(dead_lettered=False)
        budget.count(dead_lettered=True)  # 50 %: at the limit, not over it
    # The window drops its oldest outcome (a success): 6 of the last 10 failed.
    with pytest.raises(DeadLetterError, match=r"6 of the last 10 messages failed.*max_ratio"):
        budget.count(dead_lettered=True)


def test_every_refused_message_counts_once_and_trips_the_consecutive_limit() -> None:
    # Each message is counted once, as a dead-letter: a run of refusals is a run.
    budget = DeadLetterBudget(max_consecutive=1000, max_ratio=None, window=1000)
    with pytest.raises(DeadLetterError, match="1001 consecutive"):
        for _ in range(20_000):
            budget.count(dead_lettered=True)


def test_ratio_waits_for_a_full_window() -> None:
    budget = DeadLetterBudget(max_consecutive=None, max_ratio=0.1, window=100)
    for _ in range(50):
        budget.count(dead_lettered=True)  # no verdict on a handful of messages


def test_limits_can_be_off() -> None:
    budget = DeadLetterBudget(max_consecutive=None, max_ratio=None, window=10)
    for _ in range(100):
        budget.count(dead_lettered=True)
