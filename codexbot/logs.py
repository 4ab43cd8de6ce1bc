"""JSON logs, one event per line, with every known secret masked before it is written."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

from codexbot.redact import Redactor

_redactor = Redactor()


def forget_secret(secret: str | None) -> None:
    """Mask this value in every log line from now on (installation tokens minted at run time)."""
    _redactor.add(secret)


def _redact(_: Any, __: str, rendered: Any) -> Any:
    """Last processor: masks secrets in the rendered JSON line."""
    return _redactor(rendered)


def configure_logging(
    secrets: list[str] | None = None, level: int = logging.INFO, stream: TextIO | None = None
) -> None:
    """Route structlog and stdlib logging to stderr (or ``stream``) as JSON lines, with secrets
    masked."""
    for secret in secrets or []:
        _redactor.add(secret)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.JSONRenderer(), _redact],
        # Looked up at each use, so a replaced stderr (tests, daemons) is always the one written.
        logger_factory=lambda *_: structlog.PrintLogger(file=stream or sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
                _redact,
            ],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
