"""The documentation stays true to the code: the generated reference tables in `docs/` are the ones
the code renders now, they name every setting and metric, the README stays short, and every
relative link in the README and in `docs/` reaches a file (and a heading, where it names one)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from pydantic import AliasChoices, BaseModel, Field
from pydantic.fields import FieldInfo

from stream_app.metrics import Metrics, NotifyMetrics, TrainerMetrics
from stream_app.settings import Notify, Settings, Topics
from stream_app.tools import reference_docs

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
REGENERATE = f"run `{reference_docs.COMMAND}` and commit the result"


def _env_var(prefix: str, name: str, alias: object) -> str:
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return f"{prefix}{name}".upper()


def _settings() -> dict[str, FieldInfo]:
    """Every setting by its usual environment variable; the topics' and the notifier's by their own prefix."""
    fields = {_env_var("CHURNWATCH_", name, field.validation_alias): field
              for name, field in Settings.model_fields.items() if field.annotation not in (Topics, Notify)}
    return (fields | {_env_var("CHURNWATCH_TOPIC_", name, None): field for name, field in Topics.model_fields.items()}
            | {_env_var("CHURNWATCH_NOTIFY_", name, None): field for name, field in Notify.model_fields.items()})


def _exposed_families(build) -> list[str]:
    registry = CollectorRegistry()
    build(registry)
    suffix = {"counter": "_total", "info": "_info"}
    return [family.name + suffix.get(family.type, "") for family in registry.collect()]


@pytest.mark.parametrize("path", sorted(reference_docs.render()))
def test_the_committed_reference_is_what_the_code_renders(path: str) -> None:
    committed = REPO / path
    assert committed.exists(), f"{path} is missing: {REGENERATE}"
    assert committed.read_text() == reference_docs.render()[path], f"{path} is out of date: {REGENERATE}"


@pytest.mark.parametrize("variable", sorted(_settings()))
def test_every_setting_is_in_the_configuration_table(variable: str) -> None:
    assert f"| `{variable}`" in (REPO / "docs/configuration.md").read_text(), f"{variable}: {REGENERATE}"


def test_every_setting_has_a_meaning() -> None:
    fields = {**_settings(), "CHURNWATCH_TOPICS": Settings.model_fields["topics"],
              "CHURNWATCH_NOTIFY": Settings.model_fields["notify"]}
    bare = sorted(var for var, field in fields.items() if not (field.description or "").strip())
    assert not bare, f"add Field(description=...) in stream_app/settings/ for {bare}"


class _HalfDocumented(BaseModel):
    documented: int = Field(default=1, description="a meaning")
    bare: int = 2


def test_a_setting_without_a_meaning_stops_the_table_and_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reference_docs, "Settings", _HalfDocumented)
    with pytest.raises(ValueError, match=r"_HalfDocumented\.bare has no description"):
        reference_docs.configuration_table()


@pytest.mark.parametrize("build", [Metrics, TrainerMetrics, NotifyMetrics])
def test_every_metric_family_is_in_the_metrics_doc(build) -> None:
    text = (REPO / "docs/metrics.md").read_text()
    missing = [name for name in _exposed_families(build) if f"| `{name}` |" not in text]
    assert not missing, f"{missing}: {REGENERATE}"


def test_the_readme_is_short_and_keeps_its_two_commands() -> None:
    readme = (REPO / "README.md").read_text()
    assert len(readme.encode()) <= 12_500, f"README.md is {len(readme.encode())} bytes; move a section into docs/"
    block = readme.split("## Two commands", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    assert [line.split()[:2] for line in block.splitlines()] == [["./dev", "demo"], ["./dev", "test"]], block


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def _prose(path: Path) -> str:
    """A Markdown file without its fenced code blocks."""
    return re.sub(r"^```.*?^```", "", path.read_text(), flags=re.DOTALL | re.MULTILINE)


def _anchors(path: Path) -> set[str]:
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", _prose(path), flags=re.MULTILINE)}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_reaches_a_file_and_heading(doc: Path) -> None:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", _prose(doc)):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{target}: no such heading")
    assert not broken, f"{doc.relative_to(REPO)}: {broken}"
