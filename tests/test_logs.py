"""Logs never carry what a client sent: no query strings, no header bytes from malformed requests."""

from __future__ import annotations

import json
import logging
import sys

from aiohttp.http_exceptions import BadHttpMessage

from gateway.logs import JsonFormatter, MalformedRequestFilter


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
