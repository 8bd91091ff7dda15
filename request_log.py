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


def record(response: Response) -> dict[str, Any]:
    stats = request_stats.current()
    return {
        "time": _now(),
        "request_id": request_id.current(),
        "method": request.method,
        "route": request_stats.route(),
        "path": request.path[:MAX_PATH],
        "status": response.status_code,
        "latency_ms": round(stats.elapsed() * 1000, 2),
        "images": stats.images,
        "request_bytes": request.content_length or 0,
        "response_bytes": response.content_length,
        "remote_addr": request.remote_addr,
        "pid": os.getpid(),
    }


def unparsed_record(status: int, request_id: str, response_bytes: int, remote_addr: str | None) -> dict[str, Any]:
    """The line for a request gunicorn refused before the app saw it (sync_worker.py): no method, no path."""
    return {
        "time": _now(),
        "request_id": request_id,
        "method": None,
        "route": None,
        "path": None,
        "status": status,
        "latency_ms": None,
        "images": 0,
        "request_bytes": 0,
        "response_bytes": response_bytes,
        "remote_addr": remote_addr,
        "pid": os.getpid(),
    }


def write_line(fields: dict[str, Any]) -> None:
    # One write of one short line: workers sharing the stdout pipe never interleave (< PIPE_BUF).
    sys.stdout.write(json.dumps(fields, ensure_ascii=True) + "\n")
    sys.stdout.flush()


def _write(response: Response) -> Response:
    write_line(record(response))
    return response


def init_app(app: Flask) -> None:
    app.after_request(_write)
