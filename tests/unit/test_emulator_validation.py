"""OpenAPI request-body validation: the fast predicates agree with OAS30Validator.

The emulator answers valid bodies from generated predicates and describes invalid ones with
openapi-schema-validator's OAS30Validator; these tests hold the two to the same verdicts, on
small schemas (with random instances) and on Klaviyo's real bulk schemas (with a valid body
and every single-field mutation of it).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.errors import ConfigError
from kafka_klaviyo_dev.emulator.endpoints import ENDPOINTS
from kafka_klaviyo_dev.emulator.validation import (
    OperationValidator,
    SpecValidators,
    resolve_refs,
    validators_for,
)

SCHEMAS: dict[str, dict[str, Any]] = {
    "nullable string": {"type": "string", "nullable": True},
    "string": {"type": "string"},
    "enum": {"type": "string", "enum": ["a", "b"], "nullable": True},
    "untyped enum": {"enum": ["x"]},
    "number": {"type": "number"},
    "integer": {"type": "integer"},
    "boolean": {"type": "boolean", "nullable": True, "default": False},
    "date-time": {"type": "string", "format": "date-time", "nullable": True},
    "object": {
        "type": "object",
        "required": ["id", "n"],
        "properties": {
            "id": {"type": "string"},
            "n": {"type": "number", "nullable": True},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        },
    },
    "closed object": {
        "type": "object",
        "properties": {"a": {"type": "integer"}},
        "additionalProperties": False,
    },
    "map": {"type": "object", "additionalProperties": {"type": "boolean"}},
    "one of": {"oneOf": [{"type": "string"}, {"type": "number"}], "nullable": True},
    "any of": {"anyOf": [{"type": "string", "maxLength": 3}, {"type": "integer"}]},
    "all of": {"allOf": [{"type": "object", "required": ["a"]}, {"required": ["b"]}]},
    "untyped lengths": {"minLength": 2, "maxItems": 1},
    "pattern (library only)": {"type": "string", "pattern": "^[a-z]+$"},
    "read-only required (library only)": {
        "type": "object",
        "required": ["id"],
        "properties": {"id": {"type": "string", "readOnly": True}},
    },
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
    | st.sampled_from(["", "a", "b", "x", "abcd", "2025-01-01T00:00:00Z", "2025-13-01"]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b", "id", "n", "tags", "z"]), children, max_size=4)
    ),
    max_leaves=8,
)


_COMPILED: dict[str, OperationValidator] = {}


def verdicts(name: str, instance: Any) -> tuple[bool, bool, set[tuple[str, str]]]:
    """(predicates say valid, library says valid, issues), asserting both find the same."""
    validator = _COMPILED.get(name)
    if validator is None:
        validator = _COMPILED[name] = OperationValidator(name, SCHEMAS[name])
    fast = validator.issues(instance)
    reference = validator.reference_issues(instance)
    assert {(i.pointer, i.keyword) for i in fast} == {(i.pointer, i.keyword) for i in reference}
    return (
        not fast,
        bool(validator.authority.is_valid(instance)),
        {(i.pointer, i.keyword) for i in fast},
    )


@pytest.mark.parametrize("name", sorted(SCHEMAS))
@settings(max_examples=100, deadline=None)
@given(instance=json_values)
def test_predicates_agree_with_oas30validator(name: str, instance: Any) -> None:
    fast_ok, library_ok, _ = verdicts(name, instance)
    assert fast_ok == library_ok


@pytest.mark.parametrize(
    ("name", "instance", "expected"),
    [
        ("nullable string", None, set()),
        ("string", None, {("", "type")}),
        ("enum", None, {("", "enum")}),  # OAS 3.0: enum still applies to null
        ("object", {"id": 1}, {("/id", "type"), ("/n", "required")}),
        ("object", {"id": "x", "n": None, "tags": []}, {("/tags", "minItems")}),
        ("closed object", {"a": 1, "b": 2}, {("", "additionalProperties")}),
        ("map", {"k": "yes"}, {("/k", "type")}),
        ("all of", {"a": 1}, {("/b", "required")}),
    ],
)
def test_issues_point_at_the_offending_field(
    name: str, instance: Any, expected: set[tuple[str, str]]
) -> None:
    assert verdicts(name, instance)[2] == expected


def test_details_never_contain_the_rejected_value() -> None:
    validator = OperationValidator("test", SCHEMAS["object"])
    [issue] = validator.issues({"id": "ann@example.com", "n": "+14155552671"})
    assert issue.pointer == "/n"
    assert "+1415" not in issue.detail
    assert issue.detail == "'n' must be of type number."


def test_ref_siblings_are_merged_into_the_target() -> None:
    spec = {
        "components": {
            "schemas": {
                "Loc": {"type": "object", "properties": {"zip": {"type": "string"}}},
                "P": {
                    "properties": {"loc": {"$ref": "#/components/schemas/Loc", "nullable": True}}
                },
            }
        }
    }
    resolved = resolve_refs({"$ref": "#/components/schemas/P"}, spec)
    assert resolved["properties"]["loc"] == {
        "type": "object",
        "properties": {"zip": {"type": "string"}},
        "nullable": True,
    }
    assert OperationValidator("t", resolved).issues({"loc": None}) == []


def test_recursive_and_dangling_refs_are_config_errors() -> None:
    spec = {"components": {"schemas": {"A": {"items": {"$ref": "#/components/schemas/A"}}}}}
    with pytest.raises(ConfigError, match="recursive"):
        resolve_refs({"$ref": "#/components/schemas/A"}, spec)
    with pytest.raises(ConfigError, match="does not resolve"):
        resolve_refs({"$ref": "#/components/schemas/B"}, spec)


def test_a_missing_spec_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        validators_for(tmp_path / "nope.json", ("/api/event-bulk-create-jobs",))
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ConfigError, match="not an OpenAPI document"):
        SpecValidators(bad, ("/api/event-bulk-create-jobs",))


# --- Klaviyo's own schemas -------------------------------------------------------------------


def event_body() -> dict[str, Any]:
    return {
        "data": {
            "type": "event-bulk-create-job",
            "attributes": {
                "events-bulk-create": {
                    "data": [
                        {
                            "type": "event-bulk-create",
                            "attributes": {
                                "backfill": True,
                                "profile": {
                                    "data": {
                                        "type": "profile",
                                        "attributes": {
                                            "email": "john.smith@gmail.com",
                                            "phone_number": "+14155552671",
                                            "first_name": "John",
                                            "location": {"city": "Oslo", "latitude": 59.9},
                                            "properties": {"tier": "gold"},
                                        },
                                        "meta": {"patch_properties": {"unset": ["x"]}},
                                    }
                                },
                                "events": {
                                    "data": [
                                        {
                                            "type": "event",
                                            "attributes": {
                                                "properties": {"ItemNames": ["A"]},
                                                "time": "2025-01-01T00:00:00+00:00",
                                                "value": 29.98,
                                                "value_currency": "USD",
                                                "unique_id": "1234",
                                                "metric": {
                                                    "data": {
                                                        "type": "metric",
                                                        "attributes": {"name": "Placed Order"},
                                                    }
                                                },
                                            },
                                        }
                                    ]
                                },
                            },
                        }
                    ]
                }
            },
        }
    }


SAMPLES: dict[str, Any] = {
    "/api/event-bulk-create-jobs": event_body(),
    "/api/profile-bulk-import-jobs": {
        "data": {
            "type": "profile-bulk-import-job",
            "attributes": {
                "profiles": {"data": [{"type": "profile", "attributes": {"email": "a@b.io"}}]}
            },
        }
    },
    "/api/profile-subscription-bulk-create-jobs": {
        "data": {
            "type": "profile-subscription-bulk-create-job",
            "attributes": {
                "profiles": {
                    "data": [
                        {
                            "type": "profile",
                            "attributes": {
                                "email": "a@b.io",
                                "subscriptions": {
                                    "email": {"marketing": {"consent": "SUBSCRIBED"}}
                                },
                            },
                        }
                    ]
                }
            },
        }
    },
    "/api/profile-subscription-bulk-delete-jobs": {
        "data": {
            "type": "profile-subscription-bulk-delete-job",
            "attributes": {
                "profiles": {
                    "data": [
                        {
                            "type": "profile",
                            "attributes": {
                                "email": "a@b.io",
                                "subscriptions": {
                                    "email": {"marketing": {"consent": "UNSUBSCRIBED"}}
                                },
                            },
                        }
                    ]
                }
            },
        }
    },
    "/api/catalog-item-bulk-create-jobs": {
        "data": {
            "type": "catalog-item-bulk-create-job",
            "attributes": {
                "items": {
                    "data": [
                        {
                            "type": "catalog-item",
                            "attributes": {
                                "external_id": "SKU-1",
                                "title": "Shoe",
                                "description": "A shoe",
                                "url": "https://shop.example/shoe",
                                "price": 10.5,
                            },
                        }
                    ]
                }
            },
        }
    },
    "/api/catalog-item-bulk-update-jobs": {
        "data": {
            "type": "catalog-item-bulk-update-job",
            "attributes": {
                "items": {
                    "data": [
                        {
                            "type": "catalog-item",
                            "id": "$custom:::$default:::SKU-1",
                            "attributes": {"price": 11},
                        }
                    ]
                }
            },
        }
    },
    "/api/catalog-item-bulk-delete-jobs": {
        "data": {
            "type": "catalog-item-bulk-delete-job",
            "attributes": {
                "items": {"data": [{"type": "catalog-item", "id": "$custom:::$default:::SKU-1"}]}
            },
        }
    },
    # Catalog categories (the emulator's jobs helper).
    "/api/catalog-categories": {
        "data": {
            "type": "catalog-category",
            "attributes": {"external_id": "TOYS", "name": "Toys"},
        }
    },
    "/api/catalog-category-bulk-create-jobs": {
        "data": {
            "type": "catalog-category-bulk-create-job",
            "attributes": {
                "categories": {
                    "data": [
                        {
                            "type": "catalog-category",
                            "attributes": {"external_id": "TOYS", "name": "Toys"},
                        }
                    ]
                }
            },
        }
    },
    "/api/catalog-category-bulk-update-jobs": {
        "data": {
            "type": "catalog-category-bulk-update-job",
            "attributes": {
                "categories": {
                    "data": [
                        {
                            "type": "catalog-category",
                            "id": "$custom:::$default:::TOYS",
                            "attributes": {"name": "Toys and games"},
                        }
                    ]
                }
            },
        }
    },
    "/api/catalog-category-bulk-delete-jobs": {
        "data": {
            "type": "catalog-category-bulk-delete-job",
            "attributes": {
                "categories": {
                    "data": [{"type": "catalog-category", "id": "$custom:::$default:::TOYS"}]
                }
            },
        }
    },
}


@pytest.fixture(scope="module")
def spec_validators(klaviyo_spec_path: Path) -> SpecValidators:
    return validators_for(klaviyo_spec_path, tuple(e.path for e in ENDPOINTS))


def test_every_endpoint_of_the_table_has_a_sample() -> None:
    assert set(SAMPLES) == {e.path for e in ENDPOINTS}


@pytest.mark.parametrize("path", sorted(SAMPLES))
def test_sample_bodies_are_valid(spec_validators: SpecValidators, path: str) -> None:
    validator = spec_validators.for_path(path)
    assert validator.issues(SAMPLES[path]) == []
    assert validator.reference_issues(SAMPLES[path]) == []


def mutations(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], str]]:
    """Every (path, how) single-field mutation of ``node``."""
    children = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in children:
        here = (*path, key)
        for how in ("delete", "null", "number", "string", "object", "array"):
            yield here, how
        if isinstance(value, (dict, list)):
            yield from mutations(value, here)


def mutate(body: Any, path: tuple[Any, ...], how: str) -> Any:
    doc = copy.deepcopy(body)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if how == "delete":
        del parent[last]
    else:
        parent[last] = {
            "null": None,
            "number": 7,
            "string": "nope",
            "object": {"x": 1},
            "array": [1],
        }[how]
    return doc


@pytest.mark.parametrize("path", sorted(SAMPLES))
def test_every_single_field_mutation_gets_the_library_verdict(
    spec_validators: SpecValidators, path: str
) -> None:
    validator = spec_validators.for_path(path)
    checked = invalid = 0
    for where, how in mutations(SAMPLES[path]):
        body = mutate(SAMPLES[path], where, how)
        fast = {(i.pointer, i.keyword) for i in validator.issues(body)}
        reference = {(i.pointer, i.keyword) for i in validator.reference_issues(body)}
        assert fast == reference, (where, how)
        checked += 1
        invalid += bool(fast)
    assert checked > 20 and invalid > 10  # the mutations did exercise the failure path


def test_a_bad_event_is_pointed_at_inside_a_large_body(spec_validators: SpecValidators) -> None:
    body = event_body()
    groups = body["data"]["attributes"]["events-bulk-create"]["data"]
    groups.extend(copy.deepcopy(groups[0]) for _ in range(999))
    groups[617]["attributes"]["events"]["data"][0]["attributes"]["value"] = "29.98"
    [issue] = spec_validators.for_path("/api/event-bulk-create-jobs").issues(body)
    assert issue.pointer == (
        "/data/attributes/events-bulk-create/data/617/attributes/events/data/0/attributes/value"
    )
    assert issue.keyword == "type"
