"""The Avro schemas of the shop's events: loaded once from ``*.avsc`` files, then indexed.

Layout of a schema directory (``schemas/`` in the repository, ``consumer/_schemas`` in the
wheel, or ``$KAFKA_KLAVIYO_SCHEMAS_DIR``)::

    shop.events.Money.avsc          one named type per file, the file named <fullname>.avsc,
    shop.events.OrderPlaced.avsc    so a reference to ``shop.events.Money`` finds its file
    ...
    history/*.avsc                  optional: older versions of event records, any file name.
                                    Writer-only: they let registry-free (single-object) messages
                                    written before a schema change still decode; the reader is
                                    always the current version in the directory above.

What the catalog answers:

* ``parsed(name)`` - the fastavro-parsed schema, every named type it uses inlined, ready for
  ``schemaless_reader``/``schemaless_writer``;
* ``fingerprint(name)`` / ``by_fingerprint(fp)`` - the 8-byte CRC-64-AVRO fingerprint of the
  Parsing Canonical Form, in the little-endian byte order of the single-object encoding header;
* ``canonical_json(name)`` - a self-contained schema (docs, defaults and logical types kept) to
  register in a Schema Registry. It is *not* the Parsing Canonical Form, which drops defaults
  and logical types and would break compatibility checks and decimal decoding;
* ``fields(name)`` / ``field(name, path)`` - dotted field paths for rule checkers:
  ``customer.email``, ``line_items[]`` (the array element), ``line_items[].sku``.
  A ``["null", T]`` union is looked through (``nullable=True``); maps are leaves.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from fastavro.repository.base import AbstractSchemaRepository, SchemaRepositoryError
from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import load_schema, to_parsing_canonical_form

from consumer.errors import ConfigError

__all__ = [
    "EVENT_MARKER_FIELDS",
    "SCHEMAS_DIR_ENV",
    "FieldInfo",
    "SchemaCatalog",
    "default_schemas_dir",
    "encoding_form",
]

SCHEMAS_DIR_ENV = "KAFKA_KLAVIYO_SCHEMAS_DIR"
"""Environment variable that overrides the schema directory."""

EVENT_MARKER_FIELDS = frozenset({"event_id", "occurred_at"})
"""A record carrying all of these top-level fields is an event; others are shared types."""

_HISTORY_DIR = "history"
_ROOT = "$root"
_NAMED_TYPES = frozenset({"record", "error", "enum", "fixed"})
# The attributes that change how bytes are read: the Parsing Canonical Form keeps the first
# five groups; logical-type attributes matter too (a decimal's scale changes its value).
_ENCODING_KEYS = frozenset(
    {"type", "name", "fields", "items", "values", "symbols", "size"}
    | {"logicalType", "precision", "scale"}
)


def default_schemas_dir() -> Path:
    """The schema directory used when none is given: env override, wheel copy, repository."""
    override = os.environ.get(SCHEMAS_DIR_ENV, "").strip()
    if override:
        return Path(override)
    packaged = Path(__file__).resolve().parent / "_schemas"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "schemas"


def encoding_form(schema: Any) -> str:
    """A string equal for two parsed schemas exactly when they read the same bytes the same way.

    Like the Parsing Canonical Form (docs, defaults, aliases dropped) but logical types kept,
    so a decoder may read with the reader schema alone when the writer's form is equal.
    Both sides must be fastavro-parsed (full names, first use of each named type inlined).
    """
    return json.dumps(_encoding_tree(schema), sort_keys=True, separators=(",", ":"))


def _encoding_tree(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_encoding_tree(branch) for branch in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key not in _ENCODING_KEYS:
            continue
        if key == "fields":
            out[key] = [
                {"name": field["name"], "type": _encoding_tree(field["type"])} for field in value
            ]
        elif key in ("type", "items", "values"):
            out[key] = _encoding_tree(value)
        else:
            out[key] = value
    return out


@dataclass(frozen=True, slots=True)
class FieldInfo:
    """One addressable path inside an event record, for translation-rule checkers.

    ``schema`` is the field's Avro type with a ``["null", T]`` union unwrapped to ``T`` and a
    named reference replaced by its definition. ``type_name`` is the one word a checker
    compares: the logical type if any (``decimal``, ``timestamp-millis``), else the full name of
    a named type (``shop.events.Money``, ``shop.events.SubscriptionChannel``), else the Avro
    type (``string``, ``int``, ``boolean``, ``array``, ``map``, ...), or ``union`` for a union
    with more than one non-null branch.
    """

    path: str
    type_name: str
    schema: Any
    nullable: bool
    has_default: bool
    doc: str | None


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    file: Path
    raw: dict[str, Any]
    parsed: dict[str, Any]
    canonical_json: str
    fingerprint: bytes


class _Repository(AbstractSchemaRepository):
    """Resolves named references from ``<directory>/<fullname>.avsc``; ``$root`` is in memory."""

    def __init__(self, directory: Path, root: Any) -> None:
        self._directory = directory
        self._root = root

    def load(self, name: str) -> Any:
        if name == _ROOT:
            return self._root
        path = self._directory / f"{name}.avsc"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise SchemaRepositoryError(f"no file {path.name}") from exc
        except ValueError as exc:
            raise SchemaRepositoryError(f"{path.name} is not valid JSON: {exc}") from exc


class SchemaCatalog:
    """Every Avro schema of one schema directory, parsed and indexed once at start-up.

    Immutable after :meth:`load`; safe to share between threads. Names are Avro full names
    (``shop.events.OrderPlaced``). Asking for a name the catalog does not hold raises
    :class:`KeyError`; check :attr:`names` first when the name comes from user input.
    """

    __slots__ = (
        "_aliases",
        "_by_fingerprint",
        "_directory",
        "_entries",
        "_event_names",
        "_fields",
        "_history",
    )

    def __init__(
        self, directory: Path, entries: Mapping[str, _Entry], history: list[_Entry]
    ) -> None:
        """Use :meth:`load`; this constructor trusts its already-validated arguments."""
        self._directory = directory
        self._entries = dict(entries)
        self._history = list(history)
        self._event_names = frozenset(
            name
            for name, entry in self._entries.items()
            if entry.parsed.get("type") == "record"
            and {f["name"] for f in entry.parsed["fields"]} >= EVENT_MARKER_FIELDS
        )
        self._by_fingerprint: dict[bytes, _Entry] = {}
        # Current versions win over an identical history file.
        for entry in [*self._entries.values(), *self._history]:
            self._by_fingerprint.setdefault(entry.fingerprint, entry)
        self._aliases: dict[str, str] = {}
        for name, entry in self._entries.items():
            namespace = name.rpartition(".")[0]
            for alias in entry.raw.get("aliases", ()):
                full = alias if "." in alias or not namespace else f"{namespace}.{alias}"
                self._aliases.setdefault(full, name)
        self._fields = {
            name: MappingProxyType(_flatten(entry.parsed))
            for name, entry in self._entries.items()
            if entry.parsed.get("type") == "record"
        }

    # -- construction ------------------------------------------------------------------

    @classmethod
    def load(cls, directory: Path | None = None) -> SchemaCatalog:
        """Load every ``*.avsc`` of ``directory`` (default: :func:`default_schemas_dir`).

        Raises :class:`ConfigError` naming the file for invalid JSON, a file whose name is
        not ``<fullname>.avsc``, an unknown referenced type, or an invalid schema.
        """
        root = (directory if directory is not None else default_schemas_dir()).resolve()
        if not root.is_dir():
            raise ConfigError(
                f"schema directory {root} does not exist (set {SCHEMAS_DIR_ENV} to override)"
            )
        files = sorted(root.glob("*.avsc"))
        if not files:
            raise ConfigError(f"schema directory {root} holds no *.avsc files")
        entries: dict[str, _Entry] = {}
        for file in files:
            entry = _load_file(file, root, require_file_name=True)
            entries[entry.name] = entry
        history_dir = root / _HISTORY_DIR
        history = [
            _load_file(file, root, require_file_name=False)
            for file in (sorted(history_dir.glob("*.avsc")) if history_dir.is_dir() else [])
        ]
        return cls(root, entries, history)

    # -- lookups -----------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        """The directory the schemas were loaded from."""
        return self._directory

    @property
    def names(self) -> frozenset[str]:
        """Full names of every schema file, shared types included."""
        return frozenset(self._entries)

    @property
    def event_names(self) -> frozenset[str]:
        """Full names of the event records (those with ``event_id`` and ``occurred_at``)."""
        return self._event_names

    def file(self, full_name: str) -> Path:
        """The ``.avsc`` file that defines ``full_name`` (for error messages)."""
        return self._entries[full_name].file

    def parsed(self, full_name: str) -> dict[str, Any]:
        """The fastavro-parsed schema, named types inlined; do not mutate it."""
        return self._entries[full_name].parsed

    def fingerprint(self, full_name: str) -> bytes:
        """CRC-64-AVRO of the Parsing Canonical Form, 8 bytes little-endian (single-object)."""
        return self._entries[full_name].fingerprint

    def by_fingerprint(self, fp: bytes) -> str | None:
        """Full name of the schema (current or history) with this fingerprint, else None."""
        entry = self._by_fingerprint.get(fp)
        return entry.name if entry is not None else None

    def writer_by_fingerprint(self, fp: bytes) -> tuple[str, dict[str, Any]] | None:
        """Full name and parsed schema for a fingerprint, history versions included."""
        entry = self._by_fingerprint.get(fp)
        return (entry.name, entry.parsed) if entry is not None else None

    def canonical_json(self, full_name: str) -> str:
        """Self-contained schema JSON (docs, defaults, logical types kept) for a registry."""
        return self._entries[full_name].canonical_json

    def resolve_name(self, name: str) -> str | None:
        """The catalog name for a writer's record name: itself, or a schema that aliases it."""
        if name in self._entries:
            return name
        return self._aliases.get(name)

    def fields(self, full_name: str) -> Mapping[str, FieldInfo]:
        """Every addressable path of a record schema, in field order."""
        return self._fields[full_name]

    def field(self, full_name: str, path: str) -> FieldInfo | None:
        """The field at a dotted path (``customer.email``, ``line_items[].sku``), else None."""
        return self._fields[full_name].get(path)


def _load_file(file: Path, root: Path, *, require_file_name: bool) -> _Entry:
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"schema file {file}: not readable JSON: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("type") not in _NAMED_TYPES or "name" not in raw:
        raise ConfigError(f"schema file {file}: must hold one named type (record, enum, fixed)")
    name = str(raw["name"])
    namespace = raw.get("namespace")
    full_name = name if "." in name or not namespace else f"{namespace}.{name}"
    if require_file_name and file.name != f"{full_name}.avsc":
        raise ConfigError(
            f"schema file {file}: defines {full_name}; the file must be named {full_name}.avsc"
        )
    try:
        loaded = load_schema(_ROOT, repo=_Repository(root, raw))
        canonical_form = to_parsing_canonical_form(loaded)
        fp = bytes.fromhex(_fastavro_fingerprint(canonical_form, "CRC-64-AVRO"))
    except Exception as exc:  # fastavro raises a handful of unrelated types; all mean "bad file"
        raise ConfigError(f"schema file {file}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"schema file {file}: must hold one named type (record, enum, fixed)")
    public = _strip_private(loaded)
    return _Entry(
        name=full_name,
        file=file,
        raw=raw,
        parsed=loaded,
        canonical_json=json.dumps(public, ensure_ascii=False, separators=(",", ":")),
        fingerprint=fp,
    )


def _strip_private(schema: Any) -> Any:
    """Drop fastavro's ``__fastavro_parsed``/``__named_schemas`` bookkeeping keys."""
    if isinstance(schema, list):
        return [_strip_private(item) for item in schema]
    if isinstance(schema, dict):
        return {k: _strip_private(v) for k, v in schema.items() if not k.startswith("__")}
    return schema


def _flatten(record: dict[str, Any]) -> dict[str, FieldInfo]:
    named: dict[str, Any] = record.get("__named_schemas", {})
    out: dict[str, FieldInfo] = {}

    def deref(schema: Any) -> Any:
        if isinstance(schema, str) and schema in named:
            return named[schema]
        return schema

    def add(
        path: str, schema: Any, doc: str | None, has_default: bool, seen: frozenset[str]
    ) -> None:
        schema = deref(schema)
        nullable = False
        if isinstance(schema, list):
            non_null = [branch for branch in schema if branch != "null"]
            nullable = len(non_null) < len(schema)
            if len(non_null) == 1:
                schema = deref(non_null[0])
        out[path] = FieldInfo(path, _type_name(schema), schema, nullable, has_default, doc)
        if not isinstance(schema, dict):
            return
        kind = schema.get("type")
        if kind in ("record", "error") and schema["name"] not in seen:
            visit(schema, path + ".", seen | {schema["name"]})
        elif kind == "array":
            add(path + "[]", schema["items"], None, False, seen)

    def visit(rec: dict[str, Any], prefix: str, seen: frozenset[str]) -> None:
        for field in rec["fields"]:
            add(prefix + field["name"], field["type"], field.get("doc"), "default" in field, seen)

    visit(record, "", frozenset({record["name"]}))
    return out


def _type_name(schema: Any) -> str:
    if isinstance(schema, str):
        return schema
    if isinstance(schema, list):
        return "union"
    if "logicalType" in schema:
        return str(schema["logicalType"])
    kind = schema.get("type")
    if kind in _NAMED_TYPES:
        return str(schema["name"])
    if isinstance(kind, str):
        return kind
    return _type_name(kind)
