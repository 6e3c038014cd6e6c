"""`churnwatch rules backtest`: the same simulated events replayed with two rule sets through the
worker's pipeline, and compared. One simulation (150 customers, 120 days, seed 7) serves every
test; a replay of it takes about 5 s here, a backtest about twice that."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Iterator

import msgspec
import pytest
from click.testing import CliRunner

from stream_app.cli import main
from stream_app.offline.backtest import Backtest, compare
from stream_app.offline.replay import ReplayResult, replay
from stream_app.offline.simulator import SimConfig, Simulator
from stream_app.rules.pack import load_rules
from stream_app.settings import Settings
from tests.factories import shipped_pack_with

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "alert_rules"
SIM = SimConfig(customers=150, days=120, seed=7)
#: One threshold made easier: a 30% fall in the rolling 30-day minutes instead of 45%.
STRICT, LOOSE = "mou_out_30d_mom <= -0.45", "mou_out_30d_mom <= -0.3"
LOOSENED_RULE = "mou_out_falling_30d"

Records = list[tuple[str, bytes, bytes]]


@pytest.fixture(scope="module")
def records() -> Records:
    return [(r.topic, r.key, r.value) for r in Simulator(SIM).records()]


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings(rules_dir=SHIPPED)


@pytest.fixture(scope="module")
def loosened(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the shipped pack with one threshold loosened."""
    return shipped_pack_with(tmp_path_factory.mktemp("loosened") / "alert_rules", STRICT, LOOSE)


def _replay(records: Records, settings: Settings, rules: Path) -> ReplayResult:
    ruleset = load_rules([rules])
    return replay(records, settings, lambda: ruleset)


@pytest.fixture(scope="module")
def baseline(records: Records, settings: Settings) -> ReplayResult:
    return _replay(records, settings, SHIPPED)


@pytest.fixture(scope="module")
def loose_backtest(records: Records, settings: Settings, baseline: ReplayResult,
                   loosened: Path) -> tuple[Backtest, ReplayResult]:
    proposed = _replay(records, settings, loosened)
    return compare(baseline, proposed, settings.horizon_days, settings.daily_call_budget, settings.zone), proposed


def _alerts(result: ReplayResult) -> list[tuple]:
    return sorted((a.alert_id, a.level, a.holdout, a.value_at_risk, a.score, tuple(r.text for r in a.reasons))
                  for a in result.alerts)


def test_a_pack_backtested_against_itself_shows_no_difference(records: Records, settings: Settings,
                                                              baseline: ReplayResult) -> None:
    again = _replay(records, settings, SHIPPED)
    # Not an empty comparison: the pack warns, customers leave, and the model learned in both runs.
    assert len(baseline.alerts) >= 3 and sum(c.kind != "revenue" for c in baseline.churn) >= 5
    assert baseline.core is not None and baseline.core.version > 0
    # The model is learned online in both runs, alike: the same alerts, scores and reasons.
    assert _alerts(again) == _alerts(baseline)
    result = compare(baseline, again, settings.horizon_days, settings.daily_call_budget, settings.zone)
    assert result.newly_warned.count == 0 and result.no_longer_warned.count == 0
    assert result.weeks and [w.baseline for w in result.weeks] == [w.proposed for w in result.weeks]
    assert result.baseline == result.proposed
    assert result.baseline.alerted > 0 and result.baseline.churners > 0
    assert result.model_labels[0] == result.model_labels[1] > 0


def test_a_loosened_threshold_warns_more_customers_and_says_why(baseline: ReplayResult,
                                                               loose_backtest: tuple[Backtest, ReplayResult]) -> None:
    result, proposed = loose_backtest
    assert result.proposed.alerted >= result.baseline.alerted
    # Easier to fire never takes a warning away: the rules are the only difference between the runs.
    assert result.no_longer_warned.count == 0
    assert result.newly_warned.count == result.proposed.alerted - result.baseline.alerted > 0
    examples = result.newly_warned.examples
    assert 0 < len(examples) <= 5
    assert all(w.reasons and all(text.strip() for text in w.reasons) for w in examples)
    # Each newly warned customer is warned because the loosened rule now fires for them.
    warned_by = {a.customer_id for a in proposed.alerts if any(r.rule_id == LOOSENED_RULE for r in a.reasons)}
    assert {w.customer_id for w in examples} <= warned_by
    assert not {w.customer_id for w in examples} & {a.customer_id for a in baseline.alerts}
    # The weekly figures add up to the totals, run by run.
    for run in ("baseline", "proposed"):
        weeks = [getattr(w, run) for w in result.weeks]
        total = getattr(result, run)
        assert sum(f.medium + f.high for f in weeks) == total.medium + total.high
        assert sum(f.calls for f in weeks) == total.calls
        assert sum(f.churners for f in weeks) == total.churners
    judged = [w for w in result.weeks if w.judged]
    assert judged and not result.weeks[-1].judged  # the last weeks' horizon runs past the data
    assert result.judged_until == judged[-1].start + timedelta(days=6)


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory, records: Records) -> Path:
    """The simulation as `churnwatch simulate --out` writes it."""
    path = tmp_path_factory.mktemp("recording") / "events.jsonl"
    with path.open("wb") as f:
        for topic, key, value in records:
            f.write(msgspec.json.encode({"topic": topic, "key": key.decode(), "value": value.decode()}) + b"\n")
    return path


@pytest.fixture(scope="module")
def single_file_run(recording: Path, loosened: Path) -> Iterator:
    """`rules backtest` of the loosened churn.yaml alone, on the recording, with --json."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHURNWATCH_RULES_DIR", str(SHIPPED))
        yield CliRunner().invoke(main, ["rules", "backtest", str(loosened / "churn.yaml"), "--from", str(recording),
                                        "--json"])


def test_a_single_rule_file_replaces_its_namesake_in_the_rules_in_force(
        single_file_run, loose_backtest: tuple[Backtest, ReplayResult], loosened: Path) -> None:
    assert single_file_run.exit_code == 0, single_file_run.output
    assert f"with {loosened / 'churn.yaml'} in place of its churn.yaml" in single_file_run.stderr
    report = json.loads(single_file_run.stdout.strip().splitlines()[-1])
    # The shipped folder with churn.yaml swapped is the loosened folder: the same figures, from the
    # recording as from the simulation in memory.
    expected = loose_backtest[0].to_json()
    for key in ("weeks", "totals", "newly_warned", "no_longer_warned", "first_day", "last_day"):
        assert report[key] == expected[key], key


def test_json_ends_the_output_with_weeks_and_totals(single_file_run) -> None:
    assert single_file_run.exit_code == 0, single_file_run.output
    assert "By week" in single_file_run.stderr and "Totals" in single_file_run.stderr  # the table, on stderr
    report = json.loads(single_file_run.stdout.strip().splitlines()[-1])
    assert report["model"] is True and report["horizon_days"] == Settings().horizon_days
    week = report["weeks"][0]
    assert set(week) == {"week", "start", "judged", "baseline", "proposed"}
    for figures in (week["baseline"], report["totals"]["baseline"], report["totals"]["proposed"]):
        assert {"alerts", "calls", "precision", "recall", "lead_days_median", "churners"} <= set(figures)
        assert set(figures["alerts"]) == {"medium", "high"}
    assert report["totals"]["proposed"]["alerted_customers"] > report["totals"]["baseline"]["alerted_customers"]
    assert report["newly_warned"]["count"] > 0 and report["newly_warned"]["examples"][0]["reasons"]


def _one_line_error(args: list[str]) -> str:
    result = CliRunner().invoke(main, ["rules", "backtest", *args])
    assert result.exit_code != 0
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def test_mistakes_a_user_can_make_end_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   loosened: Path) -> None:
    monkeypatch.setenv("CHURNWATCH_RULES_DIR", str(SHIPPED))
    missing = tmp_path / "nowhere.jsonl"
    assert str(missing) in _one_line_error([str(loosened), "--from", str(missing)])
    broken = tmp_path / "broken"
    shutil.copytree(loosened, broken)
    churn = broken / "churn.yaml"
    churn.write_text(churn.read_text().replace(LOOSE, "mou_out_30d_mom <= -30%"))
    said = _one_line_error([str(broken), "--days", "5"])
    assert "proposed rules have mistakes" in said and "churn.yaml" in said and "rules check" in said
    assert "no such rule file or folder" in _one_line_error([str(tmp_path / "nope.yaml")])
    assert "rule test file" in _one_line_error([str(SHIPPED / "churn.test.yaml")])
    assert "not with --from" in _one_line_error([str(loosened), "--from", str(missing), "--days", "30"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"topic": "cdr", "key": "8613800000001"}\n')
    result = CliRunner().invoke(main, ["rules", "backtest", str(loosened), "--from", str(bad)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith(f"Error: {bad}:1: expected a JSON object")
