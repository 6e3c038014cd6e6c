"""The `churnwatch` command."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from datetime import date, timedelta
from pathlib import Path

import click
import msgspec

from stream_app.cli.common import kafka_reachable, kafka_ready, logging_setup, read_settings
from stream_app.contracts.events import CONTRACTS, json_schema
from stream_app.errors import ChurnwatchError
from stream_app.features.derive import FEATURES
from stream_app.privacy import Pseudonyms

SCHEMA_DIR = Path(__file__).parents[1] / "contracts" / "schemas"


class _Commands(click.Group):
    """Every error the package raises on purpose (`ChurnwatchError`), and a broker or Redis that
    cannot be reached, ends a command with one clear line, never a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        from kafka.errors import KafkaConnectionError, KafkaTimeoutError
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        try:
            return super().invoke(ctx)
        except ChurnwatchError as exc:
            raise click.ClickException(str(exc)) from None
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise click.ClickException(f"Redis at {_redis_where()} cannot be reached ({exc}); "
                                       "check REDIS_URL and that Redis is running") from None
        except (KafkaTimeoutError, KafkaConnectionError) as exc:
            raise click.ClickException(f"Kafka at {_kafka_where()} cannot be reached ({exc}); "
                                       "check KAFKA_BOOTSTRAP and that the broker is running") from None


def _redis_where() -> str:
    """The Redis the settings name, without its password."""
    from urllib.parse import urlsplit

    try:
        secret = read_settings().redis_url
        url = urlsplit(secret.get_secret_value() if secret else "")
    except (click.ClickException, ValueError):
        return "REDIS_URL"
    return f"{url.scheme}://{url.hostname}:{url.port or 6379}{url.path}" if url.hostname else "REDIS_URL"


def _kafka_where() -> str:
    try:
        return read_settings().kafka_bootstrap or "KAFKA_BOOTSTRAP"
    except click.ClickException:
        return "KAFKA_BOOTSTRAP"


@click.group(cls=_Commands)
def main() -> None:
    """churnwatch: real-time churn early warning for mobile operators."""


@main.command()
def worker() -> None:
    """Consume CDR, billing, profile and outcome topics; emit alerts. Needs KAFKA_BOOTSTRAP and REDIS_URL.

    Serves /metrics, /healthz and /readyz on CHURNWATCH_METRICS_PORT."""
    from faust.worker import Worker
    from prometheus_client import CollectorRegistry

    from stream_app.metrics import Metrics
    from stream_app.worker.app import create_app, quieten_gc
    from stream_app.worker.endpoints import Health, serve

    settings = read_settings()
    if not settings.kafka_bootstrap or settings.redis_url is None:
        raise click.ClickException("set KAFKA_BOOTSTRAP and REDIS_URL (or run `churnwatch demo`)")
    from stream_app import __version__

    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.build.info({"version": __version__})
    kafka_ready(settings)
    health = Health()
    app = create_app(settings, metrics, health)
    serve(settings.metrics_port, registry, health)
    quieten_gc()
    Worker(app, loglevel="INFO", logging_config=logging_setup(settings)).execute_from_commandline()


@main.command()
@click.option("--customers", default=300, show_default=True, help="simulated customers")
@click.option("--days", default=120, show_default=True, help="simulated days of traffic")
@click.option("--seconds", type=float, default=None, help="stop by itself after this many seconds")
@click.option("--seed", default=7, show_default=True)
@click.option("--monthly-churn", default=0.02, show_default=True, help="share of customers churning per month")
@click.option("--keep", is_flag=True, help="leave the embedded broker and Redis running afterwards, and say how "
                                            "to point the other commands at them")
@click.option("--json", "as_json", is_flag=True, help="end with one JSON summary line")
def demo(customers: int, days: int, seconds: float | None, seed: int, monthly_churn: float, keep: bool,
         as_json: bool) -> None:
    """Run the whole service on an embedded broker and Redis, fed by the simulator."""
    import tempfile

    from stream_app.cli.progress import live_status
    from stream_app.tools.demo import demo_settings, run_demo

    # The clients' own warnings (a slow event loop, a retried connection) would interleave with the
    # alerts: they go to a file, named once.
    log_file = Path(tempfile.gettempdir()) / "churnwatch-demo.log"
    logging.basicConfig(level=logging.WARNING, filename=log_file, filemode="w", force=True)
    click.echo(f"library messages go to {log_file}", err=as_json)
    with live_status(as_json) as (show, status):
        summary = run_demo(demo_settings(read_settings()), customers, days, seconds, show, seed=seed,
                           monthly_churn=monthly_churn, keep=keep, status=status)
    report = asdict(summary)
    click.echo(f"churners warned before they churned: {summary.churners_warned_before_churn} of {summary.churners}"
               f" ({summary.churners_with_signs} showed signs); alerts by level: {summary.alerts_by_level}",
               err=as_json)
    if summary.kept_pids:
        exports = " ".join(f"{k}={v}" for k, v in summary.kept_environment.items())
        click.echo("The broker and Redis are still running. In this shell, point the other commands at them:\n"
                   f"  export {exports}\n"
                   f"  churnwatch report churn; churnwatch calls daily --day {date.today() - timedelta(days=1)}; "
                   "churnwatch queue\n"
                   f"The queue page (http://127.0.0.1:8080/) takes agent {summary.kept_login['agent']}, "
                   f"password {summary.kept_login['password']}.\n"
                   f"Stop them with: kill {' '.join(map(str, summary.kept_pids))}", err=as_json)
    if as_json:
        click.echo(json.dumps(report))


@main.command()
@click.option("--customers", default=1000, show_default=True)
@click.option("--days", default=120, show_default=True)
@click.option("--seed", default=7, show_default=True)
@click.option("--monthly-churn", default=0.02, show_default=True,
              help="share of the base leaving each month after the warm-up")
@click.option("--warmup-days", default=70, show_default=True, help="days before the first churner leaves")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="write records as JSON lines here instead of producing to KAFKA_BOOTSTRAP")
@click.option("--truth", type=click.Path(path_type=Path), required=True, help="ground-truth file (JSON lines)")
@click.option("--regions", default=7, show_default=True, type=click.IntRange(1), help="branches, region-0 ...")
@click.option("--managers-per-region", default=0, show_default=True, type=click.IntRange(0),
              help="account managers per region for gold and diamond customers (am-<region>-<k>)")
@click.option("--comeback-share", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help="share of those who port out over price or a promotion who port back 30-120 days later")
@click.option("--json", "as_json", is_flag=True, help="end with one JSON summary line")
def simulate(customers: int, days: int, seed: int, monthly_churn: float, warmup_days: int, out: Path | None,
             truth: Path, regions: int, managers_per_region: int, comeback_share: float, as_json: bool) -> None:
    """Produce realistic synthetic traffic; write who really churned to --truth."""
    import threading

    from stream_app.offline.simulator import SimConfig, Simulator
    from stream_app.tools.demo import produce_simulation

    sim = Simulator(SimConfig(customers=customers, days=days, seed=seed, monthly_churn=monthly_churn,
                              warmup_days=warmup_days, regions=regions, managers_per_region=managers_per_region,
                              comeback_share=comeback_share))
    if out is not None:
        counts: dict[str, int] = {}
        with out.open("wb") as f:
            for rec in sim.records():
                f.write(msgspec.json.encode({"topic": rec.topic, "key": rec.key.decode(), "value": rec.value.decode()}))
                f.write(b"\n")
                counts[rec.topic] = counts.get(rec.topic, 0) + 1
    else:
        settings = read_settings()
        if not settings.kafka_bootstrap:
            raise click.ClickException("set KAFKA_BOOTSTRAP, or pass --out FILE")
        kafka_reachable(settings)
        counts = produce_simulation(sim, settings.kafka_bootstrap, settings, threading.Event())
    truth.write_bytes(b"".join(line + b"\n" for line in sim.truth_lines()))
    churners = sum(1 for t in sim.truth if t.churn_date)
    click.echo(f"records by topic: {counts}; churners: {churners} of {customers}", err=as_json)
    if as_json:
        click.echo(json.dumps({"events_by_topic": counts, "customers": customers, "churners": churners}))


@main.command()
@click.option("--events", default=1_000_000, show_default=True, type=click.IntRange(min=1),
              help="events measured through the broker, after a day of warm-up")
@click.option("--customers", default=100_000, show_default=True, type=click.IntRange(min=1))
@click.option("--no-broker", is_flag=True,
              help="only the pipeline into Redis, in this process (no broker, no worker): the state's cost")
@click.option("--days", default=31, show_default=True,
              help="with --no-broker: simulated days before memory is measured")
@click.option("--latency-seconds", default=30.0, show_default=True, help="length of the latency phase")
@click.option("--load", default=0.5, show_default=True, type=click.FloatRange(min=0, max=1, min_open=True),
              help="the latency phase's rate, as a share of the worker's measured rate (its headroom)")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True),
              help="the latency phase's rate in events/s, instead of --load: builds compared at the same rate")
@click.option("--json", "as_json", is_flag=True, help="end with one JSON summary line")
def bench(events: int, customers: int, no_broker: bool, days: int, latency_seconds: float, load: float,
          rate: float | None, as_json: bool) -> None:
    """Measure the worker against the bare-consumer ceiling, latency, memory, rules and model cost.

    Uses KAFKA_BOOTSTRAP and REDIS_URL if set (fresh topics; point REDIS_URL at a scratch
    database: simulated customers are written to it, and --no-broker clears churnwatch's keys
    between its passes with and without the off-net book), else embedded ones."""
    from stream_app.tools.bench import bench_model, bench_rules, bench_state

    settings = read_settings()
    if no_broker:
        result = asdict(bench_state(settings, customers, days))
    else:
        from stream_app.tools.bench_stream import bench_stream

        result = asdict(bench_stream(settings, events, customers, lambda line: click.echo(line, err=True),
                                     latency_seconds, load, fixed_rate=rate))
    result["rules"], result["rules_us_per_customer"] = bench_rules(settings)
    (result["model_score_us_per_customer"], result["model_learn_us_per_label"],
     result["boosted_score_us_per_customer"], result["boosted_refit_s"]) = bench_model(settings)
    tables = ("stages", "latency_stages")
    for name, value in result.items():
        if name not in tables:
            shown = "-" if value is None else format(value, ",")
            click.echo(f"{name:32} {shown:>14}", err=as_json)
    for table in (t for t in tables if t in result):
        click.echo(f"{table[:-1]:32} {'us/event':>14} {'share':>8} {'ratio':>8}", err=as_json)
        for stage, figures in result[table].items():
            click.echo(f"{stage:32} {figures['us_per_event']:>14,} {figures['share']:>8} "
                       f"{figures.get('ratio', '-'):>8}", err=as_json)
    if as_json:
        click.echo(json.dumps(result))


@main.command()
def features() -> None:
    """List the features that rules and the model can use."""
    for name, f in FEATURES.items():
        click.echo(f"{name:24} {f.unit:8} {f.description}")


@main.command()
@click.argument("customer")
@click.option("--as-of", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="evaluate features as of this day (default: the customer's newest usage day)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def inspect(customer: str, as_of, as_json: bool) -> None:
    """Show a customer's windows and features (needs REDIS_URL). With CHURNWATCH_PSEUDONYM_KEY
    set, a phone number is looked up by its pseudonym."""
    from stream_app.connect.redis import connect_redis_sync
    from stream_app.contracts import keys
    from stream_app.tools.inspection import describe, render

    settings = read_settings()
    if settings.redis_url is None:
        raise click.ClickException("set REDIS_URL")
    if customer.isdigit():
        customer = Pseudonyms.of(settings)(customer)
    client = connect_redis_sync(settings.redis_url.get_secret_value(), settings.redis_cluster)
    raw = client.get(keys.customer_state(customer))
    if raw is None:
        raise click.ClickException(f"no state for customer {customer!r} (unknown, or expired after idling)")
    report = describe(customer, raw, settings.zone, as_of.date() if as_of else None)
    click.echo(json.dumps(report) if as_json else render(report))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="End with one JSON object on the last line.")
def baselines(as_json: bool) -> None:
    """The live segment baselines in force: per segment and month-over-month feature, the
    quantiles that `segment_pQ(x)` in rules compares with (needs REDIS_URL)."""
    from rich.table import Table

    from stream_app.cli.report import report_console
    from stream_app.connect.redis import connect_redis_sync
    from stream_app.features.baseline_counts import read_baselines
    from stream_app.features.baselines import BASELINED, QUANTILES, BaselineRule

    settings = read_settings()
    if settings.redis_url is None:
        raise click.ClickException("set REDIS_URL: the baselines live in the workers' Redis")
    client = connect_redis_sync(settings.redis_url.get_secret_value(), settings.redis_cluster)
    try:
        found = read_baselines(client, BaselineRule.of(settings))
    finally:
        client.close()
    table = Table(title=f"Segment baselines as of {found.day or '-'}: the month judged now (used from "
                        f"{settings.baseline_min_samples} samples)", title_justify="left")
    for heading in ("segment", "feature", "samples", *(f"p{q}" for q in QUANTILES)):
        table.add_column(heading, justify="left" if heading in ("segment", "feature") else "right")
    rows = []
    for segment, feature in ((s, f) for s in found.segments() for f in BASELINED):
        values, n = found.current(segment, feature)
        shown = [values.get(q, float("nan")) for q in QUANTILES]
        table.add_row(segment, feature, f"{n:,}", *("-" if v != v else f"{v:+.0%}" for v in shown))
        rows.append({"segment": segment, "feature": feature, "samples": n,
                     **{f"p{q}": (None if v != v else round(v, 4)) for q, v in zip(QUANTILES, shown)}})
    report_console(as_json).print(table)
    if as_json:
        click.echo(json.dumps({"day": found.day.isoformat() if found.day else None, "baselines": rows}))


@main.command()
@click.argument("numbers", nargs=-1, required=True)
def pseudonym(numbers: tuple[str, ...]) -> None:
    """Print the pseudonym of each phone number under CHURNWATCH_PSEUDONYM_KEY: the customer id
    churnwatch keeps, alerts and reports for that number."""
    pseudonyms = Pseudonyms.of(read_settings())
    if not pseudonyms.enabled:
        raise click.ClickException("CHURNWATCH_PSEUDONYM_KEY is not set: customer ids are the numbers themselves")
    for number in numbers:
        click.echo(f"{number}\t{pseudonyms(number)}")


@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=SCHEMA_DIR, show_default=True)
def schemas(out: Path) -> None:
    """Write the JSON Schema of every event contract."""
    out.mkdir(parents=True, exist_ok=True)
    for name, kind in CONTRACTS.items():
        (out / f"{name}.schema.json").write_text(json.dumps(json_schema(kind), indent=2, sort_keys=True) + "\n")
    click.echo(f"wrote {len(CONTRACTS)} schemas to {out}")


def _add_commands() -> None:
    from stream_app.cli.calls import calls
    from stream_app.cli.model import evaluate, model, trainer
    from stream_app.cli.notify import notify
    from stream_app.cli.queue import agent, queue
    from stream_app.cli.replay import replay_monthly
    from stream_app.cli.report import report
    from stream_app.cli.rules import rules

    for command in (trainer, model, evaluate, report, calls, queue, agent, replay_monthly, rules, notify):
        main.add_command(command)


_add_commands()

if __name__ == "__main__":
    main()
