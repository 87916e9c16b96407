"""docker-compose.yml and the Dockerfile against the code they run (no Docker engine needed).

Every service's entrypoint and command is resolved to the real click command and parsed by
that command's own parser (a renamed or removed option fails here); the consumer's variables
are loaded by the settings loader, each one must change what it loads; the dev tools' variables
must be ones their options read; depends_on conditions must match what the services can
report; and the Dockerfile's final stage must be the service only, non-root, under tini.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import yaml

from consumer.settings import CONVENTIONAL_VARIABLES, ENV_PREFIX, load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
TINI = ["/usr/bin/tini", "--"]


# --- reading the two files --------------------------------------------------------------------


@dataclass
class Stage:
    """One FROM ... AS name block of the Dockerfile, its instructions in order."""

    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def entrypoint(self) -> list[str]:
        found = self.all("ENTRYPOINT")
        assert found, f"stage {self.name} has no ENTRYPOINT"
        value = json.loads(found[-1])  # exec form only: a shell form would hide PID 1
        assert isinstance(value, list)
        return [str(part) for part in value]

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for args in self.all("ENV"):
            for token in shlex.split(args):
                key, _, value = token.partition("=")
                out[key] = value
        return out


def dockerfile_stages(text: str = "") -> list[Stage]:
    """The Dockerfile's stages; continuation lines joined, comments dropped, ARGs expanded."""
    text = text or DOCKERFILE.read_text(encoding="utf-8")
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            match = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", rest, flags=re.IGNORECASE)
            assert match, f"every stage is named: FROM {rest}"
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], match[1])
            stages.append(Stage(match[2], base))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, rest))
    return stages


def stage(name: str) -> Stage:
    by_name = {s.name: s for s in dockerfile_stages()}
    assert name in by_name, f"no stage {name!r} in the Dockerfile"
    return by_name[name]


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found = compose()["services"]
    assert isinstance(found, dict)
    return found


def built_services() -> Iterator[tuple[str, dict[str, Any], Stage]]:
    """The services running an image of this Dockerfile, with their stage."""
    for name, service in services().items():
        build = service.get("build")
        if build is not None:
            yield name, service, stage(build["target"])


def argv(service: dict[str, Any], image_stage: Stage) -> list[str]:
    """What the container runs: compose's entrypoint or the stage's, then the command."""
    entrypoint = service.get("entrypoint", image_stage.entrypoint())
    command = service.get("command", [])
    assert isinstance(entrypoint, list) and isinstance(command, list), "exec form only"
    return [str(part) for part in entrypoint + command]


# --- the CLI behind an argv -------------------------------------------------------------------


def program(args: list[str]) -> tuple[click.Command, str, list[str]]:
    """The click command an argv starts (tini stripped), its name, the remaining args."""
    if args[:2] == TINI:
        args = args[2:]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    if args[0] in scripts:
        module_name = scripts[args[0]].partition(":")[0]
        rest = args[1:]
    elif args[:2] == ["python", "-m"]:
        module_name = f"{args[2]}.cli"
        importlib.import_module(f"{args[2]}.__main__")  # `python -m` needs one
        rest = args[3:]
    else:
        raise AssertionError(f"not a command of this project: {args}")
    command = importlib.import_module(module_name).cli
    assert isinstance(command, click.Command)
    return command, args[0], rest


def resolve(args: list[str]) -> tuple[click.Command, list[str]]:
    """The leaf command of ``args`` (through the groups) and the args left for it."""
    command, name, rest = program(args)
    parent = click.Context(command, info_name=name)
    while isinstance(command, click.Group):
        assert rest and not rest[0].startswith("-"), f"{name}: no subcommand in {rest}"
        sub_name, sub, rest = command.resolve_command(parent, rest)
        assert sub is not None and sub_name is not None
        parent = click.Context(sub, info_name=sub_name, parent=parent)
        command, name = sub, sub_name
    return command, rest


def container_path(service: dict[str, Any], value: str, stand_ins: Path) -> str:
    """A path inside one of the service's bind mounts -> a stand-in file of the mounted one
    (the mounted file itself is outside the repository); other values unchanged."""
    for volume in service.get("volumes", []):
        target = volume["target"] if isinstance(volume, dict) else volume.split(":")[1]
        if value.startswith(target.rstrip("/") + "/"):
            stand_in = stand_ins / value.lstrip("/")
            stand_in.parent.mkdir(parents=True, exist_ok=True)
            stand_in.write_text("{}")
            return str(stand_in)
    return value


def parse(
    service: dict[str, Any], image_stage: Stage, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> tuple[click.Command, dict[str, Any]]:
    """Parse the service's argv with its command's own parser, the service's environment in
    place of this process's; returns the command and its parameters."""
    command, rest = resolve(argv(service, image_stage))
    for variable in list(os.environ):
        monkeypatch.delenv(variable)
    for variable, value in (service.get("environment") or {}).items():
        monkeypatch.setenv(variable, str(value))
    rest = [container_path(service, arg, tmp_path) for arg in rest]
    try:
        context = command.make_context(command.name, rest)
    except click.ClickException as exc:
        raise AssertionError(f"{command.name} {rest}: {exc.format_message()}") from exc
    return command, context.params


# --- the tests --------------------------------------------------------------------------------


def test_every_built_service_runs_a_real_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ran = {}
    for name, service, image_stage in built_services():
        with monkeypatch.context() as patch:
            command, params = parse(service, image_stage, patch, tmp_path / name)
        ran[name] = (command.name, params)
    assert ran["consumer"][0] == "run"
    assert ran["klaviyo-emulator"][0] == "emulator"
    assert ran["producer"][0] == "produce"
    assert ran["verify"][0] == "verify"
    # Producer and check must agree on the records, and on where they go.
    produced, checked = ran["producer"][1], ran["verify"][1]
    for same in ("orders", "topic", "dead_letter_topic", "bootstrap_servers"):
        assert produced[same] == checked[same], same


def test_the_one_shots_default_to_the_demos_topics() -> None:
    from kafka_klaviyo_dev import demo, stack_cli

    assert (stack_cli.TOPIC, stack_cli.DEAD_LETTER_TOPIC) == (demo.TOPIC, demo.DEAD_LETTER_TOPIC)


def test_a_renamed_option_would_fail_the_parse(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    service = dict(services()["producer"])
    service["command"] = [*service["command"], "--partition-count", "3"]
    with pytest.raises(AssertionError, match="No such option"):
        parse(service, stage("dev"), monkeypatch, tmp_path)


def test_the_emulator_validates_bodies_against_the_mounted_spec(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    service = services()["klaviyo-emulator"]
    _command, params = parse(service, stage("dev"), monkeypatch, tmp_path)
    assert params["spec"] is not None and not params["no_validate"]
    (mount,) = service["volumes"]
    assert mount["read_only"] and mount["bind"]["create_host_path"] is False
    assert str(params["spec"]).startswith(str(tmp_path / mount["target"].lstrip("/")))
    # The default source is the spec's place beside the repository (tests/README.md).
    assert mount["source"].endswith(":-../shared/klaviyo}")


def test_the_consumer_variables_are_each_read_by_the_settings_loader(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with monkeypatch.context() as patch:
        produced = parse(services()["producer"], stage("dev"), patch, tmp_path)[1]
    environment = {k: str(v) for k, v in services()["consumer"]["environment"].items()}
    for variable in list(os.environ):
        if variable.startswith(ENV_PREFIX) or variable in CONVENTIONAL_VARIABLES:
            monkeypatch.delenv(variable)
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    full = load_settings()
    assert full.klaviyo.resolved_api_key().get_secret_value() == environment["KLAVIYO_API_KEY"]
    assert full.observability.metrics_port == int(
        environment["KAFKA_KLAVIYO_OBSERVABILITY__METRICS_PORT"]
    )
    for variable in environment:
        assert variable in CONVENTIONAL_VARIABLES or variable.startswith(ENV_PREFIX), variable
        with monkeypatch.context() as patch:
            patch.delenv(variable)
            assert load_settings() != full, f"{variable} changes nothing the loader reads"
    # The consumer reads what the producer writes and dead-letters where verify looks.
    assert full.kafka.topics == (produced["topic"],)
    assert full.kafka.dead_letter_topic == produced["dead_letter_topic"]


def test_the_dev_tools_variables_are_read_by_their_options(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, service, image_stage in built_services():
        if name == "consumer":
            continue
        command, _params = resolve(argv(service, image_stage))
        read = {
            variable
            for param in command.params
            for variable in (
                [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or [])
            )
        }
        for variable in service.get("environment") or {}:
            assert variable in read, f"{name}: {variable} is read by no option of {command.name}"


def _host_port(address: str) -> tuple[str, int]:
    parts = urlsplit(address if "//" in address else f"//{address}")
    assert parts.hostname and parts.port, address
    return parts.hostname, parts.port


def test_addresses_name_a_service_and_the_port_it_listens_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    all_services = services()
    kafka = all_services["kafka"]["environment"]
    advertised = dict(
        item.split("://") for item in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")
    )
    brokers = {_host_port(advertised["PLAINTEXT"])}
    registry = all_services["schema-registry"]["environment"]
    registries = {("schema-registry", _host_port(registry["SCHEMA_REGISTRY_LISTENERS"])[1])}
    emulator_params = parse(
        all_services["klaviyo-emulator"], stage("dev"), monkeypatch, tmp_path
    )[1]
    emulators = {("klaviyo-emulator", emulator_params["port"])}
    expected = {
        "KAFKA_BOOTSTRAP_SERVERS": brokers,
        "SCHEMA_REGISTRY_URL": registries,
        "KLAVIYO_BASE_URL": emulators,
    }
    checked = 0
    for name, service in all_services.items():
        for variable, value in (service.get("environment") or {}).items():
            if variable in expected:
                assert _host_port(str(value)) in expected[variable], f"{name}: {variable}"
                checked += 1
    assert checked >= 6


def test_health_checks_probe_the_port_the_service_serves() -> None:
    all_services = services()
    consumer = all_services["consumer"]
    port = consumer["environment"]["KAFKA_KLAVIYO_OBSERVABILITY__METRICS_PORT"]
    assert f"127.0.0.1:{port}/readyz" in " ".join(consumer["healthcheck"]["test"])
    emulator = all_services["klaviyo-emulator"]
    emulator_port = emulator["command"][emulator["command"].index("--port") + 1]
    assert f"127.0.0.1:{emulator_port}/__emulator/health" in " ".join(
        emulator["healthcheck"]["test"]
    )


def test_depends_on_conditions_match_what_each_service_can_report() -> None:
    all_services = services()
    graph: dict[str, set[str]] = {}
    for name, service in all_services.items():
        depends = service.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on with conditions"
        graph[name] = set(depends)
        for target, spec in depends.items():
            assert target in all_services, f"{name} depends on unknown {target}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in all_services[target], f"{target} has no healthcheck"
            elif condition == "service_completed_successfully":
                assert all_services[target].get("restart") == "no", f"{target} is not one-shot"
                assert "healthcheck" not in all_services[target]
            else:
                assert condition == "service_started", condition
    # Start order: no cycle, and everything the consumer talks to is up first.
    done: set[str] = set()
    while len(done) < len(graph):
        ready = {name for name, needs in graph.items() if name not in done and needs <= done}
        assert ready, f"depends_on cycle among {set(graph) - done}"
        done |= ready
    consumer = all_services["consumer"]["depends_on"]
    assert consumer["producer"]["condition"] == "service_completed_successfully"
    for target in ("kafka", "schema-registry", "klaviyo-emulator"):
        assert consumer[target]["condition"] == "service_healthy"
    assert all_services["verify"]["depends_on"]["consumer"]["condition"] == "service_healthy"
    # Docker waits this long after SIGTERM: longer than the drain's grace.
    grace = load_settings().delivery.shutdown_grace_s
    assert int(all_services["consumer"]["stop_grace_period"].rstrip("s")) > grace


def test_the_service_stage_is_last_and_runs_kafka_klaviyo_under_tini() -> None:
    stages = dockerfile_stages()
    service = stages[-1]
    assert service.name == "service"  # `docker build .` builds it
    assert service.entrypoint() == [*TINI, "kafka-klaviyo"]
    assert any("apt-get install" in run and " tini" in run for run in service.all("RUN"))
    assert json.loads(service.all("CMD")[-1]) == ["run"]
    assert services()["consumer"]["build"]["target"] == "service"
    assert "entrypoint" not in services()["consumer"]  # tini stays PID 1


def test_the_service_stage_is_non_root_and_writes_only_to_tmp() -> None:
    service = stage("service")
    (user,) = service.all("USER")
    uid = user.partition(":")[0]
    assert uid.isdigit() and int(uid) != 0  # numeric: runAsNonRoot can check it
    environment = service.env()
    assert environment["PYTHONDONTWRITEBYTECODE"] == "1"
    assert environment["HOME"] == environment["TMPDIR"] == "/tmp"
    assert "PROMETHEUS_MULTIPROC_DIR" not in environment
    assert environment["MALLOC_ARENA_MAX"] == "2"  # measured: -20 MB peak RSS on a backlog
    consumer = services()["consumer"]
    assert consumer["read_only"] is True and consumer["tmpfs"] == ["/tmp"]


def test_the_service_image_holds_the_wheel_only() -> None:
    service, build = stage("service"), stage("build")
    copies = service.all("COPY")
    assert copies and all(c.startswith("--from=build ") for c in copies), copies
    assert not service.all("ADD")
    text = " ".join(args for _kw, args in service.instructions)
    for absent in ("kafka_klaviyo_dev", "tests", "pip install", "[dev]", "gcc", "build-essential"):
        assert absent not in text, absent
    sources = {c.split()[0] for c in build.all("COPY")}
    assert sources == {"pyproject.toml", "consumer", "schemas"}, sources
    wheel = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]
    assert wheel["targets"]["wheel"]["packages"] == ["consumer"]


def test_the_dockerignore_sends_what_the_copies_need_and_no_more() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for image_stage in dockerfile_stages():
        for copy in image_stage.all("COPY"):
            if not copy.startswith("--from="):
                copied.update(part.rstrip("/") for part in copy.split()[:-1])
    assert copied <= allowed, copied - allowed
    for never in ("tests", ".venv", ".git", "bench", "helm"):
        assert never not in allowed
