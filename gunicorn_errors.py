"""The answers gunicorn writes itself, before or around the app (a request line over 4094 bytes,
a malformed header, a bad Content-Length, the 500 for a request past TIMEOUT), as the service's
JSON error instead of gunicorn's HTML page, with a request id, a log line and a count, like the
app's own answers. sync_worker.py puts write_json_error in gunicorn's place."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

from gunicorn import util

import request_id
from errors import HTTP_CODES, INTERNAL_ERROR_MESSAGE, error_body
from exposure import JSON_ANSWER_HEADERS

# Codes for the statuses gunicorn itself answers with (gunicorn/workers/base.py handle_error) that
# are not their snake-cased reason phrase (write_json_error).
GUNICORN_CODES = {**HTTP_CODES, 408: "header_timeout", 414: "uri_too_long", 431: "header_fields_too_large"}

_JSON_HEADER_LINES = "".join(f"{name}: {value}\r\n" for name, value in JSON_ANSWER_HEADERS.items())

# CORS_ORIGINS, set by the worker once its app is loaded (sync_worker.py): a page on an allowed
# origin must be able to read these answers too (the 500 past TIMEOUT), as it reads the app's.
cors_origins: list[str] = []


def _readable(mesg: str, limit: int = 300) -> str:
    # gunicorn quotes what it could not parse as the repr() of bytes read as latin-1 ("ï¼\x93" for
    # b"\xef\xbc\x93"): give every non-ASCII byte as a \xNN escape instead, and bound the length.
    text = mesg.encode("latin-1", "replace").decode("ascii", "backslashreplace")
    return text if len(text) <= limit else text[:limit] + "..."


def write_json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """Stands in for gunicorn.util.write_error: the same answer, as {"error": {code, message}}, with a
    request id, a JSON log line and a count in the metrics, like the app's own answers."""
    # gunicorn says "Bad Request" for some other statuses (its 501 for a transfer coding).
    with contextlib.suppress(ValueError):
        reason = HTTPStatus(status_int).phrase
    code = GUNICORN_CODES.get(status_int) or reason.lower().replace(" ", "_")
    message = _readable(mesg) or (INTERNAL_ERROR_MESSAGE if status_int >= 500 else reason)
    body = json.dumps(error_body(code, message)).encode()
    rid = request_id.choose(_incoming_request_id())  # a new one if its headers were not read, or could not be
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"{_JSON_HEADER_LINES}{_cors_lines()}{request_id.HEADER}: {rid}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)
    _account(status_int, rid, len(body))


# The request SyncWorker.handle_error is answering, for write_json_error, which gunicorn gives only
# the socket: a sync worker answers one request at a time.
_answering: dict[str, Any] = {}


@contextlib.contextmanager
def answering(req: Any, addr: Any) -> Iterator[None]:
    """While gunicorn answers `req` with an error: what write_json_error logs and counts it under."""
    _answering.update(req=req, addr=addr)
    try:
        yield
    finally:
        _answering.clear()


def _incoming(name: str) -> str | None:
    """A header of the request being answered, when gunicorn had parsed its headers (one past TIMEOUT)."""
    headers = getattr(_answering.get("req"), "headers", None) or []
    return next((value for header, value in headers if header.upper() == name.upper()), None)


def _incoming_request_id() -> str | None:
    # Keep the caller's id, for the one answer that most needs tracing.
    return _incoming(request_id.HEADER)


def _cors_lines() -> str:
    # As flask-cors answers for the app (exposure.py): the origin echoed, or * when any is allowed.
    origin = _incoming("Origin")
    if not origin or not ("*" in cors_origins or origin in cors_origins):
        return ""
    allowed = "*" if "*" in cors_origins else origin
    return f"Access-Control-Allow-Origin: {allowed}\r\nAccess-Control-Expose-Headers: {request_id.HEADER}\r\nVary: Origin\r\n"


def _account(status: int, rid: str, response_bytes: int) -> None:
    # Imported here, in a worker: gunicorn loads this module in its master, before the metrics
    # folder exists, and prometheus_client picks its storage when it is first imported.
    import metrics
    import request_log

    req, addr = _answering.get("req"), _answering.get("addr")
    method, path = getattr(req, "method", None), getattr(req, "path", None)
    peer = addr[0] if isinstance(addr, tuple) and addr and isinstance(addr[0], str) else None
    request_log.write_line(request_log.server_record(status, rid, response_bytes, peer, method, path))
    metrics.count_server_answer(status, method)
