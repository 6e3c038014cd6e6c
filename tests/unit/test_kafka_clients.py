"""Kafka security settings: checked whole at start, and handed alike to every client library."""

from __future__ import annotations

import ssl

import faust
import pytest
from pydantic import ValidationError

from stream_app.connect.kafka import client_options, faust_credentials
from stream_app.settings import Settings

SCRAM = dict(kafka_security_protocol="SASL_SSL", kafka_sasl_username="churnwatch", kafka_sasl_password="pw")


def test_plaintext_by_default_with_nothing_but_the_servers() -> None:
    settings = Settings(kafka_bootstrap="k1:9092,k2:9092")
    assert client_options(settings) == {"bootstrap_servers": "k1:9092,k2:9092", "security_protocol": "PLAINTEXT"}
    assert client_options(settings, "other:9092")["bootstrap_servers"] == "other:9092"
    assert faust_credentials(settings) is None


def test_scram_over_tls_reaches_kafka_python_aiokafka_and_faust_alike() -> None:
    settings = Settings(**SCRAM, kafka_sasl_mechanism="SCRAM-SHA-256")
    options = client_options(settings, "k1:9093")
    assert options["security_protocol"] == "SASL_SSL" and options["sasl_mechanism"] == "SCRAM-SHA-256"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("churnwatch", "pw")
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert options["ssl_context"].check_hostname and options["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    credentials = faust_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL" and credentials.mechanism.value == "SCRAM-SHA-256"
    assert credentials.password == "pw" and credentials.ssl_context is not None


def test_tls_without_sasl_is_ssl_credentials_for_faust() -> None:
    credentials = faust_credentials(Settings(kafka_security_protocol="SSL"))
    assert isinstance(credentials, faust.SSLCredentials) and credentials.protocol.value == "SSL"


@pytest.mark.parametrize("fields, says", [
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "u"}, "needs CHURNWATCH_KAFKA_SASL_USERNAME"),
    ({"kafka_sasl_username": "u", "kafka_sasl_password": "pw"}, "expected SASL_SSL"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_certfile": "client.crt"}, "go together"),
    ({"kafka_security_protocol": "TLS"}, "PLAINTEXT"),
    ({**SCRAM, "kafka_sasl_mechanism": "GSSAPI"}, "SCRAM-SHA-512"),
])
def test_incomplete_or_unknown_security_settings_are_refused(fields: dict, says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        Settings(**fields)


def test_the_password_is_never_shown() -> None:
    settings = Settings(**SCRAM)
    assert "pw" not in repr(settings) and "pw" not in str(settings.model_dump())
