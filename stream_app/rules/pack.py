"""Alert rules that managers write in YAML, modelled on Prometheus rule files.

A rule file has `groups` of `rules` (an expression over named features, an importance,
a reason code and an annotation) and `levels`: per segment, the summed importance of
fired rules needed for high / medium / low. Expressions are parsed once, checked against
the feature registry at load time, and evaluated over a whole batch at once.
"""

from __future__ import annotations

import ast
import collections
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from simpleeval import InvalidExpression, SimpleEval

from stream_app.contracts.events import REASON_CODES, QueueName, Treatment
from stream_app.errors import RuleError, RuleFileError
from stream_app.features.derive import FEATURES
from stream_app.rules.checks import check_expr, expr_problems, names_in, where
from stream_app.rules.evaluate import LEVELS, Evaluation, evaluate, thresholds_of
from stream_app.rules.growth_table import GrowthTable
from stream_app.yaml_source import line_map, load_yaml

__all__ = ["Rule", "Group", "Combination", "Action", "Ruleset", "Evaluation", "LEVELS", "load_rules", "evaluate", "check_files",
           "thresholds_of"]



REGIONS = "regions"  # the rules folder's sub-folder of region files


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Labels(_Frozen):
    reason_code: int

    @field_validator("reason_code")
    @classmethod
    def _known(cls, value: int) -> int:
        if value not in REASON_CODES:
            raise ValueError(f"got {value!r}; expected one of {sorted(REASON_CODES)}")
        return value


class Annotations(_Frozen):
    summary: str


class Rule(_Frozen):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    expr: str
    importance: float = Field(gt=0, le=100)
    for_: int = Field(default=1, ge=1, le=366, alias="for")  # consecutive evaluations (days or months)
    labels: Labels
    annotations: Annotations


class Group(_Frozen):
    name: str
    segment: str | None = None
    cadence: Literal["daily", "monthly"] = "daily"
    rules: list[Rule]


class Thresholds(_Frozen):
    high: float
    medium: float
    low: float

    @model_validator(mode="after")
    def _rising(self) -> "Thresholds":
        if not self.low <= self.medium <= self.high:
            raise ValueError(f"the summed importance must rise from low to high; got low {self.low:g}, "
                             f"medium {self.medium:g}, high {self.high:g}")
        return self


class Combination(_Frozen):
    """A level reached by a combination of indicators, whatever their summed importance."""

    level: Literal["low", "medium", "high"]
    segment: str | None = None
    any_of: list[str] | None = None
    all_of: list[str] | None = None
    expr: str | None = None

    @model_validator(mode="after")
    def _something(self) -> "Combination":
        if not (self.any_of or self.all_of or self.expr):
            raise ValueError("needs any_of, all_of or expr")
        return self


LIFECYCLE = ("A", "B", "C", "D", "E")  # acquisition, build-up, mature, decline, exit (DOMAIN.md)


class Action(_Frozen):
    """What the call centre should do for alerts that match every condition given; the first
    entry that matches wins, so specific entries go first and a catch-all last."""

    action: str = Field(min_length=1)
    queue: QueueName = "general"
    treatment: Treatment = "relationship"  # what the call does, for uplift (contracts/events.py)
    reason_codes: list[int] | None = None
    segments: list[Literal["mid_high_end", "potential_mid_high_end", "mass"]] | None = None
    vip_tiers: list[Literal["none", "silver", "gold", "diamond"]] | None = None
    lifecycle: list[Literal["A", "B", "C", "D", "E"]] | None = None

    @field_validator("reason_codes")
    @classmethod
    def _known_codes(cls, value: list[int] | None) -> list[int] | None:
        unknown = [v for v in value or [] if v not in REASON_CODES]
        if unknown:
            raise ValueError(f"unknown reason codes {unknown}; expected some of {sorted(REASON_CODES)}")
        return value

    def matches(self, reason_code: int | None, segment: str, vip_tier: str, lifecycle: str) -> bool:
        return ((self.reason_codes is None or reason_code in self.reason_codes)
                and (self.segments is None or segment in self.segments)
                and (self.vip_tiers is None or vip_tier in self.vip_tiers)
                and (self.lifecycle is None or lifecycle in self.lifecycle))


class RuleFile(_Frozen):
    # Named flags computed before the rules, e.g. the operator's mid/high-end definition; a
    # segment named like a feature replaces it for rules, levels and alerts. Each has its own
    # live baselines (baselines.py).
    segments: dict[str, str] = Field(default_factory=dict)
    levels: dict[str, Thresholds] = Field(default_factory=dict)
    combinations: list[Combination] = Field(default_factory=list)
    groups: list[Group] = Field(default_factory=list)
    actions: list[Action] = Field(default_factory=list)
    growth: GrowthTable | None = None  # the growth list's table (rules/growth_table.py): one file gives it

    @field_validator("segments")
    @classmethod
    def _segment_names(cls, value: dict[str, str]) -> dict[str, str]:
        # Expressions name them, and the baselines key their histograms by them.
        bad = [n for n in value if not n.isidentifier() or n == "default"]
        if bad:
            raise ValueError(f"segment names must be identifiers (letters, digits, _) other than 'default'; got {bad}")
        return value


class RegionFile(_Frozen):
    """A region's changes to the base pack (`regions/<region>.yaml` in the rules folder): rules
    with a base rule's id replace it for the region's customers, new ids are added for them, and
    `disable` lists base rules that do not apply to them. Levels, combinations, segments and
    actions stay the base pack's; a combination naming a rule counts its region versions too."""

    disable: list[str] = Field(default_factory=list)
    groups: list[Group] = Field(default_factory=list)


@dataclass(frozen=True)
class CompiledRule:
    rule: Rule
    group: Group
    tree: ast.AST  # as simpleeval parses it, so it is parsed once per load
    names: tuple[str, ...]
    thresholds: dict[str, float]
    regions: frozenset[str] | None = None  # a region file's rule: only these regions' customers
    not_regions: frozenset[str] = frozenset()  # a base rule: not for the regions whose files change it

    def applies_in(self, region: str) -> bool:
        return region in self.regions if self.regions is not None else region not in self.not_regions


@dataclass(frozen=True)
class Ruleset:
    rules: tuple[CompiledRule, ...]
    levels: dict[str, Thresholds]
    sources: tuple[str, ...]
    combinations: tuple[tuple[Combination, ast.AST | None], ...] = ()
    segments: tuple[tuple[str, ast.AST], ...] = ()
    actions: tuple[Action, ...] = ()
    growth: GrowthTable = GrowthTable()

    @property
    def ids(self) -> list[str]:
        return [r.rule.id for r in self.rules]

    def action_for(self, reason_code: int | None, segment: str, vip_tier: str, lifecycle: str) -> Action | None:
        return next((a for a in self.actions if a.matches(reason_code, segment, vip_tier, lifecycle)), None)

    def actions_for(self, reason_code: int | None, segment: str, vip_tier: str, lifecycle: str) -> list[Action]:
        """Every entry that matches, the table's choice first: the alternatives evidence of what
        calls keep may prefer (alerts/build.py)."""
        return [a for a in self.actions if a.matches(reason_code, segment, vip_tier, lifecycle)]

    @property
    def scoped(self) -> bool:
        """Some rules apply in some regions only (region files): evaluation needs each customer's region."""
        return any(c.regions is not None or c.not_regions for c in self.rules)

    def effective(self, region: str) -> list[CompiledRule]:
        """The rules a customer of `region` is evaluated with."""
        return [c for c in self.rules if c.applies_in(region)]


def _check_file(path: Path, model: type[RuleFile] | type[RegionFile] = RuleFile,
                base_segments: tuple[str, ...] = ()) -> tuple[Any, list[CompiledRule], list[RuleError]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:  # a folder or file named in the settings that is not there
        return None, [], [RuleError(str(path), None, "-", "file", f"cannot be read: {exc.strerror or exc}")]
    try:
        data = load_yaml(text) or {}
        lines = line_map(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        return None, [], [RuleError(str(path), mark.line + 1 if mark else None, "-", "yaml", str(exc).splitlines()[0])]
    errors = expr_problems(path, data, lines, base_segments)
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            line = next((lines[loc[:k]] for k in range(len(loc), -1, -1) if loc[:k] in lines), None)
            field = ".".join(str(p) for p in loc[-2:] if not isinstance(p, int)) or "-"
            got = f" (got {err['input']!r})" if err["type"] != "missing" and not isinstance(err["input"], dict) else ""
            said = err["msg"].removeprefix("Value error, ")
            errors.append(RuleError(str(path), line, where(data, loc), field, said + got))
        return None, [], errors
    segments = [*base_segments, *getattr(parsed, "segments", {})]
    known = set(FEATURES) | set(segments)
    for gi, group in enumerate(parsed.groups):
        if group.segment is not None and group.segment not in known:
            errors.append(RuleError(str(path), lines.get(("groups", gi, "segment")), group.name, "segment",
                                    f"unknown segment {group.segment!r}; expected a flag feature such as 'mid_high_end'"))
    for ci, combo in enumerate(getattr(parsed, "combinations", [])):
        place = f"combinations/{ci}"
        if combo.segment is not None and combo.segment not in known:
            errors.append(RuleError(str(path), lines.get(("combinations", ci, "segment")), place, "segment",
                                    f"unknown segment {combo.segment!r}"))
        if combo.expr is not None:
            try:
                check_expr(combo.expr, None, segments)
            except (SyntaxError, ValueError, TypeError, InvalidExpression) as exc:
                errors.append(RuleError(str(path), lines.get(("combinations", ci, "expr")), place, "expr", str(exc)))
    if errors:
        return None, [], errors
    compiled = []
    for g in parsed.groups:
        for r in g.rules:
            tree = SimpleEval.parse(r.expr)
            compiled.append(CompiledRule(r, g, tree, names_in(tree), thresholds_of(tree)))
    return parsed, compiled, []


def rule_files(paths: list[Path]) -> list[Path]:
    """Rule files named or found in folders (`*.yaml` / `*.yml`, not `*.test.yaml`)."""
    found: list[Path] = []
    for p in paths:
        if p.is_dir() and p.name == REGIONS:
            continue  # region files change the pack; they are not one (region_files)
        if p.is_dir():
            found += _yaml_files(p)
        else:
            found.append(p)
    return found


@dataclass
class _Read:
    problems: list[RuleError]
    rules: list[CompiledRule]
    levels: dict[str, Thresholds]
    combinations: list[tuple[Combination, ast.AST | None]]
    segments: dict[str, ast.AST]
    files: list[Path]
    actions: list[Action]
    growth: GrowthTable


def _read(paths: list[Path]) -> _Read:
    """Read every rule file once: its problems, compiled rules, levels and combinations."""
    problems: list[RuleError] = []
    rules: list[CompiledRule] = []
    levels: dict[str, Thresholds] = {}
    combinations: list[tuple[Combination, ast.AST | None]] = []
    combination_files: list[Path] = []
    segments: dict[str, ast.AST] = {}
    actions: list[Action] = []
    growth: dict[Path, GrowthTable] = {}
    seen: dict[str, str] = {}
    files = rule_files(paths)
    for f in files:
        parsed, compiled, errors = _check_file(f)
        problems += errors
        for c in compiled:
            if c.rule.id in seen:
                problems.append(RuleError(str(f), None, f"{c.group.name}/{c.rule.id}", "id",
                                          f"duplicate rule id, also in {seen[c.rule.id]}"))
            seen[c.rule.id] = str(f)
        if parsed is not None:
            rules += compiled
            levels.update(parsed.levels)
            actions += parsed.actions
            growth |= {f: parsed.growth} if parsed.growth is not None else {}
            segments.update({name: SimpleEval.parse(expr) for name, expr in parsed.segments.items()})
            for combo in parsed.combinations:
                combinations.append((combo, SimpleEval.parse(combo.expr) if combo.expr else None))
                combination_files.append(f)
    for (combo, _), f in zip(combinations, combination_files):
        unknown = [r for r in (combo.any_of or []) + (combo.all_of or []) if r not in seen]
        if unknown:
            problems.append(RuleError(str(f), None, "combinations", "any_of/all_of",
                                      f"unknown rule {', '.join(unknown)}; rules: {', '.join(sorted(seen))}"))
    if not files:
        problems.append(RuleError(",".join(map(str, paths)), None, "-", "-", "no rule files found"))
    elif not problems and "default" not in levels:
        problems.append(RuleError(str(files[0]), None, "-", "levels", "a 'default' entry is required"))
    if len(growth) > 1:
        problems.append(RuleError(str(list(growth)[1]), None, "-", "growth", f"a second growth table, with "
                                                                           f"{list(growth)[0]}; keep one"))
    regional = region_files(paths)
    rules, region_problems = _with_regions(rules, regional, tuple(segments))
    return _Read(problems + region_problems, rules, levels, combinations, segments, files + regional, actions,
                 next(iter(growth.values()), GrowthTable()))


def _yaml_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.suffix in (".yaml", ".yml") and ".test." not in f.name)


def region_files(paths: list[Path]) -> list[Path]:
    """The region files of the rules folders named (their `regions/<region>.yaml`, not `*.test.yaml`),
    or of a `regions` folder named itself (a backtest of one file keeps the baseline's)."""
    folders = [p if p.name == REGIONS else p / REGIONS for p in paths if p.is_dir()]
    return [f for folder in folders if folder.is_dir() for f in _yaml_files(folder)]


def _with_regions(base: list[CompiledRule], files: list[Path],
                  segments: tuple[str, ...]) -> tuple[list[CompiledRule], list[RuleError]]:
    """The base rules, each scoped away from the regions whose files change it, and every region
    file's rules as `<id>@<region>`, scoped to that region."""
    base_ids, changed = {c.rule.id for c in base}, collections.defaultdict(set)
    added: list[CompiledRule] = []
    problems: list[RuleError] = []
    regions: dict[str, Path] = {}
    for f in files:
        region = f.stem
        if region in regions:
            problems.append(RuleError(str(f), None, "-", "file", f"a second file for region {region}, "
                                                                 f"with {regions[region]}; keep one"))
            continue
        regions[region] = f
        parsed, compiled, errors = _check_file(f, RegionFile, segments)
        problems += errors
        if parsed is None:
            continue
        lines = line_map(f.read_text(encoding="utf-8"))
        places = {r.id: ("groups", gi, "rules", ri, "id") for gi, g in enumerate(parsed.groups)
                  for ri, r in enumerate(g.rules)}
        ids = [c.rule.id for c in compiled]
        for rid in sorted({*(i for i in ids if ids.count(i) > 1), *(set(ids) & set(parsed.disable))}):
            problems.append(RuleError(str(f), lines.get(places[rid]), "-", "id",
                                      f"{rid} is given twice (or given and disabled)"))
        for k, rid in enumerate(parsed.disable):
            if rid not in base_ids:
                problems.append(RuleError(str(f), lines.get(("disable", k)), "disable", "disable",
                                          f"unknown rule {rid}; the base rules: {', '.join(sorted(base_ids))}"))
        for rid in [*parsed.disable, *(i for i in ids if i in base_ids)]:
            changed[rid].add(region)
        added += [dataclasses.replace(c, rule=c.rule.model_copy(update={"id": f"{c.rule.id}@{region}"}),
                                      regions=frozenset({region})) for c in compiled]
    scoped = [dataclasses.replace(c, not_regions=frozenset(changed[c.rule.id])) if c.rule.id in changed else c
              for c in base]
    return scoped + added, problems


def check_files(paths: list[Path]) -> list[RuleError]:
    """Every problem in the rule files, not just the first."""
    return _read(paths).problems


def load_rules(paths: list[Path]) -> Ruleset:
    """Load and compile rule files; any problem rejects the set whole."""
    read = _read(paths)
    if read.problems:
        raise RuleFileError(read.problems)
    return Ruleset(tuple(read.rules), read.levels, tuple(str(f) for f in read.files), tuple(read.combinations),
                   tuple(read.segments.items()), tuple(read.actions), read.growth)
