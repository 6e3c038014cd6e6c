"""docker-compose.yml cannot run here (no Docker engine), so check that it agrees with the app."""

from pathlib import Path

import yaml

from stream_app.settings import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_services_are_there() -> None:
    assert {"kafka", "redis", "worker", "trainer", "simulator", "prometheus", "grafana"} <= set(COMPOSE["services"])


def test_worker_environment_is_settings_the_app_reads() -> None:
    env = COMPOSE["services"]["worker"]["environment"]
    settings = Settings(**{})  # defaults
    known = {"KAFKA_BOOTSTRAP", "REDIS_URL"} | {f"CHURNWATCH_{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= known, set(env) - known
    parsed = Settings.model_validate({k.removeprefix("CHURNWATCH_").lower(): v for k, v in env.items()
                                      if k.startswith("CHURNWATCH_")})
    assert parsed.partitions == int(env["CHURNWATCH_PARTITIONS"]) and settings.timezone == parsed.timezone


def test_ports_agree() -> None:
    worker = COMPOSE["services"]["worker"]
    port = worker["environment"]["CHURNWATCH_METRICS_PORT"]
    assert f"{port}:{port}" in worker["ports"]
    kafka_port = worker["environment"]["KAFKA_BOOTSTRAP"].split(":")[1]
    assert any(p.startswith(f"{kafka_port}:") for p in COMPOSE["services"]["kafka"]["ports"])
    assert worker["environment"]["REDIS_URL"].split(":")[2].split("/")[0] == "6379"
    scrape = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    assert f"worker:{port}" in scrape["scrape_configs"][0]["static_configs"][0]["targets"]
    assert f"127.0.0.1:{port}/readyz" in " ".join(worker["healthcheck"]["test"])


def test_rules_mount_matches_the_rules_setting() -> None:
    worker = COMPOSE["services"]["worker"]
    assert any(v.endswith(":" + worker["environment"]["CHURNWATCH_RULES_DIR"] + ":ro") for v in worker["volumes"])
