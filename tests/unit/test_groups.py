"""group reset's pure parts: the plan, its table, the group states it refuses, the options."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka import TopicPartition

from consumer.cli import cli
from consumer.groups import (
    GroupState,
    Move,
    describe_target,
    plan_reset,
    render_offsets,
    render_plan,
    target_offsets,
)
from consumer.positions import Bound
from consumer.redact import mask
from consumer.settings import KafkaSettings
from consumer.source import admin_config

MARKS = {("orders", 0): (0, 100), ("orders", 1): (40, 60), ("carts", 0): (0, 0)}


class TimesAreOffsetsTimesTen:
    """offsets_for_times of a cluster whose message at offset n has timestamp 10 * n."""

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        raise AssertionError("not needed")

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = -1, cached: bool = False
    ) -> tuple[int, int] | None:
        return MARKS[(partition.topic, partition.partition)]

    def offsets_for_times(
        self, partitions: list[TopicPartition], timeout: float = -1
    ) -> list[TopicPartition]:
        answers = []
        for tp in partitions:
            low, high = MARKS[(tp.topic, tp.partition)]
            first = max(low, -(-tp.offset // 10))
            answers.append(TopicPartition(tp.topic, tp.partition, first if first < high else -1))
        return answers


METADATA = TimesAreOffsetsTimesTen()


def test_earliest_and_latest_are_the_watermarks_of_each_partition() -> None:
    assert target_offsets(METADATA, "earliest", MARKS, timeout_s=1) == {
        ("orders", 0): 0,
        ("orders", 1): 40,
        ("carts", 0): 0,
    }
    assert target_offsets(METADATA, "latest", MARKS, timeout_s=1) == {
        ("orders", 0): 100,
        ("orders", 1): 60,
        ("carts", 0): 0,
    }


def test_offsets_and_times_mean_what_they_mean_for_replay() -> None:
    assert target_offsets(METADATA, Bound(offset=50), MARKS, timeout_s=1) == {
        ("orders", 0): 50,
        ("orders", 1): 50,
        ("carts", 0): 0,
    }
    assert target_offsets(METADATA, Bound(time_ms=555), MARKS, timeout_s=1) == {
        ("orders", 0): 56,
        ("orders", 1): 56,
        ("carts", 0): 0,
    }


def test_differences_count_from_where_the_group_would_resume() -> None:
    committed = {("orders", 0): 80, ("orders", 1): 10, ("carts", 0): None}
    new = {("orders", 0): 50, ("orders", 1): 55, ("carts", 0): 0}
    plan = plan_reset("g", "offset 50", MARKS, committed, new)
    assert plan.moves == (
        Move("carts", 0, None, 0, 0),
        # Offset 10 is gone from the partition: the group would start at its low watermark.
        Move("orders", 0, 80, 50, 80),
        Move("orders", 1, 10, 55, 40),
    )
    assert [m.difference for m in plan.moves] == [0, -30, 15]
    assert plan.offsets == new


def test_the_plan_is_a_table_with_a_heading_and_a_total() -> None:
    committed = {("orders", 0): 80, ("orders", 1): 60, ("carts", 0): None}
    new = {("orders", 0): 50, ("orders", 1): 60, ("carts", 0): 0}
    lines = render_plan(plan_reset("shop", "offset 50", MARKS, committed, new))
    assert lines == [
        "Reset group shop to offset 50:",
        "  topic   partition  committed  new     difference",
        "  carts           0       none    0              0",
        "  orders          0         80   50  30 read again",
        "  orders          1         60   60              0",
        "2 of 3 partitions change; 30 messages read again, 0 skipped",
    ]


def test_skipped_messages_are_counted_as_skipped() -> None:
    plan = plan_reset("g", "latest", {("t", 0): (0, 9)}, {("t", 0): 2}, {("t", 0): 9})
    lines = render_plan(plan)
    assert lines[2].split() == ["t", "0", "2", "9", "7", "skipped"]
    assert lines[-1] == "1 of 1 partitions change; 0 messages read again, 7 skipped"


def test_offsets_read_back_are_a_table_too() -> None:
    assert render_offsets("g", {("t", 1): 7, ("t", 0): None}) == [
        "Committed offsets of group g now:",
        "  topic  partition  committed",
        "  t              0       none",
        "  t              1          7",
    ]


@pytest.mark.parametrize(
    ("state", "members", "stopped", "says"),
    [
        ("empty", 0, True, ""),
        ("dead", 0, True, ""),
        ("stable", 2, False, "group g has 2 members (state stable)"),
        ("stable", 1, False, "group g has 1 member (state stable)"),
        ("preparing_rebalancing", 0, False, "group g is in state preparing_rebalancing"),
    ],
)
def test_only_an_empty_or_dead_group_without_members_may_move(
    state: str, members: int, stopped: bool, says: str
) -> None:
    group = GroupState("g", state, members)
    assert group.stopped is stopped
    assert group.refusal().startswith(says)
    assert "\n" not in group.refusal()


def test_targets_are_named_in_the_plan() -> None:
    assert describe_target("earliest") == "earliest"
    assert describe_target(Bound(offset=5)) == "offset 5"
    assert describe_target(Bound(time_ms=1_700_000_000_000)) == "2023-11-14T22:13:20+00:00"


def test_the_admin_client_takes_only_the_connection_keys_of_kafka_properties() -> None:
    kafka = KafkaSettings(
        bootstrap_servers="b:9093",
        properties={
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "PLAIN",
            "ssl.ca.location": "/ca.pem",
            "session.timeout.ms": 6000,
        },
    )
    assert admin_config(kafka) == {
        "bootstrap.servers": "b:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "ssl.ca.location": "/ca.pem",
    }


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "give exactly one of --to-offset, --to-time, --to-earliest, --to-latest"),
        (["--to-earliest", "--to-latest"], "(got --to-earliest and --to-latest)"),
        (["--to-offset", "-3"], "--to-offset: -3 is negative"),
        (["--to-time", "last tuesday"], "--to-time: 'last tuesday' is not a time"),
        (["--to-latest", "--partitions", "0,a"], "--partitions: '0,a' is not a comma-separated"),
        (["--to-latest", "--timeout", "0"], "--timeout: must be more than 0 seconds"),
    ],
)
def test_bad_options_are_one_line_naming_the_option(args: list[str], says: str) -> None:
    result = CliRunner().invoke(cli, ["group", "reset", *args])
    assert result.exit_code == 2
    assert says in result.stderr
    assert result.stderr.count("\n") == 1
    assert result.stdout == ""


def test_a_configuration_error_is_one_line() -> None:
    result = CliRunner().invoke(
        cli,
        ["group", "reset", "--to-latest"],
        env={"KAFKA_KLAVIYO_KAFKA__PROPERTIES": '{"enable.auto.commit": true}'},
    )
    assert result.exit_code == 2
    assert "kafka.properties.enable.auto.commit" in result.stderr
    assert result.stderr.count("\n") == 1


def test_group_reset_has_help_text() -> None:
    result = CliRunner().invoke(cli, ["group", "reset", "--help"])
    assert result.exit_code == 0
    for option in ("--to-offset", "--to-time", "--to-earliest", "--to-latest", "--dry-run"):
        assert option in result.output
    assert mask(result.output) == result.output


def test_a_state_is_read_from_confluent_kafkas_enum_name() -> None:
    from consumer.groups import describe_group

    class Future:
        def result(self, timeout: float) -> Any:
            state = SimpleNamespace(name="STABLE")
            return SimpleNamespace(state=state, members=[object(), object()])

    class Admin:
        def describe_consumer_groups(self, ids: list[str], **_: Any) -> dict[str, Any]:
            return {ids[0]: Future()}

    found = describe_group(Admin(), "g", bootstrap_servers="b", timeout_s=1)  # type: ignore[arg-type]
    assert found == GroupState("g", "stable", 2)
