"""Redis as an operator runs it: TLS only, and churnwatch's own ACL user (deploy/redis/churnwatch.acl),
which reaches the `cw:` keys and nothing else. A real worker runs through it end to end."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import redis
from kafka import KafkaProducer

from stream_app.connect.topics import ensure_topics
from stream_app.contracts.keys import customer_state
from stream_app.settings import Settings, Topics
from stream_app.tools.demo import consumed, scrape, stop_worker
from stream_app.tools.embedded.process import free_port
from stream_app.tools.embedded.servers import redis_server
from tests.conftest import IN_CI
from tests.factories import cdr
from tests.tls import make_certificates

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
APP_PASSWORD, ADMIN_PASSWORD = "app-secret-from-the-environment", "admin-secret"


def acl_rules() -> str:
    lines = (REPO / "deploy" / "redis" / "churnwatch.acl").read_text().splitlines()
    return " ".join(line for line in lines if line and not line.startswith("#"))


@pytest.fixture(scope="module")
def secure_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """TLS-only Redis with churnwatch's ACL user; may skip on a laptop (no openssl, or a Redis
    built without TLS), never in CI."""
    if not IN_CI and (shutil.which("openssl") is None or shutil.which("redis-server") is None):
        pytest.skip("the Redis TLS tests need openssl and a redis-server built with TLS on PATH")
    folder = tmp_path_factory.mktemp("secure-redis")
    make_certificates(folder)
    port = free_port()
    extra = ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(folder / "server.crt"),
             "--tls-key-file", str(folder / "server.key"), "--tls-ca-cert-file", str(folder / "ca.crt"),
             "--tls-auth-clients", "no", "--user", "default", "off",
             "--user", "churnwatch", "on", f">{APP_PASSWORD}", *acl_rules().split(),
             "--user", "admin", "on", f">{ADMIN_PASSWORD}", "~*", "&*", "+@all"]
    with redis_server(folder, port, extra):
        tls = f"127.0.0.1:{port}/0?ssl_ca_certs={folder / 'ca.crt'}"
        yield {"app": f"rediss://churnwatch:{APP_PASSWORD}@{tls}", "admin": f"rediss://admin:{ADMIN_PASSWORD}@{tls}",
               "plain": f"redis://churnwatch:{APP_PASSWORD}@127.0.0.1:{port}/0"}


def test_the_app_user_reaches_its_own_keys_only_and_only_over_tls(secure_redis: dict[str, str]) -> None:
    app = redis.Redis.from_url(secure_redis["app"])
    app.set(customer_state("8613800000001"), b"x")
    assert app.get(customer_state("8613800000001")) == b"x"
    with pytest.raises(redis.exceptions.NoPermissionError):
        app.set("someone-else:key", b"x")
    with pytest.raises(redis.exceptions.NoPermissionError):
        app.flushdb()
    app.close()
    plain = redis.Redis.from_url(secure_redis["plain"], socket_timeout=3)
    with pytest.raises(redis.exceptions.ConnectionError):
        plain.ping()


def test_a_worker_runs_through_tls_and_its_acl_user(secure_redis: dict[str, str], tansu_bootstrap: str,
                                                    unique: str, tmp_path: Path) -> None:
    topics = Topics(**{name: f"{value}-{unique}" for name, value in Topics().model_dump().items()})
    ensure_topics(Settings(topics=topics), tansu_bootstrap)
    port = free_port()
    env = dict(os.environ, KAFKA_BOOTSTRAP=tansu_bootstrap, REDIS_URL=secure_redis["app"],
               CHURNWATCH_APP_ID=f"cw-{unique}", CHURNWATCH_METRICS_PORT=str(port),
               CHURNWATCH_RULES_DIR=str(REPO / "alert_rules"), CHURNWATCH_BATCH_WITHIN_S="0.2",
               **{f"CHURNWATCH_TOPIC_{name.upper()}": value for name, value in topics.model_dump().items()})
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "stream_app.cli", "worker"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True)
    customers = [f"86138{unique[:4].translate(str.maketrans('abcdef', '123456'))}{k:04d}" for k in range(20)]
    try:
        producer = KafkaProducer(bootstrap_servers=tansu_bootstrap)
        for c in customers:
            producer.send(topics.cdr, key=c.encode(), value=cdr(c, "2026-09-09T10:00:00+08:00"))
        producer.flush()
        producer.close()
        deadline = time.monotonic() + 120
        while consumed(port) < len(customers) or scrape(port).get("churnwatch_customers_tracked", 0) < len(customers):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        samples = scrape(port)
    finally:
        stop_worker(proc)
    assert samples["churnwatch_redis_up"] == 1 and samples.get("churnwatch_redis_errors_total", 0) == 0
    admin = redis.Redis.from_url(secure_redis["admin"])
    assert all(admin.exists(customer_state(c)) for c in customers)
    admin.close()
    assert "NOPERM" not in log.read_text()
