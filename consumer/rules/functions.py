"""The functions rule expressions can call: their types at load time, their code at run time.

Each :class:`Function` knows how to type-check its arguments (so ``money(customer.email)`` is a
load-time problem), which Python helper runs it, whether it can fail on a message (then the
helper also receives a :class:`Where` naming the rule and field for the TranslationError) and,
for the hot ones, an inline form the compiler pastes into the generated code instead of a
call (``money(total)`` becomes ``float(r['total']['amount'])`` when ``total`` cannot be null).

Every function passes null through (``lower(null)`` is null) unless said otherwise, so an
optional field flows into an optional output key without ceremony.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import phonenumbers

from consumer.errors import TranslationError
from consumer.phones import NOT_VALID, to_e164
from consumer.rules.paths import (
    ANY,
    FLOAT,
    INT,
    NUMBER_KINDS,
    STRING,
    AType,
    array_of,
    unify,
)

__all__ = ["FUNCTIONS", "CheckError", "Function", "Inferred", "Where"]


class CheckError(ValueError):
    """A function cannot take these arguments; the message becomes a load-time problem."""


@dataclass(frozen=True, slots=True)
class Where:
    """The rule and output field a run-time failure belongs to (never the value itself)."""

    record: str
    rule: str
    field: str

    def error(self, message: str) -> TranslationError:
        """The TranslationError to raise for this place."""
        return TranslationError(message, rule=self.rule, field=self.field, record_name=self.record)


@dataclass(frozen=True, slots=True)
class Inferred:
    """A call's result type, and whether it can raise a TranslationError at run time."""

    type: AType
    raises: bool = False


@dataclass(frozen=True, slots=True)
class Context:
    """Load-time settings functions depend on."""

    default_phone_region: str


Infer = Callable[[Sequence[AType], Sequence[Any], Context], Inferred]
Inline = Callable[[Sequence[str], Sequence[AType]], str | None]


@dataclass(frozen=True, slots=True)
class Function:
    """One function of the expression language."""

    name: str
    signature: str
    doc: str
    min_args: int
    max_args: int
    infer: Infer
    runtime: Callable[..., Any]
    inline: Inline | None = None


# --- run-time helpers (also what the generated code calls) ---------------------------------


def rt_money(value: Any, where: Where) -> float | None:
    """A Money record (its ``amount``), a Decimal or a number, as a JSON number."""
    if value is None:
        return None
    if isinstance(value, dict):
        value = value.get("amount")
        if value is None:
            return None
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise where.error(f"expected an amount of money, got {type(value).__name__}")
    return float(value)


def rt_number(value: Any, where: Where) -> float | None:
    """A number from a number, a Decimal or numeric text; TranslationError otherwise."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise where.error("expected a number, got a boolean")
    if isinstance(value, int | float | Decimal):
        return float(value)
    if isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            raise where.error("the value is not a number") from None
        if not number.is_finite():
            raise where.error("the value is not a finite number")
        return float(number)
    raise where.error(f"expected a number, got {type(value).__name__}")


def rt_iso8601(value: Any, where: Where) -> str | None:
    """A timestamp (aware datetime, or date) as ISO 8601 text."""
    if value is None:
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise where.error(f"expected a timestamp, got {type(value).__name__}")


def rt_unix(value: Any, where: Where) -> int | None:
    """A timestamp as whole seconds since the Unix epoch."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return int(value.timestamp())
    raise where.error(f"expected a timestamp, got {type(value).__name__}")


def rt_e164(value: Any, region: Any, where: Where) -> str | None:
    """A phone number in E.164; TranslationError if it cannot be one (the number is not shown).

    Empty text is null, as no number at all is not a bad number.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise where.error("phone number is not text")
    normalised, problem = to_e164(value, region)
    if normalised is None:
        raise where.error(problem or NOT_VALID)
    return normalised


def rt_lower(value: Any) -> Any:
    """Lower case (null and non-text pass through)."""
    return value.lower() if isinstance(value, str) else value


def rt_upper(value: Any) -> Any:
    """Upper case (null and non-text pass through)."""
    return value.upper() if isinstance(value, str) else value


def rt_trim(value: Any) -> Any:
    """Leading and trailing white space removed (null passes through)."""
    return value.strip() if isinstance(value, str) else value


def rt_string(value: Any) -> str | None:
    """Text for ids and templates: decimals without trailing zeros, times in ISO 8601."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        text = format(value.normalize(), "f")
        return text
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def rt_join(values: Any, separator: Any = ", ") -> str | None:
    """The items as text joined by ``separator``; nulls skipped."""
    if values is None:
        return None
    return str(separator).join(rt_string(v) or "" for v in values if v is not None)


def rt_sum(values: Any) -> Any:
    """The sum of the numbers; nulls skipped."""
    if values is None:
        return None
    return sum((v for v in values if v is not None), 0)


def rt_unique(values: Any) -> list[Any] | None:
    """Distinct values in first-seen order."""
    return None if values is None else list(dict.fromkeys(values))


def rt_flatten(values: Any) -> list[Any] | None:
    """One level of nesting removed; null inner lists skipped."""
    if values is None:
        return None
    return [v for inner in values if inner is not None for v in inner]


def rt_compact(values: Any) -> list[Any] | None:
    """Nulls and empty strings dropped."""
    if values is None:
        return None
    return [v for v in values if v is not None and v != ""]


def rt_length(value: Any) -> int | None:
    """Number of items or characters; null passes through."""
    return None if value is None else len(value)


def rt_first(values: Any) -> Any:
    """The first item, or null for an empty list."""
    return values[0] if values else None


def rt_number_repeats(values: Any) -> list[str] | None:
    """Repeated keys numbered: ``[a, b, a]`` -> ``[a, b, a_2]`` (as line identities are)."""
    if values is None:
        return None
    seen: dict[str, int] = {}
    out: list[str] = []
    for value in values:
        key = rt_string(value) or ""
        count = seen.get(key, 0)
        seen[key] = count + 1
        out.append(key if count == 0 else f"{key}_{count + 1}")
    return out


# --- type rules ----------------------------------------------------------------------------


def _need(condition: bool, message: str) -> None:
    if not condition:
        raise CheckError(message)


def _nullable(types: Iterable[AType]) -> bool:
    return any(t.nullable for t in types)


def _string_result(args: Sequence[AType]) -> AType:
    return STRING.with_null(args[0].nullable)


def _infer_money(args: Sequence[AType], _: Sequence[Any], __: Context) -> Inferred:
    arg = args[0]
    if arg.kind == "record":
        from_catalog = arg.name  # a record with a numeric `amount` (shop.events.Money)
        _need(
            bool(from_catalog) and arg.root != "",
            f"money() takes a Money record or a number, not {arg.describe()}",
        )
        return Inferred(FLOAT.with_null(arg.nullable), raises=False)
    _need(
        arg.kind in NUMBER_KINDS or arg.kind in ("any", "null"),
        f"money() takes a Money record or a number, not {arg.describe()}",
    )
    return Inferred(FLOAT.with_null(arg.nullable), raises=arg.kind == "any")


def _inline_money(code: Sequence[str], args: Sequence[AType]) -> str | None:
    arg = args[0]
    if arg.nullable:
        return None
    if arg.kind == "record":
        return f"float({code[0]}['amount'])"
    if arg.kind in NUMBER_KINDS:
        return f"float({code[0]})"
    return None


def _infer_number(args: Sequence[AType], _: Sequence[Any], __: Context) -> Inferred:
    arg = args[0]
    _need(
        arg.kind in NUMBER_KINDS or arg.kind in ("string", "any", "null"),
        f"number() takes a number or numeric text, not {arg.describe()}",
    )
    return Inferred(FLOAT.with_null(arg.nullable), raises=arg.kind in ("string", "any"))


def _inline_number(code: Sequence[str], args: Sequence[AType]) -> str | None:
    return f"float({code[0]})" if args[0].kind in NUMBER_KINDS and not args[0].nullable else None


def _infer_timestamp_fn(name: str, result: AType, allow_date: bool) -> Infer:
    def infer(args: Sequence[AType], _: Sequence[Any], __: Context) -> Inferred:
        arg = args[0]
        allowed = {"timestamp", "any", "null"} | ({"date"} if allow_date else set())
        _need(arg.kind in allowed, f"{name}() takes a timestamp, not {arg.describe()}")
        return Inferred(result.with_null(arg.nullable), raises=arg.kind == "any")

    return infer


def _inline_iso(code: Sequence[str], args: Sequence[AType]) -> str | None:
    if args[0].kind in ("timestamp", "date") and not args[0].nullable:
        return f"{code[0]}.isoformat()"
    return None


def _inline_unix(code: Sequence[str], args: Sequence[AType]) -> str | None:
    if args[0].kind == "timestamp" and not args[0].nullable:
        return f"int({code[0]}.timestamp())"
    return None


def _infer_e164(args: Sequence[AType], literals: Sequence[Any], ctx: Context) -> Inferred:
    _need(
        args[0].kind in ("string", "any", "null"),
        f"e164() takes text, not {args[0].describe()}",
    )
    if len(args) > 1:
        _need(
            args[1].kind in ("string", "any", "null"),
            f"e164()'s region is text, not {args[1].describe()}",
        )
        region = literals[1]
        if isinstance(region, str) and region not in phonenumbers.SUPPORTED_REGIONS:
            raise CheckError(f"e164(): {region!r} is not a region code phonenumbers knows")
    # Null in, null out; empty text is treated as null (no number is not a bad number).
    return Inferred(STRING.with_null(True), raises=True)


def _infer_text(name: str) -> Infer:
    def infer(args: Sequence[AType], _: Sequence[Any], __: Context) -> Inferred:
        arg = args[0]
        _need(
            arg.is_stringish or arg.kind in ("any", "null"),
            f"{name}() takes text, not {arg.describe()}",
        )
        return Inferred(_string_result(args))

    return infer


def _inline_method(method: str) -> Inline:
    def inline(code: Sequence[str], args: Sequence[AType]) -> str | None:
        if args[0].is_stringish and not args[0].nullable:
            return f"{code[0]}.{method}()"
        return None

    return inline


def _list_arg(name: str, arg: AType) -> AType:
    _need(arg.kind in ("array", "any", "null"), f"{name}() takes a list, not {arg.describe()}")
    return arg.item if arg.item is not None else ANY


def _infer_join(args: Sequence[AType], _: Sequence[Any], __: Context) -> Inferred:
    item = _list_arg("join", args[0])
    _need(
        item.kind not in ("record", "array", "map"),
        f"join() joins text or numbers, not {item.describe()}",
    )
    if len(args) > 1:
        _need(args[1].kind in ("string", "any"), "join()'s separator must be text")
    return Inferred(STRING.with_null(args[0].nullable))


def _inline_join(code: Sequence[str], args: Sequence[AType]) -> str | None:
    item = args[0].item
    if args[0].nullable or item is None or item.kind != "string" or item.nullable:
        return None
    separator = code[1] if len(code) > 1 else "', '"
    return f"{separator}.join({code[0]})"


def _infer_sum(args: Sequence[AType], _: Sequence[Any], __: Context) -> Inferred:
    item = _list_arg("sum", args[0])
    _need(
        item.kind in NUMBER_KINDS or item.kind in ("any", "null"),
        f"sum() adds numbers, not {item.describe()}",
    )
    kind = item.kind if item.kind in NUMBER_KINDS else "float"
    return Inferred(AType(kind, nullable=args[0].nullable), raises=False)


def _infer_unique(args: Sequence[AType], _: Sequence[Any], __: Context) -> Inferred:
    item = _list_arg("unique", args[0])
    _need(
        item.kind not in ("record", "array", "map"),
        f"unique() compares text, numbers or booleans, not {item.describe()}",
    )
    return Inferred(array_of(item, args[0].nullable))


def _inline_unique(code: Sequence[str], args: Sequence[AType]) -> str | None:
    return None if args[0].nullable else f"list(dict.fromkeys({code[0]}))"


def _infer_flatten(args: Sequence[AType], _: Sequence[Any], __: Context) -> Inferred:
    item = _list_arg("flatten", args[0])
    _need(
        item.kind in ("array", "any"),
        f"flatten() takes a list of lists, not a list of {item.describe()}",
    )
    inner = item.item if item.item is not None else ANY
    return Inferred(array_of(inner, args[0].nullable))


def _inline_flatten(code: Sequence[str], args: Sequence[AType]) -> str | None:
    item = args[0].item
    if args[0].nullable or item is None or item.nullable:
        return None
    return f"[_v for _l in {code[0]} for _v in _l]"


def _infer_compact(args: Sequence[AType], _: Sequence[Any], __: Context) -> Inferred:
    item = _list_arg("compact", args[0])
    return Inferred(array_of(item.with_null(False), args[0].nullable))


def _inline_compact(code: Sequence[str], args: Sequence[AType]) -> str | None:
    item = args[0].item
    if args[0].nullable or item is None:
        return None
    if item.is_stringish:
        return f"[_v for _v in {code[0]} if _v]"
    return f"[_v for _v in {code[0]} if _v is not None and _v != '']"


def _infer_length(args: Sequence[AType], _: Sequence[Any], __: Context) -> Inferred:
    arg = args[0]
    _need(
        arg.kind in ("array", "map", "string", "any", "null"),
        f"length() takes a list, map or text, not {arg.describe()}",
    )
    return Inferred(INT.with_null(arg.nullable))


def _infer_first(args: Sequence[AType], _: Sequence[Any], __: Context) -> Inferred:
    return Inferred(_list_arg("first", args[0]).with_null(True))


def _infer_number_repeats(args: Sequence[AType], _: Sequence[Any], __: Context) -> Inferred:
    item = _list_arg("number_repeats", args[0])
    _need(
        item.kind not in ("record", "array", "map"),
        f"number_repeats() takes a list of keys, not a list of {item.describe()}",
    )
    return Inferred(array_of(STRING, args[0].nullable))


def _infer_string(args: Sequence[AType], _: Sequence[Any], __: Context) -> Inferred:
    arg = args[0]
    _need(
        arg.kind not in ("record", "array", "map", "bytes"),
        f"string() converts a single value, not {arg.describe()}",
    )
    return Inferred(_string_result(args))


def _infer_if(args: Sequence[AType], _: Sequence[Any], __: Context) -> Inferred:
    result = unify([args[1], args[2]])
    if result is None:
        raise CheckError(
            f"if() branches have different types: {args[1].describe()} and {args[2].describe()}"
        )
    return Inferred(result)


def _infer_coalesce(args: Sequence[AType], _: Sequence[Any], __: Context) -> Inferred:
    result = unify(list(args))
    if result is None:
        raise CheckError(
            "coalesce() operands have different types: " + ", ".join(t.describe() for t in args)
        )
    return Inferred(result.with_null(args[-1].nullable))


def _not_called(*_: Any) -> Any:  # pragma: no cover - compiled to Python syntax instead
    raise AssertionError("compiled inline")


FUNCTIONS: dict[str, Function] = {
    f.name: f
    for f in (
        Function(
            "money",
            "money(amount) -> number",
            "A Money record (its amount) or a decimal as a JSON number.",
            1,
            1,
            _infer_money,
            rt_money,
            _inline_money,
        ),
        Function(
            "number",
            "number(value) -> number",
            "A number from a number, decimal or numeric text; other text fails the message.",
            1,
            1,
            _infer_number,
            rt_number,
            _inline_number,
        ),
        Function(
            "iso8601",
            "iso8601(timestamp) -> text",
            "A timestamp (or date) as ISO 8601, e.g. 2013-12-17T17:47:03+00:00.",
            1,
            1,
            _infer_timestamp_fn("iso8601", STRING, True),
            rt_iso8601,
            _inline_iso,
        ),
        Function(
            "unix",
            "unix(timestamp) -> int",
            "Whole seconds since 1970-01-01T00:00:00Z.",
            1,
            1,
            _infer_timestamp_fn("unix", INT, False),
            rt_unix,
            _inline_unix,
        ),
        Function(
            "e164",
            "e164(phone[, region]) -> text",
            "A phone number in E.164 (+16172531000); a number that cannot be one fails the"
            " message. The region (ISO 3166 alpha-2) for numbers written without a country"
            " code defaults to the rules' default_phone_region setting.",
            1,
            2,
            _infer_e164,
            rt_e164,
        ),
        Function(
            "lower",
            "lower(text) -> text",
            "Lower case.",
            1,
            1,
            _infer_text("lower"),
            rt_lower,
            _inline_method("lower"),
        ),
        Function(
            "upper",
            "upper(text) -> text",
            "Upper case.",
            1,
            1,
            _infer_text("upper"),
            rt_upper,
            _inline_method("upper"),
        ),
        Function(
            "trim",
            "trim(text) -> text",
            "Leading and trailing white space removed.",
            1,
            1,
            _infer_text("trim"),
            rt_trim,
            _inline_method("strip"),
        ),
        Function(
            "string",
            "string(value) -> text",
            "Text of a single value: decimals without trailing zeros, timestamps in ISO 8601,"
            " booleans as true/false.",
            1,
            1,
            _infer_string,
            rt_string,
        ),
        Function(
            "join",
            "join(list[, separator]) -> text",
            "The items as text joined by the separator (default ', '); nulls skipped.",
            1,
            2,
            _infer_join,
            rt_join,
            _inline_join,
        ),
        Function(
            "sum",
            "sum(list) -> number",
            "The sum of the numbers; nulls skipped.",
            1,
            1,
            _infer_sum,
            rt_sum,
        ),
        Function(
            "unique",
            "unique(list) -> list",
            "Distinct items in first-seen order.",
            1,
            1,
            _infer_unique,
            rt_unique,
            _inline_unique,
        ),
        Function(
            "flatten",
            "flatten(list of lists) -> list",
            "One level of nesting removed.",
            1,
            1,
            _infer_flatten,
            rt_flatten,
            _inline_flatten,
        ),
        Function(
            "compact",
            "compact(list) -> list",
            "Nulls and empty strings removed.",
            1,
            1,
            _infer_compact,
            rt_compact,
            _inline_compact,
        ),
        Function(
            "length",
            "length(list | map | text) -> int",
            "Number of items or characters.",
            1,
            1,
            _infer_length,
            rt_length,
        ),
        Function(
            "first",
            "first(list) -> item",
            "The first item, or null for an empty list.",
            1,
            1,
            _infer_first,
            rt_first,
        ),
        Function(
            "number_repeats",
            "number_repeats(list) -> list of text",
            "Keys with repeats numbered: [a, b, a] -> [a, b, a_2] (the line identity rule).",
            1,
            1,
            _infer_number_repeats,
            rt_number_repeats,
        ),
        Function(
            "coalesce",
            "coalesce(a, b, ...) -> value",
            "The first argument that is not null (same as a ?? b ?? ...).",
            1,
            16,
            _infer_coalesce,
            _not_called,
        ),
        Function(
            "if",
            "if(condition, then, else) -> value",
            "then when the condition is truthy, else otherwise; only the chosen branch runs.",
            3,
            3,
            _infer_if,
            _not_called,
        ),
    )
}

#: Function name -> helper name in the generated code's namespace.
HELPER_NAMES: dict[str, str] = {name: f"_fn_{name}" for name in FUNCTIONS}

#: Functions whose helper takes a trailing Where (they may fail a message).
NEEDS_WHERE = frozenset({"money", "number", "iso8601", "unix", "e164"})
