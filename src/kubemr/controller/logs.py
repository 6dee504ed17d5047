"""Structured logs: one JSON object per line, with context fields such as the job and the
reconcile id attached to every line logged inside :func:`log_context`.

Example:
    setup_logging("INFO", fmt="json")
    log = logging.getLogger("kubemr.controller")
    with log_context(namespace="default", job="wordcount", reconcile_id="3f2a"):
        log.info("created map job", extra={"wave": "map-0"})
    # {"time": "...", "level": "INFO", "logger": "kubemr.controller",
    #  "msg": "created map job", "namespace": "default", "job": "wordcount",
    #  "reconcile_id": "3f2a", "wave": "map-0"}
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import IO, Any, Literal

LogFormat = Literal["json", "text"]

_context: ContextVar[Mapping[str, Any]] = ContextVar(
    "kubemr_log_context", default=MappingProxyType({})
)

# Attributes every LogRecord has; anything else on a record came from ``extra=`` or the
# context and is written as a field.
_RECORD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Attach ``fields`` to every record logged in this thread (or task) until the block
    ends; nested blocks add to the outer fields."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> Mapping[str, Any]:
    return _context.get()


class ContextFilter(logging.Filter):
    """Copies the :func:`log_context` fields onto each record; ``extra=`` fields win.

    Installed on the handler: filters run in the thread that logs, where the context
    variable holds that thread's fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The extra fields of ``record``: those passed with ``extra=`` or from the context."""
    return {
        k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS and not k.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, RFC 3339), ``level``, ``logger``, ``msg``,
    the extra fields, and ``exc`` with the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record_fields(record).items():
            out.setdefault(key, value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time level logger: msg key=value ...`` for people reading a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = record_fields(record)
        if not fields:
            return line
        head, sep, tail = line.partition("\n")  # keep fields on the message line
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        return f"{head} {extra}{sep}{tail}"


def setup_logging(
    level: int | str = "INFO", fmt: LogFormat = "json", stream: IO[str] | None = None
) -> logging.Handler:
    """Send the root logger's records to ``stream`` (stderr by default) in ``fmt``.

    Calling it again replaces the handler it installed before, so it is safe to call
    from tests and from a ``main`` that may run twice in one process.
    """
    if fmt not in ("json", "text"):
        raise ValueError(f"unknown log format {fmt!r}: use 'json' or 'text'")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    handler.set_name("kubemr")
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == "kubemr":
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler


def _rfc3339(created: float) -> str:
    return (
        datetime.fromtimestamp(created, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )
