"""`churnwatch calls daily|monthly|winback`: the call centre's daily call list within its budget, the
monthly warning list, from the alerts on `churn.alerts`, and the win-back list of customers who
left; as a table, a CSV file and a topic."""

from __future__ import annotations

import csv
import json
from datetime import date, datetime
from pathlib import Path
from typing import Iterable, Iterator

import click
import msgspec
from kafka import KafkaProducer
from rich.table import Table

from stream_app.alerts.call_plan import for_call_centre, monthly_list, plan_days, summary_fields
from stream_app.alerts.winback import winback_list
from stream_app.cli.common import kafka_reachable
from stream_app.cli.report import month_option, report_console
from stream_app.connect.kafka import client_options
from stream_app.connect.redis import connect_redis_sync
from stream_app.connect.topic_reader import read_alerts, read_churn_events, read_outcomes
from stream_app.connect.topics import WINBACK_DAYS
from stream_app.contracts import keys
from stream_app.contracts.events import REASON_CODES, Alert, CallListEntry, WinbackEntry
from stream_app.settings import Settings

__all__ = ["calls"]

CSV_COLUMNS = ("rank", "alert_id", "customer_id", "level", "value_at_risk", "arpu", "score", "segment", "vip_tier",
               "lifecycle", "region", "queue", "suggested_action", "reason_code", "reasons", "event_time", "expires_at",
               "holdout")


@click.group()
def calls() -> None:
    """The call lists: today's calls within the call centre's budget, the monthly warning list, and who to win back."""


@calls.command("daily")
@click.option("--day", "day_", type=click.DateTime(["%Y-%m-%d"]), required=True, help="The day to plan, YYYY-MM-DD.")
@click.option("--budget", type=click.IntRange(1), help="Calls that day (default: CHURNWATCH_DAILY_CALL_BUDGET).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the list here.")
@click.option("--produce", is_flag=True, help="Send the list to the daily calls topic, in priority order.")
@click.option("--json", "as_json", is_flag=True, help="End with a JSON summary on the last line.")
def daily(day_, budget: int | None, csv_path: Path | None, produce: bool, as_json: bool) -> None:
    """The day's calls: the open alerts with the most value at risk, up to the budget; the rest wait or expire."""
    settings = Settings()
    kafka_reachable(settings)
    day = day_.date()
    alerts = for_call_centre(read_alerts(settings), settings.managed_by_call_centre)
    [plan] = plan_days(alerts, day, day, budget or settings.daily_call_budget, settings.zone,
                       settings.region_call_budgets)
    _show(f"Calls for {day}: {len(plan.calls)} of budget {budget or settings.daily_call_budget}", plan.calls, as_json)
    click.echo(f"waiting {plan.waiting}, expired {plan.expired}, control group {plan.holdout}, "
               f"superseded {plan.superseded}", err=as_json)
    _outputs(settings, plan.calls, csv_path, produce, settings.topics.calls_daily, {"day": day.isoformat()})
    if produce and settings.redis_url is not None:  # the plan in force: the workers export its counts
        client = connect_redis_sync(settings.redis_url.get_secret_value(), settings.redis_cluster)
        client.delete(keys.CALL_PLAN)
        client.hset(keys.CALL_PLAN, mapping=summary_fields(plan, settings.zone))
        client.close()
    if as_json:
        click.echo(json.dumps(plan.to_json()))


@calls.command("monthly")
@click.option("--month", required=True, callback=month_option, help="The month, YYYY-MM.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the list here.")
@click.option("--produce", is_flag=True, help="Send the list to the monthly warnings topic.")
@click.option("--json", "as_json", is_flag=True, help="End with a JSON summary on the last line.")
def monthly(month: str, csv_path: Path | None, produce: bool, as_json: bool) -> None:
    """The month's warning list: every customer warned that month, at their highest level."""
    settings = Settings()
    kafka_reachable(settings)
    listed = monthly_list(read_alerts(settings), month, settings.zone)
    _show(f"Warnings for {month}: {len(listed)} customers", listed, as_json)
    _outputs(settings, listed, csv_path, produce, settings.topics.calls_monthly, {"month": month})
    if as_json:
        levels = {level: sum(a.level == level for a in listed) for level in ("high", "medium", "low")}
        click.echo(json.dumps({"month": month, "customers": len(listed), "by_level": levels,
                               "value_at_risk": round(sum(a.value_at_risk for a in listed), 2)}))


@calls.command("winback")
@click.option("--day", "day_", type=click.DateTime(["%Y-%m-%d"]),
              help="The list's day, YYYY-MM-DD (default: the newest day a churn is known for).")
@click.option("--days", default=60, show_default=True, type=click.IntRange(1, WINBACK_DAYS),
              help="Who left in these days (the topics keep the churn events and alerts it needs).")
@click.option("--budget", type=click.IntRange(1), help="Calls to list at most (default: all).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the list here.")
@click.option("--produce", is_flag=True, help="Send the list to the win-back topic, in priority order.")
@click.option("--json", "as_json", is_flag=True, help="End with a JSON summary on the last line.")
def winback(day_, days: int, budget: int | None, csv_path: Path | None, produce: bool, as_json: bool) -> None:
    """Customers who left (or cut their spend) lately, worth most to win back first: their value before,
    the reason, tenure, and whether they were warned, called or in the control group."""
    settings = Settings()
    if not settings.kafka_bootstrap:
        raise click.UsageError("KAFKA_BOOTSTRAP is not set: the win-back list reads churn events, alerts and outcomes")
    kafka_reachable(settings)
    churns = list(read_churn_events(settings))
    newest = max((date.fromordinal(c.day) for c in churns), default=datetime.now(settings.zone).date())
    as_of = day_.date() if day_ else newest
    listed = winback_list(churns, read_alerts(settings), read_outcomes(settings), as_of, days, settings.zone)
    listed = listed[:budget] if budget else listed
    table = Table(title=f"Win-back list for {as_of}: {len(listed)} customers who left in {days} days",
                  title_justify="left")
    for name in ("#", "customer", "left on", "why", "monthly value", "tenure", "warned", "called", "priority"):
        table.add_column(name, justify="right" if name in ("#", "monthly value", "tenure", "priority") else "left")
    for e in listed[:50]:
        why = e.kind if e.reason_code is None else f"{e.kind} {e.reason_code} {REASON_CODES.get(e.reason_code, '')}"
        table.add_row(str(e.rank), e.customer_id, e.left_on, why.strip(), f"{e.monthly_value:,.2f}",
                      f"{e.tenure_days} d", ("control " if e.control else "") + (e.warned or "-"), e.called or "-",
                      f"{e.priority:,.2f}")
    report_console(as_json).print(table)
    if csv_path is not None:
        with csv_path.open("w", newline="") as f:
            writer = csv.DictWriter(f, WinbackEntry.__struct_fields__)
            writer.writeheader()
            writer.writerows(msgspec.structs.asdict(e) for e in listed)
    if produce:
        _produce(settings, settings.topics.calls_winback, [(e.customer_id, msgspec.json.encode(e)) for e in listed])
    if as_json:
        click.echo(json.dumps({"day": as_of.isoformat(), "days": days, "customers": len(listed),
                               "monthly_value": round(sum(e.monthly_value for e in listed), 2),
                               "warned": sum(e.warned is not None for e in listed),
                               "reached": sum(e.called not in (None, "not_reached") for e in listed)}))


def _show(title: str, alerts: list[Alert], as_json: bool) -> None:
    table = Table(title=title, title_justify="left")
    for name in ("#", "customer", "level", "value at risk", "suggested action", "why"):
        table.add_column(name, justify="right" if name in ("#", "value at risk") else "left")
    for rank, a in enumerate(alerts[:50], 1):
        table.add_row(str(rank), a.customer_id, a.level, f"{a.value_at_risk:,.2f}", a.suggested_action,
                      _reasons(a)[:120])
    console = report_console(as_json)
    console.print(table)
    if len(alerts) > 50:
        console.print(f"... and {len(alerts) - 50} more (see --csv)")


def _reasons(a: Alert) -> str:
    return "; ".join(r.text for r in a.reasons)


def _rows(alerts: Iterable[Alert]) -> Iterator[dict]:
    for rank, a in enumerate(alerts, 1):
        yield {"rank": rank, "alert_id": a.alert_id, "customer_id": a.customer_id, "level": a.level,
               "value_at_risk": a.value_at_risk, "arpu": a.arpu, "score": a.score, "segment": a.segment,
               "vip_tier": a.vip_tier, "lifecycle": a.lifecycle, "region": a.region, "queue": a.queue,
               "suggested_action": a.suggested_action, "reason_code": a.reason_code, "reasons": _reasons(a),
               "event_time": a.event_time.isoformat(), "expires_at": a.expires_at.isoformat(), "holdout": a.holdout}


def _outputs(settings: Settings, alerts: list[Alert], csv_path: Path | None, produce: bool, topic: str,
             about: dict[str, str]) -> None:
    if csv_path is not None:
        with csv_path.open("w", newline="") as f:
            writer = csv.DictWriter(f, CSV_COLUMNS)
            writer.writeheader()
            writer.writerows(_rows(alerts))
    if produce:
        _produce(settings, topic, [(a.customer_id, msgspec.json.encode(CallListEntry(rank, a, **about)))
                                   for rank, a in enumerate(alerts, 1)])


def _produce(settings: Settings, topic: str, records: list[tuple[str, bytes]]) -> None:
    """Send a list in order. Keyed by customer like every topic here; a re-run sends the same
    records, which readers tell apart by the list's day or month."""
    producer = KafkaProducer(**client_options(settings), acks="all")
    try:
        for customer, value in records:
            producer.send(topic, key=customer.encode(), value=value)
        producer.flush()
    finally:
        producer.close()
