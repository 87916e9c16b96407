"""The committable offset only moves over a contiguous finished prefix."""

from consumer.commit import OffsetTracker


def test_out_of_order_completion_commits_only_the_prefix() -> None:
    tracker = OffsetTracker()
    progress = tracker.assign("t", 0)
    tickets = [progress.track(offset, None) for offset in range(10, 15)]
    for ticket in tickets:
        ticket.outstanding = 2
    # Finish 11 and 12 completely, 10 only half: nothing is committable.
    for ticket in tickets[1:3]:
        ticket.output_finished()
        ticket.output_finished()
    tickets[0].output_finished()
    assert tracker.to_commit() == []
    tickets[0].output_finished()
    [ready] = tracker.to_commit()
    assert ready.committable == 13  # offsets 10..12 done -> commit 13
    assert tracker.in_flight() == 2


def test_message_with_no_outputs_finishes_immediately() -> None:
    tracker = OffsetTracker()
    progress = tracker.assign("t", 3)
    ticket = progress.track(0, None)
    ticket.finish()
    [ready] = tracker.to_commit()
    assert (ready.topic, ready.partition, ready.committable) == ("t", 3, 1)


def test_dead_letter_waits_for_confirmation_of_every_rejected_output() -> None:
    tracker = OffsetTracker()
    ticket = tracker.assign("t", 0).track(5, None)
    ticket.outstanding = 3
    ticket.outputs_awaiting_dead_letter = 2  # two outputs rejected, record not yet confirmed
    ticket.output_finished()  # the third was delivered
    assert tracker.to_commit() == []
    ticket.dead_letter_confirmed_now()
    [ready] = tracker.to_commit()
    assert ready.committable == 6


def test_released_partition_is_forgotten() -> None:
    tracker = OffsetTracker()
    progress = tracker.assign("t", 0)
    ticket = progress.track(0, None)
    ticket.outstanding = 1
    released = tracker.release("t", 0)
    assert released is progress and progress.released
    ticket.output_finished()  # a late delivery of a revoked partition changes nothing
    assert tracker.to_commit() == []
    assert tracker.in_flight() == 0
