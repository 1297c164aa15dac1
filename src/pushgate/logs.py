"""How every long-running process logs: one stdlib configuration, applied by ``serve`` and
``worker`` and handed to uvicorn too (``log_config``), so its lines take the same form.

``PUSHGATE_LOG_FORMAT=text`` keeps the plain lines; ``json`` makes each line one JSON object
(``time`` in ISO 8601 UTC, ``level``, ``logger``, ``message``; ``push_id``, ``message_id``,
``channel_id``, ``project_id`` when a call passes them with ``extra=``; ``exception`` holding
the traceback when there is one), which log shippers read without a parsing rule.
``PUSHGATE_LOG_LEVEL`` sets the level of pushgate's own loggers; uvicorn's startup chatter
stays at WARNING, as the ready line is ours.
"""

from __future__ import annotations

import logging
import logging.config
from datetime import UTC, datetime
from typing import Any

import orjson

from pushgate.config import Settings

TEXT_FORMAT = "%(asctime)s %(name)s %(message)s"

# Fields a call may attach with ``extra=`` that the JSON line carries by name.
EXTRA_FIELDS = ("push_id", "message_id", "channel_id", "project_id", "worker_id")


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in EXTRA_FIELDS:
            value = record.__dict__.get(field)
            if value is not None:
                line[field] = value
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) \
                and len(record.args) == 5:
            client, method, path, version, status = record.args
            line.update(client=client, method=method, path=path, status=status)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return orjson.dumps(line, default=str).decode()


def logging_config(settings: Settings) -> dict[str, Any]:
    """The ``logging.config.dictConfig`` of a process (uvicorn applies it again as its own)."""
    formatter: dict[str, Any] = (
        {"()": f"{__name__}.JsonFormatter"} if settings.log_format == "json"
        else {"format": TEXT_FORMAT})
    quiet = max(logging.WARNING, logging.getLevelName(settings.log_level))
    return {
        "version": 1,
        # Modules create their loggers at import, before this runs: keep them working.
        "disable_existing_loggers": False,
        "formatters": {"pushgate": formatter},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "pushgate",
                                "stream": "ext://sys.stderr"}},
        "root": {"level": settings.log_level, "handlers": ["stderr"]},
        "loggers": {
            # uvicorn's loggers propagate to the root handler instead of their own.
            "uvicorn": {"level": quiet, "handlers": [], "propagate": True},
            "uvicorn.error": {"level": quiet, "handlers": [], "propagate": True},
            "uvicorn.access": {"level": settings.log_level, "handlers": [],
                               "propagate": True},
            "alembic": {"level": quiet},
            "httpx": {"level": quiet},
        },
    }


def setup_logging(settings: Settings) -> None:
    logging.config.dictConfig(logging_config(settings))
