"""docker-compose.yml cannot run here (no Docker engine), so check that it agrees with the app."""

import re
from pathlib import Path

import yaml

from stream_app.settings import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_services_are_there() -> None:
    assert {"kafka", "redis", "worker", "trainer", "queue", "simulator", "prometheus", "grafana"} <= set(COMPOSE["services"])


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


def interpolated(value: str, env: dict[str, str]) -> str:
    """Compose's `${NAME:?message}` interpolation, for the names given."""
    return re.sub(r"\$\{(\w+):\?[^}]*\}", lambda m: env[m.group(1)], value)


def test_the_production_profile_reaches_kafka_and_redis_only_through_their_secured_ports() -> None:
    services = COMPOSE["services"]
    secure = {name: s for name, s in services.items() if "production" in s.get("profiles", [])}
    assert {"kafka-secure", "redis-secure", "worker-secure", "trainer-secure"} <= set(secure)
    secrets = {"CHURNWATCH_KAFKA_SASL_PASSWORD": "k-pw", "CHURNWATCH_REDIS_PASSWORD": "r-pw",
               "CHURNWATCH_PSEUDONYM_KEY": "a key of sixteen characters or more",
               "CHURNWATCH_MODEL_SIGNING_KEY": "another key of sixteen characters"}
    known = {"KAFKA_BOOTSTRAP", "REDIS_URL"} | {f"CHURNWATCH_{name.upper()}" for name in Settings.model_fields}
    for name in ("worker-secure", "trainer-secure"):
        env = {k: interpolated(v, secrets) for k, v in secure[name]["environment"].items()}
        assert set(env) <= known, set(env) - known
        # Every secret is interpolated from the operator's environment, never written here.
        raw = secure[name]["environment"]
        assert all(raw[k].startswith(f"${{{k}:?") for k in ("CHURNWATCH_KAFKA_SASL_PASSWORD", "CHURNWATCH_PSEUDONYM_KEY",
                                                            "CHURNWATCH_MODEL_SIGNING_KEY"))
        assert "${CHURNWATCH_REDIS_PASSWORD:?" in raw["REDIS_URL"]
        settings = Settings.model_validate({k.removeprefix("CHURNWATCH_").lower(): v for k, v in env.items()})
        assert settings.kafka_security_protocol == "SASL_SSL" and settings.pseudonym_key is not None
        assert settings.model_signing_key is not None
        assert settings.redis_url is not None and settings.redis_url.get_secret_value().startswith("rediss://churnwatch:r-pw@")
        assert env["KAFKA_BOOTSTRAP"] == "kafka-secure:9093" and "certs:/certs:ro" in secure[name]["volumes"]
    kafka = secure["kafka-secure"]["environment"]
    assert "SASL_SSL://:9093" in kafka["KAFKA_LISTENERS"] and secure["kafka-secure"]["ports"] == ["9093:9093"]
    assert kafka["KAFKA_SASL_ENABLED_MECHANISMS"] == Settings().kafka_sasl_mechanism
    assert "--port 0 --tls-port 6380" in secure["redis-secure"]["command"][-1]
    assert "/etc/redis/churnwatch.acl" in secure["redis-secure"]["command"][-1]
