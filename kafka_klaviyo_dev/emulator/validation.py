"""Request bodies checked against Klaviyo's OpenAPI spec, fast enough for benchmark traffic.

The authority is openapi-schema-validator's ``OAS30Validator`` (OpenAPI 3.0 semantics,
``nullable`` included), compiled once per operation at startup over the operation's
requestBody schema with every ``$ref`` resolved. Walking a 1,000-event body with it costs about
a third of a second, which would make the emulator, not the service, the bottleneck of every
benchmark. So each schema is also compiled into a tree of small predicates that mirror
``OAS30Validator``'s keyword semantics exactly for the keywords Klaviyo's bulk schemas use
(``type``/``nullable``, ``properties``, ``required``, ``items``, ``enum``, ``format``,
``additionalProperties``, ``allOf``/``anyOf``/``oneOf``, lengths); any other keyword makes that
sub-schema fall back to ``OAS30Validator`` itself.

- A valid body is accepted by the predicates alone.
- An invalid body is walked down to the failing sub-schemas only, and ``OAS30Validator``
  describes the failures there: the messages and keywords are the library's, and the cost is
  proportional to the bad items, not to the body.

``tests/unit/test_emulator_validation.py`` checks the two agree on valid and mutated bodies.

``$ref`` resolution: a ``$ref`` with sibling keywords (Klaviyo writes ``{"$ref": ..,
"nullable": true}``) is resolved by merging the siblings into the referenced schema. A
strict OpenAPI 3.0 reading ignores ``$ref`` siblings, which would make those fields
non-nullable, contradicting what the spec's authors clearly mean and what Klaviyo accepts.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from jsonschema.exceptions import ValidationError
from openapi_schema_validator import OAS30Validator, oas30_format_checker

from consumer.errors import ConfigError
from kafka_klaviyo_dev.emulator import pointer as jp

#: Keywords that assert nothing (annotations); OAS30Validator ignores them as well.
_ANNOTATIONS = frozenset(
    {"description", "example", "default", "title", "deprecated", "externalDocs", "xml"}
)
#: Keywords the predicates implement with OAS30Validator's semantics.
_COMPILED = frozenset(
    {
        "type",
        "nullable",
        "properties",
        "required",
        "items",
        "enum",
        "format",
        "additionalProperties",
        "allOf",
        "anyOf",
        "oneOf",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
    }
)
#: Keywords OAS30Validator asserts that the predicates leave to it.
_AUTHORITY_ONLY = frozenset(
    {
        "multipleOf",
        "maximum",
        "minimum",
        "exclusiveMaximum",
        "exclusiveMinimum",
        "pattern",
        "uniqueItems",
        "maxProperties",
        "minProperties",
        "not",
        "$ref",
        "discriminator",
    }
)
#: Keywords that look into children; the rest are checked on the instance itself.
_DESCENDING = frozenset({"properties", "items", "allOf", "anyOf", "oneOf"})

Predicate = Callable[[Any], bool]


@dataclass(frozen=True, slots=True)
class SchemaIssue:
    """One schema violation: where (a JSON pointer into the body), which keyword, and why."""

    pointer: str
    keyword: str
    detail: str


# --- loading and $ref resolution -------------------------------------------------------------


def load_spec(path: Path) -> dict[str, Any]:
    """The OpenAPI document at ``path``; ConfigError if it cannot be read as one."""
    try:
        document = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"emulator spec {str(path)!r} cannot be read: {exc.strerror}") from exc
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"emulator spec {str(path)!r} is not JSON: {exc}") from exc
    if not isinstance(document, dict) or "paths" not in document:
        raise ConfigError(f"emulator spec {str(path)!r} is not an OpenAPI document")
    return document


def resolve_refs(node: Any, spec: Mapping[str, Any], _stack: tuple[str, ...] = ()) -> Any:
    """``node`` with every local ``$ref`` replaced by its target (siblings merged in)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            if ref in _stack:
                raise ConfigError(f"emulator spec: recursive schema {ref!r} is not supported")
            target = resolve_refs(_follow(spec, ref), spec, (*_stack, ref))
            siblings = {k: resolve_refs(v, spec, _stack) for k, v in node.items() if k != "$ref"}
            if not siblings:
                return target
            if not isinstance(target, dict):
                raise ConfigError(f"emulator spec: {ref!r} is not a schema object")
            return {**target, **siblings}
        return {k: resolve_refs(v, spec, _stack) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve_refs(v, spec, _stack) for v in node]
    return node


def _follow(spec: Mapping[str, Any], ref: str) -> Any:
    if not ref.startswith("#/"):
        raise ConfigError(f"emulator spec: only local $refs are supported, not {ref!r}")
    node: Any = spec
    for token in jp.split(ref[1:]):
        if not isinstance(node, dict) or token not in node:
            raise ConfigError(f"emulator spec: $ref {ref!r} does not resolve")
        node = node[token]
    return node


def request_body_schema(spec: Mapping[str, Any], path: str, method: str = "post") -> dict[str, Any]:
    """The resolved requestBody schema of ``method path`` (JSON:API media type preferred)."""
    try:
        operation = spec["paths"][path][method]
        content = resolve_refs(operation["requestBody"], spec)["content"]
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"emulator spec has no request body for {method.upper()} {path}") from exc
    media = content.get("application/vnd.api+json") or next(iter(content.values()), None)
    if not isinstance(media, dict) or not isinstance(media.get("schema"), dict):
        raise ConfigError(f"emulator spec has no JSON schema for {method.upper()} {path}")
    schema: dict[str, Any] = media["schema"]
    return schema


# --- the predicate tree ----------------------------------------------------------------------


def _authority(schema: Mapping[str, Any]) -> Any:
    return OAS30Validator(schema, format_checker=oas30_format_checker)


def _is_number(x: Any) -> bool:
    return not isinstance(x, bool) and isinstance(x, numbers.Number)


def _is_integer(x: Any) -> bool:
    # oas30_type_checker uses jsonschema's draft-4 notion: 1.0 is a number, not an integer.
    return isinstance(x, int) and not isinstance(x, bool)


# jsonschema's type checks, as oas30_type_checker uses them.
_TYPE_CHECKS: Mapping[str, Predicate] = {
    "string": lambda x: isinstance(x, str),
    "number": _is_number,
    "integer": _is_integer,
    "boolean": lambda x: isinstance(x, bool),
    "array": lambda x: isinstance(x, list),
    "object": lambda x: isinstance(x, dict),
}


class _Node:
    """One compiled schema: a fast ``ok`` and a precise, lazily built ``issues``.

    ``ok(x)`` is True iff OAS30Validator would find no error in ``x``.
    """

    __slots__ = (
        "_authority",
        "_shallow",
        "additional",
        "all_of",
        "any_of",
        "items",
        "local_checks",
        "ok",
        "one_of",
        "opaque",
        "properties",
        "schema",
    )

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.schema = schema
        self._authority: Any = None
        self._shallow: Any = None
        self.opaque = _needs_authority(schema)
        self.local_checks: list[Predicate] = []
        self.properties: dict[str, _Node] = {}
        self.items: _Node | None = None
        self.additional: _Node | None = None
        self.all_of: list[_Node] = []
        self.any_of: list[_Node] = []
        self.one_of: list[_Node] = []
        self.ok: Predicate = self._authority_ok
        if self.opaque:
            return
        self.local_checks = _local_checks(schema)
        for name, sub in schema.get("properties", {}).items():
            self.properties[name] = _Node(sub)
        if isinstance(schema.get("items"), dict):
            self.items = _Node(schema["items"])
        if isinstance(schema.get("additionalProperties"), dict):
            self.additional = _Node(schema["additionalProperties"])
        self.all_of = [_Node(s) for s in schema.get("allOf", ())]
        self.any_of = [_Node(s) for s in schema.get("anyOf", ())]
        self.one_of = [_Node(s) for s in schema.get("oneOf", ())]
        self.ok = _generate(self)

    def _authority_ok(self, x: Any) -> bool:
        return bool(self.authority.is_valid(x))

    @property
    def authority(self) -> Any:
        """OAS30Validator over this whole sub-schema (built on first use)."""
        if self._authority is None:
            self._authority = _authority(self.schema)
        return self._authority

    def _shallow_authority(self) -> Any:
        # The schema without the keywords that descend into children, so the library reports
        # this object's own failures (type, required, enum...) without re-walking its children.
        if self._shallow is None:
            shallow = {k: v for k, v in self.schema.items() if k not in _DESCENDING}
            if "additionalProperties" in shallow and "properties" in self.schema:
                # additionalProperties needs the property names, not their schemas.
                shallow["properties"] = {key: {} for key in self.schema["properties"]}
            if isinstance(shallow.get("additionalProperties"), dict):
                shallow.pop("additionalProperties")
            self._shallow = _authority(shallow)
        return self._shallow

    def issues(self, x: Any, path: str) -> Iterator[SchemaIssue]:
        """Every violation in ``x`` (located at ``path``); nothing if ``ok(x)``."""
        if self.ok(x):
            return
        if self.opaque or self.any_of or self.one_of:
            # Which alternative was meant is a judgement only the library's messages make.
            yield from _translate(self.authority.iter_errors(x), path)
            return
        own_ok = all(check(x) for check in self.local_checks)
        if not own_ok:
            yield from _translate(self._shallow_authority().iter_errors(x), path)
            if not _TYPE_CHECKS.get(self.schema.get("type", ""), _always)(x):
                return  # wrong type: its children mean nothing
        if isinstance(x, dict):
            for key, value in x.items():
                node = self.properties.get(key) or self.additional
                if node is not None:
                    yield from node.issues(value, jp.join(path, (key,)))
        elif isinstance(x, list) and self.items is not None:
            for index, value in enumerate(x):
                yield from self.items.issues(value, jp.join(path, (index,)))
        for node in self.all_of:
            yield from node.issues(x, path)


# --- code generation of the predicates -------------------------------------------------------
#
# A generic "walk the keywords" predicate spends most of its time deciding what to do; the
# schemas are fixed at startup, so each node's predicate is generated as straight-line Python
# that only does what its schema asks (about 6x faster on 1,000-event bodies).

_TYPE_EXPR: Mapping[str, str] = {
    "string": "isinstance(x, str)",
    "number": "(x.__class__ is float or x.__class__ is int or _is_number(x))",
    "integer": "_is_integer(x)",
    "boolean": "isinstance(x, bool)",
    "array": "isinstance(x, list)",
    "object": "isinstance(x, dict)",
}


def _trivial(node: _Node) -> bool:
    """True if the node accepts everything (only annotations)."""
    return not node.opaque and all(k in _ANNOTATIONS or k.startswith("x-") for k in node.schema)


def _generate(node: _Node) -> Predicate:
    schema = node.schema
    env: dict[str, Any] = {
        "_is_number": _is_number,
        "_is_integer": _is_integer,
        "_conforms": oas30_format_checker.conforms,
    }
    out: list[str] = ["def ok(x):"]

    def emit(indent: int, line: str) -> None:
        out.append("    " * indent + line)

    def object_body(indent: int) -> None:
        required = schema.get("required", ())
        if required:
            emit(indent, "if " + " or ".join(f"{r!r} not in x" for r in required) + ":")
            emit(indent + 1, "return False")
        if schema.get("additionalProperties") is False:
            env["KNOWN"] = frozenset(node.properties)
            emit(indent, "for k in x:")
            emit(indent + 1, "if k not in KNOWN: return False")
        props = {k: n.ok for k, n in node.properties.items() if not _trivial(n)}
        additional = node.additional
        if props or additional is not None:
            env["PROPS"] = props
            env["ADDITIONAL"] = additional.ok if additional is not None else None
            emit(indent, "for k, v in x.items():")
            emit(indent + 1, "f = PROPS.get(k)")
            emit(indent + 1, "if f is not None:")
            emit(indent + 2, "if not f(v): return False")
            if additional is not None:
                env["NAMES"] = frozenset(node.properties)
                emit(indent + 1, "elif k not in NAMES and not ADDITIONAL(v): return False")

    def array_body(indent: int) -> None:
        if "minItems" in schema:
            emit(indent, f"if len(x) < {int(schema['minItems'])}: return False")
        if "maxItems" in schema:
            emit(indent, f"if len(x) > {int(schema['maxItems'])}: return False")
        if node.items is not None and not _trivial(node.items):
            env["ITEM"] = node.items.ok
            emit(indent, "for v in x:")
            emit(indent + 1, "if not ITEM(v): return False")

    def string_body(indent: int) -> None:
        if "minLength" in schema:
            emit(indent, f"if len(x) < {int(schema['minLength'])}: return False")
        if "maxLength" in schema:
            emit(indent, f"if len(x) > {int(schema['maxLength'])}: return False")

    has_enum = "enum" in schema
    if has_enum:
        env["ENUM"] = frozenset(schema["enum"])
    fmt = schema.get("format")
    type_name = schema.get("type")
    if type_name is not None:
        nullable = schema.get("nullable") is True
        # OAS 3.0: null passes `type` only with `nullable: true` beside it; `enum` still
        # applies to null (and these enums hold strings only), `format` never does.
        emit(1, "if x is None:")
        emit(2, "if not NULL_OK: return False")
        env["NULL_OK"] = nullable and not has_enum
        emit(1, "else:")
        emit(2, f"if not {_TYPE_EXPR[type_name]}: return False")
        if has_enum:
            emit(2, "if x not in ENUM: return False")
        if fmt is not None:
            emit(2, f"if not _conforms(x, {fmt!r}): return False")
        if type_name == "object":
            object_body(2)
        elif type_name == "array":
            array_body(2)
        elif type_name == "string":
            string_body(2)
    else:
        # Without `type`, each keyword applies to the instances of its own kind only.
        if has_enum:
            emit(1, "if not isinstance(x, str) or x not in ENUM: return False")
        if fmt is not None:
            emit(1, f"if x is not None and not _conforms(x, {fmt!r}): return False")
        emit(1, "if isinstance(x, dict):")
        object_body(2)
        emit(2, "pass")
        emit(1, "elif isinstance(x, list):")
        array_body(2)
        emit(2, "pass")
        emit(1, "elif isinstance(x, str):")
        string_body(2)
        emit(2, "pass")
    if node.all_of:
        env["ALL_OF"] = tuple(n.ok for n in node.all_of)
        emit(1, "for g in ALL_OF:")
        emit(2, "if not g(x): return False")
    if node.any_of:
        env["ANY_OF"] = tuple(n.ok for n in node.any_of)
        emit(1, "if not any(g(x) for g in ANY_OF): return False")
    if node.one_of:
        env["ONE_OF"] = tuple(n.ok for n in node.one_of)
        emit(1, "if sum(1 for g in ONE_OF if g(x)) != 1: return False")
    emit(1, "return True")
    exec(compile("\n".join(out), f"<schema predicate {id(node):x}>", "exec"), env)
    predicate: Predicate = env["ok"]
    return predicate


def _always(_x: Any) -> bool:
    return True


def _needs_authority(schema: Mapping[str, Any]) -> bool:
    """True if some keyword of ``schema`` is not mirrored exactly by the predicates."""
    for key in schema:
        if key in _AUTHORITY_ONLY:
            return True
        if key not in _COMPILED and key not in _ANNOTATIONS and not key.startswith("x-"):
            # Unknown to both: OAS30Validator ignores it, but stay on the safe side.
            return True
    if "type" in schema and schema["type"] not in _TYPE_CHECKS:
        return True  # a list of types, or a type the library checks its own way
    enum = schema.get("enum")
    if enum is not None and not (isinstance(enum, list) and all(isinstance(v, str) for v in enum)):
        return True  # jsonschema's equality for non-strings (1 vs True) is subtle: defer
    if "items" in schema and not isinstance(schema["items"], dict):
        return True
    additional = schema.get("additionalProperties")
    if additional is not None and not isinstance(additional, (bool, dict)):
        return True
    properties = schema.get("properties", {})
    if not isinstance(properties, dict):
        return True
    for name in schema.get("required", ()):
        sub = properties.get(name)
        if isinstance(sub, dict) and (sub.get("readOnly") or sub.get("writeOnly")):
            return True  # OAS30Validator waives these; keep its rule
    return False


def _local_checks(schema: Mapping[str, Any]) -> list[Predicate]:
    """Predicates for the keywords that look at the instance itself, cheapest first."""
    checks: list[Predicate] = []
    if "type" in schema:
        type_ok = _TYPE_CHECKS[schema["type"]]
        nullable = schema.get("nullable") is True
        # OAS 3.0: null passes only where `nullable: true` stands beside `type`.
        checks.append(lambda x: nullable if x is None else type_ok(x))
    if "enum" in schema:
        allowed = frozenset(schema["enum"])
        checks.append(lambda x: isinstance(x, str) and x in allowed)
    if "required" in schema:
        required = tuple(schema["required"])
        checks.append(lambda x: not isinstance(x, dict) or all(r in x for r in required))
    if schema.get("additionalProperties") is False:
        known = frozenset(schema.get("properties", {}))
        checks.append(lambda x: not isinstance(x, dict) or all(k in known for k in x))
    if "format" in schema:
        fmt = schema["format"]
        conforms = oas30_format_checker.conforms
        checks.append(lambda x: x is None or bool(conforms(x, fmt)))
    for keyword, compare in (
        ("minLength", lambda n, m: n >= m),
        ("maxLength", lambda n, m: n <= m),
    ):
        if keyword in schema:
            checks.append(_length_check(str, schema[keyword], compare))
    for keyword, compare in (
        ("minItems", lambda n, m: n >= m),
        ("maxItems", lambda n, m: n <= m),
    ):
        if keyword in schema:
            checks.append(_length_check(list, schema[keyword], compare))
    return checks


def _length_check(
    kind: type[str] | type[list[Any]], bound: int, compare: Callable[[int, int], bool]
) -> Predicate:
    return lambda x: not isinstance(x, kind) or compare(len(x), bound)


# --- turning library errors into Klaviyo details ---------------------------------------------


def _translate(errors: Iterator[ValidationError], base: str) -> Iterator[SchemaIssue]:
    seen: set[tuple[str, str]] = set()
    for error in errors:
        path = jp.join(base, error.absolute_path)
        if error.validator == "required":
            missing = _missing_property(error)
            if missing is not None:
                path = jp.join(path, (missing,))
        key = (path, str(error.validator))
        if key in seen:
            continue  # OAS30Validator reports a bad null twice (nullable, then type)
        seen.add(key)
        yield SchemaIssue(path, str(error.validator), _describe(error, path))


def _missing_property(error: ValidationError) -> str | None:
    instance = error.instance
    for name in error.validator_value or ():
        if isinstance(instance, dict) and name not in instance and repr(name) in error.message:
            return str(name)
    return None


def _describe(error: ValidationError, path: str) -> str:
    """A detail naming the field and the rule, never the offending value (it may be PII)."""
    tokens = [t for t in jp.split(path) if not t.isdigit()]
    field = tokens[-1] if tokens else "body"
    schema = error.schema if isinstance(error.schema, dict) else {}
    keyword = error.validator
    if keyword == "required":
        return f"'{field}' is required."
    if keyword == "type":
        if error.instance is None:
            return f"'{field}' may not be null."
        expected = schema.get("type")
        return f"'{field}' must be of type {expected}."
    if keyword == "enum":
        allowed = ", ".join(str(v) for v in schema.get("enum", ()))
        return f"'{field}' must be one of: {allowed}."
    if keyword == "format":
        return f"'{field}' is not a valid {schema.get('format')}."
    if keyword == "additionalProperties":
        return f"'{field}' has properties that are not allowed."
    if keyword in ("oneOf", "anyOf"):
        return f"'{field}' does not match any allowed form."
    return f"'{field}' fails the '{keyword}' rule."


# --- per operation ---------------------------------------------------------------------------


class OperationValidator:
    """The compiled requestBody schema of one Klaviyo operation."""

    def __init__(self, operation: str, schema: Mapping[str, Any]) -> None:
        self.operation = operation
        self.schema = schema
        self._root = _Node(schema)
        # Compiled now so the first request pays nothing and a broken schema fails at start.
        self.authority = _authority(schema)

    def issues(self, body: Any) -> list[SchemaIssue]:
        """Every violation of the schema in ``body``; empty if it is valid."""
        if self._root.ok(body):
            return []
        found = list(self._root.issues(body, ""))
        if not found:
            # Cannot happen while the predicates mirror the library; if it ever does, the
            # library's own walk is the answer.
            found = self.reference_issues(body)
        return found

    def reference_issues(self, body: Any) -> list[SchemaIssue]:
        """The same answer computed by OAS30Validator alone (slow; tests compare the two)."""
        return list(_translate(self.authority.iter_errors(body), ""))


class SpecValidators:
    """One OperationValidator per endpoint path, compiled from one spec file."""

    def __init__(self, spec_path: Path, paths: tuple[str, ...]) -> None:
        spec = load_spec(spec_path)
        self.revision: str = str(spec.get("info", {}).get("version", ""))
        self._by_path: dict[str, OperationValidator] = {}
        for path in paths:
            operation = spec["paths"].get(path, {}).get("post", {}).get("operationId", path)
            self._by_path[path] = OperationValidator(
                str(operation), request_body_schema(spec, path)
            )

    def for_path(self, path: str) -> OperationValidator:
        """The validator of the POST operation at ``path``."""
        return self._by_path[path]


@functools.lru_cache(maxsize=4)
def compiled(spec_path: Path, mtime_ns: int, paths: tuple[str, ...]) -> SpecValidators:
    """SpecValidators shared between emulator instances (tests start many; compile once)."""
    del mtime_ns  # part of the cache key only: an edited spec is compiled again
    return SpecValidators(spec_path, paths)


def validators_for(spec_path: Path, paths: tuple[str, ...]) -> SpecValidators:
    """The compiled validators of ``paths`` in the spec at ``spec_path``."""
    resolved = spec_path.resolve()
    try:
        mtime = resolved.stat().st_mtime_ns
    except OSError as exc:
        raise ConfigError(
            f"emulator spec {str(spec_path)!r} cannot be read: {exc.strerror}"
        ) from exc
    return compiled(resolved, mtime, paths)
