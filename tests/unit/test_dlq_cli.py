"""``kafka-klaviyo dlq``: help on every command, and bad input refused before any read."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from consumer.cli import cli


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["dlq", *args], catch_exceptions=False)
    return result.exit_code, result.output


@pytest.mark.parametrize("command", ["stats", "list", "show", "export"])
def test_every_command_has_help_with_config_and_topic(command: str) -> None:
    code, output = invoke(command, "--help")
    assert code == 0
    assert "--config" in output and "--topic" in output
    if command != "show":
        assert "--since" in output and "--max-attempts" in output  # the shared selection


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (("stats", "--since", "last tuesday"), "--since"),
        (("list", "--until", "2026-13-45"), "--until"),
        (("export", "--since", "2026-12-02", "--until", "2026-12-01"), "--until"),
        (("list", "--from-offset", "9", "--to-offset", "3"), "--to-offset"),
        (("stats", "--stage", "send"), "'--stage'"),
        (("show", "1:x"), "PARTITION:OFFSET"),
        (("show", "12"), "PARTITION:OFFSET"),
        (("show", "--source", "shop.events:1"), "--source"),
    ],
)
def test_bad_options_are_exit_2_naming_the_option(args: tuple[str, ...], names: str) -> None:
    code, output = invoke(*args)
    assert code == 2, output
    error = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and names in error[0], output


def test_show_needs_exactly_one_way_to_find_the_record() -> None:
    for args in ((), ("0:1", "--source", "t:0:1")):
        code, output = invoke("show", *args)
        assert code == 2 and "give PARTITION:OFFSET or --source" in output


def test_a_bad_configuration_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("kafka:\n  dead_letter_topik: x\n")
    monkeypatch.delenv("KAFKA_KLAVIYO_CONFIG", raising=False)
    code, output = invoke("stats", "--config", str(config))
    assert code == 2
    assert output.count("\n") == 1
    assert output.startswith("kafka-klaviyo: configuration error: kafka.dead_letter_topik")
