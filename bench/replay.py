"""Benchmarks of ``kafka-klaviyo replay`` against Klaviyo's real bulk-event limits.

Two figures, each over whole fixed rate-limit windows of the emulator (CLOCK_MONOTONIC is
shared, so the windows align exactly), the emulator enforcing Klaviyo's limits for Bulk
Create Events (10/s burst, 150/min steady: 150,000 events a minute):

(d) ``d_replay_*``: ``replay`` of a backlog of OrderPlaced orders alone, ``--rate-share 1``:
    events per minute (target >= 95% of the limit) and the share of requests answered 429
    (target <= 1%).
(e) ``e_replay_with_live_*``: the same replay at ``--rate-share 0.5`` while a live group
    (``run`` with ``delivery.rate_limit_share`` 0.5) takes orders produced in real time at a
    little under its half: both together (target >= 90% of the limit), the 429 share
    (target <= 2%), and the live group's p99 end-to-end delay, from each message's Kafka
    timestamp to Klaviyo's 202, read from the live consumer's
    ``kafka_klaviyo_end_to_end_delay_seconds`` histogram (target < 10 s).

    python -m bench.replay             # both (about 6 minutes)
    python -m bench.replay --quick     # smaller backlogs (one window each still)

Figures go to ``bench-results.json`` (see :mod:`bench.common`).
"""

from __future__ import annotations

import argparse
import math
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

from bench.common import Entry, print_table, record
from bench.e2e import (
    API_KEY,
    LOG_DIR,
    PARTITIONS,
    ConsumerProcess,
    EmulatorProcess,
    OrderMessages,
    _clean_env,
    _load,
    _sleep_until,
    _wait,
)

DELAY_METRIC = "kafka_klaviyo_end_to_end_delay_seconds"


@dataclass(frozen=True)
class Sizes:
    orders: int = 100_000
    windows: int = 1
    window_s: float = 60.0
    align: bool = True
    # Live traffic of (e), in orders per second (about 3.5 events each): a little under the
    # live group's half of 150,000 events a minute.
    live_orders_per_s: float = 330.0
    quick: bool = False


FULL = Sizes()
# The steady limit bites only after a minute's worth of requests (150 of 1,000 events): a
# backlog under that is delivered at the burst rate, so even the quick run needs one.
QUICK = Sizes(orders=60_000, quick=True)


class Bench:
    """The broker, the produced topics and the figures of one run."""

    def __init__(self, sizes: Sizes) -> None:
        from kafka_klaviyo_dev.kafka import LocalKafka

        self.sizes = sizes
        self.entries: list[Entry] = []
        self.messages = OrderMessages()
        self.kafka = LocalKafka()
        self.kafka.start()
        self._next = 0

    def close(self) -> None:
        self.kafka.stop()

    def put(self, *args: object, **kwargs: object) -> None:
        if self.sizes.quick:
            kwargs["note"] = "; ".join(filter(None, ["QUICK run", str(kwargs.get("note") or "")]))
        entry = record(*args, **kwargs)  # type: ignore[arg-type]
        self.entries.append(entry)
        print(f"  -> {entry['name']} = {entry['value']:,} {entry['unit']}", flush=True)

    def backlog(self, topic: str, count: int) -> None:
        from kafka_klaviyo_dev.produce import produce_values

        self.kafka.create_topic(topic, partitions=PARTITIONS)
        self.kafka.create_topic(f"{topic}.dlq", partitions=1)
        produce_values(self.kafka.bootstrap_servers, topic, self.messages.stream(self._next, count))
        self._next += count

    def env(self, topic: str, base_url: str, **extra: str) -> dict[str, str]:
        return _clean_env(
            KAFKA_BOOTSTRAP_SERVERS=self.kafka.bootstrap_servers,
            KLAVIYO_BASE_URL=base_url,
            KLAVIYO_API_KEY=API_KEY,
            KAFKA_KLAVIYO_KAFKA__TOPICS=topic,
            KAFKA_KLAVIYO_KAFKA__GROUP_ID=f"bench-{topic}",
            KAFKA_KLAVIYO_KAFKA__DEAD_LETTER_TOPIC=f"{topic}.dlq",
            KAFKA_KLAVIYO_DELIVERY__SHUTDOWN_GRACE_S="5",
            **extra,
        )

    def replay(self, topic: str, emulator: EmulatorProcess, share: float) -> ConsumerProcess:
        return ConsumerProcess(
            self.env(topic, emulator.base_url),
            LOG_DIR / f"replay-{topic}.log",
            ("-m", "consumer", "replay", "--from-offset", "0", "--rate-share", str(share)),
        )

    def measure(self, emulator: EmulatorProcess) -> tuple[float, float, dict[str, int]]:
        """(events a minute over the windows, their seconds, requests by status at the end)."""
        window = self.sizes.window_s
        start = (
            (math.floor(time.monotonic() / window) + 1) * window
            if self.sizes.align
            else time.monotonic()
        )
        end = start + self.sizes.windows * window
        _sleep_until(start)
        before, _ = emulator.delivered()
        _sleep_until(end)
        after, statuses = emulator.delivered()
        return (after - before) / (end - start) * 60, end - start, statuses

    # -- (d) a replay alone ---------------------------------------------------------------

    def run_d(self) -> None:
        topic = "bench.d"
        self.backlog(topic, self.sizes.orders)
        print(f"\n(d) replay alone: {self.sizes.orders:,} orders, --rate-share 1", flush=True)
        emulator = EmulatorProcess(LOG_DIR / "emulator-d.log", rate_limits=True, validate=True)
        limit = _events_limit(emulator)
        replay = self.replay(topic, emulator, 1.0)
        try:
            _wait(lambda: emulator.delivered()[0] > 0 or not replay.alive(), 120, "a delivery")
            time.sleep(2.0)  # past the first burst
            rate, seconds, statuses = self.measure(emulator)
            alive = replay.alive()
        finally:
            code = replay.stop()
            emulator.stop()
        if not alive:
            raise SystemExit(f"(d): the replay ended before the window did:\n{replay.tail()}")
        total = sum(statuses.values())
        self.put(
            "d_replay_events_per_min",
            rate,
            "events/min",
            baseline=float(limit),
            target=">= 0.95",
            note=f"limit {limit:,} events/min; {seconds:.0f}s of whole emulator windows;"
            f" {_load()}; replay stopped by SIGTERM -> exit {code}",
        )
        self.put(
            "d_replay_429_share",
            statuses.get("429", 0) / total if total else 0.0,
            "of requests",
            target="<= 0.01",
            note=f"statuses from start to window end: {statuses}",
        )

    # -- (e) a replay and a live group together --------------------------------------------

    def run_e(self) -> None:
        sizes = self.sizes
        replay_topic, live_topic = "bench.e-replay", "bench.e-live"
        self.backlog(replay_topic, sizes.orders)
        self.kafka.create_topic(live_topic, partitions=PARTITIONS)
        self.kafka.create_topic(f"{live_topic}.dlq", partitions=1)
        print(
            f"\n(e) replay ({sizes.orders:,} orders, --rate-share 0.5) with a live group"
            f" (rate_limit_share 0.5, {sizes.live_orders_per_s:.0f} orders/s produced live)",
            flush=True,
        )
        emulator = EmulatorProcess(LOG_DIR / "emulator-e.log", rate_limits=True, validate=True)
        limit = _events_limit(emulator)
        port = _free_port()
        live = ConsumerProcess(
            self.env(
                live_topic,
                emulator.base_url,
                KAFKA_KLAVIYO_DELIVERY__RATE_LIMIT_SHARE="0.5",
                KAFKA_KLAVIYO_OBSERVABILITY__METRICS_PORT=str(port),
            ),
            LOG_DIR / "consumer-e-live.log",
        )
        stop = threading.Event()
        feeder = threading.Thread(
            target=self._feed, args=(live_topic, sizes.live_orders_per_s, stop), daemon=True
        )
        replay = None
        try:
            _wait(live.assigned, 120, "the live group's assignment")
            feeder.start()
            replay = self.replay(replay_topic, emulator, 0.5)
            _wait(lambda: emulator.delivered()[0] > 0 or not replay.alive(), 120, "a delivery")
            time.sleep(5.0)  # both running, past the first bursts
            delays_before = _histogram(port, DELAY_METRIC)
            rate, seconds, statuses = self.measure(emulator)
            delays = _histogram(port, DELAY_METRIC)
            alive = replay.alive() and live.alive()
        finally:
            stop.set()
            feeder.join(10)
            replay_code = replay.stop() if replay is not None else -1
            live_code = live.stop()
            emulator.stop()
        if not alive:
            raise SystemExit("(e): the replay or the live consumer ended before the window did")
        window = {bound: count - delays_before.get(bound, 0) for bound, count in delays.items()}
        p99 = _quantile(window, 0.99)
        total = sum(statuses.values())
        self.put(
            "e_replay_with_live_events_per_min",
            rate,
            "events/min",
            baseline=float(limit),
            target=">= 0.9",
            note=f"replay and live group together; limit {limit:,} events/min;"
            f" {seconds:.0f}s of whole emulator windows; {_load()};"
            f" exits: replay {replay_code}, live {live_code}",
        )
        self.put(
            "e_replay_with_live_429_share",
            statuses.get("429", 0) / total if total else 0.0,
            "of requests",
            target="<= 0.02",
            note=f"statuses from start to window end: {statuses}",
        )
        self.put(
            "e_live_p99_delay_s",
            p99,
            "s",
            target="< 10",
            note=f"live group, Kafka timestamp to Klaviyo's 202, over the window; the upper"
            f" bound of the histogram bucket holding the 99th percentile of"
            f" {int(window.get(math.inf, 0)):,} events",
        )

    def _feed(self, topic: str, per_s: float, stop: threading.Event) -> None:
        from confluent_kafka import Producer

        producer = Producer(
            {"bootstrap.servers": self.kafka.bootstrap_servers, "linger.ms": 20}
        )
        number = 10_000_000
        started = time.monotonic()
        sent = 0
        while not stop.is_set():
            due = int((time.monotonic() - started) * per_s)
            for key, value in self._live(number + sent, due - sent):
                producer.produce(topic, value=value, key=key)
            sent = max(sent, due)
            producer.poll(0)
            time.sleep(0.01)
        producer.flush(10)

    def _live(self, first: int, count: int) -> Iterator[tuple[bytes, bytes]]:
        return self.messages.stream(first, count) if count > 0 else iter(())


def _events_limit(emulator: EmulatorProcess) -> int:
    config = emulator.client.config()
    spec = next(e for e in config["endpoints"] if e["name"] == "events")
    return int(min(spec["burst"] * 60, spec["steady"]) * spec["max_items"])


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _histogram(port: int, name: str) -> dict[float, float]:
    """Cumulative bucket counts (upper bound -> count) of one histogram on /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if not line.startswith(f"{name}_bucket{{"):
            continue
        labels, _, value = line.rpartition(" ")
        bound = labels.split('le="', 1)[1].split('"', 1)[0]
        key = math.inf if bound == "+Inf" else float(bound)
        buckets[key] = buckets.get(key, 0.0) + float(value)
    return buckets


def _quantile(cumulative: dict[float, float], q: float) -> float:
    """The upper bound of the bucket holding quantile ``q`` (inf if past the last bound)."""
    total = cumulative.get(math.inf, 0.0)
    if not total:
        return 0.0
    for bound in sorted(cumulative):
        if cumulative[bound] >= q * total:
            return bound
    return math.inf


def main(args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short windows, smaller backlog")
    parser.add_argument("--only", default="de", help="scenarios to run: d, e or de")
    options = parser.parse_args(args)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    bench = Bench(QUICK if options.quick else FULL)
    started = time.monotonic()
    try:
        for scenario in "de":
            if scenario in options.only:
                getattr(bench, f"run_{scenario}")()
    finally:
        bench.close()
    print_table(bench.entries, title=f"replay benchmarks ({time.monotonic() - started:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
