"""`model bootstrap` and `model report` against a real Redis."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from stream_app.cli.main import main
from stream_app.contracts import keys
from stream_app.model.scoring import decode_model
from stream_app.model.signing import Signer
from stream_app.model.trainer import TrainerCore
from stream_app.settings import Settings

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
SIGNING_KEY = "a-key-for-these-tests"


def test_bootstrap_publishes_a_model_from_history_that_the_report_shows(redis_url: str, tmp_path: Path,
                                                                        monkeypatch) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("CHURNWATCH_RULES_DIR", str(REPO / "alert_rules"))
    monkeypatch.setenv("CHURNWATCH_HORIZON_DAYS", "10")
    monkeypatch.setenv("CHURNWATCH_MODEL_SIGNING_KEY", SIGNING_KEY)
    history = tmp_path / "history.jsonl"
    runner = CliRunner()
    made = runner.invoke(main, ["simulate", "--customers", "60", "--days", "50", "--monthly-churn", "0.1",
                                "--out", str(history), "--truth", str(tmp_path / "truth.jsonl")])
    assert made.exit_code == 0, made.output
    client = redis.Redis.from_url(redis_url)
    assert runner.invoke(main, ["model", "report"]).exit_code != 0  # nothing published yet

    boot = runner.invoke(main, ["model", "bootstrap", "--from", str(history), "--json"])
    assert boot.exit_code == 0, boot.output
    summary = json.loads(boot.stdout.strip().splitlines()[-1])
    model = decode_model(client.get(keys.MODEL))
    assert model.version == summary["version"] == int(client.get(keys.MODEL_VERSION))
    assert model.labels == summary["labels"] > 0
    core = TrainerCore.restore(client.get(keys.TRAINER_STATE), Settings(), Signer(SIGNING_KEY.encode()))
    assert core.learner.labels == model.labels and core.learned == {} and core.labels_offset == 0

    again = runner.invoke(main, ["model", "bootstrap", "--from", str(history)])
    assert again.exit_code != 0 and "--force" in again.output  # a published model is not replaced by accident

    report = runner.invoke(main, ["model", "report", "--json"])
    assert report.exit_code == 0, report.output
    shown = json.loads(report.stdout.strip().splitlines()[-1])
    assert shown["version"] == model.version and shown["labels"] == model.labels
    assert shown["log_loss"] == pytest.approx(model.figures["log_loss"])
    assert shown["calls"]["ready"] is False and shown["calls"]["actions"] == {}  # history holds no calls

    client.set(keys.MODEL, client.get(keys.MODEL)[:-5])  # a torn write
    broken = runner.invoke(main, ["model", "report"])
    assert broken.exit_code != 0 and "corrupt" in broken.output
