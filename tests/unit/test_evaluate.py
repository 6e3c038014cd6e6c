import json
from pathlib import Path

from click.testing import CliRunner

from stream_app.cli import main

REPO = Path(__file__).resolve().parents[2]
KEYS = {"auc_online", "auc_rules", "auc_combined", "auc_batch_reference", "precision_at_budget", "recall_at_budget",
        "top_decile_lift", "lead_time_days_median", "customers", "churners"}


def test_evaluate_replays_the_simulator_and_ends_with_one_json_object(monkeypatch) -> None:
    monkeypatch.setenv("CHURNWATCH_RULES_DIR", str(REPO / "alert_rules"))
    monkeypatch.setenv("CHURNWATCH_MODEL_PUBLISH_LABELS", "200")
    result = CliRunner().invoke(main, ["evaluate", "--customers", "120", "--days", "110", "--warmup-days", "20",
                                       "--monthly-churn", "0.08", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert KEYS <= set(report)
    assert report["customers"] == 120 and 0 < report["churners"] < 120
    assert report["model_version"] > 0 and report["labels_learned"] > 0  # the online model learned as it went
    for name in ("auc_online", "auc_rules", "auc_combined", "auc_batch_reference"):
        assert 0.0 <= report[name] <= 1.0, name
    assert 0.0 <= report["precision_at_budget"] <= 1.0 and 0.0 <= report["recall_at_budget"] <= 1.0
