"""The real-data evaluation: every approach judged on the same customers, and its document section."""

from __future__ import annotations

import math
from pathlib import Path

from stream_app.offline.evaluate_monthly import BUDGETS, evaluate_monthly, refresh_doc
from stream_app.offline.monthly_data import load_mapping, read_rows
from stream_app.rules.pack import load_rules
from stream_app.settings import Settings

REPO = Path(__file__).resolve().parents[2]
RULES = load_rules([REPO / "alert_rules"])


def test_the_monthly_sample_is_judged_by_rules_model_both_and_a_batch_reference() -> None:
    mapping = load_mapping(REPO / "mappings" / "telecom_monthly_sample1000.yaml")
    rows = read_rows(REPO.parent / "shared" / "data" / "telecom_monthly_sample1000.csv", mapping)[:400]
    e = evaluate_monthly("sample", rows, mapping, Settings(_env_file=None), lambda: RULES)
    assert (e.customers, e.churners) == (400, sum(r.churned for r in rows))
    # Every approach ranks leavers better than chance on real data (figures: docs/evaluation.md).
    assert all(0.6 < a <= 1 for a in (e.auc_online, e.auc_rules, e.auc_combined, e.auc_batch_reference))
    assert set(e.by_budget) == {"rules", "online", "combined", "batch_reference"}
    for approach in e.by_budget.values():
        recalls = [approach[f"{s:g}"][1] for s in BUDGETS]
        assert recalls == sorted(recalls) and all(0 <= v <= 1 for v in recalls)  # a bigger budget reaches more
    assert e.by_budget["combined"]["0.1"] == [e.precision_at_budget, e.recall_at_budget, e.value_captured]
    assert not math.isnan(e.top_decile_lift)


def test_refreshing_the_document_replaces_only_this_data_sets_section(tmp_path: Path) -> None:
    doc = tmp_path / "evaluation.md"
    doc.write_text("# Evaluation\n\nintro\n")
    refresh_doc(doc, "## a\nold", "a")
    refresh_doc(doc, "## b\nkept", "b")
    refresh_doc(doc, "## a\nnew", "a")
    text = doc.read_text()
    assert "intro" in text and "new" in text and "old" not in text and "kept" in text
    assert text.index("## a") < text.index("## b")
