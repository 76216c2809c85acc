"""Logging: JSON lines (or text) on stderr, and an access log that never records a query string.

Credentials are never logged: handlers log no headers, and the access log writes the path without
its query (a misplaced ``?api_key=`` or ``?access_token=`` must not reach a log file).

One record is one line, whatever a client sent: a decoded path (``%0a``), an address or a name may hold control
characters. JSON escapes every one of them (and every non-ASCII character); the text format writes them as
``\\x0a``-style escapes, and indents the lines of a traceback under ``TRACEBACK_INDENT`` so that nothing a
client controls can start a line that looks like a record.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

from gateway.text_safety import escape_unsafe

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
TRACEBACK_INDENT = "  | "


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        # ensure_ascii (the default, kept on purpose): control, bidi and line-separator characters become \uXXXX.
        return json.dumps(entry, default=str, ensure_ascii=True)


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT`` on one line, control characters escaped; a traceback follows on indented lines."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        record.asctime = self.formatTime(record, self.datefmt)
        text = escape_unsafe(self.formatMessage(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        details = [record.exc_text or "", self.formatStack(record.stack_info) if record.stack_info else ""]
        for line in "\n".join(details).split("\n"):
            if line:
                text += f"\n{TRACEBACK_INDENT}{escape_unsafe(line)}"
        return text


class MalformedRequestFilter(logging.Filter):
    """aiohttp logs a request it cannot parse with the offending bytes, which may hold a credential:
    keep the event, drop the bytes. It is the client's fault (answered 400), so a warning, not an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) or isinstance(getattr(exc, "__cause__", None), HttpProcessingError):
            status = getattr(exc, "code", 400)
            record.msg, record.args, record.exc_info, record.exc_text = (
                "malformed HTTP request (%s)",
                (status,),
                None,
                None,
            )
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.server").addFilter(MalformedRequestFilter())


class AccessLogger(AbstractAccessLogger):
    """One line per request: method, path (no query), status, duration; nothing from headers."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time_taken: float) -> None:
        self.logger.info(
            "%s %s %d",
            request.method,
            request.path,
            response.status,
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status,
                "duration_ms": round(time_taken * 1000, 2),
                "remote": request.remote,
                "at": time.time(),
            },
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)
