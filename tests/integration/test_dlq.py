"""``kafka-klaviyo dlq`` on the real stack: what the real consumer dead-lettered, inspected.

The consumer runs as its own process (``python -m consumer run``) over a real broker and the
emulator, which refuses two orders by their e-mail address; with three undecodable messages
and one that no rule can translate, six records reach a two-partition dead-letter topic. The
``dlq`` commands then run as the real CLI (``python -m consumer dlq ...``) and must show
exactly those six, with no e-mail address or phone number in their output or logs unless
``--reveal``.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from consumer.dead_letter import DeadLetterWriter
from consumer.errors import RejectedItemError
from consumer.schemas import SchemaCatalog
from consumer.settings import KafkaSettings
from consumer.source import producer_config
from kafka_klaviyo_dev.encode import encode_single_object
from kafka_klaviyo_dev.inspect import TopicRecord, group_lag, read_topic
from kafka_klaviyo_dev.kafka import LocalKafka
from kafka_klaviyo_dev.produce import produce_values
from kafka_klaviyo_dev.samples import generated_orders, guide_order
from tests.fakes import FakeMessage
from tests.fixtures_emulator import RunningEmulator
from tests.support import REPO, ConsumerProcess, consumer_env, wait_for

pytestmark = pytest.mark.integration

CATALOG = SchemaCatalog.load()
POISON_EMAIL = "poison.pill@kafka-klaviyo-demo.dev"
POISON_PHONE = "+1 617 253 1000"
REJECTED = "rejected"  # the emulator refuses profiles whose address starts with this


@dataclass
class DeadLettered:
    """The dead-letter topic the consumer wrote, and what went into it."""

    bootstrap: str
    topic: str
    dlq: str
    group_id: str
    records: list[TopicRecord]
    personal: list[str]  # every address and phone number of the dead-lettered messages
    env: dict[str, str]

    def by_key(self, key: bytes) -> TopicRecord:
        return next(record for record in self.records if record.key == key)


@pytest.fixture(scope="module")
def dead_lettered(
    kafka_broker: LocalKafka,
    _emulator_session: RunningEmulator,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[DeadLettered]:
    emulator = _emulator_session
    emulator.client.reset()
    run = uuid.uuid4().hex[:8]
    topic, dlq, group = f"dlq-inspect-{run}", f"dlq-inspect-{run}.dlq", f"group-{run}"
    kafka_broker.create_topic(topic, partitions=2)
    kafka_broker.create_topic(dlq, partitions=2)

    good = list(generated_orders(12, prefix=topic))
    refused = list(generated_orders(2, prefix=f"{topic}-refused", seed=11))
    for number, order in enumerate(refused):
        order["customer"]["email"] = f"{REJECTED}.{number}@kafka-klaviyo-demo.dev"
    no_identity = guide_order()
    no_identity["order_id"] = "no-identity"
    no_identity["customer"] = {**no_identity["customer"], "email": None, "phone": None}
    money = {"amount": Decimal("1.50"), "currency": "USD"}
    poison = [
        (b"not-avro", orjson.dumps({"email": POISON_EMAIL, "phone": POISON_PHONE})),
        (b"unknown-fingerprint", b"\xc3\x01" + b"\x01" * 8 + b"\x00"),
        (b"unmapped", encode_single_object(CATALOG, "shop.events.Money", money)),
        (b"no-identity", encode_single_object(CATALOG, "shop.events.OrderPlaced", no_identity)),
        *(
            (f"refused-{n}".encode(), encode_single_object(CATALOG, "shop.events.OrderPlaced", o))
            for n, o in enumerate(refused)
        ),
    ]
    values = [
        (o["order_id"].encode(), encode_single_object(CATALOG, "shop.events.OrderPlaced", o))
        for o in good
    ]
    for index, item in enumerate(poison):
        values.insert(index * 2 + 1, item)
    emulator.client.reject_items("profile.email", regex=f"^{REJECTED}\\.")
    headers: list[tuple[str, str | bytes | None]] = [
        ("trace-id", b"abc"),
        ("reply-to", POISON_EMAIL.encode()),
    ]
    produce_values(kafka_broker.bootstrap_servers, topic, values, headers=headers)

    env = consumer_env(
        bootstrap_servers=kafka_broker.bootstrap_servers,
        base_url=emulator.base_url,
        api_key=emulator.api_key,
        topic=topic,
        group_id=group,
        dead_letter_topic=dlq,
    )
    log = tmp_path_factory.mktemp("dlq") / "consumer.log"
    with ConsumerProcess(env, log) as consumer:
        wait_for(
            lambda: group_lag(kafka_broker.bootstrap_servers, group, topic) == 0,
            120,
            "every message delivered or dead-lettered",
        )
        assert consumer.stop() == 0, consumer.output()
    records = read_topic(kafka_broker.bootstrap_servers, dlq)
    assert sorted(r.key for r in records) == sorted(key for key, _ in poison)
    personal = [
        POISON_EMAIL,
        POISON_PHONE,
        re.sub(r"\D", "", POISON_PHONE),
        *(order["customer"]["email"] for order in refused),
        *(order["customer"]["phone"] for order in refused),
        *(re.sub(r"\D", "", order["customer"]["phone"]) for order in refused),
    ]
    yield DeadLettered(kafka_broker.bootstrap_servers, topic, dlq, group, records, personal, env)


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def both(self) -> str:
        return self.stdout + self.stderr


def dlq(stack: DeadLettered, *args: str) -> Result:
    """``python -m consumer dlq ARGS`` against the stack's broker and dead-letter topic."""
    completed = subprocess.run(
        [sys.executable, "-m", "consumer", "dlq", *args],
        env=stack.env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    return Result(completed.returncode, completed.stdout, completed.stderr)


def assert_masked(stack: DeadLettered, result: Result) -> None:
    leaked = [value for value in stack.personal if value in result.both]
    assert not leaked, f"unmasked personal data {leaked} in:\n{result.both}"


def coordinates(record: TopicRecord) -> str:
    return f"{record.partition}:{record.offset}"


def test_stats_count_what_was_dead_lettered(dead_lettered: DeadLettered) -> None:
    result = dlq(dead_lettered, "stats", "--json")
    assert result.code == 0, result.both
    stats = orjson.loads(result.stdout)
    assert stats["topic"] == dead_lettered.dlq
    assert stats["total"] == 6
    assert stats["by_stage"] == {"decode": 3, "deliver": 2, "translate": 1}
    assert stats["by_error_class"] == {
        "RejectedItemError": 2,
        "NotAvroError": 1,
        "TranslationError": 1,
        "UnknownSchemaError": 1,
        "UnmappedRecordError": 1,
    }
    assert stats["by_record_name"] == {
        "shop.events.OrderPlaced": 3,
        "(none)": 2,
        "shop.events.Money": 1,
    }
    assert stats["by_source_topic"] == {dead_lettered.topic: 6}
    assert stats["by_klaviyo_error_code"] == {"invalid": 2}
    assert sum(stats["by_hour"].values()) == 6
    assert_masked(dead_lettered, result)

    text = dlq(dead_lettered, "stats", "--stage", "deliver")
    assert text.code == 0, text.both
    assert text.stdout.startswith(f"{dead_lettered.dlq}: 2 dead-letter records")
    chart = text.stdout.split("by hour (UTC):\n", 1)[1].splitlines()
    assert chart and all(line.endswith("█" * 40) for line in chart if " 2  " in line)
    assert_masked(dead_lettered, text)


def test_list_shows_every_record_where_it_sits(dead_lettered: DeadLettered) -> None:
    result = dlq(dead_lettered, "list")
    assert result.code == 0, result.both
    rows = result.stdout.splitlines()
    assert rows[0].split()[:3] == ["dlq", "failed", "at"]
    listed = {row.split()[0] for row in rows[1:]}
    assert listed == {coordinates(record) for record in dead_lettered.records}
    unmapped = dead_lettered.by_key(b"unmapped")
    source = (
        f"{dead_lettered.topic}[{unmapped.headers['dlq.original.partition'].decode()}]"
        f"@{unmapped.headers['dlq.original.offset'].decode()}"
    )
    row = next(row for row in rows if row.startswith(coordinates(unmapped) + " "))
    assert "UnmappedRecordError" in row and "shop.events.Money" in row and source in row
    assert_masked(dead_lettered, result)

    refusals = dlq(dead_lettered, "list", "--stage", "deliver", "--max-attempts", "1")
    assert refusals.code == 0, refusals.both
    assert len(refusals.stdout.splitlines()) == 3
    assert all("RejectedItemError" in row for row in refusals.stdout.splitlines()[1:])
    assert_masked(dead_lettered, refusals)

    limited = dlq(dead_lettered, "list", "--limit", "2")
    assert limited.code == 0 and len(limited.stdout.splitlines()) == 3
    assert "2 of 6 matching records shown" in limited.stderr

    nothing = dlq(dead_lettered, "list", "--since", "2999-01-01")
    assert nothing.code == 0 and nothing.stdout == ""
    assert "match the selection" in nothing.stderr


def test_show_decodes_the_value_and_masks_personal_data(dead_lettered: DeadLettered) -> None:
    refused = dead_lettered.by_key(b"refused-0")
    result = dlq(dead_lettered, "show", coordinates(refused))
    assert result.code == 0, result.both
    document = orjson.loads(result.stdout)
    assert document["dead_letter"]["partition"] == refused.partition
    assert document["dead_letter"]["offset"] == refused.offset
    assert document["failure"]["stage"] == "deliver"
    assert document["failure"]["http_status"] == 400
    assert document["failure"]["error_detail"]["code"] == "invalid"
    assert document["source"]["topic"] == dead_lettered.topic
    value = document["value"]
    assert value["record_name"] == "shop.events.OrderPlaced"
    assert value["data"]["order_id"].startswith(f"{dead_lettered.topic}-refused")
    assert value["data"]["customer"]["email"] == "r***@***"
    assert re.fullmatch(r"\*\*\*\d\d", value["data"]["customer"]["phone"])
    assert ["trace-id", "abc"] in document["headers"]
    assert ["reply-to", "p***@***"] in document["headers"]
    assert "--reveal" not in result.stderr
    assert_masked(dead_lettered, result)

    revealed = dlq(dead_lettered, "show", coordinates(refused), "--reveal")
    assert revealed.code == 0, revealed.both
    data = orjson.loads(revealed.stdout)["value"]["data"]
    assert data["customer"]["email"] == f"{REJECTED}.0@kafka-klaviyo-demo.dev"
    assert ["reply-to", POISON_EMAIL] in orjson.loads(revealed.stdout)["headers"]
    warnings = [
        orjson.loads(line)
        for line in revealed.stderr.splitlines()
        if line.startswith("{") and '"WARNING"' in line
    ]
    assert len(warnings) == 1, revealed.stderr
    assert "--reveal" in warnings[0]["message"]
    assert f"{dead_lettered.dlq}[{refused.partition}]@{refused.offset}" in warnings[0]["message"]
    # The log says that it happened, never what was shown.
    leaked = [value for value in dead_lettered.personal if value in revealed.stderr]
    assert not leaked


def test_show_by_source_shows_an_undecodable_value(dead_lettered: DeadLettered) -> None:
    poison = dead_lettered.by_key(b"not-avro")
    source = (
        f"{dead_lettered.topic}:{poison.headers['dlq.original.partition'].decode()}"
        f":{poison.headers['dlq.original.offset'].decode()}"
    )
    result = dlq(dead_lettered, "show", "--source", source)
    assert result.code == 0, result.both
    document = orjson.loads(result.stdout)
    assert document["dead_letter"]["offset"] == poison.offset
    assert document["value"]["error"].startswith("NotAvroError: value is not Avro")
    assert document["value"]["raw"]["base64"] is None  # it holds an address: withheld
    assert "p***@***" in document["value"]["raw"]["text"]
    assert_masked(dead_lettered, result)

    revealed = dlq(dead_lettered, "show", "--source", source, "--reveal")
    raw = orjson.loads(revealed.stdout)["value"]["raw"]["base64"]
    assert base64.b64decode(raw) == poison.value

    unknown = dlq(dead_lettered, "show", "--source", f"{dead_lettered.topic}:0:999999")
    assert unknown.code == 2 and unknown.stderr.count("\n") == 1
    assert "no dead-letter record of" in unknown.stderr
    missing = dlq(dead_lettered, "show", "0:999999")
    assert missing.code == 2 and "no dead-letter record at 0:999999" in missing.stderr


def test_export_writes_every_selected_record_as_json_lines(
    dead_lettered: DeadLettered, tmp_path: Path
) -> None:
    output = tmp_path / "dead.jsonl"
    result = dlq(dead_lettered, "export", "--output", str(output))
    assert result.code == 0, result.both
    lines = output.read_text().splitlines()
    documents = [orjson.loads(line) for line in lines]
    assert {f"{d['dead_letter']['partition']}:{d['dead_letter']['offset']}" for d in documents} == {
        coordinates(record) for record in dead_lettered.records
    }
    decoded = [d for d in documents if "data" in d["value"]]
    assert {d["value"]["record_name"] for d in decoded} == {
        "shop.events.OrderPlaced",
        "shop.events.Money",
    }
    assert "exported 6 records" in result.stderr
    leaked = [value for value in dead_lettered.personal if value in output.read_text()]
    assert not leaked
    assert_masked(dead_lettered, result)
    assert oct(os.stat(output).st_mode & 0o777) == "0o600"
    assert [p.name for p in tmp_path.iterdir()] == ["dead.jsonl"]  # no temporary file left

    selected = dlq(dead_lettered, "export", "--record-name", "OrderPlaced", "--reveal")
    assert selected.code == 0, selected.both
    exported = [orjson.loads(line) for line in selected.stdout.splitlines()]
    assert len(exported) == 3
    emails = {d["value"]["data"]["customer"]["email"] for d in exported}
    assert f"{REJECTED}.1@kafka-klaviyo-demo.dev" in emails
    assert "--reveal" in selected.stderr and "record_names=OrderPlaced" in selected.stderr


def test_a_missing_or_empty_topic(dead_lettered: DeadLettered, kafka_broker: LocalKafka) -> None:
    missing = dlq(dead_lettered, "stats", "--topic", "no-such-topic-here")
    assert missing.code == 2
    assert missing.stderr.strip().splitlines() == [
        "kafka-klaviyo: dead-letter topic 'no-such-topic-here' does not exist"
        f" (bootstrap servers {dead_lettered.bootstrap}; set kafka.dead_letter_topic or --topic)"
    ]
    empty = f"dlq-empty-{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topic(empty, partitions=2)
    stats = dlq(dead_lettered, "stats", "--topic", empty)
    assert stats.code == 0 and stats.stdout == f"{empty}: no dead-letter records\n"
    listed = dlq(dead_lettered, "list", "--topic", empty)
    assert (
        listed.code == 0 and listed.stderr == f"kafka-klaviyo: no dead-letter records in {empty}\n"
    )
    shown = dlq(dead_lettered, "show", "--topic", empty, "0:0")
    assert shown.code == 2 and "partition 0 holds no records" in shown.stderr


def test_a_read_ends_at_the_end_offsets_of_its_start_while_records_arrive(
    dead_lettered: DeadLettered, kafka_broker: LocalKafka
) -> None:
    """Records written by the real DeadLetterWriter, before and all through the read."""
    topic = f"dlq-busy-{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topic(topic, partitions=3)
    settings = KafkaSettings(bootstrap_servers=kafka_broker.bootstrap_servers)
    writer = DeadLetterWriter(
        Producer(producer_config(settings, timeout_s=30)),
        topic=topic,
        group_id="busy",
        rules_version="r",
    )
    error = RejectedItemError(
        "Klaviyo rejected the item: invalid", detail={"code": "invalid", "pointer": "/data/0"}
    )

    def write(count: int, start: int) -> None:
        for offset in range(start, start + count):
            message = FakeMessage("shop.events", offset % 4, offset, b"k", b"v", None, 1)
            writer.send(message, error, lambda: None)
        writer.poll()

    write(300, 0)
    assert writer.flush(30)
    stop = threading.Event()

    def keep_writing() -> None:
        offset = 300
        while not stop.is_set():
            write(10, offset)
            offset += 10
            stop.wait(0.01)

    thread = threading.Thread(target=keep_writing, name="dlq-writer")
    thread.start()
    try:
        wait_for(lambda: writer.written > 300, 30, "writes going on")
        before = writer.written
        result = dlq(dead_lettered, "stats", "--json", "--topic", topic)
        during = writer.written - before
    finally:
        stop.set()
        thread.join(30)
        writer.flush(30)
        writer.close()
    assert result.code == 0, result.both
    total = orjson.loads(result.stdout)["total"]
    assert total >= 300 and during > 0
    assert total <= writer.written
    assert orjson.loads(result.stdout)["by_klaviyo_error_code"] == {"invalid": total}
