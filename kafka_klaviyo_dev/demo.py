"""``make demo``: the guide's whole journey through the pipeline on this machine, end to end.

Starts a local Kafka broker (:mod:`kafka_klaviyo_dev.kafka`) and the Klaviyo emulator, produces
the guide's journey (John Smith visiting, viewing, carting, checking out, order 1234 and what
became of it, his profile, his subscription, the two books in the catalog), generated traffic
of every kind and one poison message, runs one consumer until the emulator holds every
expected item and the poison is dead-lettered, prints what Klaviyo received and holds, shows
the dead-letter record, replays the last minutes and stops everything.

With ``registry`` it also starts a real Schema Registry (:mod:`kafka_klaviyo_dev.registry`,
booting while the broker starts) and the records go out in the Confluent wire format, their
schemas registered there, as a shop's producers using confluent-kafka would send them;
otherwise they use registry-free single-object encoding.

:func:`run_demo` brings its own broker, emulator (and registry); :func:`play` runs the same
on a stack that is already up (the integration test's).
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka.schema_registry import SchemaRegistryClient

from consumer.compose import build_service
from consumer.dlq.cli import DlqContext, show_record
from consumer.positions import Bound
from consumer.redact import mask
from consumer.replay_command import run_replay
from consumer.runner import Runner
from consumer.settings import Settings
from kafka_klaviyo_dev.emulator.client import AcceptedEvent, EmulatorClient
from kafka_klaviyo_dev.emulator.config import EmulatorConfig, RateLimitSettings
from kafka_klaviyo_dev.emulator.server import EmulatorServer
from kafka_klaviyo_dev.errors import DevstackError
from kafka_klaviyo_dev.inspect import TopicRecord, group_lag, read_topic
from kafka_klaviyo_dev.kafka import LocalKafka
from kafka_klaviyo_dev.produce import produce_records, produce_values
from kafka_klaviyo_dev.registry import LocalRegistry
from kafka_klaviyo_dev.samples import (
    GENERATED_EMAIL_DOMAIN,
    GUIDE_EMAIL,
    GUIDE_LIST_ID,
    GUIDE_ORDER_ID,
    KeyedRecord,
    expected_accepted,
    expected_metrics,
    generated_traffic,
    guide_journey,
    guide_products,
)

TOPIC = "shop.events"
DEAD_LETTER_TOPIC = "shop.events.dlq"
GROUP_ID = "kafka-klaviyo-demo"
# The emulator's key for the demo account; a throwaway, not a real Klaviyo key.
DEMO_API_KEY = "pk_demo_local_emulator_key"
#: One key for the whole journey: its records stay in one partition, in the order they happen.
JOURNEY_KEY = b"john-smith"
POISON_KEY = b"demo-poison"
#: Neither Confluent framing nor single-object encoding: the decoder refuses it.
POISON_VALUE = b"this is not an Avro record"
CATALOG_ID = "$custom:::$default:::"
#: Endpoints in the order the summary lists them (the emulator's names).
ENDPOINT_ORDER = (
    "events",
    "profile_import",
    "subscribe",
    "unsubscribe",
    "catalog_create",
    "catalog_update",
    "catalog_delete",
    "category_create",
)


@dataclass(frozen=True, slots=True)
class DemoStack:
    """Where the demo plays: a broker, an emulator, and the names it uses on them; with a
    Schema Registry URL the records use the Confluent wire format."""

    bootstrap_servers: str
    base_url: str
    api_key: str
    topic: str = TOPIC
    dead_letter_topic: str = DEAD_LETTER_TOPIC
    group_id: str = GROUP_ID
    registry_url: str | None = None


@dataclass(frozen=True, slots=True)
class Expected:
    """What Klaviyo should accept for the produced records: items per endpoint, events per
    metric, and how many messages the dead-letter topic should receive."""

    endpoints: Mapping[str, int]
    metrics: Mapping[str, int]
    dead_letters: int


def find_openapi_spec() -> Path | None:
    """Klaviyo's OpenAPI spec: $KLAVIYO_OPENAPI_SPEC, else ../shared/klaviyo/stable.json."""
    override = os.environ.get("KLAVIYO_OPENAPI_SPEC")
    if override:
        return Path(override)
    beside = Path(__file__).resolve().parent.parent.parent / "shared" / "klaviyo" / "stable.json"
    return beside if beside.is_file() else None


def demo_records(orders: int) -> tuple[list[KeyedRecord], list[KeyedRecord]]:
    """(the guide's journey, generated traffic around ``orders`` orders) as keyed records."""
    journey = [(JOURNEY_KEY, name, record) for name, record in guide_journey()]
    return journey, generated_traffic(orders)


def expected_for(records: list[KeyedRecord], *, poison: int = 1) -> Expected:
    """What Klaviyo should accept for ``records``, plus ``poison`` dead-lettered messages."""
    pairs = [(name, record) for _key, name, record in records]
    return Expected(expected_accepted(pairs), expected_metrics(pairs), poison)


def shortfall(expected: Mapping[str, int], got: Mapping[str, int]) -> list[str]:
    """``"<name> <got> of <expected>"`` for every name with fewer than expected, in order."""
    return [
        f"{name} {got.get(name, 0)} of {n}" for name, n in expected.items() if got.get(name, 0) < n
    ]


def differences(expected: Mapping[str, int], got: Mapping[str, int]) -> list[str]:
    """``"<name> <got> of <expected>"`` for every name whose count is not the expected one,
    names nobody expected included."""
    names = list(expected) + sorted(set(got) - set(expected))
    return [
        f"{name} {got.get(name, 0)} of {expected.get(name, 0)}"
        for name in names
        if got.get(name, 0) != expected.get(name, 0)
    ]


def run_demo(*, orders: int, timeout_s: float, registry: bool = False) -> int:
    """Run the demo on its own broker and emulator (and Schema Registry); returns the exit code
    (0: everything expected reached Klaviyo and the poison message was dead-lettered)."""
    spec = find_openapi_spec()
    _say("kafka-klaviyo demo")
    schema_registry = LocalRegistry() if registry else None
    if schema_registry is not None:
        _say("  starting a Schema Registry (Apicurio; the first run fetches it with Maven)")
        # Booting two JVMs at once is the shorter wait: the broker does most of its start in
        # a single thread.
        schema_registry.start(wait=False)
    try:
        _say("  starting a local Apache Kafka broker (the first run fetches its jars with Maven)")
        with LocalKafka() as kafka:
            kafka.create_topic(TOPIC, partitions=3)
            kafka.create_topic(DEAD_LETTER_TOPIC, partitions=1)
            registry_url = None
            if schema_registry is not None:
                schema_registry.wait_ready()
                registry_url = schema_registry.url
            emulator = EmulatorServer(
                EmulatorConfig(
                    api_keys={DEMO_API_KEY: "demo"},
                    spec_path=spec,
                    rate_limits=RateLimitSettings(enabled=True),
                )
            )
            base_url = emulator.start()
            try:
                _say(f"  broker {kafka.bootstrap_servers}, Klaviyo emulator {base_url}")
                if registry_url is not None:
                    _say(f"  Schema Registry {registry_url} (Confluent wire format)")
                _say(
                    "  request bodies validated against Klaviyo's OpenAPI spec"
                    if spec
                    else "  OpenAPI spec not found: bodies are not schema-validated"
                )
                stack = DemoStack(
                    kafka.bootstrap_servers, base_url, DEMO_API_KEY, registry_url=registry_url
                )
                return play(stack, orders=orders, timeout_s=timeout_s)
            finally:
                emulator.stop()
    finally:
        if schema_registry is not None:
            schema_registry.stop()


def play(stack: DemoStack, *, orders: int, timeout_s: float) -> int:
    """Produce the journey, the traffic and the poison message to ``stack``, consume until
    everything expected arrived (or ``timeout_s``), print the summary; the exit code."""
    journey, traffic = demo_records(orders)
    expected = expected_for(journey + traffic)
    produced_at = datetime.now(UTC)
    registry = (
        None
        if stack.registry_url is None
        else SchemaRegistryClient.new_client({"url": stack.registry_url})
    )
    produce_records(stack.bootstrap_servers, stack.topic, journey, registry=registry)
    produce_records(stack.bootstrap_servers, stack.topic, traffic, registry=registry)
    produce_values(stack.bootstrap_servers, stack.topic, [(POISON_KEY, POISON_VALUE)])
    kinds = Counter(name.rsplit(".", 1)[1] for _key, name, _record in traffic)
    _say(
        f"  produced the guide's journey ({len(journey)} records), generated traffic "
        f"({len(traffic)}: {kinds['OrderPlaced']} orders and "
        f"{len(set(kinds) - {'OrderPlaced'})} other record types) and one poison message"
    )
    _say(
        f"  expecting {sum(expected.endpoints.values())} Klaviyo items: "
        + ", ".join(f"{n} {name}" for name, n in _in_order(expected.endpoints))
    )
    with EmulatorClient(stack.base_url) as client:
        outcome = _consume(stack, client, expected, timeout_s)
        accepted = dict(client.stats().accepted)
        events = client.events()
        _print_received(accepted, events, expected, outcome.elapsed_s)
        _print_journey(events)
        _print_state(client)
    dead_letters = read_topic(stack.bootstrap_servers, stack.dead_letter_topic)
    poison = [r for r in dead_letters if r.key == POISON_KEY]
    if poison:
        _show_dead_letter(stack, poison[0].partition, poison[0].offset)
    problems = outcome.problems or _verify(expected, accepted, events, dead_letters)
    if not problems:
        # Only over a stack that delivered everything: a replay would retry an outage forever.
        with EmulatorClient(stack.base_url) as client:
            replayed = _replay_recent(stack, client, produced_at)
        if replayed != 0:
            problems.append(f"the replay exited with {replayed}")
    _print_notes()
    for problem in problems:
        print(f"kafka-klaviyo demo: {mask(problem)}", file=sys.stderr)
    return 1 if problems else 0


# --- consuming --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Outcome:
    elapsed_s: float
    problems: list[str]


def _settings(stack: DemoStack) -> Settings:
    """The live consumer's settings on the demo's stack (the replay starts from them too)."""
    return Settings(
        kafka={  # type: ignore[arg-type]
            "bootstrap_servers": stack.bootstrap_servers,
            "group_id": stack.group_id,
            "topics": [stack.topic],
            "dead_letter_topic": stack.dead_letter_topic,
        },
        klaviyo={"base_url": stack.base_url, "api_key": stack.api_key},  # type: ignore[arg-type]
        schema_registry={"url": stack.registry_url},  # type: ignore[arg-type]
        batch={"linger_ms": 100},  # type: ignore[arg-type]
        # The stop comes once everything arrived, or after a timeout, when what is still
        # being retried is not worth waiting half a minute for.
        delivery={"shutdown_grace_s": 5},  # type: ignore[arg-type]
    )


def _consume(
    stack: DemoStack, client: EmulatorClient, expected: Expected, timeout_s: float
) -> _Outcome:
    settings = _settings(stack)
    runner = Runner(build_service(settings))
    exit_code: list[int] = []
    thread = threading.Thread(target=lambda: exit_code.append(runner.run()), name="consumer")
    started = time.monotonic()
    thread.start()
    missing: list[str] = ["nothing checked yet"]
    try:
        # Done when Klaviyo holds every expected item and the group committed every message:
        # offsets move only past messages delivered or dead-lettered, the poison's included.
        deadline = started + timeout_s
        while thread.is_alive():
            missing = shortfall(expected.endpoints, client.stats().accepted)
            lag = group_lag(stack.bootstrap_servers, stack.group_id, stack.topic)
            if lag:
                missing.append(f"{lag} messages not yet committed")
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        elapsed = time.monotonic() - started
    finally:
        runner.request_stop()
        thread.join(timeout=60)
    if thread.is_alive() or not exit_code or exit_code[0] != 0:
        raise DevstackError("the consumer did not stop cleanly")
    if missing:
        reason = f"timed out after {timeout_s:.0f}s" if elapsed > timeout_s else "stopped early"
        return _Outcome(elapsed, [f"{reason}: still missing {'; '.join(missing)}"])
    return _Outcome(elapsed, [])


def _verify(
    expected: Expected,
    accepted: Mapping[str, int],
    events: list[AcceptedEvent],
    dead_letters: list[TopicRecord],
) -> list[str]:
    problems = []
    if wrong := differences(expected.endpoints, accepted):
        problems.append("Klaviyo accepted other counts than expected: " + ", ".join(wrong))
    if wrong := differences(expected.metrics, Counter(e.metric for e in events)):
        problems.append("events per metric differ from the expected: " + ", ".join(wrong))
    poison = sum(1 for r in dead_letters if r.key == POISON_KEY)
    if poison != expected.dead_letters or len(dead_letters) != poison:
        problems.append(
            f"the dead-letter topic holds {len(dead_letters)} records, {poison} of them the "
            f"poison message; expected only the poison, {expected.dead_letters} time(s)"
        )
    return problems


# --- what the demo prints ---------------------------------------------------------------------


def _say(text: str = "") -> None:
    # Callers mask what may be personal (addresses, phone numbers, free text) with mask();
    # masking whole lines would garble amounts, ids and times that merely look like numbers.
    print(text)


def _in_order(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    rank = {name: n for n, name in enumerate(ENDPOINT_ORDER)}
    return sorted(counts.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0]))


def _print_received(
    accepted: Mapping[str, int],
    events: list[AcceptedEvent],
    expected: Expected,
    elapsed_s: float,
) -> None:
    _say()
    _say(
        f"What Klaviyo received, per endpoint ({sum(accepted.values())} of "
        f"{sum(expected.endpoints.values())} items in {elapsed_s:.1f}s):"
    )
    # An endpoint that stored nothing and was expected to (an upsert's update on a fresh
    # catalog: its create stores the item) is left out.
    names = dict(expected.endpoints) | {
        name: 0 for name, n in accepted.items() if n and name not in expected.endpoints
    }
    for name, want in _in_order(names):
        _say(f"  {name:<16} {accepted.get(name, 0):>6} of {want}")
    _say()
    _say("Per metric:")
    for metric, count in sorted(Counter(event.metric for event in events).items()):
        _say(f"  {metric:<18} {count:>6}")


def _money(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) else "-"


def _detail(event: AcceptedEvent) -> str:
    props = event.properties
    if event.metric == "Active on Site":
        return str(props.get("URL", ""))
    if event.metric == "Viewed Product":
        return f"{props.get('ProductName')} (was {_money(props.get('CompareAtPrice'))})"
    if event.metric == "Added to Cart":
        return f"added {props.get('AddedItemProductName')}; cart: {_names(props)}"
    if event.metric == "Ordered Product":
        return f"{props.get('ProductName')} x{props.get('Quantity')}"
    if event.metric == "Fulfilled Order":
        return f"{props.get('Carrier')} {props.get('TrackingNumber')}"
    if "Reason" in props:
        return f"reason: {props['Reason']}"
    return _names(props)


def _names(props: Mapping[str, Any]) -> str:
    return ", ".join(str(name) for name in props.get("ItemNames") or ())


def _print_journey(events: list[AcceptedEvent]) -> None:
    mine = sorted(
        (e for e in events if (e.email or "").lower() == GUIDE_EMAIL), key=lambda e: (e.time, e.seq)
    )
    _say()
    _say(f"John Smith's journey (the guide's customer, {mask(GUIDE_EMAIL)}), as Klaviyo holds it:")
    _say(f"  {'time':<25}  {'metric':<16} {'value':>6}  {'unique_id':<19} detail")
    for event in mine:
        _say(
            f"  {event.time:<25}  {event.metric:<16} {_money(event.value):>6}  "
            f"{event.unique_id or '':<19} {_detail(event)}"
        )
    placed = [e for e in mine if e.metric == "Placed Order" and e.unique_id == GUIDE_ORDER_ID]
    _say()
    if not placed:
        _say(f"Order {GUIDE_ORDER_ID}: no Placed Order reached Klaviyo.")
        return
    order = placed[0]
    props = order.properties
    _say(f"Order {GUIDE_ORDER_ID} (the guide's sample order):")
    _say(f"  value {_money(order.value)} {order.value_currency or ''}, placed {order.time}")
    for item in props.get("Items") or ():
        _say(
            f"  {item.get('Quantity')} x {item.get('ProductName'):<21} {item.get('SKU'):<11} "
            f"{_money(item.get('ItemPrice')):>6}  {item.get('Brand')}"
        )
    _say(f"  categories {', '.join(props.get('Categories') or ())}")
    _say(f"  brands {', '.join(props.get('Brands') or ())}")
    _say(f"  discount {props.get('Discount Code', '-')} ({_money(props.get('Discount Value'))})")
    later = [e.metric for e in mine if e.unique_id == GUIDE_ORDER_ID and e.metric != "Placed Order"]
    _say(f"  then: {', '.join(later) or 'nothing'} (all under unique id {GUIDE_ORDER_ID})")


def _print_state(client: EmulatorClient) -> None:
    _say()
    _say("John Smith's profile, as Klaviyo holds it:")
    profiles = client.profiles(identifier="email", value=GUIDE_EMAIL)
    if not profiles:
        _say("  (none)")
    for profile in profiles:
        a = profile.attributes
        location = a.get("location") or {}
        _say(
            f"  {a.get('first_name')} {a.get('last_name')} <{mask(str(a.get('email')))}>, "
            f"phone {mask(str(a.get('phone_number')))}"
        )
        _say(
            f"  external id {a.get('external_id')}, {a.get('title')} at {a.get('organization')}, "
            f"locale {a.get('locale')}"
        )
        _say(
            "  "
            + ", ".join(
                str(location[k])
                for k in ("address1", "address2", "city", "region", "zip", "country")
                if location.get(k)
            )
        )
        _say(f"  properties {orjson.dumps(a.get('properties') or {}).decode()}")
    consent = client.consent(list_id=GUIDE_LIST_ID, person=GUIDE_EMAIL)
    state = ", ".join(f"{c.channel}: {c.consent}" for c in consent) or "none"
    _say(f"  consent on list {GUIDE_LIST_ID}: {state}")
    _say()
    _say("The guide's two books in the catalog, as Klaviyo holds them:")
    for product in guide_products():
        item = client.catalog_item(CATALOG_ID + product["product_id"])
        if item is None:
            _say(f"  {CATALOG_ID}{product['product_id']}: (none)")
            continue
        a = item.attributes
        meta = a.get("custom_metadata") or {}
        _say(
            f"  {item.id:<26} {a.get('title')!s:<21} {_money(a.get('price')):>6}  "
            f"{meta.get('SKU', '')} {'exists' if item.exists else 'deleted'} "
            f"(last: {item.operation})"
        )


# When merging: this body becomes a call of the real `kafka-klaviyo dlq show` (another
# branch); until then it prints the record's dlq.* headers read straight from the topic.
def _show_dead_letter(stack: DemoStack, partition: int, offset: int) -> None:
    """Show the dead-letter record at ``partition``/``offset`` as ``kafka-klaviyo dlq show``
    does (headers, and the value, which here does not decode)."""
    _say()
    _say(
        f"One poison message (not Avro) was dead-lettered; kafka-klaviyo dlq show "
        f"{partition}:{offset}:"
    )
    context = DlqContext(_settings(stack), stack.dead_letter_topic)
    for line in show_record(context, partition, offset).splitlines():
        _say(f"  {line}")


def _replay_recent(stack: DemoStack, client: EmulatorClient, since: datetime) -> int:
    """Replay ``stack.topic`` from ``since`` (the last minutes) with ``backfill: true``, as
    ``kafka-klaviyo replay --from-time`` does; returns its exit code."""
    minutes = max(1, math.ceil((datetime.now(UTC) - since).total_seconds() / 60))
    _say()
    _say(
        f"Replay of the last {minutes} minute(s) of {stack.topic} with backfill: true "
        f"(kafka-klaviyo replay --from-time {since.isoformat(timespec='seconds')}):"
    )
    before = client.stats()
    sys.stdout.flush()
    code = run_replay(
        _settings(stack),
        topics=(),
        only=None,
        start=Bound(time_ms=int(since.timestamp() * 1000)),
        end=None,
        group_id=None,
        dry_run=False,
        backfill=True,
        rate_share=1.0,
    )
    after = client.stats()
    again = after.total_duplicates_dropped - before.total_duplicates_dropped
    _say(
        f"  Klaviyo dropped {again} replayed events as duplicates of events it already holds "
        "(same profile, metric and unique_id): a backfill never counts an order twice."
    )
    return code


def _print_notes() -> None:
    _say()
    _say(
        "The guide's phone number is a fictional one that Klaviyo would refuse, so the order "
        "events' profile goes without it; John Smith's profile upsert carries a real one."
    )
    _say(
        "Note: real Klaviyo accepts but silently drops profiles at test.com and example.com, "
        "so the guide's address would never show up in a real account; the generated "
        f"customers use {GENERATED_EMAIL_DOMAIN}, which Klaviyo keeps."
    )
