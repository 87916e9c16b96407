"""Too many dead-letters stop the process instead of emptying the stream into the DLQ."""

import pytest

from consumer.dead_letter import DeadLetterBudget
from consumer.errors import DeadLetterError


def test_consecutive_limit() -> None:
    budget = DeadLetterBudget(max_consecutive=3, max_ratio=None, window=10)
    for _ in range(3):
        budget.dead_lettered()
    budget.succeeded()  # a success resets the run
    for _ in range(3):
        budget.dead_lettered()
    with pytest.raises(DeadLetterError, match=r"4 consecutive messages failed.*max_consecutive"):
        budget.dead_lettered()


def test_ratio_over_a_full_window() -> None:
    budget = DeadLetterBudget(max_consecutive=None, max_ratio=0.5, window=10)
    for _ in range(5):
        budget.succeeded()
        budget.dead_lettered()  # 50 %: at the limit, not over it
    budget.succeeded()
    with pytest.raises(DeadLetterError, match=r"6 of the last 10 messages failed.*max_ratio"):
        budget.dead_lettered()
        budget.dead_lettered()


def test_ratio_waits_for_a_full_window() -> None:
    budget = DeadLetterBudget(max_consecutive=None, max_ratio=0.1, window=100)
    for _ in range(50):
        budget.dead_lettered()  # no verdict on a handful of messages


def test_limits_can_be_off() -> None:
    budget = DeadLetterBudget(max_consecutive=None, max_ratio=None, window=10)
    for _ in range(100):
        budget.dead_lettered()
