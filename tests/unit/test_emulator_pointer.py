"""JSON pointers into request bodies (RFC 6901): what clients read to find the bad item."""

from __future__ import annotations

import pytest

from kafka_klaviyo_dev.emulator import pointer as jp


def test_pointer_names_every_token_from_the_root() -> None:
    assert jp.pointer() == ""
    assert jp.pointer("data", "attributes", 3) == "/data/attributes/3"


def test_tilde_and_slash_are_escaped_in_that_order() -> None:
    assert jp.escape("a/b") == "a~1b"
    assert jp.escape("a~b") == "a~0b"
    assert jp.escape("~/") == "~0~1"
    assert jp.pointer("events-bulk-create", "x/y~z") == "/events-bulk-create/x~1y~0z"


def test_join_extends_an_escaped_base() -> None:
    base = jp.pointer("data", "a/b")
    assert jp.join(base, ("c", 0)) == "/data/a~1b/c/0"
    assert jp.join(base, ()) == base


@pytest.mark.parametrize("tokens", [[], ["a"], ["a/b", "~", "0", ""], ["~1", "~0~1"]])
def test_split_inverts_pointer(tokens: list[str]) -> None:
    assert jp.split(jp.pointer(*tokens)) == tokens


def test_split_refuses_a_relative_pointer() -> None:
    with pytest.raises(ValueError):
        jp.split("data/0")
