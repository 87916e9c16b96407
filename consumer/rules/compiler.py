"""Checked rules compiled to Python source, one function per record, executed once at load.

Why generate source rather than build closures: a translation is a few dozen small steps
(a dict lookup, a float conversion) per output, and a closure per step costs a Python call
each, which would make translation by rules about twice as slow as hand-written code. Generated code
is the hand-written code: ``money(line.unit_price)`` becomes ``float(_e1['unit_price']['amount'])``
inside a list comprehension. It is built from checked syntax trees only: field names and
literals enter the source through ``repr()`` (a Python literal whatever the text), everything
else is a constant in the function's namespace, so rule text can never become code.

What the compiler does beyond a literal translation:

* **Shared values.** A value that several rules of a record need, or that a fan-out needs on
  every item, is computed once per message: the customer's profile (whose E.164 parse is the
  single most expensive step), ``iso8601(occurred_at)``, projections. Shared values are
  computed lazily, at the start of the first rule that needs them, and only when they cannot
  fail (a failure must belong to the rule and field that caused it) - profiles excepted,
  whose failures name the profile fields of whichever rule computed them first.
* **Null safety without cost where the schema rules out null.** A path through a nullable
  record is guarded; one through required fields is plain indexing.
* **Tracing.** Each record function takes an optional ``marks`` list and appends the number
  of operations after each rule, so ``--explain`` can attribute operations to rules.
"""

from __future__ import annotations

import linecache
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from consumer.endpoints import Endpoint
from consumer.messages import EventPayload, Operation
from consumer.rules import runtime
from consumer.rules.checks import IDENTIFIERS, Inference, Scope
from consumer.rules.expressions import (
    BoolOp,
    Call,
    Coalesce,
    Compare,
    Expr,
    ListLit,
    Literal,
    Name,
    Not,
    Path,
    Step,
    Template,
    unparse,
    walk,
)
from consumer.rules.functions import FUNCTIONS, HELPER_NAMES, NEEDS_WHERE, Context, Where
from consumer.rules.model import (
    CatalogDeleteOutput,
    CatalogItemOutput,
    EventOutput,
    ProfileOutput,
    Rule,
    SubscriptionOutput,
    TConst,
    TEntry,
    TExpr,
    TFor,
    TObject,
    Typed,
)
from consumer.rules.model import Template as Tmpl
from consumer.rules.paths import ANY, AType, field_type, record_type
from consumer.schemas import SchemaCatalog

RecordFunction = Any  # (data: dict, marks: list[int] | None) -> list[Operation]

_CONVERTED = frozenset({"decimal", "timestamp", "date"})
# Key prefix of a shared value that is a field already converted for JSON (ISO 8601 time).
_JSON = "json:"


class _Code(NamedTuple):
    """Generated Python for one expression."""

    text: str
    cheap: bool  # a name or an indexing chain: safe and cheap to repeat


class _Fn:
    """The lines of one generated function."""

    def __init__(self, header: str) -> None:
        self.lines = [header]
        self.depth = 1

    def emit(self, text: str) -> None:
        self.lines.append("    " * self.depth + text)

    @contextmanager
    def indented(self) -> Iterator[None]:
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1

    def source(self) -> str:
        return "\n".join(self.lines)


@dataclass(frozen=True, slots=True)
class _Scope:
    """Names at one point of the generated code (types for inference, Python names for code)."""

    types: Scope
    rule: Rule
    names: Mapping[str, str] = field(default_factory=dict)
    element: str | None = None
    hoisted: Mapping[str, str] = field(default_factory=dict)
    # Path prefix text -> (local, its type): `customer.address` read once into a local.
    aliases: Mapping[str, tuple[str, AType]] = field(default_factory=dict)
    # Inside a shared profile function, Where objects come from its `w` parameter.
    where_param: bool = False

    def bind(self, variable: str, pyname: str, type_: AType) -> _Scope:
        return replace(
            self, types=self.types.bind(variable, type_), names={**self.names, variable: pyname}
        )

    def element_scope(self, pyname: str, type_: AType) -> _Scope:
        return replace(
            self,
            types=Scope(self.types.root, {}, type_),
            element=pyname,
            hoisted={},
            aliases={},
        )


@dataclass(slots=True)
class _ProfileFn:
    """A generated profile function and the Where fields its `w` parameter must hold."""

    name: str
    where_fields: set[str]


class Compiler:
    """Turns the checked rules of every record into one executed Python module."""

    def __init__(self, catalog: SchemaCatalog, ctx: Context, *, force_backfill: bool) -> None:
        self.catalog = catalog
        self.ctx = ctx
        self.types = Inference(catalog, ctx)
        self.force_backfill = force_backfill
        self.namespace: dict[str, Any] = dict(runtime.NAMESPACE)
        for name, function in FUNCTIONS.items():
            self.namespace[HELPER_NAMES[name]] = function.runtime
        self.namespace.update(
            _Op=Operation,
            _EP=EventPayload,
            _EVENTS=Endpoint.EVENTS,
            _PROFILES=Endpoint.PROFILES,
        )
        self.chunks: list[str] = []
        self._counter = 0
        self._wheres: dict[tuple[str, str, str], str] = {}
        self._consts: dict[Any, str] = {}
        # Fields a profile function being generated asks its `w` parameter for.
        self._where_fields: set[str] = set()

    # -- naming ------------------------------------------------------------------------------

    def fresh(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}{self._counter}"

    def const(self, value: Any) -> str:
        try:
            key: Any = ("v", type(value), value)
            hash(key)
        except TypeError:
            key = ("id", id(value))
        name = self._consts.get(key)
        if name is None:
            name = self._consts[key] = self.fresh("_k")
            self.namespace[name] = value
        return name

    def where(self, sc: _Scope, field_name: str) -> str:
        if sc.where_param:
            self._where_fields.add(field_name)
            return f"w[{field_name!r}]"
        key = (sc.rule.record, sc.rule.name, field_name)
        name = self._wheres.get(key)
        if name is None:
            name = self._wheres[key] = self.fresh("_w")
            self.namespace[name] = Where(*key)
        return name

    def infer(self, node: Expr, sc: _Scope) -> AType:
        return self.types.infer(node, sc.types).type

    # -- expressions -------------------------------------------------------------------------

    def gen(self, node: Expr, sc: _Scope, fld: str) -> _Code:
        if sc.element is None and sc.hoisted:
            shared = sc.hoisted.get(unparse(node))
            if shared is not None:
                return _Code(shared, True)
        if isinstance(node, Literal):
            value = node.value
            if isinstance(value, float) and not math.isfinite(value):
                return _Code(self.const(value), True)
            return _Code(repr(value), True)
        if isinstance(node, ListLit):
            return _Code(
                "[" + ", ".join(self.gen(i, sc, fld).text for i in node.items) + "]", False
            )
        if isinstance(node, Name):
            if sc.element is not None:
                return _Code(f"{sc.element}[{node.name!r}]", True)
            if node.name in sc.names:
                return _Code(sc.names[node.name], True)
            return _Code(f"r[{node.name!r}]", True)
        if isinstance(node, Path):
            return self.path(node, sc, fld)
        if isinstance(node, Call):
            return self.call(node, sc, fld)
        if isinstance(node, Template):
            return self.template(node, sc, fld)
        if isinstance(node, Coalesce):
            code = self.gen(node.items[-1], sc, fld).text
            for item in reversed(node.items[:-1]):
                first = self.gen(item, sc, fld)
                if first.cheap:
                    code = f"({first.text} if {first.text} is not None else {code})"
                else:
                    code = f"_co({first.text}, lambda: {code})"
            return _Code(code, False)
        if isinstance(node, BoolOp):
            joined = f" {node.op} ".join(self.gen(i, sc, fld).text for i in node.items)
            return _Code(f"({joined})", False)
        if isinstance(node, Not):
            return _Code(f"(not {self.gen(node.operand, sc, fld).text})", False)
        if isinstance(node, Compare):
            return self.compare(node, sc, fld)
        raise TypeError(f"cannot compile {node!r}")

    def path(self, node: Path, sc: _Scope, fld: str) -> _Code:
        steps = node.steps
        for count in range(len(steps) - 1, 0, -1) if sc.aliases else ():
            alias = sc.aliases.get(unparse(Path(node.base, steps[:count])))
            if alias is not None:
                code, cheap = alias[0], True
                current = alias[1]
                steps = steps[count:]
                break
        else:
            if sc.aliases and isinstance(node.base, Name) and node.base.name in sc.aliases:
                code, cheap = sc.aliases[node.base.name][0], True
                current = sc.aliases[node.base.name][1]
            else:
                base = self.gen(node.base, sc, fld)
                code, cheap = base.text, base.cheap
                current = self.infer(node.base, sc)
        loops: list[tuple[str, str]] = []
        for step in steps:
            if step.kind == "field":
                found = field_type(self.catalog, current, step.name) or ANY
                if current.nullable:
                    if cheap and len(code) < 160:
                        code = f"(None if {code} is None else {code}[{step.name!r}])"
                    else:
                        code, cheap = f"_get({code}, {step.name!r})", False
                else:
                    code = f"{code}[{step.name!r}]"
                current = found
                continue
            variable = self.fresh("_e")
            loops.append((variable, f"({code} or ())" if current.nullable else code))
            current = current.item if current.item is not None else ANY
            code, cheap = variable, True
            if step.kind == "each":
                assert step.expr is not None
                inner = sc.element_scope(variable, current)
                code = self.gen(step.expr, inner, fld).text
                current = self.infer(step.expr, inner)
        if not loops:
            return _Code(code, cheap)
        fors = " ".join(f"for {variable} in {iterable}" for variable, iterable in loops)
        return _Code(f"[{code} {fors}]", False)

    def call(self, node: Call, sc: _Scope, fld: str) -> _Code:
        if node.name == "if":
            condition, then, otherwise = (self.gen(arg, sc, fld).text for arg in node.args)
            return _Code(f"({then} if {condition} else {otherwise})", False)
        if node.name == "flatten":
            (arg,) = node.args
            if (
                isinstance(arg, Path)
                and arg.steps[-1].kind != "each"
                and any(step.kind != "field" for step in arg.steps)
            ):
                # flatten(a[].b) is a[].b[]: one comprehension, no intermediate list.
                return self.path(Path(arg.base, (*arg.steps, Step("project"))), sc, fld)
        function = FUNCTIONS[node.name]
        args = [self.gen(arg, sc, fld).text for arg in node.args]
        if function.inline is not None:
            inlined = function.inline(args, [self.infer(arg, sc) for arg in node.args])
            if inlined is not None:
                return _Code(inlined, False)
        if node.name == "e164" and len(args) == 1:
            args.append(repr(self.ctx.default_phone_region))
        if node.name in NEEDS_WHERE:
            args.append(self.where(sc, fld))
        return _Code(f"{HELPER_NAMES[node.name]}({', '.join(args)})", False)

    def template(self, node: Template, sc: _Scope, fld: str) -> _Code:
        parts: list[str] = []
        for part in node.parts:
            if isinstance(part, str):
                parts.append(repr(part))
                continue
            code = self.gen(part, sc, fld).text
            kind = self.infer(part, sc)
            if kind.is_stringish and not kind.nullable:
                parts.append(code)
            elif kind.kind == "int" and not kind.nullable:
                parts.append(f"str({code})")
            else:
                parts.append(f"_tpl({code}, {self.where(sc, fld)})")
        return _Code("(" + " + ".join(parts) + ")" if parts else "''", False)

    def compare(self, node: Compare, sc: _Scope, fld: str) -> _Code:
        left = self.gen(node.left, sc, fld).text
        if node.op in ("in", "not in"):
            if isinstance(node.right, ListLit):
                items = [self.gen(item, sc, fld).text for item in node.right.items]
                right = "(" + "".join(f"{item}, " for item in items) + ")"
            else:
                right = self.gen(node.right, sc, fld).text
                if self.infer(node.right, sc).nullable:
                    right = f"({right} or ())"
            return _Code(f"({left} {node.op} {right})", False)
        right = self.gen(node.right, sc, fld).text
        if node.op in ("==", "!="):
            return _Code(f"({left} {node.op} {right})", False)
        if self.infer(node.left, sc).nullable or self.infer(node.right, sc).nullable:
            return _Code(f"_order({node.op!r}, {left}, {right}, {self.where(sc, fld)})", False)
        return _Code(f"({left} {node.op} {right})", False)

    # -- output templates --------------------------------------------------------------------

    def json_value(self, code: str, type_: AType) -> str:
        """``code``'s value made JSON-ready (Decimal -> number, datetime -> ISO 8601)."""
        if type_.kind == "decimal":
            return f"_num({code})" if type_.nullable else f"float({code})"
        if type_.kind in ("timestamp", "date"):
            return f"_iso({code})" if type_.nullable else f"{code}.isoformat()"
        if type_.kind in ("record", "array", "map", "any") and type_.has(_CONVERTED, self.catalog):
            return f"_json({code})"
        return code

    def leaf(self, typed: Typed, sc: _Scope, fld: str) -> str:
        """An output value: the expression, JSON-ready (shared when computed once per record)."""
        if sc.element is None and sc.hoisted:
            shared = sc.hoisted.get(_JSON + unparse(typed.expr))
            if shared is not None:
                return shared
        return self.json_value(self.gen(typed.expr, sc, fld).text, typed.type)

    def value(self, template: Tmpl, sc: _Scope, fb: _Fn | None, fld: str) -> str:
        """Code for a template's value; statements (if any) go to ``fb``."""
        if isinstance(template, TConst):
            constant = template.value
            if isinstance(constant, dict | list) or (
                isinstance(constant, float) and not math.isfinite(constant)
            ):
                return self.const(constant)
            return repr(constant)
        if isinstance(template, TExpr):
            return self.leaf(template.typed, sc, fld)
        if isinstance(template, TObject):
            if fb is None or not _needs_statements(template):
                assert not _needs_statements(template)
                items = ", ".join(
                    f"{e.key!r}: {self.value(e.value, sc, fb, f'{fld}.{e.key}')}"
                    for e in template.entries
                )
                return "{" + items + "}"
            return self.object_statements(template, sc, fb, fld)
        return self.loop(template, sc, fb, fld)

    def object_statements(
        self, template: TObject, sc: _Scope, fb: _Fn, fld: str, target: str | None = None
    ) -> str:
        """Build an object key by key into ``target`` (a new dict unless given); its name."""
        entries = list(template.entries)
        if target is None:
            # Required keys up to the first optional one go in one dict display (faster).
            leading: list[str] = []
            while entries and not entries[0].optional and not _needs_statements(entries[0].value):
                entry = entries.pop(0)
                code = self.value(entry.value, sc, None, f"{fld}.{entry.key}")
                leading.append(f"{entry.key!r}: {code}")
            target = self.fresh("_d")
            fb.emit(f"{target} = {{{', '.join(leading)}}}")
        depth = fb.depth
        prefix = _common_prefix(entries)
        if prefix is not None:
            # `location: {city: customer.address.city, ...}`: read the address once, and when
            # it is null skip every key at once (they are all optional).
            prefix_type = self.infer(prefix, sc)
            if prefix_type.kind == "record":
                alias = self.fresh("_a")
                fb.emit(f"{alias} = {self.gen(prefix, sc, fld).text}")
                if prefix_type.nullable:
                    fb.emit(f"if {alias} is not None:")
                    fb.depth += 1
                aliases = {**sc.aliases, unparse(prefix): (alias, prefix_type.with_null(False))}
                sc = replace(sc, aliases=aliases)
        for entry in entries:
            code = self.value(entry.value, sc, fb, f"{fld}.{entry.key}")
            if not entry.optional:
                fb.emit(f"{target}[{entry.key!r}] = {code}")
                continue
            if _is_name(code):
                temporary = code
            else:
                temporary = self.fresh("_t")
                fb.emit(f"{temporary} = {code}")
            fb.emit(f"if {_present(temporary, entry.value, template.drop_empty)}:")
            with fb.indented():
                fb.emit(f"{target}[{entry.key!r}] = {temporary}")
        fb.depth = depth
        return target

    def loop(self, template: TFor, sc: _Scope, fb: _Fn | None, fld: str) -> str:
        iterables: list[str] = []
        inner = sc
        variables: list[str] = []
        for variable, typed in template.bindings:
            code = self.gen(typed.expr, sc, fld).text
            iterables.append(f"({code} or ())" if typed.type.nullable else code)
            pyname = self.fresh(f"v_{variable}_")
            variables.append(pyname)
            element = typed.type.item if typed.type.item is not None else ANY
            inner = inner.bind(variable, pyname, element)
        if _needs_statements(template.emit):
            # Everything the item's code may refer to: variables, shared values, aliases, and
            # the profile function's Where table when inside one.
            aliases = [local for local, _ in inner.aliases.values()]
            where = ["w"] if inner.where_param else []
            params = ", ".join(
                ["r", *where, *inner.names.values(), *inner.hoisted.values(), *aliases]
            )
            helper_name = self.fresh("_obj")
            helper = _Fn(f"def {helper_name}({params}):")
            result = self.value(template.emit, inner, helper, f"{fld}[]")
            helper.emit(f"return {result}")
            self.chunks.append(helper.source())
            emit = f"{helper_name}({params})"
        else:
            emit = self.value(template.emit, inner, None, f"{fld}[]")
        if len(variables) == 1:
            head = f"for {variables[0]} in {iterables[0]}"
        else:
            head = (
                f"for {', '.join(variables)} in _zip(({', '.join(iterables)},),"
                f" {self.where(sc, fld)})"
            )
        condition = ""
        if template.where is not None:
            condition = f" if {self.gen(template.where.expr, inner, fld).text}"
        return f"[{emit} {head}{condition}]"

    # -- profiles ----------------------------------------------------------------------------

    def profile_function(self, template: TObject, sc: _Scope, params: list[str]) -> _ProfileFn:
        """A function building the profile attributes and their identity.

        An identifier that fails (a phone number that is not one) is left out when another
        identifier exists, as OrderTranslator does; as the only identifier, its failure is the
        message's. Empty values are left out (Klaviyo would store "" as a value).
        """
        fn = _ProfileFn(self.fresh("_profile"), set())
        self._where_fields = {"profile"}
        inner = replace(sc, where_param=True, hoisted={})
        fb = _Fn(f"def {fn.name}({', '.join(['r', 'w', *params])}):")
        base = _frequent_base(template)
        if base is not None:
            base_type = self.infer(base, inner)
            if base_type.kind == "record" and not base_type.nullable:
                # Most profile fields are customer.something: index the record once.
                fb.emit(f"c = {self.gen(base, inner, 'profile').text}")
                inner = replace(inner, aliases={unparse(base): ("c", base_type)})
        fb.emit("p = {}")
        fb.emit("err = None")
        identifiers = [e for e in template.entries if e.key in IDENTIFIERS]
        others = [e for e in template.entries if e.key not in IDENTIFIERS]
        for entry in identifiers:
            fld = f"profile.{entry.key}"
            code = self.value(entry.value, inner, fb, fld)
            raises = isinstance(entry.value, TExpr) and entry.value.typed.raises
            if raises:
                fb.emit("try:")
                with fb.indented():
                    fb.emit(f"v = {code}")
                fb.emit("except _TE as e:")
                with fb.indented():
                    fb.emit("if err is None:")
                    fb.emit("    err = e")
                fb.emit("else:")
                with fb.indented():
                    fb.emit("if v:")
                    fb.emit(f"    p[{entry.key!r}] = v")
            else:
                fb.emit(f"v = {code}")
                fb.emit("if v:")
                fb.emit(f"    p[{entry.key!r}] = v")
        fb.emit("if not p:")
        with fb.indented():
            fb.emit("if err is not None:")
            fb.emit("    raise err")
            fb.emit("raise _no_id(w['profile'])")
        if others:
            self.object_statements(
                TObject(tuple(others), template.line, True), inner, fb, "profile", target="p"
            )
        fb.emit("return p, _identity(p)")
        fn.where_fields = set(self._where_fields)
        self.chunks.append(fb.source())
        return fn

    # -- rules -------------------------------------------------------------------------------

    def compile_record(self, record: str, rules: list[Rule]) -> str:
        """Source of the function translating ``record``; returns its name."""
        name = self.fresh("_record")
        fb = _Fn(f"def {name}(r, marks=None):")
        fb.emit("out = []")
        root = Scope(record_type(record))
        shared = self.shared_values(rules, root)
        profiles: dict[str, tuple[_ProfileFn, str]] = {}
        locals_ = [local for _, local, _ in shared.values()]
        for rule in rules:
            template = _profile_of(rule)
            if template is not None and not _profile_deps(template, rule):
                key = _canon(template)
                if key not in profiles:
                    sc = _Scope(root, rule)
                    profiles[key] = (self.profile_function(template, sc, []), self.fresh("_P"))
                    locals_.append(profiles[key][1])
        if locals_:
            fb.emit(" = ".join(locals_) + " = _U")
        for rule in rules:
            self.compile_rule(rule, fb, root, shared, profiles)
            fb.emit("if marks is not None:")
            fb.emit("    marks.append(len(out))")
        fb.emit("return out")
        self.chunks.append(fb.source())
        return name

    def shared_values(
        self, rules: list[Rule], root: Scope
    ) -> dict[str, tuple[Expr, str, AType | None]]:
        """Record-scope values worth computing once per message.

        Sub-expressions that cannot fail and are needed more than once (in several rules, or
        on every item of a fan-out), and plain fields that need converting for JSON
        (``occurred_at`` to ISO 8601) under the same condition. Key: the canonical text.
        """
        counts: dict[str, int] = {}
        found: dict[str, tuple[Expr, AType | None]] = {}
        for rule in rules:
            variables = {v for v, _ in rule.for_each}
            for typed, in_loop, scope_vars in _rule_expressions(rule):
                weight = 2 if in_loop or variables else 1
                hidden = scope_vars | variables
                top = typed.expr
                if (
                    not _nontrivial(top)
                    and typed.type.kind in _CONVERTED
                    and not _names(top) & hidden
                ):
                    key = _JSON + unparse(top)
                    found[key] = (top, typed.type)
                    counts[key] = counts.get(key, 0) + weight
                for node in walk(top):
                    if not _nontrivial(node) or _names(node) & hidden:
                        continue
                    try:
                        inferred = self.types.infer(node, root)
                    except Exception:
                        continue
                    if inferred.raises:
                        continue
                    key = unparse(node)
                    found[key] = (node, None)
                    counts[key] = counts.get(key, 0) + weight
        return {
            key: (found[key][0], self.fresh("_h"), found[key][1])
            for key in sorted((k for k, c in counts.items() if c >= 2), key=len)
        }

    def compile_rule(
        self,
        rule: Rule,
        fb: _Fn,
        root: Scope,
        shared: dict[str, tuple[Expr, str, AType | None]],
        profiles: dict[str, tuple[_ProfileFn, str]],
    ) -> None:
        fb.emit(f"# rule {rule.name!r} at {rule.location!r}")
        sc = _Scope(root, rule)
        depth = fb.depth
        variables = {v for v, _ in rule.for_each}
        if rule.when is not None and not (rule.when.deps & variables):
            fb.emit(f"if {self.gen(rule.when.expr, sc, 'when').text}:")
            fb.depth += 1
        used = _rule_text(rule)
        hoisted: dict[str, str] = {}
        for key, (node, local, converted) in shared.items():
            if key in used:
                code = self.gen(node, replace(sc, hoisted=dict(hoisted)), "shared").text
                if converted is not None:
                    code = self.json_value(code, converted)
                fb.emit(f"if {local} is _U:")
                fb.emit(f"    {local} = {code}")
                hoisted[key] = local
        sc = replace(sc, hoisted=hoisted)
        template = _profile_of(rule)
        if rule.for_each:
            iterables = []
            names = []
            for variable, typed in rule.for_each:
                code = self.gen(typed.expr, sc, f"for_each.{variable}").text
                iterables.append(f"({code} or ())" if typed.type.nullable else code)
                pyname = f"v_{variable}"
                names.append(pyname)
                element = typed.type.item if typed.type.item is not None else ANY
                sc = sc.bind(variable, pyname, element)
            if len(names) == 1:
                fb.emit(f"for {names[0]} in {iterables[0]}:")
            else:
                fb.emit(
                    f"for {', '.join(names)} in _zip(({', '.join(iterables)},),"
                    f" {self.where(sc, 'for_each')}):"
                )
            fb.depth += 1
            if rule.when is not None and rule.when.deps & variables:
                fb.emit(f"if not {self.gen(rule.when.expr, sc, 'when').text}:")
                fb.emit("    continue")
        # The profile is computed where the first output needs it (inside the fan-out), so a
        # rule that emits nothing for a record cannot fail it over a missing identifier.
        profile_local: str | None = None
        if template is not None and not _profile_deps(template, rule):
            fn, local = profiles[_canon(template)]
            wheres = {f: Where(rule.record, rule.name, f) for f in fn.where_fields}
            fb.emit(f"if {local} is _U:")
            fb.emit(f"    {local} = {fn.name}(r, {self.const(wheres)})")
            profile_local = local
        elif template is not None:
            fn = self.profile_function(template, sc, list(sc.names.values()))
            wheres = {f: Where(rule.record, rule.name, f) for f in fn.where_fields}
            profile_local = self.fresh("_P")
            args = ", ".join(["r", self.const(wheres), *sc.names.values()])
            fb.emit(f"{profile_local} = {fn.name}({args})")
        output = rule.output
        if isinstance(output, EventOutput):
            assert profile_local is not None
            self.event(output, sc, fb, profile_local)
        elif isinstance(output, ProfileOutput):
            assert profile_local is not None
            fb.emit(
                f"out.append(_Op(_PROFILES, {{'attributes': {profile_local}[0]}},"
                f" ('profile', {profile_local}[1])))"
            )
        elif isinstance(output, SubscriptionOutput):
            self.subscription(output, sc, fb)
        elif isinstance(output, CatalogItemOutput):
            self.catalog_item(output, sc, fb)
        else:
            assert isinstance(output, CatalogDeleteOutput)
            xid = self.external_id(output.external_id, sc, "catalog_delete.external_id")
            fb.emit(f"out.append(_catalog_delete({xid}))")
        fb.depth = depth

    def event(self, output: EventOutput, sc: _Scope, fb: _Fn, profile: str) -> None:
        properties = self.value(output.properties, sc, fb, "event.properties")
        unique = output.unique_id
        code = self.gen(unique.expr, sc, "event.unique_id").text
        if unique.type.kind in ("string", "enum") and not unique.type.nullable:
            pass
        elif unique.type.kind == "int" and not unique.type.nullable:
            code = f"str({code})"
        else:
            code = f"_req_id({code}, {self.where(sc, 'event.unique_id')})"
        fb.emit(f"_u = {code}")
        fixed: list[str] = [f"'properties': {properties}"]
        optional: list[tuple[str, str]] = []
        for key, typed in (
            ("time", output.time),
            ("value", output.value),
            ("value_currency", output.value_currency),
        ):
            if typed is None:
                continue
            code = self.leaf(typed, sc, f"event.{key}")
            if key == "value" and typed.type.kind == "any":
                code = f"_fn_number({code}, {self.where(sc, 'event.value')})"
            if typed.type.nullable:
                optional.append((key, code))
            else:
                fixed.append(f"{key!r}: {code}")
        fixed.append("'unique_id': _u")
        metric = {"data": {"type": "metric", "attributes": {"name": output.metric}}}
        fixed.append(f"'metric': {self.const(metric)}")
        fb.emit(f"_ev = {{{', '.join(fixed)}}}")
        for key, code in optional:
            temporary = self.fresh("_t")
            fb.emit(f"{temporary} = {code}")
            fb.emit(f"if {temporary} is not None:")
            fb.emit(f"    _ev[{key!r}] = {temporary}")
        backfill = output.backfill
        if self.force_backfill or (isinstance(backfill, TConst) and backfill.value is True):
            fb.emit("_ev['backfill'] = True")
        elif isinstance(backfill, Typed):
            fb.emit(f"if {self.gen(backfill.expr, sc, 'event.backfill').text}:")
            fb.emit("    _ev['backfill'] = True")
        key = f"({profile}[1], {output.metric!r}, _u)"
        fb.emit(f"out.append(_Op(_EVENTS, _EP({profile}[0], _ev), {key}))")

    def external_id(self, typed: Typed, sc: _Scope, fld: str) -> str:
        code = self.gen(typed.expr, sc, fld).text
        if typed.type.kind == "string" and not typed.type.nullable:
            return code
        return f"_req_id({code}, {self.where(sc, fld)})"

    def subscription(self, output: SubscriptionOutput, sc: _Scope, fb: _Fn) -> None:
        action = self.gen(output.action.expr, sc, "subscription.action").text
        channel = self.gen(output.channel.expr, sc, "subscription.channel").text
        list_id = self.gen(output.list_id.expr, sc, "subscription.list_id").text
        email = "None"
        if output.email is not None:
            email = self.gen(output.email.expr, sc, "subscription.email").text
        fb.emit("_perr = None")
        if output.phone_number is None:
            fb.emit("_phone = None")
        else:
            phone = self.gen(output.phone_number.expr, sc, "subscription.phone_number").text
            fb.emit("try:")
            fb.emit(f"    _phone = {phone}")
            fb.emit("except _TE as e:")
            fb.emit("    _phone, _perr = None, e")
        consented = "None"
        if output.consented_at is not None:
            typed = output.consented_at
            consented = self.json_value(
                self.gen(typed.expr, sc, "subscription.consented_at").text, typed.type
            )
        wheres = {
            key: Where(sc.rule.record, sc.rule.name, f"subscription.{key}")
            for key in ("action", "channel", "list_id", "email", "phone_number")
        }
        fb.emit(
            f"out.append(_subscription({action}, {channel}, {list_id}, {email}, _phone, _perr,"
            f" {consented}, {self.const(wheres)}, {output.unsubscribe_scope == 'list'!r}))"
        )

    def catalog_item(self, output: CatalogItemOutput, sc: _Scope, fb: _Fn) -> None:
        xid = self.external_id(output.external_id, sc, "catalog_item.external_id")
        attributes = self.value(output.attributes, sc, fb, "catalog_item")
        categories = "None"
        if output.categories is not None:
            categories = self.gen(output.categories.expr, sc, "catalog_item.categories").text
        wheres = {
            key: Where(sc.rule.record, sc.rule.name, f"catalog_item.{key}")
            for key in ("title", "description", "url")
        }
        fb.emit(
            f"out.extend(_catalog_item({output.mode!r}, {xid}, {attributes}, {categories},"
            f" {self.const(wheres)}))"
        )

    # -- module --------------------------------------------------------------------------

    def build(self, by_record: Mapping[str, list[Rule]], label: str) -> tuple[dict[str, Any], str]:
        """Compile every record; the record -> function map and the whole source."""
        names = {record: self.compile_record(record, rules) for record, rules in by_record.items()}
        source = "\n\n\n".join(self.chunks) + "\n"
        filename = f"<translation rules {label}>"
        # Registered with linecache so a traceback through generated code shows its lines.
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        code = compile(source, filename, "exec")
        exec(code, self.namespace)
        return {record: self.namespace[name] for record, name in names.items()}, source


# --- analysis helpers --------------------------------------------------------------------------


def _needs_statements(template: Tmpl) -> bool:
    if isinstance(template, TObject):
        return template.drop_empty or any(
            entry.optional or _needs_statements(entry.value) for entry in template.entries
        )
    return False


def _present(name: str, template: Tmpl, drop_empty: bool) -> str:
    if not drop_empty:
        return f"{name} is not None"
    if isinstance(template, TObject) or (
        isinstance(template, TExpr)
        and (template.typed.type.is_stringish or template.typed.type.kind in ("map", "record"))
    ):
        return name  # truthy: not null, not "", not {}
    return f"{name} is not None and {name} != '' and {name} != {{}}"


def _is_name(code: str) -> bool:
    return code.isidentifier()


def _paths_of(template: Tmpl) -> Iterator[Path]:
    for typed, _, _ in _template_typed(template, False, frozenset()):
        for node in walk(typed.expr):
            if isinstance(node, Path):
                yield node


def _frequent_base(template: TObject) -> Expr | None:
    """The name most paths of ``template`` start from, if three or more do."""
    counts: dict[str, int] = {}
    for path in _paths_of(template):
        if isinstance(path.base, Name) and path.steps and path.steps[0].kind == "field":
            counts[path.base.name] = counts.get(path.base.name, 0) + 1
    if not counts:
        return None
    name, count = max(counts.items(), key=lambda item: item[1])
    return Name(name) if count >= 3 else None


def _common_prefix(entries: list[TEntry]) -> Path | None:
    """``customer.address`` when every entry is an optional ``customer.address.<field>``."""
    prefix: tuple[Expr, tuple[Step, ...]] | None = None
    for entry in entries:
        if not entry.optional or not isinstance(entry.value, TExpr):
            return None
        expr = entry.value.typed.expr
        if (
            not isinstance(expr, Path)
            or len(expr.steps) < 2
            or any(step.kind != "field" for step in expr.steps)
        ):
            return None
        mine = (expr.base, expr.steps[:-1])
        if prefix is None:
            prefix = mine
        elif prefix != mine:
            return None
    if prefix is None or len(entries) < 2:
        return None
    return Path(prefix[0], prefix[1])


def _profile_of(rule: Rule) -> TObject | None:
    output = rule.output
    if isinstance(output, EventOutput | ProfileOutput):
        return output.profile
    return None


def _template_typed(
    template: Tmpl, in_loop: bool, variables: frozenset[str]
) -> Iterator[tuple[Typed, bool, frozenset[str]]]:
    if isinstance(template, TExpr):
        yield template.typed, in_loop, variables
    elif isinstance(template, TObject):
        for entry in template.entries:
            yield from _template_typed(entry.value, in_loop, variables)
    elif isinstance(template, TFor):
        inner = variables | {v for v, _ in template.bindings}
        for _, typed in template.bindings:
            yield typed, in_loop, variables
        if template.where is not None:
            yield template.where, True, inner
        yield from _template_typed(template.emit, True, inner)


def _rule_expressions(rule: Rule) -> Iterator[tuple[Typed, bool, frozenset[str]]]:
    """Every expression of a rule, whether it runs per item, and the variables in scope."""
    none: frozenset[str] = frozenset()
    output = rule.output
    if isinstance(output, EventOutput):
        yield from _template_typed(output.properties, False, none)
        for typed in (output.unique_id, output.time, output.value, output.value_currency):
            if typed is not None:
                yield typed, False, none
    elif isinstance(output, SubscriptionOutput):
        for typed in (output.action, output.channel, output.list_id, output.consented_at):
            if typed is not None:
                yield typed, False, none
    elif isinstance(output, CatalogItemOutput):
        yield from _template_typed(output.attributes, False, none)


def _rule_text(rule: Rule) -> set[str]:
    out: set[str] = set()
    for typed, _, _ in _rule_expressions(rule):
        out |= {unparse(node) for node in walk(typed.expr)}
        out.add(_JSON + unparse(typed.expr))
    return out


def _nontrivial(node: Expr) -> bool:
    if isinstance(node, Call | Template | Coalesce):
        return True
    return isinstance(node, Path) and any(step.kind != "field" for step in node.steps)


def _names(node: Expr) -> set[str]:
    return {n.name for n in walk(node) if isinstance(n, Name)}


def _profile_deps(template: TObject, rule: Rule) -> bool:
    variables = {v for v, _ in rule.for_each}
    for typed, _, _ in _template_typed(template, False, frozenset()):
        if typed.deps & variables:
            return True
    return False


def _canon(template: Tmpl) -> str:
    """Structure of a template without line numbers: equal text means equal output."""
    if isinstance(template, TConst):
        return f"const:{template.value!r}"
    if isinstance(template, TExpr):
        return f"expr:{unparse(template.typed.expr)}"
    if isinstance(template, TObject):
        inner = ",".join(
            f"{e.key!r}{'?' if e.optional else ''}={_canon(e.value)}" for e in template.entries
        )
        return f"obj{'!' if template.drop_empty else ''}{{{inner}}}"
    bindings = ",".join(f"{v}={unparse(t.expr)}" for v, t in template.bindings)
    where = unparse(template.where.expr) if template.where is not None else ""
    return f"for({bindings};{where}){_canon(template.emit)}"
