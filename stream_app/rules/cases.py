"""`churnwatch rules test FILE`: manager-readable test cases for rule files, like
`promtool test rules`: given these features, these rules fire and this is the level.

```yaml
rule_files: [churn.yaml]          # relative to the test file
tests:
  - name: a mid/high-end customer whose outgoing minutes fell 80%
    features: {mid_high_end: 1, mou_out_m2: 300, mou_out_m1: 60, mou_out_mom: -0.8}
    fired: [mou_out_drop_mom]
    level: medium
  - name: a rule with `for: 2` needs two evaluations in a row
    evaluations:                  # one per period (day or month)
      - {cs_calls_30d: 4}
      - {cs_calls_30d: 5}
    fired: [customer_service_calls]
```
Features not given are 0. With `regions` among the `rule_files` (the rules folder's `regions/`),
a case's `region: north` evaluates it as a customer of the north, with that region's file applied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from stream_app.errors import RuleFileError
from stream_app.features.baselines import COLUMNS as BASELINE_COLUMNS
from stream_app.features.derive import FEATURES
from stream_app.rules.evaluate import LEVELS, Streaks, evaluate
from stream_app.rules.pack import load_rules
from stream_app.yaml_source import load_yaml

__all__ = ["TestOutcome", "run_rule_tests"]


class _Case(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    features: dict[str, float] | None = None
    evaluations: list[dict[str, float]] | None = None
    fired: list[str] = Field(default_factory=list)
    level: Literal["none", "low", "medium", "high"] | None = None
    region: str = ""  # the customer's region, for the region files named in `rule_files` (their `regions` folder)

    @model_validator(mode="after")
    def _one_input(self) -> "_Case":
        if (self.features is None) == (self.evaluations is None):
            raise ValueError("give either features or evaluations")
        for row in self.evaluations or [self.features or {}]:
            unknown = sorted(set(row) - set(FEATURES) - set(BASELINE_COLUMNS))
            if unknown:
                raise ValueError(f"unknown feature {', '.join(unknown)}; valid features: {', '.join(sorted(FEATURES))}"
                                 f"; segment baselines: {', '.join(BASELINE_COLUMNS)}")
        return self


class _TestFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rule_files: list[str]
    tests: list[_Case]


@dataclass(frozen=True)
class TestOutcome:
    file: str
    name: str
    problem: str | None  # None: passed

    def __str__(self) -> str:
        return f"{self.file}: {self.name}: {'ok' if self.problem is None else 'FAILED: ' + self.problem}"


def case_files(paths: list[Path]) -> list[Path]:
    """The test files named, and the `*.test.yaml` files in the folders named (like `rules check`)."""
    return [f for p in paths for f in (sorted(p.glob("*.test.yaml")) if p.is_dir() else [p])]


def run_rule_tests(path: Path) -> list[TestOutcome]:
    """Run every case of a test file; a file that cannot be read is one failed outcome that says why."""
    try:
        data = load_yaml(path.read_text(encoding="utf-8")) or {}
        if isinstance(data, dict) and "tests" not in data and {"groups", "levels", "segments"} & set(data):
            return [TestOutcome(str(path), "-", "a rule file, not a test file: `churnwatch rules check` checks it, "
                                                "and a *.test.yaml that names it in rule_files tests it")]
        spec = _TestFile.model_validate(data)
        ruleset = load_rules([path.parent / f for f in spec.rule_files])
    except ValidationError as exc:
        return [TestOutcome(str(path), "-", "; ".join(_said(e) for e in exc.errors()))]
    except (yaml.YAMLError, RuleFileError, OSError) as exc:
        return [TestOutcome(str(path), "-", str(exc))]
    return [TestOutcome(str(path), case.name, _check(ruleset, case)) for case in spec.tests]


def _said(error: Any) -> str:
    """One validation error in a line: where, and what is wrong (pydantic's own text, no URL)."""
    where = ".".join(str(p) for p in error["loc"]) or "the file"
    return f"{where}: {error['msg'].removeprefix('Value error, ')}"


def _check(ruleset, case: _Case) -> str | None:
    unknown = sorted(set(case.fired) - set(ruleset.ids))
    if unknown:
        return f"expects unknown rules {unknown}; rules: {ruleset.ids}"
    streaks = Streaks.empty(1, len(ruleset.rules))
    for period, row in enumerate(case.evaluations or [case.features or {}]):
        features = {name: np.array([float(row.get(name, 0.0))]) for name in FEATURES}
        features |= {name: np.array([float(row.get(name, math.nan))]) for name in BASELINE_COLUMNS}
        periods = {"daily": np.array([period]), "monthly": np.array([period])}
        ev = evaluate(ruleset, features, streaks, periods, np.array([case.region], dtype=object))
        streaks = ev.streaks
    fired = sorted(rid for j, rid in enumerate(ruleset.ids) if ev.fired[0, j])
    problems = []
    if fired != sorted(case.fired):
        problems.append(f"expected fired {sorted(case.fired)}, got {fired}")
    if case.level is not None and LEVELS[int(ev.level[0])] != case.level:
        problems.append(f"expected level {case.level}, got {LEVELS[int(ev.level[0])]} (score {ev.score[0]:g})")
    return "; ".join(problems) or None
