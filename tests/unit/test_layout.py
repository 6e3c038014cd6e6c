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
    assert top == ["__init__.py", "errors.py", "logs.py", "metrics.py", "privacy.py", "testing.py",
                   "yaml_source.py"], top


def test_every_exception_the_package_defines_descends_from_the_root_one() -> None:
    from stream_app.errors import ChurnwatchError

    for name in MODULES:
        module = importlib.import_module(name)
        for value in vars(module).values():
            if (isinstance(value, type) and issubclass(value, BaseException) and value.__module__ == name
                    and not value.__name__.startswith("_")):
                assert issubclass(value, ChurnwatchError), f"{name}.{value.__name__}"


def test_an_error_a_user_causes_ends_a_command_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from stream_app.cli import main

    monkeypatch.delenv("KAFKA_BOOTSTRAP", raising=False)
    result = CliRunner().invoke(main, ["calls", "daily", "--day", "2026-11-30"])
    assert result.exit_code == 1 and result.exception is None or isinstance(result.exception, SystemExit)
    assert result.output.strip().splitlines() == ["Error: KAFKA_BOOTSTRAP is not set: churn.alerts cannot be read"]
