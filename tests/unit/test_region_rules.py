"""Rules per region: a region's file in `alert_rules/regions/` replaces base rules for that region's
customers, adds its own and disables others, and `rules check --region` shows what is in force."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from stream_app.cli import main
from stream_app.errors import RuleFileError
from stream_app.metrics import Metrics
from stream_app.rules.pack import check_files, load_rules
from stream_app.settings import Settings
from stream_app.testing import run_through
from stream_app.windows.store import MemoryWindowStore
from stream_app.worker.pipeline import BatchProcessor
from tests.factories import Log, decliner
from tests.unit.test_pipeline import CLOCK

REPO = Path(__file__).resolve().parents[2]
NORTH = """\
groups:
  - name: north_monthly
    segment: mid_high_end
    cadence: monthly
    rules:
      - id: mou_out_drop_mom   # the base rule's id: the north needs a deeper fall
        expr: mou_out_mom <= -0.9 and mou_out_m2 >= 100
        importance: 2
        labels: {reason_code: 205}
        annotations:
          summary: "Outgoing minutes last month: {mou_out_m1:.0f}, {mou_out_mom:change} (north)"
"""
SOUTH = """\
disable: [mou_out_drop_mom]
groups:
  - name: south_daily
    rules:
      - id: south_minutes_low
        expr: mou_out_30d <= 100
        importance: 5
        labels: {reason_code: 205}
        annotations:
          summary: "Outgoing minutes in the last 30 days: {mou_out_30d:.0f}"
"""


def rules_dir(tmp_path: Path, **regions: str) -> Path:
    folder = tmp_path / "rules"
    shutil.copytree(REPO / "alert_rules", folder)
    (folder / "regions").mkdir()
    for region, text in regions.items():
        (folder / "regions" / f"{region}.yaml").write_text(text)
    return folder


def test_a_regions_file_replaces_adds_and_disables_rules_for_its_customers_only(tmp_path: Path) -> None:
    ruleset = load_rules([rules_dir(tmp_path, north=NORTH, south=SOUTH)])
    ids = {region: {c.rule.id for c in ruleset.effective(region)} for region in ("north", "south", "east")}
    assert "mou_out_drop_mom@north" in ids["north"] and "mou_out_drop_mom" not in ids["north"]
    assert "mou_out_drop_mom" not in ids["south"] and "south_minutes_low@south" in ids["south"]
    assert "mou_out_drop_mom" in ids["east"] and not {i for i in ids["east"] if "@" in i}
    log = Log()
    for customer, region in (("8613800000501", "north"), ("8613800000502", "south"), ("8613800000503", "east")):
        decliner(log, customer, region=region)
    proc = BatchProcessor(Settings(_env_file=None), MemoryWindowStore(), lambda: ruleset,
                          Metrics(CollectorRegistry()), clock=lambda: CLOCK)
    out = run_through(proc, log.records, 50)
    fired = {a.region: {r.rule_id for r in a.reasons} for a in out.alerts}
    assert "mou_out_drop_mom" in fired["east"]  # down 80%: the base rule fires
    assert not {r for r in fired.get("north", set()) if r.startswith("mou_out_drop_mom")}  # north wants 90%
    assert "south_minutes_low@south" in fired["south"] and "mou_out_drop_mom" not in fired["south"]


@pytest.mark.parametrize("text, problem", [
    ("disable: [no_such_rule]\n", "unknown rule no_such_rule"),
    (SOUTH.replace("mou_out_30d <= 100", "mou_out_30d <= 100 and no_such_feature > 1"), "unknown feature no_such_feature"),
    (SOUTH.replace("disable: [mou_out_drop_mom]", "disable: [south_minutes_low]"), "unknown rule south_minutes_low"),
    ("levels: {default: {high: 1, medium: 1, low: 1}}\n", "levels"),
])
def test_a_region_file_that_cannot_apply_is_refused_with_the_file_and_the_whole_set_stays_out(
        tmp_path: Path, text: str, problem: str) -> None:
    folder = rules_dir(tmp_path, west=text)
    problems = check_files([folder])
    assert problems and all("regions/west.yaml" in str(p) for p in problems)
    assert any(problem in str(p) for p in problems), problems
    with pytest.raises(RuleFileError):
        load_rules([folder])


def test_rules_check_shows_the_effective_rules_of_a_region(tmp_path: Path) -> None:
    folder = rules_dir(tmp_path, north=NORTH)
    result = CliRunner().invoke(main, ["rules", "check", str(folder), "--region", "north"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "mou_out_drop_mom@north" in result.output and not any(line.split()[:1] == ["mou_out_drop_mom"]
                                                                 for line in lines)
    assert "regions/north.yaml" in result.output


def test_an_edit_of_a_region_file_is_picked_up_without_a_restart_and_a_bad_one_keeps_the_rules(
        tmp_path: Path) -> None:
    from stream_app.rules.watch import RulesWatch

    folder = rules_dir(tmp_path, north=NORTH)
    watch = RulesWatch([folder], Metrics(CollectorRegistry()))
    watch.reload()
    assert "mou_out_drop_mom@north" in watch.current().ids
    (folder / "regions" / "south.yaml").write_text(SOUTH)
    assert watch.reload_if_changed() and "south_minutes_low@south" in watch.current().ids
    (folder / "regions" / "south.yaml").write_text("disable: [nothing_like_it]\n")
    assert not watch.reload_if_changed() and "south_minutes_low@south" in watch.current().ids


def test_a_region_given_two_files_and_a_bad_disable_are_refused_with_their_lines(tmp_path: Path) -> None:
    folder = rules_dir(tmp_path, north=NORTH)
    (folder / "regions" / "north.yml").write_text(NORTH)
    (folder / "regions" / "south.yaml").write_text("# south\ndisable:\n  - mou_out_drop_mom\n  - not_a_rule\n")
    problems = [str(p) for p in check_files([folder])]
    assert any("north.yml" in p and "a second file for region north" in p for p in problems), problems
    assert any(p.startswith(f"{folder}/regions/south.yaml:4:") and "unknown rule not_a_rule" in p
               for p in problems), problems


def test_a_backtest_of_one_rule_file_keeps_the_baselines_region_files(tmp_path: Path) -> None:
    from stream_app.offline.backtest import load_pack, proposed_files

    folder = rules_dir(tmp_path, north=NORTH)
    change = tmp_path / "churn.yaml"
    shutil.copy(folder / "churn.yaml", change)
    paths, _ = proposed_files(change, folder)
    proposal = load_pack(paths, "proposed")
    assert "mou_out_drop_mom@north" in proposal.ids and proposal.ids == load_pack([folder], "baseline").ids


def test_rule_test_cases_can_be_a_regions_customers(tmp_path: Path) -> None:
    from stream_app.rules.cases import run_rule_tests

    folder = rules_dir(tmp_path, north=NORTH)
    fall = "{arpu_m2: 150, mou_out_m1: 60, mou_out_m2: 300, mou_out_mom: -0.8, mou_out_mom_z: -4}"
    (folder / "regions.test.yaml").write_text(f"""\
rule_files: [churn.yaml, regions]
tests:
  - name: elsewhere an 80% fall fires the base rule
    features: {fall}
    fired: [mou_out_drop_mom]
  - name: the north wants a 90% fall
    region: north
    features: {fall}
    fired: []
  - name: the north's own version, past 90%
    region: north
    features: {{arpu_m2: 150, mou_out_m1: 20, mou_out_m2: 300, mou_out_mom: -0.95, mou_out_mom_z: -4}}
    fired: [mou_out_drop_mom@north]
""")
    outcomes = run_rule_tests(folder / "regions.test.yaml")
    assert [o.problem for o in outcomes] == [None, None, None], outcomes
