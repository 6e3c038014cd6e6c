"""`churnwatch calls winback|growth|competitor`: the lifecycle's lists beside the warnings. The
win-back list of customers who left is read from the topics the workers write (churn events,
alerts, outcomes); the growth list of customers approaching the mid/high-end line from the state
they keep in Redis, and the competitor list from their off-net book there. Each shows as a table,
and goes to a CSV file, its topic and a chart; its size goes to Redis, where the workers export it
as metrics."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from typing import Any, Sequence

import click
import msgspec
from rich.table import Table

from stream_app.alerts.competitor import OurBase, competitor_list, competitors_in, contacts_of, months_read, still_ours
from stream_app.alerts.growth import growth_candidates, ranked
from stream_app.alerts.winback import winback_list, with_contacts
from stream_app.cli.common import kafka_reachable, produce_records, read_rules, read_settings
from stream_app.cli.report import report_console
from stream_app.cli.spreadsheet import write_csv
from stream_app.connect.redis import connect_redis_sync
from stream_app.connect.topic_reader import read_alerts, read_churn_events, read_outcomes, read_won_back
from stream_app.connect.topics import WINBACK_DAYS
from stream_app.contracts import keys
from stream_app.contracts.calendar import month_label, month_of_day
from stream_app.contracts.events import REASON_CODES
from stream_app.contracts.lists import CompetitorEntry, GrowthEntry, WinbackEntry
from stream_app.settings import Settings

__all__ = ["winback", "growth", "competitor", "list_fields"]

Entry = WinbackEntry | GrowthEntry | CompetitorEntry
_NAMES = {WinbackEntry: "winback", GrowthEntry: "growth", CompetitorEntry: "competitor"}

_csv = click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the list here.")
_plot = click.option("--plot", type=click.Path(dir_okay=False, path_type=Path),
                     help="Draw the list's chart (.png, .svg or .pdf).")
_json = click.option("--json", "as_json", is_flag=True, help="End with a JSON summary on the last line.")
_budget = click.option("--budget", type=click.IntRange(1), help="Customers to list at most (default: all).")


@click.command("winback")
@click.option("--day", "day_", type=click.DateTime(["%Y-%m-%d"]),
              help="The list's day, YYYY-MM-DD (default: the newest day a churn is known for).")
@click.option("--days", default=60, show_default=True, type=click.IntRange(1, WINBACK_DAYS),
              help="Who left in these days (the topics keep the churn events and alerts it needs).")
@_budget
@_csv
@click.option("--produce", is_flag=True, help="Send the list to the win-back topic, in priority order.")
@_plot
@_json
def winback(day_, days: int, budget: int | None, csv_path: Path | None, produce: bool, plot: Path | None,
            as_json: bool) -> None:
    """Customers who left (or cut their spend) lately and have not come back, worth most to win back
    first: their value before, the reason, tenure, and whether they were warned, called or in the
    control group."""
    settings = read_settings()
    if not settings.kafka_bootstrap:
        raise click.UsageError("KAFKA_BOOTSTRAP is not set: the win-back list reads churn events, alerts and outcomes")
    kafka_reachable(settings)
    _check_outputs(settings, False, plot)
    churns = list(read_churn_events(settings))
    newest = max((date.fromordinal(c.day) for c in churns), default=datetime.now(settings.zone).date())
    as_of = day_.date() if day_ else newest
    listed = winback_list(churns, read_alerts(settings), read_outcomes(settings), as_of, days, settings.zone,
                          read_won_back(settings))
    listed = _contacts(settings, listed[:budget] if budget else listed, as_of, days)
    title = f"Win-back list for {as_of}: {len(listed)} customers who left in {days} days"
    table = Table(title=title, title_justify="left")
    for name in ("#", "customer", "left on", "why", "monthly value", "tenure", "warned", "called", "contacts ours",
                 "priority"):
        table.add_column(name, justify="right" if name in ("#", "monthly value", "tenure", "contacts ours", "priority")
                         else "left")
    for e in listed[:50]:
        why = e.kind if e.reason_code is None else f"{e.kind} {e.reason_code} {REASON_CODES.get(e.reason_code, '')}"
        table.add_row(str(e.rank), e.customer_id, e.left_on, why.strip(), f"{e.monthly_value:,.2f}",
                      f"{e.tenure_days} d", ("control " if e.control else "") + (e.warned or "-"), e.called or "-",
                      "-" if e.contacts_with_us is None else str(e.contacts_with_us), f"{e.priority:,.2f}")
    report_console(as_json).print(table)
    summary = {"day": as_of.isoformat(), "days": days, "customers": len(listed),
               "monthly_value": round(sum(e.monthly_value for e in listed), 2),
               "warned": sum(e.warned is not None for e in listed),
               "reached": sum(e.called not in (None, "not_reached") for e in listed),
               "with_contacts_ours": sum(bool(e.known_by) for e in listed)}
    _outputs(settings, WinbackEntry, listed, summary, csv_path, settings.topics.calls_winback if produce else None,
             plot, title)
    if as_json:
        click.echo(json.dumps(summary))


def _contacts(settings: Settings, listed: list[WinbackEntry], as_of: date, days: int) -> list[WinbackEntry]:
    """The port-outs' contacts still ours, from the off-net book, when the workers keep one (REDIS_URL)."""
    if settings.redis_url is None or not settings.competitor_days or not any(e.kind == "port_out" for e in listed):
        return listed
    from stream_app.windows.scan import read_book, read_some
    from stream_app.windows.state import Windows

    months = months_read(as_of, month_of_day(as_of.toordinal()) - month_of_day(as_of.toordinal() - days + 1) + 1)
    client = connect_redis_sync(settings.redis_url.get_secret_value(), settings.redis_cluster)
    try:
        found = contacts_of(read_book(client, months), [e.customer_id for e in listed if e.kind == "port_out"])
        named = sorted({c for e in found.values() for c in e.acquaintances})
        raws = read_some(client, named)
    finally:
        client.close()
    ours = {named[i] for i in still_ours(Windows.load(named, raws)).nonzero()[0]} if named else set()
    return with_contacts(listed, found, ours)


@click.command("growth")
@click.option("--day", "day_", type=click.DateTime(["%Y-%m-%d"]),
              help="The list's day, YYYY-MM-DD (default: today in CHURNWATCH_TIMEZONE); its last three complete "
                   "months are judged.")
@_budget
@_csv
@click.option("--produce", is_flag=True, help="Send the list to the growth topic, in priority order.")
@_plot
@_json
def growth(day_, budget: int | None, csv_path: Path | None, produce: bool, plot: Path | None, as_json: bool) -> None:
    """Potential mid/high-end customers (3-month average spend 100 to 120 yuan) whose spend is rising,
    nearest the mid/high-end line first, each with an upsell from the growth table (alert_rules)."""
    from stream_app.windows.scan import read_states

    settings = read_settings()
    if settings.redis_url is None:
        raise click.UsageError("REDIS_URL is not set: the growth list reads the customers' state the workers keep")
    _check_outputs(settings, produce, plot)
    table_ = read_rules(settings).growth
    as_of = day_.date() if day_ else datetime.now(settings.zone).date()
    client = connect_redis_sync(settings.redis_url.get_secret_value(), settings.redis_cluster)
    found: list[GrowthEntry] = []
    customers = unreadable = billed = 0
    try:
        for names, raws in read_states(client):
            chunk = growth_candidates(names, raws, as_of, settings.zone, table_)
            found += chunk.entries
            customers, unreadable, billed = customers + len(names), unreadable + chunk.unreadable, billed + chunk.billed
    finally:
        client.close()
    if customers and not billed:
        click.echo(f"warning: no postpaid customer has spend in the month before {as_of:%Y-%m}: its bills are not "
                   f"read yet; --day a later day, or one in the month after the last one billed", err=True)
    listed = ranked(found)[:budget] if budget else ranked(found)
    title = f"Growth list for {as_of}: {len(listed)} customers growing towards the mid/high-end line"
    table = Table(title=title, title_justify="left")
    for name in ("#", "customer", "3-month spend", "last month", "growth a month", "minutes", "months to line",
                 "growing", "upsell"):
        table.add_column(name, justify="left" if name in ("customer", "growing", "upsell") else "right")
    for e in listed[:50]:
        table.add_row(str(e.rank), e.customer_id, f"{e.arpu_3m:,.2f}", f"{e.arpu_m1:,.2f}", f"{e.growth:+,.2f}",
                      f"{e.mou_out_m1:,.0f}", f"{e.months_to_line:.1f}", e.driver, e.upsell)
    report_console(as_json).print(table)
    judged = month_label(month_of_day(as_of.toordinal()) - 1)
    summary = {"day": as_of.isoformat(), "month": judged, "customers": len(listed),
               "monthly_value": round(sum(e.arpu_3m for e in listed), 2), "read": customers,
               "unreadable": unreadable, "by_driver": {d: sum(e.driver == d for e in listed)
                                                       for d in ("voice", "data")}}
    _outputs(settings, GrowthEntry, listed, summary, csv_path, settings.topics.calls_growth if produce else None,
             plot, title)
    if as_json:
        click.echo(json.dumps(summary))


@click.command("competitor")
@click.option("--day", "day_", type=click.DateTime(["%Y-%m-%d"]),
              help="The list's day, YYYY-MM-DD (default: today in CHURNWATCH_TIMEZONE).")
@click.option("--months", type=click.IntRange(1, 13),
              help="Calls of the list's month and the months before it (default 2), as far as "
                   "CHURNWATCH_COMPETITOR_DAYS keeps them.")
@click.option("--competitor", "name", help="Only this competitor, as the CDRs name it.")
@_csv
@click.option("--produce", is_flag=True, help="Send the list to the competitor topic, each competitor's widest first.")
@_plot
@_json
def competitor(day_, months: int | None, name: str | None, csv_path: Path | None, produce: bool, plot: Path | None,
               as_json: bool) -> None:
    """The competitors' customers our base talks to most widely (CHURNWATCH_COMPETITOR_TOP per competitor),
    with their likely spend and customers of ours who know them, for a member-get-member offer."""
    from stream_app.windows.scan import read_book, read_states

    settings = read_settings()
    if settings.redis_url is None:
        raise click.UsageError("REDIS_URL is not set: the competitor list reads the off-net book the workers keep")
    if not settings.competitor_days:
        raise click.UsageError("CHURNWATCH_COMPETITOR_DAYS is 0: the workers keep no off-net book to list from")
    kept = settings.competitor_days // 31 + 1  # months whose calls are all still kept
    months = months or min(2, kept)
    if months > kept:
        raise click.UsageError(f"--months {months}: the workers keep a month's calls {settings.competitor_days} days "
                               f"after it (CHURNWATCH_COMPETITOR_DAYS), so {kept} month(s) at most")
    _check_outputs(settings, produce, plot)
    as_of = day_.date() if day_ else datetime.now(settings.zone).date()
    client = connect_redis_sync(settings.redis_url.get_secret_value(), settings.redis_cluster)
    ours = OurBase(as_of)
    try:
        book = read_book(client, months_read(as_of, months))
        for names, raws in read_states(client):
            ours.add(names, raws)
    finally:
        client.close()
    if not book:
        click.echo(f"warning: the off-net book holds no calls for {', '.join(months_read(as_of, months))}: no "
                   "worker has written them (CHURNWATCH_COMPETITOR_DAYS on the workers), or --day is not the "
                   "day meant", err=True)
    elif name is not None and name not in (known := competitors_in(book)):
        click.echo(f"warning: no number is listed under the competitor {name!r}; the CDRs name "
                   f"{', '.join(repr(k) for k in known)}", err=True)
    listed = competitor_list(book, ours.base, as_of, months, settings.competitor_share, settings.competitor_top, name)
    title = f"Competitor list for {as_of}: {len(listed)} numbers on other networks our base talks to"
    table = Table(title=title, title_justify="left")
    for column in ("competitor", "#", "number", "customers of ours", "calls", "minutes", "value estimate", "known by"):
        table.add_column(column, justify="left" if column in ("competitor", "number", "known by") else "right")
    for e in listed[:100]:
        table.add_row(e.competitor or "-", str(e.rank), e.number, f"{e.customers_of_ours:,}", f"{e.calls:,}",
                      f"{e.minutes:,.0f}", f"{e.value_estimate:,.2f}", ", ".join(e.known_by))
    report_console(as_json).print(table)
    summary = {"day": as_of.isoformat(), "months": months, "customers": len(listed),
               "numbers_seen": len({field.split("|", 1)[1] for field in book}),
               "monthly_value": round(sum(e.value_estimate for e in listed), 2),
               "yuan_per_minute": round(ours.base.yuan_per_minute, 4),
               "by_competitor": {c: sum(e.competitor == c for e in listed)
                                 for c in sorted({e.competitor for e in listed})}}
    topic = settings.topics.calls_competitor if produce else None
    _outputs(settings, CompetitorEntry, listed, summary, csv_path, topic, plot, title)
    if as_json:
        click.echo(json.dumps(summary))


def _check_outputs(settings: Settings, produce: bool, plot: Path | None) -> None:
    """Before the work: the broker a list is produced to, and a chart format matplotlib writes."""
    if produce and not settings.kafka_bootstrap:
        raise click.UsageError("KAFKA_BOOTSTRAP is not set: --produce sends the list to its topic")
    if produce:
        kafka_reachable(settings)
    if plot is not None and plot.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise click.UsageError(f"--plot {plot}: the chart is written as .png, .svg or .pdf")


def list_fields(name: str, summary: dict[str, Any]) -> dict[str, str]:
    """What the workers export about a list last produced (kept in Redis at `keys.LISTS`)."""
    return {f"{name}|customers": str(summary["customers"]), f"{name}|monthly_value": str(summary["monthly_value"]),
            f"{name}|day": summary["day"]}


def _outputs(settings: Settings, kind: type[Entry], listed: Sequence[Entry], summary: dict[str, Any],
             csv_path: Path | None, topic: str | None, plot: Path | None, title: str) -> None:
    name = _NAMES[kind]
    if csv_path is not None:
        with csv_path.open("w", newline="") as f:
            # A list (the customers who know a number) as one cell.
            write_csv(f, kind.__struct_fields__, ({k: ";".join(v) if isinstance(v, list) else v
                                                   for k, v in msgspec.structs.asdict(e).items()} for e in listed))
    if plot is not None:
        from stream_app.reports.list_charts import competitor_chart, growth_chart, winback_chart

        charts = {"winback": winback_chart, "growth": growth_chart, "competitor": competitor_chart}
        charts[name](listed, title, plot)  # type: ignore[operator]
    if topic is not None:
        produce_records(settings, topic, [(e.number if isinstance(e, CompetitorEntry) else e.customer_id,
                                           msgspec.json.encode(e)) for e in listed])
        if settings.redis_url is not None:  # the list in force: the workers export its size
            client = connect_redis_sync(settings.redis_url.get_secret_value(), settings.redis_cluster)
            try:
                client.hset(keys.LISTS, mapping=list_fields(name, summary))
            finally:
                client.close()
