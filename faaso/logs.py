"""structlog set-up: human-readable lines on a terminal, JSON lines elsewhere or on request.

Standard-library logging (aiohttp, asyncio, anything a dependency logs) goes through the same
renderer, via structlog's ``ProcessorFormatter`` on the root logger, so ``--log-format json``
gives JSON lines only.
"""

from __future__ import annotations

import logging
import sys
from typing import cast

import structlog
from structlog.typing import FilteringBoundLogger, Processor

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _logger_name(
    _logger: object, _method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """A standard-library record's logger name as ``logger``, like faaso's own lines."""
    record = event.get("_record")
    if isinstance(record, logging.LogRecord) and "logger" not in event:
        event["logger"] = record.name
    return event


def configure(level: str = "info", json: bool | None = None) -> None:
    """Configure structlog once, for the CLI. Library code only calls :func:`get_logger`."""
    if json is None:
        json = not sys.stderr.isatty()
    renderer: Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, _logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS.get(level, logging.INFO))
    # watchfiles logs every batch of changes it sees at info: a log file in a watched folder
    # (faaso's own, beside the routes file) then feeds itself, a line for each line. faaso logs
    # the changes that matter itself (reload.change).
    logging.getLogger("watchfiles").setLevel(logging.WARNING)


def get_logger(name: str) -> FilteringBoundLogger:
    """A logger whose lines carry ``logger=name``."""
    return cast(FilteringBoundLogger, structlog.get_logger().bind(logger=name))
