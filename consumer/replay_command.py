"""What ``kafka-klaviyo replay`` does: settings -> plan -> the service with a range source.

The plan is read with a short-lived consumer of the replay's group (the bounds become
offsets, an earlier run's commits say where to continue), then the service is built by
:func:`consumer.compose.build_service` with a :class:`~consumer.replay.RangeSource`, the
history body formats and the plan's end bounds as commit metadata, and run by the same
:class:`~consumer.runner.Runner` as ``run`` until the range is done.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

from confluent_kafka import Consumer

from consumer.bodies import History
from consumer.compose import build_service, build_translation
from consumer.errors import ConfigError
from consumer.exit_codes import EXIT_OK
from consumer.messages import KafkaMessage
from consumer.positions import Bound
from consumer.replay import (
    RangeConsumer,
    RangeSource,
    RangeTranslator,
    ReplayPlan,
    ReplayProgress,
    describe_plan,
    dry_run_range,
    plan_replay,
    replay_group_id,
)
from consumer.runner import Runner
from consumer.settings import Settings
from consumer.source import consumer_config

log = logging.getLogger(__name__)


def range_settings(settings: Settings, *, rate_share: float) -> Settings:
    """The live settings as a bounded run (replay, re-drive) uses them: its share of the rate
    limits enforced on this side, and no metrics port (the live consumer on the same host may
    hold it)."""
    delivery = settings.delivery.model_copy(
        update={"rate_limit_share": rate_share, "client_rate_limit": True}
    )
    observability = settings.observability.model_copy(update={"metrics_port": None})
    return settings.model_copy(update={"delivery": delivery, "observability": observability})


def run_replay(
    settings: Settings,
    *,
    topics: Sequence[str],
    only: Iterable[int] | None,
    start: Bound | None,
    end: Bound | None,
    group_id: str | None,
    dry_run: bool,
    backfill: bool,
    rate_share: float,
) -> int:
    """Plan and run one replay with the live ``settings``; returns the exit code
    (ConfigError for bad input). The plan goes to stderr, the summary to stdout."""
    settings = range_settings(settings, rate_share=rate_share)
    kafka = settings.kafka
    topics = list(topics) or list(kafka.topics)
    numbers = sorted(set(only)) if only is not None else None
    group = group_id or replay_group_id(kafka.group_id, topics, numbers, start, end)
    planner = cast(RangeConsumer, open_consumer(consumer_config(kafka, group_id=group)))
    try:
        plan = plan_replay(
            planner,
            topics,
            group_id=group,
            live_group=kafka.group_id,
            only=numbers,
            start=start,
            end=end,
        )
    finally:
        planner.close()
    return run_range(
        settings,
        plan,
        history=History(backfill=backfill, historical_consent=True),
        dry_run=dry_run,
    )


def run_range(
    settings: Settings,
    plan: ReplayPlan,
    *,
    history: History,
    dry_run: bool,
    select: Callable[[KafkaMessage], bool] | None = None,
    kind: str = "replay",
) -> int:
    """Run a planned range through the service (``replay``, ``dlq redrive``), or through
    decode and translate only (``dry_run``); the exit code. ``select`` leaves messages out."""
    print(describe_plan(plan, kind), file=sys.stderr)
    kafka = settings.kafka
    translation = build_translation(settings)
    translator = RangeTranslator(
        translation.translator, historical_consent=history.historical_consent
    )
    if dry_run:
        reader = cast(RangeConsumer, open_consumer(consumer_config(kafka, group_id=plan.group_id)))
        progress = ReplayProgress(plan, None, translator.counts, None, dry_run=True, kind=kind)
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        failures, skipped = dry_run_range(
            reader,
            plan,
            decoder=translation.decoder,
            translator=translator,
            router=translation.router,
            progress=progress,
            stop=stop.is_set,
            select=select,
        )
        progress.close()
        print(progress.summary(dead_lettered=0, failures=failures, skipped=skipped))
        return EXIT_OK
    service = build_service(
        settings,
        translator=translator,
        group_id=plan.group_id,
        source=lambda consumer: RangeSource(consumer, plan, select),
        history=history,
        commit_metadata=plan.metadata(),
    )
    progress = ReplayProgress(
        plan, service.pipeline.committer, translator.counts, service.metrics, kind=kind
    )
    runner = Runner(service, on_turn=progress.turn)
    runner.install_signal_handlers()
    code = runner.run()
    progress.close()
    dead = int(service.metrics.total("kafka_klaviyo_messages", outcome="dead_lettered"))
    skipped = service.source.skipped if isinstance(service.source, RangeSource) else 0
    print(progress.summary(dead_lettered=dead, skipped=skipped))
    return code


def open_consumer(config: dict[str, Any]) -> Consumer:
    """A plain consumer for planning and dry runs; refused settings are a ConfigError."""
    try:
        return Consumer(config)
    except Exception as exc:
        raise ConfigError(f"kafka.properties: librdkafka refused the settings: {exc}") from exc
