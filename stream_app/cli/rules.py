"""`churnwatch rules check|test|backtest`: the managers' rule files checked, their test cases run,
and a proposed change replayed against the rules in force before it goes live."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import click
from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from stream_app.cli.common import read_settings
from stream_app.cli.report import report_console
from stream_app.errors import ConfigError
from stream_app.rules.pack import check_files, load_rules, region_files

if TYPE_CHECKING:
    from stream_app.offline.backtest import Backtest, Change, Figures, Warned
    from stream_app.settings import Settings

__all__ = ["rules"]

SIMULATED = {"days": 180, "customers": 1000, "seed": 7}  # the simulation when no --from is given


@click.group()
def rules() -> None:
    """Check, test and backtest alert rule files."""


@rules.command("check")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--region", help="also list the rules in force for this region's customers (the base pack with "
                               "its file in regions/ applied)")
def rules_check(paths: tuple[Path, ...], region: str | None) -> None:
    """Report every problem in the rule files and region files (default: alert_rules/) and exit 1 if any."""
    folders = list(paths) or [Path("alert_rules")]
    problems = check_files(folders)
    for p in problems:
        click.echo(str(p), err=True)
    if problems:
        sys.exit(1)
    click.echo("rules OK")
    if region is not None:
        ruleset = load_rules(folders)
        files = [f for f in region_files(folders) if f.stem == region]
        click.echo(f"rules in force in {region} ({', '.join(map(str, files)) or 'no region file: the base pack'}):")
        for c in ruleset.effective(region):
            click.echo(f"  {c.rule.id:32} {c.group.name:24} importance {c.rule.importance:g}: {c.rule.expr}")


@rules.command("test")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
def rules_test(paths: tuple[Path, ...]) -> None:
    """Run rule test files, and the *.test.yaml files in folders (default: alert_rules/); exit 1 if any case fails."""
    from stream_app.rules.cases import case_files, run_rule_tests

    outcomes = [o for f in case_files(list(paths) or [Path("alert_rules")]) for o in run_rule_tests(f)]
    for o in outcomes:
        click.echo(str(o), err=o.problem is not None)
    failed = sum(o.problem is not None for o in outcomes)
    click.echo(f"rule tests: {len(outcomes) - failed} passed, {failed} failed")
    if failed or not outcomes:
        sys.exit(1)


@rules.command("backtest")
@click.argument("new", type=click.Path(path_type=Path))
@click.option("--baseline-dir", type=click.Path(path_type=Path),
              help="The rules to compare with (default: CHURNWATCH_RULES_DIR, the rules in force).")
@click.option("--from", "source", type=click.Path(path_type=Path),
              help="Recorded events: the JSON lines `churnwatch simulate --out` or `replay-monthly --out` write.")
@click.option("--days", type=click.IntRange(1), help=f"Without --from: simulated days [{SIMULATED['days']}].")
@click.option("--customers", type=click.IntRange(1),
              help=f"Without --from: simulated customers [{SIMULATED['customers']}].")
@click.option("--seed", type=int, help=f"Without --from: the simulation's seed [{SIMULATED['seed']}].")
@click.option("--no-model", is_flag=True, help="Rules alone: learn no model from the events (a tenth faster).")
@click.option("--json", "as_json", is_flag=True, help="End with one JSON object on the last line.")
def rules_backtest(new: Path, baseline_dir: Path | None, source: Path | None, days: int | None,
                   customers: int | None, seed: int | None, no_model: bool, as_json: bool) -> None:
    """What NEW would have done: the same events replayed through the worker's pipeline with the rules
    in force and with NEW, compared week by week (alerts, calls, precision, recall, lead time).

    NEW is a rule folder, or one rule file that takes the place of the file of the same name in
    the baseline folder (or is added to it). The events are recorded ones (--from) or simulated."""
    from stream_app.offline.backtest import backtest, load_pack, proposed_files

    settings = read_settings()
    base = baseline_dir or settings.rules_dir
    if not base.is_dir():
        raise ConfigError(f"--baseline-dir {base}: no such folder (the baseline is a folder of rule files)")
    paths, proposal = proposed_files(new, base)
    baseline, proposed = load_pack([base], "baseline"), load_pack(paths, "proposed")
    records, events = _events(source, days, customers, seed, settings)
    started = time.perf_counter()
    result = backtest(records, settings, baseline, proposed, learn=not no_model,
                      say=lambda line: click.echo(line, err=True))
    said = {"baseline": f"{base}" + (" (in force)" if baseline_dir is None else ""), "proposed": proposal,
            "events": events, "model": "left out (--no-model)" if no_model else
            "learned online from the same events, as the trainer does"}
    console = report_console(as_json)
    if not console.is_terminal:
        console.width = 100
    _show(console, result, said)
    click.echo(f"backtest took {time.perf_counter() - started:.0f} s", err=True)
    if as_json:
        click.echo(json.dumps({"rules": {"baseline": said["baseline"], "proposed": proposal}, "source": events,
                               "model": not no_model, **result.to_json()}))


def _events(source: Path | None, days: int | None, customers: int | None, seed: int | None,
            settings: Settings) -> tuple[Callable, str]:
    """A maker of the events (called once per replay) and what they are in words."""
    from stream_app.offline.replay import recorded
    from stream_app.offline.simulator import SimConfig, Simulator

    if source is not None:
        if (days, customers, seed) != (None, None, None):
            raise ConfigError("--days, --customers and --seed make simulated events: not with --from")
        if not source.is_file():
            raise ConfigError(f"--from {source}: no such file")
        return (lambda: recorded(source, settings.topics)), f"recorded, {source}"
    cfg = SimConfig(days=days or SIMULATED["days"], customers=customers or SIMULATED["customers"],
                    seed=SIMULATED["seed"] if seed is None else seed)
    return ((lambda: ((r.topic, r.key, r.value) for r in Simulator(cfg).records())),
            f"simulated, {cfg.days} days of {cfg.customers:,} customers (seed {cfg.seed})")


def _pair(a: object, b: object, fmt: Callable[[object], str] = str) -> str:
    """'a → b', or one figure when both are the same.

    >>> _pair(3, 3), _pair(3, 5), _pair(0.25, None, _percent)
    ('3', '3 → 5', '25% → -')"""
    x, y = fmt(a), fmt(b)
    return x if x == y else f"{x} → {y}"


def _percent(value: object) -> str:
    return "-" if value is None else f"{value:.0%}"


def _days(value: object) -> str:
    return "-" if value is None else f"{value:g}"


def _show(console: Console, r: Backtest, header: dict[str, str]) -> None:
    console.print(f"Backtest of the alert rules, {r.first_day} to {r.last_day} ({r.events:,} events)", markup=False)
    for name, said in header.items():
        console.print(f"  {name + ':':10}{said}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"  horizon {r.horizon_days} days; daily call budget {r.daily_call_budget}", highlight=False)
    console.print("  'a → b': baseline → proposed; one figure: both the same", highlight=False)
    weeks = Table(title="By week", title_justify="left", box=None, padding=(0, 1))
    for heading in ("week", "medium", "high", "calls", "precision", "churned", "recall", "lead days"):
        weeks.add_column(heading, justify="left" if heading == "week" else "right")
    for w in r.weeks:
        b, p = w.baseline, w.proposed
        weeks.add_row(w.label + ("" if w.judged else " *"), _pair(b.medium, p.medium), _pair(b.high, p.high),
                      _pair(b.calls, p.calls), _pair(b.precision, p.precision, _percent), str(b.churners),
                      _pair(b.recall, p.recall, _percent), _pair(b.lead_days_median, p.lead_days_median, _days))
    console.print(weeks)
    console.print("  alerts, calls and precision: of the week's alerts; recall and lead time: of the customers\n"
                  "  who churned that week, warned within the horizon before", highlight=False)
    if not all(w.judged for w in r.weeks):
        console.print(f"  * not yet judged: its {r.horizon_days}-day horizon runs past the end of the data; "
                      "churn still to\n    come is unseen, and its precision can only rise", highlight=False)
    console.print(_totals(r))
    for title, change in (("Newly warned", r.newly_warned), ("No longer warned", r.no_longer_warned)):
        _examples(console, title, change, r.horizon_days)


def _totals(r: Backtest) -> Table:
    until = f"alerts to {r.judged_until}" if r.judged_until else "no week judged yet"
    table = Table(title="Totals", title_justify="left", box=None, padding=(0, 1))
    for heading in ("", "baseline", "proposed", "change"):
        table.add_column(heading, justify="left" if not heading else "right")
    rows: list[tuple[str, Callable[[Figures], object], Callable[[object], str]]] = [
        ("alerts, medium", lambda f: f.medium, str), ("alerts, high", lambda f: f.high, str),
        ("  of them control group", lambda f: f.holdout, str), ("calls", lambda f: f.calls, str),
        ("customers warned", lambda f: f.alerted, str), (f"precision ({until})", lambda f: f.precision, _percent),
        ("customers who churned", lambda f: f.churners, str), ("  warned before (recall)", lambda f: f.recall, _percent),
        ("median lead time, days", lambda f: f.lead_days_median, _days)]
    for name, get, fmt in rows:
        a, b = get(r.baseline), get(r.proposed)
        change = "" if a is None or b is None or a == b else (
            f"{b - a:+.0%}".replace("%", " pts") if fmt is _percent else f"{b - a:+g}")  # type: ignore[operator]
        table.add_row(name, fmt(a), fmt(b), change)
    return table


def _examples(console: Console, title: str, change: Change, horizon: int) -> None:
    if not change.count:
        console.print(f"{title}: none")
        return
    console.print(f"{title}: {change.count} customers, {change.churned} of whom churned within {horizon} days of "
                  f"an alert; the first {len(change.examples)}:", highlight=False)
    for w in change.examples:
        console.print(f"  {w.customer_id}  {w.level} from {w.first_alert_day}; {_fate(w)}", markup=False,
                      highlight=False)
        for text in w.reasons:  # wrapped lines keep the indent
            console.print(Padding(Text(text), (0, 0, 0, 6), expand=False))


def _fate(w: Warned) -> str:
    if w.churned_within_horizon is None:
        return "not yet judged"
    if w.churn_day is None:
        return "stayed"
    return f"churned {w.churn_day}" + ("" if w.churned_within_horizon else ", not within the horizon")
