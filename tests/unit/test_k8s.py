"""The Kubernetes manifests (deploy/k8s), validated offline: built-in kinds against the
Kubernetes schemas that kubernetes-validate ships, the two custom resources (KEDA's
ScaledObject, the Prometheus Operator's ServiceMonitor) against the fields we rely on, and
what they must agree on with the code (ports, probe paths, consumer group, partitions) and
with the alerting rules (the scrape jobs they select)."""

from __future__ import annotations

import re
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from stream_app.settings import Settings

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30"  # the oldest release the manifests are meant for

# What the manifests use of the two custom resources, as their projects document them.
CUSTOM_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): {
        "type": "object", "required": ["spec"],
        "properties": {"spec": {
            "type": "object", "required": ["scaleTargetRef", "triggers"],
            "properties": {
                "scaleTargetRef": {"type": "object", "required": ["name"]},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "pollingInterval": {"type": "integer"}, "cooldownPeriod": {"type": "integer"},
                "triggers": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["type", "metadata"],
                    "properties": {"metadata": {"type": "object", "additionalProperties": {"type": "string"}}}}},
            }}},
    },
    ("keda.sh/v1alpha1", "TriggerAuthentication"): {
        "type": "object", "required": ["spec"],
        "properties": {"spec": {
            "type": "object", "required": ["secretTargetRef"],
            "properties": {"secretTargetRef": {"type": "array", "items": {
                "type": "object", "required": ["parameter", "name", "key"], "additionalProperties": False,
                "properties": {k: {"type": "string"} for k in ("parameter", "name", "key")}}}}}},
    },
    ("monitoring.coreos.com/v1", "PrometheusRule"): {
        "type": "object", "required": ["spec"],
        "properties": {"spec": {
            "type": "object", "required": ["groups"],
            "properties": {"groups": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["name", "rules"],
                "properties": {"rules": {"type": "array", "items": {
                    "type": "object", "required": ["alert", "expr"]}}}}}}}},
    },
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "type": "object", "required": ["spec"],
        "properties": {"spec": {
            "type": "object", "required": ["selector", "endpoints"],
            "properties": {"endpoints": {"type": "array", "minItems": 1,
                                         "items": {"type": "object", "required": ["port"]}}}}},
    },
}


def manifests() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [(f"{path.relative_to(K8S)}: {d['kind']}", d) for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def by_kind(kind: str) -> list[dict]:
    return [d for _, d in manifests() if d["kind"] == kind]


@pytest.mark.parametrize("name,doc", manifests(), ids=[n for n, _ in manifests()])
def test_every_manifest_is_valid_for_its_kind(name: str, doc: dict) -> None:
    custom = CUSTOM_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
    if custom is not None:
        jsonschema.validate(doc, custom)
    else:  # strict: a misspelt field is an error, not silently dropped by the API server
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_every_kustomization_lists_files_that_exist() -> None:
    for path in K8S.rglob("kustomization.yaml"):
        for resource in yaml.safe_load(path.read_text())["resources"]:
            assert (path.parent / resource).exists(), f"{path}: {resource}"
    listed = set(yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in (K8S / "base").glob("*.yaml")} - {"kustomization.yaml"}


def test_the_manifests_agree_with_the_code() -> None:
    [settings_map] = by_kind("ConfigMap")
    # The password is in the Secret, never the ConfigMap.
    assert not {k for k in settings_map["data"] if "PASSWORD" in k or "KEY" in k}
    settings = Settings(**{k.removeprefix("CHURNWATCH_").lower(): v for k, v in settings_map["data"].items()},
                        kafka_sasl_password="from-the-secret")
    worker, trainer, queue = (next(d for d in by_kind("Deployment") if d["metadata"]["name"] == f"churnwatch-{n}")
                              for n in ("worker", "trainer", "queue"))
    container = worker["spec"]["template"]["spec"]["containers"][0]
    assert container["ports"][0]["containerPort"] == settings.metrics_port
    assert (container["livenessProbe"]["httpGet"]["path"], container["readinessProbe"]["httpGet"]["path"]) == \
        ("/healthz", "/readyz")
    assert any(m["mountPath"] == str(settings.rules_dir) for m in container["volumeMounts"])
    for deployment in (worker, trainer, queue):  # all reach Kafka, so all trust its CA
        mounts = deployment["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        assert any(m["mountPath"] == str(settings.kafka_ssl_cafile.parent) for m in mounts)  # type: ignore[union-attr]
    assert trainer["spec"]["replicas"] == 1 and trainer["spec"]["strategy"]["type"] == "Recreate"
    page = queue["spec"]["template"]["spec"]["containers"][0]
    args = dict(zip(page["command"][2::2], page["command"][3::2]))
    assert page["command"][:2] == ["churnwatch", "queue"] and int(args["--port"]) == page["ports"][0]["containerPort"]
    assert any(m["mountPath"] == str(Path(args["--lookup"]).parent) for m in page["volumeMounts"])
    accounts = Path(next(e["value"] for e in page["env"] if e["name"] == "CHURNWATCH_QUEUE_ACCOUNTS"))
    assert any(m["mountPath"] == str(accounts.parent) for m in page["volumeMounts"])
    assert page["readinessProbe"]["httpGet"]["path"] == "/healthz"  # a probe has no login
    [page_policy] = [p for p in by_kind("NetworkPolicy") if p["spec"]["podSelector"]["matchLabels"].get(
        "app.kubernetes.io/component") == "queue"]
    assert [port["port"] for rule in page_policy["spec"]["ingress"] for port in rule["ports"]] == ["http"]
    [scaler] = by_kind("ScaledObject")
    [trigger] = scaler["spec"]["triggers"]
    assert trigger["metadata"]["consumerGroup"] == f"{settings.app_id}-ingest"
    assert trigger["metadata"]["topic"] == settings.topics.cdr
    assert trigger["metadata"]["bootstrapServers"] == settings.kafka_bootstrap
    [auth] = by_kind("TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    assert {"sasl", "tls", "username", "password", "ca"} <= {r["parameter"] for r in auth["spec"]["secretTargetRef"]}
    # More workers than partitions would sit idle.
    assert scaler["spec"]["maxReplicaCount"] <= settings.partitions
    assert scaler["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]


def test_the_alerts_select_the_jobs_the_deploy_scrapes() -> None:
    """An alert on `up{job="x"}` stays silent for ever if no scrape job is called x."""
    prometheus = K8S.parent / "prometheus"
    [rule] = by_kind("PrometheusRule")
    selected = {job for group in rule["spec"]["groups"] for r in group["rules"]
                for job in re.findall(r'job="([^"]+)"', r["expr"])}
    assert selected == {"churnwatch", "churnwatch-trainer", "churnwatch-notifier"}
    # Kubernetes: the Prometheus Operator names a job after the Service label its `jobLabel` names
    # (after the Service itself without one), for each Service the ServiceMonitor selects.
    [monitor] = by_kind("ServiceMonitor")
    wanted = monitor["spec"]["selector"]["matchLabels"]
    ports = {e["port"] for e in monitor["spec"]["endpoints"]}
    scraped = {svc["metadata"]["labels"].get(monitor["spec"].get("jobLabel", ""), svc["metadata"]["name"])
               for svc in by_kind("Service") if wanted.items() <= svc["metadata"]["labels"].items()
               and ports & {p["name"] for p in svc["spec"]["ports"]}}
    assert scraped == selected
    # docker-compose's Prometheus: its scrape configuration's job names.
    config = yaml.safe_load((prometheus / "prometheus.yml").read_text())
    assert {job["job_name"] for job in config["scrape_configs"]} == selected
