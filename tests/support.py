"""Helpers for integration tests: the consumer as a real OS process, waiting, reading back."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kafka_klaviyo_dev.inspect import committed_offsets, group_lag, partition_lags, read_topic
from kafka_klaviyo_dev.produce import produce_orders, produce_records
from kafka_klaviyo_dev.samples import generated_orders

if TYPE_CHECKING:
    from kafka_klaviyo_dev.kafka import LocalKafka
    from tests.fixtures_emulator import RunningEmulator

REPO = Path(__file__).resolve().parents[1]

#: docs/DESIGN.md section 4: the headers every dead-letter record carries besides its own.
DEAD_LETTER_HEADERS = (
    "dlq.stage",
    "dlq.error.class",
    "dlq.error.message",
    "dlq.error.detail",
    "dlq.http.status",
    "dlq.original.topic",
    "dlq.original.partition",
    "dlq.original.offset",
    "dlq.original.timestamp",
    "dlq.consumer.group",
    "dlq.attempts",
    "dlq.failed.at",
    "dlq.record.name",
    "dlq.registry.version",
)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.2
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


def consumer_env(
    *,
    bootstrap_servers: str,
    base_url: str,
    api_key: str,
    topic: str,
    group_id: str,
    dead_letter_topic: str,
    **extra: str,
) -> dict[str, str]:
    """Environment for ``python -m consumer run`` against the test broker and emulator."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("KAFKA_", "KLAVIYO_", "SCHEMA_REGISTRY"))
    }
    env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
            "KLAVIYO_BASE_URL": base_url,
            "KLAVIYO_API_KEY": api_key,
            "KAFKA_KLAVIYO_KAFKA__TOPICS": topic,
            "KAFKA_KLAVIYO_KAFKA__GROUP_ID": group_id,
            "KAFKA_KLAVIYO_KAFKA__DEAD_LETTER_TOPIC": dead_letter_topic,
            "KAFKA_KLAVIYO_BATCH__LINGER_MS": "100",
            "KAFKA_KLAVIYO_KAFKA__COMMIT_INTERVAL_MS": "200",
            "KAFKA_KLAVIYO_DELIVERY__BACKOFF_MAX_S": "2",
        }
    )
    env.update(extra)
    return env


class ConsumerProcess:
    """``python -m consumer run`` (or another command, ``command`` with its arguments) in its
    own process, its output in a log file."""

    def __init__(
        self, env: dict[str, str], log_path: Path, command: str | Sequence[str] = "run"
    ) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        args = [command] if isinstance(command, str) else list(command)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "consumer", *args],
            env=env,
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM and wait: the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout_s)

    def kill(self) -> None:
        """SIGKILL: no drain, no commit."""
        self.process.kill()
        self.process.wait(10)
        self._log.close()

    def wait(self, timeout_s: float) -> int:
        try:
            code = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise AssertionError(
                f"consumer did not exit within {timeout_s:.0f}s:\n{self.output()}"
            ) from None
        finally:
            self._log.close()
        return code

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> ConsumerProcess:
        return self

    def __exit__(self, *_: object) -> None:
        if self.process.poll() is None:
            self.kill()


# -- fault tests (tests/integration/test_faults.py) -------------------------------------------


def expected_event_ids(orders: Iterable[dict[str, Any]]) -> set[tuple[str, str]]:
    """(metric, unique_id) of every event the OrderPlaced records should become (docs/DESIGN.md
    section 2): Placed Order uses the order id, each Ordered Product the order id + line id
    (its SKU when it has none, numbered when SKUs repeat)."""
    ids: set[tuple[str, str]] = set()
    for order in orders:
        order_id = order["order_id"]
        ids.add(("Placed Order", order_id))
        seen: dict[str, int] = {}
        for line in order["line_items"]:
            key = line.get("line_id") or line["sku"]
            seen[key] = seen.get(key, 0) + 1
            identity = key if seen[key] == 1 else f"{key}_{seen[key]}"
            ids.add(("Ordered Product", f"{order_id}_{identity}"))
    return ids


def rss_mib(pid: int) -> float | None:
    """Resident set size of ``pid`` in MiB (``VmRSS`` in /proc), None once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


class RssMonitor:
    """Samples a process's RSS on a background thread; ``peak`` and ``samples`` read it back."""

    def __init__(self, pid: int, interval_s: float = 0.25) -> None:
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            value = rss_mib(self.pid)
            if value is None:
                return
            self.samples.append((time.monotonic(), value))
            self._stop.wait(self._interval_s)

    def peak(self, since: float = 0.0, until: float = float("inf")) -> float:
        """Highest sample taken between the two ``time.monotonic()`` instants (0 if none)."""
        return max((v for t, v in list(self.samples) if since <= t <= until), default=0.0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def log_messages(output: str, level: str | None = None) -> list[str]:
    """The ``message`` of every JSON log line in a consumer's output (optionally one level)."""
    messages = []
    for line in output.splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and (level is None or entry.get("level") == level):
            messages.append(str(entry.get("message", "")))
    return messages


def owned_partitions(output: str, topic: str) -> set[int]:
    """Partitions of ``topic`` a consumer owned at the end of its log (assigned - revoked/lost).

    Reads the runner's ``assigned t[0],t[1]`` / ``revoked ...`` / ``lost ...`` lines, which
    list incremental changes under the cooperative-sticky assignor. Log lines are masked
    (:func:`consumer.redact.mask`), so the topic may appear in its masked form.
    """
    from consumer.redact import mask

    names = {topic, mask(topic)}
    pattern = re.compile(r"([^\s,]+)\[(\d+)\]")
    owned: set[int] = set()
    for message in log_messages(output):
        verb = message.split(" ", 1)[0]
        partitions = {int(p) for name, p in pattern.findall(message) if name in names}
        if verb == "assigned":
            owned |= partitions
        elif verb in ("revoked", "lost"):
            owned -= partitions
    return owned


def kafka_properties(**properties: str | int) -> str:
    """``KAFKA_KLAVIYO_KAFKA__PROPERTIES`` value: librdkafka properties as JSON; pass
    ``session_timeout_ms=6000`` for ``session.timeout.ms``."""
    return json.dumps({key.replace("_", "."): value for key, value in properties.items()})


class Stack:
    """One topic, its dead-letter topic and consumer group, on a broker and an emulator
    (``tests/integration/test_faults.py``, ``test_accounts.py``)."""

    def __init__(
        self,
        broker: LocalKafka,
        emulator: RunningEmulator,
        topic: str,
        tmp_path: Path,
        *,
        partitions: int = 3,
        dead_letter_topic: str | None = None,
    ) -> None:
        self.broker = broker
        self.klaviyo = emulator
        self.topic = topic
        self.partitions = partitions
        self.dlq = dead_letter_topic or f"{topic}.dlq"
        self.group_id = f"group-{uuid.uuid4().hex[:8]}"
        self._tmp_path = tmp_path
        broker.create_topic(topic, partitions=partitions)
        if dead_letter_topic is None:
            broker.create_topic(self.dlq, partitions=1)

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap_servers

    def env(self, **extra: str) -> dict[str, str]:
        return consumer_env(
            bootstrap_servers=self.bootstrap,
            base_url=self.klaviyo.base_url,
            api_key=self.klaviyo.api_key,
            topic=self.topic,
            group_id=self.group_id,
            dead_letter_topic=self.dlq,
            **extra,
        )

    def consumer(self, name: str, **extra: str) -> ConsumerProcess:
        log = self._tmp_path / f"consumer-{name}-{uuid.uuid4().hex[:6]}.log"
        return ConsumerProcess(self.env(**extra), log)

    def command(self, name: str, args: Sequence[str], **extra: str) -> ConsumerProcess:
        """``python -m consumer *args`` with this stack's settings (replay, dlq, group)."""
        log = self._tmp_path / f"{name}-{uuid.uuid4().hex[:6]}.log"
        return ConsumerProcess(self.env(**extra), log, command=args)

    def produce(self, count: int) -> list[dict[str, Any]]:
        orders = list(generated_orders(count, prefix=self.topic))
        produce_orders(self.bootstrap, self.topic, orders)
        return orders

    def produce_records(
        self,
        records: Iterable[tuple[bytes | None, str, dict[str, Any]]],
        *,
        partition: int | None = None,
    ) -> int:
        """Produce (key, record full name, record) triples of any type, in order."""
        return produce_records(self.bootstrap, self.topic, records, partition=partition)

    def lag(self) -> int:
        return group_lag(self.bootstrap, self.group_id, self.topic)

    def partition_lags(self) -> dict[int, int]:
        """Partition -> messages past the group's committed offset."""
        return partition_lags(self.bootstrap, self.group_id, self.topic)

    def committed(self) -> dict[int, int]:
        return committed_offsets(self.bootstrap, self.group_id, self.topic)

    def accepted(self, account: str | None = None) -> int:
        """Events the emulator has accepted (after its dedup), in all accounts or one."""
        stats = self.klaviyo.client.stats()
        if account is None:
            return stats.accepted.get("events", 0)
        return int(stats.accounts.get(account, {}).get("accepted", {}).get("events", 0))

    def dead_letters(self) -> list[Any]:
        return read_topic(self.bootstrap, self.dlq, timeout_s=5)

    def assert_exactly_once(
        self, orders: list[dict[str, Any]], *, rejections_injected: bool = False
    ) -> None:
        """Every expected event is in the emulator, each (metric, unique_id) exactly once."""
        expected = expected_event_ids(orders)
        got = [(e.metric, e.unique_id or "") for e in self.klaviyo.client.events()]
        distinct = set(got)
        missing = expected - distinct
        unexpected = distinct - expected
        twice = len(got) - len(distinct)
        assert not missing and not unexpected and twice == 0, (
            f"{len(missing)} expected events missing (e.g. {sorted(missing)[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {sorted(unexpected)[:3]}), "
            f"{twice} counted twice; {len(got)} accepted of {len(expected)} expected"
        )
        stats = self.klaviyo.client.stats()
        assert stats.accepted.get("events", 0) == len(expected)
        # Every body was valid: nothing was refused as malformed and retried or lost.
        assert sum(stats.validation_failures.values()) == 0, stats.validation_failures
        if not rejections_injected:
            assert stats.responses("events", 400) == 0


def alive(consumer: ConsumerProcess) -> None:
    """Fail with the consumer's log if it has exited."""
    code = consumer.process.poll()
    assert code is None, f"consumer exited with {code} mid-run:\n{consumer.output()[-5000:]}"


def wait_until_alive(consumer: ConsumerProcess, predicate: Any, timeout_s: float, what: str) -> Any:
    """wait_for that also fails at once (with the log) if the consumer died meanwhile."""

    def check() -> Any:
        alive(consumer)
        return predicate()

    return wait_for(check, timeout_s, what)


def wait_for_commits(stack: Stack, consumer: ConsumerProcess, timeout_s: float, what: str) -> None:
    """Wait until the group has committed everything; on timeout say where it stands."""
    try:
        wait_until_alive(consumer, lambda: stack.lag() == 0, timeout_s, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; committed {stack.committed()}, lag {stack.lag()}") from None


class CommitSampler:
    """Samples a group's committed offsets on a background thread, all through a run.

    ``highest()`` is the largest committed offset seen per partition: a guarantee about what
    may never be committed is checked against every sample, not only against the end state.
    """

    def __init__(self, stack: Stack, interval_s: float = 0.25) -> None:
        self._stack = stack
        self.samples: list[dict[int, int]] = []
        self.errors: list[str] = []
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="commit-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(self._stack.committed())
            except Exception as exc:  # a busy broker: note it, sample again
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(self._interval_s)

    def highest(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for sample in list(self.samples):
            for partition, offset in sample.items():
                out[partition] = max(out.get(partition, offset), offset)
        return out

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)
        # One last sample, after whatever the process did at the end.
        self.samples.append(self._stack.committed())

    def __enter__(self) -> CommitSampler:
        return self

    def __exit__(self, *_: object) -> None:
        if not self._stop.is_set():
            self.stop()


def accounts_config(tmp_path: Path) -> Path:
    """A config file with two Klaviyo accounts, routed by ``store_id``: ``store-a`` to
    brand-a (key in ``KLAVIYO_KEY_BRAND_A``), ``store-b`` to brand-b (``KLAVIYO_KEY_BRAND_B``)."""
    config = tmp_path / "accounts.yaml"
    config.write_text(
        "accounts:\n"
        "  brand-a: {api_key_env: KLAVIYO_KEY_BRAND_A}\n"
        "  brand-b: {api_key_env: KLAVIYO_KEY_BRAND_B}\n"
        "routing:\n"
        "  field: store_id\n"
        "  accounts: {store-a: brand-a, store-b: brand-b}\n"
    )
    return config


#: The guide's journey (``kafka_klaviyo_dev.samples.guide_journey``), counted by hand from the
#: guide: what Klaviyo receives per metric, and per endpoint (two books, one order of two lines).
JOURNEY_METRICS = {
    "Active on Site": 1,
    "Viewed Product": 1,
    "Added to Cart": 1,
    "Started Checkout": 1,
    "Placed Order": 1,
    "Ordered Product": 2,
    "Fulfilled Order": 1,
    "Cancelled Order": 1,
    "Refunded Order": 1,
}
JOURNEY_ACCEPTED = {
    "events": 10,
    "profile_import": 1,
    "subscribe": 1,
    "catalog_create": 2,
    "category_create": 3,
}
