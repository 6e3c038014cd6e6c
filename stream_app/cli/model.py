"""The model's commands: `trainer`, `model report`, `model bootstrap` and `evaluate`."""

from __future__ import annotations

import json
import logging
import logging.config
import math
import os
import resource
import signal
import time
from dataclasses import asdict
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Collection

import click

from stream_app.cli.common import kafka_ready, logging_setup, read_rules, read_settings

if TYPE_CHECKING:
    from stream_app.model.saving import SavingModel
    from stream_app.settings import Settings

__all__ = ["trainer", "model", "evaluate"]

log = logging.getLogger(__name__)


def _redis(settings: Settings) -> Any:
    from stream_app.connect.redis import connect_redis_sync

    if settings.redis_url is None:
        raise click.ClickException("set REDIS_URL")
    url = settings.redis_url.get_secret_value()
    return connect_redis_sync(url, settings.redis_cluster)


def _rules(settings):
    ruleset = read_rules(settings)
    return lambda: ruleset


@click.command()
@click.option("--metrics-port", default=9109, show_default=True, help="where the trainer's /metrics listens")
def trainer(metrics_port: int) -> None:
    """Label snapshots, learn, publish model versions to Redis. Run exactly one (a lease enforces it)."""
    from prometheus_client import CollectorRegistry, start_http_server

    from stream_app.metrics import TrainerMetrics
    from stream_app.model.registry import LeaseLost
    from stream_app.model.trainer import run_trainer

    settings = read_settings()
    logging.config.dictConfig(logging_setup(settings))
    if not settings.kafka_bootstrap or settings.redis_url is None:
        raise click.ClickException("set KAFKA_BOOTSTRAP and REDIS_URL")
    _need_signing_key(settings)
    registry = CollectorRegistry()
    metrics = TrainerMetrics(registry)
    kafka_ready(settings)
    start_http_server(metrics_port, addr="0.0.0.0", registry=registry)
    stopping = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.append(True))
    try:
        run_trainer(settings, metrics, lambda: bool(stopping))
    except LeaseLost as exc:
        # Paused past its lease (a long GC, a frozen VM): another trainer has taken over.
        raise click.ClickException(f"stopping: this trainer lost its lease to another ({exc})") from None


def _need_signing_key(settings: Settings) -> None:
    if settings.model_signing_key is None:
        raise click.ClickException(
            "set CHURNWATCH_MODEL_SIGNING_KEY (16+ characters, the same for the trainer and the workers): "
            "the trainer's checkpoint is a pickle, and only a signed one is read back")


@click.group()
def model() -> None:
    """Inspect and seed the churn model."""


@model.command("report")
@click.option("--json", "as_json", is_flag=True, help="end with one JSON object")
def model_report(as_json: bool) -> None:
    """The published model: version, labels learned, progressive-validation figures, and what calls keep."""
    from stream_app.contracts import keys
    from stream_app.model.scoring import ModelRefused, decode_model, model_features

    settings = read_settings()
    raw = _redis(settings).get(keys.MODEL)
    if raw is None:
        raise click.ClickException("no model published yet: the service scores with rules alone")
    try:
        snap = decode_model(raw, model_features(settings.attributes))
    except ModelRefused as exc:
        raise click.ClickException(f"the published model is unusable: {exc}") from None
    created = datetime.fromtimestamp(snap.created_at, timezone.utc).isoformat(timespec="seconds")
    report = {"version": snap.version, "kind": snap.kind, "labels": snap.labels, "created_at": created,
              "attributes": len(settings.attributes), **snap.figures, "promotions": snap.promotions}
    for name, value in report.items():
        click.echo(f"{name:22} {value:.4f}" if isinstance(value, float) else f"{name:22} {value}", err=as_json)
    for candidate, shown in snap.candidates.items():
        figures = ", ".join(f"{k} {v:.3f}" for k, v in shown.items() if k in ("auc", "precision_at_budget", "labels"))
        click.echo(f"candidate {candidate:12} {figures}", err=as_json)
    report["candidates"] = snap.candidates
    report["calls"] = _call_evidence(snap.saving, as_json)
    if as_json:
        click.echo(json.dumps(report))


def _call_evidence(saving: SavingModel | None, as_json: bool) -> dict | None:
    """What calls keep, per action, as the call list uses it (model/saving.py)."""
    if saving is None:
        return None
    shown = saving.to_json()
    state = "in use: the call list ranks by expected saving" if shown["ready"] else \
        "not enough yet: the call list ranks by value at risk"
    click.echo(f"evidence of calls      {state} (control: {saving.control.decisions} alerts, "
               f"{saving.control.expected:.1f} expected churners; calibration {shown['calibration']:.2f})", err=as_json)
    from stream_app.model.control_rates import RISK_BANDS

    edges = ["0", *map(str, RISK_BANDS), "1"]
    click.echo("  control's churn per alert, by risk: " + ", ".join(
        f"{lo}-{hi} {f:.2f}" for lo, hi, f in zip(edges, edges[1:], shown["churn_by_band"])), err=as_json)
    for action, figures in shown["actions"].items():
        click.echo(f"  {action:20} {figures['calls']} calls, keeps {figures['kept']:.1%} of would-be churners, "
                   f"offer taken {figures['accepted']:.1%}", err=as_json)
    return shown


@model.command("bootstrap")
@click.option("--from", "source", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="recorded events, as written by `churnwatch simulate --out`")
@click.option("--force", is_flag=True, help="replace a model the trainer has already published")
@click.option("--json", "as_json", is_flag=True, help="end with one JSON object")
def model_bootstrap(source: Path, force: bool, as_json: bool) -> None:
    """Train from a replay of historical events and publish the result, before going live."""
    from stream_app.contracts import keys
    from stream_app.model.registry import publish
    from stream_app.model.signing import Signer
    from stream_app.offline.replay import recorded, replay

    settings = read_settings()
    _need_signing_key(settings)
    client = _redis(settings)
    if client.exists(keys.MODEL) and not force:
        raise click.ClickException("a model is already published; pass --force to replace it")
    lease = client.lock(keys.TRAINER_LEASE, timeout=600)
    if not lease.acquire(blocking=False):
        raise click.ClickException("a trainer is running (it holds the lease): stop it before a bootstrap")
    result = replay(recorded(source, settings.topics), settings, _rules(settings))
    core = result.core
    assert core is not None
    if core.learner.labels == 0:
        raise click.ClickException(f"{source} gave no labels: it needs more than {settings.horizon_days} days")
    signer = Signer.of(settings)
    snapshot = core.next_model(signer)
    # Offsets of the replay mean nothing on the live topics: the trainer starts them afresh.
    core.learned, core.labels_offset = {}, 0
    try:
        publish(client, snapshot, core.checkpoint(signer), lease.local.token)
    finally:
        lease.release()
    report = {"version": snapshot.version, "labels": snapshot.labels, "events": result.events, **snapshot.figures}
    click.echo(f"published model version {snapshot.version} from {result.events:,} events "
               f"({snapshot.labels:,} labels, AUC {snapshot.figures.get('auc', math.nan):.3f})", err=as_json)
    if as_json:
        click.echo(json.dumps(report))


@click.command()
@click.option("--customers", default=1000, show_default=True, help="simulated customers")
@click.option("--days", default=360, show_default=True, help="simulated days, the warm-up included")
@click.option("--seed", default=7, show_default=True)
@click.option("--monthly-churn", default=0.02, show_default=True,
              help="share of the base leaving each month after the warm-up")
@click.option("--warmup-days", default=180, show_default=True,
              help="days of history before the first simulated churn: a warm base, as an operator's is; 180 gives "
                   "every churner the months m3-m6 that the model's usual activity comes from")
@click.option("--replay", "data", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="real monthly data to replay instead of simulated traffic (with --mapping)")
@click.option("--mapping", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="how --replay's columns map onto churnwatch's counters (see mappings/)")
@click.option("--doc", type=click.Path(dir_okay=False, path_type=Path),
              help="with --replay: refresh this data's section of this document (docs/evaluation.md holds "
                   "the published figures); without it nothing is written")
@click.option("--closed-loop", is_flag=True,
              help="with the simulated call centre making the calls: what they kept, measured against the "
                   "simulator's truth, and how well uplift learned online ranks them")
@click.option("--lists", is_flag=True,
              help="the lifecycle lists (growth, win-back, competitor) built from what the pipeline kept, against the "
                   "simulator's truth of who it made grow and leave and what the competitors' customers spend")
@click.option("--grow-share", default=0.05, show_default=True, type=click.FloatRange(0, 1),
              help="with --lists: staying customers the simulator makes grow (the build-up stage)")
@click.option("--call-budget", type=click.IntRange(1),
              help="with --closed-loop: calls a day (default: CHURNWATCH_CALL_BUDGET_SHARE of the customers a week)")
@click.option("--ranking", "rankings", multiple=True, type=click.Choice(["risk", "risk_value", "saving"]),
              help="with --closed-loop: loop only these rankings beside risk_value, the product's, which always "
                   "runs (repeatable; default: all three)")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="with --closed-loop: rankings looped at once, each in a process of its own (default: the "
                   "cores this process may use, at most 3, one per ranking)")
@click.option("--json", "as_json", is_flag=True, help="end with one JSON object")
def evaluate(customers: int, days: int, seed: int, monthly_churn: float, warmup_days: int, data: Path | None,
             mapping: Path | None, doc: Path | None, closed_loop: bool, lists: bool, grow_share: float,
             call_budget: int | None, rankings: tuple[str, ...], jobs: int | None, as_json: bool) -> None:
    """Replay simulated traffic (or real monthly data) through the pipeline; compare the model, the rules,
    both, and a batch reference."""
    if data is not None:
        _evaluate_real(data, mapping, doc, as_json)
        return
    if warmup_days >= days:
        raise click.UsageError(f"--warmup-days {warmup_days} leaves no day of --days {days} for anyone to leave: "
                               "make it smaller or --days larger")
    if closed_loop:
        _evaluate_closed_loop(customers, days, seed, monthly_churn, warmup_days, call_budget,
                              rankings or ("risk", "saving"), jobs, as_json)
        return
    if lists:
        _evaluate_lists(customers, days, seed, monthly_churn, warmup_days, grow_share, as_json)
        return
    from stream_app.offline.ceiling import truth_features
    from stream_app.offline.evaluate import evaluate_replay
    from stream_app.offline.replay import replay
    from stream_app.offline.simulator import SimConfig, Simulator

    settings = read_settings()
    sim = Simulator(SimConfig(customers=customers, days=days, seed=seed, monthly_churn=monthly_churn,
                              warmup_days=warmup_days, keep_counts=True))
    result = replay(((r.topic, r.key, r.value) for r in sim.records()), settings, _rules(settings))
    core = result.core
    assert core is not None
    truth = {t.customer_id: date.fromisoformat(t.churn_date) if t.churn_date else None for t in sim.truth}
    silent = {t.customer_id for t in sim.truth if t.pattern == "silent_churner"}
    ev = evaluate_replay(result.snapshots, result.alerts, truth, settings.horizon_days, settings.call_budget_share,
                         core.version, core.learner.labels, silent=silent,
                         truth=lambda who, when: truth_features(sim, who, when),
                         score_levels=(settings.model_medium_score, settings.model_high_score))
    report = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(ev).items()}
    report |= {"events": result.events, "events_per_s": round(result.events / result.seconds),
               "champion": core.contest.champion, "promotions": core.contest.promotions,
               "refits": core.contest.refits}
    click.echo(f"replayed {result.events:,} events in {result.seconds:.0f} s; "
               f"model version {core.version} after {core.learner.labels:,} labels", err=as_json)
    for name, value in report.items():
        click.echo(f"  {name:26} {value:.3f}" if isinstance(value, float) else f"  {name:26} {value}", err=as_json)
    if as_json:
        click.echo(json.dumps(report))


def _evaluate_closed_loop(customers: int, days: int, seed: int, monthly_churn: float, warmup_days: int,
                          budget: int | None, rankings: Collection[str], jobs: int | None, as_json: bool) -> None:
    from stream_app.offline.closed_loop import evaluate_closed_loop
    from stream_app.offline.simulator import SimConfig

    settings = read_settings()
    budget = budget or max(1, round(customers * settings.call_budget_share / 7))
    cfg = SimConfig(customers=customers, days=days, seed=seed, monthly_churn=monthly_churn, warmup_days=warmup_days)
    jobs = jobs or min(3, len(os.sched_getaffinity(0)))
    report = evaluate_closed_loop(settings, read_rules(settings), cfg, budget, jobs, rankings).to_json()
    for name, value in report.items():
        click.echo(f"  {name:26} {value}", err=as_json)
    if as_json:
        click.echo(json.dumps(report))


LISTS_COMEBACK_SHARE = 0.1  # leavers over price who port back, for the win-back list (SimConfig.comeback_share)


def _evaluate_lists(customers: int, days: int, seed: int, monthly_churn: float, warmup_days: int,
                    grow_share: float, as_json: bool) -> None:
    from stream_app.offline.lists_eval import evaluate_lists
    from stream_app.offline.simulator import SimConfig

    settings = read_settings()
    cfg = SimConfig(customers=customers, days=days, seed=seed, monthly_churn=monthly_churn, warmup_days=warmup_days,
                    grow_share=grow_share, comeback_share=LISTS_COMEBACK_SHARE)
    report = evaluate_lists(settings, _rules(settings), cfg).to_json()
    for name, value in report.items():
        click.echo(f"  {name:26} {value}", err=as_json)
    if as_json:
        click.echo(json.dumps(report))


def _peak_kb() -> int:
    """The process's peak resident memory so far, in KB (Linux counts ru_maxrss in KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _evaluate_real(data: Path, mapping: Path | None, doc: Path | None, as_json: bool) -> None:
    from stream_app.cli.replay import load_table, month_progress
    from stream_app.offline.evaluate_monthly import evaluate_monthly, markdown, refresh_doc

    if mapping is None:
        raise click.UsageError("--replay needs --mapping")
    settings = read_settings()
    started, peak = time.perf_counter(), _peak_kb()
    spec, rows = load_table(data, mapping)
    with month_progress(data.name, rows, as_json) as advance:
        result = evaluate_monthly(data.stem, rows, spec, settings, _rules(settings), advance)
    result.total_seconds = round(time.perf_counter() - started, 1)
    result.peak_kb_per_customer = round((_peak_kb() - peak) / max(1, result.customers), 1)
    section = markdown(result, f"churnwatch evaluate --replay {data.name} --mapping {mapping.name}")
    click.echo(section, err=as_json)
    if doc is not None:
        doc.parent.mkdir(parents=True, exist_ok=True)
        refresh_doc(doc, section, data.stem)
        click.echo(f"refreshed {doc}", err=as_json)
    if as_json:
        click.echo(json.dumps(result.to_json()))
