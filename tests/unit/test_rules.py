from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from stream_app.cli.main import main
from stream_app.errors import RuleFileError
from stream_app.features.derive import FEATURES
from stream_app.rules.cases import run_rule_tests
from stream_app.rules.evaluate import VectorEval, with_segments
from stream_app.rules.pack import Ruleset, check_files, evaluate, load_rules

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


def test_rule_tests_pass_on_the_default_pack_and_catch_a_wrong_expectation(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["rules", "test", str(RULES / "churn.test.yaml")])
    assert result.exit_code == 0, result.output
    (tmp_path / "r.yaml").write_text(GOOD)
    (tmp_path / "r.test.yaml").write_text(
        "rule_files: [r.yaml]\n"
        "tests:\n"
        "  - {name: right, features: {cs_calls_30d: 4}, fired: [complaints], level: low}\n"
        "  - {name: wrong, features: {cs_calls_30d: 4}, fired: [drop], level: high}\n")
    outcomes = run_rule_tests(tmp_path / "r.test.yaml")
    assert [o.problem is None for o in outcomes] == [True, False]
    assert "expected fired ['drop'], got ['complaints']" in str(outcomes[1])
    assert CliRunner().invoke(main, ["rules", "test", str(tmp_path / "r.test.yaml")]).exit_code == 1


def test_for_needs_consecutive_periods() -> None:
    rules = load_rules([RULES])
    j = rules.ids.index("customer_service_calls")
    f = features(1)
    f["cs_calls_30d"][:] = 5
    streaks = None
    fired = []
    for period in (10, 10, 11, 12):  # two evaluations on day 10 count once
        ev = evaluate(rules, f, streaks, {"daily": np.array([period]), "monthly": np.array([0])})
        streaks = ev.streaks
        fired.append(bool(ev.fired[0, j]))
    assert fired == [False, False, True, True]


def test_combinations_name_a_level_and_must_name_real_rules(tmp_path: Path) -> None:
    combos = GOOD.replace("groups:", "combinations:\n  - {level: high, all_of: [drop, complaints]}\ngroups:")
    (tmp_path / "r.yaml").write_text(combos)
    rules = load_rules([tmp_path])
    f = features(2)
    f["mou_out_mom"][:] = -0.5
    f["mou_out_m2"][:] = 200
    f["cs_calls_30d"][:] = [4, 0]
    assert evaluate(rules, f).level.tolist() == [3, 2]
    (tmp_path / "r.yaml").write_text(combos.replace("[drop, complaints]", "[drop, nope]"))
    [problem] = check_files([tmp_path])
    assert "unknown rule nope" in str(problem)


def test_thresholds_are_read_from_the_expression() -> None:
    rules = load_rules([RULES])
    drop = next(c for c in rules.rules if c.rule.id == "mou_out_drop_mom")
    assert drop.thresholds == {"mou_out_mom": -0.3, "mou_out_m2": 100.0}


def test_a_key_given_twice_is_refused(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(GOOD.replace("importance: 2\n", "importance: 2\n        importance: 5\n"))
    [problem] = check_files([tmp_path])
    assert "key 'importance' given twice" in str(problem) and str(problem).split(":")[1] == "10"


def segment_pack(tmp_path: Path) -> tuple[Ruleset, dict[str, np.ndarray]]:
    """A pack whose file redefines mid_high_end as arpu_m1 >= 300, and two falling customers: 400 and 150 yuan."""
    (tmp_path / "r.yaml").write_text("segments:\n  mid_high_end: arpu_m1 >= 300\n" + GOOD.replace(
        "  - name: g\n", "  - name: g\n    segment: mid_high_end\n"))
    f = features(2)
    f["mou_out_mom"][:] = -0.5
    f["mou_out_m2"][:] = 200
    f["arpu_m1"][:] = [400, 150]
    return load_rules([tmp_path]), f


def test_segments_defined_in_rule_files_replace_the_built_in_flags(tmp_path: Path) -> None:
    rules, f = segment_pack(tmp_path)
    f["mid_high_end"][:] = 1  # the built-in definition says both are
    ev = evaluate(rules, f)
    assert ev.fired[:, 0].tolist() == [True, False] and ev.features["mid_high_end"].tolist() == [1.0, 0.0]


def test_segments_are_applied_once_so_later_columns_cannot_change_them(tmp_path: Path) -> None:
    rules, f = segment_pack(tmp_path)
    segmented = with_segments(rules, f)  # as the worker does, before it adds the baselines
    segmented["arpu_m1"] = np.array([150.0, 400.0])  # a column added later must not move a customer
    assert evaluate(rules, segmented).fired[:, 0].tolist() == [True, False]
    assert evaluate(rules, dict(segmented)).fired[:, 0].tolist() == [False, True]  # plain features: applied here


def test_the_action_table_picks_the_first_entry_that_matches() -> None:
    ruleset = load_rules([RULES])
    pick = lambda *args: ruleset.action_for(*args)  # noqa: E731  (reason, segment, VIP tier, lifecycle)
    assert pick(205, "mid_high_end", "none", "C").queue == "account_manager"
    assert "technical follow-up first" in pick(205, "mid_high_end", "none", "C").action
    assert pick(205, "mass", "none", "C").queue == "technical"
    assert pick(101, "mass", "gold", "C").queue == "account_manager"  # VIPs before the price offer
    assert pick(101, "mass", "none", "C").action.startswith("plan offer")
    assert pick(None, "mass", "none", "A").action.startswith("welcome call")
    assert pick(None, "mass", "none", "D").action.startswith("retention call")  # the catch-all


def test_mistakes_in_the_action_table_are_reported_with_their_line(tmp_path: Path) -> None:
    path = tmp_path / "actions.yaml"
    path.write_text(GOOD + """
actions:
  - reason_codes: [205]
    queue: technical
    action: fine
  - reason_codes: [999]
    action: unknown reason
  - queue: outbound_robocall
    action: unknown queue
  - segments: [platinum]
    action: unknown segment
""")
    text = [str(p) for p in check_files([path])]
    assert len(text) == 3, text
    assert any("999" in t for t in text) and any("outbound_robocall" in t for t in text)
    assert any("platinum" in t for t in text)
    assert all(int(t.split(":")[1]) > 20 for t in text)  # the lines of the action entries


def test_a_segment_name_that_is_not_an_identifier_is_refused(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text("segments:\n  'youth|prepaid': tenure_days < 365\n" + GOOD)
    text = [str(p) for p in check_files([tmp_path])]
    assert len(text) == 1 and "segment names must be identifiers" in text[0] and "youth|prepaid" in text[0], text


@pytest.mark.parametrize("change, said", [
    (("mou_out_mom <= -0.3 and", "mou_out_mom <= -30 and"),
     "expr: mou_out_mom is a fraction (-0.30 = down 30%); got -30, which it can never be below: write -0.3 for -30%"),
    (("mou_out_mom <= -0.3 and", "mou_out_mom <= -30% and"), "expr: `%` is not a percent sign in an expression"),
    (("default: {high: 5, medium: 3, low: 2}", "default: {high: 2, medium: 3, low: 5}"),
     "levels.default: the summed importance must rise from low to high; got low 5, medium 3, high 2"),
    (("{mou_out_m1:.0f}", "{mou_out_m01:.0f}"),
     "annotations.summary: placeholder {mou_out_m01} names no feature; did you mean {mou_out_m1}?"),
    (("dropped_rate_30d >= 0.08", "dropped_rate_30d >= 8"),
     "dropped_rate_30d is a share (0.08 = 8%); got 8, which it can never be above: write 0.08 for 8%"),
])
def test_a_managers_usual_mistakes_get_a_precise_message_and_exit_1(tmp_path: Path, change: tuple[str, str],
                                                                     said: str) -> None:
    from click.testing import CliRunner

    from stream_app.cli import main

    text = (RULES / "churn.yaml").read_text()
    assert change[0] in text
    (tmp_path / "churn.yaml").write_text(text.replace(change[0], change[1], 1))
    result = CliRunner().invoke(main, ["rules", "check", str(tmp_path)])
    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert said in line and line.startswith(str(tmp_path / "churn.yaml") + ":")


def test_rules_test_takes_folders_and_says_in_one_line_when_given_a_rule_file(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from stream_app.cli import main

    folder = CliRunner().invoke(main, ["rules", "test", str(RULES)])
    assert folder.exit_code == 0 and folder.output.strip().splitlines()[-1].endswith(" passed, 0 failed")
    rule_file = CliRunner().invoke(main, ["rules", "test", str(RULES / "churn.yaml")])
    assert rule_file.exit_code == 1
    assert "a rule file, not a test file" in rule_file.output and "pydantic" not in rule_file.output
    (tmp_path / "bad.test.yaml").write_text("rule_files: [churn.yaml]\ntests:\n  - name: a\n    feature: {a: 1}\n")
    bad = CliRunner().invoke(main, ["rules", "test", str(tmp_path)])
    assert bad.exit_code == 1 and "tests.0.feature: Extra inputs are not permitted" in bad.output
    assert "https://" not in bad.output


def test_a_power_works_over_every_customer_at_once() -> None:
    # A noise-scaled threshold: a rise in a share must be about twice the noise of a share of that many calls.
    features = {"offnet_share_30d": np.array([0.55, 0.55]), "offnet_share_m2": np.array([0.35, 0.35]),
                "calls_out_30d": np.array([300.0, 50.0])}
    hit = VectorEval(features).eval("offnet_share_30d - offnet_share_m2 >= 1.8 / calls_out_30d ** 0.5")
    assert hit.tolist() == [True, False]


def test_arithmetic_works_on_any_number_of_customers() -> None:
    # simpleeval's own product refused an array of over 100,000 (a replay of a large base).
    n = 250_000
    features = {"arpu_3m": np.full(n, 40.0), "arpu_prev_3m": np.full(n, 100.0), "arpu_m1": np.arange(n, dtype=float)}
    hit = VectorEval(features).eval("arpu_3m <= 0.5 * arpu_prev_3m and arpu_m1 + arpu_m1 * 2 >= 3 * 1")
    assert hit.shape == (n,) and not hit[0] and hit[1:].all()
