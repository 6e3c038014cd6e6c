"""The operator's own attributes: declared, checked at the edge, kept, and seen and explained by the model."""

from __future__ import annotations

import asyncio
import csv
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from stream_app.cli import main
from stream_app.contracts.attributes import AttributeRefused, admit, columns, describe, key, matrix
from stream_app.contracts.events import Label
from stream_app.metrics import Metrics
from stream_app.model.scoring import (
    NAMES,
    ModelRefused,
    ModelSnapshot,
    Scorer,
    decode_model,
    encode_snapshot,
    feature_digest,
    model_features,
)
from stream_app.model.trainer import TrainerCore
from stream_app.offline.evaluate_monthly import evaluate_monthly
from stream_app.offline.mapping import load_mapping
from stream_app.offline.monthly_data import read_rows
from stream_app.rules.pack import load_rules
from stream_app.settings import Attribute, Settings
from stream_app.testing import run_through
from stream_app.windows.state import Windows
from stream_app.windows.store import MemoryWindowStore
from stream_app.worker.pipeline import BatchProcessor
from tests.factories import Log, decliner, profile

REPO = Path(__file__).resolve().parents[2]
RULES = load_rules([REPO / "alert_rules"])
CLOCK = datetime(2026, 12, 1, tzinfo=timezone.utc)
DECLARED = {
    "contract_end": Attribute(kind="date", words="contract ends"),
    "credit_class": Attribute(kind="category", values=("A", "B", "C"), words="credit class"),
    "handset_age": Attribute(kind="number", log=True, missing=12.0),
}


def test_the_edge_keeps_declared_attributes_of_their_kind_and_names_one_that_is_not() -> None:
    sent = {"credit_class": "B", "handset_age": 14, "contract_end": "2027-01-31", "shoe_size": 44, "plan_family": None}
    assert admit(sent, DECLARED) == {"credit_class": "B", "handset_age": 14.0,
                                     "contract_end": float(date(2027, 1, 31).toordinal())}
    # A class sent as a number is still the class: JSON numbers decode as floats, 3 as 3.0.
    assert admit({"credit_class": 3.0}, DECLARED) == {"credit_class": "3"}
    assert admit({"credit_class": 2.5}, DECLARED) == {"credit_class": "2.5"}
    for bad, field in (({"handset_age": "old"}, "attributes.handset_age"),
                       ({"handset_age": float("nan")}, "attributes.handset_age"),
                       ({"handset_age": 1e200}, "attributes.handset_age"),  # would overflow the model's scaler
                       ({"contract_end": "31/01/2027"}, "attributes.contract_end")):
        with pytest.raises(AttributeRefused) as refused:
            admit(bad, DECLARED)
        assert refused.value.field == field and repr(next(iter(bad.values())))[:5] in str(refused.value)


def test_the_model_sees_one_column_per_category_value_days_to_a_date_and_numbers_as_declared() -> None:
    day = date(2027, 1, 1).toordinal()
    kept = [{key("credit_class"): "C", key("handset_age"): 24.0, key("contract_end"): float(day + 30)},
            {key("credit_class"): "Z", key("contract_end"): float(day - 40_000)},
            None]
    assert columns(DECLARED) == ("attr:contract_end", "attr:credit_class=A", "attr:credit_class=B",
                                 "attr:credit_class=C", "attr:handset_age")
    m = matrix(kept, np.full(3, day), DECLARED)
    assert list(m) == list(columns(DECLARED))
    assert m["attr:credit_class=C"].tolist() == [1.0, 0.0, 0.0]  # "Z" was never declared: none of the columns
    assert m["attr:credit_class=A"].tolist() == [0.0, 0.0, 0.0]
    # Clipped at ten years; no date known is none coming (ten years off), unless `missing` says otherwise.
    assert m["attr:contract_end"].tolist() == [30.0, -3650.0, 3650.0]
    assert m["attr:handset_age"].tolist() == pytest.approx([np.log1p(24.0), np.log1p(12.0), np.log1p(12.0)])


def test_an_attribute_reads_as_the_operator_declared_it() -> None:
    assert describe("attr:credit_class=C", 1.0, DECLARED) == "credit class: C"
    assert describe("attr:credit_class=A", 0.0, DECLARED) == "credit class: not A"
    assert describe("attr:contract_end", 12.0, DECLARED) == "contract ends: in 12 days"
    assert describe("attr:contract_end", -3.0, DECLARED) == "contract ends: 3 days ago"
    assert describe("attr:handset_age", float(np.log1p(24.0)), DECLARED) == "handset age: 24"
    assert describe("attr:handset_age", 5000.0, DECLARED).startswith("handset age: ")  # no overflow
    assert describe("attr:contract_end", float("nan"), DECLARED) == "contract ends"


def test_settings_take_attributes_from_a_file_and_say_in_one_line_what_is_wrong(tmp_path: Path) -> None:
    good = tmp_path / "attributes.yaml"
    good.write_text("attributes:\n  handset_age: {kind: number, log: true}\n  tier: {kind: category, values: [x, y]}\n")
    settings = Settings(_env_file=None, attributes_file=good, attributes={"credit_score": Attribute(kind="number")})
    assert list(settings.attributes) == ["credit_score", "handset_age", "tier"]  # one order, wherever declared
    assert model_features(settings.attributes)[len(NAMES):] == ("attr:credit_score", "attr:handset_age",
                                                                "attr:tier=x", "attr:tier=y")
    for text, why in (("attributes:\n  tier: {kind: category}\n", "lists its `values`"),
                      ("attributes:\n  Tier: {kind: number}\n", "attribute names ['Tier']"),
                      ("attributes:\n  yes: {kind: number}\n", "attribute names [True]"),
                      ("attributes:\n  tier: {kind: colour}\n", "kind"),
                      ("attributes:\n  tier: {kind: number, missing: .inf}\n", "missing"),
                      ("attributes:\n  tier: {kind: category, values: [a], missing: 1}\n", "takes no `log`"),
                      ("attributes:\n  tier: {kind: number}\n  tier: {kind: date}\n", "given twice"),
                      # Two names whose keys in the state are the same number.
                      ("attributes:\n  attr_e889b: {kind: number}\n  attr_f02060: {kind: number}\n", "share a key"),
                      ("attributes: [\n", "attributes.yaml")):
        good.write_text(text)
        with pytest.raises(ValidationError, match=why.replace("[", r"\[").replace("]", r"\]")):
            Settings(_env_file=None, attributes_file=good)
    good.write_text("attributes:\n  credit_score: {kind: number}\n")
    with pytest.raises(ValidationError, match="declares .'credit_score'. again"):
        Settings(_env_file=None, attributes_file=good, attributes={"credit_score": Attribute(kind="number")})


def _processor(store: MemoryWindowStore, scorer: Scorer | None = None) -> BatchProcessor:
    return BatchProcessor(Settings(_env_file=None, attributes=DECLARED), store, lambda: RULES,
                          Metrics(CollectorRegistry()), clock=lambda: CLOCK, model=lambda: scorer)


def test_a_profiles_attributes_reach_the_snapshots_and_a_bad_one_goes_to_dead_letter() -> None:
    c, bad = "8613800000101", "8613800000102"
    log = Log()
    decliner(log, c, attributes={"credit_class": "C", "handset_age": 30, "shoe_size": 44})
    refused = log.add("customers", bad, profile(bad, attributes={"handset_age": "new"}))
    store = MemoryWindowStore()
    out = run_through(_processor(store), log.records, 20)
    assert [(d.offset, d.reason, d.field) for d in out.deadletters] == [(refused.offset, "invalid_field",
                                                                         "attributes.handset_age")]
    [tail] = Windows.load([c], asyncio.run(store.load([c]))).text
    assert tail is not None and tail.attributes == {key("credit_class"): "C", key("handset_age"): 30.0}
    names = model_features(DECLARED)
    snaps = [s for s in out.snapshots if s.customer_id == c]
    assert snaps and all(len(s.x) == len(names) and s.features == feature_digest(names) for s in snaps)
    assert {s.x[names.index("attr:credit_class=C")] for s in snaps} == {1.0}
    assert {s.x[names.index("attr:contract_end")] for s in snaps} == {3650.0}  # not sent: none coming


def test_a_model_that_fears_an_attribute_scores_it_and_says_so_in_the_operators_words() -> None:
    names = model_features(DECLARED)
    weights = [0.0] * len(names)
    weights[names.index("attr:credit_class=C")] = 4.0
    snapshot = ModelSnapshot(3, "logistic", list(names), 5000, 0.0, [0.0] * len(names), [1.0] * len(names),
                             weights, -3.0, {})
    log = Log()
    for c, credit in (("8613800000103", "C"), ("8613800000104", "A")):
        decliner(log, c, minutes=(300, 300, 300), attributes={"credit_class": credit})
    out = run_through(_processor(MemoryWindowStore(), Scorer(snapshot)), log.records, 20)
    assert out.alerts and {a.customer_id for a in out.alerts} == {"8613800000103"}
    alert = out.alerts[0]
    assert alert.level == "high"
    [reason] = [r for r in alert.reasons if r.rule_id == "model"]
    assert reason.text == "credit class: C" and reason.values == {"attr:credit_class=C": 1.0}
    # A worker that does not declare the attributes refuses this model, and says why.
    with pytest.raises(ModelRefused, match=r"missing \[\], extra \['attr:contract_end'"):
        decode_model(encode_snapshot(snapshot))
    assert decode_model(encode_snapshot(snapshot), names) == snapshot


def test_a_mapping_brings_a_data_sets_own_columns_and_the_model_learns_from_them(tmp_path: Path) -> None:
    """Churn that only the operator's plan family tells: with the column mapped, every approach
    that learns finds it; without, the usage alone says nothing."""
    rng = np.random.default_rng(3)
    table = tmp_path / "plans.csv"
    with table.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["id", "minutes", "calls", "family", "churn"])
        for k in range(600):
            family = rng.choice(["legacy", "promo", "family"])
            churned = rng.random() < (0.45 if family == "promo" else 0.05)
            out.writerow([f"cust{k:05d}", round(rng.gamma(2, 100), 1), rng.integers(5, 60), family, int(churned)])
    base = ("description: plans\nid_column: id\ncolumn_pattern: '{column}'\nmonths: {'': '2026-06'}\n"
            "counters:\n  out_min: [{column: minutes}]\n  out_calls: [{column: calls}]\n"
            "label: {column: churn, meaning: left, exit_reason_code: 101}\n")
    with_family = tmp_path / "with.yaml"
    with_family.write_text(base + "attributes:\n  plan_family: {kind: category, column: family, "
                                  "values: [legacy, promo, family]}\n")
    (tmp_path / "without.yaml").write_text(base)
    figures = {}
    for name in ("with", "without"):
        mapping = load_mapping(tmp_path / f"{name}.yaml")
        rows = read_rows(table, mapping)
        figures[name] = evaluate_monthly(name, rows, mapping, Settings(_env_file=None), lambda: RULES)
    assert read_rows(table, load_mapping(with_family))[0].attributes["plan_family"] in ("legacy", "promo", "family")
    learned, blind = figures["with"], figures["without"]
    assert min(learned.auc_online, learned.auc_champion, learned.auc_batch_reference) > 0.75
    assert max(blind.auc_online, blind.auc_champion, blind.auc_batch_reference) < 0.62


def test_a_settings_mistake_is_one_line_that_shows_no_secret(tmp_path: Path) -> None:
    env = {"CHURNWATCH_ATTRIBUTES_FILE": str(tmp_path / "nowhere.yaml"), "REDIS_URL": "redis://:hunter2@r:6379"}
    done = CliRunner(env=env).invoke(main, ["model", "report"])
    assert done.exit_code == 1 and "nowhere.yaml" in done.output and "hunter2" not in done.output
    done = CliRunner(env={"CHURNWATCH_ATTRIBUTES": "{not json"}).invoke(main, ["model", "report"])
    assert done.exit_code == 1 and '"attributes"' in done.output and len(done.output.splitlines()) == 1


def test_a_cell_the_service_would_refuse_is_no_value_and_the_customer_is_still_replayed(tmp_path: Path) -> None:
    table = tmp_path / "ends.csv"
    table.write_text("id,minutes,ends,churn\ncust00001,100,2027-01-31,0\ncust00002,100,31/01/2027,1\n")
    mapping = tmp_path / "ends.yaml"
    mapping.write_text("description: ends\nid_column: id\ncolumn_pattern: '{column}'\nmonths: {'': '2026-06'}\n"
                       "counters:\n  out_min: [{column: minutes}]\n"
                       "label: {column: churn, meaning: left, exit_reason_code: 101}\n"
                       "attributes:\n  contract_end: {kind: date, column: ends}\n")
    rows = read_rows(table, load_mapping(mapping))
    assert [r.attributes for r in rows] == [{"contract_end": "2027-01-31"}, {}]


def test_a_trainer_skips_labels_made_for_other_attributes_even_of_the_same_width() -> None:
    mine = Settings(_env_file=None, attributes={"credit_score": Attribute(kind="number")})
    own, width = feature_digest(model_features(mine.attributes)), len(model_features(mine.attributes))
    other = feature_digest(model_features({"handset_age": Attribute(kind="number")}))
    core = TrainerCore.fresh(mine)
    assert own != other and core.learn(Label("c00001", 1000, [0.0] * width, 0, 0, 0, other), 0) is None
    assert core.misfits == 1 and core.learner.labels == 0
    assert core.learn(Label("c00002", 1000, [0.0] * width, 1, 0, 1, own), 1) is not None
    assert core.learn(Label("c00003", 1000, [0.0] * width, 0, 0, 2), 2) is not None  # made before the digest
    assert core.learner.labels == 2
