"""Shared fixtures: real servers started once per test run on free loopback ports."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from stream_app.tools.embedded.kafka_jvm import ApacheKafka, ensure_kafka_jars
from stream_app.tools.embedded.servers import RedisCluster, redis_server, tansu

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REPO = Path(__file__).resolve().parents[1]
KAFKA_CACHE = Path(os.environ.get("CHURNWATCH_KAFKA_CACHE", REPO / ".cache" / "kafka"))
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_data(name: str) -> Path:
    """A real data set from ../shared/data, which CI has beside the clone and a user's clone
    does not: a test on it skips outside CI and fails in CI when it is missing."""
    path = SHARED_DATA / name
    if not path.exists() and not IN_CI:
        pytest.skip(f"needs {path} (real data beside the clone; CI has it)")
    return path


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="session")
def redis_port(workdir: Path) -> Iterator[int]:
    with redis_server(workdir / "redis") as server:
        yield server.port


@pytest.fixture
def redis_url(redis_port: int) -> Iterator[str]:
    import redis

    client = redis.Redis(port=redis_port)
    client.flushall()
    client.close()
    yield f"redis://127.0.0.1:{redis_port}/0"


@pytest.fixture(scope="session")
def redis_cluster_url(workdir: Path) -> Iterator[str]:
    """A 3-master Redis Cluster on loopback."""
    with RedisCluster(workdir / "cluster") as cluster:
        yield cluster.url


def flush(url: str, cluster: bool) -> None:
    """Empty a Redis database, or every node of a cluster."""
    import redis
    from redis.cluster import RedisCluster as ClusterClient

    if cluster:
        client = ClusterClient.from_url(url)
        client.flushall(target_nodes=ClusterClient.PRIMARIES)
    else:
        client = redis.Redis.from_url(url)
        client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def tansu_bootstrap(workdir: Path) -> Iterator[str]:
    with tansu(workdir / "tansu") as broker:
        yield f"127.0.0.1:{broker.port}"


@pytest.fixture(scope="session")
def kafka_bootstrap(workdir: Path) -> Iterator[str]:
    """Apache Kafka 4.x (KRaft) from Maven Central jars; may skip on a laptop, never in CI."""
    missing = [tool for tool in ("java", "mvn") if shutil.which(tool) is None]
    if missing and not IN_CI:
        pytest.skip(f"Apache Kafka tests need {' and '.join(missing)} on PATH")
    libs = ensure_kafka_jars(KAFKA_CACHE)
    yield from _started(lambda attempt: ApacheKafka(libs, workdir / f"kafka-{attempt}", num_partitions=4))


def _started(make, attempts: int = 3) -> Iterator[str]:
    """Start a server, trying again on fresh ports if another process took one meanwhile."""
    for attempt in range(attempts):
        server = make(attempt)
        try:
            server.start()
        except (RuntimeError, TimeoutError) as exc:
            if attempt == attempts - 1:
                raise
            print(f"server start failed, retrying on new ports: {exc}")
            continue
        try:
            yield server.bootstrap
        finally:
            server.stop()
        return


@pytest.fixture(params=["tansu", pytest.param("apache_kafka", marks=pytest.mark.apache_kafka)])
def bootstrap(request: pytest.FixtureRequest) -> str:
    """Each end-to-end test runs against both brokers."""
    name = "tansu_bootstrap" if request.param == "tansu" else "kafka_bootstrap"
    return request.getfixturevalue(name)


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:8]
