"""The translation registry: declarative YAML rules, checked and compiled once at load.

Public surface::

    from consumer.registry import load_registry, CompiledRegistry, RegistryError

    registry = load_registry(
        [Path("/etc/kafka-klaviyo/rules")],   # operator rule directories; None: defaults only
        catalog=SchemaCatalog.load(),
        metric_names={"Placed Order": "Order Placed"},
        default_phone_region="US",
    )
    registry.translate(decoded_record)         # -> list[Operation] (the Translator protocol)
    registry.mapped_records                    # record full names with rules
    registry.version                           # short hash for the dlq.registry.version header

    registry_from_config(settings.registry, catalog=catalog)   # the same, from the settings

Modules, one job each: :mod:`.loader` (files, YAML with line numbers, layering),
:mod:`.expressions` (the expression language), :mod:`.paths` (static types from the Avro
schemas), :mod:`.functions` (the function library), :mod:`.checks` (load-time validation into
:mod:`.model`), :mod:`.compiler` (code generation), :mod:`.runtime` (helpers the generated code
calls), :mod:`.registry` (the Translator), :mod:`.explain` (``translate --explain``),
:mod:`.avrojson` (events given as JSON), :mod:`.cli` (``registry check`` and ``translate``).
Default rules are package data in ``default_rules/``.
"""

from consumer.registry.problems import Problem, RegistryError
from consumer.registry.registry import (
    CompiledRegistry,
    RegistryConfig,
    TracedRule,
    load_registry,
    registry_from_config,
)

__all__ = [
    "CompiledRegistry",
    "Problem",
    "RegistryConfig",
    "RegistryError",
    "TracedRule",
    "load_registry",
    "registry_from_config",
]
