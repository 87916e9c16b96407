"""The catalog feed builder (consumer/catalog_feed.py), its message handling and HTTP answers
(consumer/catalog_feed_command.py), the catalog.source setting and the refusal of catalog
rules it causes (consumer/compose.py)."""

from __future__ import annotations

import os
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from click.testing import CliRunner

from consumer.catalog_feed import (
    FEED_LIMIT_BYTES,
    PRODUCT_DELETED,
    PRODUCT_RECORDS,
    PRODUCT_UPSERTED,
    CatalogState,
    Feed,
    FeedTooLargeError,
    check_size,
    entity_tag,
    feed_item,
    matches,
    render,
    write_atomically,
)
from consumer.catalog_feed_cli import catalog_feed_command
from consumer.catalog_feed_command import FeedBuilder, HttpPublisher, ProductReader
from consumer.compose import build_translation, refuse_catalog_rules
from consumer.decode import Decoder
from consumer.errors import ConfigError
from consumer.routing import AccountRouter
from consumer.rules import rules_from_settings
from consumer.schemas import SchemaCatalog
from consumer.settings import Settings, load_settings
from kafka_klaviyo_dev.encode import encode_single_object
from kafka_klaviyo_dev.samples import guide_site_visit, product_deleted, product_upserted
from tests.fakes import FakeMessage


def _upsert(pid: str, **fields: Any) -> dict[str, Any]:
    return product_upserted(pid, **fields)


def _ids(state: CatalogState) -> list[str]:
    return [item["id"] for item in state.items()]


# -- latest state per product id ---------------------------------------------------------------


def test_the_latest_record_per_product_wins_and_a_delete_removes_it() -> None:
    state = CatalogState()
    state.apply(PRODUCT_UPSERTED, _upsert("a", title="A one"))
    state.apply(PRODUCT_UPSERTED, _upsert("b"))
    state.apply(PRODUCT_UPSERTED, _upsert("c"))
    state.apply(PRODUCT_UPSERTED, _upsert("a", title="A two"))
    state.apply(PRODUCT_DELETED, product_deleted("b"))
    assert _ids(state) == ["a", "c"]
    assert state.items()[0]["title"] == "A two"


def test_an_upsert_after_a_delete_brings_the_product_back() -> None:
    state = CatalogState()
    state.apply(PRODUCT_UPSERTED, _upsert("a", title="before"))
    state.apply(PRODUCT_DELETED, product_deleted("a"))
    assert _ids(state) == []
    state.apply(PRODUCT_UPSERTED, _upsert("a", title="back"))
    assert [(i["id"], i["title"]) for i in state.items()] == [("a", "back")]


def test_a_delete_of_an_unknown_product_and_other_records_change_nothing() -> None:
    state = CatalogState()
    state.apply(PRODUCT_UPSERTED, _upsert("a"))
    version = state.version
    assert state.apply(PRODUCT_DELETED, product_deleted("zzz")) is False
    assert state.apply("shop.events.OrderPlaced", {"order_id": "1"}) is False
    assert state.version == version and _ids(state) == ["a"]


def test_an_unpublished_product_leaves_the_feed() -> None:
    state = CatalogState()
    state.apply(PRODUCT_UPSERTED, _upsert("a"))
    assert state.apply(PRODUCT_UPSERTED, _upsert("a", published=False)) is True
    assert _ids(state) == []
    state.apply(PRODUCT_UPSERTED, _upsert("a", published=True))
    assert _ids(state) == ["a"]


def test_the_same_state_renders_the_same_bytes_whatever_the_order_of_products() -> None:
    one, two = CatalogState(), CatalogState()
    for pid in ("c", "a", "b"):
        one.apply(PRODUCT_UPSERTED, _upsert(pid))
    for pid in ("b", "c", "a"):
        two.apply(PRODUCT_UPSERTED, _upsert(pid))
    assert render(one) == render(two)
    assert _ids(one) == ["a", "b", "c"]


# -- mapping -----------------------------------------------------------------------------------


def test_a_product_maps_to_klaviyos_feed_fields() -> None:
    record = _upsert(
        "1111",
        title="Winnie the Pooh",
        price="9.99",
        categories=["Fiction", "Children"],
        description="A bear of very little brain.",
        url="https://shop.example.org/p/1111",
        image_url="https://shop.example.org/p/1111.png",
        brand="Kids Books",
        sku="WINNIEPOOH",
        inventory_quantity=25,
    )
    assert feed_item(record) == {
        "id": "1111",
        "title": "Winnie the Pooh",
        "link": "https://shop.example.org/p/1111",
        "description": "A bear of very little brain.",
        "price": 9.99,
        "image_link": "https://shop.example.org/p/1111.png",
        "categories": ["Fiction", "Children"],
        "inventory_quantity": 25,
        "inventory_policy": 1,
    }


def test_blank_required_fields_are_never_sent_blank() -> None:
    item = feed_item(_upsert("1", title="Plain", description="", image_url=None))
    assert item["description"] == "Plain"
    assert "image_link" not in item


def test_untracked_inventory_has_no_quantity_and_klaviyos_default_policy() -> None:
    item = feed_item(_upsert("1", inventory_quantity=None))
    assert "inventory_quantity" not in item and item["inventory_policy"] == 2
    shown = feed_item(_upsert("1", inventory_quantity=0), out_of_stock_policy=2)
    assert shown["inventory_quantity"] == 0 and shown["inventory_policy"] == 2


def test_prices_are_json_numbers_with_whole_amounts_as_integers() -> None:
    assert feed_item(_upsert("1", price=Decimal("29.9800")))["price"] == 29.98
    whole = feed_item(_upsert("1", price=Decimal("10.0000")))["price"]
    assert whole == 10 and isinstance(whole, int)
    assert orjson.dumps(feed_item(_upsert("1", price="10.00"))).count(b'"price":10,') == 1


# -- the size limit ----------------------------------------------------------------------------


def test_a_feed_over_the_limit_is_one_line_naming_limit_and_size() -> None:
    state = CatalogState()
    for n in range(50):
        state.apply(PRODUCT_UPSERTED, _upsert(f"p{n}"))
    size = len(render(state))
    with pytest.raises(FeedTooLargeError) as caught:
        Feed.of(state, limit=size - 1)
    text = str(caught.value)
    assert "\n" not in text
    assert f"{size:,} bytes" in text and f"limit of {size - 1:,} bytes" in text
    assert Feed.of(state, limit=size).items == 50  # exactly the limit is allowed


def test_the_default_limit_is_klaviyos_100_mb() -> None:
    assert FEED_LIMIT_BYTES == 100_000_000
    check_size(b"[]")
    text = str(FeedTooLargeError(100_000_001, FEED_LIMIT_BYTES))
    assert text == (
        "catalog feed is 100,000,001 bytes, over the feed limit of 100,000,000 bytes "
        "(Klaviyo's 100 MB)"
    )


# -- ETag --------------------------------------------------------------------------------------


def test_the_etag_changes_exactly_when_the_content_does() -> None:
    state = CatalogState()
    state.apply(PRODUCT_UPSERTED, _upsert("a", title="one"))
    first = Feed.of(state)
    version = state.version
    # The same state again: no change, same tag.
    assert state.apply(PRODUCT_UPSERTED, _upsert("a", title="one")) is False
    assert state.version == version and Feed.of(state).etag == first.etag
    state.apply(PRODUCT_UPSERTED, _upsert("a", title="two"))
    second = Feed.of(state)
    assert second.etag != first.etag
    # Back to the first content: the first tag again.
    state.apply(PRODUCT_UPSERTED, _upsert("a", title="one"))
    assert Feed.of(state).etag == first.etag
    assert first.etag.startswith('"') and first.etag.endswith('"')
    assert entity_tag(b"[]") == entity_tag(b"[]") != entity_tag(b"[ ]")


def test_if_none_match_matches_the_tag_in_lists_weakly_and_as_a_star() -> None:
    tag = entity_tag(b"[]")
    assert matches(tag, tag)
    assert matches(f'"other", W/{tag}', tag)
    assert matches("*", tag)
    assert not matches('"other"', tag)
    assert not matches(None, tag) and not matches("", tag)


# -- atomic write ------------------------------------------------------------------------------


def test_a_reader_never_sees_a_partial_feed_file(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    bodies = [b"[" + b"1," * 400_000 + b"1]", b"[" + b"2," * 300_000 + b"2]"]
    write_atomically(path, bodies[0])
    stop = threading.Event()
    seen: list[bytes] = []
    bad: list[int] = []

    def read() -> None:
        while not stop.is_set():
            body = path.read_bytes()
            seen.append(body[:2])
            if body not in bodies:
                bad.append(len(body))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for n in range(60):
            write_atomically(path, bodies[n % 2])
    finally:
        stop.set()
        reader.join()
    assert not bad, f"{len(bad)} partial reads, e.g. {bad[:3]} bytes"
    assert {b"[1", b"[2"} <= set(seen)  # the reader saw both versions
    assert [p.name for p in tmp_path.iterdir()] == ["catalog.json"]  # no temporary left
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


def test_a_failed_write_leaves_the_old_feed_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "catalog.json"
    write_atomically(path, b"[1]")

    def refuse(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError):
        write_atomically(path, b"[2]")
    assert path.read_bytes() == b"[1]"
    assert [p.name for p in tmp_path.iterdir()] == ["catalog.json"]


# -- messages: decoding, tombstones, routing ---------------------------------------------------

CATALOG = SchemaCatalog.load()


def _message(
    offset: int, name: str | None, record: dict[str, Any] | None, key: bytes | None = None
) -> FakeMessage:
    value = encode_single_object(CATALOG, name, record) if name and record is not None else None
    return FakeMessage("products", 0, offset, key, value)


def _builder(router: AccountRouter | None = None, account: str = "default") -> FeedBuilder:
    return FeedBuilder(
        Decoder(CATALOG, mapped_records=PRODUCT_RECORDS),
        router or AccountRouter.from_settings(None),
        account=account,
        out_of_stock_policy=1,
        stop=threading.Event(),
    )


def test_messages_are_decoded_and_other_records_and_bad_values_are_counted_and_skipped() -> None:
    builder = _builder()
    builder.apply(_message(0, PRODUCT_UPSERTED, _upsert("a")))
    builder.apply(_message(1, PRODUCT_UPSERTED, _upsert("b")))
    builder.apply(FakeMessage("products", 0, 2, None, b"not avro"))
    builder.apply(_message(3, "shop.events.SiteVisited", _site_visit()))
    builder.apply(_message(4, PRODUCT_DELETED, product_deleted("a")))
    assert _ids(builder.state) == ["b"]
    counts = builder.counts
    assert counts["ProductUpserted"] == 2 and counts["ProductDeleted"] == 1
    assert counts["undecodable"] == 1 and counts["other records"] == 1
    assert counts["messages"] == 5


def _site_visit() -> dict[str, Any]:
    return guide_site_visit()


def test_a_tombstone_deletes_the_product_its_key_names() -> None:
    builder = _builder()
    builder.apply(_message(0, PRODUCT_UPSERTED, _upsert("a"), key=b"a"))
    builder.apply(_message(1, PRODUCT_UPSERTED, _upsert("b"), key=b"b"))
    builder.apply(FakeMessage("products", 0, 2, b"a", None))
    assert _ids(builder.state) == ["b"] and builder.counts["tombstones"] == 1


def test_only_the_accounts_own_products_are_in_its_feed() -> None:
    router = AccountRouter("store_id", {"store-a": "brand-a", "store-b": "brand-b"}, None)
    builder = _builder(router, account="brand-a")
    builder.apply(_message(0, PRODUCT_UPSERTED, _upsert("a", store_id="store-a")))
    builder.apply(_message(1, PRODUCT_UPSERTED, _upsert("b", store_id="store-b")))
    builder.apply(_message(2, PRODUCT_UPSERTED, _upsert("c", store_id="store-zzz")))
    assert _ids(builder.state) == ["a"]
    assert builder.counts["other accounts"] == 1 and builder.counts["unrouted"] == 1


# -- the initial build's end -------------------------------------------------------------------


class _Partitions:
    """Metadata and positions of one topic, as the reader asks for them."""

    def __init__(self, marks: dict[int, tuple[int, int]], positions: dict[int, int]) -> None:
        self.marks = marks
        self.positions = positions
        self.assigned: list[Any] = []

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        class _T:
            error = None
            partitions = {n: None for n in self.marks}

        class _M:
            topics = {"products": _T()}

        return _M()

    def get_watermark_offsets(self, tp: Any, timeout: float = -1, cached: bool = False) -> Any:
        return self.marks[tp.partition]

    def offsets_for_times(self, partitions: list[Any], timeout: float = -1) -> list[Any]:
        raise AssertionError("not used")

    def assign(self, partitions: list[Any]) -> None:
        self.assigned = partitions

    def incremental_assign(self, partitions: list[Any]) -> None:
        self.assigned += partitions

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]:
        return []

    def position(self, partitions: list[Any]) -> list[Any]:
        from confluent_kafka import TopicPartition

        return [
            TopicPartition(p.topic, p.partition, self.positions[p.partition]) for p in partitions
        ]

    def close(self) -> None:
        pass


def test_the_build_is_done_when_every_partition_reaches_its_end_of_the_start() -> None:
    # Partition 1 is empty; partition 2's last offsets are a compaction gap.
    fake = _Partitions({0: (0, 10), 1: (5, 5), 2: (3, 8)}, {0: -1001, 2: -1001})
    reader = ProductReader(fake, ["products"])
    reader.start()
    assert reader.total == 15 and reader.done() == 0
    assert all(tp.offset == -2 for tp in fake.assigned)  # OFFSET_BEGINNING everywhere
    assert not reader.caught_up()
    reader._next[("products", 0)] = 10
    fake.positions[2] = 6
    assert not reader.caught_up()
    fake.positions[2] = 8
    assert reader.caught_up()


# -- HTTP --------------------------------------------------------------------------------------


def test_the_server_answers_503_before_the_build_then_the_feed_with_etag_and_304() -> None:
    server = HttpPublisher("127.0.0.1", 0, "/catalog.json")
    try:
        url = server.describe()
        assert httpx.get(url).status_code == 503
        state = CatalogState()
        state.apply(PRODUCT_UPSERTED, _upsert("a"))
        feed = Feed.of(state)
        server.publish(feed)
        got = httpx.get(url)
        assert got.status_code == 200 and got.content == feed.body
        assert got.headers["etag"] == feed.etag
        assert got.headers["content-type"] == "application/json"
        again = httpx.get(url, headers={"If-None-Match": feed.etag})
        assert again.status_code == 304 and again.content == b""
        assert httpx.get(url.replace("/catalog.json", "/other")).status_code == 404
        head = httpx.head(url)
        assert head.status_code == 200 and head.headers["content-length"] == str(len(feed.body))
    finally:
        server.close()


def test_a_port_in_use_is_a_configuration_error_naming_listen() -> None:
    first = HttpPublisher("127.0.0.1", 0, "/catalog.json")
    try:
        port = first.server.server_address[1]
        with pytest.raises(ConfigError, match=r"^--listen: cannot listen on 127.0.0.1:\d+"):
            HttpPublisher("127.0.0.1", int(port), "/catalog.json")
    finally:
        first.close()


# -- the command line --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "give --output FILE or --listen"),
        (["--output", "f.json", "--listen", "8080"], "give --output FILE or --listen"),
        (["--listen", "8080", "--once"], "--once writes a file"),
        (["--listen", "nope"], "give [HOST:]PORT"),
        (["--output", "f.json", "--max-bytes", "100000001"], "--max-bytes"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(args: list[str], says: str) -> None:
    result = CliRunner().invoke(catalog_feed_command, args)
    assert result.exit_code == 2
    assert says in result.output


def test_every_option_has_help() -> None:
    for param in catalog_feed_command.params:
        assert getattr(param, "help", None), param.name
    assert catalog_feed_command.help


# -- catalog.source and run -------------------------------------------------------------------


def test_catalog_source_defaults_to_api_and_takes_feed_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings().catalog.source == "api"
    monkeypatch.setenv("KAFKA_KLAVIYO_CATALOG__SOURCE", "feed")
    assert load_settings().catalog.source == "feed"
    monkeypatch.setenv("KAFKA_KLAVIYO_CATALOG__SOURCE", "both")
    with pytest.raises(ConfigError, match=r"^catalog\.source: "):
        load_settings()


def test_a_feed_source_refuses_rules_that_send_catalog_items() -> None:
    settings = Settings.model_validate({"catalog": {"source": "feed"}})
    with pytest.raises(ConfigError) as caught:
        build_translation(settings)
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith("catalog.source: feed, but the translation rules catalog-item (")
    assert "catalog-item-delete (" in text and "catalog.yaml:" in text
    # With the API as the source the same rules are fine.
    build_translation(Settings())


def test_a_feed_source_with_the_catalog_rules_disabled_starts(tmp_path: Path) -> None:
    (tmp_path / "no-catalog.yaml").write_text(
        "version: 1\n"
        "rules:\n"
        "  - {name: catalog-item, record: shop.events.ProductUpserted, enabled: false}\n"
        "  - {name: catalog-item-delete, record: shop.events.ProductDeleted, enabled: false}\n"
    )
    settings = Settings.model_validate(
        {"catalog": {"source": "feed"}, "rules": {"dirs": [str(tmp_path)]}}
    )
    rules = rules_from_settings(settings.rules, catalog=CATALOG)
    refuse_catalog_rules(settings, rules)
    assert PRODUCT_UPSERTED not in rules.mapped_records
    # `run` passes product records over (nothing to send) instead of dead-lettering them.
    translation = build_translation(settings)
    for name, record in ((PRODUCT_UPSERTED, _upsert("a")), (PRODUCT_DELETED, product_deleted("a"))):
        decoded = translation.decoder.decode(encode_single_object(CATALOG, name, record))
        assert translation.translator.translate(decoded) == []
    visit = translation.decoder.decode(
        encode_single_object(CATALOG, "shop.events.SiteVisited", guide_site_visit())
    )
    assert len(translation.translator.translate(visit)) == 1
