"""DeliveryScheduler: per-key and per-account limits, state order, released work, failures."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from consumer.batch import Batch, BatchEntry
from consumer.bodies import EncodedItem
from consumer.commit import PartitionProgress
from consumer.deliver.scheduler import DeliveryScheduler, Finished
from consumer.deliver.sender import BatchOutcome, DeliveryAborted
from consumer.endpoints import Endpoint
from consumer.errors import AuthenticationError, RequestRejectedError
from tests.fakes import message

WAIT_S = 10.0  # generous: for things that take milliseconds


class GatedSender:
    """deliver() blocks until the test opens the batch's gate (or the batch is cancelled).

    ``fail[batch]`` is raised instead of returning an outcome once the gate opens.
    """

    def __init__(self) -> None:
        self.started: list[Batch] = []
        self.gates: dict[Batch, threading.Event] = {}
        self.cancelled: dict[Batch, threading.Event] = {}
        self.fail: dict[Batch, BaseException] = {}
        self.returned: list[Batch] = []
        # (account, endpoint) pairs whose next partly filled request would run ahead of pace.
        self.unpaced: set[tuple[str, Any]] = set()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    def gate(self, batch: Batch) -> threading.Event:
        with self._lock:
            return self.gates.setdefault(batch, threading.Event())

    def open(self, *batches: Batch) -> None:
        for batch in batches:
            self.gate(batch).set()

    def paced(self, account: str, endpoint: Any) -> bool:
        return (account, endpoint) not in self.unpaced

    def deliver(self, batch: Batch, cancelled: threading.Event) -> BatchOutcome:
        gate = self.gate(batch)
        with self._changed:
            self.started.append(batch)
            self.cancelled[batch] = cancelled
            self._changed.notify_all()
        while not gate.wait(0.005):
            if cancelled.is_set():
                raise DeliveryAborted
        with self._lock:
            self.returned.append(batch)
        if batch in self.fail:
            raise self.fail[batch]
        return BatchOutcome(batch, delivered=list(batch.entries))

    def wait_started(self, count: int) -> list[Batch]:
        """Block until ``count`` batches have started; the started ones."""
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.started) >= count, WAIT_S), (
                f"only {len(self.started)} of {count} batches started"
            )
            return list(self.started)

    def settle(self) -> list[Batch]:
        """Give threads a moment to start anything they were (wrongly) allowed to."""
        time.sleep(0.2)
        with self._lock:
            return list(self.started)


class Progress:
    def __init__(self) -> None:
        self.progress = PartitionProgress("t", 0)
        self._offset = 0

    def batch(
        self,
        account: str = "a",
        endpoint: Endpoint = Endpoint.PROFILES,
        group: str | None = None,
        entries: int = 1,
        after: tuple[Batch, ...] = (),
        progress: PartitionProgress | None = None,
    ) -> Batch:
        progress = progress or self.progress
        batch = Batch(account, endpoint, group, opened_at=0.0)
        for _ in range(entries):
            ticket = progress.track(self._offset, message(self._offset))
            self._offset += 1
            batch.entries.append(BatchEntry(EncodedItem(b"{}"), [ticket]))
            batch.partitions.add(progress)
        for earlier in after:
            batch.after.add(earlier)
            earlier.dependents.append(batch)
        return batch


@pytest.fixture()
def make() -> Progress:
    return Progress()


@pytest.fixture()
def scheduled() -> Iterator[Callable[..., tuple[DeliveryScheduler, GatedSender]]]:
    made: list[tuple[DeliveryScheduler, GatedSender]] = []

    def build(per_key: int = 1, threads: int = 4) -> tuple[DeliveryScheduler, GatedSender]:
        sender = GatedSender()
        scheduler = DeliveryScheduler(sender, per_key=per_key, threads_per_account=threads)  # type: ignore[arg-type]
        made.append((scheduler, sender))
        return scheduler, sender

    yield build
    for scheduler, sender in made:
        scheduler.close()
        for gate in list(sender.gates.values()):
            gate.set()


def collect_until(scheduler: DeliveryScheduler, count: int) -> list[Finished]:
    """Collect until ``count`` batches finished (at most WAIT_S)."""
    finished: list[Finished] = []
    deadline = time.monotonic() + WAIT_S
    while len(finished) < count and time.monotonic() < deadline:
        finished += scheduler.collect(timeout_s=0.05)
    assert len(finished) >= count, f"{len(finished)} of {count} batches finished"
    return finished


# -- limits ----------------------------------------------------------------------------------


def test_per_key_limit_runs_at_most_that_many_and_queues_the_rest_in_order(scheduled, make) -> None:
    scheduler, sender = scheduled(per_key=2, threads=8)
    batches = [make.batch(group="list-1") for _ in range(5)]
    for batch in batches:
        scheduler.submit(batch)
    first = sender.wait_started(2)
    assert set(first) == set(batches[:2])
    assert sender.settle() == first  # the other three queue
    sender.open(batches[1])
    done = collect_until(scheduler, 1)
    assert [f.batch for f in done] == [batches[1]]
    assert sender.wait_started(3)[2] is batches[2]  # the next in submission order
    assert len(sender.settle()) == 3
    sender.open(batches[0])
    collect_until(scheduler, 1)
    assert sender.wait_started(4)[3] is batches[3]
    sender.open(*batches)
    collect_until(scheduler, 3)
    assert sender.started[4] is batches[4]
    assert scheduler.idle()


def test_different_groups_of_one_endpoint_have_their_own_per_key_limit(scheduled, make) -> None:
    scheduler, sender = scheduled(per_key=1, threads=8)
    one, two = make.batch(group="list-1"), make.batch(group="list-2")
    scheduler.submit(one)
    scheduler.submit(two)
    assert set(sender.wait_started(2)) == {one, two}


def test_account_runs_at_most_its_threads_and_other_accounts_are_not_delayed(
    scheduled, make
) -> None:
    scheduler, sender = scheduled(per_key=4, threads=2)
    busy = [make.batch(account="a", group=f"list-{i}") for i in range(3)]
    for batch in busy:
        scheduler.submit(batch)
    started = sender.wait_started(2)
    assert len(sender.settle()) == 2  # account a's two threads are taken
    assert set(started) <= set(busy)
    other = make.batch(account="b")
    scheduler.submit(other)
    # Account a's threads are all blocked (an outage), yet b's batch goes out.
    assert sender.wait_started(3)[2] is other
    sender.open(other)
    assert [f.batch for f in collect_until(scheduler, 1)] == [other]
    # a's third batch still waits for one of a's threads.
    assert len(sender.settle()) == 3
    sender.open(started[0])
    collect_until(scheduler, 1)
    (third,) = set(busy) - set(started)
    assert sender.wait_started(4)[3] is third
    sender.open(*busy)
    collect_until(scheduler, 2)


# -- state order -----------------------------------------------------------------------------


def test_batch_waits_until_every_batch_it_waits_for_was_collected(scheduled, make) -> None:
    scheduler, sender = scheduled(per_key=4, threads=8)
    subscribe = make.batch(endpoint=Endpoint.SUBSCRIBE, group="L")
    profiles = make.batch(endpoint=Endpoint.PROFILES)
    unsubscribe = make.batch(endpoint=Endpoint.UNSUBSCRIBE, group="L", after=(subscribe, profiles))
    scheduler.submit(subscribe)
    scheduler.submit(profiles)
    scheduler.submit(unsubscribe)
    assert set(sender.wait_started(2)) == {subscribe, profiles}
    assert len(sender.settle()) == 2
    sender.open(subscribe)
    collect_until(scheduler, 1)
    assert len(sender.settle()) == 2  # still waiting for the profiles batch
    sender.open(profiles)
    # Finished on its thread is not enough: only collect() lets the dependent go.
    deadline = time.monotonic() + WAIT_S
    while profiles not in sender.returned and time.monotonic() < deadline:
        time.sleep(0.01)
    assert profiles in sender.returned
    time.sleep(0.1)
    assert unsubscribe not in sender.started
    collect_until(scheduler, 1)
    assert sender.wait_started(3)[2] is unsubscribe
    assert unsubscribe.after == set()
    sender.open(unsubscribe)
    collect_until(scheduler, 1)
    assert scheduler.idle()


def test_dependent_submitted_after_its_predecessor_finished_is_not_blocked(scheduled, make) -> None:
    scheduler, sender = scheduled(per_key=1, threads=4)
    first = make.batch(endpoint=Endpoint.CATALOG_CREATE)
    second = make.batch(endpoint=Endpoint.CATALOG_DELETE, after=(first,))
    scheduler.submit(first)
    sender.open(first)
    collect_until(scheduler, 1)
    scheduler.submit(second)
    assert sender.wait_started(2)[1] is second


# -- released work ---------------------------------------------------------------------------


def test_drop_released_drops_queued_and_waiting_batches_and_unblocks_their_dependents(
    scheduled, make
) -> None:
    scheduler, sender = scheduled(per_key=1, threads=8)
    lost = PartitionProgress("t", 1)
    running = make.batch(group="G")
    queued_lost = make.batch(group="G", progress=lost)
    queued_mixed = make.batch(group="G", entries=1)
    queued_mixed.entries.append(make.batch(progress=lost).entries[0])
    queued_mixed.partitions.add(lost)
    waiting_lost = make.batch(group="H", progress=lost, after=(running,))
    dependent = make.batch(endpoint=Endpoint.UNSUBSCRIBE, group="U", after=(queued_lost,))
    for batch in (running, queued_lost, queued_mixed, waiting_lost, dependent):
        scheduler.submit(batch)
    assert sender.wait_started(1) == [running]
    lost.released = True
    dropped = scheduler.drop_released()
    assert set(dropped) == {queued_lost, waiting_lost}
    assert len(queued_mixed.entries) == 1 and queued_mixed.entries[0].live
    # The dependent waited only for a dropped batch: it goes now.
    assert sender.wait_started(2)[1] is dependent
    assert dependent.after == set()
    remaining = set(scheduler.batches())
    assert queued_lost not in remaining and waiting_lost not in remaining
    assert queued_mixed in remaining
    sender.open(running, dependent, queued_mixed)
    finished = collect_until(scheduler, 3)
    assert {f.batch for f in finished} == {running, dependent, queued_mixed}
    assert scheduler.idle()


def test_drop_released_cancels_a_running_batch_with_no_live_entry(scheduled, make) -> None:
    scheduler, sender = scheduled(per_key=2, threads=4)
    lost = PartitionProgress("t", 1)
    doomed = make.batch(group="G", progress=lost)
    alive = make.batch(group="G")
    scheduler.submit(doomed)
    scheduler.submit(alive)
    sender.wait_started(2)
    lost.released = True
    assert scheduler.drop_released() == []
    assert sender.cancelled[doomed].is_set()
    assert not sender.cancelled[alive].is_set()
    (finished,) = collect_until(scheduler, 1)
    assert finished == Finished(doomed, None)


# -- failures --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        AuthenticationError("Klaviyo refused the API key"),
        RequestRejectedError("Klaviyo refused the request as a whole", http_status=400),
        RuntimeError("a bug"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_collect_reraises_what_a_delivery_raised(scheduled, make, failure: Exception) -> None:
    scheduler, sender = scheduled()
    batch = make.batch()
    sender.fail[batch] = failure
    scheduler.submit(batch)
    sender.open(batch)
    deadline = time.monotonic() + WAIT_S
    with pytest.raises(type(failure)) as caught:
        while time.monotonic() < deadline:
            scheduler.collect(timeout_s=0.05)
    assert caught.value is failure


def test_aborted_delivery_is_collected_as_finished_without_outcome(scheduled, make) -> None:
    scheduler, sender = scheduled()
    batch = make.batch()
    sender.fail[batch] = DeliveryAborted()
    scheduler.submit(batch)
    sender.open(batch)
    assert collect_until(scheduler, 1) == [Finished(batch, None)]


def test_delivered_batch_is_collected_with_its_outcome(scheduled, make) -> None:
    scheduler, sender = scheduled()
    batch = make.batch(entries=3)
    scheduler.submit(batch)
    sender.open(batch)
    (finished,) = collect_until(scheduler, 1)
    assert finished.batch is batch
    assert finished.outcome is not None and finished.outcome.delivered == batch.entries


def test_close_cancels_running_batches_and_refuses_new_ones(scheduled, make) -> None:
    scheduler, sender = scheduled(per_key=1, threads=4)
    running = make.batch()
    queued = make.batch()
    scheduler.submit(running)
    scheduler.submit(queued)
    sender.wait_started(1)
    scheduler.close()
    assert sender.cancelled[running].is_set()
    late = make.batch(account="b")
    scheduler.submit(late)
    assert sender.settle() == [running]
    assert late not in set(scheduler.batches())
    assert queued not in set(scheduler.batches())


def test_a_key_is_held_while_its_batch_is_queued_or_in_flight_or_ahead_of_pace(
    scheduled, make
) -> None:
    scheduler, sender = scheduled(per_key=1)
    first, second = make.batch(group="list-1"), make.batch(group="list-1")
    key = first.key
    assert not scheduler.hold(key)
    scheduler.submit(first)
    scheduler.submit(second)
    sender.wait_started(1)
    assert scheduler.hold(key)  # one in flight, one queued
    assert not scheduler.hold(make.batch(group="list-2").key)
    sender.open(first, second)
    collect_until(scheduler, 2)
    assert not scheduler.hold(key)
    sender.unpaced.add((key[0], key[1]))
    assert scheduler.hold(key)
