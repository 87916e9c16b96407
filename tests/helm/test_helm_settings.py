"""What the chart mounts is what the consumer reads: its settings loader, key resolution,
librdkafka settings builder, `rules check` and command-line options, run on the rendered files.

Each render is laid out in a temporary folder as the pod sees it (the config ConfigMap, the
rules ConfigMap, the API key and TLS Secrets' items at their mount paths, the container's
environment with secret references as placeholder values); only the mount roots are moved
under the folder. Then the consumer's own code loads it, so chart and code cannot drift.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import click
import httpx
import pytest
import yaml
from click.testing import CliRunner

from consumer.cli import cli
from consumer.compose import klaviyo_clients
from consumer.endpoints import Endpoint
from consumer.settings import Settings, load_settings
from consumer.source import consumer_config, producer_config
from tests.helm.chart import ALL_ON, Manifests
from tests.helm.consumer_side import parse_args

MOUNT_ROOTS = ("/etc/kafka-klaviyo", "/var/run/secrets/kafka-klaviyo")
ALL_ON_VALUES: dict[str, Any] = yaml.safe_load(ALL_ON.read_text(encoding="utf-8"))


def moved(path: str, root: Path) -> str:
    for mount in MOUNT_ROOTS:
        path = path.replace(mount, f"{root}{mount}")
    return path


def secret_value(ref: dict[str, str]) -> str:
    return f"secret:{ref['name']}/{ref['key']}"


def lay_out(manifests: Manifests, pod: dict[str, Any], root: Path) -> dict[str, str]:
    """Write the pod's volumes under ``root``; the container's environment (paths moved)."""
    container = pod["containers"][0]
    config_maps = {d["metadata"]["name"]: d for d in manifests.of_kind("ConfigMap")}
    secrets = {d["metadata"]["name"]: d for d in manifests.of_kind("Secret")}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        target = Path(moved(mount["mountPath"], root))
        if "configMap" in volume:
            data = config_maps[volume["configMap"]["name"]]["data"]
            files = {mount["subPath"]: data[mount["subPath"]]} if "subPath" in mount else data
            if "subPath" in mount:
                target = target.parent
        elif "secret" in volume:
            name = volume["secret"]["secretName"]
            data = secrets[name]["data"] if name in secrets else {}
            files = {
                item["path"]: base64.b64decode(data[item["key"]]).decode()
                if item["key"] in data else secret_value({"name": name, "key": item["key"]})
                for item in volume["secret"]["items"]
            }
        else:
            assert "emptyDir" in volume, volume
            continue
        target.mkdir(parents=True, exist_ok=True)
        for file_name, text in files.items():
            (target / file_name).write_text(moved(text, root), encoding="utf-8")
    env = {}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = moved(item["value"], root)
        else:
            env[item["name"]] = secret_value(item["valueFrom"]["secretKeyRef"])
    return env


@pytest.fixture
def load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Lay out a pod spec and load the consumer's settings the way the pod would."""

    def load_pod(manifests: Manifests, pod: dict[str, Any]) -> tuple[Settings, dict[str, str]]:
        for name in list(os.environ):
            if name.startswith(("KAFKA_KLAVIYO_", "KLAVIYO_", "KAFKA_BOOTSTRAP", "SCHEMA_REG")):
                monkeypatch.delenv(name)
        env = lay_out(manifests, pod, tmp_path)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return load_settings(), env

    return load_pod


def pod_of(manifests: Manifests, kind: str = "Deployment", suffix: str = "") -> dict[str, Any]:
    doc = manifests.one(kind, suffix)
    if kind == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def keys_sent(settings: Settings) -> dict[str, str]:
    """Account -> the key its client sends to Klaviyo (answered by a mock transport)."""
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"].removeprefix("Klaviyo-API-Key "))
        return httpx.Response(202)

    keys = {}
    for name, client in klaviyo_clients(settings, transport=httpx.MockTransport(answer)).items():
        client.post(Endpoint.EVENTS, b"{}")
        keys[name] = seen.pop()
        client.close()
    return keys


def test_default_settings_load(defaults: Manifests, load: Any) -> None:
    pod = pod_of(defaults)
    settings, _env = load(defaults, pod)
    container = pod["containers"][0]
    assert settings.observability.metrics_port == container["ports"][0]["containerPort"]
    assert settings.kafka.group_id == "kafka-klaviyo"
    assert settings.rules.dirs == ()
    assert settings.kafka.properties == {}
    # The unnamed account's key, from the Secret the operator creates.
    assert keys_sent(settings) == {"default": "secret:shop-kafka-klaviyo-klaviyo/default"}
    consumer_config(settings.kafka)


def test_all_on_settings_load(all_on: Manifests, load: Any, tmp_path: Path) -> None:
    settings, env = load(all_on, pod_of(all_on))
    config = ALL_ON_VALUES["config"]
    assert settings.kafka.group_id == config["kafka"]["group_id"]
    assert settings.kafka.topics == tuple(config["kafka"]["topics"])
    assert settings.delivery.shutdown_grace_s == config["delivery"]["shutdown_grace_s"]
    assert settings.batch.linger_ms == 500  # extraEnv
    assert settings.rules.dirs == (tmp_path / "etc/kafka-klaviyo/rules",)
    assert settings.rules.metric_names == {"Placed Order": "Order Placed"}
    tls = tmp_path / "var/run/secrets/kafka-klaviyo/kafka-tls"
    assert settings.kafka.properties == {
        "client.rack": "eu-west-1a",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "secret:kafka-klaviyo-sasl/username",
        "sasl.password": "secret:kafka-klaviyo-sasl/password",
        "ssl.ca.location": str(tls / "ca.crt"),
        "ssl.certificate.location": str(tls / "tls.crt"),
        "ssl.key.location": str(tls / "tls.key"),
        "ssl.endpoint.identification.algorithm": "https",
    }
    for key in ("ssl.ca.location", "ssl.certificate.location", "ssl.key.location"):
        assert Path(str(settings.kafka.properties[key])).is_file()
    assert settings.schema_registry.properties == {
        "basic.auth.credentials.source": "USER_INFO",
        "basic.auth.user.info": "secret:schema-registry-credentials/user-info",
    }
    # librdkafka settings build (the keys the guarantees rest on are not touched).
    consumer_config(settings.kafka)
    producer_config(settings.kafka, timeout_s=settings.dead_letter.write_timeout_s)
    # One key per account, each the one in the values.
    assert keys_sent(settings) == ALL_ON_VALUES["klaviyo"]["apiKeys"]
    assert "sasl.password" not in env.get("KAFKA_KLAVIYO_CONFIG", "")


@pytest.mark.parametrize("kind,suffix", [("Job", ""), ("CronJob", "")])
def test_jobs_load_the_same_settings(all_on: Manifests, load: Any, kind: str, suffix: str) -> None:
    for doc in all_on.of_kind(kind):
        pod = pod_of(all_on, kind, doc["metadata"]["name"])
        assert pod["volumes"] == pod_of(all_on)["volumes"]
        settings, _ = load(all_on, pod)
        assert settings.kafka.group_id == ALL_ON_VALUES["config"]["kafka"]["group_id"]
        assert keys_sent(settings) == ALL_ON_VALUES["klaviyo"]["apiKeys"]


def test_mounted_rules_pass_rules_check(all_on: Manifests, load: Any) -> None:
    load(all_on, pod_of(all_on))
    result = CliRunner().invoke(cli, ["rules", "check"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("OK: ")
    assert "shop.events.OrderFulfilled: fulfilled-order, shipped-item" in result.output


def test_a_broken_rule_fails_rules_check(helm: Any, tmp_path: Path, load: Any) -> None:
    """The check above can fail: a rule naming a field the schema lacks is refused."""
    values = tmp_path / "broken.yaml"
    text = ALL_ON_VALUES["rules"]["shipments.yaml"].replace("customer.email", "customer.emial")
    values.write_text(yaml.safe_dump({"rules": {"shipments.yaml": text}}), encoding="utf-8")
    manifests = helm.render([values])
    load(manifests, pod_of(manifests))
    result = CliRunner().invoke(cli, ["rules", "check"], catch_exceptions=False)
    assert result.exit_code == 2
    assert "'customer.emial'" in result.output


def test_grace_period_is_above_the_drain(rendered: Manifests, load: Any) -> None:
    pod = pod_of(rendered)
    settings, _ = load(rendered, pod)
    drain = settings.delivery.shutdown_grace_s + settings.dead_letter.flush_min_s
    assert pod["terminationGracePeriodSeconds"] > drain + 10  # + closing consumer and producer


def test_job_arguments_are_the_cli_options(all_on: Manifests) -> None:
    containers = {
        doc["metadata"]["labels"]["app.kubernetes.io/component"]: pod_of(
            all_on, doc["kind"], doc["metadata"]["name"])["containers"][0]
        for doc in all_on.of_kind("Job") + all_on.of_kind("CronJob")
    }
    replay, redrive, stats = (ALL_ON_VALUES[k] for k in ("replay", "redrive", "dlqStats"))
    assert stats["json"] and stats["stages"] == ["deliver"]
    name, params = parse_args(containers["replay"]["args"])
    assert name == "replay"
    assert params["topics"] == tuple(replay["topics"])
    assert params["partitions_text"] == replay["partitions"]
    assert params["from_time"] == replay["fromTime"]
    assert params["to_offset"] == replay["toOffset"]
    assert params["dry_run"] and params["no_backfill_flag"]
    assert params["rate_share"] == replay["rateShare"]
    name, params = parse_args(containers["redrive"]["args"])
    assert name == "dlq redrive"
    assert params["topic"] == redrive["topic"]
    assert params["stages"] == tuple(redrive["stages"])
    assert params["error_classes"] == tuple(redrive["errorClasses"])
    assert params["record_names"] == tuple(redrive["recordNames"])
    assert params["since"].isoformat() == "2026-12-01T18:00:00+00:00"
    assert params["source_partitions"] == tuple(redrive["sourcePartitions"])
    assert (params["from_offset"], params["to_offset"]) == (100, 90000)
    assert params["max_attempts"] == redrive["maxAttempts"]
    assert params["group_id"] == redrive["group"] != ALL_ON_VALUES["config"]["kafka"]["group_id"]
    assert params["dry_run"] and params["rate_share"] == redrive["rateShare"]
    name, params = parse_args(containers["dlq-stats"]["args"])
    assert name == "dlq stats"
    assert params["as_json"] and params["stages"] == tuple(stats["stages"])
    assert params["since"].isoformat() == "2026-12-01T00:00:00+00:00"
    assert parse_args(pod_of(all_on)["containers"][0]["args"])[0] == "run"


def test_the_argument_check_can_fail() -> None:
    with pytest.raises(click.UsageError):
        parse_args(["replay", "--from-tim", "2026-01-01"])
