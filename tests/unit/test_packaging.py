"""What ships: the service package alone, never the development tools.

* ``consumer/`` never imports ``kafka_klaviyo_dev``, ``tests`` or ``bench``: read from the
  source (every import statement, in functions too) and seen at run time (every module
  imported in a fresh interpreter);
* the wheel holds ``consumer/`` with its Avro schemas and default rule files and nothing of
  the dev tools, tests or benchmarks, and depends unconditionally on runtime packages only;
  unpacked on its own it imports and loads its schemas and rules;
* (docker-compose.yml and the Dockerfile are checked in ``test_compose.py``.)
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "consumer"
#: Top-level packages the service must never import.
FORBIDDEN = frozenset({"kafka_klaviyo_dev", "tests", "bench"})
#: Dev-only distributions, besides everything in the dev extra, never required by the wheel.
DEV_ONLY = frozenset(
    {"openapi-schema-validator", "jsonschema", "pytest", "hypothesis", "coverage"}
)
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def _clean_env() -> dict[str, str]:
    """This environment without coverage's subprocess hook: these children measure nothing."""
    return {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}


def _names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


# -- the service never imports the dev tools --------------------------------------------------


def imported_modules(source: str, filename: str = "<string>") -> list[tuple[int, str]]:
    """(line, module) of every absolute import in ``source``, nested ones included.

    ``import a.b`` and ``from a.b import c`` give ``a.b``; relative imports stay inside the
    package and are left out. ``importlib.import_module("x")`` and ``__import__("x")`` with a
    literal name count as imports too.
    """
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif (
            isinstance(node, ast.Call)
            and _callee(node.func) in {"import_module", "__import__"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def _callee(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def forbidden_imports(root: Path) -> list[str]:
    """``file:line: module`` for each import of a forbidden package under ``root``."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        for line, module in imported_modules(path.read_text(encoding="utf-8"), str(path)):
            if module.split(".")[0] in FORBIDDEN:
                problems.append(f"{path.relative_to(REPO)}:{line}: {module}")
    return problems


def test_the_check_sees_imports_inside_functions() -> None:
    source = (
        "import os\n"
        "def run():\n"
        "    from kafka_klaviyo_dev.emulator import EmulatorServer\n"
        "    import tests.support as s\n"
        "    importlib.import_module('bench.e2e')\n"
        "    from . import sibling\n"
    )
    assert imported_modules(source) == [
        (1, "os"),
        (3, "kafka_klaviyo_dev.emulator"),
        (4, "tests.support"),
        (5, "bench.e2e"),
    ]


def test_the_service_source_never_imports_dev_tests_or_bench() -> None:
    files = list(PACKAGE.rglob("*.py"))
    assert len(files) > 20, files
    assert forbidden_imports(PACKAGE) == []


def test_the_service_imports_only_its_declared_runtime_dependencies() -> None:
    """A third-party import that only the dev extra installs would fail in the image."""
    top_level = {
        module.split(".")[0]
        for path in PACKAGE.rglob("*.py")
        for _, module in imported_modules(path.read_text(encoding="utf-8"), str(path))
    }
    third_party = sorted(top_level - set(sys.stdlib_module_names) - {"consumer"})
    distributions = importlib.metadata.packages_distributions()
    runtime = _names(PYPROJECT["project"]["dependencies"])
    undeclared = {
        name: distributions.get(name)
        for name in third_party
        if not {canonicalize_name(d) for d in distributions.get(name, [])} & runtime
    }
    assert undeclared == {}, (
        f"imported by consumer/ but not in [project].dependencies: {undeclared}"
    )


_IMPORT_EVERYTHING = """
import importlib, json, pkgutil, sys
import consumer
imported = [info.name for info in pkgutil.walk_packages(consumer.__path__, "consumer.")]
for name in imported:
    importlib.import_module(name)
print(json.dumps({
    "imported": imported,
    "file": consumer.__file__,
    "forbidden": sorted(m for m in sys.modules if m.split(".")[0] in %r),
}))
"""


def _import_everything(cwd: Path, *flags: str, path: list[str] | None = None) -> dict[str, Any]:
    code = _IMPORT_EVERYTHING % (sorted(FORBIDDEN),)
    if path is not None:
        code = f"import sys; sys.path[:0] = {path!r}\n" + code
    result = subprocess.run(
        [sys.executable, *flags, "-c", code],
        cwd=cwd,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return loaded


def test_importing_every_service_module_loads_no_dev_module() -> None:
    # From the repository root, where kafka_klaviyo_dev, tests and bench are all importable:
    # any import of them, however indirect, would show in sys.modules.
    loaded = _import_everything(REPO)
    assert {"consumer.cli", "consumer.pipeline", "consumer.runner"} <= set(loaded["imported"])
    assert any(name.startswith("consumer.deliver.") for name in loaded["imported"])
    assert loaded["forbidden"] == []


# -- the wheel -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel ``pip wheel .`` builds, with the venv's hatchling and no index (~1 s)."""
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(REPO),
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "--quiet",
            "--wheel-dir",
            str(out),
        ],
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, (
        f"pip wheel failed (hatchling comes with the dev extra: `make install`):\n{result.stderr}"
    )
    (built,) = out.glob("kafka_klaviyo-*.whl")
    return built


def _members(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def _metadata(wheel: Path, name: str) -> str:
    with zipfile.ZipFile(wheel) as archive:
        (path,) = (n for n in archive.namelist() if n.endswith(f".dist-info/{name}"))
        return archive.read(path).decode()


def test_the_wheel_holds_the_service_package_only(wheel: Path) -> None:
    members = _members(wheel)
    tops = {m.split("/")[0] for m in members}
    assert tops == {"consumer", "kafka_klaviyo-0.1.0.dist-info"}, tops
    dev_like = [
        m
        for m in members
        if re.search(r"emulator|devstack|kafka_klaviyo_dev|(^|/)(tests?|bench)(/|_)", m)
        or "/__pycache__/" in m
    ]
    assert dev_like == []
    shipped_py = {m for m in members if m.endswith(".py")}
    assert shipped_py == {p.relative_to(REPO).as_posix() for p in PACKAGE.rglob("*.py")}


def test_the_wheel_holds_the_schemas_and_default_rules(wheel: Path) -> None:
    members = set(_members(wheel))
    schemas = {m for m in members if m.startswith("consumer/_schemas/") and m.endswith(".avsc")}
    assert schemas == {
        f"consumer/_schemas/{p.relative_to(REPO / 'schemas').as_posix()}"
        for p in (REPO / "schemas").rglob("*.avsc")
    }
    assert len(schemas) > 10
    rules = {m for m in members if m.endswith((".yaml", ".yml"))}
    in_tree = {
        p.relative_to(REPO).as_posix() for p in PACKAGE.rglob("*") if p.suffix in {".yaml", ".yml"}
    }
    assert rules == in_tree
    assert any("/default_rules/orders.yaml" in r for r in rules), rules


def test_the_wheel_requires_no_dev_package(wheel: Path) -> None:
    metadata = HeaderParser().parsestr(_metadata(wheel, "METADATA"))
    requirements = [Requirement(r) for r in metadata.get_all("Requires-Dist") or []]
    # Unconditional: what `pip install kafka-klaviyo` (no extras) installs on this interpreter.
    unconditional = {
        canonicalize_name(r.name)
        for r in requirements
        if r.marker is None or r.marker.evaluate({"extra": ""})
    }
    dev = _names(PYPROJECT["project"]["optional-dependencies"]["dev"]) | DEV_ONLY
    assert unconditional & dev == set()
    assert unconditional == _names(PYPROJECT["project"]["dependencies"])
    assert "kafka-klaviyo = consumer.cli:main" in _metadata(wheel, "entry_points.txt")


def _site_packages() -> list[str]:
    paths = sysconfig.get_paths()
    return sorted({paths["purelib"], paths["platlib"]})


def test_the_unpacked_wheel_alone_imports_and_loads_its_data(wheel: Path, tmp_path: Path) -> None:
    """No repository on sys.path: ``-S`` skips the editable install's .pth file."""
    target = tmp_path / "installed"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    path = [str(target), *_site_packages()]
    loaded = _import_everything(tmp_path, "-S", path=path)
    assert Path(loaded["file"]).is_relative_to(target)
    assert loaded["forbidden"] == []
    code = (
        f"import sys; sys.path[:0] = {path!r}\n"
        "import importlib.util\n"
        "assert importlib.util.find_spec('kafka_klaviyo_dev') is None\n"
        "from consumer.schemas import SchemaCatalog, default_schemas_dir\n"
        "print(default_schemas_dir())\n"
        "print(len(SchemaCatalog.load().names))\n"
    )
    result = subprocess.run(
        [sys.executable, "-S", "-c", code],
        cwd=tmp_path,
        env={k: v for k, v in _clean_env().items() if k != "KAFKA_KLAVIYO_SCHEMAS_DIR"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    directory, count = result.stdout.split()
    assert Path(directory) == target / "consumer" / "_schemas"
    assert int(count) > 10
