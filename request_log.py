"""One JSON line per request on stdout; it replaces gunicorn's plain access log."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, request

import request_id
import request_stats

MAX_PATH = 200  # the path is the client's text: bounded, so that a line stays short


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# Every line has every field, in this order; a line's own values replace these.
FIELDS: dict[str, Any] = dict.fromkeys(["time", "request_id", "method", "route", "path", "status", "latency_ms"])
FIELDS |= {"images": 0, "request_bytes": 0, "response_bytes": None, "remote_addr": None, "pid": None}


def _line(**fields: Any) -> dict[str, Any]:
    return FIELDS | {"time": _now(), "pid": os.getpid()} | fields


def record(response: Response) -> dict[str, Any]:
    stats = request_stats.current()
    return _line(
        request_id=request_id.current(),
        method=request.method,
        route=request_stats.route(),
        path=request.path[:MAX_PATH],
        status=response.status_code,
        latency_ms=round(stats.elapsed() * 1000, 2),
        images=stats.images,
        request_bytes=request.content_length or 0,
        response_bytes=response.content_length,
        remote_addr=request.remote_addr,
    )


def server_record(
    status: int, rid: str, response_bytes: int, remote_addr: str | None, method: str | None, path: str | None
) -> dict[str, Any]:
    """The line for an answer gunicorn wrote itself (gunicorn_errors.py): method and path as far as it parsed them."""
    return _line(
        request_id=rid,
        method=method,
        path=path[:MAX_PATH] if path is not None else None,
        status=status,
        response_bytes=response_bytes,
        remote_addr=remote_addr,
    )


def write_line(fields: dict[str, Any]) -> None:
    # One write of one short line: workers sharing the stdout pipe never interleave (< PIPE_BUF).
    sys.stdout.write(json.dumps(fields, ensure_ascii=True) + "\n")
    sys.stdout.flush()


def _write(response: Response) -> Response:
    write_line(record(response))
    return response


def init_app(app: Flask) -> None:
    app.after_request(_write)
