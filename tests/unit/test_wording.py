"""Every reason an agent can read, rendered from the default pack and the model, in their words."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from stream_app.alerts.wording import MODEL_WORDS, model_reason
from stream_app.errors import RuleFileError
from stream_app.features.baselines import COLUMNS as BASELINE_COLUMNS
from stream_app.features.derive import FEATURES
from stream_app.model.scoring import MODEL_FEATURES
from stream_app.rules.pack import load_rules
from stream_app.rules.summary import jargon, like_them, render

ROOT = Path(__file__).resolve().parents[2]

#: A value of each unit as customers have them: falls and rises, small and large, none at all.
_SAMPLES = {
    "ratio": (-0.64, 0.43, 0.0, -1.0), "share": (0.3, 0.08, 0.0, 1.0), "probability": (0.7, 0.1, 0.0, 1.0),
    "flag": (1.0, 0.0, 1.0, 0.0), "yuan": (80.0, 135.5, 0.0, 2400.0), "minutes": (120.0, 335.0, 0.0, 9000.0),
    "calls": (12.0, 3.0, 0.0, 400.0), "records/day": (9.2, 0.3, 0.0, 160.0), "days": (45.0, 800.0, 0.0, 3650.0),
    "people": (25.0, 4.0, 0.0, 300.0), "MB": (1500.0, 20.0, 0.0, 90000.0), "sd": (-3.0, 1.0, 0.0, -10.0),
    "tier": (2.0, 0.0, 3.0, 1.0), "stage": (4.0, 1.0, 3.0, 5.0),
}
#: What customers like them did: known, falling, rising, not known yet, pending at a month's start.
_BASELINES = (-0.05, -0.4, 0.12, math.nan, -math.inf)


def _customers() -> list[dict[str, float]]:
    assert set(_SAMPLES) >= {f.unit for f in FEATURES.values()}, "a unit without sample values"
    out = []
    for k, baseline in enumerate(_BASELINES):
        values = {name: _SAMPLES[f.unit][k % 4] for name, f in FEATURES.items()}
        out.append(values | {column: baseline for column in BASELINE_COLUMNS})
    return out


def test_the_model_has_words_for_every_feature_it_learns_from() -> None:
    assert set(MODEL_WORDS) == set(MODEL_FEATURES)


@pytest.mark.parametrize("feature", sorted(MODEL_FEATURES))
def test_every_model_reason_is_in_the_agents_words(feature: str) -> None:
    for values in _customers():
        text = model_reason(feature, values)
        assert text[0].isupper() and not jargon(text), text
        assert "unknown" not in text, text  # every value it names is known


@pytest.mark.parametrize("pack", ["alert_rules"])
def test_every_reason_of_the_default_pack_is_in_the_agents_words(pack: str) -> None:
    ruleset = load_rules([ROOT / pack])
    for c in ruleset.rules:
        for values in _customers():
            text = render(c.rule.annotations.summary, values) + like_them(values, c.names)
            assert text[0].isupper() and not jargon(text), f"{c.rule.id}: {text}"
            assert "unknown" not in text and len(text) <= 160, f"{c.rule.id}: {text}"


def test_a_reason_says_what_customers_like_them_did_when_it_is_known() -> None:
    [rule] = [c for c in load_rules([ROOT / "alert_rules"]).rules if c.rule.id == "mou_out_falling_30d"]
    values = {"mou_out_30d": 120.0, "mou_out_prev_30d": 335.0, "mou_out_30d_mom": -0.642,
              "segment_p50(mou_out_30d_mom)": -0.05}
    text = render(rule.rule.annotations.summary, values) + like_them(values, rule.names)
    assert text == ("Outgoing minutes in the last 30 days: 120, down 64% from 335 the 30 days before; "
                    "customers like them: down 5%")
    values["segment_p50(mou_out_30d_mom)"] = math.nan  # a segment too small to say
    assert render(rule.rule.annotations.summary, values) + like_them(values, rule.names) == \
        "Outgoing minutes in the last 30 days: 120, down 64% from 335 the 30 days before"


@pytest.mark.parametrize("summary, word", [
    ("model: mou_out_m1 fell", "mou_out_m1"), ("calls +5.0 sd from the base", "sd"),
    ("spend in m1 or m2 (DOMAIN.md)", "m1"), ("spend fell by {arpu_mom:.0%}, see churn.yaml", "churn.yaml"),
])
def test_rules_check_refuses_a_summary_in_internal_words(tmp_path: Path, summary: str, word: str) -> None:
    (tmp_path / "r.yaml").write_text(
        "groups:\n  - name: g\n    rules:\n      - id: r\n        expr: arpu_mom <= -0.3\n"
        f"        annotations: {{summary: \"{summary}\"}}\n")
    with pytest.raises(RuleFileError) as err:
        load_rules([tmp_path])
    assert f"'{word}'" in str(err.value) and "annotations.summary" in str(err.value)
