"""structlog set-up shared by the API, the dataflows and the ops commands:
JSON lines on stderr, or coloured console lines with `LogSettings.format`
"console" (UTTERSTREAM_LOG_FORMAT=console)."""

from __future__ import annotations

import logging
import sys

import structlog

from runtime.settings import LogSettings


def configure_logging(settings: LogSettings) -> None:
    renderer = (
        structlog.dev.ConsoleRenderer()
        if settings.format == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(settings.level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # The driver logs through stdlib logging; keep its warnings, not its chatter.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("cassandra.protocol").addFilter(_per_statement_keyspace_is_fine)


def _per_statement_keyspace_is_fine(record: logging.LogRecord) -> bool:
    # Cassandra 5 warns about `USE` whenever a prepared statement names its
    # keyspace, even when (as here) no session ever runs USE: every statement
    # carries its keyspace explicitly (protocol v5), which is what it asks for.
    return "`USE <keyspace>`" not in record.getMessage()
