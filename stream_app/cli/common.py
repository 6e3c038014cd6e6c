"""What every command shares: the settings read once with errors a user can act on, the broker
checked and its topics made, and the logging the settings ask for."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
from pydantic import ValidationError

if TYPE_CHECKING:
    from stream_app.settings import Settings

__all__ = ["kafka_ready", "logging_setup", "read_settings"]


def read_settings() -> Settings:
    from stream_app.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        secret = {name for name, f in Settings.model_fields.items() if "SecretStr" in str(f.annotation)}
        lines = [f"  {'.'.join(map(str, e['loc']))}: {e['msg']}"
                 + ("" if e["loc"] and e["loc"][0] in secret else f" (got {e.get('input')!r})") for e in exc.errors()]
        raise click.ClickException("invalid settings:\n" + "\n".join(lines)) from None


def kafka_ready(settings: Settings) -> None:
    """Stop at once, with the broker's reason, if Kafka refuses us; then make the topics."""
    from stream_app.connect.kafka import KafkaUnreachable, check_connection
    from stream_app.connect.topics import ensure_topics

    try:
        check_connection(settings)
    except KafkaUnreachable as exc:
        raise click.ClickException(str(exc)) from None
    ensure_topics(settings, settings.kafka_bootstrap)


def logging_setup(settings: Settings) -> dict:
    """Structured logging as the settings ask (JSON lines, readable lines, or by the terminal)."""
    from stream_app.logs import logging_config

    return logging_config({"auto": None, "json": True, "console": False}[settings.log_format])
