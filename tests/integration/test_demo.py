"""`churnwatch demo --keep`: the embedded broker and Redis outlive the demo, and the other
commands work on what it left, with the settings it prints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from stream_app.alerts.agents import Accounts

pytestmark = pytest.mark.integration


def test_a_kept_demo_leaves_a_broker_and_a_redis_that_reports_and_call_lists_read(tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "stream_app.cli"]
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP", "REDIS_URL")}
    env["CHURNWATCH_RULES_DIR"] = str(Path(__file__).resolve().parents[2] / "alert_rules")
    done = subprocess.run([*cli, "demo", "--customers", "60", "--days", "70", "--seconds", "45", "--keep", "--json"],
                          env=env, capture_output=True, text=True, cwd=tmp_path, timeout=240)
    summary = json.loads(done.stdout.splitlines()[-1])
    pids = summary["kept_pids"]
    try:
        assert done.returncode == 0, done.stderr[-3000:]
        assert len(pids) == 2 and all(_alive(pid) for pid in pids)
        kept = summary["kept_environment"]
        assert set(kept) >= {"KAFKA_BOOTSTRAP", "REDIS_URL"}
        assert f"export {' '.join(f'{k}={v}' for k, v in kept.items())}" in done.stderr  # what the user is told
        assert not [line for line in done.stderr.splitlines() if line.startswith(("WARNING", "ERROR", "INFO"))]
        assert [line for line in done.stderr.splitlines() if line.startswith("events ") and " processed (" in line]
        after = dict(env, **kept)
        report = subprocess.run([*cli, "report", "churn", "--json"], env=after, capture_output=True, text=True,
                                timeout=60)
        assert report.returncode == 0, report.stderr
        months = json.loads(report.stdout.splitlines()[-1])["months"]
        assert sum(m["customers_end"] for m in months[-1:]) > 0
        listed = subprocess.run([*cli, "calls", "monthly", "--month", months[-1]["month"], "--json"], env=after,
                                capture_output=True, text=True, timeout=60)
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout.splitlines()[-1])["month"] == months[-1]["month"]
        login = summary["kept_login"]
        assert login["password"] in done.stderr
        agent = Accounts(Path(kept["CHURNWATCH_QUEUE_ACCOUNTS"])).login(login["agent"], login["password"])
        assert agent is not None and agent.queues is None
    finally:
        for pid in pids:
            os.killpg(pid, signal.SIGTERM)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_demo_whose_worker_cannot_start_says_why(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP", "REDIS_URL")}
    env["CHURNWATCH_RULES_DIR"] = str(tmp_path / "no_rules_here")
    done = subprocess.run([sys.executable, "-m", "stream_app.cli", "demo", "--customers", "10", "--days", "10",
                           "--seconds", "60"], env=env, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: the worker exited with code 1, which ends: ") and "no_rules_here" in last, last
