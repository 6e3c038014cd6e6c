"""Kafka as an operator runs it: a SASL_SSL listener with a SCRAM-SHA-512 user, and a certificate
from the operator's own CA (made here). A real worker runs through it end to end; wrong
credentials and an untrusted certificate stop the worker at once, saying which."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from kafka import KafkaProducer

from stream_app.connect.kafka import KafkaUnreachable, check_connection, client_options, librdkafka_options
from stream_app.connect.topics import ensure_topics
from stream_app.settings import Settings, Topics
from stream_app.tools.demo import stop_worker
from stream_app.tools.embedded.kafka_jvm import ApacheKafka, SecureListener, ensure_kafka_jars
from stream_app.tools.embedded.process import free_port
from tests.conftest import IN_CI, KAFKA_CACHE
from tests.factories import Log, cdr, decliner
from tests.integration.test_end_to_end import consume_until
from tests.tls import make_certificates

pytestmark = [pytest.mark.integration, pytest.mark.apache_kafka]
REPO = Path(__file__).resolve().parents[2]
USER, PASSWORD = "churnwatch", "scram-secret-from-the-environment"


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Apache Kafka with a SASL_SSL listener; the environment a worker needs to use it."""
    missing = [tool for tool in ("java", "mvn", "openssl") if shutil.which(tool) is None]
    if missing and not IN_CI:
        pytest.skip(f"the Kafka security tests need {' and '.join(missing)} on PATH")
    folder = tmp_path_factory.mktemp("secure-kafka")
    make_certificates(folder)
    broker = ApacheKafka(ensure_kafka_jars(KAFKA_CACHE), folder / "data", num_partitions=4,
                         secure=SecureListener(folder / "server.pem", {USER: PASSWORD}))
    with broker:
        yield {"KAFKA_BOOTSTRAP": broker.secure_bootstrap, "CHURNWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
               "CHURNWATCH_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "CHURNWATCH_KAFKA_SASL_USERNAME": USER,
               "CHURNWATCH_KAFKA_SASL_PASSWORD": PASSWORD, "CHURNWATCH_KAFKA_SSL_CAFILE": str(folder / "ca.crt")}


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, **fields: object) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings(**fields)


def start_worker(env: dict[str, str], folder: Path) -> subprocess.Popen:
    with open(folder / "worker.log", "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "stream_app.cli", "worker"], env=dict(os.environ, **env),
                                stdout=out, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True)


def test_a_worker_runs_end_to_end_through_scram_over_tls(secure_kafka: dict[str, str], redis_url: str, unique: str,
                                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    topics = Topics(**{name: f"{value}-{unique}" for name, value in Topics().model_dump().items()})
    settings = settings_from(secure_kafka, monkeypatch, topics=topics)
    ensure_topics(settings, settings.kafka_bootstrap)
    env = dict(secure_kafka, REDIS_URL=redis_url, CHURNWATCH_APP_ID=f"cw-{unique}",
               CHURNWATCH_METRICS_PORT=str(free_port()), CHURNWATCH_RULES_DIR=str(REPO / "alert_rules"),
               CHURNWATCH_BATCH_WITHIN_S="0.2",
               **{f"CHURNWATCH_TOPIC_{name.upper()}": value for name, value in topics.model_dump().items()})
    proc = start_worker(env, tmp_path)
    try:
        log = Log()
        decliner(log, "8613800000001")
        producer = KafkaProducer(**client_options(settings), acks="all")
        for rec in log.records:
            producer.send(getattr(topics, rec.topic), key=rec.key, value=rec.value)
        producer.send(topics.cdr, key=b"8613800000001", value=cdr("8613800000001", "2026-06-02T10:00:00+08:00",
                                                                   duration_s=-1))
        producer.flush()
        producer.close()
        # Read back through the secured listener.
        alerts, dead = consume_until({"topics": topics.model_dump(), "proc": proc, "log": tmp_path / "worker.log",
                                      "kafka_options": client_options(settings)}, want_alerts=1, want_dead=1,
                                     timeout_s=120)
    finally:
        stop_worker(proc)
    assert [a.customer_id for a in alerts] == ["8613800000001"]
    assert [(d.reason, d.field) for d in dead] == [("invalid_field", "duration_s")]


def test_wrong_credentials_stop_the_worker_at_once_naming_the_user(secure_kafka: dict[str, str],
                                                                    tmp_path: Path) -> None:
    env = dict(secure_kafka, CHURNWATCH_KAFKA_SASL_PASSWORD="not-the-password", REDIS_URL="redis://127.0.0.1:1/0",
               CHURNWATCH_METRICS_PORT=str(free_port()))
    started = time.monotonic()
    proc = start_worker(env, tmp_path)
    try:
        code = proc.wait(timeout=90)
    finally:
        stop_worker(proc)
    out = (tmp_path / "worker.log").read_text()
    assert code != 0 and time.monotonic() - started < 45, out
    assert f"the broker refused user {USER!r} with SCRAM-SHA-512" in out, out
    assert "not-the-password" not in out


def test_an_untrusted_broker_certificate_and_a_plaintext_client_are_refused(secure_kafka: dict[str, str],
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # The system's CAs do not know the operator's CA.
    untrusting = settings_from({k: v for k, v in secure_kafka.items() if k != "CHURNWATCH_KAFKA_SSL_CAFILE"},
                               monkeypatch)
    with pytest.raises(KafkaUnreachable, match="certificate is not trusted"):
        check_connection(untrusting, timeout_s=5)
    plaintext = Settings(kafka_security_protocol="PLAINTEXT", kafka_sasl_username=None, kafka_sasl_password=None)
    with pytest.raises(KafkaUnreachable, match=secure_kafka["KAFKA_BOOTSTRAP"]):
        check_connection(plaintext, secure_kafka["KAFKA_BOOTSTRAP"], timeout_s=5)
    check_connection(settings_from(secure_kafka, monkeypatch), timeout_s=10)


def test_librdkafka_reads_through_the_same_security_settings(secure_kafka: dict[str, str], unique: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """bench's second ceiling runs on librdkafka: the settings that secure aiokafka secure it too."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError
    from confluent_kafka import TopicPartition as Partition

    topics = Topics(**{name: f"{value}-rd-{unique}" for name, value in Topics().model_dump().items()})
    settings = settings_from(secure_kafka, monkeypatch, topics=topics)
    ensure_topics(settings, settings.kafka_bootstrap)
    producer = KafkaProducer(**client_options(settings), acks="all")
    producer.send(topics.cdr, key=b"8613800000001", value=b"over TLS", partition=0)
    producer.flush()
    producer.close()
    options = librdkafka_options(settings)
    assert options["security.protocol"] == "sasl_ssl" and options["sasl.mechanism"] == "SCRAM-SHA-512"
    consumer = Consumer(options | {"group.id": f"rd-{unique}", "enable.auto.commit": False})
    try:
        consumer.assign([Partition(topics.cdr, 0, OFFSET_BEGINNING)])
        messages = []
        deadline = time.monotonic() + 60
        while not messages and time.monotonic() < deadline:
            messages = [m for m in consumer.consume(num_messages=10, timeout=1.0) if m.error() is None]
    finally:
        consumer.close()
    assert [(m.key(), m.value()) for m in messages] == [(b"8613800000001", b"over TLS")]
    # The wrong password is refused by the broker, not read through.
    wrong = librdkafka_options(settings_from(secure_kafka, monkeypatch, kafka_sasl_password="not-the-password"))
    errors: list = []
    refused = Consumer(wrong | {"group.id": f"rd-wrong-{unique}", "error_cb": errors.append})
    try:
        deadline = time.monotonic() + 30
        while not errors and time.monotonic() < deadline:
            refused.poll(0.5)
    finally:
        refused.close()
    assert KafkaError._AUTHENTICATION in {e.code() for e in errors}, errors
