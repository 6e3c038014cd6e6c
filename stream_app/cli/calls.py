"""`churnwatch calls daily|monthly|winback|growth|competitor`: the call centre's daily call list within its
budget and the monthly warning list, from the alerts on `churn.alerts`, as a table, a CSV file and
a topic; the lifecycle's other lists are in cli/lifecycle.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator

import click
import msgspec
from rich.table import Table

from stream_app.alerts.call_plan import for_call_centre, monthly_list, plan_days, summary_fields
from stream_app.cli.common import kafka_reachable, produce_records
from stream_app.cli.lifecycle import competitor, growth, winback
from stream_app.cli.report import month_option, report_console
from stream_app.cli.spreadsheet import write_csv
from stream_app.connect.redis import connect_redis_sync
from stream_app.connect.topic_reader import read_alerts
from stream_app.contracts import keys
from stream_app.contracts.events import Alert, CallListEntry
from stream_app.settings import Settings

__all__ = ["calls"]

CSV_COLUMNS = ("rank", "alert_id", "customer_id", "level", "value_at_risk", "arpu", "score", "segment", "vip_tier",
               "lifecycle", "region", "queue", "suggested_action", "reason_code", "reasons", "event_time", "expires_at",
               "holdout", "expected_saving")


@click.group()
def calls() -> None:
    """The call lists: today's calls within the call centre's budget, the monthly warning list, who to
    win back and who is growing towards the mid/high-end line."""


calls.add_command(winback)
calls.add_command(growth)
calls.add_command(competitor)


@calls.command("daily")
@click.option("--day", "day_", type=click.DateTime(["%Y-%m-%d"]), required=True, help="The day to plan, YYYY-MM-DD.")
@click.option("--budget", type=click.IntRange(1), help="Calls that day (default: CHURNWATCH_DAILY_CALL_BUDGET).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the list here.")
@click.option("--produce", is_flag=True, help="Send the list to the daily calls topic, in priority order.")
@click.option("--json", "as_json", is_flag=True, help="End with a JSON summary on the last line.")
def daily(day_, budget: int | None, csv_path: Path | None, produce: bool, as_json: bool) -> None:
    """The day's calls: the open alerts with the most expected saving (or value at risk, until the
    effect of calls is measured), up to the budget; the rest wait or expire."""
    settings = Settings()
    kafka_reachable(settings)
    day = day_.date()
    alerts = for_call_centre(read_alerts(settings), settings.managed_by_call_centre)
    [plan] = plan_days(alerts, day, day, budget or settings.daily_call_budget, settings.zone,
                       settings.region_call_budgets)
    by = ("expected saving" if plan.ranked_by == "expected_saving"
          else "value at risk (the effect of calls is not measured yet)")
    _show(f"Calls for {day}: {len(plan.calls)} of budget {budget or settings.daily_call_budget}, ranked by {by}",
          plan.calls, as_json)
    click.echo(f"waiting {plan.waiting}, expired {plan.expired}, control group {plan.holdout}, "
               f"superseded {plan.superseded}, no call pays {plan.no_call}", err=as_json)
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


def _show(title: str, alerts: list[Alert], as_json: bool) -> None:
    table = Table(title=title, title_justify="left")
    for name in ("#", "customer", "level", "value at risk", "expected saving", "suggested action", "why"):
        table.add_column(name, justify="right" if name in ("#", "value at risk", "expected saving") else "left")
    for rank, a in enumerate(alerts[:50], 1):
        saving = "-" if a.expected_saving is None else f"{a.expected_saving:,.2f}"
        table.add_row(str(rank), a.customer_id, a.level, f"{a.value_at_risk:,.2f}", saving, a.suggested_action,
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
               "event_time": a.event_time.isoformat(), "expires_at": a.expires_at.isoformat(), "holdout": a.holdout,
               "expected_saving": a.expected_saving}


def _outputs(settings: Settings, alerts: list[Alert], csv_path: Path | None, produce: bool, topic: str,
             about: dict[str, str]) -> None:
    if csv_path is not None:
        with csv_path.open("w", newline="") as f:
            write_csv(f, CSV_COLUMNS, _rows(alerts))
    if produce:
        produce_records(settings, topic, [(a.customer_id, msgspec.json.encode(CallListEntry(rank, a, **about)))
                                   for rank, a in enumerate(alerts, 1)])
