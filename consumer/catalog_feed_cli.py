"""``kafka-klaviyo catalog-feed``: its options and help text, parsed into
:class:`~consumer.catalog_feed_command.FeedOptions`.

Registered by :mod:`consumer.cli` with ``cli.add_command(catalog_feed_command, "catalog-feed")``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from consumer.catalog_feed import FEED_LIMIT_BYTES, HIDE_OUT_OF_STOCK, SHOW_OUT_OF_STOCK
from consumer.errors import ConfigError
from consumer.exit_codes import EXIT_CONFIG, EXIT_FATAL, finish
from consumer.logs import configure_logging
from consumer.messages import DEFAULT_ACCOUNT
from consumer.redact import mask


def _listen_address(text: str | None) -> tuple[str, int] | None:
    if text is None:
        return None
    host, _, port_text = text.rpartition(":")
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise click.BadParameter(f"{text!r}: give [HOST:]PORT, e.g. 8080 or 0.0.0.0:8080")
    return (host or "127.0.0.1", port)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="KAFKA_KLAVIYO_CONFIG",
    help="YAML configuration file (env: KAFKA_KLAVIYO_CONFIG): brokers, Schema Registry, "
    "accounts and routing, as for `run`.",
)
@click.option(
    "--topic",
    "topics",
    multiple=True,
    help="Topic holding the ProductUpserted/ProductDeleted records, ideally compacted "
    "(repeatable) [default: kafka.topics].",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the feed to this file, replaced atomically (temporary file + rename).",
)
@click.option(
    "--listen",
    metavar="[HOST:]PORT",
    help="Serve the feed over HTTP here instead (HOST defaults to 127.0.0.1; port 0 picks one).",
)
@click.option(
    "--path",
    "url_path",
    default="/catalog.json",
    show_default=True,
    help="URL path the feed is served at with --listen.",
)
@click.option(
    "--once",
    is_flag=True,
    help="Build the feed from the topic up to its end offsets, write it and exit (needs "
    "--output). Without it the command keeps consuming and keeps the feed current.",
)
@click.option(
    "--account",
    default=DEFAULT_ACCOUNT,
    show_default=True,
    help="Klaviyo account whose feed this is: with routing configured, only products routed "
    "to it (as `run` would route them) are in the feed.",
)
@click.option(
    "--out-of-stock",
    type=click.Choice(["hide", "show"]),
    default="hide",
    show_default=True,
    help="inventory_policy of products with tracked inventory: hide (1) keeps them out of "
    "Klaviyo's product feeds and recommendations while out of stock, show (2) never does.",
)
@click.option(
    "--max-bytes",
    type=click.IntRange(1, FEED_LIMIT_BYTES),
    default=FEED_LIMIT_BYTES,
    show_default=True,
    help="Largest feed published (Klaviyo's limit is 100 MB); lower it to keep headroom.",
)
@click.option(
    "--interval",
    "interval_s",
    type=click.FloatRange(0),
    default=10.0,
    show_default=True,
    help="While running, publish the changed catalog at most this often (seconds).",
)
def catalog_feed_command(
    config_file: Path | None,
    topics: tuple[str, ...],
    output: Path | None,
    listen: str | None,
    url_path: str,
    once: bool,
    account: str,
    out_of_stock: str,
    max_bytes: int,
    interval_s: float,
) -> None:
    """Build Klaviyo's custom catalog feed (JSON) from the product topic.

    Reads every partition of the topic from its beginning with its own consumer (partitions
    assigned by hand, nothing committed), decodes ProductUpserted and ProductDeleted records
    with the service's decoder and keeps the latest state per product id. Once the topic is
    read up to its end offsets the feed is written to --output (atomically) or served at
    --listen (with an ETag; If-None-Match gets 304). Then it keeps consuming and publishes
    changes, or with --once exits. A first feed over --max-bytes exits 2 with nothing
    written; a later one is logged and the last feed that fit stays. Set catalog.source: feed
    so `run` refuses to send catalog items to the Catalog API as well.
    """
    if (output is None) == (listen is None):
        raise click.UsageError("give --output FILE or --listen [HOST:]PORT (one of them)")
    if once and output is None:
        raise click.UsageError("--once writes a file: give --output FILE")
    if not url_path.startswith("/"):
        raise click.BadParameter(f"{url_path!r}: must start with /", param_hint="--path")
    address = _listen_address(listen)
    from consumer.catalog_feed_command import FeedOptions, run_catalog_feed
    from consumer.settings import load_settings

    options = FeedOptions(
        topics=topics,
        output=output,
        listen=address,
        path=url_path,
        once=once,
        account=account,
        out_of_stock_policy=HIDE_OUT_OF_STOCK if out_of_stock == "hide" else SHOW_OUT_OF_STOCK,
        max_bytes=max_bytes,
        interval_s=interval_s,
    )
    code = EXIT_FATAL
    try:
        settings = load_settings(config_file)
        configure_logging(settings.observability.log_level)
        code = run_catalog_feed(settings, options)
    except ConfigError as exc:
        click.echo(f"kafka-klaviyo: configuration error: {exc}", err=True)
        code = EXIT_CONFIG
    except Exception as exc:
        logging.getLogger(__name__).error(
            "catalog feed failed: %s", mask(f"{type(exc).__name__}: {exc}"), exc_info=exc
        )
    finally:
        finish(code)
