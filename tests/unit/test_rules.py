from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from stream_app.cli import main
from stream_app.errors import RuleFileError
from stream_app.features import FEATURES
from stream_app.rules import check_files, evaluate, load_rules

RULES = Path(__file__).resolve().parents[2] / "alert_rules"

GOOD = """
levels:
  default: {high: 3, medium: 2, low: 1}
groups:
  - name: g
    rules:
      - id: drop
        expr: mou_out_mom <= -0.3 and mou_out_m2 >= 100
        importance: 2
        labels: {reason_code: 205}
        annotations: {summary: "minutes {mou_out_m1:.0f} vs {mou_out_m2:.0f}"}
      - id: complaints
        expr: 3 <= cs_calls_30d
        importance: 1
        labels: {reason_code: 103}
        annotations: {summary: "{cs_calls_30d:.0f} complaints"}
"""

THREE_MISTAKES = """
levels:
  default: {high: 3, medium: 2, low: 1}
groups:
  - name: g
    rules:
      - id: typo
        expr: mou_out_mon <= -0.3
        importance: 2
        labels: {reason_code: 205}
        annotations: {summary: "x"}
      - id: bad_code
        expr: cs_calls_30d >= 3
        importance: 1
        labels: {reason_code: 999}
        annotations: {summary: "x"}
      - id: unknown_key
        expr: cs_calls_30d >= 3
        importance: 1
        severity: high
        labels: {reason_code: 103}
        annotations: {summary: "x"}
"""


def features(n: int) -> dict[str, np.ndarray]:
    return {name: np.zeros(n) for name in FEATURES}


def test_default_pack_loads() -> None:
    assert check_files([RULES]) == []
    assert len(load_rules([RULES]).rules) >= 8


def test_rules_fire_per_customer_and_sum_to_levels(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(GOOD)
    rules = load_rules([tmp_path])
    f = features(4)
    f["mou_out_mom"][:] = [-0.5, -0.5, 0.0, -0.5]
    f["mou_out_m2"][:] = [200, 200, 200, 50]
    f["cs_calls_30d"][:] = [0, 4, 4, 0]
    ev = evaluate(rules, f)
    assert ev.fired.tolist() == [[True, False], [True, True], [False, True], [False, False]]
    assert ev.level.tolist() == [2, 3, 1, 0]


def test_three_mistakes_give_three_precise_messages(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(THREE_MISTAKES)
    problems = check_files([path])
    text = [str(p) for p in problems]
    assert len(problems) == 3, text
    assert any("g/typo: expr: unknown feature mou_out_mon" in t and "mou_out_mom" in t for t in text)
    assert any("g/bad_code: labels.reason_code" in t and "999" in t for t in text)
    assert any("g/unknown_key: severity" in t for t in text)
    assert all(t.startswith(f"{path}:") and t.split(":")[1].isdigit() and int(t.split(":")[1]) > 1 for t in text)
    result = CliRunner().invoke(main, ["rules", "check", str(path)])
    assert result.exit_code == 1


def test_a_bad_set_is_rejected_whole(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(GOOD)
    (tmp_path / "bad.yaml").write_text("groups: [{name: x, rules: [{id: y, expr: 'mou_out_mom +', importance: 1,"
                                      " labels: {reason_code: 205}, annotations: {summary: s}}]}]")
    with pytest.raises(RuleFileError, match="bad.yaml"):
        load_rules([tmp_path])


def test_expressions_cannot_reach_python(tmp_path: Path) -> None:
    for expr in ("__import__('os').system('true')", "mou_out_mom.__class__", "open('x')"):
        (tmp_path / "r.yaml").write_text(GOOD.replace("3 <= cs_calls_30d", expr.replace("'", "''").join("''")))
        assert check_files([tmp_path]), expr


def test_cli_check_passes_on_the_default_pack() -> None:
    result = CliRunner().invoke(main, ["rules", "check", str(RULES)])
    assert result.exit_code == 0, result.output
