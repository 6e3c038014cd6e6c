"""The managers' alert rules: the YAML pack and its checks, vectorised evaluation, hot reload,
and promtool-style test cases."""

from stream_app.rules.cases import TestOutcome, run_rule_tests
from stream_app.rules.evaluate import (
    BASELINES,
    FUNCTIONS,
    LEVELS,
    Evaluation,
    Segmented,
    Streaks,
    VectorEval,
    thresholds_of,
    with_segments,
)
from stream_app.rules.pack import Action, Combination, Group, Rule, Ruleset, check_files, load_rules
from stream_app.rules.watch import RulesWatch

__all__ = [
    "Action", "BASELINES", "check_files", "Combination", "Evaluation", "FUNCTIONS", "Group", "LEVELS",
    "load_rules", "Rule", "Ruleset", "RulesWatch", "run_rule_tests", "Segmented", "Streaks", "TestOutcome",
    "thresholds_of", "VectorEval", "with_segments"
]
