"""Catalog items: catalog type, custom metadata, compound ids and URLs (RULES.md C5-C10).

Compound ids (items and categories) have the form ``$custom:::$default:::{external_id}``: the
only integration is ``$custom`` and the only catalog ``$default``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import orjson

from kafka_klaviyo_dev.emulator import pointer as jp
from kafka_klaviyo_dev.emulator.items import Issue, Item
from kafka_klaviyo_dev.emulator.limits import CheckContext, enforces

COMPOUND_ID = re.compile(r"^\$custom:::\$default:::.+$", re.DOTALL)
MAX_METADATA_BYTES = 100_000
URL_FIELDS = ("url", "image_full_url", "image_thumbnail_url")


@enforces("C5")
def check_catalog_type(item: Item, ctx: CheckContext) -> Iterator[Issue]:
    """C5: ``catalog_type`` is absent, null or ``$default`` (the schema has no enum)."""
    catalog_type = item.attributes.get("catalog_type")
    if catalog_type is not None and catalog_type != "$default":
        yield Issue(
            f"{item.pointer}/attributes/catalog_type",
            "'catalog_type' must be '$default': only the default catalog is supported.",
        )


@enforces("C6")
def check_custom_metadata(item: Item, ctx: CheckContext) -> Iterator[Issue]:
    """C6: ``custom_metadata`` is a flat object (no objects in it) of at most 100 KB."""
    metadata = item.attributes.get("custom_metadata")
    if not isinstance(metadata, dict):
        return
    where = f"{item.pointer}/attributes/custom_metadata"
    nested = False
    for key, value in metadata.items():
        if isinstance(value, dict) or (
            isinstance(value, list) and any(isinstance(v, dict) for v in value)
        ):
            nested = True
            yield Issue(
                jp.join(where, (key,)),
                "'custom_metadata' must be a flat JSON object: no nested objects.",
            )
    if not nested and len(orjson.dumps(metadata)) > MAX_METADATA_BYTES:
        yield Issue(where, f"'custom_metadata' may not exceed {MAX_METADATA_BYTES:,} bytes.")


@enforces("C7")
def check_category_ids(item: Item, ctx: CheckContext) -> Iterator[Issue]:
    """C7: every category id is a compound id ``$custom:::$default:::{external_id}``."""
    relationships = item.resource.get("relationships")
    categories = relationships.get("categories") if isinstance(relationships, dict) else None
    data = categories.get("data") if isinstance(categories, dict) else None
    for i, category in enumerate(data if isinstance(data, list) else ()):
        category_id = category.get("id") if isinstance(category, dict) else None
        if isinstance(category_id, str) and not COMPOUND_ID.match(category_id):
            yield Issue(
                f"{item.pointer}/relationships/categories/data/{i}/id",
                "A catalog category ID must have the format $custom:::$default:::{external_id}.",
            )


@enforces("C8")
def check_item_id(item: Item, ctx: CheckContext) -> Iterator[Issue]:
    """C8: an item to update or delete is named by its compound id."""
    item_id = item.resource.get("id")
    if isinstance(item_id, str) and not COMPOUND_ID.match(item_id):
        yield Issue(
            f"{item.pointer}/id",
            "A catalog item ID must have the format $custom:::$default:::{external_id}.",
        )


def is_http_url(value: str) -> bool:
    """True for an absolute ``http://`` or ``https://`` URL with a host."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


@enforces("C10")
def check_urls(item: Item, ctx: CheckContext) -> Iterator[Issue]:
    """C10: ``url``, ``image_full_url``, ``image_thumbnail_url`` and ``images[]`` are
    http(s) URLs."""
    attributes = item.attributes
    where = f"{item.pointer}/attributes"
    for name in URL_FIELDS:
        value = attributes.get(name)
        if isinstance(value, str) and not is_http_url(value):
            yield Issue(f"{where}/{name}", f"'{name}' must be an http(s) URL.")
    images: Any = attributes.get("images")
    for i, value in enumerate(images if isinstance(images, list) else ()):
        if isinstance(value, str) and not is_http_url(value):
            yield Issue(f"{where}/images/{i}", "'images' must be http(s) URLs.")
