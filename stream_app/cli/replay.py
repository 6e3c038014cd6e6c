"""`churnwatch replay-monthly`: real operators' monthly data through the live broker, worker and
Redis (or to a file that `model bootstrap --from` reads)."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

import click
import msgspec
from kafka import KafkaProducer
from rich.progress import Progress

from stream_app.cli.common import kafka_reachable
from stream_app.connect.kafka import client_options
from stream_app.offline.monthly_data import Mapping, MappingError, MonthlyRow, load_mapping, monthly_events, read_rows
from stream_app.settings import Settings

__all__ = ["replay_monthly", "load_table", "month_progress"]


@click.command("replay-monthly")
@click.argument("data", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--mapping", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="How the table maps onto churnwatch's counters (see mappings/).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the records as JSON lines here instead of producing them to KAFKA_BOOTSTRAP.")
@click.option("--json", "as_json", is_flag=True, help="End with one JSON summary line.")
def replay_monthly(data: Path, mapping: Path, out: Path | None, as_json: bool) -> None:
    """Turn a table of per-customer monthly aggregates into the events churnwatch consumes, in time order."""
    settings = Settings()
    spec, rows = load_table(data, mapping)
    if out is None and not settings.kafka_bootstrap:
        raise click.UsageError("set KAFKA_BOOTSTRAP, or pass --out FILE")
    if out is None:
        kafka_reachable(settings)
    started = time.perf_counter()
    counts: dict[str, int] = {}
    with month_progress(data.name, rows, as_json) as advance:
        records = monthly_events(rows, spec.label, settings.zone, month_done=advance)
        for topic, _ in _sent(records, settings, out):
            counts[topic] = counts.get(topic, 0) + 1
    summary = {"customers": len(rows), "churners": sum(r.churned for r in rows), "events_by_topic": counts,
               "months": sorted({m for r in rows for m in r.months}), "seconds": round(time.perf_counter() - started, 1)}
    click.echo(f"replayed {sum(counts.values()):,} events of {len(rows):,} customers ({summary['churners']} churners) "
               f"in {summary['seconds']} s", err=as_json)
    if as_json:
        click.echo(json.dumps(summary))


@contextmanager
def month_progress(name: str, rows: list[MonthlyRow], hidden: bool) -> Iterator[Callable[[str], None]]:
    """A progress bar over the table's months (on the terminal, gone when done); yields what to call
    as each month is replayed."""
    months = len({m for r in rows for m in r.months})
    with Progress(transient=True, disable=hidden) as progress:
        task = progress.add_task(f"replaying {name}, {len(rows):,} customers", total=months)
        yield lambda month: progress.update(task, advance=1, description=f"replaying {name}: {month} done")


def load_table(data: Path, mapping: Path) -> tuple[Mapping, list[MonthlyRow]]:
    """The mapping and the rows it reads from `data`; a problem in either stops the command, named."""
    try:
        spec = load_mapping(mapping)
        return spec, read_rows(data, spec)
    except MappingError as exc:
        raise click.ClickException(str(exc)) from None


def _sent(records: Iterable[tuple[str, bytes, bytes]], settings: Settings, out: Path | None):
    """Each record as it is written or produced: (topic it went to, key)."""
    if out is not None:
        with out.open("wb") as f:
            for topic, key, value in records:
                f.write(msgspec.json.encode({"topic": topic, "key": key.decode(), "value": value.decode()}) + b"\n")
                yield topic, key
        return
    names = {"cdr": settings.topics.cdr, "billing": settings.topics.billing, "customers": settings.topics.customers}
    producer = KafkaProducer(**client_options(settings), linger_ms=20, batch_size=256 * 1024,
                             acks="all")
    try:
        for topic, key, value in records:
            producer.send(names[topic], key=key, value=value)
            yield names[topic], key
        producer.flush()
    finally:
        producer.close()
