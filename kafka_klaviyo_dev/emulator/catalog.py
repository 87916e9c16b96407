"""Klaviyo's catalog rules inside jobs: which item of a catalog job fails, and why.

Bulk create does not upsert (RULES.md D23): creating an item or category whose id exists
fails that item; updating or deleting one that does not exist fails it; an item naming a
category (``relationships.categories.data[].id``) that does not exist fails it. A job's items
are checked in request order against the catalog as it stands when the job completes, each
success counting for the items after it (a job that creates an item twice fails the second).

Every failure's ``source.pointer`` starts with the item's pointer in the request
(``/data/attributes/items/data/3`` or ``/data/attributes/categories/data/3``, ``/data`` for
Create Catalog Category) and goes on to the field at fault: ``/attributes/external_id`` for
"already exists", ``/id`` for "not found", ``/relationships/categories/data/0/id`` for a
missing category.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kafka_klaviyo_dev.emulator.final_state import catalog_item_id
from kafka_klaviyo_dev.emulator.jobs import ItemFailure

#: endpoint -> (what it manages, its operation)
OPERATIONS: Mapping[str, tuple[str, str]] = {
    "catalog_create": ("item", "create"),
    "catalog_update": ("item", "update"),
    "catalog_delete": ("item", "delete"),
    "category_bulk_create": ("category", "create"),
    "category_bulk_update": ("category", "update"),
    "category_bulk_delete": ("category", "delete"),
    "category_create": ("category", "create"),
    "category_update": ("category", "update"),
    "category_delete": ("category", "delete"),
}
_NOUN = {"item": "catalog item", "category": "catalog category"}


def already_exists(kind: str, pointer: str) -> ItemFailure:
    """A create of an existing item or category."""
    return ItemFailure(
        "conflict",
        "Conflict.",
        f"A {_NOUN[kind]} with this external_id already exists.",
        f"{pointer}/attributes/external_id",
    )


def not_found(kind: str, pointer: str) -> ItemFailure:
    """An update or delete of a missing item or category."""
    return ItemFailure(
        "not_found",
        "Not found.",
        f"The {_NOUN[kind]} with this id does not exist.",
        f"{pointer}/id",
    )


def missing_category(pointer: str) -> ItemFailure:
    """An item naming a category that does not exist."""
    return ItemFailure(
        "not_found", "Not found.", "The catalog category named here does not exist.", pointer
    )


def resource_id(resource: Mapping[str, Any], operation: str) -> str | None:
    """The id a catalog resource names: from its attributes for a create, else its ``id``."""
    if operation == "create":
        return catalog_item_id({"attributes": resource.get("attributes")})
    explicit = resource.get("id")
    return explicit if isinstance(explicit, str) and explicit else None


def category_ids(resource: Mapping[str, Any]) -> list[tuple[int, str]]:
    """(index, id) of the categories an item names in ``relationships.categories.data``."""
    relationships = resource.get("relationships")
    categories = relationships.get("categories") if isinstance(relationships, dict) else None
    data = categories.get("data") if isinstance(categories, dict) else None
    if not isinstance(data, list):
        return []
    out: list[tuple[int, str]] = []
    for index, entry in enumerate(data):
        value = entry.get("id") if isinstance(entry, dict) else None
        if isinstance(value, str):
            out.append((index, value))
    return out


@dataclass(slots=True)
class CatalogIndex:
    """The ids of existing items and categories of one account, updated as a job's items
    succeed."""

    items: set[str]
    categories: set[str]

    @classmethod
    def of(
        cls, items: Iterable[Mapping[str, Any]], categories: Iterable[Mapping[str, Any]]
    ) -> CatalogIndex:
        """From final-state entries (``id``, ``exists``)."""
        return cls(
            {str(e["id"]) for e in items if e.get("exists")},
            {str(e["id"]) for e in categories if e.get("exists")},
        )

    def check(self, endpoint: str, resource: Mapping[str, Any], pointer: str) -> ItemFailure | None:
        """Why this item fails now, or None (and the index then counts it as done)."""
        kind, operation = OPERATIONS[endpoint]
        known = self.items if kind == "item" else self.categories
        target = resource_id(resource, operation)
        if target is not None:
            if operation == "create" and target in known:
                return already_exists(kind, pointer)
            if operation != "create" and target not in known:
                return not_found(kind, pointer)
        if kind == "item" and operation != "delete":
            for index, category in category_ids(resource):
                if category not in self.categories:
                    return missing_category(f"{pointer}/relationships/categories/data/{index}/id")
        if target is not None:
            if operation == "delete":
                known.discard(target)
            else:
                known.add(target)
        return None
