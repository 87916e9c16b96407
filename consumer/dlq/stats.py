"""Counts over dead-letter records, as a JSON object or a terminal report.

:class:`Stats` is fed one record at a time (constant memory whatever the topic holds) and counts
by stage, error class, record name, source topic, Klaviyo error code and hour of failure. The
terminal report ends with a horizontal bar chart of the hours.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from consumer.dlq.records import DeadLetterRecord

#: What a record without the field is counted under.
NONE = "(none)"
#: Hours drawn at most in the chart (the JSON has them all).
CHART_HOURS = 48
_BAR_WIDTH = 40
# A span of hours this long or shorter is drawn with its empty hours too.
_FILL_HOURS = 24 * 7


class Stats:
    """Counts of dead-letter records by what they have in common."""

    def __init__(self) -> None:
        self.total = 0
        self.by_stage: Counter[str] = Counter()
        self.by_error_class: Counter[str] = Counter()
        self.by_record_name: Counter[str] = Counter()
        self.by_source_topic: Counter[str] = Counter()
        self.by_error_code: Counter[str] = Counter()
        self.by_hour: Counter[datetime] = Counter()
        self.cut = 0
        self.first: datetime | None = None
        self.last: datetime | None = None

    def add(self, record: DeadLetterRecord) -> None:
        self.total += 1
        self.by_stage[record.stage or NONE] += 1
        self.by_error_class[record.error_class or NONE] += 1
        self.by_record_name[record.record_name or NONE] += 1
        self.by_source_topic[record.original_topic or NONE] += 1
        code = record.klaviyo_error_code
        if code is not None:
            self.by_error_code[code] += 1
        if record.cut:
            self.cut += 1
        when = record.when
        if when is not None:
            self.by_hour[when.replace(minute=0, second=0, microsecond=0)] += 1
            if self.first is None or when < self.first:
                self.first = when
            if self.last is None or when > self.last:
                self.last = when

    def to_json(self) -> dict[str, Any]:
        """Machine output: every count, hours as ISO-8601 keys in time order."""
        return {
            "total": self.total,
            "cut": self.cut,
            "first_failed_at": self.first.isoformat() if self.first else None,
            "last_failed_at": self.last.isoformat() if self.last else None,
            "by_stage": _ranked(self.by_stage),
            "by_error_class": _ranked(self.by_error_class),
            "by_record_name": _ranked(self.by_record_name),
            "by_source_topic": _ranked(self.by_source_topic),
            "by_klaviyo_error_code": _ranked(self.by_error_code),
            "by_hour": {hour.isoformat(): self.by_hour[hour] for hour in sorted(self.by_hour)},
        }

    def render(self, topic: str) -> str:
        """The terminal report."""
        if not self.total:
            return f"{topic}: no dead-letter records\n"
        lines = [f"{topic}: {self.total} dead-letter record{'s' if self.total != 1 else ''}"]
        if self.first and self.last:
            lines[0] += f", failed {_minute(self.first)} .. {_minute(self.last)} UTC"
        if self.cut:
            lines.append(f"  {self.cut} cut (value left out: too large for the topic)")
        for title, counts in (
            ("stage", self.by_stage),
            ("error class", self.by_error_class),
            ("record", self.by_record_name),
            ("source topic", self.by_source_topic),
            ("Klaviyo error code", self.by_error_code),
        ):
            if counts:
                lines += ["", f"by {title}:", *_table(counts, self.total)]
        if self.by_hour:
            lines += ["", "by hour (UTC):", *self._chart()]
        return "\n".join(lines) + "\n"

    def _chart(self) -> list[str]:
        hours = sorted(self.by_hour)
        if (hours[-1] - hours[0]) <= timedelta(hours=_FILL_HOURS):
            span = int((hours[-1] - hours[0]) / timedelta(hours=1)) + 1
            hours = [hours[0] + timedelta(hours=n) for n in range(span)]
        lines = []
        if len(hours) > CHART_HOURS:
            lines.append(f"  ({len(hours) - CHART_HOURS} earlier hours left out; --json has all)")
            hours = hours[-CHART_HOURS:]
        peak = max(self.by_hour[hour] for hour in hours) or 1
        width = len(str(peak))
        for hour in hours:
            count = self.by_hour[hour]
            bar = "█" * round(_BAR_WIDTH * count / peak) if count else ""
            if count and not bar:
                bar = "▏"  # a count too small for a whole block is still visible
            lines.append(f"  {hour:%Y-%m-%d %H}h  {count:>{width}}  {bar}".rstrip())
        return lines


def _ranked(counts: Counter[str]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _table(counts: Counter[str], total: int) -> list[str]:
    ranked = _ranked(counts)
    name_width = max(len(name) for name in ranked)
    count_width = max(len(str(count)) for count in ranked.values())
    return [
        f"  {name:<{name_width}}  {count:>{count_width}}  {100 * count / total:5.1f}%"
        for name, count in ranked.items()
    ]


def _minute(when: datetime) -> str:
    return f"{when:%Y-%m-%d %H:%M}"
