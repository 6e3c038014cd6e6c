"""The account managers' file: each manager reachable, supervisors listed and not in a loop, the
channels it names served by the settings, and edits read without a restart (a bad one ignored)."""

from __future__ import annotations

import json
import os
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from stream_app.cli import main
from stream_app.errors import ConfigError
from stream_app.notify.digests import digest_due
from stream_app.notify.directory import Directory
from stream_app.settings import Notify, Settings

SECRET = "s3cret-webhook-key-0123"


def write(path: Path, managers: dict) -> Path:
    path.write_text(yaml.safe_dump({"managers": managers}))
    return path


@pytest.mark.parametrize("managers, problem", [
    ({"am-1": {"name": "No way to reach"}}, "needs an `email` or a `webhook`"),
    ({"am-1": {"email": "a@b.example", "supervisor": "boss"}}, "supervisor 'boss' is not listed"),
    ({"am-1": {"email": "a@b.example", "supervisor": "am-2"}, "am-2": {"email": "c@b.example", "supervisor": "am-1"}},
     "loop"),
    ({"am 1": {"email": "a@b.example"}}, "managers.am 1"),
    ({"am-1": {"email": "not an address"}}, "email"),
    ({"am-1": {"webhook": "ftp://hooks.example"}}, "webhook"),
])
def test_a_managers_file_that_cannot_be_used_is_refused_with_the_place_and_the_reason(
        tmp_path: Path, managers: dict, problem: str) -> None:
    path = write(tmp_path / "managers.yaml", managers)
    with pytest.raises(ConfigError, match="CHURNWATCH_NOTIFY_MANAGERS_FILE") as err:
        Directory(path)
    assert problem in str(err.value) and str(path) in str(err.value)


def test_the_settings_must_serve_the_channels_the_file_names(tmp_path: Path) -> None:
    path = write(tmp_path / "managers.yaml", {"am-1": {"webhook": "https://crm.example/hook"},
                                              "am-2": {"email": "li@north.example.com"}})
    with pytest.raises(ConfigError, match="not set"):
        Directory.of(Settings(_env_file=None))
    with pytest.raises(ConfigError, match="am-1 has a webhook but CHURNWATCH_NOTIFY_WEBHOOK_SECRET"):
        Directory.of(Settings(_env_file=None, notify=Notify(managers_file=path, smtp_host="mail")))
    with pytest.raises(ConfigError, match="am-2 has an e-mail address but CHURNWATCH_NOTIFY_SMTP_HOST"):
        Directory.of(Settings(_env_file=None, notify=Notify(managers_file=path, webhook_secret=SECRET)))
    directory = Directory.of(Settings(_env_file=None, notify=Notify(managers_file=path, webhook_secret=SECRET,
                                                                    smtp_host="mail")))
    assert sorted(directory.managers) == ["am-1", "am-2"]


def test_an_edit_counts_at_the_next_read_and_a_bad_one_keeps_the_file_read_before(tmp_path: Path) -> None:
    path = write(tmp_path / "managers.yaml", {"am-1": {"email": "a@north.example.com"}})
    directory = Directory(path)
    write(path, {"am-1": {"email": "a@north.example.com", "supervisor": "sup"},
                 "sup": {"email": "boss@north.example.com"}})
    os.utime(path, ns=(1, 2_000_000_000_000_000_000))  # a new stamp even within the clock's resolution
    assert directory.team("sup") == ["am-1"]
    path.write_text("managers: [not, a, mapping")
    os.utime(path, ns=(1, 3_000_000_000_000_000_000))
    assert directory.team("sup") == ["am-1"] and directory.manager("am-1") is not None
    path.write_text("")  # a file being rewritten in place
    assert directory.team("sup") == ["am-1"]
    path.write_text("# account managers\n")  # ... a line of it written so far
    assert directory.team("sup") == ["am-1"]
    path.unlink()  # or moved away for a moment
    assert directory.team("sup") == ["am-1"]


def test_an_empty_variable_is_an_unset_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """docker-compose passes `${CHURNWATCH_NOTIFY_WEBHOOK_SECRET:-}` as "" when the user set none."""
    monkeypatch.setenv("CHURNWATCH_NOTIFY_WEBHOOK_SECRET", "")
    monkeypatch.setenv("CHURNWATCH_NOTIFY_SMTP_HOST", "")
    notify = Settings(_env_file=None).notify
    assert notify.webhook_secret is None and notify.smtp_host is None


def test_notify_check_lists_each_manager_with_their_channels_and_team(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "managers.yaml", {"am-1": {"name": "Zhang Min", "email": "a@north.example.com",
                                                       "webhook": "https://crm.example/hook", "supervisor": "sup"},
                                              "sup": {"email": "boss@north.example.com"}})
    for name, value in (("MANAGERS_FILE", str(path)), ("WEBHOOK_SECRET", SECRET), ("SMTP_HOST", "mail")):
        monkeypatch.setenv(f"CHURNWATCH_NOTIFY_{name}", value)
    result = CliRunner().invoke(main, ["notify", "check", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output.strip().splitlines()[-1])
    assert doc["managers"]["am-1"]["channels"] == ["webhook", "email"] and doc["managers"]["sup"]["team"] == ["am-1"]
    monkeypatch.setenv("CHURNWATCH_NOTIFY_SMTP_HOST", "")
    monkeypatch.delenv("CHURNWATCH_NOTIFY_SMTP_HOST")
    result = CliRunner().invoke(main, ["notify", "check"])
    assert result.exit_code == 1 and result.output.strip().splitlines() == [
        "Error: am-1 has an e-mail address but CHURNWATCH_NOTIFY_SMTP_HOST is not set"]


def test_the_digest_of_the_day_before_is_due_from_the_digest_hour() -> None:
    assert digest_due(datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc), 8) == date(2026, 11, 30)
    assert digest_due(datetime(2026, 12, 1, 7, 59, tzinfo=timezone.utc), 8) == date(2026, 11, 29)
