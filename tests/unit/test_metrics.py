"""Metric helpers: the bulk histogram, the lag sampler, counter totals, commit latency."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from consumer.commit import Committer
from consumer.dead_letter import DeadLetterBudget
from consumer.metrics import BulkHistogram, LagSampler, Metrics
from tests.fakes import FakeBroker, FakeConsumer


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_bulk_histogram_counts_each_value_in_its_bucket_cumulatively() -> None:
    metrics = Metrics()
    metrics.end_to_end.observe_many("events", [0.05, 0.1, 0.3, 7.0, 5000.0])
    metrics.end_to_end.observe_many("events", [0.2])
    metrics.end_to_end.observe_many("profiles", [])
    samples = _samples(metrics)
    name = "kafka_klaviyo_end_to_end_delay_seconds"

    def bucket(le: str, endpoint: str = "events") -> float:
        return samples[(f"{name}_bucket", (("endpoint", endpoint), ("le", le)))]

    assert bucket("0.1") == 2  # 0.05 and 0.1: "le" includes the bound
    assert bucket("0.25") == 3
    assert bucket("0.5") == 4
    assert bucket("5.0") == 4
    assert bucket("10.0") == 5
    assert bucket("3600.0") == 5
    assert bucket("+Inf") == 6
    assert samples[(f"{name}_count", (("endpoint", "events"),))] == 6
    assert samples[(f"{name}_sum", (("endpoint", "events"),))] == 5007.65
    assert bucket("+Inf", "profiles") == 0


def test_bulk_histogram_without_observations_shows_no_series() -> None:
    histogram = BulkHistogram("h_seconds", "help", "endpoint", buckets=(1.0,))
    families = list(histogram.collect())
    assert [family.samples for family in families] == [[]]


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lag_sampler_sets_high_watermark_minus_committed_every_interval() -> None:
    metrics = Metrics()
    high = {("t", 0): 10, ("t", 1): 7}
    committed: dict[tuple[str, int], int | None] = {("t", 0): 4, ("t", 1): None}
    clock = _Clock()
    sampler = LagSampler(
        metrics,
        lambda topic, partition: (0, high[(topic, partition)]),
        committed.get,
        interval_s=5,
        clock=clock,
    )
    sampler.sample([("t", 0), ("t", 1)])
    gauge = "kafka_klaviyo_consumer_lag_messages"
    samples = _samples(metrics)
    assert samples[(gauge, (("partition", "0"), ("topic", "t")))] == 6
    # Nothing committed yet: no lag is shown rather than a guess.
    assert (gauge, (("partition", "1"), ("topic", "t"))) not in samples

    high[("t", 0)] = 12
    committed[("t", 1)] = 7
    clock.now += 1
    sampler.sample([("t", 0), ("t", 1)])  # within the interval: unchanged
    assert _samples(metrics)[(gauge, (("partition", "0"), ("topic", "t")))] == 6
    clock.now += 5
    sampler.sample([("t", 0), ("t", 1)])
    samples = _samples(metrics)
    assert samples[(gauge, (("partition", "0"), ("topic", "t")))] == 8
    assert samples[(gauge, (("partition", "1"), ("topic", "t")))] == 0

    sampler.sample([("t", 1)], force=True)  # t[0] revoked: its series goes
    samples = _samples(metrics)
    assert (gauge, (("partition", "0"), ("topic", "t"))) not in samples
    assert samples[(gauge, (("partition", "1"), ("topic", "t")))] == 0


def test_lag_sampler_skips_partitions_librdkafka_knows_nothing_of() -> None:
    metrics = Metrics()

    def watermarks(topic: str, partition: int) -> tuple[int, int]:
        if partition == 0:
            raise KafkaException(KafkaError(KafkaError._UNKNOWN_PARTITION))
        return (-1001, -1001)

    sampler = LagSampler(metrics, watermarks, lambda key: 3)
    sampler.sample([("t", 0), ("t", 1)])
    assert not any(name.startswith("kafka_klaviyo_consumer_lag") for name, _ in _samples(metrics))


def test_total_sums_the_samples_matching_the_labels() -> None:
    metrics = Metrics()
    metrics.messages.labels("decode", "dead_lettered").inc(2)
    metrics.messages.labels("deliver", "dead_lettered").inc(3)
    metrics.messages.labels("translate", "translated").inc(7)
    metrics.outputs_delivered.labels("events", "acme").inc(4)
    metrics.outputs_delivered.labels("profiles", "beta").inc(1)
    assert metrics.total("kafka_klaviyo_messages", outcome="dead_lettered") == 5
    assert metrics.total("kafka_klaviyo_messages", stage="translate") == 7
    assert metrics.total_delivered() == 5
    assert metrics.total("kafka_klaviyo_retries") == 0


def test_committer_reports_the_latency_of_sync_and_async_commits() -> None:
    broker = FakeBroker()
    broker.create("t", 1)
    message = broker.append("t", 0, b"x")
    committers: list[Committer] = []
    consumer = FakeConsumer(
        {"group.id": "g", "on_commit": lambda *args: committers[0].on_commit(*args)}, broker
    )
    consumer.subscribe(["t"])
    consumer.consume(0, 0)  # serves the assignment
    clock = _Clock()
    latencies: list[float] = []

    def commit_taking(seconds: float):  # type: ignore[no-untyped-def]
        real = consumer.commit

        def commit(*, asynchronous: bool = True):  # type: ignore[no-untyped-def]
            clock.now += seconds
            return real(asynchronous=asynchronous)

        return commit

    consumer.commit = commit_taking(0.25)  # type: ignore[method-assign]
    committer = Committer(
        consumer,
        budget=DeadLetterBudget(max_consecutive=None, max_ratio=None, window=10),
        interval_s=1,
        clock=clock,
        on_latency=latencies.append,
    )
    committers.append(committer)
    committer.assign([("t", 0)])
    ticket = committer.track(message)
    ticket.expect(0)
    committer.commit(sync=True)
    assert latencies == [0.25]

    second = committer.track(broker.append("t", 0, b"y"))
    second.expect(0)
    committer.commit(sync=False)
    assert latencies == [0.25]  # not confirmed yet
    clock.now += 2
    consumer.consume(0, 0)  # serves the commit callback
    assert latencies == [0.25, 2.25]
    assert committer.committed(("t", 0)) == 2


def test_ages_are_bucketed_from_sorted_stamps_like_single_observations() -> None:
    by_ages, by_values = Metrics(), Metrics()
    now_ms = 1_000_000.0
    stamps = sorted([-1, 0, 999_950, 999_900, 999_000, 995_000, 400_000, 1_000_500, 999_900])
    by_ages.end_to_end.observe_ages("events", now_ms, stamps)
    ages = [max(0.0, (now_ms - s) / 1000.0) for s in stamps if s > 0]
    by_values.end_to_end.observe_many("events", ages)
    name = "kafka_klaviyo_end_to_end_delay_seconds"

    def delays(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {key: value for key, value in _samples(metrics).items() if name in key[0]}

    assert delays(by_ages) == delays(by_values)
    samples = _samples(by_ages)
    assert samples[(f"{name}_count", (("endpoint", "events"),))] == 7  # -1 and 0: no stamp
    assert samples[(f"{name}_bucket", (("endpoint", "events"), ("le", "0.1")))] == 4
    assert samples[(f"{name}_bucket", (("endpoint", "events"), ("le", "1.0")))] == 5
    assert samples[(f"{name}_sum", (("endpoint", "events"),))] == sum(ages)
    by_ages.end_to_end.observe_ages("profiles", now_ms, [-1])
    assert (f"{name}_count", (("endpoint", "profiles"),)) not in _samples(by_ages)
