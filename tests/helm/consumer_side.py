"""What the consumer's own code says, for the chart's tests to hold the chart against: the
series its metrics registry exports and how its CLI parses a command line."""

from __future__ import annotations

import re
import warnings
from typing import Any

import click

from consumer.cli import cli
from consumer.metrics import Metrics

PROMETHEUS_OWN = {"up"}
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
}
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
             "group_left", "group_right", "inf", "nan"}


def exported_series() -> dict[str, str]:
    """Every sample name the service's registry can expose -> its family's name."""
    names: dict[str, str] = {}
    for family in Metrics().registry.collect():
        for suffix in _SUFFIXES[family.type]:
            names[family.name + suffix] = family.name
    return names


def series_in(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, label names,
    label values, ranges and numbers left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"(?<![\w:])\d+(\.\d+)?([eE][+-]?\d+)?", " ", text)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*(\s*\()?", text):
        name = match.group(0).rstrip("( \t\n")
        if match.group(1) or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def parse_args(args: list[str]) -> tuple[str, dict[str, Any]]:
    """The command path and its parsed options, by the CLI's own parser (nothing runs)."""
    command: click.Command = cli
    context = cli.make_context("kafka-klaviyo", list(args), resilient_parsing=False)
    names = []
    while isinstance(command, click.Group):
        with warnings.catch_warnings():  # click 8.2 deprecates protected_args; 9 folds it in
            warnings.simplefilter("ignore", DeprecationWarning)
            pending = [*context.protected_args, *context.args]
        name, sub, rest = command.resolve_command(context, pending)
        assert sub is not None and name is not None
        names.append(name)
        context = sub.make_context(name, rest, parent=context)
        command = sub
    return " ".join(names), context.params
