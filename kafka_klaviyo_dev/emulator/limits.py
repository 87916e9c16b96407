"""Klaviyo's ingestion limits, the rules the OpenAPI schema cannot express.

Each check takes items (see :mod:`kafka_klaviyo_dev.emulator.items`) and returns
:class:`Issue` values whose pointers name the offending field inside the offending item.
Klaviyo refuses the whole request when any of these fail; the pointers let a client drop
exactly the bad items and resend the rest.

Every check is tagged with the id of the rule it enforces in ``RULES.md`` (Klaviyo's rules
written only in prose, ``/work/shared/klaviyo/RULES.md``) through :func:`enforces`;
:func:`run_checks` counts refusals by that id. The checks of the rules beyond these basic
limits live in :mod:`kafka_klaviyo_dev.emulator.rules`.

Sizes are counted in bytes of UTF-8 and in decimal units (5 MB = 5,000,000 bytes, 100 KB =
100,000 bytes): Klaviyo does not say which unit it means, and the stricter reading keeps a
client that passes here safe against the real service.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import orjson
import phonenumbers

from kafka_klaviyo_dev.emulator import pointer as jp
from kafka_klaviyo_dev.emulator.dedup import EventKey, event_key, parse_time
from kafka_klaviyo_dev.emulator.items import Issue, Item

MAX_STRING_BYTES = 100_000
MAX_METRIC_NAME = 128
_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
#: Klaviyo's ingestion limits page: event timestamps between 2000 and now + 1 year. (The
#: schema's description says 1990; the documented ingestion limit is the stricter one.)
EARLIEST_EVENT_TIME = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_EVENT_AHEAD = timedelta(days=365)


@dataclass(frozen=True, slots=True)
class CheckContext:
    """What checks may depend on besides the item: the clock and the request.

    ``strings_fit``: the raw body shows that no string in it exceeds
    :data:`MAX_STRING_BYTES` (see :func:`body_strings_fit`): :func:`run_checks` then skips
    the string checks, which would walk every string of every item to find nothing.
    """

    now: datetime
    received_at: float
    strings_fit: bool = False
    #: The request's own attributes (``data.attributes``), e.g. ``historical_import``.
    job: Mapping[str, Any] = field(default_factory=dict)
    #: The whole parsed body, for the checks that walk more than the items (X1).
    body: Any = None
    #: The operation's resolved requestBody schema when the spec is loaded (None without).
    schema: Mapping[str, Any] | None = None
    #: Fields Klaviyo ignored rather than refused (D4: an invalid phone beside a valid
    #: identifier): the ``X-Klaviyo-Partial-Failure`` header of the 202.
    partial_failures: set[str] = field(default_factory=set)


ItemCheck = Callable[[Item, CheckContext], Iterable[Issue]]
RequestCheck = Callable[[Sequence[Item], CheckContext], Iterable[Issue]]

#: Item checks whose issues depend only on ``item.profile`` and ``item.profile_pointer``.
_PROFILE_CHECKS: set[ItemCheck] = set()
#: check -> the RULES.md id it enforces.
_RULE_OF: dict[Callable[..., Iterable[Issue]], str] = {}

#: Rule id of refusals that are no RULES.md rule but the OpenAPI schema itself.
SCHEMA_RULE = "schema"


_Check = TypeVar("_Check", bound=Callable[..., Iterable[Issue]])


def enforces(rule: str) -> Callable[[_Check], _Check]:
    """Tag a check with the RULES.md id of the rule it enforces (``@enforces("E14")``)."""

    def tag(check: _Check) -> _Check:
        _RULE_OF[check] = rule
        return check

    return tag


def rule_of(check: Callable[..., Iterable[Issue]]) -> str:
    """The RULES.md id ``check`` enforces ("?" for an untagged check)."""
    return _RULE_OF.get(check, "?")


def profile_check(check: ItemCheck) -> ItemCheck:
    """Mark ``check`` as looking only at the item's profile: :func:`run_checks` runs it once
    per profile rather than once per event of the profile's group."""
    _PROFILE_CHECKS.add(check)
    return check


def count_issue(count: int, limit: int, array_pointer: str, noun: str) -> Issue | None:
    """An issue if a request carries more than ``limit`` items."""
    if count <= limit:
        return None
    return Issue(array_pointer, f"At most {limit:,} {noun} are allowed per request; got {count:,}.")


# Profiles repeat within and across requests; the parse is half the emulator's CPU.
@functools.lru_cache(maxsize=65_536)
def is_e164(value: str) -> bool:
    """True for a valid phone number written in E.164 (``+`` country code, digits only)."""
    if not _E164.match(value):
        return False
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        return False
    return bool(phonenumbers.is_valid_number(number))


def _string_too_long(value: str, limit: int) -> bool:
    # UTF-8 is at most 4 bytes a character: most strings are decided without encoding them.
    if len(value) * 4 <= limit:
        return False
    if len(value) > limit:
        return True
    return len(value.encode("utf-8", "surrogatepass")) > limit


def body_strings_fit(raw: bytes, limit: int = MAX_STRING_BYTES) -> bool:
    """True if no string in ``raw``, a JSON body that parsed, can exceed ``limit`` bytes.

    Decoded, a string never takes more UTF-8 bytes than it is written with between its quotes
    (an escape decodes to fewer bytes than it spells), so a string over ``limit`` bytes lies in
    a run of more than ``limit`` bytes without a string delimiter. Such a run holds a positive
    multiple of ``limit``: measuring the run around each of those positions finds every long
    run. A few searches per body instead of a walk of every string of every item. False only
    means "maybe": the walk then decides.
    """
    if b"\\" in raw:
        # Blank out escaped backslashes, then escaped quotes (same length, so positions hold):
        # every '"' left delimits a string. Backslashes occur only in strings, and a run of
        # them pairs up from its start, as replace() does.
        raw = raw.replace(b"\\\\", b"__").replace(b'\\"', b"__")
    size = len(raw)
    for position in range(limit, size, limit):
        if raw[position] == 0x22:  # a delimiter, in no run
            continue
        end = raw.find(b'"', position)
        run = (end if end >= 0 else size) - raw.rfind(b'"', 0, position) - 1
        if run > limit:
            return False
    return True


def _any_oversized(node: Any, limit: int) -> bool:
    # The common case, nothing too long, without building a pointer per value.
    shortest_suspect = limit // 4
    stack = [node]
    while stack:
        value = stack.pop()
        kind = type(value)
        if kind is str:
            if len(value) > shortest_suspect and _string_too_long(value, limit):
                return True
        elif kind is dict:
            stack.extend(value.values())
        elif kind is list:
            stack.extend(value)
    return False


def oversized_strings(node: Any, base: str, limit: int = MAX_STRING_BYTES) -> Iterator[Issue]:
    """Every string below ``node`` longer than ``limit`` bytes."""
    if not _any_oversized(node, limit):
        return
    stack: list[tuple[Any, str]] = [(node, base)]
    while stack:
        value, where = stack.pop()
        if isinstance(value, str):
            if _string_too_long(value, limit):
                yield Issue(where, f"A string may not exceed {limit:,} bytes.")
        elif isinstance(value, dict):
            stack.extend((v, jp.join(where, (k,))) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, jp.join(where, (i,))) for i, v in enumerate(value))


@enforces("E4")
def check_strings(item: Item, ctx: CheckContext) -> Iterator[Issue]:
    """No string in the item may exceed 100 KB."""
    yield from oversized_strings(item.resource, item.pointer)


@profile_check
@enforces("E4")
def check_profile_strings(item: Item, ctx: CheckContext) -> Iterator[Issue]:
    """No string in the item's profile, when that is not the item itself, may exceed 100 KB."""
    if item.profile is not None and item.profile is not item.resource and item.profile_pointer:
        yield from oversized_strings(item.profile, item.profile_pointer)


_STRING_CHECKS = frozenset({check_strings, check_profile_strings})


@profile_check
@enforces("E8")
def check_phone(item: Item, ctx: CheckContext) -> Iterator[Issue]:
    """A profile's ``phone_number`` must be a valid E.164 number."""
    if item.profile is None or item.profile_pointer is None:
        return
    attributes = item.profile.get("attributes")
    phone = attributes.get("phone_number") if isinstance(attributes, dict) else None
    if isinstance(phone, str) and not is_e164(phone):
        yield Issue(
            jp.join(item.profile_pointer, ("attributes", "phone_number")),
            "Invalid phone number format (Example of a valid phone number format: +12345678901).",
        )


@profile_check
@enforces("E1")
def check_profile_identified(item: Item, ctx: CheckContext) -> Iterator[Issue]:
    """A profile needs at least one identifier (email, phone_number, external_id, id...)."""
    if item.profile is not None and item.identity is None:
        yield Issue(
            jp.join(item.profile_pointer or item.pointer, ("attributes",)),
            "A profile identifier is required: one of email, phone_number, external_id or id.",
        )


@enforces("E16")
def check_event_time(item: Item, ctx: CheckContext) -> Iterator[Issue]:
    """An event's ``time`` must be ISO 8601, not before 2000 nor more than a year ahead."""
    raw = item.attributes.get("time")
    if raw is None:
        return  # Klaviyo uses the time the request arrived.
    moment = parse_time(raw) if isinstance(raw, str) else None
    if moment is None:
        yield Issue(f"{item.pointer}/attributes/time", "'time' must be an ISO 8601 date-time.")
    elif moment < EARLIEST_EVENT_TIME or moment > ctx.now + LATEST_EVENT_AHEAD:
        yield Issue(
            f"{item.pointer}/attributes/time",
            "'time' must be between the year 2000 and one year from now.",
        )


@enforces("S2")
def check_consent_times(item: Item, ctx: CheckContext) -> Iterator[Issue]:
    """RULES.md S2-S4: ``consented_at`` only in a historical import, and a historical import
    needs a ``consented_at`` in the past on every consent."""
    historical = ctx.job.get("historical_import") is True  # false counts as "not included"
    channels = item.attributes.get("subscriptions")
    if not isinstance(channels, dict):
        return
    for channel, kinds in channels.items():
        if not isinstance(kinds, dict):
            continue
        for kind, consent in kinds.items():
            if not isinstance(consent, dict):
                continue
            where = jp.join(
                item.pointer, ("attributes", "subscriptions", channel, kind, "consented_at")
            )
            at = consent.get("consented_at")
            if at is not None and not historical:
                yield Issue(
                    where,
                    "consented_at may only be provided with historical_import set to true.",
                )
            elif historical:
                moment = parse_time(at) if isinstance(at, str) else None
                if moment is None or moment >= ctx.now:
                    yield Issue(
                        where,
                        f"Historical {channel} subscription does not have a valid consented_at "
                        "timestamp.",
                    )


@enforces("E18")
def check_metric_name(item: Item, ctx: CheckContext) -> Iterator[Issue]:
    """An event needs a metric name (the schema says so too; this holds without it) of less
    than 128 characters."""
    if item.metric and len(item.metric) < MAX_METRIC_NAME:
        return
    where = f"{item.pointer}/attributes/metric/data/attributes/name"
    if not item.metric:  # missing, empty or not a string
        yield Issue(where, "'name' is required.")
    else:
        yield Issue(where, f"Metric name must be less than {MAX_METRIC_NAME} characters.")


def make_item_size_check(limit: int, noun: str, rule: str) -> ItemCheck:
    """Each item's JSON may not exceed ``limit`` bytes (Bulk Import Profiles: 100 KB, P3)."""

    @enforces(rule)
    def check(item: Item, ctx: CheckContext) -> Iterator[Issue]:
        size = len(orjson.dumps(item.resource))
        if size > limit:
            yield Issue(item.pointer, f"A {noun} may not exceed {limit:,} bytes.")

    return check


@enforces("E20")
def duplicate_events(items: Sequence[Item], ctx: CheckContext) -> Iterator[Issue]:
    """A (profile, metric, unique_id) that appears twice in one request fails the request.

    The issue points at every repetition after the first, at its ``unique_id``.
    """
    seen: dict[EventKey, int] = {}
    for item in items:
        key = event_key(item, ctx.received_at)
        if key is None:
            continue
        if key in seen:
            yield Issue(
                jp.join(item.pointer, ("attributes", "unique_id")),
                "Duplicate event: the same profile, metric and unique_id appear earlier in "
                "this request.",
            )
        else:
            seen[key] = item.position


def run_checks(
    items: Sequence[Item],
    ctx: CheckContext,
    item_checks: Sequence[ItemCheck],
    request_checks: Sequence[RequestCheck],
    tally: Counter[str] | None = None,
) -> list[Issue]:
    """All issues, each pointer once, in body order; the first check to name a pointer wins.

    ``tally``, if given, gains one count per issue kept under the RULES.md id of its check.
    """
    found: dict[str, Issue] = {}
    rules: dict[str, str] = {}
    if ctx.strings_fit:
        item_checks = tuple(check for check in item_checks if check not in _STRING_CHECKS)
    # An item whose profile is the previous item's (same group) skips the profile checks:
    # they would only find the same issues at the same pointers again.
    item_only = tuple(check for check in item_checks if check not in _PROFILE_CHECKS)
    previous: Item | None = None
    for item in items:
        same_profile = (
            previous is not None
            and item.profile is previous.profile
            and bool(item.profile_pointer)
            and item.profile_pointer == previous.profile_pointer
        )
        previous = item
        for check in item_only if same_profile else item_checks:
            for issue in check(item, ctx):
                if found.setdefault(issue.pointer, issue) is issue:
                    rules[issue.pointer] = rule_of(check)
    for request_check in request_checks:
        for issue in request_check(items, ctx):
            if found.setdefault(issue.pointer, issue) is issue:
                rules[issue.pointer] = rule_of(request_check)
    if tally is not None:
        tally.update(rules.values())
    return list(found.values())


def profile_attributes(item: Item) -> Mapping[str, Any]:
    """The attributes of the item's profile (empty if it has none)."""
    attributes = item.profile.get("attributes") if item.profile is not None else None
    return attributes if isinstance(attributes, dict) else {}
