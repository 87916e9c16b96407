"""When each closed batch goes out, and on which thread.

Three limits shape it:

- per (account, endpoint, list): at most ``per_key`` requests in flight, later batches queue
  in order behind them;
- per account: at most ``threads_per_account`` delivery threads (one pool per account), so an
  account in an outage or a 429 storm, whose deliveries sit in retries, never takes a thread
  from another account;
- per state key: a batch waits until every batch in its ``after`` set (earlier operations on
  the same profile, consent or catalog item, see :mod:`consumer.batch`) has finished.

Everything but the delivery itself runs on the poll-loop thread: :meth:`submit` and
:meth:`collect` are called from the pipeline, the threads only run
:meth:`~consumer.deliver.sender.Sender.deliver`.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from consumer.batch import Batch, BatchKey

from .sender import BatchOutcome, DeliveryAborted, Sender


@dataclass(frozen=True, slots=True)
class Finished:
    """A batch that left the scheduler: its outcome, or None when it was abandoned."""

    batch: Batch
    outcome: BatchOutcome | None


@dataclass(frozen=True, slots=True)
class _Running:
    batch: Batch
    cancelled: threading.Event


class DeliveryScheduler:
    """Runs closed batches on per-account thread pools, in order where order matters."""

    def __init__(
        self,
        sender: Sender,
        *,
        per_key: int,
        threads_per_account: int,
        gate: Callable[[Batch], bool] | None = None,
    ) -> None:
        """``gate`` says whether a queued batch may start now (False keeps it queued: the
        job tracker's bound on items waiting for their jobs)."""
        self._sender = sender
        self._gate = gate
        self._per_key = per_key
        self._threads = threads_per_account
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._running: dict[Future[BatchOutcome], _Running] = {}
        self._key_active: Counter[BatchKey] = Counter()
        self._account_active: Counter[str] = Counter()
        self._queued: dict[BatchKey, deque[Batch]] = {}
        self._waiting: set[Batch] = set()
        self._closed = False

    # -- the pipeline's side -------------------------------------------------------------

    def submit(self, batch: Batch) -> None:
        """Deliver ``batch`` once its turn comes."""
        if self._closed:
            return
        if batch.after:
            self._waiting.add(batch)
        else:
            self._queued.setdefault(batch.key, deque()).append(batch)
            self._dispatch()

    def collect(self, timeout_s: float = 0.0) -> list[Finished]:
        """Batches finished since the last call (waiting up to ``timeout_s`` for one).

        Raises what a delivery raised beyond refusing items (authentication, a request refused
        as a whole, a bug): those stop the process.
        """
        if not self._running:
            if self._queued:
                self._dispatch()  # a gate may have opened since
            if not self._running:
                if timeout_s > 0 and self._queued:
                    time.sleep(min(timeout_s, 0.05))  # gated: wait a little, not spin
                return []
        if timeout_s > 0:
            done, _ = wait(self._running, timeout=timeout_s, return_when=FIRST_COMPLETED)
        else:
            done = {future for future in self._running if future.done()}
        finished = []
        for future in done:
            running = self._running.pop(future)
            batch = running.batch
            self._key_active[batch.key] -= 1
            self._account_active[batch.account] -= 1
            try:
                outcome: BatchOutcome | None = future.result()
            except DeliveryAborted:
                outcome = None
            if outcome is None or not outcome.jobs:
                self._release(batch)
            # else: batches waiting for it go once its jobs have an outcome (finished()).
            finished.append(Finished(batch, outcome))
        self._dispatch()
        return finished

    def finished(self, batch: Batch) -> None:
        """The jobs of ``batch`` (delivered earlier) have an outcome: batches waiting for it
        may go."""
        self._release(batch)
        self._dispatch()

    def drop_released(self) -> list[Batch]:
        """Leave out work of revoked or lost partitions: waiting and queued batches lose those
        entries (and are dropped when none are left, returned here), running ones with no
        entry left are cancelled (they come back from :meth:`collect` abandoned)."""
        dropped = []
        for key, queue in list(self._queued.items()):
            kept = deque(b for b in queue if b.drop_released() > 0)
            dropped += [b for b in queue if not b.entries]
            if kept:
                self._queued[key] = kept
            else:
                del self._queued[key]
        for batch in list(self._waiting):
            if batch.drop_released() == 0:
                self._waiting.discard(batch)
                dropped.append(batch)
        for running in self._running.values():
            batch = running.batch
            if batch.touches_released and not any(entry.live for entry in batch.entries):
                running.cancelled.set()
        for batch in dropped:
            self._release(batch)
        self._dispatch()
        return dropped

    def hold(self, key: BatchKey) -> bool:
        """Whether a partly filled batch of ``key`` should keep filling rather than close: a
        batch of the key is queued or in flight, or sending one now would run ahead of the
        endpoint's steady rate limit (see :meth:`consumer.batch.Batching.due`)."""
        if self._key_active[key] > 0 or key in self._queued:
            return True
        account, endpoint, _ = key
        return not self._sender.paced(account, endpoint)

    def idle(self) -> bool:
        return not (self._running or self._queued or self._waiting)

    def batches(self) -> Iterator[Batch]:
        """Every batch not finished yet: running, queued or waiting."""
        for running in self._running.values():
            yield running.batch
        for queue in self._queued.values():
            yield from queue
        yield from self._waiting

    def close(self) -> None:
        """Abandon everything: cancel running batches, forget the rest, stop the threads."""
        self._closed = True
        for running in self._running.values():
            running.cancelled.set()
        self._queued.clear()
        self._waiting.clear()
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)

    # -- internals -----------------------------------------------------------------------

    def _release(self, batch: Batch) -> None:
        """``batch`` finished: batches waiting for it may go."""
        for dependent in batch.dependents:
            dependent.after.discard(batch)
            if not dependent.after and dependent in self._waiting:
                self._waiting.discard(dependent)
                self._queued.setdefault(dependent.key, deque()).append(dependent)
        batch.dependents.clear()

    def _dispatch(self) -> None:
        for key, queue in list(self._queued.items()):
            account = key[0]
            while (
                queue
                and self._key_active[key] < self._per_key
                and self._account_active[account] < self._threads
                and (self._gate is None or self._gate(queue[0]))
            ):
                self._start(queue.popleft())
            if not queue:
                del self._queued[key]

    def _start(self, batch: Batch) -> None:
        pool = self._pools.get(batch.account)
        if pool is None:
            # Threads start on demand, up to the account's budget.
            pool = self._pools[batch.account] = ThreadPoolExecutor(
                self._threads, thread_name_prefix=f"deliver-{batch.account}"
            )
        cancelled = threading.Event()
        future = pool.submit(self._sender.deliver, batch, cancelled)
        self._running[future] = _Running(batch, cancelled)
        self._key_active[batch.key] += 1
        self._account_active[batch.account] += 1
