"""The worker's HTTP side: `/metrics` for Prometheus, `/healthz` and `/readyz` for probes."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

__all__ = ["Health", "serve"]

#: (ready, why): what `/readyz` answers.
Readiness = Callable[[], tuple[bool, str]]


@dataclass
class Health:
    """What the worker last saw of its inputs, for `/readyz`: ready when it owns input
    partitions (so it is in the consumer group) and Redis answered recently."""

    partitions: int = 0
    redis_answered_at: float = 0.0  # time.monotonic()
    redis_grace_s: float = 30.0
    blocked: str | None = None  # why consumption waits (a batch failing on Redis or the broker), if it does
    rebuilding: int = 0  # input partitions being rebuilt from Kafka now (Redis had lost them)

    def __call__(self) -> tuple[bool, str]:
        if self.blocked:
            return False, self.blocked
        if self.rebuilding:
            return False, (f"rebuilding the state of {self.rebuilding} input partitions from Kafka: "
                           "Redis had lost it (see the log)")
        if self.partitions == 0:
            return False, "no input partitions assigned (joining the group, or more workers than partitions)"
        silent = time.monotonic() - self.redis_answered_at
        if silent > self.redis_grace_s:
            return False, f"Redis has not answered for {silent:.0f} s"
        return True, f"{self.partitions} input partitions assigned; Redis answers"


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: object) -> None:  # scrapes and probes every few seconds are not news
        return None


def _app(registry: CollectorRegistry, ready: Readiness) -> Callable:
    metrics = make_wsgi_app(registry)

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":  # the process answers: alive
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok\n"]
        if path == "/readyz":
            ok, why = ready()
            start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
            return [f"{why}\n".encode()]
        return metrics(environ, start_response)

    return app


def serve(port: int, registry: CollectorRegistry, ready: Readiness, addr: str = "0.0.0.0") -> None:
    """Serve in a daemon thread, so a worker stuck in its event loop still answers `/healthz`
    only as long as the process lives (a liveness probe should not restart a busy worker)."""
    server = make_server(addr, port, _app(registry, ready), _Server, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
