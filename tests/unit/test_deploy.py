"""The SREs' files (Prometheus alerting rules, Grafana dashboard) only name metrics the worker,
the trainer or the notifier exports."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from stream_app.metrics import Metrics, NotifyMetrics, TrainerMetrics
from tests.conftest import IN_CI

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
NAME = re.compile(r"\bchurnwatch_[a-z_]+")


def exported() -> set[str]:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    TrainerMetrics(registry).labels.labels("1").inc()
    NotifyMetrics(registry).alerts.labels("for_manager").inc()
    metrics.build.info({"version": "test"})
    for child in (metrics.events.labels("cdr"), metrics.deadletters.labels("x"), metrics.alerts.labels("high", "other"),
                  metrics.rule_fired.labels("r"), metrics.redis_seconds.labels("load"), metrics.rules_reloads.labels("ok"),
                  metrics.consumer_lag.labels("cdr", "0"), metrics.suppressed.labels("cooldown"),
                  metrics.call_plan.labels("called"), metrics.baseline.labels("mass", "mou_out_mom", "10"),
                  metrics.churned.labels("port_out", "other"), metrics.list_customers.labels("growth"),
                  metrics.list_value.labels("growth")):
        child.inc() if hasattr(child, "inc") else child.observe(0.001)
    return {s.name for family in registry.collect() for s in family.samples}


def test_alerting_rules_use_exported_metrics() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = {n for e in exprs for n in NAME.findall(e)}
    assert used and used <= exported(), used - exported()
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert scrape["rule_files"] == ["alerts.yml"]


def test_dashboard_queries_use_exported_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "churnwatch.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {n for e in exprs for n in NAME.findall(e)}
    assert len(used) >= 8 and used <= exported(), used - exported()
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "churnwatch.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_the_dashboard_picks_its_instances_opens_on_up_and_ready_and_keeps_one_unit_per_panel() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "churnwatch.json").read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["instance"]["includeAll"]
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
        assert not [o for o in panel["fieldConfig"]["overrides"] for p in o["properties"] if p["id"] == "unit"]
        for target in panel["targets"]:
            for selector in re.findall(r"\b(?:churnwatch_\w+|up)(\{[^}]*\})?", target["expr"]):
                assert '{instance=~"$instance"' in selector or 'instance=~"$instance"}' in selector, target["expr"]
    # The first row answers "is it running": each scrape job's up, and the workers' readiness.
    first_row = [p for p in panels if p["gridPos"]["y"] < dashboard["panels"][1]["gridPos"]["y"] + 4]
    exprs = " ".join(t["expr"] for p in first_row for t in p["targets"])
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    for job in (c["job_name"] for c in scrape["scrape_configs"]):
        assert f'up{{job="{job}"' in exprs, job
    assert "churnwatch_ready" in exprs and all(p["type"] == "stat" for p in first_row)


@pytest.mark.skipif(shutil.which("promtool") is None and not IN_CI,
                    reason="promtool not installed (Debian: apt-get install prometheus); CI installs it")
@pytest.mark.parametrize("args", [
    ["check", "config", "prometheus.yml"],
    ["check", "rules", "alerts.yml"],
    ["test", "rules", "alerts.test.yml"],
])
def test_promtool_accepts_the_prometheus_files(args: list[str]) -> None:
    done = subprocess.run(["promtool", *args], cwd=DEPLOY / "prometheus", capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
