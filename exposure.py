"""What the service shows the world: never debug mode, security headers, CORS only by allow-list."""

from __future__ import annotations

from flask import Flask, Response
from flask_cors import CORS

import request_id

# setdefault: a route that sets its own (an HTML page, say) keeps it.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",  # a JSON error is never sniffed into HTML
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
# JSON answers load nothing and are never framed; predictions of someone's photo are not cached.
JSON_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
}
# Every header of a JSON answer, for those written outside Flask (gunicorn_errors.py, health_port.py).
JSON_ANSWER_HEADERS = {"Content-Type": "application/json", **SECURITY_HEADERS, **JSON_HEADERS}


def _add_security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if response.mimetype == "application/json":
        for name, value in JSON_HEADERS.items():
            response.headers.setdefault(name, value)
    return response


def _vary_by_origin(response: Response) -> Response:
    # Allowed origins get Access-Control-Allow-Origin and others do not: a shared cache must keep
    # the answers apart (flask-cors says so only when it echoes the origin).
    response.vary.add("Origin")
    return response


def init_exposure(app: Flask) -> None:
    # FLASK_DEBUG=1 in a server's environment would otherwise turn debug on in the served app.
    app.debug = False
    app.after_request(_add_security_headers)
    origins = app.config["CORS_ORIGINS"]
    if origins:
        # Keys travel in headers, never cookies: no credentials mode. Preflights are cached 10 min.
        # A page may send its own X-Request-ID and read the one answered (request_id.py).
        CORS(
            app,
            origins=origins,
            methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", request_id.HEADER],
            expose_headers=[request_id.HEADER],
            max_age=600,
        )
        app.after_request(_vary_by_origin)
