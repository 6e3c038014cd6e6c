"""Proving a rule file's expressions on the feature registry before any is evaluated: names,
thresholds in the features' units, a condition's type and the annotation's placeholders. Each
problem names the file, line, group/rule and field."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from simpleeval import InvalidExpression, SimpleEval

from stream_app.errors import RuleError
from stream_app.features.baselines import COLUMNS as BASELINE_COLUMNS
from stream_app.features.derive import FEATURES
from stream_app.rules.evaluate import BASELINES, FUNCTIONS, VectorEval
from stream_app.rules.summary import SummaryError, check_summary
from stream_app.rules.units import threshold_problems

__all__ = ["names_in", "check_expr", "expr_problems", "where"]


def names_in(tree: ast.AST) -> tuple[str, ...]:
    return tuple(sorted({n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} - set(FUNCTIONS) - set(BASELINES)))


def check_expr(expr: str, summary: str | None, segments: Iterable[str] = ()) -> ast.AST:
    """Parse an expression and prove it on the feature registry (and the file's segments);
    raise on any problem."""
    known = set(FEATURES) | set(segments)
    try:
        tree = SimpleEval.parse(expr)
    except SyntaxError as exc:
        if "%" in expr:  # `-30%`: a percent where the features hold fractions
            raise ValueError(f"`%` is not a percent sign in an expression: changes and shares are fractions "
                             f"(-0.30 = down 30%, 0.08 = 8%); got {expr!r}") from None
        raise ValueError(f"not an expression ({exc.msg}): {expr!r}") from None
    unknown = [n for n in names_in(tree) if n not in known]
    if unknown:
        raise ValueError(f"unknown feature {', '.join(unknown)}; valid features: {', '.join(sorted(known))}")
    mistaken = threshold_problems(tree)
    if mistaken:
        raise ValueError("; ".join(mistaken))
    probe = {name: np.zeros(2) for name in (*known, *BASELINE_COLUMNS)}
    result = np.asarray(VectorEval(probe).eval(expr, previously_parsed=tree))
    if result.dtype != np.bool_:
        raise ValueError(f"must be a condition (true/false), got a {result.dtype} value")
    if summary is not None:
        check_summary(summary, known)
    return tree


def expr_problems(path: Path, data: Any, lines: dict[tuple, int], base_segments: Iterable[str] = ()) -> list[RuleError]:
    """Expression and annotation problems, found even when other fields are wrong."""
    problems = []
    segments = data.get("segments") if isinstance(data, dict) else None
    segments = segments if isinstance(segments, dict) else {}
    for name, expr in segments.items():
        try:
            check_expr(str(expr), None)
        except (SyntaxError, ValueError, TypeError, InvalidExpression) as exc:
            problems.append(RuleError(str(path), lines.get(("segments", name)), f"segments/{name}", "expr", str(exc)))
    groups = data.get("groups") if isinstance(data, dict) else None
    for gi, group in enumerate(groups if isinstance(groups, list) else []):
        rules = group.get("rules") if isinstance(group, dict) else None
        for ri, rule in enumerate(rules if isinstance(rules, list) else []):
            if not isinstance(rule, dict) or not isinstance(rule.get("expr"), str):
                continue
            annotations = rule.get("annotations")
            summary = annotations.get("summary") if isinstance(annotations, dict) else None
            try:
                check_expr(rule["expr"], summary if isinstance(summary, str) else None, [*segments, *base_segments])
            except (SyntaxError, ValueError, KeyError, TypeError, IndexError, InvalidExpression) as exc:
                field = "annotations.summary" if isinstance(exc, (SummaryError, KeyError, IndexError)) else "expr"
                loc = ("groups", gi, "rules", ri, *field.split("."))
                problems.append(RuleError(str(path), lines.get(loc), where(data, loc), field, str(exc)))
    return problems


def where(data: Any, loc: tuple) -> str:
    if len(loc) >= 2 and loc[0] == "groups" and isinstance(loc[1], int):
        try:
            group = data["groups"][loc[1]]
            name = group.get("name", f"group {loc[1]}")
            if len(loc) >= 4 and loc[2] == "rules" and isinstance(loc[3], int):
                return f"{name}/{group['rules'][loc[3]].get('id', f'rule {loc[3]}')}"
            return str(name)
        except (KeyError, IndexError, TypeError, AttributeError):
            pass
    return "-"
