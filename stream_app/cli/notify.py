"""`churnwatch notify`: the account managers' warnings (stream_app/notify, docs/managers.md)."""

from __future__ import annotations

import asyncio
import json
import logging.config
import signal
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import click

from stream_app.cli.common import kafka_ready, logging_setup, read_settings

if TYPE_CHECKING:
    from stream_app.settings import Settings

__all__ = ["notify"]


@click.group()
def notify() -> None:
    """Tell account managers of their customers' warnings: HIGH at once, the rest in a daily digest."""


def _ready() -> Settings:
    settings = read_settings()
    if not settings.kafka_bootstrap or settings.redis_url is None:
        raise click.ClickException("set KAFKA_BOOTSTRAP and REDIS_URL: the notifier reads the alerts topic and keeps "
                                   "what it sent in Redis")
    return settings


@notify.command("run")
@click.option("--metrics-port", default=9110, show_default=True, help="where the notifier's /metrics listens")
def run(metrics_port: int) -> None:
    """Follow the alerts topic and deliver; the digests go out at CHURNWATCH_NOTIFY_DIGEST_HOUR."""
    from prometheus_client import CollectorRegistry, start_http_server

    from stream_app.metrics import NotifyMetrics
    from stream_app.notify.directory import Directory
    from stream_app.notify.service import run_notifier

    settings = _ready()
    logging.config.dictConfig(logging_setup(settings))
    directory = Directory.of(settings)  # a mistake in the file stops the command before anything is read
    kafka_ready(settings)
    registry = CollectorRegistry()
    metrics = NotifyMetrics(registry)
    start_http_server(metrics_port, addr="0.0.0.0", registry=registry)

    async def main() -> None:
        stopping = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stopping.set)
        await run_notifier(settings, metrics, stopping, directory)

    asyncio.run(main())


@notify.command("digest")
@click.option("--through", "through", type=click.DateTime(["%Y-%m-%d"]),
              help="send the warnings of the days up to this one (default: the day before today)")
@click.option("--json", "as_json", is_flag=True, help="end with one JSON object")
def send_digest(through: datetime | None, as_json: bool) -> None:
    """Send the digests now (those already sent are not sent again)."""
    from prometheus_client import CollectorRegistry

    from stream_app.metrics import NotifyMetrics
    from stream_app.notify.service import open_notifier

    settings = _ready()
    kafka_ready(settings)
    day = through.date() if through else datetime.now(settings.zone).date() - timedelta(days=1)

    async def main() -> dict | None:
        async with open_notifier(settings, NotifyMetrics(CollectorRegistry())) as notifier:
            run = await notifier.digests.send(day)
            return run.to_json() if run else None

    doc = asyncio.run(main())
    if doc is None:
        raise click.ClickException("another notifier holds the digests' lock in Redis (a run cut short holds it "
                                   "up to 10 minutes); try again later")
    click.echo(f"digests through {doc['through']}: {doc['alerts']} warnings to {doc['recipients']} recipients, "
               f"{doc['failed']} failed (to dead letter)", err=as_json)
    if as_json:
        click.echo(json.dumps(doc))


@notify.command("check")
@click.option("--json", "as_json", is_flag=True, help="end with one JSON object")
def check(as_json: bool) -> None:
    """Read the managers file and say who is reached how, and who supervises whom."""
    from stream_app.notify.delivery import channels
    from stream_app.notify.directory import Directory

    settings = read_settings()
    directory = Directory.of(settings)
    rows = {m: {"name": spec.name, "channels": [c for c, _ in channels(spec)], "supervisor": spec.supervisor,
                "team": directory.team(m)} for m, spec in sorted(directory.managers.items())}
    for m, row in rows.items():
        team = f", supervises {', '.join(row['team'])}" if row["team"] else ""
        click.echo(f"{m:20} {row['name'] or '-':24} {'+'.join(row['channels'])}{team}", err=as_json)
    if as_json:
        click.echo(json.dumps({"managers": rows}))
