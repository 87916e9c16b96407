"""``python -m kafka_klaviyo_dev emulator``: serve the Klaviyo emulator in the foreground.

Prints one line with the URL when ready (stdout), a note on schema validation (stderr), and
stops cleanly on SIGTERM or SIGINT. API keys are never printed, only account names.
"""

from __future__ import annotations

import gc
import logging
import re
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import click

from consumer.errors import KafkaKlaviyoError
from kafka_klaviyo_dev.emulator.config import (
    DEFAULT_REVISION,
    EmulatorConfig,
    JobSettings,
    RateLimitSettings,
    WindowLimits,
)
from kafka_klaviyo_dev.emulator.endpoints import BY_NAME, operation_name
from kafka_klaviyo_dev.emulator.server import EmulatorServer

_LIMIT = re.compile(r"^(?P<endpoint>[^=]+)=(?P<burst>\d+)/(?P<steady>\d+)$")
_DURATION = re.compile(r"^(?P<endpoint>[^=]+)=(?P<seconds>\d+(\.\d+)?)$")


def parse_api_keys(values: Sequence[str]) -> dict[str, str]:
    """``KEY[=ACCOUNT]`` values -> {key: account}; bare keys get ``default``, ``account-2``..."""
    keys: dict[str, str] = {}
    for n, value in enumerate(values, start=1):
        key, sep, account = value.strip().rpartition("=")
        if not sep:
            key, account = value.strip(), "default" if n == 1 else f"account-{n}"
        if not key or not account:
            raise click.BadParameter(
                f"value {n} must be KEY or KEY=ACCOUNT", param_hint="'--api-key'"
            )
        keys[key] = account
    return keys


def parse_rate_limits(values: Sequence[str]) -> dict[str, WindowLimits]:
    """``ENDPOINT=BURST/STEADY`` values -> overrides keyed by endpoint (or route) name."""
    overrides: dict[str, WindowLimits] = {}
    for value in values:
        match = _LIMIT.match(value.strip())
        name = operation_name(match["endpoint"]) if match else None
        if match is None or name is None:
            raise click.BadParameter(
                f"{value!r} is not ENDPOINT=BURST/STEADY with a known endpoint",
                param_hint="'--rate-limit'",
            )
        overrides[name] = WindowLimits(int(match["burst"]), int(match["steady"]))
    return overrides


def parse_job_durations(values: Sequence[str]) -> dict[str, float]:
    """``ENDPOINT=SECONDS`` values -> job durations keyed by job endpoint name."""
    durations: dict[str, float] = {}
    for value in values:
        match = _DURATION.match(value.strip())
        name = operation_name(match["endpoint"]) if match else None
        if match is None or name is None or name not in BY_NAME or not BY_NAME[name].returns_job:
            raise click.BadParameter(
                f"{value!r} is not ENDPOINT=SECONDS with a job endpoint",
                param_hint="'--job-duration-for'",
            )
        durations[name] = float(match["seconds"])
    return durations


@click.command(
    "emulator",
    help="Serve the local Klaviyo emulator: Klaviyo's bulk endpoints with its validation, "
    "limits, dedup and rate limits, plus fault injection and read-back under /__emulator/.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--port",
    default=8765,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="TCP port to listen on; 0 picks a free one.",
)
@click.option(
    "--spec",
    "spec",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="KLAVIYO_OPENAPI_SPEC",
    show_envvar=True,
    help="Klaviyo's OpenAPI spec (stable.json) to validate request bodies against; "
    "without it bodies are not schema-checked.",
)
@click.option(
    "--api-key",
    "api_keys",
    multiple=True,
    metavar="KEY[=ACCOUNT]",
    envvar="KLAVIYO_API_KEY",
    show_envvar=True,
    help="An accepted private API key and the account it belongs to (repeatable; each "
    "account has its own data and rate limits). Default: KLAVIYO_API_KEY as account "
    "'default'.",
)
@click.option(
    "--revision",
    default=DEFAULT_REVISION,
    show_default=True,
    help="The API revision the 'revision' header must carry.",
)
@click.option(
    "--rate-limits/--no-rate-limits",
    default=True,
    show_default=True,
    help="Enforce Klaviyo's per-account burst and steady rate limits.",
)
@click.option(
    "--rate-limit",
    "rate_limit_overrides",
    multiple=True,
    metavar="ENDPOINT=BURST/STEADY",
    help="Override one endpoint's limits, e.g. events=2/30 (repeatable).",
)
@click.option(
    "--no-validate",
    is_flag=True,
    default=False,
    help="Skip OpenAPI schema validation even when a spec is given (ingestion limits, dedup "
    "and rate limits still apply).",
)
@click.option(
    "--drop-test-emails",
    is_flag=True,
    default=False,
    help="Like real Klaviyo, silently drop events of example.com / test.com addresses.",
)
@click.option(
    "--job-duration",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Seconds from the POST of a profile import or catalog job to its completion; its "
    "items are stored only then. 0 completes jobs at once.",
)
@click.option(
    "--job-queued",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="How long of that a job is 'queued' before it is 'processing'.",
)
@click.option(
    "--job-duration-for",
    "job_durations",
    multiple=True,
    metavar="ENDPOINT=SECONDS",
    help="The job duration of one endpoint, e.g. catalog_create=2 (repeatable).",
)
@click.option(
    "--strict-catalog/--lenient-catalog",
    default=True,
    show_default=True,
    help="Klaviyo's catalog rules inside jobs: a create of an existing item or category, an "
    "update or delete of a missing one, or an item naming a missing category fails that item. "
    "--lenient-catalog lets every item succeed (the last write wins).",
)
@click.option(
    "--log-level",
    default="WARNING",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="Log level of the emulator (logs never contain keys, e-mails or phone numbers).",
)
def emulator_command(
    host: str,
    port: int,
    spec: Path | None,
    api_keys: tuple[str, ...],
    revision: str,
    rate_limits: bool,
    rate_limit_overrides: tuple[str, ...],
    no_validate: bool,
    drop_test_emails: bool,
    job_duration: float,
    job_queued: float,
    job_durations: tuple[str, ...],
    strict_catalog: bool,
    log_level: str,
) -> None:
    """Run the emulator until SIGTERM/SIGINT."""
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr)
    if not api_keys:
        raise click.UsageError("no API key: pass --api-key KEY[=ACCOUNT] or set KLAVIYO_API_KEY")
    try:
        config = EmulatorConfig(
            api_keys=parse_api_keys(api_keys),
            host=host,
            port=port,
            revision=revision,
            spec_path=spec,
            validate=not no_validate,
            rate_limits=RateLimitSettings(
                enabled=rate_limits, overrides=parse_rate_limits(rate_limit_overrides)
            ),
            drop_test_email_domains=drop_test_emails,
            jobs=JobSettings(
                duration_seconds=job_duration,
                queued_seconds=job_queued,
                durations=parse_job_durations(job_durations),
                strict_catalog=strict_catalog,
            ),
        )
        server = EmulatorServer(config)
    except KafkaKlaviyoError as exc:
        raise click.ClickException(str(exc)) from exc

    def on_signal(signum: int, frame: FrameType | None) -> None:
        server.request_stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

    def ready(url: str) -> None:
        click.echo(
            f"emulator: {server.validation_note}; accounts: {', '.join(config.accounts)}; "
            f"revision {config.revision}; rate limits {'on' if rate_limits else 'off'}",
            err=True,
        )
        click.echo(f"Klaviyo emulator ready at {url}")
        sys.stdout.flush()

    # A 1,000-event body parses into ~10,000 objects that live for the whole request; at
    # CPython's default young threshold (700) they are walked and promoted many times over
    # and trigger full collections (measured: a third of the emulator's CPU per event). The
    # validators built at startup are frozen out of collections altogether.
    gc.freeze()
    gc.set_threshold(50_000, *gc.get_threshold()[1:])
    try:
        server.serve_forever(on_ready=ready)
    except KafkaKlaviyoError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo("Klaviyo emulator stopped", err=True)


def main() -> None:  # pragma: no cover - convenience for ``python -m kafka_klaviyo_dev.emulator``
    """Run the command standalone."""
    emulator_command(prog_name="python -m kafka_klaviyo_dev.emulator")
