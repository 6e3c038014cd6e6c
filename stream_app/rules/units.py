"""What a threshold can mean, from the unit of the feature it is compared with: a comparison that
can never hold, or a percent written where a fraction is meant, is a mistake that
`rules check` names with its fix ("mou_out_mom is a fraction (-0.30 = down 30%); got -30").

>>> from simpleeval import SimpleEval
>>> threshold_problems(SimpleEval.parse("mou_out_mom <= -30"))
['mou_out_mom is a fraction (-0.30 = down 30%); got -30, which it can never be below: write -0.3 for -30%']
>>> threshold_problems(SimpleEval.parse("mou_out_mom <= -0.3 and cs_calls_30d >= 3"))
[]
"""

from __future__ import annotations

import ast
import math

from stream_app.features.baselines import parse_call
from stream_app.features.derive import FEATURES

__all__ = ["RANGES", "threshold_problems"]

#: Unit -> (lowest, highest) value a feature of that unit takes, and how a manager writes it.
RANGES: dict[str, tuple[float, float, str]] = {
    "ratio": (-1.0, math.inf, "a fraction (-0.30 = down 30%)"),
    "share": (0.0, 1.0, "a share (0.08 = 8%)"),
    "probability": (0.0, 1.0, "a probability (0.6 = 60%)"),
    "flag": (0.0, 1.0, "a flag (1 = yes, 0 = no)"),
    "yuan": (0.0, math.inf, "an amount in yuan"),
    "minutes": (0.0, math.inf, "minutes"),
    "calls": (0.0, math.inf, "a number of calls"),
    "records/day": (0.0, math.inf, "calls, SMS and data sessions a day"),
    "days": (0.0, math.inf, "a number of days"),
    "people": (0.0, math.inf, "a number of people"),
    "MB": (0.0, math.inf, "megabytes"),
    "tier": (0.0, 3.0, "a VIP tier (0 none, 1 silver, 2 gold, 3 diamond)"),
    "stage": (1.0, 5.0, "a lifecycle stage (1 acquisition to 5 exit)"),
}
_PERCENT_LIKE = 10.0  # a fraction of 10 or more (+1,000%) is not what anyone means: a percent was written
_FLIP = {ast.Lt: ast.Gt, ast.LtE: ast.GtE, ast.Gt: ast.Lt, ast.GtE: ast.LtE, ast.Eq: ast.Eq}


def threshold_problems(tree: ast.AST) -> list[str]:
    """Every comparison of a feature with a number that its unit makes pointless."""
    problems = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        sides = [node.left, *node.comparators]
        for left, op, right in zip(sides, node.ops, sides[1:]):
            name, value = _feature(left), _number(right)
            if name is None or value is None:
                name, value, op = _feature(right), _number(left), _FLIP.get(type(op), type(op))()
            if name is not None and value is not None and type(op) in _FLIP:
                problem = _problem(name, type(op), value)
                if problem:
                    problems.append(problem)
    return problems


def _feature(node: ast.AST) -> str | None:
    """The feature a side of a comparison reads (a segment baseline has its feature's unit)."""
    if isinstance(node, ast.Name) and node.id in FEATURES:
        return node.id
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id.startswith("segment_p"):
        args = [a.id for a in node.args if isinstance(a, ast.Name)]
        try:
            parse_call(node.func.id, args)
        except ValueError:
            return None
        return args[0]
    return None


def _number(node: ast.AST) -> float | None:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _number(node.operand)
        return None if inner is None else -inner
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return float(node.value)
    return None


def _problem(name: str, op: type[ast.cmpop], value: float) -> str | None:
    """What is wrong with `name <op> value`, if anything: a comparison that can never hold, or a
    fraction written as a percent. (One that always holds is left alone: as one condition among
    others it does no harm.)"""
    unit = FEATURES[name].unit
    if unit not in RANGES:
        return None
    low, high, meaning = RANGES[unit]
    never = {ast.Lt: value <= low, ast.LtE: value < low, ast.Gt: value >= high, ast.GtE: value > high,
             ast.Eq: not low <= value <= high}[op]
    fraction = unit in ("ratio", "share", "probability")
    percent = fraction and (not low <= value <= high or abs(value) >= _PERCENT_LIKE)
    if not (never or percent):
        return None
    bound = {ast.Lt: "below", ast.LtE: "below", ast.Gt: "above", ast.GtE: "above", ast.Eq: "equal to"}[op]
    what = f", which it can never be {bound}" if never else ", which reads as a percent"
    fix = f": write {value / 100:g} for {value:g}%" if percent and abs(value) > 1 else ""
    return f"{name} is {meaning}; got {value:g}{what}{fix}"
