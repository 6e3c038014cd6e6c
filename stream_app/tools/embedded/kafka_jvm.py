"""Run a real single-node Apache Kafka 4.x broker (KRaft combined mode) for tests.

Jars come from Maven Central via ``deploy/kafka/pom.xml`` and are cached (offline after the
first fetch). Stdlib only; the readiness probe also uses kafka-python when importable.
"""

from __future__ import annotations

import base64
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from stream_app.errors import NotReady
from stream_app.tools.embedded.process import free_port

POM = Path(__file__).resolve().parents[3] / "deploy" / "kafka" / "pom.xml"
_MARKER = ".complete"


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise NotReady(f"{tool!r} not found on PATH; it is needed to run the test Kafka broker")
    return path


def ensure_kafka_jars(cache_dir: Path, pom: Path = POM) -> Path:
    """Fetch the broker's runtime jars into ``cache_dir/libs`` once; return that dir.

    The marker holds the pom text (editing the pom refetches); a file lock serialises callers.
    """
    _require("java")
    libs, stamp = Path(cache_dir) / "libs", pom.read_text()
    libs.parent.mkdir(parents=True, exist_ok=True)
    with open(libs.parent / ".fetch.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = libs / _MARKER
        if marker.is_file() and marker.read_text() == stamp:
            return libs
        mvn = _require("mvn")
        shutil.rmtree(libs, ignore_errors=True)
        libs.mkdir()
        cmd = [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies", f"-DoutputDirectory={libs}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not any(libs.glob("kafka_2.13-*.jar")):
            raise NotReady(f"fetching Kafka jars failed ({' '.join(cmd)}):\n{proc.stdout}\n{proc.stderr}")
        marker.write_text(stamp)
        return libs


@dataclass(frozen=True)
class SecureListener:
    """A second listener, SASL_SSL with SCRAM-SHA-512, as operators run Kafka; the PLAINTEXT one stays
    for the broker itself and the readiness probe. ``keystore`` is one PEM file: the server's
    private key (PKCS#8) followed by its certificate."""

    keystore: Path
    users: dict[str, str]  # SCRAM user name -> password, created when the storage is formatted
    mechanism: str = "SCRAM-SHA-512"


class ApacheKafka:
    """Context manager running ``kafka.Kafka`` as a subprocess; see ``.bootstrap``."""

    def __init__(self, libs_dir: Path, data_dir: Path, port: int | None = None, num_partitions: int = 4,
                 heap: str = "512m", start_timeout: float = 60.0, extra_props: dict[str, str] | None = None,
                 secure: SecureListener | None = None) -> None:
        self.libs_dir, self.data_dir, self.port = Path(libs_dir), Path(data_dir), port or free_port()
        self.controller_port = free_port()
        while self.controller_port == self.port:
            self.controller_port = free_port()
        self.secure, self.secure_port = secure, 0
        while secure is not None and self.secure_port in (0, self.port, self.controller_port):
            self.secure_port = free_port()
        self.num_partitions, self.heap, self.start_timeout = num_partitions, heap, start_timeout
        self.extra_props = extra_props or {}
        self.log_path = self.data_dir / "kafka.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def secure_bootstrap(self) -> str:
        """The SASL_SSL listener's address (a ``secure`` listener must have been asked for)."""
        if self.secure is None:
            raise NotReady("this broker has no secure listener")
        return f"127.0.0.1:{self.secure_port}"

    def _java(self, main: str, *args: str) -> list[str]:
        return [_require("java"), f"-Xmx{self.heap}", "-Xms128m", "-XX:+UseG1GC",
                "-Djava.awt.headless=true", "-cp", str(self.libs_dir / "*"), main, *args]

    def _write_config(self) -> Path:
        props = {
            "process.roles": "broker,controller", "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER", "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data_dir / "logs"),
            "num.partitions": str(self.num_partitions), "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": "1", "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1", "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1", "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            **self._secure_props(),
            **self.extra_props,
        }
        path = self.data_dir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return path

    def _secure_props(self) -> dict[str, str]:
        if self.secure is None:
            return {}
        listener, login = f"SASL_SSL://127.0.0.1:{self.secure_port}", "org.apache.kafka.common.security.scram"
        return {
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},{listener},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port},{listener}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
            "sasl.enabled.mechanisms": self.secure.mechanism,
            f"listener.name.sasl_ssl.{self.secure.mechanism.lower()}.sasl.jaas.config":
                f"{login}.ScramLoginModule required;",
            "ssl.keystore.type": "PEM", "ssl.keystore.location": str(self.secure.keystore),
        }

    def _format_args(self) -> list[str]:
        users = self.secure.users.items() if self.secure else ()
        return [arg for name, password in users
                for arg in ("--add-scram", f"{self.secure.mechanism}=[name={name},password={password}]")]  # type: ignore[union-attr]

    def start(self) -> ApacheKafka:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        cluster_id = _cluster_id()
        fmt = subprocess.run(self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config),
                                        *self._format_args()),
                             capture_output=True, text=True, timeout=120)
        if fmt.returncode != 0:
            raise NotReady(f"kafka storage format failed:\n{fmt.stdout}\n{fmt.stderr}")
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(self._java("kafka.Kafka", str(config)), stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise NotReady(f"Kafka exited with {self._proc.returncode}; see {self.log_path}:\n{self._tail()}")
            if self._metadata_ok():
                return
            time.sleep(0.25)
        raise TimeoutError(f"Kafka not ready on {self.bootstrap} after {self.start_timeout}s:\n{self._tail()}")

    def _metadata_ok(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        try:
            from kafka import KafkaAdminClient  # type: ignore[import-untyped,unused-ignore]
        except ImportError:  # no client library: an open port is the best we can do
            return True
        # Short timeouts so a wedged port cannot stall the loop (kwargs differ across kafka-python 2.x/3.x).
        timeouts = {"request_timeout_ms": 3000, "bootstrap_timeout_ms": 2000, "api_version_auto_timeout_ms": 2000}
        try:
            admin = KafkaAdminClient(bootstrap_servers=self.bootstrap,
                                     **{k: v for k, v in timeouts.items() if k in KafkaAdminClient.DEFAULT_CONFIG})
        except Exception:
            return False
        try:
            return bool(admin.describe_cluster().get("brokers"))
        except Exception:
            return False
        finally:
            admin.close()

    def _tail(self, lines: int = 40) -> str:
        log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(log.splitlines()[-lines:])

    def stop(self, timeout: float = 20.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def __enter__(self) -> ApacheKafka:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def _cluster_id() -> str:
    """A random KRaft cluster id (a UUID in URL-safe base64). One in 64 of those starts with '-',
    which the storage tool's argument parser takes for an option (the start failed with
    "--cluster-id: expected one argument"); Kafka's own `Uuid.randomUuid` draws again then too."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id
