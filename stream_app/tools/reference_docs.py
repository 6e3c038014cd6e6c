"""The reference tables in `docs/`, rendered from the code so they cannot drift from it:
`docs/configuration.md` from `Settings` (one row per environment variable) and `docs/metrics.md`
from `Metrics`, `TrainerMetrics` and `NotifyMetrics` (one row per metric family, as Prometheus scrapes it); and
the Prometheus Operator's copy of the alerting rules (`deploy/k8s/base/prometheus-rule.yaml`)
from `deploy/prometheus/alerts.yml`.

    python -m stream_app.tools.reference_docs           # rewrite the files
    python -m stream_app.tools.reference_docs --check   # exit 1 if any is out of date

`tests/unit/test_reference_docs.py` fails when the committed files differ from what this renders.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import types
import typing
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry
from pydantic import AliasChoices, BaseModel, SecretStr
from pydantic.fields import FieldInfo

from stream_app.errors import ConfigError
from stream_app.metrics import Metrics, NotifyMetrics, TrainerMetrics
from stream_app.settings import Settings

__all__ = ["COMMAND", "configuration_table", "env_names", "metrics_table", "render", "write"]

COMMAND = "python -m stream_app.tools.reference_docs"
REPO = Path(__file__).resolve().parents[2]
ALERTS = "deploy/prometheus/alerts.yml"

_BOUNDS = (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"))  # pydantic's constraint metadata


def env_names(model: type[BaseModel], name: str, field: FieldInfo) -> list[str]:
    """The environment variables a field is read from, the usual one first.

    >>> env_names(Settings, "batch_size", Settings.model_fields["batch_size"])
    ['CHURNWATCH_BATCH_SIZE']
    >>> env_names(Settings, "redis_url", Settings.model_fields["redis_url"])
    ['REDIS_URL', 'CHURNWATCH_REDIS_URL']
    """
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [choice for choice in alias.choices if isinstance(choice, str)]
    if isinstance(alias, str):
        return [alias]
    return [f"{model.model_config.get('env_prefix', '')}{name}".upper()]


def _settings_rows(model: type[BaseModel]) -> Iterator[tuple[list[str], FieldInfo]]:
    """Every field of `model` with its variables; nested settings (the topics) by their own prefix.
    Raises `ConfigError`, naming the field, if one has no `Field(description=...)`: its meaning."""
    for name, field in model.model_fields.items():
        if not (field.description or "").strip():
            raise ConfigError(f"{model.__name__}.{name} has no description: add Field(description=...) "
                              f"in {Path(inspect.getfile(model)).relative_to(REPO)}; it is the meaning in "
                              "docs/configuration.md")
        nested = field.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            yield from _settings_rows(nested)
        else:
            yield env_names(model, name, field), field


def _number(value: float) -> str:
    """A number as it would be written by hand.

    >>> _number(10.0), _number(0.5), _number(64 << 20)
    ('10', '0.5', '67108864')
    """
    return str(int(value)) if float(value).is_integer() else repr(value)


def _default(field: FieldInfo) -> str:
    """A field's default as it would be written in the environment.

    >>> _default(Settings.model_fields["batch_within_s"]), _default(Settings.model_fields["redis_retry_max_s"])
    ('`0.5`', '`10`')
    >>> _default(Settings.model_fields["redis_cluster"]), _default(Settings.model_fields["kafka_bootstrap"])
    ('`false`', 'unset')
    """
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, float):
        text = _number(value)
    elif isinstance(value, dict):
        text = json.dumps(value)
    elif isinstance(value, date):
        text = value.isoformat()
    else:
        text = str(value)
    return f"`{text}`"


def _kind(annotation: object) -> str:
    """What a field's type accepts, in words."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return _kind(args[0])
    if typing.get_origin(annotation) is typing.Literal:
        return ", ".join(f"`{a}`" for a in typing.get_args(annotation))
    if typing.get_origin(annotation) is dict:
        return "JSON object"
    words = {bool: "`true` / `false`", int: "integer", float: "number", str: "text", Path: "path",
             date: "date (YYYY-MM-DD)", SecretStr: "secret"}
    return words.get(annotation, getattr(annotation, "__name__", str(annotation)))  # type: ignore[call-overload]


def _accepts(field: FieldInfo) -> str:
    """The type and the bounds a value must keep, or the process stops at start."""
    parts = [_kind(field.annotation)]
    for meta in field.metadata:
        for attribute, sign in _BOUNDS:
            bound = getattr(meta, attribute, None)
            if bound is not None:
                parts.append(f"{sign} {bound.isoformat() if isinstance(bound, date) else _number(bound)}")
        if getattr(meta, "min_length", None) is not None:
            parts.append(f"{meta.min_length}+ characters")
    return ", ".join(parts)


def _cell(text: str) -> str:
    """Text made safe for one Markdown table cell.

    >>> _cell("table|csv\\nor json")
    'table\\\\|csv or json'
    """
    return " ".join(text.split()).replace("|", "\\|")


def configuration_table() -> str:
    """One row per environment variable of `Settings`: default, what it accepts, meaning (the field's
    description; a field without one raises `ValueError` naming it)."""
    lines = ["| variable | default | accepts | meaning |", "|---|---|---|---|"]
    for names, field in _settings_rows(Settings):
        variable = f"`{names[0]}`" + "".join(f" (or `{other}`)" for other in names[1:])
        meaning = field.description or ""  # never empty: `_settings_rows` refuses a field without one
        lines.append(f"| {variable} | {_default(field)} | {_cell(_accepts(field))} | {_cell(meaning)} |")
    return "\n".join(lines) + "\n"


class _RecordingRegistry(CollectorRegistry):
    """A fresh registry that remembers its collectors in the order they were registered."""

    def __init__(self) -> None:
        super().__init__()
        self.collectors: list = []

    def register(self, collector) -> None:
        super().register(collector)
        self.collectors.append(collector)


def _families(build: Callable[[CollectorRegistry], object]) -> list[tuple[str, str, str, str]]:
    """(exposed name, type, labels, help) of every family `build` registers, in its order."""
    registry = _RecordingRegistry()
    build(registry)
    labels = {family.name: getattr(collector, "_labelnames", ())
              for collector in registry.collectors for family in collector.describe()}
    suffix = {"counter": "_total", "info": "_info"}
    return [(family.name + suffix.get(family.type, ""), family.type,
             ", ".join(f"`{label}`" for label in labels.get(family.name, ())), family.documentation)
            for family in registry.collect()]


def metrics_table(build: Callable[[CollectorRegistry], object] = Metrics) -> str:
    """One row per metric family `build` (`Metrics`, `TrainerMetrics` or `NotifyMetrics`) registers."""
    lines = ["| metric | type | labels | help |", "|---|---|---|---|"]
    lines += [f"| `{name}` | {kind} | {labels} | {_cell(text)} |" for name, kind, labels, text in _families(build)]
    return "\n".join(lines) + "\n"


def prometheus_rule(alerts: str) -> str:
    """The alerting rules of `alerts` (a Prometheus rule file) as a Prometheus Operator resource."""
    rule = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": "churnwatch", "labels": {"app.kubernetes.io/name": "churnwatch"}},
            "spec": {"groups": yaml.safe_load(alerts)["groups"]}}
    return (f"# The alerting rules of {ALERTS}, for the Prometheus Operator (its ruleSelector must match\n"
            f"# these labels). Generated by `{COMMAND}`; do not edit by hand.\n"
            + yaml.safe_dump(rule, sort_keys=False, width=120, allow_unicode=True))


def render(root: Path = REPO) -> dict[str, str]:
    """The generated files, by path relative to the repository root `root`."""
    generated = f"Generated by `{COMMAND}`; do not edit by hand."
    configuration = (
        "# Configuration\n\n"
        f"Every setting of `stream_app/settings/`, by environment variable. {generated}\n\n"
        + configuration_table())
    metrics = (
        "# Metrics\n\n"
        f"Every metric of `stream_app/metrics.py`, as Prometheus scrapes it. {generated}\n\n"
        "## Worker\n\n"
        "`churnwatch worker` serves them on `/metrics` at `CHURNWATCH_METRICS_PORT`.\n\n"
        + metrics_table(Metrics) +
        "\n## Trainer\n\n"
        "`churnwatch trainer` serves them on a `/metrics` of its own (`--metrics-port`).\n\n"
        + metrics_table(TrainerMetrics) +
        "\n## Notifier\n\n"
        "`churnwatch notify run` serves them on a `/metrics` of its own (`--metrics-port`).\n\n"
        + metrics_table(NotifyMetrics))
    return {"docs/configuration.md": configuration, "docs/metrics.md": metrics,
            "deploy/k8s/base/prometheus-rule.yaml": prometheus_rule((root / ALERTS).read_text())}


def write(root: Path) -> list[Path]:
    """Write the generated files under `root`; returns those whose content changed."""
    changed = []
    for relative, text in render(root).items():
        path = root / relative
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the repository (default: here)")
    parser.add_argument("--check", action="store_true", help="only say which files are out of date; exit 1 if any")
    args = parser.parse_args(argv)
    if not (args.root / "docs").is_dir():
        parser.error(f"no docs/ folder in {args.root}; run from the repository root or pass --root")
    if args.check:
        stale = [p for p, text in render(args.root).items()
                 if not (args.root / p).exists() or (args.root / p).read_text() != text]
        for path in stale:
            print(f"{path} is out of date: run `{COMMAND}`", file=sys.stderr)
        return 1 if stale else 0
    for path in write(args.root):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
