"""`churnwatch report churn|base|cohort|campaign`: the managers' reports as a terminal table, CSV or JSON,
and the charts they look at as a PNG."""

from __future__ import annotations

import io
import json
import re
from dataclasses import asdict, fields
from datetime import date
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from stream_app.alerts.call_plan import alert_day, for_call_centre
from stream_app.alerts.campaign import CampaignCosts, CampaignRow, campaign_report
from stream_app.alerts.winback import won_back_weeks
from stream_app.cli.common import kafka_reachable
from stream_app.cli.spreadsheet import write_csv
from stream_app.connect.redis import connect_redis_sync
from stream_app.connect.topic_reader import (
    read_alerts,
    read_churn_events,
    read_outcomes,
    read_winback_lists,
    read_won_back,
)
from stream_app.contracts.events import REASON_CODES
from stream_app.reports.monthly import (
    ChurnMonth,
    ChurnReport,
    CohortReport,
    churn_report,
    cohort_report,
    counted_regions,
    latest_month,
    region_counts,
)
from stream_app.settings import Settings
from stream_app.windows.scan import read_counts

__all__ = ["report", "month_option", "report_console"]

MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def month_option(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Click callback: a YYYY-MM month, or a usage error naming the value."""
    if value is not None and not MONTH.match(value):
        raise click.BadParameter(f"expected YYYY-MM, got {value!r}")
    return value


def _counts(settings: Settings) -> dict[str, int]:
    if settings.redis_url is None:
        raise click.UsageError("REDIS_URL is not set: the report counters live in the workers' Redis")
    client = connect_redis_sync(settings.redis_url.get_secret_value(), settings.redis_cluster)
    try:
        return read_counts(client)
    finally:
        client.close()


def _churn(month: str | None, months: int, region: str | None = None) -> ChurnReport:
    base = _counts(Settings())
    counts = base if region is None else _of_region(base, region)
    last = month or latest_month(base)
    if last is None:
        raise click.ClickException("no report counters yet: has a worker processed any events?")
    return churn_report(counts, last, months, base)


def _of_region(counts: dict[str, int], region: str) -> dict[str, int]:
    """The counters of `region`, or one line saying which regions have their own."""
    mine = region_counts(counts, region)
    if not mine:
        known = ", ".join(counted_regions(counts)) or "none: name them in CHURNWATCH_REGIONS"
        raise click.ClickException(f"no report counters for region {region!r}; regions counted: {known}")
    return mine


_REGION = click.option("--region", help="One region's figures: one that CHURNWATCH_REGIONS or CHURNWATCH_REGION_CALL_BUDGETS "
                                         "names, `other` or `unknown` (docs/rules.md, \"Per region\").")


@click.group()
def report() -> None:
    """Monthly churn and snapshot-cohort retention reports, from the counters the workers keep."""


@report.command("churn")
@click.option("--month", callback=month_option, help="Last month of the report, YYYY-MM (default: the newest counted).")
@click.option("--months", default=3, show_default=True, type=click.IntRange(1, 36), help="Months to show.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Write the charts to this PNG.")
@click.option("--json", "as_json", is_flag=True, help="End with the report as one JSON object on the last line.")
@_REGION
def churn(month: str | None, months: int, fmt: str, plot: Path | None, as_json: bool, region: str | None) -> None:
    """Totals, churn by reason code, region and segment, revenue lost, and the mid/high-end base."""
    result = _churn(month, months, region)
    _emit(result.to_json(), lambda: _churn_tables(result), lambda: _churn_csv(result), fmt, as_json)
    if plot is not None:
        from stream_app.reports.charts import churn_charts

        churn_charts(result, plot)
        click.echo(f"charts written to {plot}", err=as_json)


@report.command("base")
@click.option("--month", callback=month_option, help="Last month of the report, YYYY-MM (default: the newest counted).")
@click.option("--months", default=6, show_default=True, type=click.IntRange(1, 36), help="Months to show.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="End with the report as one JSON object on the last line.")
@_REGION
def base(month: str | None, months: int, fmt: str, as_json: bool, region: str | None) -> None:
    """The customer base by month: size, net adds, revenue, and the mid/high-end customers in it."""
    result = _churn(month, months, region)
    rows = [{name: getattr(m, name) for name in _BASE} for m in result.months]
    table = _month_table("Customer base", "", [m.month for m in result.months])
    for name in _BASE[1:]:
        table.add_row(_HEADINGS[name], *(_cell(name, row[name]) for row in rows))
    _emit({"months": rows}, lambda: [table], lambda: _csv(list(_BASE), rows), fmt, as_json)


@report.command("cohort")
@click.option("--snapshot", required=True, callback=month_option, help="Snapshot month, YYYY-MM.")
@click.option("--through", callback=month_option, help="Follow the cohort up to this month (default: the newest counted).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Write the retention curve to this PNG.")
@click.option("--json", "as_json", is_flag=True, help="End with the report as one JSON object on the last line.")
@_REGION
def cohort(snapshot: str, through: str | None, fmt: str, plot: Path | None, as_json: bool, region: str | None) -> None:
    """The snapshot cohort (DOMAIN.md) and its retention rate month by month."""
    settings = Settings()
    counts = _counts(settings)
    result = cohort_report(_of_region(counts, region) if region is not None else counts, snapshot, settings.cohort,
                           through)
    _emit(result.to_json(), lambda: _cohort_tables(result), lambda: _cohort_csv(result), fmt, as_json)
    if plot is not None:
        from stream_app.reports.charts import cohort_chart

        cohort_chart(result, plot)
        click.echo(f"chart written to {plot}", err=as_json)


@report.command("campaign")
@click.option("--weeks", default=8, show_default=True, type=click.IntRange(1, 104), help="Newest weeks to show.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the Qini curve of the call list's order to this PNG.")
@click.option("--json", "as_json", is_flag=True, help="End with the report as one JSON object on the last line.")
def campaign(weeks: int, fmt: str, plot: Path | None, as_json: bool) -> None:
    """What the calls did, per week and suggested action, per segment and per region: calls,
    reach, acceptance, churn within the window for called versus control-group customers, the
    uplift with its 95% interval and a verdict, customers and revenue kept, cost and ROI; and the
    customers won back per week, how many of them the win-back lists had named."""
    settings = Settings()
    if not settings.kafka_bootstrap:
        raise click.UsageError("KAFKA_BOOTSTRAP is not set: the campaign report reads alerts, outcomes and churn")
    kafka_reachable(settings)
    alerts, churns = list(read_alerts(settings)), list(read_churn_events(settings))
    costs = CampaignCosts.of(settings)
    # Days follow event time, like the call lists: the newest day any alert or churn is known for.
    known = [alert_day(a, settings.zone) for a in alerts] + [date.fromordinal(c.day) for c in churns]
    as_of = max(known, default=date.today())
    # The call centre's campaign: customers their account managers call are not in it (for_call_centre).
    alerts = list(for_call_centre(alerts, settings.managed_by_call_centre))
    rows = campaign_report(alerts, read_outcomes(settings), churns, settings.zone, as_of, costs,
                           settings.daily_call_budget, settings.region_call_budgets)
    kept = sorted({r.week for r in rows if r.week != "all"})[-weeks:]
    shown = [r.to_json(costs) for r in rows if r.week in kept or r.week == "all"]
    total = shown.pop() if shown else CampaignRow("all", "all").to_json(costs)
    back = [w.to_json() for w in won_back_weeks(read_won_back(settings), churns, read_winback_lists(settings))]
    back = back[-weeks - 1:]  # the newest weeks, and all of them
    doc = {"as_of": as_of.isoformat(), "costs": asdict(costs), "rows": shown, "total": total, "won_back": back}
    if plot is not None:
        doc["qini"] = _qini_plot(rows[-1] if rows else CampaignRow("all", "all"), alerts, plot, as_json)
    _emit(doc, lambda: [_campaign_table(shown + [total]), _won_back_table(back)],
          lambda: _csv(list(total), shown + [total]), fmt, as_json)


def _qini_plot(total: CampaignRow, alerts: list, plot: Path, as_json: bool) -> dict:
    """Draw the Qini curve of the whole campaign; its coefficient, for the JSON."""
    from stream_app.alerts.campaign import MIN_CONTROL, campaign_customers
    from stream_app.model.qini import qini, qini_curve
    from stream_app.reports.charts import qini_chart

    score, called, churned = campaign_customers(total, alerts)
    if not called.any():
        raise click.ClickException("no called customer yet: there is no Qini curve to draw")
    q = qini(score, called, churned)
    small = (~called).sum() < MIN_CONTROL
    qini_chart(qini_curve(score, called, churned), q, plot,
               f"only {(~called).sum()} control customers: too few to conclude" if small else "")
    click.echo(f"chart written to {plot}", err=as_json)
    return q.to_json()


_CAMPAIGN = (("week", "week"), ("action", "action"), ("segment", "segment"), ("region", "region"),
             ("alerts", "alerts"), ("holdout", "control"), ("calls", "calls"), ("reach_rate", "reached"),
             ("acceptance_rate", "accepted"),
             ("churn_called", "churn, called"), ("churn_holdout", "churn, control"), ("uplift", "uplift (95% CI)"),
             ("customers_kept", "kept"), ("revenue_kept", "revenue kept"), ("cost", "cost"), ("roi", "ROI"),
             ("matured", "final"), ("verdict", "verdict"))


def _campaign_table(rows: list[dict]) -> Table:
    table = Table(title="Retention campaign: called customers against the control group", title_justify="left")
    for name, heading in _CAMPAIGN:
        left = name in ("week", "action", "segment", "region", "verdict")
        table.add_column(heading, justify="left" if left else "right")
    for row in rows:
        table.add_row(*(_campaign_cell(name, row[name], row) for name, _ in _CAMPAIGN))
    return table


def _won_back_table(rows: list[dict]) -> Table:
    table = Table(title="Customers won back", title_justify="left")
    for heading in ("week", "won back", "same number", "new line", "on a win-back list before", "monthly value, yuan"):
        table.add_column(heading, justify="left" if heading == "week" else "right")
    for r in rows:
        table.add_row(r["week"], *(str(r[k]) for k in ("won_back", "same_number", "new_line", "listed")),
                      f"{r['monthly_value']:,.0f}")
    return table


def _campaign_cell(name: str, value: Any, row: dict) -> str:
    if value is None:
        return "-"
    if name == "uplift":
        return f"{value:+.1%} ({row['uplift_low']:+.1%} to {row['uplift_high']:+.1%})"
    if name.endswith("_rate") or name.startswith("churn_"):
        return f"{value:.1%}"
    if name in ("revenue_kept", "cost", "customers_kept"):
        return f"{value:,.0f}"
    if name == "roi":
        return f"{value:.2f}"
    if name == "matured":
        return "yes" if value else "not yet"
    return str(value)


def report_console(as_json: bool) -> Console:
    """Where tables go: stderr when stdout ends in JSON; wide when not a terminal (no width to wrap at)."""
    console = Console(stderr=as_json)
    if not console.is_terminal:
        console.width = 200
    return console


def _emit(doc: dict[str, Any], tables, rows_csv, fmt: str, as_json: bool) -> None:
    """The report in `fmt`; with `as_json` the readable form goes to stderr and the JSON ends stdout."""
    if fmt == "json":
        click.echo(json.dumps(doc, indent=2), err=as_json)
    elif fmt == "csv":
        click.echo(rows_csv(), nl=False, err=as_json)
    else:
        console = report_console(as_json)
        for table in tables():
            console.print(table)
    if as_json:
        click.echo(json.dumps(doc))


_BASE = ("month", "customers_start", "gross_adds", "won_back", "churn", "net_adds", "customers_end",
         "customers_billed", "closed_share", "revenue", "mid_high_end", "mid_high_end_new", "mid_high_end_revenue_share")
_HEADINGS = {
    "customers_start": "customers at start", "gross_adds": "gross adds", "won_back": "of them won back",
    "voluntary_churn": "voluntary churn",
    "involuntary_churn": "involuntary churn", "churn": "churn (exits)", "net_adds": "net adds",
    "customers_end": "customers at end", "churn_rate": "churn rate", "revenue_churn": "revenue churn (stayed)",
    "revenue_lost": "revenue lost, yuan/month", "customers_billed": "customers billed",
    "closed_share": "month closed for (share of customers)", "revenue": "revenue, yuan",
    "mid_high_end": "mid/high-end customers", "mid_high_end_new": "of them crossed the line that month",
    "mid_high_end_revenue_share": "mid/high-end share of revenue",
}


def _churn_tables(r: ChurnReport) -> list[Table]:
    """Months as columns, as managers read them; one row per figure."""
    months = [m.month for m in r.months]
    totals = _month_table("Churn totals", "", months)
    for f in fields(ChurnMonth)[1:]:
        totals.add_row(_HEADINGS[f.name], *(_cell(f.name, getattr(m, f.name)) for m in r.months))
    out = [totals]
    for title, table in (("Churn by reason code", r.by_reason), ("Churn by region", r.by_region),
                         ("Churn by value segment", r.by_segment)):
        out.append(_by_month(title, table, months, reason_names=table is r.by_reason))
    return out


def _month_table(title: str, first: str, months: list[str]) -> Table:
    t = Table(title=title, title_justify="left")
    t.add_column(first)
    for month in months:
        t.add_column(month, justify="right")
    return t


def _by_month(title: str, table: dict[str, dict[str, int]], months: list[str], reason_names: bool) -> Table:
    keys = sorted({k for row in table.values() for k in row})
    if reason_names:  # every code, so months compare at a glance even when one had none
        keys = [str(code) for code in REASON_CODES] + [k for k in keys if not k.isdigit()]
    t = _month_table(title, "reason code" if reason_names else "", months)
    for k in keys:
        name = REASON_CODES.get(int(k)) if reason_names and k.isdigit() else None
        t.add_row(f"{k} {name}" if name else k, *(str(table[m].get(k, 0)) for m in months))
    if keys:
        t.add_row("total", *(str(sum(table[m].values())) for m in months), style="bold")
    return t


def _cell(name: str, value: Any) -> str:
    if value is None:
        return "open"
    if name in ("churn_rate", "mid_high_end_revenue_share", "closed_share"):
        return f"{value:.2%}"
    if name in ("revenue_lost", "revenue"):
        return f"{value:,.2f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _churn_csv(r: ChurnReport) -> str:
    """One row per month: the totals, then every breakdown as `reason_101`, `region_<name>`, `segment_<name>`."""
    extra: list[str] = [f"reason_{code}" for code in REASON_CODES]
    for kind, table in (("reason", r.by_reason), ("region", r.by_region), ("segment", r.by_segment)):
        extra += sorted({f"{kind}_{k}" for row in table.values() for k in row} - set(extra))
    rows = []
    for m in r.months:
        row: dict[str, Any] = asdict(m)
        for kind, table in (("reason", r.by_reason), ("region", r.by_region), ("segment", r.by_segment)):
            row |= {f"{kind}_{k}": v for k, v in table[m.month].items()}
        rows.append(row)
    return _csv([f.name for f in fields(ChurnMonth)] + extra, rows)


def _cohort_tables(r: CohortReport) -> list[Table]:
    t = _month_table(f"Snapshot cohort {r.snapshot}: {r.members:,} customers", "", r.months)
    t.caption = r.definition
    t.add_row("lost", *(f"{n:,}" for n in r.lost))
    t.add_row("retained", *(f"{n:,}" for n in r.retained))
    t.add_row("retention rate", *(f"{x:.2%}" for x in r.retention_rate), style="bold")
    return [t]


def _cohort_csv(r: CohortReport) -> str:
    return _csv(["snapshot", "members", "month", "lost", "retained", "retention_rate"], [
        {"snapshot": r.snapshot, "members": r.members, "month": month, "lost": lost, "retained": kept,
         "retention_rate": rate} for month, lost, kept, rate in zip(r.months, r.lost, r.retained, r.retention_rate)])


def _csv(columns: list[str], rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    write_csv(buf, columns, rows, restval=0, lineterminator="\n")
    return buf.getvalue()
