"""The translation rules: declarative YAML, checked and compiled once at load.

Public surface::

    from consumer.rules import compile_rules, CompiledRules, RulesError

    compiled = compile_rules(
        [Path("/etc/kafka-klaviyo/rules")],   # operator rule directories; None: defaults only
        catalog=SchemaCatalog.load(),
        metric_names={"Placed Order": "Order Placed"},
        default_phone_region="US",
    )
    compiled.translate(decoded_record)         # -> list[Operation] (the Translator protocol)
    compiled.mapped_records                    # record full names with rules
    compiled.version                           # short hash for the dlq.registry.version header

    rules_from_settings(settings.rules, catalog=catalog)   # the same, from the settings

Modules, one job each: :mod:`.loader` (files, YAML with line numbers, layering),
:mod:`.expressions` (the expression language), :mod:`.paths` (static types from the Avro
schemas), :mod:`.functions` (the function library), :mod:`.checks` (load-time validation into
:mod:`.model`), :mod:`.compiler` (code generation), :mod:`.runtime` (helpers the generated code
calls), :mod:`.compiled` (the Translator), :mod:`.explain` (``translate --explain``),
:mod:`.avrojson` (events given as JSON), :mod:`.cli` (``rules check`` and ``translate``).
Default rules are package data in ``default_rules/``.
"""

from consumer.rules.compiled import (
    CompiledRules,
    RulesConfig,
    TracedRule,
    compile_rules,
    rules_from_settings,
)
from consumer.rules.problems import Problem, RulesError

__all__ = [
    "CompiledRules",
    "Problem",
    "RulesConfig",
    "RulesError",
    "TracedRule",
    "compile_rules",
    "rules_from_settings",
]
