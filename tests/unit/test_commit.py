"""The committable offset only moves over a contiguous finished prefix, and only past
dead-letters whose write the broker confirmed."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from consumer.commit import Committer, MessageTicket, PartitionProgress
from consumer.dead_letter import DeadLetterBudget
from consumer.errors import DeadLetterError
from tests.fakes import FakeMessage, message


class Store:
    """The offset store of a consumer: records what was stored and committed."""

    def __init__(self) -> None:
        self.stored: list[tuple[str, int, int]] = []
        self.commits: list[bool] = []
        self.fail: KafkaException | None = None

    def store_offsets(self, message: Any = None, offsets: Any = None) -> None:
        if self.fail is not None:
            raise self.fail
        self.stored += [(tp.topic, tp.partition, tp.offset) for tp in offsets]

    def commit(self, *, asynchronous: bool = True) -> Any:
        self.commits.append(asynchronous)
        if asynchronous:
            return None
        return [TopicPartition(t, p, o) for t, p, o in self.stored[-1:]]


def Message(offset: int, partition: int = 0) -> FakeMessage:
    return message(offset, partition=partition)


def _committer(store: Store, **budget: Any) -> Committer:
    limits = {"max_consecutive": None, "max_ratio": None, "window": 10, **budget}
    committer = Committer(store, budget=DeadLetterBudget(**limits), interval_s=0)
    committer.assign([("t", 0)])
    return committer


def _tickets(committer: Committer, offsets: range) -> list[MessageTicket]:
    return [committer.track(Message(offset)) for offset in offsets]  # type: ignore[arg-type]


def test_out_of_order_completion_commits_only_the_prefix() -> None:
    store = Store()
    committer = _committer(store)
    tickets = _tickets(committer, range(10, 15))
    for ticket in tickets:
        ticket.expect(2)
    for ticket in tickets[1:3]:
        ticket.output_delivered()
        ticket.output_delivered()
    tickets[0].output_delivered()
    committer.commit(sync=False)
    assert store.stored == []  # 10 is half done: nothing is committable
    tickets[0].output_delivered()
    committer.commit(sync=False)
    assert store.stored == [("t", 0, 13)]  # offsets 10..12 done -> commit 13
    assert committer.in_flight() == 2


def test_a_message_that_is_not_translated_yet_is_not_finished() -> None:
    committer = _committer(Store())
    [ticket] = _tickets(committer, range(1))
    assert not ticket.finished  # polled, outputs unknown
    ticket.expect(0)
    assert ticket.finished  # translated into nothing (a rule that skips it)


def test_failed_message_is_finished_only_when_its_dead_letter_is_confirmed() -> None:
    store = Store()
    committer = _committer(store)
    [poison, good] = _tickets(committer, range(2))
    poison.fail()  # decode or translate failed: dead-letter written, not confirmed
    good.expect(0)
    committer.commit(sync=False)
    assert store.stored == [] and not poison.finished
    poison.dead_letter_confirmed()
    committer.commit(sync=False)
    assert store.stored == [("t", 0, 2)]


def test_refused_outputs_wait_for_the_dead_letter_confirmation() -> None:
    store = Store()
    committer = _committer(store)
    [ticket] = _tickets(committer, range(5, 6))
    ticket.expect(3)
    assert ticket.output_rejected() is True  # the first refusal writes the record
    assert ticket.output_rejected() is False  # once per message
    ticket.output_delivered()
    committer.commit(sync=False)
    assert store.stored == []
    ticket.dead_letter_confirmed()
    committer.commit(sync=False)
    assert store.stored == [("t", 0, 6)]


def test_a_refusal_after_the_confirmation_finishes_at_once() -> None:
    committer = _committer(Store())
    [ticket] = _tickets(committer, range(1))
    ticket.expect(2)
    assert ticket.output_rejected()
    ticket.dead_letter_confirmed()
    assert not ticket.finished
    assert ticket.output_rejected() is False
    assert ticket.finished


def test_released_partition_is_forgotten() -> None:
    store = Store()
    committer = _committer(store)
    [ticket] = _tickets(committer, range(1))
    ticket.expect(1)
    [released] = committer.release([("t", 0)])
    assert released.released and ticket.released
    ticket.output_delivered()  # a late delivery of a revoked partition changes nothing
    committer.commit(sync=True)
    assert store.stored == [] and committer.in_flight() == 0


def test_each_finished_message_is_counted_once_by_the_budget_in_offset_order() -> None:
    store = Store()
    committer = _committer(store, max_consecutive=2)
    tickets = _tickets(committer, range(4))
    for ticket in tickets:
        ticket.expect(1)
        ticket.output_rejected()
        ticket.dead_letter_confirmed()
    with pytest.raises(DeadLetterError, match="3 consecutive"):
        committer.commit(sync=False)
    # The budget stopped before the offset of the third dead-letter was stored.
    assert store.stored == []


def test_commits_repeat_until_the_broker_confirms_the_offset() -> None:
    store = Store()
    committer = _committer(store)
    [ticket] = _tickets(committer, range(1))
    ticket.expect(0)
    committer.commit(sync=False)
    committer.commit(sync=False)
    assert store.stored == [("t", 0, 1), ("t", 0, 1)]  # unconfirmed: asked again
    committer.on_commit(None, [TopicPartition("t", 0, 1)])
    committer.commit(sync=False)
    assert len(store.stored) == 2 and committer.committed(("t", 0)) == 1


def test_a_failed_commit_is_retried_on_the_next_turn_and_no_offset_is_quiet() -> None:
    store = Store()
    committer = _committer(store)
    [ticket] = _tickets(committer, range(1))
    ticket.expect(0)
    store.fail = KafkaException(KafkaError(KafkaError._TRANSPORT))
    committer.commit(sync=False)  # logged, not raised
    store.fail = None
    committer.commit(sync=True)
    assert store.stored == [("t", 0, 1)] and committer.committed(("t", 0)) == 1
    committer.on_commit(KafkaError(KafkaError._NO_OFFSET), [])


def test_commit_interval() -> None:
    now = [0.0]
    store = Store()
    committer = Committer(
        store,
        budget=DeadLetterBudget(max_consecutive=None, max_ratio=None, window=10),
        interval_s=1.0,
        clock=lambda: now[0],
    )
    committer.track(Message(0)).expect(0)  # type: ignore[arg-type]
    committer.tick()
    assert store.stored == []
    now[0] = 1.0
    committer.tick()
    assert store.stored == [("t", 0, 1)]


def test_unfinished_counts_only_the_partitions_asked_for() -> None:
    committer = _committer(Store())
    committer.assign([("t", 1)])
    committer.track(Message(0, partition=0)).expect(1)  # type: ignore[arg-type]
    committer.track(Message(0, partition=1)).expect(0)  # type: ignore[arg-type]
    assert committer.unfinished([("t", 1)]) == 0
    assert committer.unfinished([("t", 0)]) == 1 and committer.unfinished() == 1
    assert PartitionProgress("t", 9).unfinished() == 0
