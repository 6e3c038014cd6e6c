"""What long commands show while they run: lines for good, a status line kept up to date, and
the demo's rules found wherever it is started."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_app.cli import progress
from stream_app.settings import Settings
from stream_app.tools.demo import demo_settings


def test_piped_output_gets_every_line_shown_and_a_status_line_now_and_then(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    with progress.live_status(to_stderr=True) as (show, status):
        show("[HIGH  ] an alert")
        status("events 10 processed")
        status("events 20 processed")  # too soon after the one before: not printed
        clock[0] += progress.PIPED_EVERY_S
        status("events 30 processed")
    assert capsys.readouterr().err.splitlines() == ["[HIGH  ] an alert", "events 10 processed", "events 30 processed"]


def test_the_demo_uses_the_repositorys_rules_when_started_elsewhere(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    rules = demo_settings(Settings()).rules_dir
    assert rules.is_absolute() and (rules / "churn.yaml").is_file()
    (tmp_path / "alert_rules").mkdir()
    assert demo_settings(Settings()).rules_dir == Path("alert_rules")  # the user's own folder wins
    named = Settings(rules_dir=tmp_path / "missing")
    assert demo_settings(named).rules_dir == tmp_path / "missing"  # named: its absence is for the worker to say
