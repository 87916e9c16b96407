"""The rule expression language: tokens, grammar and syntax tree.

A rule value written as a YAML string is an expression. The language is deliberately small:
just enough for field paths, projections, coalescing, conditions, templates and function
calls, so that every expression can be type-checked against the Avro schema and compiled to
straight-line Python (see :mod:`consumer.rules.compiler`)::

    customer.email                      a field path (null-safe through nullable records)
    line_items[].sku                    projection: the list of every line's sku
    line_items[].(line_id or sku)       projection of an expression over each element
    refund_total ?? total               coalescing: the first that is not null
    discount_code or 'none'             Python-like `or`/`and`: the first truthy operand
    channel == 'SMS' and not published  comparisons (== != < <= > >= in, not in)
    f'{cart_id}_{unix(occurred_at)}'    a template; {expression} placeholders
    unique(flatten(line_items[].categories))   functions (consumer.rules.functions)
    'text', 42, 9.99, true, false, null, ['a', 'b']   literals

Precedence, loosest first: ``or``, ``and``, ``not``, comparisons, ``??``, then paths and calls.
Names resolve to fan-out variables first (``for_each`` / ``$for``), then to fields of the record;
inside ``[].( )`` they resolve to fields of the element.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BoolOp",
    "Call",
    "Compare",
    "Expr",
    "ExprSyntaxError",
    "ListLit",
    "Literal",
    "Name",
    "Not",
    "Path",
    "Template",
    "parse",
]


class ExprSyntaxError(ValueError):
    """An expression does not parse; ``column`` is 1-based within the expression."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(f"{message} (column {column})")
        self.column = column


# --- syntax tree ---------------------------------------------------------------------------
#
# Nodes are frozen and compare by value, so identical sub-expressions in different rules are
# equal: the compiler uses that to compute a shared value once per record.


class Expr:
    """Base class of expression nodes."""

    __slots__ = ()

    def children(self) -> tuple[Expr, ...]:
        """Direct sub-expressions (for walks)."""
        return ()


@dataclass(frozen=True, slots=True)
class Literal(Expr):
    """A constant: string, number, boolean or null."""

    value: str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class ListLit(Expr):
    """``[a, b, ...]``."""

    items: tuple[Expr, ...]

    def children(self) -> tuple[Expr, ...]:
        return self.items


@dataclass(frozen=True, slots=True)
class Name(Expr):
    """A bare name: a fan-out variable, else a field of the record (or of the element)."""

    name: str


@dataclass(frozen=True, slots=True)
class Step:
    """One path step: ``.field``, ``[]`` (project) or ``[].(expr)`` (project an expression)."""

    kind: str  # "field" | "project" | "each"
    name: str = ""
    expr: Expr | None = None


@dataclass(frozen=True, slots=True)
class Path(Expr):
    """``base`` followed by field and projection steps."""

    base: Expr
    steps: tuple[Step, ...]

    def children(self) -> tuple[Expr, ...]:
        # An `each` step's expression is evaluated in the element's scope, not ours: walks
        # that track scopes handle it explicitly.
        return (self.base,)


@dataclass(frozen=True, slots=True)
class Call(Expr):
    """``name(arg, ...)``."""

    name: str
    args: tuple[Expr, ...]

    def children(self) -> tuple[Expr, ...]:
        return self.args


@dataclass(frozen=True, slots=True)
class Template(Expr):
    """``f'...{expr}...'``: literal text and expressions, joined as strings."""

    parts: tuple[str | Expr, ...]

    def children(self) -> tuple[Expr, ...]:
        return tuple(part for part in self.parts if isinstance(part, Expr))


@dataclass(frozen=True, slots=True)
class Coalesce(Expr):
    """``a ?? b ?? c``: the first operand that is not null."""

    items: tuple[Expr, ...]

    def children(self) -> tuple[Expr, ...]:
        return self.items


@dataclass(frozen=True, slots=True)
class BoolOp(Expr):
    """``a or b`` / ``a and b`` with Python semantics (the deciding operand is the value)."""

    op: str  # "or" | "and"
    items: tuple[Expr, ...]

    def children(self) -> tuple[Expr, ...]:
        return self.items


@dataclass(frozen=True, slots=True)
class Not(Expr):
    """``not a``."""

    operand: Expr

    def children(self) -> tuple[Expr, ...]:
        return (self.operand,)


@dataclass(frozen=True, slots=True)
class Compare(Expr):
    """``left op right`` with op one of == != < <= > >= in, not in."""

    op: str
    left: Expr
    right: Expr

    def children(self) -> tuple[Expr, ...]:
        return (self.left, self.right)


def unparse(node: Expr) -> str:
    """Canonical text of ``node`` (used in explanations and as a sharing key)."""
    if isinstance(node, Literal):
        value = node.value
        if value is None:
            return "null"
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return _quote(value)
        return repr(value)
    if isinstance(node, ListLit):
        return "[" + ", ".join(unparse(item) for item in node.items) + "]"
    if isinstance(node, Name):
        return node.name
    if isinstance(node, Path):
        text = unparse(node.base)
        if not isinstance(node.base, Name | Path | Call):
            text = f"({text})"
        for step in node.steps:
            if step.kind == "field":
                text += f".{step.name}"
            elif step.kind == "project":
                text += "[]"
            else:
                assert step.expr is not None
                text += f"[].({unparse(step.expr)})"
        return text
    if isinstance(node, Call):
        return f"{node.name}({', '.join(unparse(arg) for arg in node.args)})"
    if isinstance(node, Template):
        body = "".join(
            part.replace("{", "{{").replace("}", "}}")
            if isinstance(part, str)
            else "{" + unparse(part) + "}"
            for part in node.parts
        )
        return "f" + _quote(body)
    if isinstance(node, Coalesce):
        return " ?? ".join(_wrap(item, 4) for item in node.items)
    if isinstance(node, BoolOp):
        level = 1 if node.op == "or" else 2
        return f" {node.op} ".join(_wrap(item, level + 1) for item in node.items)
    if isinstance(node, Not):
        return f"not {_wrap(node.operand, 3)}"
    if isinstance(node, Compare):
        return f"{_wrap(node.left, 4)} {node.op} {_wrap(node.right, 4)}"
    raise TypeError(f"not an expression node: {node!r}")


def _precedence(node: Expr) -> int:
    if isinstance(node, BoolOp):
        return 1 if node.op == "or" else 2
    if isinstance(node, Not):
        return 3
    if isinstance(node, Compare):
        return 4
    if isinstance(node, Coalesce):
        return 5
    return 6


def _wrap(node: Expr, minimum: int) -> str:
    text = unparse(node)
    return f"({text})" if _precedence(node) < minimum else text


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
    return f"'{escaped.replace(chr(9), chr(92) + 't')}'"


# --- tokens --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Token:
    """One lexical token and its 1-based column."""

    kind: str  # name, number, string, fstring, op, end
    text: str
    value: Any
    column: int


_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
  | (?P<fstring>f(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"))
  | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>\?\?|==|!=|<=|>=|[<>.,()\[\]])
    """,
    re.VERBOSE,
)
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t"}
KEYWORDS = frozenset({"and", "or", "not", "in", "true", "false", "null"})


def _unescape(body: str, column: int) -> str:
    out: list[str] = []
    index = 0
    while index < len(body):
        char = body[index]
        if char == "\\":
            if index + 1 >= len(body) or body[index + 1] not in _ESCAPES:
                raise ExprSyntaxError("unknown escape in string", column + index)
            out.append(_ESCAPES[body[index + 1]])
            index += 2
        else:
            out.append(char)
            index += 1
    return "".join(out)


def _tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise ExprSyntaxError(f"unexpected character {text[position]!r}", position + 1)
        kind = match.lastgroup or ""
        raw = match.group()
        column = position + 1
        position = match.end()
        if kind == "space":
            continue
        value: Any = raw
        if kind == "number":
            if (tokens and tokens[-1].kind in ("name", "number", "string")) or (
                tokens and tokens[-1].text in (")", "]")
            ):
                # `a -1` is a subtraction we do not have, not `a` followed by -1.
                raise ExprSyntaxError("unexpected number", column)
            value = float(raw) if any(c in raw for c in ".eE") else int(raw)
        elif kind == "string":
            value = _unescape(raw[1:-1], column + 1)
        elif kind == "fstring":
            value = raw[2:-1]
        tokens.append(_Token(kind, raw, value, column))
    tokens.append(_Token("end", "", None, len(text) + 1))
    return tokens


# --- parser --------------------------------------------------------------------------------


class _Parser:
    """Recursive descent over the token list, one method per precedence level."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.index = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def accept(self, text: str) -> bool:
        token = self.token
        if token.kind in ("op", "name") and token.text == text:
            self.index += 1
            return True
        return False

    def expect(self, text: str) -> None:
        if not self.accept(text):
            raise ExprSyntaxError(f"expected {text!r}{self._found()}", self.token.column)

    def _found(self) -> str:
        token = self.token
        return " but the expression ended" if token.kind == "end" else f", found {token.text!r}"

    def parse(self) -> Expr:
        if self.token.kind == "end":
            raise ExprSyntaxError("empty expression", 1)
        node = self.or_expr()
        if self.token.kind != "end":
            raise ExprSyntaxError(f"unexpected {self.token.text!r}", self.token.column)
        return node

    def or_expr(self) -> Expr:
        items = [self.and_expr()]
        while self.accept("or"):
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else BoolOp("or", tuple(items))

    def and_expr(self) -> Expr:
        items = [self.not_expr()]
        while self.accept("and"):
            items.append(self.not_expr())
        return items[0] if len(items) == 1 else BoolOp("and", tuple(items))

    def not_expr(self) -> Expr:
        if self.accept("not"):
            return Not(self.not_expr())
        return self.comparison()

    def comparison(self) -> Expr:
        left = self.coalesce()
        token = self.token
        if token.kind == "op" and token.text in ("==", "!=", "<", "<=", ">", ">="):
            self.advance()
            return Compare(token.text, left, self.coalesce())
        if token.kind == "name" and token.text == "in":
            self.advance()
            return Compare("in", left, self.coalesce())
        if token.kind == "name" and token.text == "not":
            following = self.tokens[self.index + 1]
            if following.kind == "name" and following.text == "in":
                self.index += 2
                return Compare("not in", left, self.coalesce())
        return left

    def coalesce(self) -> Expr:
        items = [self.postfix()]
        while self.accept("??"):
            items.append(self.postfix())
        return items[0] if len(items) == 1 else Coalesce(tuple(items))

    def postfix(self) -> Expr:
        base = self.primary()
        steps: list[Step] = []
        while True:
            if self.accept("."):
                token = self.advance()
                if token.kind != "name" or token.text in KEYWORDS:
                    raise ExprSyntaxError("expected a field name after '.'", token.column)
                steps.append(Step("field", token.text))
            elif self.token.text == "[" and self.tokens[self.index + 1].text == "]":
                self.index += 2
                if self.token.text == "." and self.tokens[self.index + 1].text == "(":
                    self.index += 2
                    inner = self.or_expr()
                    self.expect(")")
                    steps.append(Step("each", expr=inner))
                else:
                    steps.append(Step("project"))
            else:
                break
        if not steps:
            return base
        if isinstance(base, Literal | ListLit | Template):
            raise ExprSyntaxError("a literal has no fields", self.token.column)
        return Path(base, tuple(steps))

    def primary(self) -> Expr:
        token = self.advance()
        if token.kind == "number" or token.kind == "string":
            return Literal(token.value)
        if token.kind == "fstring":
            return self.template(token)
        if token.kind == "name":
            if token.text == "true":
                return Literal(True)
            if token.text == "false":
                return Literal(False)
            if token.text == "null":
                return Literal(None)
            if token.text in KEYWORDS:
                raise ExprSyntaxError(f"unexpected {token.text!r}", token.column)
            if self.accept("("):
                args: list[Expr] = []
                if not self.accept(")"):
                    args.append(self.or_expr())
                    while self.accept(","):
                        args.append(self.or_expr())
                    self.expect(")")
                return Call(token.text, tuple(args))
            return Name(token.text)
        if token.text == "(":
            inner = self.or_expr()
            self.expect(")")
            return inner
        if token.text == "[":
            items: list[Expr] = []
            if not self.accept("]"):
                items.append(self.or_expr())
                while self.accept(","):
                    items.append(self.or_expr())
                self.expect("]")
            return ListLit(tuple(items))
        if token.kind == "end":
            raise ExprSyntaxError("the expression ended too early", token.column)
        raise ExprSyntaxError(f"unexpected {token.text!r}", token.column)

    def template(self, token: _Token) -> Template:
        body: str = token.value
        parts: list[str | Expr] = []
        literal: list[str] = []
        index = 0
        base_column = token.column + 2
        while index < len(body):
            char = body[index]
            if char == "{" and body.startswith("{{", index):
                literal.append("{")
                index += 2
            elif char == "}" and body.startswith("}}", index):
                literal.append("}")
                index += 2
            elif char == "{":
                end = _closing_brace(body, index)
                if end < 0:
                    raise ExprSyntaxError("unclosed '{' in template", base_column + index)
                if literal:
                    parts.append(_unescape("".join(literal), base_column))
                    literal = []
                source = body[index + 1 : end]
                try:
                    parts.append(_Parser(source).parse())
                except ExprSyntaxError as exc:
                    raise ExprSyntaxError(
                        f"in template placeholder: {exc.args[0]}", base_column + index
                    ) from exc
                index = end + 1
            elif char == "}":
                raise ExprSyntaxError("single '}' in template (write '}}')", base_column + index)
            else:
                literal.append(char)
                index += 1
        if literal:
            parts.append(_unescape("".join(literal), base_column))
        return Template(tuple(parts))


def _closing_brace(body: str, start: int) -> int:
    quote: str | None = None
    index = start + 1
    while index < len(body):
        char = body[index]
        if quote is not None:
            if char == "\\":
                index += 1
            elif char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "}":
            return index
        index += 1
    return -1


def parse(text: str) -> Expr:
    """The syntax tree of ``text``; ExprSyntaxError if it is not an expression."""
    return _Parser(text).parse()


def walk(node: Expr) -> list[Expr]:
    """``node`` and every sub-expression in its own scope (not inside ``[].( )``)."""
    out = [node]
    for child in node.children():
        out += walk(child)
    return out
