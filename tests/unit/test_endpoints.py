import time

from prometheus_client import CollectorRegistry, Counter

from stream_app.tools.embedded.process import free_port
from stream_app.worker.endpoints import Health, serve
from tests.probes import get


def test_health_readiness_and_metrics_on_one_port() -> None:
    registry = CollectorRegistry()
    Counter("churnwatch_probe_total", "a counter", registry=registry).inc()
    health = Health()
    port = free_port()
    serve(port, registry, health, addr="127.0.0.1")
    assert get(port, "/healthz") == (200, "ok\n")
    status, why = get(port, "/readyz")
    assert status == 503 and "no input partitions" in why
    health.partitions = 4
    assert get(port, "/readyz")[0] == 503  # Redis has not answered yet
    health.redis_answered_at = time.monotonic()
    assert get(port, "/readyz") == (200, "4 input partitions assigned; Redis answers\n")
    assert "churnwatch_probe_total 1.0" in get(port, "/metrics")[1]
