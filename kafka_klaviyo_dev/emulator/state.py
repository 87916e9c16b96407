"""Everything the emulator remembers: accepted data per account, counters, Retry-After debts.

One lock guards it all: requests hold it only to commit or count (never while validating or
sleeping), so contention stays negligible at benchmark rates and every read-back is a
consistent snapshot.

Accounts are independent Klaviyo accounts: each has its own accepted items per endpoint, its
own dedup index and its own counters.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kafka_klaviyo_dev.emulator import final_state


@dataclass(slots=True)
class _Account:
    items: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    seen: set[Hashable] = field(default_factory=set)
    requests: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    accepted: Counter[str] = field(default_factory=Counter)
    duplicates: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class Commit:
    """What committing one request's items did."""

    accepted: int
    duplicates: int
    test_domain_dropped: int = 0


class EmulatorState:
    """Thread-safe store and counters of one emulator."""

    def __init__(
        self,
        accounts: Iterable[str],
        *,
        request_log_size: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._names = tuple(accounts)
        self._clock = clock
        self._log_size = request_log_size
        self._lock = threading.Lock()
        self._reset_locked()

    def _reset_locked(self) -> None:
        self._accounts: dict[str, _Account] = {name: _Account() for name in self._names}
        self._requests: dict[str, Counter[str]] = defaultdict(Counter)
        self._accepted: Counter[str] = Counter()
        self._duplicates: Counter[str] = Counter()
        self._validation_failures: Counter[str] = Counter()
        self._rate_limited: Counter[str] = Counter()
        self._faults_fired: Counter[str] = Counter()
        self._test_domain_dropped: Counter[str] = Counter()
        self._deadlines: dict[tuple[str, str], tuple[float, float]] = {}
        self._violations: list[dict[str, Any]] = []
        self._log: deque[dict[str, Any]] = deque(maxlen=self._log_size)
        self._seq = 0
        self._record_seq = 0

    def reset(self) -> None:
        """Forget all accepted data, counters, Retry-After debts and the request log."""
        with self._lock:
            self._reset_locked()

    # --- writing -----------------------------------------------------------------------------

    def commit(
        self,
        account: str,
        endpoint: str,
        records: Iterable[tuple[Hashable | None, dict[str, Any]]],
        drop: Callable[[dict[str, Any]], bool] | None = None,
    ) -> Commit:
        """Store records whose dedup key (if any) this account has not accepted before.

        A record with a known key is dropped and counted as a duplicate, as Klaviyo drops it.
        ``drop`` marks records Klaviyo accepts but discards (test e-mail domains).
        """
        accepted = duplicates = dropped = 0
        with self._lock:
            acct = self._accounts[account]
            store = acct.items[endpoint]
            for key, record in records:
                if key is not None:
                    if key in acct.seen:
                        duplicates += 1
                        continue
                    acct.seen.add(key)
                if drop is not None and drop(record):
                    dropped += 1
                    continue
                self._record_seq += 1
                record["seq"] = self._record_seq
                store.append(record)
                accepted += 1
            acct.accepted[endpoint] += accepted
            acct.duplicates[endpoint] += duplicates
            self._accepted[endpoint] += accepted
            self._duplicates[endpoint] += duplicates
            if dropped:
                self._test_domain_dropped[endpoint] += dropped
        return Commit(accepted, duplicates, dropped)

    def count_request(
        self,
        endpoint: str,
        account: str | None,
        status: int | str,
        *,
        items: int = 0,
        size: int = 0,
        reason: str | None = None,
        fault: str | None = None,
        method: str = "POST",
        job: str | None = None,
    ) -> None:
        """Count one answered request and keep its summary in the request log (``job``: the
        id of the job it created or read)."""
        with self._lock:
            self._requests[endpoint][str(status)] += 1
            if account is not None and account in self._accounts:
                self._accounts[account].requests[endpoint][str(status)] += 1
            if reason == "validation":
                self._validation_failures[endpoint] += 1
            elif reason == "rate_limit":
                self._rate_limited[endpoint] += 1
            if fault is not None:
                self._faults_fired[fault] += 1
            self._seq += 1
            self._log.append(
                {
                    "seq": self._seq,
                    "at": time.time(),
                    "endpoint": endpoint,
                    "method": method,
                    "account": account,
                    "status": status,
                    "items": items,
                    "bytes": size,
                    "reason": reason,
                    "fault": fault,
                    "job": job,
                }
            )

    # --- Retry-After bookkeeping -------------------------------------------------------------

    def owe_retry_after(self, account: str, endpoint: str, seconds: float) -> None:
        """A 429/503 with ``Retry-After: seconds`` was just issued to this account+endpoint."""
        now = self._clock()
        key = (account, endpoint)
        with self._lock:
            deadline, _ = self._deadlines.get(key, (0.0, 0.0))
            self._deadlines[key] = (max(deadline, now + seconds), now)

    def arrival(self, account: str, endpoint: str, arrived: float, grace: float) -> bool:
        """Record a request arriving at ``arrived``; True if it ignored a Retry-After.

        It did if it arrived before the deadline of a Retry-After issued to the same account
        and endpoint, later than ``grace`` seconds after that answer (earlier arrivals were in
        flight already when the client got it).
        """
        key = (account, endpoint)
        with self._lock:
            debt = self._deadlines.get(key)
            if debt is None:
                return False
            deadline, issued = debt
            if arrived >= deadline:
                del self._deadlines[key]
                return False
            if arrived <= issued + grace:
                return False
            self._violations.append(
                {
                    "account": account,
                    "endpoint": endpoint,
                    "at": time.time(),
                    "early_by_seconds": round(deadline - arrived, 3),
                    "after_answer_seconds": round(arrived - issued, 3),
                }
            )
            return True

    # --- reading -----------------------------------------------------------------------------

    def records(
        self,
        endpoint: str,
        account: str | None = None,
        where: Callable[[Mapping[str, Any]], bool] | None = None,
    ) -> list[dict[str, Any]]:
        """Accepted records of one endpoint (all accounts, or one), in acceptance order."""
        with self._lock:
            accounts = [account] if account is not None else list(self._accounts)
            out: list[dict[str, Any]] = []
            for name in accounts:
                acct = self._accounts.get(name)
                if acct is None:
                    continue
                out.extend(r for r in acct.items.get(endpoint, ()) if where is None or where(r))
        out.sort(key=lambda r: r.get("seq", 0))
        return out

    def _tagged(
        self, endpoints: Iterable[str], account: str | None
    ) -> list[tuple[str, dict[str, Any]]]:
        """(endpoint, record) of several endpoints, copied under the lock (unsorted)."""
        with self._lock:
            names = [account] if account is not None else list(self._accounts)
            out: list[tuple[str, dict[str, Any]]] = []
            for name in names:
                acct = self._accounts.get(name)
                if acct is None:
                    continue
                for endpoint in endpoints:
                    out.extend((endpoint, r) for r in acct.items.get(endpoint, ()))
        return out

    def consent(self, account: str | None = None) -> list[dict[str, Any]]:
        """Final consent per (account, list, channel, person); see :mod:`.final_state`."""
        return final_state.consent(self._tagged(final_state.CONSENT_ENDPOINTS, account))

    def catalog_items(self, account: str | None = None) -> list[dict[str, Any]]:
        """Final catalog items per (account, item id); see :mod:`.final_state`."""
        return final_state.catalog_items(self._tagged(final_state.CATALOG_ENDPOINTS, account))

    def categories(self, account: str | None = None) -> list[dict[str, Any]]:
        """Final catalog categories per (account, category id); see :mod:`.final_state`."""
        return final_state.categories(self._tagged(final_state.CATEGORY_ENDPOINTS, account))

    def profiles(self, account: str | None = None) -> list[dict[str, Any]]:
        """Final imported profiles per (account, identifier); see :mod:`.final_state`."""
        return final_state.profiles(self._tagged(final_state.PROFILE_ENDPOINTS, account))

    def request_log(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The most recent request summaries, oldest first."""
        with self._lock:
            log = list(self._log)
        return log[-limit:] if limit else log

    def stats(self) -> dict[str, Any]:
        """Every counter, as JSON-ready dicts."""
        with self._lock:
            return {
                "requests": {k: dict(v) for k, v in self._requests.items()},
                "accepted": dict(self._accepted),
                "duplicates_dropped": dict(self._duplicates),
                "validation_failures": dict(self._validation_failures),
                "rate_limited": dict(self._rate_limited),
                "faults_fired": dict(self._faults_fired),
                "test_domain_dropped": dict(self._test_domain_dropped),
                "retry_after_violations": len(self._violations),
                "retry_after_violation_log": list(self._violations),
                "accounts": {
                    name: {
                        "requests": {k: dict(v) for k, v in acct.requests.items()},
                        "accepted": dict(acct.accepted),
                        "duplicates_dropped": dict(acct.duplicates),
                    }
                    for name, acct in self._accounts.items()
                },
            }
