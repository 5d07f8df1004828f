"""Structured JSON logs, one object per line, each carrying the call's request id (and, with
tracing on, its trace_id and span_id).

A logged failure never carries the values a statement was given or met: SQLAlchemy's
engines hide bound parameters (aos_runtime.db), and a database error is logged by its
SQLSTATE, the constraint, table and column it names and the statement's SQL text —
not by PostgreSQL's message, whose text quotes values ('invalid input syntax for type
integer: "…"', 'Failing row contains (…)', 'Key (id)=(…)').
"""
from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
import traceback
from types import TracebackType
from typing import TextIO

import psycopg
import sqlalchemy.exc
from opentelemetry import trace

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()) | {"message", "asctime"}


_ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id.get()
        if rid:
            entry["request_id"] = rid
        span = trace.get_current_span().get_span_context()
        if span.is_valid:  # tracing on (aos_runtime/tracing.py): the line joins its trace
            entry["trace_id"] = format(span.trace_id, "032x")
            entry["span_id"] = format(span.span_id, "016x")
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)

    def formatException(self, ei: _ExcInfo) -> str:
        return safe_traceback(ei[1])


def describe(exc: BaseException) -> str:
    """An exception's text, without the values a database error quotes."""
    if isinstance(exc, sqlalchemy.exc.StatementError):
        orig = exc.orig
        what = describe(orig) if orig is not None else type(exc).__name__
        return f"{what}; statement: {exc.statement}"
    if isinstance(exc, psycopg.Error):
        diag = exc.diag
        names = [f"{label} {value}" for label, value in (
            ("schema", diag.schema_name), ("table", diag.table_name), ("column", diag.column_name),
            ("constraint", diag.constraint_name), ("type", diag.datatype_name)) if value]
        return f"{type(exc).__name__} (SQLSTATE {exc.sqlstate or 'none'}{', ' if names else ''}{', '.join(names)})"
    return str(exc)


def safe_traceback(exc: BaseException | None) -> str:
    """A traceback like the standard one (the cause chain, oldest first), each exception's line
    from ``describe``."""
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ if exc.__cause__ is not None else (None if exc.__suppress_context__ else exc.__context__)
    parts = []
    for position, item in enumerate(reversed(chain)):
        if position:
            parts.append("\nThe above exception led to the following exception:\n\n")
        parts.append("Traceback (most recent call last):\n")
        parts.extend(traceback.format_tb(item.__traceback__))
        parts.append(f"{type(item).__module__}.{type(item).__qualname__}: {describe(item)}\n")
    return "".join(parts).rstrip("\n")


def configure_logging(level: str = "INFO", stream: TextIO | None = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Per-query and per-connection chatter would drown the call log.
    logging.getLogger("sqlalchemy").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))
