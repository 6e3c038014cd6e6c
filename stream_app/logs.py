"""Logs: one JSON object per line for the log pipeline, readable lines in a terminal.

Every record, ours and the libraries' (faust, aiokafka, kafka-python), goes through the same
structlog processors; our modules log with the standard library and give their fields as
`extra=`, so that tools that never configure logging (evaluate, bench) stay quiet. Customer ids never appear in logs:
the worker names them by their pseudonym under the log key (`privacy.Pseudonyms.for_logs`).
"""

from __future__ import annotations

import sys
from typing import Any

import structlog

__all__ = ["logging_config"]

_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.stdlib.ExtraAdder(),  # fields given as `extra=` to a standard logger
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.stdlib.PositionalArgumentsFormatter(),
    structlog.processors.format_exc_info,
]


def logging_config(json_lines: bool | None = None, level: str = "INFO") -> dict[str, Any]:
    """A `logging.config.dictConfig` that renders every record with structlog; JSON unless
    stderr is a terminal (or as `json_lines` says)."""
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    renderer = structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer(colors=False)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"structured": {
            "()": structlog.stdlib.ProcessorFormatter,
            "processors": [structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            "foreign_pre_chain": _SHARED,
        }},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "structured"}},
        "root": {"handlers": ["default"], "level": level},
    }
