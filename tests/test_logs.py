"""Logs never carry what a client sent: no query strings, no header bytes from malformed requests."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
from collections.abc import Iterator
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp.http_exceptions import BadHttpMessage
from yarl import URL

from gateway.audit import AuditLog
from gateway.logs import TRACEBACK_INDENT, JsonFormatter, MalformedRequestFilter, TextFormatter
from gateway.storage import Storage
from tests.support.gateway import UNUSED_UPSTREAM, running_gateway


def test_a_malformed_request_is_logged_without_the_bytes_that_could_hold_a_credential():
    try:
        raise BadHttpMessage("Invalid header: b'Authorization: Bearer gwat_secret\\x00'")
    except BadHttpMessage:
        record = logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "Error handling request", (), None)
        record.exc_info = sys.exc_info()
    assert MalformedRequestFilter().filter(record)
    line = JsonFormatter().format(record)
    assert "gwat_secret" not in line
    assert json.loads(line)["msg"] == "malformed HTTP request (400)"


FORGED = "2026-01-01 00:00:00,000 INFO gateway.audit: audit login.succeeded"


@contextlib.contextmanager
def captured(logger_name: str, formatter: logging.Formatter) -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.INFO
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()], ids=["text", "json"])
async def test_a_path_with_an_encoded_newline_is_one_access_log_line(
    sqlite_storage: Storage, formatter: logging.Formatter
) -> None:
    overrides = {"logging": {"access_log": True}}
    with captured("gateway.access", formatter) as stream:
        async with (
            running_gateway(storage=sqlite_storage, upstream_url=UNUSED_UPSTREAM, overrides=overrides) as gw,
            aiohttp.ClientSession() as session,
            session.get(URL(f"{gw.url}/nowhere%0a{quote(FORGED)}%0d%1b[2J", encoded=True)) as reply,
        ):
            assert reply.status == 404
    (line,) = stream.getvalue().splitlines()
    assert "\x1b" not in line
    assert "\r" not in line
    if isinstance(formatter, JsonFormatter):
        assert json.loads(line)["path"] == f"/nowhere\n{FORGED}\r\x1b[2J"
    else:
        assert line.endswith(f"GET /nowhere\\x0a{FORGED}\\x0d\\x1b[2J 404")


def test_a_traceback_in_the_text_format_is_indented_so_its_message_cannot_forge_a_record() -> None:
    try:
        raise ValueError(f"bad input\n{FORGED}\u2028\x1b[2J")
    except ValueError:
        record = logging.LogRecord("gateway.x", logging.ERROR, __file__, 1, "failed for %s", ("a\nb",), sys.exc_info())
    first, *rest = TextFormatter().format(record).split("\n")
    assert first.endswith("ERROR gateway.x: failed for a\\x0ab")
    assert rest
    assert all(line.startswith(TRACEBACK_INDENT) for line in rest)
    assert rest[-1] == f"{TRACEBACK_INDENT}{FORGED}\\u2028\\x1b[2J"


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()], ids=["text", "json"])
def test_an_audit_event_with_a_newline_in_a_value_is_one_line(formatter: logging.Formatter) -> None:
    with captured("gateway.audit.test", formatter) as stream:
        AuditLog(logging.getLogger("gateway.audit.test")).record(
            "admin.action", actor="cli", reason=f"x\n{FORGED}\u2029", user_id="usr\r1"
        )
    (line,) = stream.getvalue().splitlines()
    assert "\u2029" not in line
    assert "\r" not in line
