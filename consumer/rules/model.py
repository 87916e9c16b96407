"""Checked rules: what :mod:`consumer.rules.checks` hands to the compiler.

Everything here has passed the load-time checks: paths exist, types fit, required outputs are
present. Expressions carry their static type, whether they can fail on a message (``raises``)
and which fan-out variables they read (``deps``), which is what the compiler needs to decide
what to compute once and what to compute per item.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from consumer.rules.expressions import Expr
from consumer.rules.paths import AType


@dataclass(frozen=True, slots=True)
class Typed:
    """A checked expression."""

    expr: Expr
    type: AType
    text: str
    line: int
    raises: bool
    deps: frozenset[str]


@dataclass(frozen=True, slots=True)
class TExpr:
    """A template leaf computed by an expression."""

    typed: Typed


@dataclass(frozen=True, slots=True)
class TConst:
    """A static template value (a YAML number/boolean/null, or ``$const``)."""

    value: Any
    line: int


@dataclass(frozen=True, slots=True)
class TEntry:
    """One key of an object template; ``optional`` keys (``Key?:``) are left out when null."""

    key: str
    optional: bool
    value: Template
    line: int


@dataclass(frozen=True, slots=True)
class TObject:
    """An object built key by key.

    ``drop_empty``: profile semantics - a key whose value is null, empty text or an empty
    object is left out (Klaviyo treats "" as a value, and an empty location as an update).
    """

    entries: tuple[TEntry, ...]
    line: int
    drop_empty: bool = False


@dataclass(frozen=True, slots=True)
class TFor:
    """``$for``: one ``emit`` per element of the bound lists (zipped), optionally filtered."""

    bindings: tuple[tuple[str, Typed], ...]
    where: Typed | None
    emit: Template
    line: int


Template = TExpr | TConst | TObject | TFor


@dataclass(frozen=True, slots=True)
class EventOutput:
    """A Klaviyo event (Bulk Create Events)."""

    metric_default: str
    metric: str
    profile: TObject
    properties: TObject | TExpr
    unique_id: Typed
    time: Typed | None
    value: Typed | None
    value_currency: Typed | None
    backfill: Typed | TConst | None


@dataclass(frozen=True, slots=True)
class ProfileOutput:
    """A profile upsert (Bulk Import Profiles)."""

    profile: TObject


@dataclass(frozen=True, slots=True)
class SubscriptionOutput:
    """Subscribe or unsubscribe one profile to one list on one channel."""

    action: Typed
    channel: Typed
    list_id: Typed
    email: Typed | None
    phone_number: Typed | None
    consented_at: Typed | None
    # global: Klaviyo's own Unsubscribe (a person not in the list is unsubscribed from every
    # list); list: only the list's members are unsubscribed (RULES.md U1).
    unsubscribe_scope: str = "global"


@dataclass(frozen=True, slots=True)
class CatalogItemOutput:
    """A catalog item: created, updated, or both (``upsert``)."""

    mode: str  # create | update | upsert
    external_id: Typed
    attributes: TObject
    categories: Typed | None


@dataclass(frozen=True, slots=True)
class CatalogDeleteOutput:
    """A catalog item deleted."""

    external_id: Typed


Output = EventOutput | ProfileOutput | SubscriptionOutput | CatalogItemOutput | CatalogDeleteOutput


@dataclass(frozen=True, slots=True)
class Source:
    """Where one output field comes from, for ``translate --explain``.

    ``pointer`` is a path into the operation (``event/properties/Items/*/SKU``); ``descend``
    means the field is a container whose own children have sources of their own.
    """

    pointer: str
    text: str
    line: int
    descend: bool = False


@dataclass(frozen=True, slots=True)
class Rule:
    """One checked rule."""

    record: str
    name: str
    file: str
    line: int
    kind: str  # event | profile_upsert | subscription | catalog_item | catalog_delete
    description: str
    when: Typed | None
    for_each: tuple[tuple[str, Typed], ...]
    output: Output
    sources: tuple[Source, ...]

    @property
    def location(self) -> str:
        """``file:line`` of the rule."""
        return f"{self.file}:{self.line}"
