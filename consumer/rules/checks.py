"""Load-time checks: a rule as written in YAML becomes a typed :class:`~.model.Rule`, or problems.

What a rule looks like (every key; ``?`` marks optional)::

    - name: placed-order              # unique per record; the identity overrides match on
      record: shop.events.OrderPlaced # Avro full name of the record it reads
      description: ...                # ? free text
      enabled: true                   # ? false removes a rule of the same identity
      when: <expression>              # ? only records (or fan-out items) where it is truthy
      for_each: {line: line_items}    # ? fan-out: one output per element (lists zipped)
      event: {...}                    # exactly one output:
      profile_upsert: {...}           #   event | profile_upsert | subscription |
      subscription: {...}             #   catalog_item | catalog_delete
      catalog_item: {...}
      catalog_delete: {...}

Values: a YAML string is an expression (:mod:`consumer.rules.expressions`); a number,
boolean or null is itself; a mapping is an object built key by key, where ``Key?:`` leaves the
key out when its value is null; ``{$const: any YAML}`` is a static value; ``{$for: {var: list},
$where: condition, $emit: value}`` builds a list with one ``$emit`` per element.

Checks: unknown keys; expressions that do not parse; paths missing from the record's Avro
schema; function arguments of the wrong type; output fields of the wrong type (a number for
``value``, a timestamp for ``time``, text for identifiers); outputs that cannot satisfy
Klaviyo's required fields (an event's profile needs an identifier, a catalog item needs
external_id, title, description and url, an email subscription needs an email address...).
Every problem names file, line, rule and field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from consumer.rules.expressions import (
    BoolOp,
    Call,
    Coalesce,
    Compare,
    Expr,
    ExprSyntaxError,
    ListLit,
    Literal,
    Name,
    Not,
    Path,
    Template,
    parse,
    unparse,
)
from consumer.rules.functions import FUNCTIONS, CheckError, Context
from consumer.rules.loader import LList, LMap, RawRule
from consumer.rules.model import (
    CatalogDeleteOutput,
    CatalogItemOutput,
    EventOutput,
    Output,
    ProfileOutput,
    Rule,
    Source,
    SubscriptionOutput,
    TConst,
    TEntry,
    TExpr,
    TFor,
    TObject,
    Typed,
)
from consumer.rules.model import Template as Tmpl
from consumer.rules.paths import (
    ANY,
    BOOLEAN,
    FLOAT,
    INT,
    NULL,
    NUMBER_KINDS,
    STRING,
    AType,
    array_of,
    field_type,
    record_type,
    suggest,
    unify,
)
from consumer.rules.problems import Problem
from consumer.schemas import SchemaCatalog

OUTPUT_KINDS = ("event", "profile_upsert", "subscription", "catalog_item", "catalog_delete")
RULE_KEYS = frozenset(
    {"name", "record", "description", "enabled", "when", "for_each", *OUTPUT_KINDS}
)
EVENT_KEYS = frozenset(
    {"metric", "profile", "properties", "unique_id", "time", "value", "value_currency", "backfill"}
)
# Klaviyo's profile identifiers (RULES.md E1): ``_kx`` is the exchange id of its web tracking.
IDENTIFIERS = ("email", "phone_number", "external_id", "anonymous_id", "_kx")
# Klaviyo removed anonymous_id from profile imports in revision 2026-01-15 (RULES.md P10).
NOT_IN_PROFILE_IMPORT = frozenset({"anonymous_id"})
PROFILE_TEXT_KEYS = (
    *IDENTIFIERS,
    "first_name",
    "last_name",
    "organization",
    "locale",
    "title",
    "image",
)
PROFILE_KEYS = frozenset({*PROFILE_TEXT_KEYS, "location", "properties"})
LOCATION_TEXT_KEYS = frozenset(
    {"address1", "address2", "city", "country", "region", "zip", "timezone", "ip"}
)
LOCATION_KEYS = LOCATION_TEXT_KEYS | {"latitude", "longitude"}
SUBSCRIPTION_KEYS = frozenset(
    {"action", "channel", "list_id", "email", "phone_number", "consented_at", "unsubscribe_scope"}
)
SUBSCRIPTION_ACTIONS = {"subscribe": "SUBSCRIBE", "unsubscribe": "UNSUBSCRIBE"}
SUBSCRIPTION_CHANNELS = frozenset({"email", "sms"})
# Fixed words, not expressions: which unsubscribes are sent is a rule's choice, not a record's.
UNSUBSCRIBE_SCOPES = ("global", "list")
CATALOG_REQUIRED = ("title", "description", "url")
CATALOG_TEXT = frozenset({"title", "description", "url", "image_full_url", "image_thumbnail_url"})
CATALOG_KEYS = frozenset(
    {
        "mode",
        "external_id",
        "categories",
        "price",
        "images",
        "published",
        "custom_metadata",
        *CATALOG_TEXT,
    }
)
CATALOG_MODES = ("upsert", "create", "update")
_VARIABLE = re.compile(r"^[a-z_][a-z0-9_]*$")
_RULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.:/-]*$")


@dataclass(frozen=True, slots=True)
class Scope:
    """What names mean where an expression is written."""

    root: AType
    variables: Mapping[str, AType] = field(default_factory=dict)
    element: AType | None = None  # inside `[].( )`: names are the element's fields

    def bind(self, name: str, type_: AType) -> Scope:
        return replace(self, variables={**self.variables, name: type_})


@dataclass(frozen=True, slots=True)
class Inferred:
    """An expression's static type, whether it can fail a message, and the variables it reads."""

    type: AType
    raises: bool
    deps: frozenset[str]


class Inference:
    """Static types of expressions in a scope (shared by the checker and the compiler)."""

    def __init__(self, catalog: SchemaCatalog, ctx: Context) -> None:
        self.catalog = catalog
        self.ctx = ctx

    def infer(self, node: Expr, scope: Scope) -> Inferred:
        if isinstance(node, Literal):
            return Inferred(_literal_type(node.value), False, frozenset())
        if isinstance(node, ListLit):
            parts = [self.infer(item, scope) for item in node.items]
            item = unify([p.type for p in parts]) if parts else ANY
            if item is None:
                raise CheckError("list items have different types")
            return _combine(array_of(item), parts)
        if isinstance(node, Name):
            return self.name(node.name, scope)
        if isinstance(node, Path):
            return self.path(node, scope)
        if isinstance(node, Call):
            return self.call(node, scope)
        if isinstance(node, Template):
            parts = [self.infer(part, scope) for part in node.children()]
            raises = False
            for part, inferred in zip(node.children(), parts, strict=True):
                kind = inferred.type.kind
                if kind in ("record", "array", "map", "bytes"):
                    raise CheckError(
                        f"template placeholder {{{unparse(part)}}} is {inferred.type.describe()};"
                        " only single values fit in text"
                    )
                # A null placeholder fails the message: an id with "None" in it is worse.
                raises = raises or inferred.type.nullable
            return _combine(STRING, parts, raises)
        if isinstance(node, Coalesce):
            parts = [self.infer(item, scope) for item in node.items]
            unified = unify([p.type for p in parts])
            if unified is None:
                raise CheckError(
                    "?? operands have different types: "
                    + ", ".join(p.type.describe() for p in parts)
                )
            return _combine(unified.with_null(parts[-1].type.nullable), parts)
        if isinstance(node, BoolOp):
            parts = [self.infer(item, scope) for item in node.items]
            unified = unify([p.type for p in parts]) or ANY
            return _combine(unified, parts)
        if isinstance(node, Not):
            return _combine(BOOLEAN, [self.infer(node.operand, scope)])
        if isinstance(node, Compare):
            return self.compare(node, scope)
        raise CheckError(f"unsupported expression {node!r}")

    def name(self, name: str, scope: Scope) -> Inferred:
        if scope.element is not None:
            return Inferred(self.field_of(scope.element, name, name), False, frozenset())
        if name in scope.variables:
            return Inferred(scope.variables[name], False, frozenset({name}))
        if name in FUNCTIONS:
            raise CheckError(f"{name} is a function; call it: {name}(...)")
        return Inferred(self.field_of(scope.root, name, name), False, frozenset())

    def field_of(self, record: AType, name: str, path_text: str) -> AType:
        if record.kind == "any":
            raise CheckError(f"{path_text}: cannot read field {name!r} of a value of unknown type")
        if record.kind != "record":
            raise CheckError(f"{path_text}: {record.describe()} has no fields")
        found = field_type(self.catalog, record, name)
        if found is None:
            prefix = f"{record.path}." if record.path else ""
            candidates = [
                p[len(prefix) :]
                for p in self.catalog.fields(record.root)
                if p.startswith(prefix)
                and "." not in p[len(prefix) :]
                and "[" not in p[len(prefix) :]
            ]
            raise CheckError(f"{record.name} has no field {name!r}{suggest(name, candidates)}")
        return found

    def path(self, node: Path, scope: Scope) -> Inferred:
        base = self.infer(node.base, scope)
        current = base.type
        projected = False
        text = unparse(node.base)
        raises = base.raises
        for index, step in enumerate(node.steps):
            if step.kind == "field":
                text += f".{step.name}"
                current = self.field_of(current, step.name, text)
                continue
            # `[]` and `[].( )` project; a second projection flattens (JMESPath's a[].b[]).
            text += "[]"
            if current.kind == "any":
                current = ANY
            elif current.kind != "array" or current.item is None:
                raise CheckError(f"{text}: {current.describe()} is not a list")
            else:
                current = current.item
            projected = True
            if step.kind == "each":
                assert step.expr is not None
                if index != len(node.steps) - 1:
                    raise CheckError("[].( ) must be the last step of a path")
                inner = self.infer(step.expr, Scope(scope.root, {}, current))
                current = inner.type
                raises = raises or inner.raises
        # Projecting over a null list gives an empty list, never null.
        result = array_of(current) if projected else current
        return Inferred(result, raises, base.deps)

    def call(self, node: Call, scope: Scope) -> Inferred:
        function = FUNCTIONS.get(node.name)
        if function is None:
            raise CheckError(
                f"unknown function {node.name}(){suggest(node.name, sorted(FUNCTIONS))}"
            )
        count = len(node.args)
        if not function.min_args <= count <= function.max_args:
            expected = (
                str(function.min_args)
                if function.min_args == function.max_args
                else f"{function.min_args} to {function.max_args}"
            )
            raise CheckError(f"{function.signature} takes {expected} argument(s), not {count}")
        parts = [self.infer(arg, scope) for arg in node.args]
        if node.name == "if":
            result = function.infer([p.type for p in parts], [], self.ctx)
            return _combine(result.type, parts)
        literals = [arg.value if isinstance(arg, Literal) else None for arg in node.args]
        result = function.infer([p.type for p in parts], literals, self.ctx)
        return _combine(result.type, parts, result.raises)

    def compare(self, node: Compare, scope: Scope) -> Inferred:
        left = self.infer(node.left, scope)
        right = self.infer(node.right, scope)
        if node.op in ("in", "not in"):
            if right.type.kind not in ("array", "any"):
                raise CheckError(
                    f"'{node.op}' needs a list on its right, not {right.type.describe()}"
                )
            if isinstance(node.right, ListLit):
                for item in node.right.items:
                    _check_symbol(left.type, item)
        elif node.op in ("==", "!="):
            _check_symbol(left.type, node.right)
            _check_symbol(right.type, node.left)
        else:
            lt, rt = left.type, right.type
            comparable = (
                (lt.is_number and rt.is_number)
                or (lt.is_stringish and rt.is_stringish)
                or (lt.kind == rt.kind == "timestamp")
                or "any" in (lt.kind, rt.kind)
            )
            if not comparable:
                raise CheckError(
                    f"cannot order {lt.describe()} against {rt.describe()} with {node.op}"
                )
            # Ordering null against a value is a TypeError in Python: fail the message instead.
            if lt.nullable or rt.nullable:
                return _combine(BOOLEAN, [left, right], True)
        return _combine(BOOLEAN, [left, right])


class _Checker:
    """Checks one rule; problems go to the shared list."""

    def __init__(
        self,
        raw: RawRule,
        catalog: SchemaCatalog,
        ctx: Context,
        metric_names: Mapping[str, str],
        problems: list[Problem],
    ) -> None:
        self.raw = raw
        self.catalog = catalog
        self.ctx = ctx
        self.metric_names = metric_names
        self.problems = problems
        self.rule_name = str(raw.data.get("name")) if "name" in raw.data else None
        self.record = ""
        self.sources: list[Source] = []
        self.failed = False
        self.types = Inference(catalog, ctx)

    # -- reporting ---------------------------------------------------------------------------

    def problem(self, line: int, field_name: str | None, message: str) -> None:
        self.failed = True
        self.problems.append(
            Problem(self.raw.file, line, message, rule=self.rule_name, field=field_name)
        )

    def unknown_keys(self, mapping: LMap, known: frozenset[str], where: str) -> None:
        for key in mapping:
            if key not in known:
                self.problem(
                    mapping.line_of(key),
                    f"{where}.{key}" if where else key,
                    f"unknown key {key!r}{suggest(key, sorted(known))}"
                    f" (known: {', '.join(sorted(known))})",
                )

    # -- the rule ----------------------------------------------------------------------------

    def check(self) -> Rule | None:
        data = self.raw.data
        self.unknown_keys(data, RULE_KEYS, "")
        name = data.get("name")
        if not isinstance(name, str) or not _RULE_NAME.match(name):
            self.problem(
                data.line_of("name"),
                "name",
                "every rule needs a 'name': letters, digits, spaces and _ . : / -",
            )
        record = data.get("record")
        if not isinstance(record, str) or not record:
            self.problem(
                data.line_of("record"), "record", "every rule needs a 'record' (Avro full name)"
            )
            return None
        if record not in self.catalog.names:
            known = sorted(self.catalog.event_names)
            self.problem(
                data.line_of("record"),
                "record",
                f"record {record!r} is not in the schema catalog{suggest(record, known)}",
            )
            return None
        try:
            self.catalog.fields(record)
        except KeyError:
            self.problem(data.line_of("record"), "record", f"{record} is not a record schema")
            return None
        self.record = record
        enabled = data.get("enabled", True)
        if not isinstance(enabled, bool):
            self.problem(data.line_of("enabled"), "enabled", "must be true or false")
        description = data.get("description", "")
        if not isinstance(description, str):
            self.problem(data.line_of("description"), "description", "must be text")
            description = ""
        outputs = [kind for kind in OUTPUT_KINDS if kind in data]
        if len(outputs) != 1:
            self.problem(
                data.line,
                None,
                "a rule has exactly one output: "
                + " | ".join(OUTPUT_KINDS)
                + (f" (found {', '.join(outputs)})" if outputs else ""),
            )
            return None
        kind = outputs[0]
        scope = Scope(record_type(record))
        for_each: list[tuple[str, Typed]] = []
        if "for_each" in data:
            for_each = self.bindings(data["for_each"], data.line_of("for_each"), "for_each", scope)
            for variable, typed in for_each:
                scope = scope.bind(variable, _element(typed.type))
        when = None
        if "when" in data:
            when = self.expr(data["when"], data.line_of("when"), "when", scope)
        body = data[kind]
        line = data.line_of(kind)
        if not isinstance(body, LMap):
            self.problem(line, kind, f"'{kind}' must be a mapping")
            return None
        output: Output | None
        if kind == "event":
            output = self.event(body, scope)
        elif kind == "profile_upsert":
            output = self.profile_upsert(body, scope)
        elif kind == "subscription":
            output = self.subscription(body, scope)
        elif kind == "catalog_item":
            output = self.catalog_item(body, scope)
        else:
            output = self.catalog_delete(body, scope)
        if output is None or self.failed or not isinstance(name, str):
            return None
        return Rule(
            record=record,
            name=name,
            file=self.raw.file,
            line=self.raw.line,
            kind=kind,
            description=description,
            when=when,
            for_each=tuple(for_each),
            output=output,
            sources=tuple(self.sources),
        )

    def bindings(self, value: Any, line: int, where: str, scope: Scope) -> list[tuple[str, Typed]]:
        if not isinstance(value, LMap) or not value:
            self.problem(line, where, "must map variable names to lists, e.g. {line: line_items}")
            return []
        out: list[tuple[str, Typed]] = []
        record_fields = set(self.catalog.fields(self.record))
        for variable, source in value.items():
            var_line = value.line_of(variable)
            if not _VARIABLE.match(variable) or variable in (
                "and",
                "or",
                "not",
                "in",
                "true",
                "false",
                "null",
            ):
                self.problem(var_line, f"{where}.{variable}", "variable names are lower_case words")
                continue
            if variable in record_fields or variable in scope.variables:
                self.problem(
                    var_line,
                    f"{where}.{variable}",
                    f"variable {variable!r} would hide a field or variable of the same name",
                )
                continue
            typed = self.expr(source, var_line, f"{where}.{variable}", scope)
            if typed is None:
                continue
            if typed.type.kind not in ("array", "any"):
                self.problem(
                    var_line,
                    f"{where}.{variable}",
                    f"must be a list to iterate, not {typed.type.describe()}",
                )
                continue
            out.append((variable, typed))
        return out

    # -- expressions -------------------------------------------------------------------------

    def expr(self, value: Any, line: int, where: str, scope: Scope) -> Typed | None:
        if not isinstance(value, str):
            self.problem(line, where, f"must be an expression (text), not {_yaml_kind(value)}")
            return None
        try:
            node = parse(value)
        except ExprSyntaxError as exc:
            self.problem(line, where, f"expression {value!r} does not parse: {exc}")
            return None
        try:
            node = _desugar(node)
            inferred = self.types.infer(node, scope)
        except CheckError as exc:
            self.problem(line, where, f"{value!r}: {exc}")
            return None
        return Typed(node, inferred.type, value, line, inferred.raises, inferred.deps)

    # -- templates ---------------------------------------------------------------------------

    def template(
        self, value: Any, line: int, where: str, scope: Scope, pointer: str
    ) -> Tmpl | None:
        if isinstance(value, str):
            typed = self.expr(value, line, where, scope)
            if typed is None:
                return None
            self.check_jsonable(typed, where)
            self.sources.append(Source(pointer, typed.text, line))
            return TExpr(typed)
        if value is None or isinstance(value, bool | int | float):
            self.sources.append(Source(pointer, f"{_json_text(value)} (static)", line))
            return TConst(value, line)
        if isinstance(value, LList):
            self.problem(
                line,
                where,
                "a YAML list is not a value here: write an expression list ['a', b]"
                " or {$const: [...]}",
            )
            return None
        if not isinstance(value, LMap):
            self.problem(line, where, f"unsupported value {_yaml_kind(value)}")
            return None
        directives = [key for key in value if key.startswith("$")]
        if "$const" in value:
            if len(value) != 1:
                self.problem(line, where, "$const stands alone in its mapping")
                return None
            constant = _plain(value["$const"])
            if not _is_json(constant):
                self.problem(line, where, "$const must be JSON-like (text, numbers, lists, maps)")
                return None
            self.sources.append(Source(pointer, f"{_json_text(constant)} (static)", line))
            return TConst(constant, line)
        if "$for" in value:
            return self.for_template(value, line, where, scope, pointer)
        if directives:
            self.problem(
                value.line_of(directives[0]),
                where,
                f"unknown directive {directives[0]!r} (known: $const, $for, $where, $emit)",
            )
            return None
        return self.object_template(value, where, scope, pointer, drop_empty=False)

    def object_template(
        self,
        value: LMap,
        where: str,
        scope: Scope,
        pointer: str,
        *,
        drop_empty: bool,
        allowed: frozenset[str] | None = None,
    ) -> TObject | None:
        entries: list[TEntry] = []
        ok = True
        for raw_key, child in value.items():
            optional = raw_key.endswith("?")
            key = raw_key[:-1] if optional else raw_key
            key_line = value.line_of(raw_key)
            child_where = f"{where}.{key}" if where else key
            if not key:
                self.problem(key_line, where, "empty key")
                ok = False
                continue
            if allowed is not None and key not in allowed:
                self.problem(
                    key_line,
                    child_where,
                    f"unknown key {key!r}{suggest(key, sorted(allowed))}"
                    f" (known: {', '.join(sorted(allowed))})",
                )
                ok = False
                continue
            built = self.template(child, key_line, child_where, scope, f"{pointer}/{key}")
            if built is None:
                ok = False
                continue
            entries.append(TEntry(key, optional or drop_empty, built, key_line))
        if not ok:
            return None
        return TObject(tuple(entries), value.line, drop_empty)

    def for_template(
        self, value: LMap, line: int, where: str, scope: Scope, pointer: str
    ) -> TFor | None:
        self.unknown_keys(value, frozenset({"$for", "$where", "$emit"}), where)
        if "$emit" not in value:
            self.problem(line, where, "$for needs an $emit: the value built for each element")
            return None
        bindings = self.bindings(value["$for"], value.line_of("$for"), f"{where}.$for", scope)
        if not bindings:
            return None
        inner = scope
        for variable, typed in bindings:
            inner = inner.bind(variable, _element(typed.type))
        condition = None
        if "$where" in value:
            condition = self.expr(
                value["$where"], value.line_of("$where"), f"{where}.$where", inner
            )
        loop_text = ", ".join(f"{v} in {t.text}" for v, t in bindings)
        self.sources.append(Source(pointer, f"[one per {loop_text}]", line, descend=True))
        emit = self.template(
            value["$emit"], value.line_of("$emit"), f"{where}[]", inner, f"{pointer}/*"
        )
        if emit is None:
            return None
        return TFor(tuple(bindings), condition, emit, line)

    def check_jsonable(self, typed: Typed, where: str) -> None:
        if typed.type.has(frozenset({"bytes"}), self.catalog) and typed.type.kind != "any":
            self.problem(typed.line, where, f"{typed.text!r} holds bytes, which JSON cannot carry")

    # -- typed output fields -----------------------------------------------------------------

    def typed_field(
        self,
        body: LMap,
        key: str,
        where: str,
        scope: Scope,
        pointer: str | None,
        *,
        accept: set[str],
        wording: str,
        hint: str = "",
    ) -> Typed | None:
        typed = self.expr(body[key], body.line_of(key), where, scope)
        if typed is None:
            return None
        if typed.type.kind not in accept | {"any", "null"}:
            extra = hint if typed.type.kind == "record" else ""
            self.problem(
                typed.line,
                where,
                f"{typed.text!r} must be {wording}, not {typed.type.describe()}{extra}",
            )
            return None
        if pointer is not None:
            self.sources.append(Source(pointer, typed.text, typed.line))
        return typed

    def text_field(
        self, body: LMap, key: str, where: str, scope: Scope, pointer: str | None
    ) -> Typed | None:
        return self.typed_field(
            body,
            key,
            where,
            scope,
            pointer,
            accept={"string", "enum"},
            wording="text",
            hint="; pick one of its fields",
        )

    def id_field(
        self, body: LMap, key: str, where: str, scope: Scope, pointer: str | None
    ) -> Typed | None:
        return self.typed_field(
            body,
            key,
            where,
            scope,
            pointer,
            accept={"string", "enum", "int"},
            wording="text or an integer (an id)",
        )

    # -- outputs -----------------------------------------------------------------------------

    def profile_block(
        self, value: Any, line: int, where: str, scope: Scope, pointer: str
    ) -> TObject | None:
        if not isinstance(value, LMap):
            self.problem(line, where, "must be a mapping of profile attributes")
            return None
        ok = True
        for raw_key in value:
            key = raw_key.rstrip("?")
            key_line = value.line_of(raw_key)
            if key not in PROFILE_KEYS:
                self.problem(
                    key_line,
                    f"{where}.{key}",
                    f"unknown profile attribute {key!r}{suggest(key, sorted(PROFILE_KEYS))}",
                )
                ok = False
            elif key in PROFILE_TEXT_KEYS and not isinstance(value[raw_key], str):
                self.problem(key_line, f"{where}.{key}", "must be an expression giving text")
                ok = False
        if not ok:
            return None
        if not any(key.rstrip("?") in IDENTIFIERS for key in value):
            self.problem(
                line,
                where,
                "a profile needs an identifier: one of " + ", ".join(IDENTIFIERS),
            )
            return None
        entries: list[TEntry] = []
        for raw_key, child in value.items():
            key = raw_key.rstrip("?")
            key_line = value.line_of(raw_key)
            child_where = f"{where}.{key}"
            child_pointer = f"{pointer}/{key}"
            built: Tmpl | None
            if key == "location":
                if not isinstance(child, LMap):
                    self.problem(key_line, child_where, "must be a mapping of location fields")
                    return None
                built = self.object_template(
                    child,
                    child_where,
                    scope,
                    child_pointer,
                    drop_empty=True,
                    allowed=frozenset(LOCATION_KEYS),
                )
                if built is not None:
                    for entry in built.entries:
                        self.check_location(entry, f"{child_where}.{entry.key}")
            elif key == "properties":
                built = self.template(child, key_line, child_where, scope, child_pointer)
                if isinstance(built, TExpr) and built.typed.type.kind not in (
                    "map",
                    "record",
                    "any",
                ):
                    self.problem(key_line, child_where, "must be a mapping or a map/record field")
                    return None
            else:
                built = self.template(child, key_line, child_where, scope, child_pointer)
                if isinstance(built, TExpr) and not _textual(built.typed.type):
                    self.problem(
                        key_line,
                        child_where,
                        f"{built.typed.text!r} must be text, not {built.typed.type.describe()}",
                    )
                    return None
            if built is None:
                return None
            entries.append(TEntry(key, True, built, key_line))
        return TObject(tuple(entries), value.line, drop_empty=True)

    def check_location(self, entry: TEntry, where: str) -> None:
        if not isinstance(entry.value, TExpr):
            return
        kind = entry.value.typed.type
        if entry.key in LOCATION_TEXT_KEYS and not _textual(kind):
            self.problem(entry.line, where, f"must be text, not {kind.describe()}")
        if entry.key in ("latitude", "longitude") and not (_textual(kind) or kind.is_number):
            self.problem(entry.line, where, f"must be a number or text, not {kind.describe()}")

    def event(self, body: LMap, scope: Scope) -> EventOutput | None:
        self.unknown_keys(body, EVENT_KEYS, "event")
        for required in ("metric", "profile", "unique_id"):
            if required not in body:
                why = (
                    "Klaviyo deduplicates on profile + metric + unique_id; without one a"
                    " redelivered message would count twice"
                    if required == "unique_id"
                    else "Klaviyo requires it"
                )
                self.problem(body.line, f"event.{required}", f"missing ({why})")
        if any(required not in body for required in ("metric", "profile", "unique_id")):
            return None
        metric_default = body["metric"]
        if not isinstance(metric_default, str) or not metric_default.strip():
            self.problem(body.line_of("metric"), "event.metric", "must be the metric name (text)")
            return None
        metric = self.metric_names.get(metric_default, metric_default)
        self.sources.append(
            Source(
                "event/metric/data/attributes/name",
                f"metric {metric_default!r}"
                + (" (renamed by configuration)" if metric != metric_default else " (static)"),
                body.line_of("metric"),
            )
        )
        profile = self.profile_block(
            body["profile"], body.line_of("profile"), "event.profile", scope, "profile"
        )
        properties: TObject | TExpr | None = TObject((), body.line)
        if "properties" in body:
            raw = body["properties"]
            built = self.template(
                raw, body.line_of("properties"), "event.properties", scope, "event/properties"
            )
            if isinstance(built, TObject) or (
                isinstance(built, TExpr) and built.typed.type.kind in ("map", "record", "any")
            ):
                properties = built
            elif built is not None:
                self.problem(
                    body.line_of("properties"),
                    "event.properties",
                    "must be a mapping (or a map/record field)",
                )
                properties = None
            else:
                properties = None
        unique_id = self.id_field(body, "unique_id", "event.unique_id", scope, "event/unique_id")
        time = value = currency = None
        if "time" in body:
            time = self.typed_field(
                body,
                "time",
                "event.time",
                scope,
                "event/time",
                accept={"timestamp", "date", "string"},
                wording="a timestamp (or ISO 8601 text)",
            )
        if "value" in body:
            value = self.typed_field(
                body,
                "value",
                "event.value",
                scope,
                "event/value",
                accept=set(NUMBER_KINDS),
                wording="a number",
                hint="; use money(...) for a Money record",
            )
        if "value_currency" in body:
            currency = self.text_field(
                body, "value_currency", "event.value_currency", scope, "event/value_currency"
            )
        backfill: Typed | TConst | None = None
        if "backfill" in body:
            raw = body["backfill"]
            if isinstance(raw, bool):
                backfill = TConst(raw, body.line_of("backfill"))
                self.sources.append(
                    Source("event/backfill", f"{_json_text(raw)} (static)", backfill.line)
                )
            else:
                backfill = self.typed_field(
                    body,
                    "backfill",
                    "event.backfill",
                    scope,
                    "event/backfill",
                    accept={"boolean"},
                    wording="true/false",
                )
        if profile is None or properties is None or unique_id is None:
            return None
        return EventOutput(
            metric_default=metric_default,
            metric=metric,
            profile=profile,
            properties=properties,
            unique_id=unique_id,
            time=time,
            value=value,
            value_currency=currency,
            backfill=backfill,
        )

    def profile_upsert(self, body: LMap, scope: Scope) -> ProfileOutput | None:
        refused = [key for key in body if key.rstrip("?") in NOT_IN_PROFILE_IMPORT]
        for key in refused:
            self.problem(
                body.line_of(key),
                f"profile_upsert.{key.rstrip('?')}",
                "Klaviyo's profile import has no anonymous_id since revision 2026-01-15;"
                " send it with events, and _kx here",
            )
        if refused:
            return None
        profile = self.profile_block(body, body.line, "profile_upsert", scope, "attributes")
        return None if profile is None else ProfileOutput(profile)

    def subscription(self, body: LMap, scope: Scope) -> SubscriptionOutput | None:
        self.unknown_keys(body, SUBSCRIPTION_KEYS, "subscription")
        for required in ("action", "channel", "list_id"):
            if required not in body:
                self.problem(body.line, f"subscription.{required}", "missing")
        if any(required not in body for required in ("action", "channel", "list_id")):
            return None
        action = self.text_field(body, "action", "subscription.action", scope, "endpoint")
        if action is not None:
            self.sources.append(
                Source("attributes/subscriptions/*/marketing/consent", action.text, action.line)
            )
        channel = self.text_field(body, "channel", "subscription.channel", scope, None)
        if channel is not None:
            self.sources.append(
                Source(
                    "attributes/subscriptions",
                    f"[the channel: {channel.text}]",
                    channel.line,
                    descend=True,
                )
            )
        list_id = self.text_field(body, "list_id", "subscription.list_id", scope, "group")
        email = phone = consented_at = None
        if "email" in body:
            email = self.text_field(body, "email", "subscription.email", scope, "attributes/email")
        if "phone_number" in body:
            phone = self.text_field(
                body,
                "phone_number",
                "subscription.phone_number",
                scope,
                "attributes/phone_number",
            )
        if "consented_at" in body:
            consented_at = self.typed_field(
                body,
                "consented_at",
                "subscription.consented_at",
                scope,
                "attributes/subscriptions/*/marketing/consented_at",
                accept={"timestamp", "string"},
                wording="a timestamp (or ISO 8601 text)",
            )
        scope_word = body.get("unsubscribe_scope", "global")
        if scope_word not in UNSUBSCRIBE_SCOPES:
            self.problem(
                body.line_of("unsubscribe_scope"),
                "subscription.unsubscribe_scope",
                f"must be one of {', '.join(UNSUBSCRIBE_SCOPES)} (a word, not an expression),"
                f" not {scope_word!r}",
            )
        if action is not None:
            self.check_symbols(action, SUBSCRIPTION_ACTIONS.keys(), "subscription.action")
        if channel is not None:
            channels = self.check_symbols(channel, SUBSCRIPTION_CHANNELS, "subscription.channel")
            if "email" in channels and "email" not in body:
                self.problem(
                    body.line,
                    "subscription.email",
                    "missing: email subscriptions need the email address",
                )
            if "sms" in channels and "phone_number" not in body:
                self.problem(
                    body.line,
                    "subscription.phone_number",
                    "missing: SMS subscriptions need the phone number",
                )
        if action is None or channel is None or list_id is None or self.failed:
            return None
        return SubscriptionOutput(
            action, channel, list_id, email, phone, consented_at, str(scope_word)
        )

    def check_symbols(self, typed: Typed, allowed: Any, where: str) -> set[str]:
        """The values ``typed`` can take (lower case), checked against ``allowed``."""
        allowed_set = {a.lower() for a in allowed}
        if typed.type.kind == "enum":
            values = {s.lower() for s in typed.type.symbols}
        elif isinstance(typed.expr, Literal) and isinstance(typed.expr.value, str):
            values = {typed.expr.value.lower()}
        else:
            return allowed_set  # known only at run time; checked per message
        unknown = values - allowed_set
        if unknown:
            self.problem(
                typed.line,
                where,
                f"{typed.text!r} can be {', '.join(sorted(unknown))}; allowed:"
                f" {', '.join(sorted(allowed_set))} (any case)",
            )
        return values & allowed_set

    def catalog_item(self, body: LMap, scope: Scope) -> CatalogItemOutput | None:
        keys = {key.rstrip("?") for key in body}
        self.unknown_keys(
            _sub_map(body, {key.rstrip("?") for key in body}), CATALOG_KEYS, "catalog_item"
        )
        mode = body.get("mode", "upsert")
        if mode not in CATALOG_MODES:
            self.problem(
                body.line_of("mode"),
                "catalog_item.mode",
                f"must be one of {', '.join(CATALOG_MODES)}",
            )
            return None
        required = ["external_id", *(CATALOG_REQUIRED if mode != "update" else ())]
        for key in required:
            if f"{key}?" in body:
                self.problem(
                    body.line_of(f"{key}?"),
                    f"catalog_item.{key}",
                    "Klaviyo requires it; it cannot be optional",
                )
            elif key not in keys:
                self.problem(body.line, f"catalog_item.{key}", "missing (Klaviyo requires it)")
        if any(key not in keys for key in required):
            return None
        if self.failed:
            return None
        external_id = self.id_field(
            body, "external_id", "catalog_item.external_id", scope, "attributes/external_id"
        )
        if external_id is not None:
            self.sources.append(
                Source("id", f"'$custom:::$default:::' + {external_id.text}", external_id.line)
            )
        categories = None
        attributes: dict[str, Any] = {}
        for raw_key, raw_value in body.items():
            key = raw_key.rstrip("?")
            if key in ("mode", "external_id"):
                continue
            if key == "categories":
                categories = self.typed_field(
                    body,
                    raw_key,
                    "catalog_item.categories",
                    scope,
                    "relationships/categories/data/*/id",
                    accept={"array"},
                    wording="a list of category names",
                )
                if (
                    categories is not None
                    and categories.type.item is not None
                    and not _textual(categories.type.item)
                ):
                    self.problem(categories.line, "catalog_item.categories", "must list text")
                continue
            attributes[raw_key] = raw_value
        built = self.object_template(
            _sub_map(body, attributes), "catalog_item", scope, "attributes", drop_empty=False
        )
        if built is None or external_id is None:
            return None
        for entry in built.entries:
            self.check_catalog_attribute(entry)
        if self.failed:
            return None
        return CatalogItemOutput(str(mode), external_id, built, categories)

    def check_catalog_attribute(self, entry: TEntry) -> None:
        where = f"catalog_item.{entry.key}"
        if entry.key in CATALOG_REQUIRED and entry.optional:
            self.problem(entry.line, where, "Klaviyo requires it; it cannot be optional")
        if entry.key == "custom_metadata":
            if not isinstance(entry.value, TObject) and not (
                isinstance(entry.value, TExpr)
                and entry.value.typed.type.kind in ("map", "record", "any")
            ):
                self.problem(entry.line, where, "must be a mapping (flat JSON)")
            return
        if not isinstance(entry.value, TExpr):
            if isinstance(entry.value, TConst):
                return
            self.problem(entry.line, where, "must be an expression")
            return
        kind = entry.value.typed.type
        if entry.key in CATALOG_TEXT and not _textual(kind):
            self.problem(entry.line, where, f"must be text, not {kind.describe()}")
        elif entry.key == "price" and not kind.is_number and kind.kind not in ("any", "null"):
            hint = "; use money(...)" if kind.kind == "record" else ""
            self.problem(entry.line, where, f"must be a number, not {kind.describe()}{hint}")
        elif entry.key == "published" and kind.kind not in ("boolean", "any", "null"):
            self.problem(entry.line, where, f"must be true/false, not {kind.describe()}")
        elif entry.key == "images" and not (
            kind.kind in ("array", "any") and (kind.item is None or _textual(kind.item))
        ):
            self.problem(entry.line, where, f"must be a list of URLs, not {kind.describe()}")

    def catalog_delete(self, body: LMap, scope: Scope) -> CatalogDeleteOutput | None:
        self.unknown_keys(body, frozenset({"external_id"}), "catalog_delete")
        if "external_id" not in body:
            self.problem(body.line, "catalog_delete.external_id", "missing (Klaviyo requires it)")
            return None
        external_id = self.id_field(body, "external_id", "catalog_delete.external_id", scope, None)
        if external_id is not None:
            self.sources.append(
                Source("id", f"'$custom:::$default:::' + {external_id.text}", external_id.line)
            )
        return None if external_id is None else CatalogDeleteOutput(external_id)


def _sub_map(template: LMap, data: Mapping[str, Any] | set[str]) -> LMap:
    """An LMap with ``template``'s line numbers and the given keys (values from ``data``)."""
    out = LMap()
    out.line = template.line
    out.key_lines = {}
    items = data.items() if isinstance(data, Mapping) else ((k, None) for k in data)
    for key, value in items:
        out[key] = value
        raw_key = key if key in template.key_lines else f"{key}?"
        out.key_lines[key] = template.key_lines.get(raw_key, template.line)
    return out


def _element(list_type: AType) -> AType:
    return list_type.item if list_type.item is not None else ANY


def _textual(type_: AType) -> bool:
    return type_.is_stringish or type_.kind in ("any", "null")


def _literal_type(value: Any) -> AType:
    if value is None:
        return NULL
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int):
        return INT
    if isinstance(value, float):
        return FLOAT
    return STRING


def _combine(result: AType, parts: list[Inferred], raises: bool = False) -> Inferred:
    deps: frozenset[str] = frozenset()
    for part in parts:
        deps |= part.deps
        raises = raises or part.raises
    return Inferred(result, raises, deps)


def _check_symbol(type_: AType, other: Expr) -> None:
    """``channel == 'EMAL'`` can never be true: a problem, not a silent no-op."""
    if (
        type_.kind == "enum"
        and isinstance(other, Literal)
        and isinstance(other.value, str)
        and other.value not in type_.symbols
    ):
        raise CheckError(
            f"{other.value!r} is not a symbol of {type_.name} ({', '.join(type_.symbols)})"
        )


def _desugar(node: Expr) -> Expr:
    """``coalesce(a, b)`` is ``a ?? b``: one node kind for the compiler to handle."""
    if isinstance(node, Call) and node.name == "coalesce":
        return (
            Coalesce(tuple(_desugar(arg) for arg in node.args))
            if len(node.args) > 1
            else (_desugar(node.args[0]))
        )
    if isinstance(node, Call):
        return Call(node.name, tuple(_desugar(arg) for arg in node.args))
    if isinstance(node, Path):
        from consumer.rules.expressions import Step

        steps = tuple(
            Step(s.kind, s.name, _desugar(s.expr)) if s.expr is not None else s for s in node.steps
        )
        return Path(_desugar(node.base), steps)
    if isinstance(node, ListLit):
        return ListLit(tuple(_desugar(item) for item in node.items))
    if isinstance(node, Template):
        return Template(tuple(_desugar(p) if isinstance(p, Expr) else p for p in node.parts))
    if isinstance(node, Coalesce):
        return Coalesce(tuple(_desugar(item) for item in node.items))
    if isinstance(node, BoolOp):
        return BoolOp(node.op, tuple(_desugar(item) for item in node.items))
    if isinstance(node, Not):
        return Not(_desugar(node.operand))
    if isinstance(node, Compare):
        return Compare(node.op, _desugar(node.left), _desugar(node.right))
    return node


def _yaml_kind(value: Any) -> str:
    if isinstance(value, LMap):
        return "a mapping"
    if isinstance(value, LList):
        return "a list"
    if value is None:
        return "null"
    return type(value).__name__


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _is_json(value: Any) -> bool:
    if value is None or isinstance(value, str | bool | int | float):
        return True
    if isinstance(value, list):
        return all(_is_json(v) for v in value)
    if isinstance(value, dict):
        return all(_is_json(v) for v in value.values())
    return False


def _json_text(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


def check_rules(
    raw_rules: list[RawRule],
    catalog: SchemaCatalog,
    ctx: Context,
    metric_names: Mapping[str, str],
) -> tuple[list[Rule], list[Problem]]:
    """Check every rule; the checked ones and every problem met."""
    problems: list[Problem] = []
    rules: list[Rule] = []
    for raw in raw_rules:
        checked = _Checker(raw, catalog, ctx, metric_names, problems).check()
        if checked is not None:
            rules.append(checked)
    return rules, problems


__all__ = ["IDENTIFIERS", "Inference", "Inferred", "Scope", "check_rules"]
