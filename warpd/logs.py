"""Logging set-up: text or JSON lines on stderr, credentials always redacted.

Lines carry correlation ids: :func:`set_context` gives every line of the
process a field (``schema``), :func:`bind` gives the lines written inside a
block a field (``table``, ``batch``).  Bound fields live in a context
variable, so they follow the code that runs under :func:`contextvars.copy_context`
(the appliers hand it to their worker threads) and never leak to other threads.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

from warpd.redact import redact

_context: dict[str, str] = {}
_bound: contextvars.ContextVar[tuple[tuple[str, Any], ...]] = contextvars.ContextVar(
    "warpd_log_fields", default=()
)


def set_context(**values: str) -> None:
    """Fields added to every log line of this process (e.g. schema=products)."""
    _context.update(values)


@contextlib.contextmanager
def bind(**values: Any) -> Iterator[None]:
    """Fields added to the log lines written inside the block (e.g. table=orders, batch=17)."""
    token = _bound.set(tuple({**dict(_bound.get()), **values}.items()))
    try:
        yield
    finally:
        _bound.reset(token)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = getattr(record, "warp_fields", {})
    return fields


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = ()
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        fields = {**_context, **dict(_bound.get())}
        for key, value in fields.items():
            setattr(record, key, value)
        record.warp_fields = fields
        return True


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ctx = _compact(_fields(record))
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        line = f"{stamp} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if ctx:
            line += f" [{ctx}]"
        if record.exc_text:
            line += "\n" + record.exc_text
        return line


def _compact(fields: dict[str, Any]) -> str:
    """``products.orders batch=17`` for schema, table and batch; other fields as key=value."""
    rest = dict(fields)
    where = ".".join(str(rest.pop(k)) for k in ("schema", "table") if rest.get(k) is not None)
    parts = [where] if where else []
    return " ".join(parts + [f"{k}={v}" for k, v in rest.items() if v is not None])


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(_fields(record))
        if record.exc_text:
            doc["exception"] = record.exc_text
        return json.dumps(doc, ensure_ascii=False, default=str)


LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")  # monitoring.log_level's choices (schema.json)
EARLY_LEVEL_ENV = "CARTRIDGE_WARP_MONITORING__LOG_LEVEL"


def configure_early(level: str | None) -> None:
    """Logging before the configuration is read: *level* (``--log-level``) or the environment's, as given.

    Neither is validated yet: an unknown level logs at INFO until validation reports it (exit 2);
    before, ``--log-level bogus`` ended in a traceback.
    """
    asked = (level or os.environ.get(EARLY_LEVEL_ENV) or "INFO").strip()
    configure(asked if asked.upper() in LEVELS else "INFO")


def configure(level: str = "INFO", fmt: str = "text", stream: TextIO | None = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(_RedactingFilter())
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # pymysqlreplication logs every connection at INFO; keep ours readable
    logging.getLogger("pymysqlreplication").setLevel(logging.WARNING)
