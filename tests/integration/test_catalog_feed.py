"""``kafka-klaviyo catalog-feed`` on the real broker, run as its own process; and ``run`` with
``catalog.source: feed``.

The feed is read from the outside: the file the process wrote, or what its HTTP server
answers. The expected state is worked out here from the records produced, by hand.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from kafka_klaviyo_dev.kafka import LocalKafka
from kafka_klaviyo_dev.produce import produce_records, produce_values
from kafka_klaviyo_dev.samples import guide_site_visit, product_deleted, product_upserted
from tests.fixtures_emulator import RunningEmulator
from tests.support import (
    ConsumerProcess,
    Stack,
    expected_event_ids,
    free_port,
    wait_for_commits,
    wait_until_alive,
)

pytest_plugins = ["tests.fixtures_kafka", "tests.fixtures_emulator"]

UPSERTED = "shop.events.ProductUpserted"
DELETED = "shop.events.ProductDeleted"


@pytest.fixture
def products(kafka_broker: LocalKafka, topic_name: str) -> str:
    """A compacted product topic of three partitions."""
    kafka_broker.create_topic(topic_name, partitions=3, config={"cleanup.policy": "compact"})
    return topic_name


def _env(broker: LocalKafka, topic: str, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("KAFKA_", "KLAVIYO_", "SCHEMA_REGISTRY"))
    }
    env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "KAFKA_KLAVIYO_KAFKA__TOPICS": topic,
            "KAFKA_KLAVIYO_CATALOG__SOURCE": "feed",
            **extra,
        }
    )
    return env


def _feed(broker: LocalKafka, topic: str, tmp_path: Path, *args: str) -> ConsumerProcess:
    log = tmp_path / f"catalog-feed-{uuid.uuid4().hex[:6]}.log"
    return ConsumerProcess(_env(broker, topic), log, command=["catalog-feed", *args])


def _history(broker: LocalKafka, topic: str) -> dict[str, dict[str, Any]]:
    """Produce upserts, updates, deletes, a come-back, an unpublished product, a tombstone,
    another record type and a poison value; return the products that should be in the feed
    (id -> the last ProductUpserted of it), worked out by hand."""
    upserts = [
        product_upserted(f"p{n:02d}", title=f"Product {n}", price=f"{n}.50") for n in range(30)
    ]
    records: list[tuple[bytes | None, str, dict[str, Any]]] = [
        (u["product_id"].encode(), UPSERTED, u) for u in upserts
    ]
    changed = product_upserted("p03", title="Product 3, second edition", price="7.25")
    records += [
        (b"p03", UPSERTED, changed),
        (b"p05", DELETED, product_deleted("p05")),
        (b"p06", DELETED, product_deleted("p06")),
        (b"p07", DELETED, product_deleted("p07")),
        (b"p09", UPSERTED, product_upserted("p09", title="Hidden", published=False)),
        (b"visit", "shop.events.SiteVisited", guide_site_visit()),
    ]
    back = product_upserted("p07", title="Product 7 is back", price="70")
    records.append((b"p07", UPSERTED, back))
    produce_records(broker.bootstrap_servers, topic, records)
    produce_values(broker.bootstrap_servers, topic, [(b"p11", None), (b"poison", b"not avro")])
    latest = {u["product_id"]: u for u in upserts}
    latest["p03"] = changed
    latest["p07"] = back
    for gone in ("p05", "p06", "p09", "p11"):
        del latest[gone]
    return latest


def _check_items(items: list[dict[str, Any]], latest: dict[str, dict[str, Any]]) -> None:
    assert [i["id"] for i in items] == sorted(latest)
    for item in items:
        record = latest[item["id"]]
        assert item["title"] == record["title"]
        assert item["link"] == record["url"]
        assert item["description"] == record["description"]
        assert item["price"] == float(record["price"]["amount"])
        assert item["categories"] == record["categories"]
        assert "image_link" not in item  # the sample products have no image
        assert item["inventory_policy"] == 2 and "inventory_quantity" not in item


def test_once_writes_the_latest_state_of_every_product_and_exits(
    kafka_broker: LocalKafka, products: str, tmp_path: Path
) -> None:
    latest = _history(kafka_broker, products)
    output = tmp_path / "catalog.json"
    process = _feed(kafka_broker, products, tmp_path, "--once", "--output", str(output))
    code = process.wait(120)
    log = process.output()
    assert code == 0, log
    items = json.loads(output.read_bytes())
    _check_items(items, latest)
    assert next(i for i in items if i["id"] == "p07")["title"] == "Product 7 is back"
    assert next(i for i in items if i["id"] == "p07")["price"] == 70
    assert f"catalog feed: {len(latest)} products" in log
    assert "records of other types, left alone: 1" in log
    assert "messages that do not decode, skipped (see the warnings): 1" in log
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".catalog.json")] == []


def test_a_feed_over_the_limit_exits_2_naming_the_limit_and_writes_nothing(
    kafka_broker: LocalKafka, products: str, tmp_path: Path
) -> None:
    _history(kafka_broker, products)
    output = tmp_path / "catalog.json"
    process = _feed(
        kafka_broker, products, tmp_path, "--once", "--output", str(output), "--max-bytes", "500"
    )
    assert process.wait(120) == 2
    [line] = [x for x in process.output().splitlines() if "over the feed limit" in x]
    assert "limit of 500 bytes" in line and "nothing published" in line
    assert not output.exists()


def test_the_served_feed_has_an_etag_answers_304_and_follows_new_products(
    kafka_broker: LocalKafka, products: str, tmp_path: Path
) -> None:
    latest = _history(kafka_broker, products)
    port = free_port()
    url = f"http://127.0.0.1:{port}/catalog.json"
    process = _feed(
        kafka_broker, products, tmp_path, "--listen", f"127.0.0.1:{port}", "--interval", "0.2"
    )
    with process:

        def served() -> httpx.Response | None:
            try:
                response = httpx.get(url, timeout=5)
            except httpx.TransportError:
                return None
            return response if response.status_code == 200 else None

        first = wait_until_alive(process, served, 120, "the feed to be served")
        _check_items(first.json(), latest)
        etag = first.headers["etag"]
        assert first.headers["content-type"] == "application/json"
        unchanged = httpx.get(url, headers={"If-None-Match": etag}, timeout=5)
        assert unchanged.status_code == 304 and unchanged.headers["etag"] == etag

        extra = product_upserted("p99", title="Just in", price="12")
        produce_records(kafka_broker.bootstrap_servers, products, [(b"p99", UPSERTED, extra)])

        def changed() -> httpx.Response | None:
            response = httpx.get(url, headers={"If-None-Match": etag}, timeout=5)
            return response if response.status_code == 200 else None

        second = wait_until_alive(process, changed, 60, "the served feed to change")
        assert second.headers["etag"] != etag
        _check_items(second.json(), {**latest, "p99": extra})
        assert process.stop(60) == 0


def test_a_running_file_feed_is_rewritten_when_a_product_is_deleted(
    kafka_broker: LocalKafka, products: str, tmp_path: Path
) -> None:
    latest = _history(kafka_broker, products)
    output = tmp_path / "catalog.json"
    process = _feed(
        kafka_broker, products, tmp_path, "--output", str(output), "--interval", "0.2"
    )
    with process:
        wait_until_alive(process, output.exists, 120, "the first feed file")
        _check_items(json.loads(output.read_bytes()), latest)
        produce_records(
            kafka_broker.bootstrap_servers, products, [(b"p00", DELETED, product_deleted("p00"))]
        )

        def rewritten() -> bool:
            return "p00" not in {i["id"] for i in json.loads(output.read_bytes())}

        wait_until_alive(process, rewritten, 60, "the file to lose the deleted product")
        del latest["p00"]
        _check_items(json.loads(output.read_bytes()), latest)
        assert process.stop(60) == 0


def test_run_refuses_to_start_with_a_feed_source_and_catalog_rules(
    kafka_broker: LocalKafka, products: str, tmp_path: Path
) -> None:
    env = _env(kafka_broker, products, KLAVIYO_API_KEY="pk_not_used")
    process = ConsumerProcess(env, tmp_path / "run.log")
    assert process.wait(60) == 2
    lines = process.output().strip().splitlines()
    [line] = [x for x in lines if "catalog.source" in x]
    assert line.startswith("kafka-klaviyo: configuration error: catalog.source: feed, but")
    assert "catalog-item (" in line and "catalog-item-delete (" in line


def test_run_with_a_feed_source_sends_events_and_no_catalog_items(
    kafka_broker: LocalKafka, emulator: RunningEmulator, topic_name: str, tmp_path: Path
) -> None:
    stack = Stack(kafka_broker, emulator, topic_name, tmp_path)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "no-catalog-api.yaml").write_text(
        "version: 1\n"
        "rules:\n"
        "  - {name: catalog-item, record: shop.events.ProductUpserted, enabled: false}\n"
        "  - {name: catalog-item-delete, record: shop.events.ProductDeleted, enabled: false}\n"
    )
    orders = stack.produce(20)
    stack.produce_records(
        [(f"p{n}".encode(), UPSERTED, product_upserted(f"p{n}")) for n in range(10)]
        + [(b"p1", DELETED, product_deleted("p1"))]
    )
    with stack.consumer(
        "feed-source",
        KAFKA_KLAVIYO_CATALOG__SOURCE="feed",
        KAFKA_KLAVIYO_RULES__DIRS=str(rules),
    ) as live:
        total = len(expected_event_ids(orders))
        wait_until_alive(live, lambda: stack.accepted() >= total, 120, "the orders' events")
        wait_for_commits(stack, live, 60, "every message, products too, to be committed")
        assert live.stop() == 0
    stats = emulator.client.stats()
    assert not any(stats.accepted.get(name) for name in ("catalog_create", "catalog_update"))
    assert not emulator.client.items("catalog_delete")
    assert stack.dead_letters() == []
