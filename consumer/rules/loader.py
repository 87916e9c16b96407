"""Rule files: found, read as YAML with line numbers, and layered (defaults, then operators).

Layout of a rule file::

    version: 1            # optional; the only version there is
    definitions: ...      # optional, never read itself: a home for YAML anchors (&name)
                          # that rules below reuse with aliases (*name)
    rules:                # required: a list of rules (see consumer.rules.checks)
      - name: placed-order
        record: shop.events.OrderPlaced
        event: {...}

Files are read in name order (``*.yaml`` and ``*.yml``): first the defaults shipped in
``consumer/rules/default_rules/``, then each operator directory in the order given. A rule
is identified by its record's full name and its ``name``; a later layer's rule with the same
identity replaces the earlier one in place (``enabled: false`` removes it), anything else is
added after the rules already there. The same identity twice within one layer is a problem.

Mappings become :class:`LMap` and sequences :class:`LList`, which remember the line of each
key and item, so every later check can name a line. Mapping keys stay the text written
(YAML 1.1 would turn a property called ``on`` into ``True``); repeated keys are problems
rather than the silent last-one-wins of PyYAML.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from consumer.rules.problems import Problem

DEFAULT_RULES_PACKAGE = "consumer.rules"
DEFAULT_RULES_DIR = "default_rules"
_SUFFIXES = (".yaml", ".yml")
_FILE_KEYS = frozenset({"version", "definitions", "rules"})


class LMap(dict[str, Any]):
    """A YAML mapping that remembers where it and each of its keys are."""

    line: int
    key_lines: dict[str, int]

    def line_of(self, key: str) -> int:
        """The line of ``key``, else of the mapping itself."""
        return self.key_lines.get(key, self.line)


class LList(list[Any]):
    """A YAML sequence that remembers where it and each of its items are."""

    line: int
    item_lines: list[int]

    def line_of(self, index: int) -> int:
        """The line of item ``index``, else of the sequence itself."""
        return self.item_lines[index] if index < len(self.item_lines) else self.line


class _DuplicateKey(Exception):
    """A mapping repeats a key (PyYAML would silently keep the last one)."""

    def __init__(self, key: str, line: int) -> None:
        super().__init__(key)
        self.key = key
        self.line = line


class _Loader(yaml.SafeLoader):
    """SafeLoader building LMap/LList; keys as written; duplicate keys refused."""


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> LMap:
    loader.flatten_mapping(node)  # resolves `<<: *anchor` merge keys
    result = LMap()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode):
            key = str(key_node.value)
        else:
            key = str(loader.construct_object(key_node, deep=True))
        line = key_node.start_mark.line + 1
        if key in result:
            raise _DuplicateKey(key, line)
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = line
    return result


def _construct_list(loader: _Loader, node: yaml.SequenceNode) -> LList:
    result = LList(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_list)


@dataclass(frozen=True, slots=True)
class RuleFile:
    """One rule file's text, and how errors name it."""

    label: str
    text: str
    layer: int


@dataclass(frozen=True, slots=True)
class RawRule:
    """One rule as written (not yet checked), and where."""

    file: str
    line: int
    data: LMap
    layer: int

    @property
    def identity(self) -> tuple[str, str] | None:
        """(record, name) when both are strings; the key replacements match on."""
        record, name = self.data.get("record"), self.data.get("name")
        if isinstance(record, str) and isinstance(name, str):
            return record, name
        return None


@dataclass(slots=True)
class LoadedRules:
    """The rules of every layer merged, the problems met, and a digest of the inputs."""

    rules: list[RawRule] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    files: list[RuleFile] = field(default_factory=list)

    def digest(self, extra: bytes = b"") -> str:
        """SHA-256 (hex) over every file's label and text in load order, then ``extra``."""
        sha = hashlib.sha256()
        for rule_file in self.files:
            sha.update(rule_file.label.encode())
            sha.update(b"\0")
            sha.update(rule_file.text.encode())
            sha.update(b"\0")
        sha.update(extra)
        return sha.hexdigest()


def default_rule_files() -> list[RuleFile]:
    """The rule files shipped with the package (package data, read with importlib)."""
    folder = resources.files(DEFAULT_RULES_PACKAGE).joinpath(DEFAULT_RULES_DIR)
    entries = sorted(
        (entry for entry in folder.iterdir() if entry.name.endswith(_SUFFIXES)),
        key=lambda entry: entry.name,
    )
    return [
        RuleFile(f"{DEFAULT_RULES_DIR}/{entry.name}", entry.read_text(encoding="utf-8"), 0)
        for entry in entries
    ]


def directory_rule_files(directory: Path, layer: int) -> tuple[list[RuleFile], list[Problem]]:
    """The ``*.yaml``/``*.yml`` files of an operator's directory, in name order."""
    if not directory.is_dir():
        return [], [Problem(str(directory), 0, "rule directory does not exist")]
    files: list[RuleFile] = []
    problems: list[Problem] = []
    for path in sorted(p for p in directory.iterdir() if p.suffix in _SUFFIXES and p.is_file()):
        try:
            files.append(RuleFile(str(path), path.read_text(encoding="utf-8"), layer))
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(str(path), 0, f"cannot read the file: {exc}"))
    if not files and not problems:
        problems.append(Problem(str(directory), 0, "rule directory holds no *.yaml files"))
    return files, problems


def read_rule_files(
    rule_dirs: Iterable[Path] | None, *, include_defaults: bool = True
) -> LoadedRules:
    """Read and layer the default rules and every operator directory."""
    loaded = LoadedRules()
    files = default_rule_files() if include_defaults else []
    for layer, directory in enumerate(rule_dirs or (), start=1):
        found, problems = directory_rule_files(Path(directory), layer)
        files += found
        loaded.problems += problems
    loaded.files = files
    by_identity: dict[tuple[str, str], int] = {}
    disabled: set[int] = set()
    for rule_file in files:
        for raw in _parse_file(rule_file, loaded.problems):
            identity = raw.identity
            index = by_identity.get(identity) if identity is not None else None
            if index is None or identity is None:
                if raw.layer > 0 and raw.data.get("enabled") is False:
                    loaded.problems.append(
                        Problem(
                            raw.file,
                            raw.line,
                            "'enabled: false' disables no earlier rule of this record and name",
                            rule=identity[1] if identity is not None else None,
                        )
                    )
                    continue
                if identity is not None:
                    by_identity[identity] = len(loaded.rules)
                loaded.rules.append(raw)
                if raw.data.get("enabled") is False:
                    disabled.add(len(loaded.rules) - 1)
                continue
            previous = loaded.rules[index]
            if previous.layer == raw.layer:
                loaded.problems.append(
                    Problem(
                        raw.file,
                        raw.line,
                        f"rule {identity[1]!r} for {identity[0]} is already defined at"
                        f" {previous.file}:{previous.line}; names are unique per record",
                        rule=identity[1],
                    )
                )
                continue
            # A later layer replaces the rule where it stood, so output order stays stable.
            loaded.rules[index] = raw
            if raw.data.get("enabled") is False:
                disabled.add(index)
            else:
                disabled.discard(index)
    loaded.rules = [raw for i, raw in enumerate(loaded.rules) if i not in disabled]
    return loaded


def _parse_file(rule_file: RuleFile, problems: list[Problem]) -> list[RawRule]:
    label = rule_file.label
    try:
        document = yaml.load(rule_file.text, Loader=_Loader)
    except _DuplicateKey as exc:
        problems.append(Problem(label, exc.line, f"key {exc.key!r} appears twice"))
        return []
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        reason = getattr(exc, "problem", None) or str(exc)
        problems.append(Problem(label, line, f"not valid YAML: {reason}"))
        return []
    if document is None:
        problems.append(Problem(label, 1, "the file is empty; it needs a 'rules' list"))
        return []
    if not isinstance(document, LMap):
        problems.append(Problem(label, 1, "the top level must be a mapping with a 'rules' list"))
        return []
    for key in document:
        if key not in _FILE_KEYS:
            problems.append(
                Problem(
                    label,
                    document.line_of(key),
                    f"unknown key {key!r} (known: {', '.join(sorted(_FILE_KEYS))})",
                )
            )
    version = document.get("version", 1)
    if version != 1:
        problems.append(
            Problem(label, document.line_of("version"), f"version {version!r} is not 1")
        )
    rules = document.get("rules")
    if not isinstance(rules, LList):
        problems.append(
            Problem(label, document.line_of("rules"), "'rules' must be a list of rules")
        )
        return []
    out: list[RawRule] = []
    for index, item in enumerate(rules):
        line = rules.line_of(index)
        if not isinstance(item, LMap):
            problems.append(Problem(label, line, f"rule #{index + 1} must be a mapping"))
            continue
        out.append(RawRule(label, item.line, item, rule_file.layer))
    return out
