"""How every Kafka client connects: the bootstrap servers, TLS and SASL/SCRAM, all from the
settings, so that the worker, trainer, commands, demo and bench reach a secured cluster alike.

kafka-python and aiokafka take the same option names, so `client_options` serves both; faust
takes credentials objects (`faust_credentials`). `check_connection` runs first in every
long-lived command: a wrong password or an untrusted certificate stops it at once with the
reason, where the clients themselves would only log it and retry "unable to bootstrap".
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any, Coroutine

import faust
from aiokafka.conn import create_conn

from stream_app.errors import ChurnwatchError
from stream_app.settings import Settings

__all__ = ["KafkaUnreachable", "check_connection", "client_options", "faust_credentials", "librdkafka_options",
           "ssl_context"]


class KafkaUnreachable(ChurnwatchError):
    """No bootstrap server accepted the connection, with each one's reason."""


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for the SSL protocols (hostnames checked, the configured CA trusted), else None."""
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    cafile = settings.kafka_ssl_cafile
    context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    if settings.kafka_ssl_certfile and settings.kafka_ssl_keyfile:
        context.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile)
    return context


def client_options(settings: Settings, bootstrap: str | None = None) -> dict[str, Any]:
    """Keyword arguments for a kafka-python or aiokafka client: servers (`bootstrap`, else the
    settings') and security."""
    options: dict[str, Any] = {"bootstrap_servers": bootstrap or settings.kafka_bootstrap,
                               "security_protocol": settings.kafka_security_protocol}
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL_"):
        assert settings.kafka_sasl_password is not None  # the settings check it
        options.update(sasl_mechanism=settings.kafka_sasl_mechanism, sasl_plain_username=settings.kafka_sasl_username,
                       sasl_plain_password=settings.kafka_sasl_password.get_secret_value())
    return options


def librdkafka_options(settings: Settings, bootstrap: str | None = None) -> dict[str, Any]:
    """The same servers and security as `client_options`, as librdkafka's configuration (a
    confluent-kafka client's)."""
    options: dict[str, Any] = {"bootstrap.servers": bootstrap or settings.kafka_bootstrap,
                               "security.protocol": settings.kafka_security_protocol.lower()}
    files = {"ssl.ca.location": settings.kafka_ssl_cafile, "ssl.certificate.location": settings.kafka_ssl_certfile,
             "ssl.key.location": settings.kafka_ssl_keyfile}
    if settings.kafka_security_protocol.endswith("SSL"):
        options.update({name: str(path) for name, path in files.items() if path is not None})
    if settings.kafka_security_protocol.startswith("SASL_"):
        assert settings.kafka_sasl_password is not None  # the settings check it
        options.update({"sasl.mechanism": settings.kafka_sasl_mechanism, "sasl.username": settings.kafka_sasl_username,
                        "sasl.password": settings.kafka_sasl_password.get_secret_value()})
    return options


def faust_credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """The same security as `client_options`, as faust's `broker_credentials`."""
    context = ssl_context(settings)
    if settings.kafka_security_protocol.startswith("SASL_"):
        assert settings.kafka_sasl_password is not None
        return faust.SASLCredentials(username=settings.kafka_sasl_username, ssl_context=context,
                                     password=settings.kafka_sasl_password.get_secret_value(),
                                     mechanism=settings.kafka_sasl_mechanism)
    return faust.SSLCredentials(context) if context is not None else None


def check_connection(settings: Settings, bootstrap: str | None = None, timeout_s: float = 10.0) -> None:
    """Connect and authenticate to one bootstrap server, or raise `KafkaUnreachable` saying why."""
    asyncio.run(_settled(_check(settings, bootstrap, timeout_s)))


async def _settled(check: Coroutine[Any, Any, None], settle_s: float = 0.5) -> None:
    """Run `check`, then give closed TLS connections a moment for their goodbye: the client's
    close() does not wait for it, and a loop that ends first leaves their sockets open."""
    try:
        await check
    finally:
        await asyncio.sleep(settle_s)


async def _check(settings: Settings, bootstrap: str | None, timeout_s: float) -> None:
    options = client_options(settings, bootstrap)
    servers = [s.strip() for s in str(options.pop("bootstrap_servers") or "").split(",") if s.strip()]
    if not servers:
        raise KafkaUnreachable("no Kafka bootstrap server is set (KAFKA_BOOTSTRAP)")
    reasons = []
    for server in servers:
        host, _, port = server.rpartition(":")
        try:
            # The client's own timeout comes first, so that it closes its socket; the outer one
            # only guards a TCP connect that never completes.
            conn = await asyncio.wait_for(create_conn(host, int(port), request_timeout_ms=int(timeout_s * 1000),
                                                      **options), timeout_s + 5)
        except Exception as exc:  # every failure is a reason to report, the caller stops on all of them
            reasons.append(f"  {server}: {_reason(exc, settings)}")
            continue
        conn.close()
        return
    raise KafkaUnreachable("cannot connect to Kafka "
                           f"({settings.kafka_security_protocol}):\n" + "\n".join(reasons))


def _reason(exc: BaseException, settings: Settings) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if "Sasl" in type(exc).__name__:
        return (f"the broker refused user {settings.kafka_sasl_username!r} with {settings.kafka_sasl_mechanism} "
                f"(check CHURNWATCH_KAFKA_SASL_USERNAME / _PASSWORD): {text}")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"the broker's certificate is not trusted (check CHURNWATCH_KAFKA_SSL_CAFILE): {text}"
    if isinstance(exc, asyncio.TimeoutError):
        return f"no answer within the timeout (is the protocol {settings.kafka_security_protocol} right?)"
    return text
