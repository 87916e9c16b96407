"""The request-level fast path of the 100 KB string limit, against the per-item walk.

:func:`body_strings_fit` may say "maybe" (False) when nothing is too long, but it must never
say True of a body with a string over the limit: with True the walk is skipped. Small limits
make long strings cheap, so the generated bodies hit every way a string can sit in a body.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kafka_klaviyo_dev.emulator.endpoints import BY_NAME
from kafka_klaviyo_dev.emulator.items import extract_events
from kafka_klaviyo_dev.emulator.limits import (
    MAX_STRING_BYTES,
    CheckContext,
    body_strings_fit,
    oversized_strings,
    run_checks,
)
from tests.unit.test_emulator_limits import CTX, NOW, body, event


def longest_string(node: Any) -> int:
    """UTF-8 bytes of the longest string in ``node``, keys included."""
    longest = 0
    stack = [node]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            longest = max(longest, len(value.encode("utf-8", "surrogatepass")))
        elif isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return longest


def walk_finds(raw: bytes, limit: int) -> bool:
    return any(True for _ in oversized_strings(orjson.loads(raw), "", limit))


def assert_sound(raw: bytes, limit: int) -> bool:
    """The fast path's answer, after checking it never clears a body with a long string."""
    fits = body_strings_fit(raw, limit)
    if fits:
        assert longest_string(orjson.loads(raw)) <= limit, raw
        assert not walk_finds(raw, limit)
    return fits


def string_body(encoded: bytes) -> bytes:
    """A body whose one string is ``encoded`` (the bytes between its quotes)."""
    return b'{"k":["a",{"v":"' + encoded + b'"},"b"]}'


@pytest.mark.parametrize("limit", [2, 3, 7, 10, 64])  # the body's other runs are 2 bytes
def test_a_string_at_the_limit_fits_and_one_byte_more_does_not(limit: int) -> None:
    assert assert_sound(string_body(b"x" * limit), limit)
    assert not body_strings_fit(string_body(b"x" * (limit + 1)), limit)
    assert walk_finds(string_body(b"x" * (limit + 1)), limit)


def test_multibyte_characters_count_in_utf8_bytes() -> None:
    assert assert_sound(string_body("é".encode() * 5), 10)  # 10 bytes
    assert not body_strings_fit(string_body("é".encode() * 5 + b"x"), 10)
    assert not body_strings_fit(string_body("😀".encode() * 3), 11)  # 12 bytes


@pytest.mark.parametrize(
    "encoded",
    [
        b'\\"' * 12,  # escaped quotes: none of them ends the string
        b'\\\\\\"' * 6,  # an escaped backslash, then an escaped quote
        b"\\\\" * 12,  # escaped backslashes
        b"x\\\\" * 8,
        b"\\u00e9" * 6,  # 12 bytes decoded
        b"\\ud83d\\ude00" * 3,  # 12 bytes decoded
        b"\\n\\t\\/\\b\\f\\r\\u0001" * 2,
    ],
)
def test_escapes_never_hide_a_long_string(encoded: bytes) -> None:
    decoded = len(orjson.loads(b'"' + encoded + b'"').encode())
    for limit in range(1, decoded + 1):
        fits = assert_sound(string_body(encoded), limit)
        assert fits == (len(encoded) <= limit)  # the run is the encoded string


def test_a_string_ending_in_an_escaped_backslash_ends_there() -> None:
    # '"x\\\\"' is x, a backslash, then the closing quote: the next strings stay separate.
    raw = b'["' + b"x" * 5 + b'\\\\","' + b"y" * 5 + b'","' + b"z" * 5 + b'\\\\"]'
    assert orjson.loads(raw) == ["xxxxx\\", "yyyyy", "zzzzz\\"]
    assert assert_sound(raw, 7)
    assert not body_strings_fit(raw, 6)


@pytest.mark.parametrize("limit", [1, 4, 9, 16])
def test_long_strings_at_the_very_start_and_end_of_the_body(limit: int) -> None:
    long, short = b"s" * (limit + 1), b"s" * limit
    for raw in (
        b'"' + long + b'"',
        b'["' + long + b'",1]',
        b'[1,"' + long + b'"]',
        b'{"' + long + b'":1}',  # a key: the walk ignores it; the fast path may not clear it
    ):
        assert not body_strings_fit(raw, limit)
    for raw in (b'"' + short + b'"', b'["' + short + b'"]'):
        assert assert_sound(raw, limit)


def test_long_runs_outside_strings_only_cost_the_walk() -> None:
    raw = orjson.dumps({"numbers": list(range(100))})
    assert not body_strings_fit(raw, 50)  # "maybe"
    assert not walk_finds(raw, 50)


def test_a_realistic_body_fits_with_a_few_searches() -> None:
    doc = body(*(({"email": f"c{i}@b.io"}, [event(f"u-{i}")] * 3) for i in range(2_000)))
    raw = orjson.dumps(doc)
    assert len(raw) > 4 * MAX_STRING_BYTES
    assert body_strings_fit(raw)


_TEXT = st.text(
    alphabet=st.sampled_from(["a", "é", "€", "😀", '"', "\\", "/", "\n", "\x01", " "]),
    max_size=30,
)
_DOCS = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | _TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_TEXT, children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(doc=_DOCS, limit=st.integers(min_value=1, max_value=40))
def test_never_clears_a_body_with_a_long_string(doc: Any, limit: int) -> None:
    # Every way a string gets written: raw UTF-8, \\u escapes (with surrogate pairs), indented.
    for raw in (
        orjson.dumps(doc),
        json.dumps(doc, ensure_ascii=True).encode(),
        json.dumps(doc, ensure_ascii=False, indent=1).encode(),
    ):
        assert_sound(raw, limit)


def issues(raw: bytes, strings_fit: bool) -> list[tuple[str, str]]:
    endpoint = BY_NAME["events"]
    ctx = CheckContext(now=NOW, received_at=CTX.received_at, strings_fit=strings_fit)
    found = run_checks(
        extract_events(orjson.loads(raw)).items, ctx, endpoint.item_checks, endpoint.request_checks
    )
    return [(i.pointer, i.detail) for i in found]


@pytest.mark.parametrize(
    ("profile_extra", "event_extra", "fits", "string_issues"),
    [
        ({}, {}, True, 0),
        ({"first_name": "x" * MAX_STRING_BYTES}, {}, True, 0),  # at the limit
        ({"first_name": "x" * (MAX_STRING_BYTES + 1)}, {}, False, 1),  # once, at the profile
        ({}, {"note": "é" * (MAX_STRING_BYTES // 2 + 1)}, False, 2),
        # At the limit, but written with 4 bytes per 2: "maybe", and the walk clears it.
        ({}, {"note": '"\\' * (MAX_STRING_BYTES // 2)}, False, 0),
        ({"last_name": "\\" * (MAX_STRING_BYTES + 1)}, {"note": "y" * 60_000}, False, 1),
    ],
)
def test_requests_get_the_same_issues_with_and_without_the_fast_path(
    profile_extra: dict[str, str], event_extra: dict[str, str], fits: bool, string_issues: int
) -> None:
    doc = body(
        ({"email": "a@b.io", **profile_extra}, [event("1", properties=event_extra), event("2")]),
        ({"email": "c@b.io"}, [event("3", properties=event_extra)]),
    )
    raw = orjson.dumps(doc)
    assert body_strings_fit(raw) is fits
    walked = issues(raw, False)
    assert issues(raw, fits) == walked
    assert sum("A string may not exceed" in detail for _, detail in walked) == string_issues
