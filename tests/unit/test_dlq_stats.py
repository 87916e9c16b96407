"""Counting dead-letter records: by stage, class, record, source, Klaviyo code and hour."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from consumer.dlq.stats import CHART_HOURS, Stats
from consumer.errors import NotAvroError, TranslationError
from tests.unit.test_dlq_records import dead_letter, rejected

T0 = datetime(2026, 12, 1, 19, 5, tzinfo=UTC)


def sample() -> Stats:
    stats = Stats()
    for minute in range(4):  # 19h: four refusals by Klaviyo, two codes
        code = "invalid_email" if minute % 2 else "duplicate_profile"
        stats.add(dead_letter(rejected(code), now=T0 + timedelta(minutes=minute)))
    stats.add(dead_letter(NotAvroError("value is not Avro"), now=T0 + timedelta(hours=2)))
    translation = TranslationError(
        "no identifier", rule="placed-order", field="profile", record_name="shop.events.X"
    )
    stats.add(dead_letter(translation, now=T0 + timedelta(hours=2, minutes=1)))
    return stats


def test_counts_by_every_dimension() -> None:
    counts = sample().to_json()
    assert counts["total"] == 6 and counts["cut"] == 0
    assert counts["by_stage"] == {"deliver": 4, "decode": 1, "translate": 1}
    assert counts["by_error_class"] == {
        "RejectedItemError": 4,
        "NotAvroError": 1,
        "TranslationError": 1,
    }
    assert counts["by_record_name"] == {
        "shop.events.OrderPlaced": 4,
        "(none)": 1,
        "shop.events.X": 1,
    }
    assert counts["by_source_topic"] == {"shop.events": 6}
    assert counts["by_klaviyo_error_code"] == {"duplicate_profile": 2, "invalid_email": 2}
    assert counts["by_hour"] == {
        "2026-12-01T19:00:00+00:00": 4,
        "2026-12-01T21:00:00+00:00": 2,
    }
    assert counts["first_failed_at"] == T0.isoformat()
    assert counts["last_failed_at"] == (T0 + timedelta(hours=2, minutes=1)).isoformat()


def test_the_report_draws_hours_as_bars_with_the_empty_ones_between() -> None:
    report = sample().render("shop.events.dlq")
    assert report.startswith(
        "shop.events.dlq: 6 dead-letter records, failed 2026-12-01 19:05 .. 2026-12-01 21:06 UTC"
    )
    assert "  RejectedItemError  4   66.7%" in report
    chart = report.split("by hour (UTC):\n", 1)[1].splitlines()
    assert chart == [
        "  2026-12-01 19h  4  " + "█" * 40,
        "  2026-12-01 20h  0",
        "  2026-12-01 21h  2  " + "█" * 20,
    ]


def test_long_spans_draw_the_last_hours_only() -> None:
    stats = Stats()
    for hour in range(CHART_HOURS + 10):
        stats.add(dead_letter(rejected(), now=T0 + timedelta(hours=hour)))
    chart = stats.render("t").split("by hour (UTC):\n", 1)[1].splitlines()
    assert chart[0] == "  (10 earlier hours left out; --json has all)"
    assert len(chart) == CHART_HOURS + 1
    assert len(stats.to_json()["by_hour"]) == CHART_HOURS + 10


def test_a_small_count_still_shows_and_nothing_is_a_one_liner() -> None:
    stats = Stats()
    for _ in range(100):
        stats.add(dead_letter(rejected(), now=T0))
    stats.add(dead_letter(rejected(), now=T0 + timedelta(hours=1)))
    assert stats.render("t").rstrip().endswith("2026-12-01 20h    1  ▏")
    assert Stats().render("shop.events.dlq") == "shop.events.dlq: no dead-letter records\n"
    assert Stats().to_json()["total"] == 0
