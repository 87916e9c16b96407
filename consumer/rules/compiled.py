"""The compiled translation rules: load, check and compile rule files into a Translator.

:func:`compile_rules` reads the default rules and any operator directories, checks every rule
against the Avro schemas, and compiles what passes into one Python function per record. The
result, :class:`CompiledRules`, is what the pipeline calls for every message; rules that fail
their checks raise :class:`~consumer.rules.problems.RulesError` and never start consuming.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import phonenumbers

from consumer.decode import DecodedRecord
from consumer.errors import UnmappedRecordError
from consumer.messages import Operation
from consumer.rules.checks import check_rules
from consumer.rules.compiler import Compiler, RecordFunction
from consumer.rules.functions import Context
from consumer.rules.loader import read_rule_files
from consumer.rules.model import Rule
from consumer.rules.problems import Problem, RulesError
from consumer.schemas import SchemaCatalog

CONFIGURATION = "<configuration>"


@dataclass(frozen=True, slots=True)
class TracedRule:
    """The operations one rule produced for one record (``translate --explain``)."""

    rule: Rule
    operations: list[Operation]


class CompiledRules:
    """A Translator built from rule files: ``translate(record) -> list[Operation]``.

    Immutable and thread-safe once built. ``version`` is a short hash of the rule files and of
    the settings that change outputs (metric names, phone region, forced backfill): the
    version of the translation rules, sent in the ``dlq.registry.version`` header. Two
    processes with the same version translate alike.
    """

    __slots__ = ("_functions", "_mapped", "files", "rules", "source", "version")

    def __init__(
        self,
        *,
        rules: tuple[Rule, ...],
        functions: Mapping[str, RecordFunction],
        source: str,
        version: str,
        files: tuple[str, ...],
    ) -> None:
        self.rules = rules
        self._functions = dict(functions)
        self._mapped = frozenset(self._functions)
        self.source = source
        self.version = version
        self.files = files

    @property
    def mapped_records(self) -> frozenset[str]:
        """Full names of the Avro records at least one rule maps."""
        return self._mapped

    def translate(self, record: DecodedRecord) -> list[Operation]:
        """Operations for ``record``; TranslationError (bad data) or UnmappedRecordError."""
        function = self._functions.get(record.record_name)
        if function is None:
            raise UnmappedRecordError(
                f"no translation rule maps record {record.record_name}",
                record_name=record.record_name,
            )
        operations: list[Operation] = function(record.data, None)
        return operations

    def traced(self, record: DecodedRecord) -> list[TracedRule]:
        """Like :meth:`translate`, with each rule's operations kept apart (for explaining)."""
        function = self._functions.get(record.record_name)
        if function is None:
            raise UnmappedRecordError(
                f"no translation rule maps record {record.record_name}",
                record_name=record.record_name,
            )
        marks: list[int] = []
        operations: list[Operation] = function(record.data, marks)
        rules = [rule for rule in self.rules if rule.record == record.record_name]
        out: list[TracedRule] = []
        start = 0
        for rule, end in zip(rules, marks, strict=True):
            out.append(TracedRule(rule, operations[start:end]))
            start = end
        return out

    def rules_for(self, record: str) -> list[Rule]:
        """The rules of ``record`` in the order they run."""
        return [rule for rule in self.rules if rule.record == record]


def compile_rules(
    rule_dirs: Iterable[Path] | None = None,
    *,
    catalog: SchemaCatalog,
    metric_names: Mapping[str, str] | None = None,
    default_phone_region: str = "US",
    include_defaults: bool = True,
    force_backfill: bool = False,
) -> CompiledRules:
    """Load, check and compile the translation rules.

    ``rule_dirs``: operator directories layered over the defaults in order (same record and
    rule name replaces). ``metric_names``: default metric name -> the name to send (e.g.
    ``{"Placed Order": "Order Placed"}``). ``default_phone_region``: ISO 3166 alpha-2 region
    for phone numbers written without a country code. ``force_backfill``: mark every event
    ``backfill: true`` (history that must not trigger flows, e.g. ``replay``).

    Raises RulesError listing every problem (file, line, rule, field).
    """
    names = dict(metric_names or {})
    problems: list[Problem] = []
    if default_phone_region not in phonenumbers.SUPPORTED_REGIONS:
        problems.append(
            Problem(
                CONFIGURATION,
                0,
                f"default_phone_region {default_phone_region!r} is not a region code"
                " (ISO 3166 alpha-2, e.g. US, GB, DE)",
            )
        )
    for default, configured in names.items():
        if not isinstance(configured, str) or not configured.strip():
            problems.append(
                Problem(CONFIGURATION, 0, f"metric_names[{default!r}] must be a non-empty name")
            )
    loaded = read_rule_files(rule_dirs, include_defaults=include_defaults)
    problems += loaded.problems
    ctx = Context(default_phone_region=default_phone_region)
    rules, rule_problems = check_rules(loaded.rules, catalog, ctx, names)
    problems += rule_problems
    used = {
        getattr(rule.output, "metric_default", None) for rule in rules
    } | _metric_defaults_of_failed(loaded.rules)
    for default in names:
        if default not in used:
            problems.append(
                Problem(
                    CONFIGURATION,
                    0,
                    f"metric_names: {default!r} is not the metric of any rule"
                    f" (rules send: {', '.join(sorted(n for n in used if n))})",
                )
            )
    if not rules and not problems:
        problems.append(Problem(CONFIGURATION, 0, "there are no rules"))
    if problems:
        raise RulesError(problems)
    settings = json.dumps(
        {
            "metric_names": sorted(names.items()),
            "default_phone_region": default_phone_region,
            "force_backfill": force_backfill,
        },
        sort_keys=True,
    ).encode()
    version = loaded.digest(settings)[:12]
    by_record: dict[str, list[Rule]] = {}
    for rule in rules:
        by_record.setdefault(rule.record, []).append(rule)
    compiler = Compiler(catalog, ctx, force_backfill=force_backfill)
    functions, source = compiler.build(by_record, version)
    return CompiledRules(
        rules=tuple(rule for record_rules in by_record.values() for rule in record_rules),
        functions=functions,
        source=source,
        version=version,
        files=tuple(f.label for f in loaded.files),
    )


class RulesConfig(Protocol):
    """What :func:`rules_from_settings` reads from the settings' ``rules`` section."""

    @property
    def dirs(self) -> Sequence[Path]:
        """Operator rule directories, layered over the defaults in order."""
        ...

    @property
    def include_defaults(self) -> bool:
        """Whether the rules shipped with the package are loaded first."""
        ...

    @property
    def metric_names(self) -> Mapping[str, str]:
        """Default metric name -> the name to send."""
        ...

    @property
    def default_phone_region(self) -> str:
        """ISO 3166 alpha-2 region for phone numbers without a country code."""
        ...


def rules_from_settings(
    config: RulesConfig | None, *, catalog: SchemaCatalog, force_backfill: bool = False
) -> CompiledRules:
    """:func:`compile_rules` with the settings' ``rules`` section (None: the defaults)."""
    if config is None:
        return compile_rules(catalog=catalog, force_backfill=force_backfill)
    return compile_rules(
        config.dirs,
        catalog=catalog,
        metric_names=config.metric_names,
        default_phone_region=config.default_phone_region,
        include_defaults=config.include_defaults,
        force_backfill=force_backfill,
    )


def _metric_defaults_of_failed(raw_rules: Iterable[object]) -> set[str]:
    """Metric names of rules that failed their checks, so they are not reported twice."""
    out: set[str] = set()
    for raw in raw_rules:
        data = getattr(raw, "data", None)
        event = data.get("event") if isinstance(data, dict) else None
        metric = event.get("metric") if isinstance(event, dict) else None
        if isinstance(metric, str):
            out.add(metric)
    return out
