"""The package's shape: stages import one way along the data flow (the import-linter contracts in
pyproject.toml), modules stay short, and the examples in docstrings run."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest
from importlinter.cli import lint_imports

import stream_app

REPO = Path(__file__).resolve().parents[2]
MODULES = sorted(m.name for m in pkgutil.walk_packages(stream_app.__path__, "stream_app.") if not m.name.endswith("__main__"))


def test_the_layer_contracts_hold(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(REPO)
    code = lint_imports(config_filename=str(REPO / "pyproject.toml"), no_cache=True, no_logo=True)
    assert code == 0, capsys.readouterr().out


def test_no_module_is_over_400_lines() -> None:
    long = {str(p.relative_to(REPO)): n for p in (REPO / "stream_app").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


@pytest.mark.parametrize("name", MODULES)
def test_the_examples_in_docstrings_run(name: str) -> None:
    module = importlib.import_module(name)
    failed, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert failed == 0, name


def test_every_stage_is_a_package_and_no_module_sits_loose_beside_them() -> None:
    top = sorted(p.name for p in (REPO / "stream_app").iterdir() if p.suffix == ".py")
    assert top == ["__init__.py", "errors.py", "logs.py", "metrics.py", "privacy.py", "settings.py", "testing.py"], top
