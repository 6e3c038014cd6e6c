"""What every command shares: the settings read once with errors a user can act on, the broker
checked and its topics made, and the logging the settings ask for."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
from pydantic import ValidationError
from pydantic_settings import SettingsError

if TYPE_CHECKING:
    from stream_app.rules.pack import Ruleset
    from stream_app.settings import Settings

__all__ = ["kafka_ready", "logging_setup", "read_settings", "produce_records", "read_rules"]


def read_settings() -> Settings:
    from stream_app.settings import Settings

    try:
        return Settings()
    except SettingsError as exc:  # a variable that is not the JSON its setting takes
        raise click.ClickException(f"invalid settings: {exc}") from None
    except ValidationError as exc:
        secret = _secret_fields(Settings)
        # An error of the whole settings (no field) would show every setting, secrets among them.
        lines = [f"  {'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}"
                 + ("" if not e["loc"] or set(map(str, e["loc"])) & secret else f" (got {e.get('input')!r})")
                 for e in exc.errors()]
        raise click.ClickException("invalid settings:\n" + "\n".join(lines)) from None


def read_rules(settings: Settings) -> Ruleset:
    """The rule pack in `CHURNWATCH_RULES_DIR`, or one line saying what is wrong with it."""
    from pathlib import Path

    from stream_app.rules.pack import RuleFileError, load_rules

    try:
        return load_rules([Path(settings.rules_dir)])
    except RuleFileError as exc:
        raise click.ClickException(f"the rules in CHURNWATCH_RULES_DIR={settings.rules_dir}: {exc}") from None


def _secret_fields(model: type) -> set[str]:
    """The names of `model`'s secret fields, nested settings' (the notifier's) among them."""
    names = set()
    for name, f in model.model_fields.items():  # type: ignore[attr-defined]
        if "SecretStr" in str(f.annotation):
            names.add(name)
        elif hasattr(f.annotation, "model_fields"):
            names |= _secret_fields(f.annotation)
    return names


def kafka_ready(settings: Settings) -> None:
    """Stop at once, with the broker's reason, if Kafka refuses us; then make the topics."""
    from stream_app.connect.topics import ensure_topics

    kafka_reachable(settings)
    ensure_topics(settings, settings.kafka_bootstrap)


def kafka_reachable(settings: Settings) -> None:
    """Stop at once, with each bootstrap server's reason, if KAFKA_BOOTSTRAP is set and no broker
    there takes us (a kafka-python client would retry for 30 s, then say only that it could not
    bootstrap). Unset, the command's own message says what it needed the broker for."""
    from stream_app.connect.kafka import KafkaUnreachable, check_connection

    if not settings.kafka_bootstrap:
        return
    try:
        check_connection(settings)
    except KafkaUnreachable as exc:
        first, *servers = str(exc).splitlines()  # a line per bootstrap server, here on one
        raise click.ClickException(" ".join([first, "; ".join(s.strip() for s in servers)]).strip()
                                   + "; check KAFKA_BOOTSTRAP and that the broker is running") from None


def logging_setup(settings: Settings) -> dict:
    """Structured logging as the settings ask (JSON lines, readable lines, or by the terminal)."""
    from stream_app.logs import logging_config

    return logging_config({"auto": None, "json": True, "console": False}[settings.log_format])


def produce_records(settings: Settings, topic: str, records: list[tuple[str, bytes]]) -> None:
    """Send a list in order. Keyed by customer like every topic here; a re-run sends the same
    records, which readers tell apart by the list's day or month."""
    from kafka import KafkaProducer

    from stream_app.connect.kafka import client_options

    producer = KafkaProducer(**client_options(settings), acks="all")
    try:
        for customer, value in records:
            producer.send(topic, key=customer.encode(), value=value)
        producer.flush()
    finally:
        producer.close()
