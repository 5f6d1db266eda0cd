"""Structured logging: events with counts, sizes, durations and job ids, never names or paths.

Under systemd (JOURNAL_STREAM set) events go to journald with structured fields;
otherwise they are JSON lines on stderr. Standard output carries results only (tables, JSON
reports), so `anond eval --json | jq` works.
"""

from __future__ import annotations

import logging
import os
import sys

import structlog


def _journald_processor():
    try:
        from systemd import journal  # type: ignore[import-not-found]
    except ImportError:  # pragma: no cover - systemd-python is a hard dependency on Linux
        return None

    priorities = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}

    def send(_logger, method_name, event_dict):
        event = str(event_dict.pop("event", ""))
        level = event_dict.pop("level", method_name)
        fields = {k.upper(): str(v) for k, v in event_dict.items() if k != "timestamp"}
        text = " ".join([event] + [f"{k}={v}" for k, v in event_dict.items() if k != "timestamp"])
        journal.send(text, PRIORITY=str(priorities.get(level, 6)), SYSLOG_IDENTIFIER="anond",
                     ANOND_EVENT=event, **{f"ANOND_{k}": v for k, v in fields.items()})
        raise structlog.DropEvent

    return send


LEVELS = ("debug", "info", "warning", "error")


def _stderr_logger(*_args) -> structlog.PrintLogger:
    # Not bound at configure time: each logger writes to the sys.stderr of the moment it is made.
    return structlog.PrintLogger(sys.stderr)


def configure(level: str = "info", journald: bool | None = None) -> None:
    """Set up structlog (again: a reload may change the level)."""
    if level not in LEVELS:
        raise ValueError(f"log level {level!r} is not one of {', '.join(LEVELS)}")
    if journald is None:
        journald = bool(os.environ.get("JOURNAL_STREAM")) and os.environ.get("ANOND_LOG_JSON") != "1"
    processors: list = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    sink = _journald_processor() if journald else None
    if sink is not None:
        processors.append(sink)
    processors.append(structlog.processors.JSONRenderer())
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )


def get(name: str | None = None):
    return structlog.get_logger(name) if name else structlog.get_logger()
