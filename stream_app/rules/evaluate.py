"""Evaluating loaded rules over a batch: vectorised conditions, `for` streaks, levels.

Every expression is evaluated once per batch over numpy arrays (one value per customer)
by simpleeval, which walks the parsed tree with only the operators and functions given to
it: no Python `eval`, no attribute access, no calls but `abs`, `min`, `max`.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any

import numpy as np
from simpleeval import SimpleEval

from stream_app.contracts.events import LEVELS
from stream_app.errors import ConfigError
from stream_app.features.baselines import COLUMNS as BASELINE_COLUMNS
from stream_app.features.baselines import QUANTILES, parse_call

__all__ = ["LEVELS", "FUNCTIONS", "BASELINES", "VectorEval", "Evaluation", "Segmented", "Streaks", "evaluate", "thresholds_of", "with_segments"]

FUNCTIONS = {"abs": np.abs, "min": np.minimum, "max": np.maximum}
# `zscore(x)`: x against the customer's own history, the feature `x_z` (features.own_zscore);
# `segment_pQ(x)`: the live quantile of x in the customer's segment (baselines.py).
BASELINES = ("zscore", *(f"segment_p{q}" for q in QUANTILES))


class VectorEval(SimpleEval):
    """simpleeval with `and` / `or` / `not` / chained comparisons over numpy arrays."""

    def __init__(self, names: dict[str, Any]) -> None:
        super().__init__(functions=FUNCTIONS, names=names)
        self.operators[ast.Not] = np.logical_not
        # simpleeval guards power, product and sum against a runaway string or list: it compares
        # the operands as scalars (which arrays cannot be) and refuses an operand longer than
        # 100,000, i.e. a batch of that many customers. Here the operands are numbers and arrays
        # of numbers, where nothing can run away (a float overflows to inf), so numpy's serve.
        self.operators.update({ast.Pow: np.power, ast.Mult: np.multiply, ast.Add: np.add})

    def _eval_call(self, node: ast.Call) -> Any:
        if isinstance(node.func, ast.Name) and node.func.id.startswith("segment_p"):
            args = [a.id if isinstance(a, ast.Name) else ast.unparse(a) for a in node.args]
            return self.names[parse_call(node.func.id, args)]
        if not (isinstance(node.func, ast.Name) and node.func.id == "zscore"):
            return super()._eval_call(node)
        arg = node.args[0] if len(node.args) == 1 and not node.keywords else None
        if not isinstance(arg, ast.Name) or f"{arg.id}_z" not in self.names:
            valid = sorted(n[:-2] for n in self.names if n.endswith("_z") and n[:-2] in self.names)
            raise ConfigError(f"zscore() takes one feature with a customer history: {', '.join(valid)}")
        return self.names[f"{arg.id}_z"]

    def _eval_boolop(self, node: ast.BoolOp) -> Any:
        combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
        values = [self._eval(v) for v in node.values]
        out = values[0]
        for v in values[1:]:
            out = combine(out, v)
        return out

    def _eval_compare(self, node: ast.Compare) -> Any:
        left, out = self._eval(node.left), True
        for op, comparator in zip(node.ops, node.comparators):
            right = self._eval(comparator)
            out = np.logical_and(out, self.operators[type(op)](left, right))
            left = right
        return out


def thresholds_of(tree: ast.AST) -> dict[str, float]:
    """The constants a rule compares features with: `x <= -0.3 and y >= 100` -> {x: -0.3, y: 100}.

    >>> thresholds_of(SimpleEval.parse("mou_out_mom <= -0.3 and 100 <= mou_out_m2"))
    {'mou_out_mom': -0.3, 'mou_out_m2': 100.0}
    """
    found: dict[str, float] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        for a, b in zip(operands, operands[1:]):
            name, const = (a, b) if isinstance(a, ast.Name) else (b, a)
            value = _constant(const)
            if isinstance(name, ast.Name) and value is not None:
                found[name.id] = value
    return found


def _constant(node: ast.AST) -> float | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _constant(node.operand)
        return -inner if inner is not None else None
    return None


@dataclass
class Streaks:
    """For rules with `for: N`: per customer and rule, how many evaluations in a row the
    condition has held, and the period (day or month) of the last of them."""

    count: np.ndarray  # (customers, rules) int
    period: np.ndarray  # (customers, rules) int, -1 where no streak runs

    @classmethod
    def empty(cls, customers: int, rules: int) -> "Streaks":
        return cls(np.zeros((customers, rules), np.int64), np.full((customers, rules), -1, np.int64))


@dataclass
class Evaluation:
    features: dict[str, np.ndarray]  # the features with the rule files' segments applied
    holds: np.ndarray  # (customers, rules) bool: the condition, now
    fired: np.ndarray  # (customers, rules) bool: held for the rule's `for` evaluations
    score: np.ndarray  # summed importance of fired rules
    level: np.ndarray  # index into LEVELS
    streaks: Streaks


def evaluate(ruleset: Any, features: dict[str, np.ndarray], streaks: Streaks | None = None,
             periods: dict[str, np.ndarray] | None = None, regions: np.ndarray | None = None) -> Evaluation:
    """Fire every rule over every customer of the batch, then map to levels.

    `periods` gives each customer's current evaluation period per cadence (`daily`: the day,
    `monthly`: the month); a condition counts once per period towards its rule's `for`.
    `regions` gives each customer's region, for the rules of region files (none: no region).
    """
    n = len(next(iter(features.values()))) if features else 0
    if not isinstance(features, Segmented):  # the worker applies them once, before the baselines
        features = with_segments(ruleset, features)
    # Baselines nobody supplied are not known: NaN, so their comparisons are false.
    unknown = {c: np.full(n, np.nan) for c in BASELINE_COLUMNS if c not in features}
    features = {**features, **unknown} if unknown else features
    rules = ruleset.rules
    evaluator = VectorEval(features)
    holds = np.zeros((n, len(rules)), np.bool_)
    for j, c in enumerate(rules):
        hit = np.broadcast_to(evaluator.eval(c.rule.expr, previously_parsed=c.tree), (n,))
        if c.group.segment is not None:
            hit = hit & (features[c.group.segment] > 0)
        if c.regions is not None or c.not_regions:
            where = np.full(n, "", object) if regions is None else regions
            hit = hit & (np.isin(where, list(c.regions)) if c.regions is not None
                         else ~np.isin(where, list(c.not_regions)))
        holds[:, j] = hit
    before = streaks or Streaks.empty(n, len(rules))
    after = Streaks(before.count.copy(), before.period.copy())
    for j, c in enumerate(rules):
        period = (periods or {}).get(c.group.cadence, np.zeros(n, np.int64))
        newer = period > before.period[:, j]
        after.count[:, j] = np.where(holds[:, j], before.count[:, j] + newer, 0)
        after.period[:, j] = np.where(holds[:, j], np.maximum(period, before.period[:, j]), -1)
    need = np.array([c.rule.for_ for c in rules], np.int64)
    fired = holds & (after.count >= need)
    importance = np.array([c.rule.importance for c in rules], np.float64)
    score = fired.astype(np.float64) @ importance if len(rules) else np.zeros(n)
    level = np.maximum(_by_score(ruleset, features, score), _by_combination(ruleset, features, fired, evaluator))
    return Evaluation(features, holds, fired, score, level, after)


class Segmented(dict):
    """Features that already carry the rule files' segment flags (`with_segments`): computed once
    per batch, from the derived features, so the baselines and the rules see the same segments."""


def with_segments(ruleset: Any, features: dict[str, np.ndarray]) -> Segmented:
    """The features plus the segment flags the rule files define (replacing same-named ones)."""
    out = Segmented(features)
    if not ruleset.segments:
        return out
    evaluator = VectorEval(features)
    n = len(next(iter(features.values())))
    for name, tree in ruleset.segments:
        out[name] = np.broadcast_to(evaluator.eval("", previously_parsed=tree), (n,)).astype(np.float64)
    return out


def _segment_of(names: Any, features: dict[str, np.ndarray], n: int) -> np.ndarray:
    segment = np.full(n, "default", dtype=object)
    for name in names:
        if name != "default" and name in features:
            segment[features[name] > 0] = name
    return segment


def _by_score(ruleset: Any, features: dict[str, np.ndarray], score: np.ndarray) -> np.ndarray:
    level = np.zeros(len(score), np.int8)
    segment = _segment_of(ruleset.levels, features, len(score))
    for name, t in ruleset.levels.items():
        mine = segment == name
        for value, threshold in ((1, t.low), (2, t.medium), (3, t.high)):
            level[mine & (score >= threshold)] = value
    return level


def _by_combination(ruleset: Any, features: dict[str, np.ndarray], fired: np.ndarray,
                    evaluator: VectorEval) -> np.ndarray:
    n = fired.shape[0]
    level = np.zeros(n, np.int8)
    columns: dict[str, list[int]] = {}  # a rule's column and its region versions' (`<id>@<region>`)
    for j, rid in enumerate(ruleset.ids):
        columns.setdefault(rid.split("@")[0], []).append(j)
    for combo, tree in ruleset.combinations:
        ok = np.ones(n, np.bool_)
        if combo.segment is not None:
            ok &= features[combo.segment] > 0
        if combo.all_of:
            ok &= np.all([fired[:, columns[r]].any(axis=1) for r in combo.all_of], axis=0)
        if combo.any_of:
            ok &= fired[:, [j for r in combo.any_of for j in columns[r]]].any(axis=1)
        if tree is not None:
            ok &= np.broadcast_to(evaluator.eval(combo.expr, previously_parsed=tree), (n,))
        level = np.maximum(level, np.where(ok, LEVELS.index(combo.level), 0).astype(np.int8))
    return level
