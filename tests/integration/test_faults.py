"""Delivery that loses nothing, proven under faults on the real stack.

Every test runs the consumer as its own OS process (``python -m consumer run``) against a real
Apache Kafka broker and the Klaviyo emulator, then checks the guarantees of docs/DESIGN.md
section 2 from the outside: what the emulator accepted (after Klaviyo's dedup on profile + metric +
unique_id), what the dead-letter topic holds and which offsets the group committed.

"Exactly once in effect" is checked the same way everywhere (:meth:`Stack.assert_exactly_once`):
the emulator holds exactly the expected (metric, unique_id) pairs, each once, so nothing was lost
and no redelivery was counted twice.

Faults: SIGKILL of the consumer (three times in one run), a broker restart and a broker crash
(on a broker only this module uses), 60 s of 503s, 429 storms and Klaviyo's real rate limits,
an unwritable dead-letter topic, two group members with one killed, and SIGTERM mid-run.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consumer.redact import mask
from consumer.schemas import SchemaCatalog
from kafka_klaviyo_dev.emulator import RateLimitSettings
from kafka_klaviyo_dev.emulator.config import WindowLimits
from kafka_klaviyo_dev.encode import encode_single_object
from kafka_klaviyo_dev.inspect import read_topic
from kafka_klaviyo_dev.kafka import LocalKafka
from kafka_klaviyo_dev.produce import produce_orders, produce_values
from kafka_klaviyo_dev.samples import generated_orders
from tests.fixtures_emulator import RunningEmulator
from tests.support import (
    RssMonitor,
    Stack,
    alive,
    expected_event_ids,
    kafka_properties,
    log_messages,
    owned_partitions,
    wait_for,
    wait_for_commits,
    wait_until_alive,
)

pytestmark = pytest.mark.integration

CATALOG = SchemaCatalog.load()

#: A SIGKILLed member keeps its partitions until its session times out (45 s by default);
#: 6 s, the broker's minimum, keeps the kill tests short without changing what they prove.
FAST_SESSION = kafka_properties(session_timeout_ms=6000, heartbeat_interval_ms=1000)

#: The production default (the shared test environment uses 200 ms): a wider window of
#: delivered-but-uncommitted work makes every kill leave redeliveries behind.
DEFAULT_COMMIT_INTERVAL = "1000"

BIG_RUN = 20_000


@pytest.fixture
def stack(
    kafka_broker: LocalKafka, emulator: RunningEmulator, topic_name: str, tmp_path: Path
) -> Stack:
    """A 3-partition topic on the shared broker, delivering to the shared emulator."""
    return Stack(kafka_broker, emulator, topic_name, tmp_path)


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A broker only this module restarts and kills, so the shared one stays undisturbed."""
    broker = LocalKafka(work_dir=tmp_path_factory.mktemp("faults-kafka"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


# -- crashes of the consumer -----------------------------------------------------------------


def test_sigkill_three_times_loses_nothing_and_counts_nothing_twice(stack: Stack) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    orders = stack.produce(BIG_RUN)
    expected = len(expected_event_ids(orders))
    # Three random points, one in each third of the run (by events accepted so far).
    points = [rng.uniform(0.05, 0.3), rng.uniform(0.35, 0.6), rng.uniform(0.65, 0.9)]
    env = {
        "KAFKA_KLAVIYO_KAFKA__PROPERTIES": FAST_SESSION,
        "KAFKA_KLAVIYO_KAFKA__COMMIT_INTERVAL_MS": DEFAULT_COMMIT_INTERVAL,
    }
    for number, point in enumerate(points, 1):
        with stack.consumer(f"killed-{number}", **env) as consumer:
            target = int(expected * point)
            wait_until_alive(
                consumer,
                lambda target=target: stack.accepted() >= target,
                240,
                f"{target} events before kill {number} (seed {seed})",
            )
            time.sleep(rng.uniform(0.0, 0.5))
            alive(consumer)
            consumer.kill()

    with stack.consumer("final", **env) as consumer:
        wait_until_alive(consumer, lambda: stack.lag() == 0, 300, f"the rest (seed {seed})")
        assert consumer.stop() == 0, consumer.output()

    stack.assert_exactly_once(orders)
    stats = stack.klaviyo.client.stats()
    print(
        f"seed {seed}: kills at {[round(p, 2) for p in points]} of the run; "
        f"duplicates dropped {stats.duplicates_dropped}"
    )
    # Work delivered but not committed before each kill was delivered again, and dropped by
    # Klaviyo's dedup: proof the kills landed mid-delivery and redelivery happened.
    assert stats.duplicates_dropped.get("events", 0) > 0, (seed, stats.duplicates_dropped)
    assert stack.dead_letters() == []


# -- the broker goes away --------------------------------------------------------------------


def test_broker_restart_and_crash_mid_run_lose_nothing(
    own_broker: LocalKafka, emulator: RunningEmulator, topic_name: str, tmp_path: Path
) -> None:
    stack = Stack(own_broker, emulator, topic_name, tmp_path)
    orders = stack.produce(BIG_RUN)
    expected = len(expected_event_ids(orders))
    # A small in-flight cap makes the consumer pause and fetch again all through the run, so
    # the broker is needed for fetching and for commits while it goes away.
    with stack.consumer(
        "through-restarts", KAFKA_KLAVIYO_DELIVERY__MAX_IN_FLIGHT_MESSAGES="2000"
    ) as consumer:
        wait_until_alive(consumer, lambda: stack.accepted() >= expected // 5, 240, "a fifth")
        own_broker.restart()  # graceful: controlled shutdown, same address and data
        alive(consumer)
        at_restart = stack.accepted()
        print(f"broker restarted at {at_restart}/{expected} events")
        wait_until_alive(
            consumer,
            lambda: stack.accepted() >= min(expected, at_restart + expected // 5),
            240,
            "progress after the broker restart",
        )
        crash_at = stack.accepted()
        print(f"broker crashed at {crash_at}/{expected} events")
        own_broker.kill()  # crash: SIGKILL, no controlled shutdown
        time.sleep(2)
        own_broker.start()
        alive(consumer)
        wait_until_alive(
            consumer, lambda: stack.accepted() >= expected, 300, "every event delivered"
        )
        # Delivered is not enough: the group's offsets must catch up too, or a later restart
        # redelivers (and a monitor reports lag for) work that is long done.
        wait_for_commits(stack, consumer, 60, "offsets committed after the broker came back")
        assert consumer.stop() == 0, consumer.output()

    stack.assert_exactly_once(orders)
    assert stack.dead_letters() == []


def test_offsets_catch_up_once_the_broker_is_back(
    own_broker: LocalKafka, emulator: RunningEmulator, topic_name: str, tmp_path: Path
) -> None:
    """The broker goes away while the last of a backlog is delivered, so the commits of that
    work fail. Once the broker is back the consumer must commit it, without waiting for new
    messages to arrive (or for a shutdown). Three times: clean stops and a crash (commits
    are lost only in some of the ways the coordinator goes away, so one outage may not show
    it)."""
    stack = Stack(own_broker, emulator, topic_name, tmp_path)
    orders: list[dict[str, Any]] = []
    with stack.consumer("broker-gone") as consumer:
        for number, (outage, prefix) in enumerate(
            [
                (own_broker.stop, "stopped"),
                (own_broker.kill, "crashed"),
                (own_broker.stop, "stopped-again"),
            ],
            1,
        ):
            batch = list(generated_orders(3000, prefix=f"{topic_name}-{prefix}"))
            produce_orders(stack.bootstrap, stack.topic, batch)
            orders += batch
            expected = len(expected_event_ids(orders))
            # The backlog is fetched within a second; delivering it needs no broker.
            wait_until_alive(
                consumer,
                lambda expected=expected: stack.accepted() >= expected - 9000,
                120,
                f"delivery under way ({number})",
            )
            outage()
            try:
                wait_until_alive(
                    consumer,
                    lambda expected=expected: stack.accepted() >= expected,
                    120,
                    f"the backlog delivered while the broker is {prefix}",
                )
            finally:
                own_broker.start()
            # Generous: after a long outage the member may have to rejoin the group first.
            wait_for_commits(stack, consumer, 180, f"offsets committed after the broker {prefix}")
        assert consumer.stop() == 0, consumer.output()
    stack.assert_exactly_once(orders)


# -- Klaviyo is down or throttling -----------------------------------------------------------

OUTAGE_S = 60
#: Peak RSS allowed while Klaviyo is down: the issue's memory target. Measured on this project:
#: about 185 MiB with the cap of 2,000 messages below (librdkafka's prefetch included); about
#: 720 MiB when the cap does not hold (the whole backlog of 20,000 orders polled and batched).
RSS_BOUND_MIB = 300


def test_klaviyo_503_for_a_minute_dead_letters_nothing_and_memory_stays_bounded(
    stack: Stack,
) -> None:
    orders = stack.produce(BIG_RUN)
    expected = len(expected_event_ids(orders))

    with stack.consumer(
        "outage", KAFKA_KLAVIYO_DELIVERY__MAX_IN_FLIGHT_MESSAGES="2000"
    ) as consumer:
        rss = RssMonitor(consumer.process.pid)
        try:
            wait_until_alive(consumer, lambda: stack.accepted() >= expected // 10, 120, "10%")
            # Down until the test ends the outage itself: what is read as "during" is read
            # while the fault certainly holds, however late a busy machine wakes the test.
            outage = stack.klaviyo.client.fail_with_status(503)
            started = time.monotonic()
            at_start = stack.accepted()
            while time.monotonic() < started + OUTAGE_S:  # the outage lasts this long
                alive(consumer)
                time.sleep(1)
            during = stack.accepted()
            refused = stack.klaviyo.client.stats().responses("events", 503)
            stack.klaviyo.client.remove_fault(outage)
            ends = time.monotonic()
            wait_until_alive(
                consumer,
                lambda: stack.accepted() > during,
                60,
                "delivery to resume after the outage",
            )
            resumed_after = time.monotonic() - ends
            wait_until_alive(consumer, lambda: stack.lag() == 0, 240, "the backlog after it")
            assert consumer.stop() == 0, consumer.output()
        finally:
            rss.stop()

    output = consumer.output()
    peak = rss.peak(since=started, until=ends)
    print(
        f"503s answered: {refused}; delivered during the outage: {during - at_start}; "
        f"resumed {resumed_after:.1f}s after it; peak RSS during it {peak:.0f} MiB, "
        f"overall {rss.peak():.0f} MiB"
    )
    # Nothing got through while Klaviyo refused everything (requests in flight when the
    # fault began may still land), and the consumer kept retrying, with backoff.
    assert during - at_start <= 4 * 1000, (at_start, during)
    assert 10 <= refused <= 25 * OUTAGE_S, refused
    assert resumed_after < 30, resumed_after
    # Bounded memory: the in-flight cap paused the partitions instead of polling the backlog.
    assert any(m.startswith("paused") for m in log_messages(output)), output[-3000:]
    assert 0 < peak < RSS_BOUND_MIB, f"peak RSS {peak:.0f} MiB during the outage"
    # An outage is not bad data.
    assert stack.dead_letters() == []
    stack.assert_exactly_once(orders)


def test_429_storm_is_waited_out_exactly_as_retry_after_says(stack: Stack) -> None:
    orders = stack.produce(4000)
    expected = len(expected_event_ids(orders))
    with stack.consumer("storm") as consumer:
        wait_until_alive(consumer, lambda: stack.accepted() >= expected // 10, 120, "10%")
        stack.klaviyo.client.rate_limit_storm(retry_after=2, seconds=10)
        wait_until_alive(consumer, lambda: stack.lag() == 0, 240, "delivery after the storm")
        assert consumer.stop() == 0, consumer.output()

    stats = stack.klaviyo.client.stats()
    print(f"storm: {stats.requests}")
    assert stats.responses("events", 429) > 0  # the storm did hit the consumer
    assert stats.retry_after_violations == 0, stats.retry_after_violation_log[:5]
    assert stack.dead_letters() == []
    stack.assert_exactly_once(orders)


def test_klaviyo_rate_limits_are_honoured(
    kafka_broker: LocalKafka,
    emulator_factory: Any,
    topic_name: str,
    tmp_path: Path,
) -> None:
    # Klaviyo's real limits on every endpoint, tightened for bulk events so that a 2-core test
    # machine can outrun them: 2 requests a second, 20 a minute.
    limited = emulator_factory(
        rate_limits=RateLimitSettings(
            enabled=True, overrides={"events": WindowLimits(burst=2, steady=20)}
        )
    )
    stack = Stack(kafka_broker, limited, topic_name, tmp_path)
    orders = stack.produce(3000)
    with stack.consumer("limited") as consumer:
        wait_until_alive(consumer, lambda: stack.lag() == 0, 240, "delivery under rate limits")
        assert consumer.stop() == 0, consumer.output()

    stats = limited.client.stats()
    print(f"rate limited: {stats.requests}")
    assert stats.retry_after_violations == 0, stats.retry_after_violation_log[:5]
    assert stack.dead_letters() == []
    stack.assert_exactly_once(orders)


# -- the dead-letter topic cannot be written -------------------------------------------------


@pytest.mark.parametrize("problem", ["invalid-topic-name", "message-too-large"])
def test_unwritable_dead_letter_topic_stops_without_committing_past_it(
    kafka_broker: LocalKafka,
    emulator: RunningEmulator,
    topic_name: str,
    tmp_path: Path,
    problem: str,
) -> None:
    if problem == "invalid-topic-name":
        dead_letter_topic = f"{topic_name} dead letters!"  # Kafka refuses the name
    else:
        dead_letter_topic = f"{topic_name}.dlq"
        # Smaller than any record: every dead-letter write is refused by the broker.
        kafka_broker.create_topic(dead_letter_topic, config={"max.message.bytes": "64"})
    stack = Stack(kafka_broker, emulator, topic_name, tmp_path, dead_letter_topic=dead_letter_topic)
    good = list(generated_orders(900, prefix=topic_name))
    rejected = dict(good[0], order_id=f"{topic_name}-rejected")
    rejected["customer"] = dict(good[0]["customer"], email="rejected@kafka-klaviyo-demo.dev")
    emulator.client.reject_items("profile.email", equals="rejected@kafka-klaviyo-demo.dev")
    values = [
        (o["order_id"].encode(), encode_single_object(CATALOG, "shop.events.OrderPlaced", o))
        for o in good[1:]
    ]
    # Poison early in the stream (decode-stage and deliver-stage), good orders after it.
    poison = {f"poison-{i}".encode(): b"not avro at all" for i in range(6)}
    poison[b"rejected"] = encode_single_object(CATALOG, "shop.events.OrderPlaced", rejected)
    for index, item in enumerate(poison.items()):
        values.insert(20 + index * 15, item)
    produce_values(stack.bootstrap, stack.topic, values)
    positions = [(r.partition, r.offset, r.key) for r in read_topic(stack.bootstrap, topic_name)]
    first_poison: dict[int, int] = {}
    for partition, offset, key in positions:
        if key in poison:
            first_poison[partition] = min(first_poison.get(partition, offset), offset)
    assert first_poison, "no poison was produced"

    consumer = stack.consumer("dlq-down")
    code = consumer.wait(120)
    output = consumer.output()
    assert code == 3, output[-5000:]
    errors = log_messages(output, "ERROR")
    assert len(errors) == 1, errors
    # Log lines are masked (digit runs look like phone numbers): compare with the masked name.
    assert "dead-letter" in errors[0] and mask(dead_letter_topic) in errors[0], errors[0]
    assert "Traceback" not in output, output[-5000:]

    committed = stack.committed()
    for partition, offset in first_poison.items():
        assert committed.get(partition, -1) <= offset, (
            f"partition {partition}: committed {committed.get(partition)} passes the "
            f"undead-lettered message at offset {offset}"
        )

    # Once the dead-letter topic works, the same group picks up where it stopped: exactly the
    # poison is dead-lettered and every good order delivered.
    fixed = f"{topic_name}.dlq-fixed"
    kafka_broker.create_topic(fixed)
    stack.dlq = fixed
    with stack.consumer("dlq-fixed") as consumer:
        wait_until_alive(consumer, lambda: stack.lag() == 0, 120, "the rest after the fix")
        assert consumer.stop() == 0, consumer.output()
    assert sorted(r.key for r in stack.dead_letters()) == sorted(poison)
    stack.assert_exactly_once(good[1:], rejections_injected=True)


# -- two group members -----------------------------------------------------------------------


def test_two_consumers_one_killed_the_survivor_takes_over(
    kafka_broker: LocalKafka, emulator: RunningEmulator, topic_name: str, tmp_path: Path
) -> None:
    stack = Stack(kafka_broker, emulator, topic_name, tmp_path, partitions=6)
    env = {"KAFKA_KLAVIYO_KAFKA__PROPERTIES": FAST_SESSION}
    all_partitions = set(range(6))
    with stack.consumer("survivor", **env) as survivor, stack.consumer("victim", **env) as victim:
        # Both own partitions before any data arrives, so both work on the run.
        wait_for(
            lambda: (
                owned_partitions(survivor.output(), stack.topic)
                and owned_partitions(victim.output(), stack.topic)
                and owned_partitions(survivor.output(), stack.topic)
                | owned_partitions(victim.output(), stack.topic)
                == all_partitions
            ),
            60,
            "both members to own partitions",
        )
        victims = owned_partitions(victim.output(), stack.topic)
        # Slow answers from Klaviyo: at most a few requests of work are done a second, so the
        # victim cannot finish its partitions before it is killed, however fast the machine.
        stack.klaviyo.client.add_latency(2.0)
        orders = stack.produce(BIG_RUN)
        expected = len(expected_event_ids(orders))
        wait_until_alive(survivor, lambda: stack.accepted() >= expected // 10, 240, "a tenth")
        alive(victim)
        # The victim's partitions still hold uncommitted work right before the kill: only a
        # takeover by the survivor can deliver and commit it.
        left = {p: lag for p, lag in stack.partition_lags().items() if p in victims}
        victim.kill()
        assert sum(left.values()) > 0, f"the victim had finished its partitions {left}"
        stack.klaviyo.client.clear_faults()

        def taken_over() -> bool:
            return owned_partitions(survivor.output(), stack.topic) == all_partitions

        wait_until_alive(survivor, taken_over, 120, "the survivor to own every partition")
        wait_until_alive(survivor, lambda: stack.lag() == 0, 300, "the survivor to finish")
        owned = owned_partitions(survivor.output(), stack.topic)
        assert survivor.stop() == 0, survivor.output()

    print(
        f"victim owned {sorted(victims)} with {sum(left.values())} messages uncommitted "
        f"when killed; survivor ended with {sorted(owned)}"
    )
    assert victims and victims != all_partitions
    assert owned == all_partitions, (victims, owned)
    stack.assert_exactly_once(orders)
    assert stack.dead_letters() == []


# -- graceful shutdown -----------------------------------------------------------------------

GRACE_S = 8
#: Closing the consumer, leaving the group and the interpreter's exit, on a busy 2-core box
#: (usually about a second). Klaviyo's outage below lasts until the test ends it, after the
#: exit, so however generous this margin, only the grace period can have ended the drain.
EXIT_MARGIN_S = 30


def fired(client: Any, fault_id: str) -> int:
    """How often the emulator's fault ``fault_id`` has fired (0 once it is gone)."""
    return sum(int(f["fired"]) for f in client.faults() if f["id"] == fault_id)


@pytest.mark.parametrize("klaviyo", ["answering", "refusing", "hanging"])
def test_sigterm_mid_run_exits_within_grace_and_commits_only_delivered_work(
    stack: Stack, klaviyo: str
) -> None:
    orders = stack.produce(BIG_RUN)
    expected = len(expected_event_ids(orders))
    by_order = {o["order_id"]: expected_event_ids([o]) for o in orders}

    with stack.consumer(
        "terminated",
        KAFKA_KLAVIYO_DELIVERY__SHUTDOWN_GRACE_S=str(GRACE_S),
        # Small enough for a healthy Klaviyo to drain it well within the grace period.
        KAFKA_KLAVIYO_DELIVERY__MAX_IN_FLIGHT_MESSAGES="3000",
    ) as consumer:
        wait_until_alive(consumer, lambda: stack.accepted() >= expected // 4, 120, "a quarter")
        client = stack.klaviyo.client
        if klaviyo == "answering":
            # Slow answers: batches are in flight when SIGTERM arrives and must be drained
            # (the in-flight cap's worth: a few rounds of half a second, well within grace).
            fault = client.add_latency(0.5)
        elif klaviyo == "refusing":
            # Klaviyo is down (503) until the test ends it: the drain cannot finish, retries
            # go on until the end.
            fault = client.fail_with_status(503)
        else:
            # Requests get no answer until the test ends it: the drain cannot finish.
            fault = client.hold_requests(600)
        # SIGTERM once the consumer's requests meet the fault (they are then slow, refused or
        # held), not after a guess at how long that takes.
        wait_until_alive(
            consumer, lambda: fired(client, fault) >= 2, 60, f"requests to meet the {klaviyo} fault"
        )
        signalled = time.monotonic()
        code = consumer.stop(timeout_s=GRACE_S + 60)
        took = time.monotonic() - signalled
    output = consumer.output()
    stack.klaviyo.client.clear_faults()
    assert code == 0, output[-5000:]
    assert took <= GRACE_S + EXIT_MARGIN_S, f"exit took {took:.1f}s (grace {GRACE_S}s)"
    print(f"SIGTERM to exit: {took:.1f}s (grace {GRACE_S}s)")
    assert "Traceback" not in output, output[-5000:]
    cut_short = [m for m in log_messages(output) if m.startswith("grace period")]
    # Answering: the drain finishes. Otherwise the grace period ends it, and it says so.
    assert bool(cut_short) == (klaviyo != "answering"), output[-5000:]

    # Every message below a committed offset has every one of its events in Klaviyo. After a
    # complete drain the converse holds too: what was delivered was committed.
    delivered = {(e.metric, e.unique_id or "") for e in stack.klaviyo.client.events()}
    committed = stack.committed()
    assert any(offset > 0 for offset in committed.values()), committed
    covered = 0
    for record in read_topic(stack.bootstrap, stack.topic, timeout_s=30):
        ids = by_order[(record.key or b"").decode()]
        where = f"{stack.topic}[{record.partition}]@{record.offset}"
        if record.offset < committed.get(record.partition, -1):
            covered += 1
            missing = ids - delivered
            assert not missing, f"{where} is committed but {sorted(missing)} never reached Klaviyo"
        elif klaviyo == "answering":
            assert not ids & delivered, f"{where} was delivered and drained but not committed"
    assert covered < len(orders)  # stopped mid-run

    with stack.consumer("restarted") as consumer:
        wait_until_alive(consumer, lambda: stack.lag() == 0, 300, "the rest after the restart")
        assert consumer.stop() == 0, consumer.output()
    stack.assert_exactly_once(orders)
    assert stack.dead_letters() == []
