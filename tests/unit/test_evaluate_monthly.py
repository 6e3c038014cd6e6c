"""The real-data evaluation: every approach judged on the same customers, and its document section."""

from __future__ import annotations

import json
import math
from contextlib import chdir
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from stream_app.cli import main
from stream_app.errors import ConfigError
from stream_app.offline.evaluate_monthly import BUDGETS, evaluate_monthly, refresh_doc
from stream_app.offline.monthly_data import MonthlyRow, load_mapping, read_rows
from stream_app.rules.pack import load_rules
from stream_app.settings import Settings
from tests.conftest import shared_data

REPO = Path(__file__).resolve().parents[2]
RULES = load_rules([REPO / "alert_rules"])


def test_the_monthly_sample_is_judged_by_rules_model_both_and_a_batch_reference() -> None:
    mapping = load_mapping(REPO / "mappings" / "telecom_monthly_sample1000.yaml")
    rows = read_rows(shared_data("telecom_monthly_sample1000.csv"), mapping)[:400]
    e = evaluate_monthly("sample", rows, mapping, Settings(_env_file=None), lambda: RULES)
    assert (e.customers, e.churners) == (400, sum(r.churned for r in rows))
    # Every approach ranks leavers better than chance on real data (figures: docs/evaluation.md).
    assert all(0.6 < a <= 1 for a in (e.auc_online, e.auc_champion, e.auc_rules, e.auc_combined,
                                      e.auc_batch_reference))
    assert set(e.by_budget) == {"rules", "online", "champion", "combined", "batch_reference", "call_list"}
    assert len(e.champions) == 5 and set(e.champions) <= {"online", "boosted"}  # one per fold
    for approach in e.by_budget.values():
        recalls = [approach[f"{s:g}"][1] for s in BUDGETS]
        assert recalls == sorted(recalls) and all(0 <= v <= 1 for v in recalls)  # a bigger budget reaches more
    assert e.by_budget["combined"]["0.1"] == [e.precision_at_budget, e.recall_at_budget, e.value_captured]
    assert not math.isnan(e.top_decile_lift)
    assert e.auc_gap_batch_reference == pytest.approx(e.auc_batch_reference - e.auc_champion)
    low, high = e.auc_gap_batch_reference_interval
    assert low <= e.auc_gap_batch_reference <= high and low < high


def test_the_gap_to_the_batch_reference_comes_with_what_chance_allows() -> None:
    from stream_app.model.validation import auc
    from stream_app.offline.evaluate_monthly import _gap_interval

    rng = np.random.default_rng(5)
    y = (rng.random(2000) < 0.2).astype(int)
    truth = y + rng.normal(0, 1, 2000)
    better, worse = truth + rng.normal(0, 0.3, 2000), truth + rng.normal(0, 1.5, 2000)
    low, high = _gap_interval(y, worse, better)
    assert 0 < low <= auc(y, better) - auc(y, worse) <= high
    low, high = _gap_interval(y, better, worse)  # the other way round: the same draws, the sign turned
    assert low <= auc(y, worse) - auc(y, better) <= high < 0
    assert _gap_interval(y, better, better) == [0.0, 0.0]  # a score against itself: no gap on any draw


def test_refreshing_the_document_replaces_only_this_data_sets_section(tmp_path: Path) -> None:
    doc = tmp_path / "evaluation.md"
    doc.write_text("# Evaluation\n\nintro\n")
    refresh_doc(doc, "## a\nold", "a")
    refresh_doc(doc, "## b\nkept", "b")
    refresh_doc(doc, "## a\nnew", "a")
    text = doc.read_text()
    assert "intro" in text and "new" in text and "old" not in text and "kept" in text
    assert text.index("## a") < text.index("## b")


def test_evaluate_replay_writes_a_document_only_when_asked(tmp_path: Path) -> None:
    table = tmp_path / "sample.csv"
    lines = shared_data("telecom_monthly_sample1000.csv").read_text().splitlines()
    table.write_text("\n".join(lines[:301]) + "\n")
    mapping = REPO / "mappings" / "telecom_monthly_sample1000.yaml"
    run = CliRunner(env={"CHURNWATCH_RULES_DIR": str(REPO / "alert_rules")}).invoke
    with chdir(tmp_path):
        done = run(main, ["evaluate", "--replay", str(table), "--mapping", str(mapping), "--json"])
        assert done.exit_code == 0, done.output
        figures = json.loads(done.output.splitlines()[-1])
        assert figures["customers"] == 300
        # The whole run's time and the peak memory it added (0 if an earlier test in this process went higher).
        assert figures["total_seconds"] >= figures["seconds"] > 0 and figures["peak_kb_per_customer"] >= 0
        assert sorted(p.name for p in tmp_path.rglob("*")) == ["sample.csv"]  # not docs/evaluation.md
        done = run(main, ["evaluate", "--replay", str(table), "--mapping", str(mapping), "--doc", "figures.md"])
        assert done.exit_code == 0, done.output
    assert "## sample" in (tmp_path / "figures.md").read_text()


def test_rules_that_are_not_there_are_named_in_one_line(tmp_path: Path) -> None:
    with chdir(tmp_path):
        done = CliRunner(env={"CHURNWATCH_RULES_DIR": "no_rules_here"}).invoke(main, ["evaluate", "--customers", "5"])
    assert done.exit_code == 1
    assert done.output.strip() == ("Error: the rules in CHURNWATCH_RULES_DIR=no_rules_here: no_rules_here:0: -: file: "
                                   "cannot be read: No such file or directory")


def test_a_replay_the_service_refuses_whole_stops_with_the_reason() -> None:
    mapping = load_mapping(REPO / "mappings" / "iranian_churn_uci563.yaml")
    rows = [MonthlyRow(str(k), {"2026-06": {"out_min": 100.0, "out_calls": 10.0}}, k % 2 == 0) for k in range(1, 30)]
    with pytest.raises(ConfigError, match=r"short ids: the service refused every one of the [\d,]+ records replayed, "
                                          r"the first for .*customer_id"):
        evaluate_monthly("short ids", rows, mapping, Settings(_env_file=None), lambda: RULES)


def test_the_champion_is_cross_validated_with_a_forest_too() -> None:
    from stream_app.model.scoring import NAMES
    from stream_app.offline.evaluate_monthly import _champion_cross_validated

    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, (300, len(NAMES)))
    y = (x[:, 0] + rng.normal(0, 1, 300) > 1.2).astype(int)
    scores, learned, champions = _champion_cross_validated(x, y, 740_000, Settings(_env_file=None, model_kind="forest"))
    assert len(champions) == 5 and np.all((0 <= scores) & (scores <= 1))  # each fold's forest opened and scored
    assert set(learned.tolist()) == {240}  # each customer scored by a champion of the other four fifths


def test_a_warm_up_as_long_as_the_run_is_refused_in_one_line() -> None:
    done = CliRunner().invoke(main, ["evaluate", "--lists", "--days", "100"])
    assert done.exit_code == 2
    assert done.output.strip().splitlines()[-1] == ("Error: --warmup-days 180 leaves no day of --days 100 for anyone "
                                                    "to leave: make it smaller or --days larger")
