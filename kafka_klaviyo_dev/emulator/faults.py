"""Faults injected on demand: what a real outage, a slow Klaviyo or a poison item looks like.

Kinds:

``status``            answer with a fixed status (503, 500, 408...) and Klaviyo's error body,
                      optionally with ``Retry-After``.
``latency``           add ``delay_seconds`` before handling the request normally.
``timeout``           hold the request for ``hold_seconds`` without answering, then drop the
                      connection (longer than the client's timeout, so the client gives up).
``rate_limit_storm``  answer every request 429 with ``Retry-After: retry_after``.
``reject_items``      refuse requests carrying items that match ``match`` with a 400 whose
                      errors point at each matching item, as Klaviyo points at bad items.
``fail_in_job``       accept the request (202) but fail the items that match ``match`` inside
                      the asynchronous job (profile import, catalog jobs): they count in the
                      job's ``failed_count``, are listed in its errors with ``detail`` and
                      ``code``, and are not stored.
``cancel_job``        accept the request but cancel its job (status ``cancelled``, nothing
                      stored); with ``match``, only jobs with an item that matches.

Every rule may be limited to one ``endpoint`` and/or one ``account`` (a rule without
``endpoint`` applies to the POST endpoints only; the GET routes of jobs and categories are hit
only by rules that name them), and expires after
``seconds`` and/or after firing on ``requests`` requests (whichever comes first). Rules live in
a :class:`FaultBook`; clearing it also releases requests that a ``timeout`` rule is holding.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

FaultKind = Literal[
    "status", "latency", "timeout", "rate_limit_storm", "reject_items", "fail_in_job", "cancel_job"
]
FAULT_KINDS: tuple[FaultKind, ...] = (
    "status",
    "latency",
    "timeout",
    "rate_limit_storm",
    "reject_items",
    "fail_in_job",
    "cancel_job",
)
_TERMINAL: frozenset[str] = frozenset({"status", "timeout", "rate_limit_storm"})
#: Kinds that act inside an asynchronous job rather than on the request.
JOB_KINDS: frozenset[str] = frozenset({"fail_in_job", "cancel_job"})
_MISSING = object()


class FaultSpecError(ValueError):
    """A fault description is malformed; the message names the field."""


@dataclass(frozen=True, slots=True)
class ItemMatch:
    """Which items a ``reject_items`` rule refuses.

    ``field`` is a dotted path resolved in the item (an event's attributes, plus ``profile``
    for its profile's attributes; digits index arrays), e.g. ``properties.poison``,
    ``unique_id`` or ``profile.email``. The item matches if the value equals ``equals`` or,
    for strings, if ``regex`` is found in it (``re.search``).
    """

    field: str
    equals: Any = _MISSING
    regex: str | None = None

    def __post_init__(self) -> None:
        if not self.field:
            raise FaultSpecError("match.field is required")
        if (self.equals is _MISSING) == (self.regex is None):
            raise FaultSpecError("match needs exactly one of 'equals' or 'regex'")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise FaultSpecError(f"match.regex is not a regular expression: {exc}") from exc

    @property
    def tokens(self) -> tuple[str, ...]:
        """The field path split on dots."""
        return tuple(self.field.split("."))

    def matches(self, view: Mapping[str, Any]) -> bool:
        """True if the item (as ``view``) has the field and its value matches."""
        found, value = resolve(view, self.tokens)
        if not found:
            return False
        if self.regex is not None:
            return isinstance(value, str) and re.search(self.regex, value) is not None
        return bool(value == self.equals and type(value) is type(self.equals)) or (
            # JSON numbers: 1 and 1.0 are the same value; bools are not numbers.
            isinstance(value, (int, float))
            and isinstance(self.equals, (int, float))
            and not isinstance(value, bool)
            and not isinstance(self.equals, bool)
            and value == self.equals
        )

    def to_json(self) -> dict[str, Any]:
        """JSON form, as accepted by :meth:`FaultRule.from_json`."""
        out: dict[str, Any] = {"field": self.field}
        if self.regex is not None:
            out["regex"] = self.regex
        else:
            out["equals"] = self.equals
        return out


def resolve(node: Any, tokens: Sequence[str]) -> tuple[bool, Any]:
    """Follow ``tokens`` through dicts (keys) and lists (indexes): (found, value)."""
    for token in tokens:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return False, None
    return True, node


_ids = itertools.count(1)


@dataclass(slots=True)
class FaultRule:
    """One injected fault; see the module docstring for the kinds and their fields."""

    kind: FaultKind
    endpoint: str | None = None
    account: str | None = None
    seconds: float | None = None
    requests: int | None = None
    status: int = 503
    retry_after: int | None = None
    delay_seconds: float = 0.0
    hold_seconds: float = 30.0
    match: ItemMatch | None = None
    detail: str | None = None
    code: str | None = None
    id: str = field(default_factory=lambda: f"fault-{next(_ids)}")
    created_at: float = field(default_factory=time.monotonic)
    fired: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise FaultSpecError(f"kind must be one of {', '.join(FAULT_KINDS)}")
        if self.seconds is not None and self.seconds <= 0:
            raise FaultSpecError("seconds must be positive")
        if self.requests is not None and self.requests < 1:
            raise FaultSpecError("requests must be at least 1")
        if self.kind == "status" and not 400 <= self.status <= 599:
            raise FaultSpecError("status must be an HTTP error status (400-599)")
        if self.kind == "rate_limit_storm" and self.retry_after is None:
            self.retry_after = 1
        if self.retry_after is not None and self.retry_after < 0:
            raise FaultSpecError("retry_after must not be negative")
        if self.kind == "latency" and self.delay_seconds <= 0:
            raise FaultSpecError("delay_seconds must be positive for a latency fault")
        if self.kind == "timeout" and self.hold_seconds <= 0:
            raise FaultSpecError("hold_seconds must be positive for a timeout fault")
        if self.kind in ("reject_items", "fail_in_job") and self.match is None:
            raise FaultSpecError(f"a {self.kind} fault needs 'match'")

    @classmethod
    def from_json(
        cls, doc: Mapping[str, Any], normalise_endpoint: Callable[[str], str | None]
    ) -> FaultRule:
        """A rule from its JSON description (the control API's POST body)."""
        known = {
            "kind",
            "endpoint",
            "account",
            "seconds",
            "requests",
            "status",
            "retry_after",
            "delay_seconds",
            "hold_seconds",
            "match",
            "detail",
            "code",
        }
        unknown = sorted(set(doc) - known)
        if unknown:
            raise FaultSpecError(f"unknown fault field(s): {', '.join(unknown)}")
        kind = doc.get("kind")
        if kind not in FAULT_KINDS:
            raise FaultSpecError(f"kind must be one of {', '.join(FAULT_KINDS)}")
        endpoint = doc.get("endpoint")
        name: str | None = None
        if endpoint is not None:
            name = normalise_endpoint(str(endpoint))
            if name is None:
                raise FaultSpecError(f"unknown endpoint {endpoint!r}")
        match = doc.get("match")
        if match is not None:
            if not isinstance(match, dict):
                raise FaultSpecError("match must be an object")
            extra = sorted(set(match) - {"field", "equals", "regex"})
            if extra:
                raise FaultSpecError(f"unknown match field(s): {', '.join(extra)}")
            item_match: ItemMatch | None = ItemMatch(
                field=str(match.get("field", "")),
                equals=match.get("equals", _MISSING),
                regex=match.get("regex"),
            )
        else:
            item_match = None
        try:
            return cls(
                kind=cast(FaultKind, kind),
                endpoint=name,
                account=_opt(doc, "account", str),
                seconds=_opt(doc, "seconds", float),
                requests=_opt(doc, "requests", int),
                status=int(doc.get("status", 503)),
                retry_after=_opt(doc, "retry_after", int),
                delay_seconds=float(doc.get("delay_seconds", 0.0)),
                hold_seconds=float(doc.get("hold_seconds", 30.0)),
                match=item_match,
                detail=_opt(doc, "detail", str),
                code=_opt(doc, "code", str),
            )
        except (TypeError, ValueError) as exc:
            if isinstance(exc, FaultSpecError):
                raise
            raise FaultSpecError(f"bad fault field value: {exc}") from exc

    def active(self, now: float) -> bool:
        """Not expired by time nor used up."""
        if self.seconds is not None and now >= self.created_at + self.seconds:
            return False
        return self.requests is None or self.fired < self.requests

    def applies(self, endpoint: str, account: str | None) -> bool:
        """True if the rule targets this endpoint and account."""
        if self.endpoint is not None and self.endpoint != endpoint:
            return False
        return self.account is None or self.account == account

    def to_json(self, now: float | None = None) -> dict[str, Any]:
        """JSON form for the control API (with how often it fired and time left)."""
        now = time.monotonic() if now is None else now
        out: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "endpoint": self.endpoint,
            "account": self.account,
            "seconds": self.seconds,
            "requests": self.requests,
            "fired": self.fired,
            "active": self.active(now),
        }
        if self.seconds is not None:
            out["seconds_left"] = max(0.0, self.created_at + self.seconds - now)
        if self.kind == "status":
            out["status"] = self.status
        if self.kind in ("status", "rate_limit_storm"):
            out["retry_after"] = self.retry_after
        if self.kind == "latency":
            out["delay_seconds"] = self.delay_seconds
        if self.kind == "timeout":
            out["hold_seconds"] = self.hold_seconds
        if self.match is not None:
            out["match"] = self.match.to_json()
        if self.detail is not None:
            out["detail"] = self.detail
        if self.code is not None:
            out["code"] = self.code
        return out


def _opt(doc: Mapping[str, Any], key: str, kind: Callable[[Any], Any]) -> Any:
    value = doc.get(key)
    return None if value is None else kind(value)


@dataclass(frozen=True, slots=True)
class Selection:
    """The faults that apply to one request: total added latency, at most one answer, the
    ``reject_items`` rules and the rules acting inside its job (``fail_in_job``,
    ``cancel_job``)."""

    delay_seconds: float = 0.0
    terminal: FaultRule | None = None
    item_rules: tuple[FaultRule, ...] = ()
    job_rules: tuple[FaultRule, ...] = ()


class FaultBook:
    """The active fault rules, thread-safe; rules fire in the order they were added."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._release = threading.Event()

    def add(self, rule: FaultRule) -> FaultRule:
        """Activate ``rule`` (its clock starts now)."""
        rule.created_at = self._clock()
        with self._lock:
            self._rules.append(rule)
        return rule

    def remove(self, rule_id: str) -> bool:
        """Deactivate one rule; False if there is none with that id."""
        with self._lock:
            before = len(self._rules)
            self._rules = [r for r in self._rules if r.id != rule_id]
            return len(self._rules) != before

    def clear(self) -> None:
        """Deactivate every rule and release held (``timeout``) requests."""
        with self._lock:
            self._rules.clear()
            release, self._release = self._release, threading.Event()
        release.set()

    def rules(self) -> list[FaultRule]:
        """Every rule still active."""
        now = self._clock()
        with self._lock:
            self._rules = [r for r in self._rules if r.active(now)]
            return list(self._rules)

    def select(self, endpoint: str, account: str | None, *, named_only: bool = False) -> Selection:
        """The faults for one request; those that fire are counted as fired.

        ``reject_items`` and job rules are returned but not counted: they fire only if an
        item of the request matches (see :meth:`fired`). ``named_only``: only rules naming
        ``endpoint`` apply (the GET routes).
        """
        now = self._clock()
        delay = 0.0
        terminal: FaultRule | None = None
        item_rules: list[FaultRule] = []
        job_rules: list[FaultRule] = []
        with self._lock:
            for rule in self._rules:
                if not rule.active(now) or not rule.applies(endpoint, account):
                    continue
                if named_only and rule.endpoint != endpoint:
                    continue
                if rule.kind == "latency":
                    rule.fired += 1
                    delay += rule.delay_seconds
                elif rule.kind in _TERMINAL:
                    if terminal is None:
                        rule.fired += 1
                        terminal = rule
                elif rule.kind in JOB_KINDS:
                    job_rules.append(rule)
                else:
                    item_rules.append(rule)
        return Selection(delay, terminal, tuple(item_rules), tuple(job_rules))

    def fired(self, rules: Iterable[FaultRule]) -> None:
        """Count a firing of each of ``rules`` (reject_items rules that matched something)."""
        with self._lock:
            for rule in rules:
                rule.fired += 1

    def hold(self, seconds: float, stopping: threading.Event) -> None:
        """Block for ``seconds``, or until the faults are cleared or the server stops."""
        with self._lock:
            release = self._release
        deadline = time.monotonic() + seconds
        while not release.is_set() and not stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            release.wait(min(left, 0.05))

    def wait(self, seconds: float, stopping: threading.Event) -> None:
        """Sleep ``seconds`` of injected latency (cut short only when the server stops)."""
        stopping.wait(seconds)
